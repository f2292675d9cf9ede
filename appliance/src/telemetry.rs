//! What the appliance knows about itself while it runs: counters, the state of every link,
//! and the latest decisions. Every stage writes here; the console, the status topic and
//! the demo read it. Cheap to share (`Arc<Telemetry>`), never on a stage's critical path
//! for longer than a short lock.

use serde::Serialize;
use std::collections::{BTreeMap, VecDeque};
use std::sync::Mutex;
use std::time::SystemTime;

/// How many recent parcels the console can show.
const RECENT: usize = 200;

/// The state of one link (serial port, folder, broker, model).
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct LinkState {
    pub up: bool,
    pub detail: String,
    #[serde(with = "crate::time_fmt::rfc3339")]
    pub since: SystemTime,
}

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
    /// What the line controller reported it did: passed, diverted, fail-safe.
    pub outcome: Option<String>,
}

/// What the console hears live.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Live {
    /// A parcel was decided.
    Parcel(ParcelSummary),
    /// The line controller reported what it did with a decided parcel.
    Outcome { record_id: String, outcome: String },
}

/// Samples kept per latency series.
const SAMPLES: usize = 4096;

#[derive(Default)]
struct Inner {
    counters: BTreeMap<String, u64>,
    samples: BTreeMap<String, VecDeque<u64>>,
    links: BTreeMap<String, LinkState>,
    /// What each line's stack light shows, as its controller last reported.
    lights: BTreeMap<String, String>,
    /// When each device was last heard from.
    seen: BTreeMap<String, SystemTime>,
    recent: VecDeque<ParcelSummary>,
}

/// Shared telemetry.
pub struct Telemetry {
    inner: Mutex<Inner>,
    /// Every decided parcel, as it is decided (the console's live view).
    live: tokio::sync::broadcast::Sender<Live>,
}

impl Default for Telemetry {
    fn default() -> Self {
        Telemetry {
            inner: Mutex::default(),
            live: tokio::sync::broadcast::channel(RECENT).0,
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
    pub fn incr(&self, name: &str) {
        self.add(name, 1);
    }

    /// Adds one to a counter of a line's device (`reader.records`): the appliance's total,
    /// and the line's own (`L1.reader.records`), which the console shows for that device.
    pub fn incr_line(&self, line_id: &str, name: &str) {
        self.with(|i| {
            *i.counters.entry(name.to_owned()).or_default() += 1;
            *i.counters.entry(format!("{line_id}.{name}")).or_default() += 1;
        });
    }

    /// Adds `n` to a counter.
    pub fn add(&self, name: &str, n: u64) {
        self.with(|i| *i.counters.entry(name.to_owned()).or_default() += n);
    }

    /// Sets a gauge.
    pub fn set(&self, name: &str, v: u64) {
        self.with(|i| {
            i.counters.insert(name.to_owned(), v);
        });
    }

    /// Records one sample of a series (e.g. a latency in µs); the latest few thousand are kept.
    pub fn observe(&self, name: &str, value: u64) {
        self.with(|i| {
            let s = i.samples.entry(name.to_owned()).or_default();
            if s.len() == SAMPLES {
                s.pop_front();
            }
            s.push_back(value);
        });
    }

    /// The `q`-quantile (0..=1) of a series' kept samples, if it has any.
    pub fn quantile(&self, name: &str, q: f64) -> Option<u64> {
        self.with(|i| {
            let mut v: Vec<u64> = i.samples.get(name)?.iter().copied().collect();
            if v.is_empty() {
                return None;
            }
            v.sort_unstable();
            let idx = ((v.len() - 1) as f64 * q.clamp(0.0, 1.0)).round() as usize;
            v.get(idx).copied()
        })
    }

    /// Reads a counter (0 if never touched).
    pub fn get(&self, name: &str) -> u64 {
        self.with(|i| i.counters.get(name).copied().unwrap_or(0))
    }

    /// Every counter.
    pub fn counters(&self) -> BTreeMap<String, u64> {
        self.with(|i| i.counters.clone())
    }

    /// Records a link's state; logs only changes.
    pub fn link(&self, name: &str, up: bool, detail: impl Into<String>) {
        let detail = detail.into();
        let changed = self.with(|i| {
            let changed = i.links.get(name).is_none_or(|l| l.up != up);
            if changed || i.links.get(name).is_some_and(|l| l.detail != detail) {
                i.links.insert(
                    name.to_owned(),
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
            // The status topic is published again when this moves.
            self.incr("links.changes");
            if up {
                tracing::info!(link = name, %detail, "link up");
            } else {
                tracing::warn!(link = name, %detail, "link down");
            }
        }
    }

    /// Notes that a device (`L1.reader`, `broker`, …) was heard from just now.
    pub fn seen(&self, device: &str) {
        let now = SystemTime::now();
        self.with(|i| match i.seen.get_mut(device) {
            Some(t) => *t = now,
            None => {
                i.seen.insert(device.to_owned(), now);
            }
        });
    }

    /// When a device was last heard from.
    pub fn last_seen(&self, device: &str) -> Option<SystemTime> {
        self.with(|i| i.seen.get(device).copied())
    }

    /// Records what a line's stack light shows (`green`, `amber`, `red`, `off`), as its
    /// controller reports it; forgotten (`None`) while the controller link is down.
    pub fn set_light(&self, line_id: &str, light: Option<&str>) {
        self.with(|i| match light {
            Some(l) => {
                i.lights.insert(line_id.to_owned(), l.to_owned());
            }
            None => {
                i.lights.remove(line_id);
            }
        });
    }

    /// Every line's stack light, as last reported.
    pub fn lights(&self) -> BTreeMap<String, String> {
        self.with(|i| i.lights.clone())
    }

    /// Whether a link is up.
    pub fn link_up(&self, name: &str) -> bool {
        self.with(|i| i.links.get(name).is_some_and(|l| l.up))
    }

    /// Every link's state.
    pub fn links(&self) -> BTreeMap<String, LinkState> {
        self.with(|i| i.links.clone())
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
    pub fn subscribe(&self) -> tokio::sync::broadcast::Receiver<Live> {
        self.live.subscribe()
    }

    /// Records what the line controller did with parcel `seq` of `line_id`.
    pub fn parcel_outcome(&self, line_id: &str, seq: u32, outcome: &str) {
        let record_id = self.with(|i| {
            let p = i
                .recent
                .iter_mut()
                .rev()
                .find(|p| p.line_id == line_id && p.seq == seq)?;
            p.outcome = Some(outcome.to_owned());
            Some(p.record_id.clone())
        });
        if let Some(record_id) = record_id {
            let _ = self.live.send(Live::Outcome {
                record_id,
                outcome: outcome.to_owned(),
            });
        }
    }

    /// The recent parcels, newest first.
    pub fn recent(&self) -> Vec<ParcelSummary> {
        self.with(|i| i.recent.iter().rev().cloned().collect())
    }
}
