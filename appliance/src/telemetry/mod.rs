//! What the appliance knows about itself while it runs: counters and gauges (one typed set,
//! [`Counter`] and [`Gauge`]), the state of every [`Link`], each line's stack light, the
//! decision latency, and the latest decisions. Every stage writes here; the console, the
//! status topic, the statistics, the demo and `/metrics` ([`metrics`]) read it. Cheap to
//! share (`Arc<Telemetry>`), never on a stage's critical path for longer than a short lock.
//!
//! Link changes are published on a [`tokio::sync::watch`] ([`Telemetry::watch_links`]): the
//! line controller's stack light and the feed's status topic follow them without polling.

mod counter;
mod link;
pub mod metrics;

pub use counter::{Counter, DecisionTime, Gauge, Labels, LineCounter, Metric};
pub use link::{light_key, Device, Link, LinkId, ParcelOutcome, LIGHTS};

use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use screenline_protocol::StackLight;
use serde::{Serialize, Serializer};
use std::collections::{BTreeMap, VecDeque};
use std::sync::Mutex;
use std::time::{Duration, SystemTime};
use tokio::sync::{broadcast, watch};

/// How many recent parcels the console can show.
const RECENT: usize = 200;

/// Decision latencies kept for the quantiles of the demo's summary.
const SAMPLES: usize = 4096;

/// The state of one link (serial port, folder, broker, model).
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct LinkState {
    pub up: bool,
    pub detail: String,
    #[serde(with = "crate::time_fmt::rfc3339")]
    pub since: SystemTime,
}

/// Every link's state, by link.
pub type Links = BTreeMap<Link, LinkState>;

/// One decided parcel as the console lists it (identity masked).
#[derive(Debug, Clone, Serialize)]
pub struct ParcelSummary {
    pub record_id: String,
    pub line_id: String,
    pub seq: u32,
    pub waybill: Option<String>,
    pub decision: crate::domain::Decision,
    pub reasons: Vec<crate::domain::Reason>,
    pub category: Option<String>,
    pub counterfeit: Option<f32>,
    pub sender: Option<String>,
    #[serde(with = "crate::time_fmt::rfc3339")]
    pub decided_at: SystemTime,
    /// What the line controller reported it did with the parcel.
    pub outcome: Option<ParcelOutcome>,
}

/// What the console hears live.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Live {
    /// A parcel was decided.
    Parcel(ParcelSummary),
    /// The line controller reported what it did with a decided parcel.
    Outcome {
        record_id: String,
        outcome: ParcelOutcome,
    },
}

/// A reading of every counter and gauge.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Counters {
    counters: BTreeMap<Counter, u64>,
    gauges: BTreeMap<Gauge, u64>,
}

impl Counters {
    /// A counter's value (0 if it never moved).
    pub fn get(&self, c: &Counter) -> u64 {
        self.counters.get(c).copied().unwrap_or(0)
    }

    /// A gauge's value (0 if never set).
    pub fn gauge(&self, g: &Gauge) -> u64 {
        self.gauges.get(g).copied().unwrap_or(0)
    }

    /// The counters the store keeps (the regulator's statistics).
    pub fn durable(&self) -> BTreeMap<Counter, u64> {
        self.counters
            .iter()
            .filter(|(c, _)| c.is_durable())
            .map(|(c, n)| (c.clone(), *n))
            .collect()
    }

    /// Every counter that moved, with its value.
    pub fn iter(&self) -> impl Iterator<Item = (&Counter, u64)> {
        self.counters.iter().map(|(c, n)| (c, *n))
    }

    /// Every counter and gauge by key, as the console's JSON shows them: a line's counters
    /// under their own key (`L1.reader.records`) and summed over the lines
    /// (`reader.records`).
    pub fn to_map(&self) -> BTreeMap<String, u64> {
        let mut out = BTreeMap::new();
        for (c, n) in &self.counters {
            for key in c.keys() {
                *out.entry(key).or_default() += n;
            }
        }
        for (g, v) in &self.gauges {
            out.insert(g.key(), *v);
        }
        out
    }

    /// The counters the console shows beside a link: a line's device its own
    /// (`L1.reader.…`), the broker the feed's, the model screening's, the store its own.
    pub fn of_link(&self, link: &Link) -> Vec<(String, u64)> {
        let prefix = match link {
            Link::Broker => "feed.".to_owned(),
            Link::Model => "screen.".to_owned(),
            other => format!("{other}."),
        };
        self.to_map()
            .into_iter()
            .filter(|(k, _)| k.starts_with(&prefix))
            .collect()
    }
}

/// As the console's JSON has always shown them: `{"parcels.decided": 3, …}`.
impl Serialize for Counters {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.to_map().serialize(s)
    }
}

/// What each line's stack light shows, as its controller last reported.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Lights(BTreeMap<String, StackLight>);

impl Lights {
    /// What line `line`'s light shows, if its controller is connected and said so.
    pub fn get(&self, line: &str) -> Option<StackLight> {
        self.0.get(line).copied()
    }

    /// Every line's light.
    pub fn iter(&self) -> impl Iterator<Item = (&str, StackLight)> {
        self.0.iter().map(|(l, s)| (l.as_str(), *s))
    }
}

/// `{"L1": "green"}`.
impl Serialize for Lights {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_map(self.0.iter().map(|(l, light)| (l, light_key(*light))))
    }
}

#[derive(Default)]
struct Inner {
    counts: Counters,
    /// The latest decision latencies, in µs.
    latencies: VecDeque<u64>,
    lights: BTreeMap<String, StackLight>,
    /// When each link's device was last heard from.
    seen: BTreeMap<Link, SystemTime>,
    recent: VecDeque<ParcelSummary>,
}

/// Shared telemetry.
pub struct Telemetry {
    inner: Mutex<Inner>,
    /// Every link's state; receivers are told when one goes up or down.
    links: watch::Sender<Links>,
    /// Every decided parcel, as it is decided (the console's live view).
    live: broadcast::Sender<Live>,
    /// From a scan's image complete to its decision handed to the controller.
    latency: Histogram,
    /// From a parcel's arrival in the judging queue to an operator's decision.
    queue_wait: Histogram,
}

impl Default for Telemetry {
    fn default() -> Self {
        Telemetry {
            inner: Mutex::default(),
            links: watch::Sender::new(Links::new()),
            live: broadcast::channel(RECENT).0,
            // 1 ms to 16 s: a line's decision budget is a few hundred milliseconds.
            latency: Histogram::new(exponential_buckets(0.001, 2.0, 15)),
            // 5 s to about 3 h: an operator opens a parcel within seconds to minutes.
            queue_wait: Histogram::new(exponential_buckets(5.0, 2.0, 12)),
        }
    }
}

impl Telemetry {
    fn with<T>(&self, f: impl FnOnce(&mut Inner) -> T) -> T {
        // A poisoned lock only means a panic elsewhere; the counters are still usable.
        let mut guard = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        f(&mut guard)
    }

    /// Adds one to a counter.
    pub fn incr(&self, c: Counter) {
        self.add(c, 1);
    }

    /// Adds one to a counter of line `line`.
    pub fn incr_line(&self, line: &str, c: LineCounter) {
        self.incr(Counter::line(line, c));
    }

    /// Adds `n` to a counter.
    pub fn add(&self, c: Counter, n: u64) {
        self.with(|i| *i.counts.counters.entry(c).or_default() += n);
    }

    /// Sets a gauge.
    pub fn set(&self, g: Gauge, v: u64) {
        self.with(|i| {
            i.counts.gauges.insert(g, v);
        });
    }

    /// Reads a counter (0 if it never moved).
    pub fn get(&self, c: Counter) -> u64 {
        self.with(|i| i.counts.get(&c))
    }

    /// Reads a gauge (0 if never set).
    pub fn gauge(&self, g: Gauge) -> u64 {
        self.with(|i| i.counts.gauge(&g))
    }

    /// Every counter and gauge.
    pub fn counters(&self) -> Counters {
        self.with(|i| i.counts.clone())
    }

    /// Records one decision's latency: from its scan's image complete to its decision
    /// handed to the line controller.
    pub fn observe_decision_latency(&self, d: Duration) {
        self.latency.observe(d.as_secs_f64());
        let us = u64::try_from(d.as_micros()).unwrap_or(u64::MAX);
        self.with(|i| {
            if i.latencies.len() == SAMPLES {
                i.latencies.pop_front();
            }
            i.latencies.push_back(us);
        });
    }

    /// Records how long a parcel waited in the judging queue for an operator's decision.
    pub fn observe_queue_wait(&self, d: Duration) {
        self.queue_wait.observe(d.as_secs_f64());
    }

    /// The `q`-quantile (0..=1) of the latest decision latencies, if there were any.
    pub fn decision_latency(&self, q: f64) -> Option<Duration> {
        self.with(|i| {
            let mut v: Vec<u64> = i.latencies.iter().copied().collect();
            if v.is_empty() {
                return None;
            }
            v.sort_unstable();
            let idx = ((v.len() - 1) as f64 * q.clamp(0.0, 1.0)).round() as usize;
            v.get(idx).copied().map(Duration::from_micros)
        })
    }

    /// Records a link's state; tells watchers, and logs, only when it goes up or down.
    pub fn link(&self, link: Link, up: bool, detail: impl Into<String>) {
        let detail = detail.into();
        let changed = self.links.send_if_modified(|links| {
            let changed = links.get(&link).is_none_or(|l| l.up != up);
            if changed || links.get(&link).is_some_and(|l| l.detail != detail) {
                links.insert(
                    link.clone(),
                    LinkState {
                        up,
                        detail: detail.clone(),
                        since: SystemTime::now(),
                    },
                );
            }
            changed
        });
        if changed {
            self.incr(Counter::LinkChanges);
            if up {
                tracing::info!(link = %link, %detail, "link up");
            } else {
                tracing::warn!(link = %link, %detail, "link down");
            }
        }
    }

    /// Whether a link is up.
    pub fn link_up(&self, link: &Link) -> bool {
        self.links.borrow().get(link).is_some_and(|l| l.up)
    }

    /// A link's state, if it was ever reported.
    pub fn link_state(&self, link: &Link) -> Option<LinkState> {
        self.links.borrow().get(link).cloned()
    }

    /// Every link's state.
    pub fn links(&self) -> Links {
        self.links.borrow().clone()
    }

    /// Every link's state from now on: the receiver wakes when a link goes up or down (or
    /// appears). Hold its borrow briefly: writers wait for it.
    pub fn watch_links(&self) -> watch::Receiver<Links> {
        self.links.subscribe()
    }

    /// Notes that a link's device was heard from just now.
    pub fn seen(&self, link: &Link) {
        let now = SystemTime::now();
        self.with(|i| match i.seen.get_mut(link) {
            Some(t) => *t = now,
            None => {
                i.seen.insert(link.clone(), now);
            }
        });
    }

    /// When a link's device was last heard from.
    pub fn last_seen(&self, link: &Link) -> Option<SystemTime> {
        self.with(|i| i.seen.get(link).copied())
    }

    /// Records what a line's stack light shows, as its controller reports it; forgotten
    /// (`None`) while the controller link is down.
    pub fn set_light(&self, line: &str, light: Option<StackLight>) {
        self.with(|i| match light {
            Some(l) => {
                i.lights.insert(line.to_owned(), l);
            }
            None => {
                i.lights.remove(line);
            }
        });
    }

    /// Every line's stack light, as last reported.
    pub fn lights(&self) -> Lights {
        self.with(|i| Lights(i.lights.clone()))
    }

    /// Adds a decided parcel to the recent list and tells live subscribers.
    pub fn push_parcel(&self, p: ParcelSummary) {
        // No subscriber is not an error.
        let _ = self.live.send(Live::Parcel(p.clone()));
        self.with(|i| {
            if i.recent.len() == RECENT {
                i.recent.pop_front();
            }
            i.recent.push_back(p);
        });
    }

    /// Decided parcels and their outcomes from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<Live> {
        self.live.subscribe()
    }

    /// Records what the line controller did with parcel `seq` of line `line`.
    pub fn parcel_outcome(&self, line: &str, seq: u32, outcome: ParcelOutcome) {
        let record_id = self.with(|i| {
            let p = i
                .recent
                .iter_mut()
                .rev()
                .find(|p| p.line_id == line && p.seq == seq)?;
            p.outcome = Some(outcome);
            Some(p.record_id.clone())
        });
        if let Some(record_id) = record_id {
            let _ = self.live.send(Live::Outcome { record_id, outcome });
        }
    }

    /// The recent parcels, newest first.
    pub fn recent(&self) -> Vec<ParcelSummary> {
        self.with(|i| i.recent.iter().rev().cloned().collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::Decision;

    #[test]
    fn the_console_json_keeps_its_keys_and_sums_a_lines_counters() {
        let t = Telemetry::default();
        t.incr(Counter::ParcelsDecided);
        t.incr(Counter::Decided(Decision::Flag));
        t.incr_line("L1", LineCounter::ReaderFramingErrors);
        t.add(Counter::line("L2", LineCounter::ReaderFramingErrors), 2);
        t.incr_line("L1", LineCounter::XrayQuarantined("symlink"));
        t.incr_line("L1", LineCounter::XrayQuarantined("too_large"));
        t.set(Gauge::FeedBacklog, 4);
        t.set(Gauge::BeltSpeedMillimetresPerSecond("L1".into()), 500);
        let json = serde_json::to_value(t.counters()).expect("json");
        let want = serde_json::json!({
            "parcels.decided": 1,
            "parcels.flag": 1,
            "reader.framing_errors": 3,
            "L1.reader.framing_errors": 1,
            "L2.reader.framing_errors": 2,
            "xray.quarantined": 2,
            "xray.quarantined.symlink": 1,
            "xray.quarantined.too_large": 1,
            "L1.xray.quarantined": 2,
            "L1.xray.quarantined.symlink": 1,
            "L1.xray.quarantined.too_large": 1,
            "feed.backlog": 4,
            "L1.belt_mm_per_s": 500,
        });
        assert_eq!(json, want);
        assert_eq!(
            t.counters().of_link(&Link::line("L2", Device::Reader)),
            [("L2.reader.framing_errors".to_owned(), 2)]
        );
    }

    #[tokio::test]
    async fn link_watchers_wake_when_a_link_goes_up_or_down_not_for_its_detail() {
        let t = Telemetry::default();
        let reader = Link::line("L1", Device::Reader);
        let mut rx = t.watch_links();
        t.link(reader.clone(), true, "/dev/ttyUSB0 open");
        assert!(rx.has_changed().expect("sender alive"));
        assert!(rx.borrow_and_update()[&reader].up);
        t.link(reader.clone(), true, "/dev/ttyUSB0 open again");
        assert!(!rx.has_changed().expect("sender alive"));
        assert_eq!(t.links()[&reader].detail, "/dev/ttyUSB0 open again");
        t.link(reader.clone(), false, "unplugged");
        rx.changed().await.expect("a change");
        assert!(!rx.borrow_and_update()[&reader].up);
        assert_eq!(t.get(Counter::LinkChanges), 2);
    }

    #[test]
    fn lights_and_outcomes_keep_their_json_forms() {
        let t = Telemetry::default();
        t.set_light("L1", Some(StackLight::Amber));
        assert_eq!(
            serde_json::to_string(&t.lights()).expect("json"),
            r#"{"L1":"amber"}"#
        );
        t.set_light("L1", None);
        assert_eq!(t.lights().get("L1"), None);
        let live = Live::Outcome {
            record_id: "r1".into(),
            outcome: ParcelOutcome::FailSafe,
        };
        assert_eq!(
            serde_json::to_string(&live).expect("json"),
            r#"{"kind":"outcome","record_id":"r1","outcome":"fail-safe"}"#
        );
    }

    #[test]
    fn decision_latency_quantiles_come_from_the_kept_samples() {
        let t = Telemetry::default();
        assert_eq!(t.decision_latency(0.5), None);
        for ms in 1..=100 {
            t.observe_decision_latency(Duration::from_millis(ms));
        }
        assert_eq!(t.decision_latency(0.0), Some(Duration::from_millis(1)));
        assert_eq!(t.decision_latency(1.0), Some(Duration::from_millis(100)));
        let p50 = t.decision_latency(0.5).expect("p50");
        assert!(p50 >= Duration::from_millis(50) && p50 <= Duration::from_millis(51));
    }
}
