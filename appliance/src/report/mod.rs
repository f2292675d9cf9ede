//! The regulator feed over MQTT (rumqttc): drains the store's outbox at QoS 1 and keeps the
//! retained `…/status` with a last will.
//!
//! rumqttc's `publish` returning means queued, nothing more, and with a clean session it
//! drops whatever was unacknowledged when the link fell. So this task is the only publisher
//! and owns the event loop: it learns each publish's packet id from `Outgoing::Publish` in
//! publish order, removes a report from the outbox only on the `PubAck` of that packet id,
//! and after every ConnAck re-sends everything still in the outbox. At most `window`
//! publishes are outstanding, well below rumqttc's packet-id space.

pub mod payload;

use crate::config::{parse_broker_url, Config};
use crate::store::Store;
use crate::telemetry::Telemetry;
use rand::Rng;
use rumqttc::{AsyncClient, Event, LastWill, MqttOptions, Outgoing, Packet, QoS};
use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

const BACKOFF_MIN: Duration = Duration::from_millis(200);
const BACKOFF_MAX: Duration = Duration::from_secs(10);
/// How long a clean shutdown waits for the broker to take the `stopped` status.
const STOP_GRACE: Duration = Duration::from_secs(3);

#[derive(Debug, Clone)]
enum InFlight {
    Report(Vec<u8>),
    Status,
}

/// The feed's task.
pub struct Feed {
    root: String,
    opts: MqttOptions,
    window: usize,
    store: Arc<Store>,
    wake: Arc<Notify>,
    telemetry: Arc<Telemetry>,
}

impl Feed {
    /// A feed for `config`, draining `store`; `wake` is notified when the outbox grows.
    pub fn new(
        config: &Config,
        store: Arc<Store>,
        wake: Arc<Notify>,
        telemetry: Arc<Telemetry>,
    ) -> anyhow::Result<Feed> {
        let addr = parse_broker_url(&config.mqtt.url).map_err(anyhow::Error::msg)?;
        let root = config.topic_root();
        let mut opts = MqttOptions::new(config.client_id(), addr.host, addr.port);
        opts.set_keep_alive(Duration::from_secs(config.mqtt.keep_alive_s))
            .set_clean_session(true)
            .set_max_packet_size(4 << 20, 4 << 20)
            .set_last_will(LastWill::new(
                format!("{root}/status"),
                payload::status("offline", &telemetry),
                QoS::AtLeastOnce,
                true,
            ));
        Ok(Feed {
            root,
            opts,
            window: config.mqtt.window,
            store,
            wake,
            telemetry,
        })
    }

    /// Runs until `shutdown`, then publishes `stopped` and disconnects.
    ///
    /// Every connection gets a fresh rumqttc client and event loop. An event loop that has
    /// lost its link keeps events of the old connection buffered (an `Outgoing::Publish` whose
    /// write failed is still queued) and goes on numbering packets where it was; fed into the
    /// next connection, such a stale event would shift every packet id → report mapping by
    /// one, and a PUBACK would clear a report the broker never received.
    pub async fn run(self, shutdown: CancellationToken) {
        let mut backoff = BACKOFF_MIN;
        loop {
            let Some(error) = self.connection(&shutdown, &mut backoff).await else {
                return;
            };
            self.telemetry.incr("feed.connection_errors");
            self.telemetry.link("broker", false, error);
            let jitter = rand::thread_rng().gen_range(0..=backoff.as_millis() as u64 / 2);
            tokio::select! {
                _ = tokio::time::sleep(backoff + Duration::from_millis(jitter)) => {}
                _ = shutdown.cancelled() => return,
            }
            backoff = (backoff * 2).min(BACKOFF_MAX);
        }
    }

    /// One connection to the broker, from connecting to losing it (`Some(why)`) or to a clean
    /// stop (`None`).
    async fn connection(
        &self,
        shutdown: &CancellationToken,
        backoff: &mut Duration,
    ) -> Option<String> {
        let (client, mut eventloop) = AsyncClient::new(self.opts.clone(), self.window * 2 + 8);
        let status_topic = format!("{}/status", self.root);
        let mut connected = false;
        // Publishes handed to rumqttc whose packet id we have not seen yet, in order.
        let mut queued: VecDeque<InFlight> = VecDeque::new();
        let mut inflight: HashMap<u16, InFlight> = HashMap::new();
        let mut outstanding: HashSet<Vec<u8>> = HashSet::new();
        let mut stopping = false;
        let stop_deadline = tokio::time::sleep(Duration::from_secs(86_400 * 365));
        tokio::pin!(stop_deadline);
        // A link going down or up (a reader unplugged) is published in the status at once.
        let mut links_seen = 0;
        let mut link_check = tokio::time::interval(Duration::from_millis(500));
        loop {
            self.telemetry
                .set("feed.backlog", self.store.outbox_len() as u64);
            if connected && !stopping {
                self.top_up(&client, &mut queued, &mut outstanding);
            }
            tokio::select! {
                ev = eventloop.poll() => match ev.inspect(|e| self.heard(e)) {
                    Ok(Event::Incoming(Packet::ConnAck(_))) => {
                        connected = true;
                        *backoff = BACKOFF_MIN;
                        self.telemetry.link("broker", true, "connected");
                        let state = if stopping { "stopped" } else { "online" };
                        links_seen = self.telemetry.get("links.changes");
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
                            match self.store.ack(&key) {
                                Ok(true) => self.telemetry.incr("feed.reports_acked"),
                                Ok(false) => {}
                                Err(e) => tracing::error!(error = %e, "cannot clear an acknowledged report; it will be sent again"),
                            }
                        }
                        Some(InFlight::Status) if stopping => {
                            let _ = client.try_disconnect();
                        }
                        _ => {}
                    },
                    Ok(Event::Outgoing(Outgoing::Disconnect)) if stopping => return None,
                    Ok(_) => {}
                    Err(e) if stopping => {
                        tracing::debug!(error = %e, "link lost while stopping");
                        return None;
                    }
                    Err(e) => return Some(e.to_string()),
                },
                _ = self.wake.notified(), if connected && !stopping => {}
                _ = link_check.tick(), if connected && !stopping => {
                    let changes = self.telemetry.get("links.changes");
                    if changes != links_seen
                        && client
                            .try_publish(&status_topic, QoS::AtLeastOnce, true, payload::status("online", &self.telemetry))
                            .is_ok()
                    {
                        links_seen = changes;
                        queued.push_back(InFlight::Status);
                    }
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
            self.telemetry.seen("broker");
        }
    }

    /// Hands rumqttc the next outbox entries, up to the window.
    fn top_up(
        &self,
        client: &AsyncClient,
        queued: &mut VecDeque<InFlight>,
        outstanding: &mut HashSet<Vec<u8>>,
    ) {
        let room = self.window.saturating_sub(outstanding.len());
        if room == 0 {
            return;
        }
        let batch = match self.store.outbox_batch(room, |k| outstanding.contains(k)) {
            Ok(b) => b,
            Err(e) => {
                tracing::error!(error = %e, "cannot read the outbox");
                return;
            }
        };
        for (q, suffix) in batch {
            let topic = format!("{}/{}", self.root, suffix);
            match client.try_publish(topic, QoS::AtLeastOnce, false, q.payload) {
                Ok(()) => {
                    queued.push_back(InFlight::Report(q.key.clone()));
                    outstanding.insert(q.key);
                }
                Err(e) => {
                    tracing::debug!(error = %e, "publish queue full; will retry");
                    break;
                }
            }
        }
    }
}
