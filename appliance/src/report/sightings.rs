//! Sightings shared across a site (`[site]`): the receiving side. Every appliance of the site
//! publishes one pseudonymous sighting per screened parcel with a sender identity (queued by
//! the split-shipment ledger, drained by the feed after flagged reports) and takes its peers'
//! from `screenline/v1/{site_id}/+/sightings`, so that the split-shipment rule counts a
//! sender's parcels on every appliance of the site.
//!
//! Receiving runs on a connection of its own with a **persistent session** (clean_session
//! false, a fixed client id): while this appliance is down the broker keeps what its peers
//! publish, and hands it over at the next connection. rumqttc acknowledges each sighting as
//! it reads it; the receiver folds what it took within [`FOLD_DELAY`], in groups, durably. So a
//! crash may lose the few sightings taken in those last milliseconds — they would only have
//! added to a count — while manual acknowledgements cannot keep up with a flood: rumqttc
//! hands out up to ten incoming packets per read before it takes one request (an ack) from
//! its queue, so the acks of a flood pile up, and unacknowledged sightings come again at
//! every reconnect. A redelivery is recognised by `sighting_id` all the same.
//!
//! A sighting is data from the network: size-limited, schema-checked, checked for site,
//! topic, peer list, key, mac and window ([`screenline_core::sighting::check`]), then held to
//! its peer's rate (a token bucket); every refusal is counted by reason. Decisions never wait
//! for any of this: the line only ever asks the store's ledger.
//!
//! Counters (named here only, [`counter`]) go through [`Telemetry`]; the console's view is
//! [`SightingsStatus::snapshot`].

use super::config::{parse_broker_url, FeedConfig, SiteConfig};
use super::Backoff;
use crate::store::owner::StoreHandle;
use crate::store::sightings::Signer;
use crate::telemetry::{Counter, Gauge, Telemetry};
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
use screenline_core::sighting::{self, Checks, Refusal, SiteKeys, Verified};
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};
use tokio_util::sync::CancellationToken;

/// Sightings folded by one store job at most.
const FOLD_BATCH: usize = 64;
/// How long a verified sighting waits for others to fold with.
const FOLD_DELAY: Duration = Duration::from_millis(20);
/// A peer is "heard recently" on the console within this.
pub const RECENT: Duration = Duration::from_secs(300);

/// One peer as the console shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerHeard {
    /// Its appliance id.
    pub appliance_id: String,
    /// When its last valid sighting arrived (`None`: never since start).
    pub last_heard: Option<SystemTime>,
    /// Its sightings folded since start.
    pub folded: u64,
    /// Heard within [`RECENT`].
    pub recent: bool,
}

/// What the console shows of the site's sightings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SightingsSnapshot {
    /// Every configured peer.
    pub peers: Vec<PeerHeard>,
    /// Own sightings waiting for the broker.
    pub backlog: u64,
    /// Senders × categories in the ledger.
    pub ledger_keys: u64,
}

/// Live state of the site's sightings, shared with the console.
pub struct SightingsStatus {
    peers: Mutex<BTreeMap<String, (Option<SystemTime>, u64)>>,
    telemetry: Arc<Telemetry>,
}

impl SightingsStatus {
    pub(crate) fn new(peers: &[String], telemetry: Arc<Telemetry>) -> SightingsStatus {
        SightingsStatus {
            peers: Mutex::new(peers.iter().map(|p| (p.clone(), (None, 0))).collect()),
            telemetry,
        }
    }

    pub(crate) fn heard(&self, peer: &str, n: u64) {
        let mut peers = self.peers.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(p) = peers.get_mut(peer) {
            *p = (Some(SystemTime::now()), p.1 + n);
        }
    }

    /// Peers with when they were last heard, and the backlog.
    pub fn snapshot(&self) -> SightingsSnapshot {
        let now = SystemTime::now();
        let peers = self.peers.lock().unwrap_or_else(|e| e.into_inner());
        SightingsSnapshot {
            peers: peers
                .iter()
                .map(|(id, (at, n))| PeerHeard {
                    appliance_id: id.clone(),
                    last_heard: *at,
                    folded: *n,
                    recent: at
                        .is_some_and(|t| now.duration_since(t).map_or(true, |age| age <= RECENT)),
                })
                .collect(),
            backlog: self.telemetry.gauge(Gauge::SightingsBacklog),
            ledger_keys: self.telemetry.gauge(Gauge::SightingsLedgerKeys),
        }
    }
}

/// A site's sharing of sightings, as configured: what the ledger signs with, what the
/// receiver checks against, and the console's view.
#[derive(Clone)]
pub struct SiteSharing {
    /// Signs this appliance's sightings (the split-shipment ledger queues them).
    pub signer: Arc<Signer>,
    /// Peers heard and the backlog, for the console.
    pub status: Arc<SightingsStatus>,
    config: SiteConfig,
    window: Duration,
}

impl SiteSharing {
    /// The sharing `[site]` asks for (`None` without the section); `window` is the
    /// split-shipment window. Fails when a key file cannot be used.
    pub fn from_config(
        feed: &FeedConfig,
        window: Duration,
        telemetry: Arc<Telemetry>,
    ) -> anyhow::Result<Option<SiteSharing>> {
        let Some(site) = &feed.site else {
            return Ok(None);
        };
        let keys: SiteKeys = site
            .keys()
            .map_err(|e| anyhow::anyhow!("site.key_file: {e}"))?;
        tracing::info!(
            key = keys.current().id(),
            peers = site.peers.len(),
            "sharing sightings with the site's other appliances"
        );
        Ok(Some(SiteSharing {
            signer: Arc::new(Signer {
                site_id: feed.site_id.clone(),
                appliance_id: feed.appliance_id.clone(),
                keys,
            }),
            status: Arc::new(SightingsStatus::new(&site.peers, telemetry)),
            config: site.clone(),
            window,
        }))
    }
}

/// A token bucket per peer: `rate` per second, at most `burst` at once.
struct Bucket {
    tokens: f64,
    at: Instant,
}

impl Bucket {
    fn take(&mut self, rate: f64, burst: f64) -> bool {
        let now = Instant::now();
        self.tokens = (self.tokens + now.duration_since(self.at).as_secs_f64() * rate).min(burst);
        self.at = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

/// The receiving side: one task, one persistent-session connection.
pub struct Receiver {
    sharing: SiteSharing,
    opts: MqttOptions,
    filter: String,
    store: StoreHandle,
    telemetry: Arc<Telemetry>,
    buckets: HashMap<String, Bucket>,
}

impl Receiver {
    /// The receiver for `sharing` on the broker of `feed`.
    pub fn new(
        feed: &FeedConfig,
        sharing: SiteSharing,
        store: StoreHandle,
        telemetry: Arc<Telemetry>,
    ) -> anyhow::Result<Receiver> {
        let addr = parse_broker_url(&feed.mqtt.url).map_err(anyhow::Error::msg)?;
        // Fixed per appliance: the broker keeps this session's queue while we are away.
        let mut opts = MqttOptions::new(
            format!("{}-sightings", feed.client_id()),
            addr.host.clone(),
            addr.port,
        );
        if addr.tls {
            opts.set_transport(rumqttc::Transport::tls_with_config(
                super::tls::client_config(&feed.mqtt)?,
            ));
        }
        opts.set_keep_alive(Duration::from_secs(feed.mqtt.keep_alive_s))
            .set_clean_session(false)
            // The broker must refuse anything larger itself (docs/INSTALL.md); rumqttc would
            // drop the connection on it.
            .set_max_packet_size(super::MAX_PACKET, 4096);
        let now = Instant::now();
        let burst = f64::from(sharing.config.peer_burst);
        let buckets = sharing
            .config
            .peers
            .iter()
            .map(|p| {
                (
                    p.clone(),
                    Bucket {
                        tokens: burst,
                        at: now,
                    },
                )
            })
            .collect();
        Ok(Receiver {
            filter: format!("screenline/v1/{}/+/sightings", feed.site_id),
            sharing,
            opts,
            store,
            telemetry,
            buckets,
        })
    }

    /// Receives until `shutdown`.
    pub async fn run(mut self, shutdown: CancellationToken) {
        let mut backoff = Backoff::new();
        loop {
            let Some(error) = self.connection(&shutdown, &mut backoff).await else {
                return;
            };
            self.telemetry.incr(Counter::SightingsConnectionErrors);
            tracing::debug!(%error, "sightings link lost");
            if !backoff.wait(&shutdown).await {
                return;
            }
        }
    }

    /// One connection (a fresh client and event loop, as the feed's); `Some(why)` when it
    /// is lost, `None` on shutdown.
    async fn connection(
        &mut self,
        shutdown: &CancellationToken,
        backoff: &mut Backoff,
    ) -> Option<String> {
        let (client, mut eventloop) = AsyncClient::new(self.opts.clone(), 4 * FOLD_BATCH);
        let mut pending: Vec<Verified> = Vec::new();
        let fold_at = tokio::time::sleep(FOLD_DELAY);
        tokio::pin!(fold_at);
        loop {
            tokio::select! {
                biased;
                _ = shutdown.cancelled() => {
                    let _ = self.fold(&mut pending).await;
                    let _ = client.try_disconnect();
                    return None;
                }
                ev = eventloop.poll() => match ev {
                    Ok(Event::Incoming(Packet::ConnAck(_))) => {
                        backoff.reset();
                        // The session keeps the subscription; asking again costs nothing.
                        if let Err(e) = client.try_subscribe(&self.filter, QoS::AtLeastOnce) {
                            tracing::error!(error = %e, "cannot subscribe to the site's sightings");
                        }
                    }
                    Ok(Event::Incoming(Packet::Publish(p))) => {
                        if let Some(v) = self.take(&p) {
                                if pending.is_empty() {
                                    fold_at.as_mut().reset(tokio::time::Instant::now() + FOLD_DELAY);
                                }
                                pending.push(v);
                                if pending.len() >= FOLD_BATCH {
                                    if let Err(e) = self.fold(&mut pending).await {
                                        return Some(e);
                                    }
                                }
                        }
                    }
                    Ok(_) => {}
                    Err(e) => return Some(e.to_string()),
                },
                _ = &mut fold_at, if !pending.is_empty() => {
                    if let Err(e) = self.fold(&mut pending).await {
                        return Some(e);
                    }
                }
            }
        }
    }

    /// Checks one message; `None` when it is not to be folded (refused, counted; or our own).
    fn take(&mut self, p: &rumqttc::Publish) -> Option<Verified> {
        // `screenline/v1/{site}/{appliance}/sightings`: the level the subscription matched.
        let from = p.topic.rsplit('/').nth(1).unwrap_or_default();
        if from == self.sharing.signer.appliance_id {
            return None;
        }
        let checks = Checks {
            site_id: &self.sharing.signer.site_id,
            peers: &self.sharing.config.peers,
            keys: &self.sharing.signer.keys,
            window: self.sharing.window,
            now: SystemTime::now(),
        };
        let verdict = sighting::check(from, &p.payload, &checks).and_then(|v| {
            let (rate, burst) = (
                f64::from(self.sharing.config.peer_rate_per_s),
                f64::from(self.sharing.config.peer_burst),
            );
            let allowed = self
                .buckets
                .get_mut(&v.appliance_id)
                .is_some_and(|b| b.take(rate, burst));
            if allowed {
                Ok(v)
            } else {
                Err(Refusal::Rate)
            }
        });
        match verdict {
            Ok(v) => Some(v),
            Err(why) => {
                self.refused(why, 1);
                None
            }
        }
    }

    fn refused(&self, why: Refusal, n: u64) {
        self.telemetry.add(Counter::SightingsRefused(why), n);
    }

    /// Folds what waits into the ledger, durably. On a store error they are dropped (logged),
    /// and so is the connection, so that the next one starts afresh.
    async fn fold(&self, pending: &mut Vec<Verified>) -> Result<(), String> {
        if pending.is_empty() {
            return Ok(());
        }
        let batch: Vec<Verified> = std::mem::take(pending);
        let heard = by_peer(&batch);
        let (window, max) = (self.sharing.window, self.sharing.config.max_senders);
        let folded = self
            .store
            .write(move |s| {
                let f = s
                    .split_ledger()
                    .fold_sightings(&batch, window, SystemTime::now(), max)?;
                Ok((f, s.split_ledger().figures()))
            })
            .await;
        match folded {
            Ok((f, figures)) => {
                self.telemetry
                    .add(Counter::SightingsReceived, f.folded as u64);
                self.telemetry
                    .add(Counter::SightingsDuplicate, f.duplicate as u64);
                if f.ledger_full > 0 {
                    self.refused(Refusal::LedgerFull, f.ledger_full as u64);
                }
                self.telemetry
                    .set(Gauge::SightingsLedgerKeys, figures.ledger_keys as u64);
                for (peer, n) in heard {
                    self.sharing.status.heard(&peer, n);
                }
                Ok(())
            }
            Err(e) => {
                tracing::error!(error = %e, n = heard.values().sum::<u64>(), "peers' sightings not folded");
                Err(format!("the ledger could not take peers' sightings: {e}"))
            }
        }
    }
}

/// How many sightings of each peer a group holds.
fn by_peer(batch: &[Verified]) -> BTreeMap<String, u64> {
    let mut out = BTreeMap::new();
    for v in batch {
        *out.entry(v.appliance_id.clone()).or_default() += 1;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use screenline_core::sighting::{Seen, SiteKey};

    /// Peers' sightings refused, all reasons together.
    fn refused(telemetry: &Telemetry) -> u64 {
        Refusal::ALL
            .iter()
            .map(|&r| telemetry.get(Counter::SightingsRefused(r)))
            .sum()
    }

    fn publish(from: &str, body: Vec<u8>) -> rumqttc::Publish {
        rumqttc::Publish::new(
            format!("screenline/v1/S1/{from}/sightings"),
            QoS::AtLeastOnce,
            body,
        )
    }

    #[tokio::test]
    async fn a_peer_is_held_to_its_rate_and_every_refusal_is_counted() {
        let dir = crate::testutil::temp_dir("receiver");
        let store = crate::store::Store::open(&dir).expect("open");
        let store = StoreHandle::start(store, &dir).expect("store thread");
        let telemetry = Arc::new(Telemetry::default());
        let keys = SiteKeys::new(SiteKey::new(vec![3; 32]).expect("key"), vec![]);
        let mut site = SiteConfig::new(dir.join("unused.key"), vec!["a2".into()]);
        site.peer_rate_per_s = 1;
        site.peer_burst = 2;
        let feed = FeedConfig {
            site_id: "S1".into(),
            appliance_id: "a1".into(),
            mqtt: Default::default(),
            regulator: Default::default(),
            site: Some(site.clone()),
        };
        let sharing = SiteSharing {
            signer: Arc::new(Signer {
                site_id: "S1".into(),
                appliance_id: "a1".into(),
                keys: keys.clone(),
            }),
            status: Arc::new(SightingsStatus::new(&site.peers, telemetry.clone())),
            config: site,
            window: Duration::from_secs(3600),
        };
        let mut r = Receiver::new(&feed, sharing, store, telemetry.clone()).expect("receiver");
        let sighting = |from: &str, n: u32| {
            let seen = Seen {
                identities: vec![format!("{n:064x}")],
                category: crate::domain::Category::Food,
                at: SystemTime::now(),
                line_id: "L1".into(),
                parcel: format!("p{n}"),
            };
            Sighting::signed(&keys, "S1", from, &seen).to_vec()
        };
        use screenline_core::sighting::Sighting;
        // Our own, as the broker echoes it: ignored, not refused.
        assert!(r.take(&publish("a1", sighting("a1", 0))).is_none());
        assert_eq!(refused(&telemetry), 0);
        // The burst of two, then one a second.
        let t0 = Instant::now();
        let mut pending: Vec<Verified> = (1..=50)
            .filter_map(|n| r.take(&publish("a2", sighting("a2", n))))
            .collect();
        let allowed = 2 + t0.elapsed().as_secs() as usize + 1;
        assert!((2..=allowed).contains(&pending.len()), "{}", pending.len());
        let rate = telemetry.get(Counter::SightingsRefused(Refusal::Rate));
        assert_eq!(rate as usize, 50 - pending.len());
        // Checks come before the rate: a stranger's or a broken sighting costs the peer nothing.
        assert!(r.take(&publish("a3", sighting("a3", 99))).is_none());
        assert!(r.take(&publish("a2", b"{}".to_vec())).is_none());
        assert_eq!(
            telemetry.get(Counter::SightingsRefused(Refusal::UnknownPeer)),
            1
        );
        assert_eq!(
            telemetry.get(Counter::SightingsRefused(Refusal::Malformed)),
            1
        );
        assert_eq!(refused(&telemetry), rate + 2);
        let snap = r.sharing.status.snapshot();
        assert_eq!(snap.peers.len(), 1);
        assert_eq!(snap.peers[0].last_heard, None, "nothing folded yet");
        let n = pending.len() as u64;
        r.fold(&mut pending).await.expect("folded");
        assert_eq!(telemetry.get(Counter::SightingsReceived), n);
        let snap = r.sharing.status.snapshot();
        assert!(
            snap.peers[0].recent && snap.peers[0].folded == n,
            "{snap:?}"
        );
        assert_eq!(snap.ledger_keys, n);
    }
}
