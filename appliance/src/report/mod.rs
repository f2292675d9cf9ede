//! The regulator feed over MQTT (rumqttc): drains the store's outbox at QoS 1, keeps the
//! retained `…/status` with a last will, sends the periodic statistics ([`stats`]) after every
//! flagged report, and takes the regulator's signed commands ([`commands`]) on `…/cmd/+`,
//! answering each on `…/cmd-result`. With `[site]`, it also publishes this appliance's
//! sightings on `…/sightings` (after flagged reports, before statistics) and starts the
//! receiver of the peers' ([`sightings`]).
//!
//! rumqttc's `publish` returning means queued, nothing more, and with a clean session it
//! drops whatever was unacknowledged when the link fell. So this task is the only publisher
//! and owns the event loop: it learns each publish's packet id from `Outgoing::Publish` in
//! publish order, removes a report from the outbox only on the `PubAck` of that packet id,
//! and after every ConnAck re-sends everything still in the outbox. At most `window`
//! publishes are outstanding, well below rumqttc's packet-id space.

pub mod commander;
pub mod commands;
pub mod config;
pub mod payload;
pub mod sightings;
pub mod stats;

use crate::screen::Screener;
use crate::store::owner::StoreHandle;
use crate::store::{Store, StoreError};
use crate::supervise::Stage;
use crate::telemetry::{Counter, Gauge, Link, Telemetry};
use commander::{Answer, Commander};
use commands::Verifier;
use config::{parse_broker_url, FeedConfig};
use rand::Rng;
use rumqttc::{AsyncClient, Event, LastWill, MqttOptions, Outgoing, Packet, QoS};
use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, Notify};
use tokio_util::sync::CancellationToken;

const BACKOFF_MIN: Duration = Duration::from_millis(200);
const BACKOFF_MAX: Duration = Duration::from_secs(10);

/// How long a connection to the broker waits before it is tried again: doubling from
/// [`BACKOFF_MIN`] to [`BACKOFF_MAX`] with jitter (so that a site's appliances do not all
/// come back at once), and from the start again once a connection works. rumqttc has no
/// delay of its own (PITFALLS).
pub(crate) struct Backoff(Duration);

impl Backoff {
    pub(crate) fn new() -> Backoff {
        Backoff(BACKOFF_MIN)
    }

    /// A connection worked: the next wait is the shortest again.
    pub(crate) fn reset(&mut self) {
        self.0 = BACKOFF_MIN;
    }

    /// Waits out the delay (plus up to half again), then doubles it; `false` if `shutdown`
    /// came first.
    pub(crate) async fn wait(&mut self, shutdown: &CancellationToken) -> bool {
        let jitter = rand::thread_rng().gen_range(0..=self.0.as_millis() as u64 / 2);
        tokio::select! {
            _ = tokio::time::sleep(self.0 + Duration::from_millis(jitter)) => {}
            _ = shutdown.cancelled() => return false,
        }
        self.0 = (self.0 * 2).min(BACKOFF_MAX);
        true
    }
}
/// How long a clean shutdown waits for the broker to take the `stopped` status.
const STOP_GRACE: Duration = Duration::from_secs(3);

/// Largest message the feed sends or takes: an evidence image (base64) must fit, and so
/// must the largest real watch-list (a few MB). rumqttc drops the connection on a larger
/// incoming packet, so the broker must refuse larger ones itself (Mosquitto's
/// `max_packet_size`; docs/INSTALL.md).
const MAX_PACKET: usize = 8 << 20;
/// Records looked through for a report that is not in the report index.
const EVIDENCE_SCAN: usize = 200_000;
/// Command answers and evidence waiting to be published; past this, answers to unverified
/// commands are dropped (counted), so a flood cannot grow the feed's memory.
const CONTROL_MAX: usize = 64;
/// Publishes other than reports (status, stats, command answers, evidence) that may be
/// outstanding besides the report window.
const CONTROL_ROOM: usize = 16;

/// The event loop's side of the command worker.
struct Commands {
    queue: mpsc::Sender<(String, Vec<u8>)>,
    /// Commands refused because the queue was full, not yet sampled into the store.
    busy: Arc<AtomicU64>,
}

#[derive(Debug, Clone)]
enum InFlight {
    Report(Vec<u8>),
    Stats(Vec<u8>),
    /// An own sighting, by its key in the sightings' outbox.
    Sighting(Vec<u8>),
    Status,
    /// A command's answer or evidence: at least once while the link holds, not kept on disk
    /// (the regulator asks again).
    Control,
}

/// The feed's task.
pub struct Feed {
    root: String,
    site_id: String,
    appliance_id: String,
    opts: MqttOptions,
    window: usize,
    stats_period: Duration,
    store: StoreHandle,
    screener: Arc<Screener>,
    verifier: Verifier,
    wake: Arc<Notify>,
    telemetry: Arc<Telemetry>,
    /// Busy while one event of the broker link is handled.
    stage: Stage,
    /// With `[site]`: the receiver of the peers' sightings, started with the feed.
    sightings: Option<sightings::Receiver>,
}

impl Feed {
    /// A feed for `config`, draining `store`; `wake` is notified when the outbox grows;
    /// regulator commands change `screener`'s watch-list and thresholds; with `sharing`, the
    /// peers' sightings are received too.
    pub async fn new(
        config: &FeedConfig,
        store: StoreHandle,
        screener: Arc<Screener>,
        wake: Arc<Notify>,
        telemetry: Arc<Telemetry>,
        stage: Stage,
        sharing: Option<sightings::SiteSharing>,
    ) -> anyhow::Result<Feed> {
        let sightings = sharing
            .map(|s| sightings::Receiver::new(config, s, store.clone(), telemetry.clone()))
            .transpose()?;
        let addr = parse_broker_url(&config.mqtt.url).map_err(anyhow::Error::msg)?;
        let root = config.topic_root();
        let mut opts = MqttOptions::new(config.client_id(), addr.host.clone(), addr.port);
        if addr.tls {
            opts.set_transport(rumqttc::Transport::tls_with_config(tls::client_config(
                &config.mqtt,
            )?));
        }
        // rumqttc numbers packets 1..=inflight; our own window (plus the control messages)
        // stays at most half of it, so that packet ids never collide (PITFALLS.md).
        let inflight = ((config.mqtt.window + CONTROL_ROOM) * 2).min(u16::MAX as usize) as u16;
        let key = match &config.regulator.public_key {
            Some(k) => Some(
                commands::parse_public_key(k)
                    .map_err(|e| anyhow::anyhow!("regulator.public_key: {e}"))?,
            ),
            None => None,
        };
        // The regulator's thresholds outlive a restart (they are no personal data).
        let saved = store.read(|s| s.saved_thresholds()).await?;
        if !saved.is_empty() {
            let t = saved
                .iter()
                .filter_map(|(k, x)| Some((crate::domain::Category::from_key(k)?, *x)))
                .collect();
            screener.set_thresholds(&t);
            tracing::info!(thresholds = ?saved, "the regulator's thresholds re-applied");
        }
        if key.is_none() {
            tracing::warn!(
                "no [regulator] public_key configured: every regulator command will be refused"
            );
        }
        opts.set_keep_alive(Duration::from_secs(config.mqtt.keep_alive_s))
            .set_clean_session(true)
            .set_inflight(inflight)
            .set_max_packet_size(MAX_PACKET, MAX_PACKET)
            .set_last_will(LastWill::new(
                format!("{root}/status"),
                payload::status("offline", &telemetry),
                QoS::AtLeastOnce,
                true,
            ));
        Ok(Feed {
            root,
            site_id: config.site_id.clone(),
            appliance_id: config.appliance_id.clone(),
            opts,
            window: config.mqtt.window,
            stats_period: Duration::from_secs(config.mqtt.stats_period_s),
            store,
            screener,
            verifier: Verifier {
                key,
                site_id: config.site_id.clone(),
                appliance_id: config.appliance_id.clone(),
                max_age: Duration::from_secs(config.regulator.max_age_s),
                max_future: Duration::from_secs(config.regulator.max_future_s),
            },
            wake,
            telemetry,
            stage,
            sightings,
        })
    }

    /// Runs until `shutdown`, then publishes `stopped` and disconnects.
    ///
    /// Every connection gets a fresh rumqttc client and event loop. An event loop that has
    /// lost its link keeps events of the old connection buffered (an `Outgoing::Publish` whose
    /// write failed is still queued) and goes on numbering packets where it was; fed into the
    /// next connection, such a stale event would shift every packet id → report mapping by
    /// one, and a PUBACK would clear a report the broker never received.
    pub async fn run(mut self, shutdown: CancellationToken) {
        let receiver = self
            .sightings
            .take()
            .map(|r| tokio::spawn(r.run(shutdown.clone())));
        let stats = tokio::spawn(stats::run(
            self.stats_period,
            self.site_id.clone(),
            self.appliance_id.clone(),
            self.store.clone(),
            self.wake.clone(),
            self.telemetry.clone(),
            shutdown.clone(),
        ));
        let (queue_tx, queue_rx) = mpsc::channel(commander::QUEUE);
        let (answers_tx, mut answers) = mpsc::channel(commander::QUEUE);
        let busy = Arc::new(AtomicU64::new(0));
        let worker = tokio::spawn(
            Commander::new(
                self.root.clone(),
                self.verifier.clone(),
                self.store.clone(),
                self.screener.clone(),
                self.telemetry.clone(),
            )
            .run(queue_rx, answers_tx, busy.clone()),
        );
        let commands = Commands {
            queue: queue_tx,
            busy,
        };
        self.connect_loop(&shutdown, &commands, &mut answers).await;
        drop(commands);
        // The worker finishes the command in hand and writes what it has sampled.
        drop(answers);
        if let Err(e) = worker.await {
            if e.is_panic() {
                std::panic::resume_unwind(e.into_panic());
            }
        }
        let _ = stats.await;
        if let Some(r) = receiver {
            if let Err(e) = r.await {
                if e.is_panic() {
                    std::panic::resume_unwind(e.into_panic());
                }
            }
        }
    }

    async fn connect_loop(
        &self,
        shutdown: &CancellationToken,
        commands: &Commands,
        answers: &mut mpsc::Receiver<Answer>,
    ) {
        let mut backoff = Backoff::new();
        loop {
            let Some(error) = self
                .connection(shutdown, &mut backoff, commands, answers)
                .await
            else {
                return;
            };
            self.telemetry.incr(Counter::FeedConnectionErrors);
            self.telemetry.link(Link::Broker, false, error);
            if !backoff.wait(shutdown).await {
                return;
            }
        }
    }

    /// Clears `key`, which the broker has acknowledged, from its outbox with `clear` on the
    /// store thread, counting `acked` if it was still there. If the store fails, the entry
    /// stays on disk and is sent again: delivery is at least once.
    async fn clear_acked(
        &self,
        key: Vec<u8>,
        clear: fn(&Store, &[u8]) -> Result<bool, StoreError>,
        acked: Counter,
        what: &str,
    ) {
        match self.store.update(move |s| clear(s, &key)).await {
            Ok(true) => self.telemetry.incr(acked),
            Ok(false) => {}
            Err(e) => tracing::error!(error = %e, "cannot clear {what}; it will be sent again"),
        }
    }

    /// One connection to the broker, from connecting to losing it (`Some(why)`) or to a clean
    /// stop (`None`).
    async fn connection(
        &self,
        shutdown: &CancellationToken,
        backoff: &mut Backoff,
        commands: &Commands,
        answers: &mut mpsc::Receiver<Answer>,
    ) -> Option<String> {
        let (client, mut eventloop) =
            AsyncClient::new(self.opts.clone(), self.window * 2 + CONTROL_ROOM * 2);
        let status_topic = format!("{}/status", self.root);
        let cmd_prefix = format!("{}/cmd/", self.root);
        // Command answers and evidence waiting for room in rumqttc's queue.
        let mut control: VecDeque<(String, Vec<u8>)> = VecDeque::new();
        let mut outstanding_stats: HashSet<Vec<u8>> = HashSet::new();
        let mut outstanding_sightings: HashSet<Vec<u8>> = HashSet::new();
        let mut connected = false;
        // Publishes handed to rumqttc whose packet id we have not seen yet, in order.
        let mut queued: VecDeque<InFlight> = VecDeque::new();
        let mut inflight: HashMap<u16, InFlight> = HashMap::new();
        let mut outstanding: HashSet<Vec<u8>> = HashSet::new();
        let mut stopping = false;
        let stop_deadline = tokio::time::sleep(Duration::from_secs(86_400 * 365));
        tokio::pin!(stop_deadline);
        // A link going down or up (a reader unplugged) is published in the status at once;
        // a status rumqttc had no room for goes out with the next event.
        let mut links = self.telemetry.watch_links();
        let mut status_due = false;
        loop {
            self.telemetry
                .set(Gauge::FeedBacklog, self.store.outbox_len() as u64);
            if connected && !stopping {
                if status_due
                    && client
                        .try_publish(
                            &status_topic,
                            QoS::AtLeastOnce,
                            true,
                            payload::status("online", &self.telemetry),
                        )
                        .is_ok()
                {
                    status_due = false;
                    queued.push_back(InFlight::Status);
                }
                while let Some((topic, body)) = control.front() {
                    if client
                        .try_publish(topic.clone(), QoS::AtLeastOnce, false, body.clone())
                        .is_err()
                    {
                        break;
                    }
                    control.pop_front();
                    queued.push_back(InFlight::Control);
                }
                let _working = self.stage.work();
                self.top_up(
                    &client,
                    &mut queued,
                    &mut outstanding,
                    &mut outstanding_stats,
                    &mut outstanding_sightings,
                )
                .await;
            }
            tokio::select! {
                ev = eventloop.poll() => match ev.inspect(|e| self.heard(e)) {
                    Ok(Event::Incoming(Packet::ConnAck(_))) => {
                        connected = true;
                        backoff.reset();
                        self.telemetry.link(Link::Broker, true, "connected");
                        let state = if stopping { "stopped" } else { "online" };
                        // The status published now shows every link as it is.
                        links.mark_unchanged();
                        status_due = false;
                        // A clean session forgets subscriptions: subscribe on every ConnAck.
                        if let Err(e) = client.try_subscribe(format!("{cmd_prefix}+"), QoS::AtLeastOnce) {
                            tracing::error!(error = %e, "cannot subscribe to regulator commands");
                        }
                        if client
                            .try_publish(&status_topic, QoS::AtLeastOnce, true, payload::status(state, &self.telemetry))
                            .is_ok()
                        {
                            queued.push_back(InFlight::Status);
                        }
                    }
                    Ok(Event::Outgoing(Outgoing::Publish(pkid))) => {
                        if let Some(p) = queued.pop_front() {
                            inflight.insert(pkid, p);
                        }
                    }
                    Ok(Event::Incoming(Packet::PubAck(ack))) => match inflight.remove(&ack.pkid) {
                        Some(InFlight::Report(key)) => {
                            outstanding.remove(&key);
                            self.clear_acked(key, Store::ack, Counter::FeedReportsAcked, "an acknowledged report").await;
                        }
                        Some(InFlight::Stats(key)) => {
                            outstanding_stats.remove(&key);
                            self.clear_acked(key, Store::ack_stats, Counter::FeedStatsAcked, "acknowledged statistics").await;
                        }
                        Some(InFlight::Sighting(key)) => {
                            outstanding_sightings.remove(&key);
                            self.clear_acked(
                                key,
                                |s: &Store, k: &[u8]| s.split_ledger().ack_sighting(k),
                                Counter::SightingsSent,
                                "an acknowledged sighting",
                            )
                            .await;
                        }
                        Some(InFlight::Status) if stopping => {
                            let _ = client.try_disconnect();
                        }
                        _ => {}
                    },
                    Ok(Event::Incoming(Packet::Publish(p))) => {
                        if let Some(name) = p.topic.strip_prefix(&cmd_prefix) {
                            // The topic level is the sender's choice: no valid command name is
                            // longer, and only a known one is ever echoed.
                            let name: String = name.chars().take(32).collect();
                            if commands.queue.try_send((name.clone(), p.payload.to_vec())).is_err() {
                                self.telemetry.incr(Counter::CommandsRefused);
                                self.telemetry.incr(Counter::CommandsRefusedBy("busy"));
                                commands.busy.fetch_add(1, Ordering::Relaxed);
                                if control.len() < CONTROL_MAX {
                                    let claimed = commands::Claimed {
                                        command: commands::Command::from_key(&name).map(|c| c.key().to_owned()),
                                        ..Default::default()
                                    };
                                    control.push_back((
                                        format!("{}/cmd-result", self.root),
                                        commands::result(&claimed, false, commander::BUSY),
                                    ));
                                }
                            }
                        }
                    }
                    Ok(Event::Outgoing(Outgoing::Disconnect)) if stopping => return None,
                    Ok(_) => {}
                    Err(e) if stopping => {
                        tracing::debug!(error = %e, "link lost while stopping");
                        return None;
                    }
                    Err(e) => return Some(e.to_string()),
                },
                answer = answers.recv() => match answer {
                    Some(a) => {
                        for m in a.publish {
                            if a.verified || control.len() < CONTROL_MAX {
                                control.push_back(m);
                            } else {
                                self.telemetry.incr(Counter::CommandAnswersDropped);
                            }
                        }
                    }
                    None => panic!("the command worker ended while the feed ran"),
                },
                _ = self.wake.notified(), if connected && !stopping => {}
                Ok(()) = links.changed(), if connected && !stopping => {
                    links.mark_unchanged();
                    // Published at the top of the loop.
                    status_due = true;
                }
                _ = shutdown.cancelled(), if !stopping => {
                    stopping = true;
                    stop_deadline.as_mut().reset(tokio::time::Instant::now() + STOP_GRACE);
                    if !connected {
                        return None;
                    }
                    if client
                        .try_publish(&status_topic, QoS::AtLeastOnce, true, payload::status("stopped", &self.telemetry))
                        .is_ok()
                    {
                        queued.push_back(InFlight::Status);
                    } else {
                        return None;
                    }
                }
                _ = &mut stop_deadline => return None,
            }
        }
    }

    /// Notes the broker as heard from when it sent something.
    fn heard(&self, ev: &Event) {
        if let Event::Incoming(_) = ev {
            self.telemetry.seen(&Link::Broker);
        }
    }

    /// Hands rumqttc the next outbox entries, up to the window: flagged reports first, then
    /// own sightings, and statistics only when no flagged report is waiting to be sent.
    async fn top_up(
        &self,
        client: &AsyncClient,
        queued: &mut VecDeque<InFlight>,
        outstanding: &mut HashSet<Vec<u8>>,
        outstanding_stats: &mut HashSet<Vec<u8>>,
        outstanding_sightings: &mut HashSet<Vec<u8>>,
    ) {
        let room = self.window.saturating_sub(
            outstanding.len() + outstanding_stats.len() + outstanding_sightings.len(),
        );
        if room == 0 {
            return;
        }
        // One store job for the three outboxes.
        let (skip, skip_stats, skip_sightings) = (
            outstanding.clone(),
            outstanding_stats.clone(),
            outstanding_sightings.clone(),
        );
        let read = self
            .store
            .read(move |s| {
                let batch = s.outbox_batch(room, |k| skip.contains(k))?;
                let sightings = s
                    .split_ledger()
                    .sightings_batch(room - batch.len(), |k| skip_sightings.contains(k))?;
                let left = room - batch.len() - sightings.len();
                let stats = if batch.is_empty() && left > 0 {
                    s.stats_batch(left, |k| skip_stats.contains(k))?
                } else {
                    Vec::new()
                };
                Ok((batch, sightings, stats, s.split_ledger().figures()))
            })
            .await;
        let (batch, own_sightings, stats, figures) = match read {
            Ok(x) => x,
            Err(e) => {
                // The next wake-up tries again.
                tracing::error!(error = %e, "cannot read the outboxes");
                return;
            }
        };
        self.telemetry
            .set(Gauge::SightingsBacklog, figures.backlog as u64);
        self.telemetry.set(Gauge::SightingsDropped, figures.dropped);
        self.telemetry
            .set(Gauge::SightingsLedgerKeys, figures.ledger_keys as u64);
        for (q, suffix) in batch {
            let topic = format!("{}/{}", self.root, suffix);
            // For evidence requests: which record this report came from.
            let (id, key) = (q.report_id.clone(), q.key.clone());
            if let Err(e) = self.store.update(move |s| s.index_report(&id, &key)).await {
                tracing::warn!(error = %e, report = %q.report_id, "report not indexed; evidence for it will be refused");
            }
            match client.try_publish(topic, QoS::AtLeastOnce, false, q.payload) {
                Ok(()) => {
                    queued.push_back(InFlight::Report(q.key.clone()));
                    outstanding.insert(q.key);
                }
                Err(e) => {
                    tracing::debug!(error = %e, "publish queue full; will retry");
                    return;
                }
            }
        }
        let topic = format!("{}/sightings", self.root);
        for q in own_sightings {
            if client
                .try_publish(topic.clone(), QoS::AtLeastOnce, false, q.payload)
                .is_err()
            {
                return;
            }
            queued.push_back(InFlight::Sighting(q.key.clone()));
            outstanding_sightings.insert(q.key);
        }
        let topic = format!("{}/stats", self.root);
        for (key, body) in stats {
            if client
                .try_publish(topic.clone(), QoS::AtLeastOnce, false, body)
                .is_err()
            {
                break;
            }
            queued.push_back(InFlight::Stats(key.clone()));
            outstanding_stats.insert(key);
        }
    }
}

mod tls;
