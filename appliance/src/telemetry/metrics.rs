//! `/metrics`: the telemetry in the Prometheus text format (0.0.4), encoded by the
//! `prometheus-client` crate and following Prometheus' conventions — counters typed
//! `counter` and named `…_total`, base units in names (`_seconds`, `_bytes`), what varies
//! in labels (`line`, `device`, `reason`, `category`, …), the decision latency as a
//! histogram. Names are listed in the README's upgrade notes; `docs/alerts.yml` alerts on
//! them.

use super::{light_key, Counter, Labels, Link, Telemetry, LIGHTS};
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;
use std::collections::BTreeMap;
use std::time::UNIX_EPOCH;

/// The `Content-Type` of what [`encode`] writes.
pub const CONTENT_TYPE: &str = prometheus_client::encoding::prometheus_text::CONTENT_TYPE;

/// Every metric of `telemetry`, and `backlog` (the outbox's length, read fresh by the
/// caller that has the store) as `screenline_feed_backlog_messages`.
pub fn encode(telemetry: &Telemetry, backlog: Option<usize>) -> Result<String, std::fmt::Error> {
    let mut registry = Registry::with_prefix("screenline");
    registry.register(
        "decision_latency_seconds",
        "Time from a scan's image complete to its decision handed to the line controller.",
        telemetry.latency.clone(),
    );
    registry.register(
        "queue_time_to_decision_seconds",
        "Time from a flagged or manual parcel's arrival in the judging queue to an operator's decision.",
        telemetry.queue_wait.clone(),
    );
    registry.register_collector(Box::new(Snapshot::of(telemetry, backlog)));
    let mut out = String::new();
    prometheus_client::encoding::prometheus_text::encode(&mut out, &registry)?;
    Ok(out)
}

/// One family's series: help, type, and each label set's value.
#[derive(Debug)]
struct Family {
    help: &'static str,
    kind: MetricType,
    series: Vec<(Labels, Value)>,
}

/// A sample: counts as integers, the rest as floating point.
#[derive(Debug, Clone, Copy)]
enum Value {
    Count(u64),
    Real(f64),
}

/// Everything a scrape shows, read at once.
#[derive(Debug)]
struct Snapshot {
    families: BTreeMap<&'static str, Family>,
}

impl Snapshot {
    fn of(t: &Telemetry, backlog: Option<usize>) -> Snapshot {
        let mut families: BTreeMap<&'static str, Family> = BTreeMap::new();
        let mut add = |name, help, kind, labels, value: Value| {
            families
                .entry(name)
                .or_insert_with(|| Family {
                    help,
                    kind,
                    series: Vec::new(),
                })
                .series
                .push((labels, value));
        };
        let counts = t.counters();
        let mut counters: BTreeMap<Counter, u64> =
            counts.iter().map(|(c, n)| (c.clone(), n)).collect();
        for c in Counter::always_shown() {
            counters.entry(c).or_default();
        }
        for (c, n) in counters.into_iter().filter(|(c, _)| c.in_metrics()) {
            let m = c.metric();
            add(
                m.name,
                m.help,
                MetricType::Counter,
                m.labels,
                Value::Count(n),
            );
        }
        let mut gauges: BTreeMap<super::Gauge, u64> = counts.gauges.clone();
        if let Some(b) = backlog {
            gauges.insert(super::Gauge::FeedBacklog, b as u64);
        }
        for (g, v) in gauges {
            let (m, scale) = g.metric();
            let value = if scale == 1.0 {
                Value::Count(v)
            } else {
                Value::Real(v as f64 * scale)
            };
            add(m.name, m.help, MetricType::Gauge, m.labels, value);
        }
        for (link, state) in t.links() {
            add(
                "link_up",
                "Whether a link works (1) or not (0), per line and device.",
                MetricType::Gauge,
                link_labels(&link),
                Value::Count(u64::from(state.up)),
            );
            add(
                "link_changed_timestamp_seconds",
                "When a link last went up or down, or its detail changed (Unix time).",
                MetricType::Gauge,
                link_labels(&link),
                Value::Real(unix_seconds(state.since)),
            );
            if let Some(at) = t.last_seen(&link) {
                add(
                    "link_last_seen_timestamp_seconds",
                    "When a link's device was last heard from (Unix time).",
                    MetricType::Gauge,
                    link_labels(&link),
                    Value::Real(unix_seconds(at)),
                );
            }
        }
        for (line, shown) in t.lights().iter() {
            for light in LIGHTS {
                add(
                    "stack_light",
                    "What a line's stack light shows, as its controller reports it: 1 for the state shown.",
                    MetricType::Gauge,
                    vec![("line", line.to_owned()), ("light", light_key(light).to_owned())],
                    Value::Count(u64::from(light == shown)),
                );
            }
        }
        Snapshot { families }
    }
}

fn link_labels(link: &Link) -> Labels {
    let (line, device) = link.labels();
    let mut labels = Vec::with_capacity(2);
    if let Some(line) = line {
        labels.push(("line", line.to_owned()));
    }
    labels.push(("device", device.to_owned()));
    labels
}

fn unix_seconds(t: std::time::SystemTime) -> f64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

impl Collector for Snapshot {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        for (name, f) in &self.families {
            let counter = f.kind == MetricType::Counter;
            let mut family = encoder.encode_descriptor(name, f.help, None, f.kind)?;
            for (labels, v) in &f.series {
                let series = family.encode_family(labels)?;
                match (counter, *v) {
                    (true, Value::Count(n)) => ConstCounter::new(n).encode(series)?,
                    (true, Value::Real(x)) => ConstCounter::new(x).encode(series)?,
                    (false, Value::Count(n)) => ConstGauge::new(n).encode(series)?,
                    (false, Value::Real(x)) => ConstGauge::new(x).encode(series)?,
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::Decision;
    use crate::telemetry::{Device, Gauge, LineCounter, ParcelOutcome};
    use std::time::Duration;

    fn scrape() -> String {
        let t = Telemetry::default();
        t.incr(Counter::ParcelsDecided);
        t.incr(Counter::Decided(Decision::Flag));
        t.incr_line("L1", LineCounter::Outcome(ParcelOutcome::FailSafe));
        t.incr_line("L2", LineCounter::XrayQuarantined("symlink"));
        t.set(Gauge::StoreBytes, 2048);
        t.set(Gauge::BeltSpeedMillimetresPerSecond("L1".into()), 1500);
        t.link(Link::line("L1", Device::Reader), true, "open");
        t.link(Link::Store, false, "cannot write");
        t.set_light("L1", Some(screenline_protocol::StackLight::Green));
        t.observe_decision_latency(Duration::from_millis(30));
        encode(&t, Some(3)).expect("encodes")
    }

    #[test]
    fn counters_are_typed_counter_named_total_with_labels() {
        let out = scrape();
        for want in [
            "# TYPE screenline_parcels_screened_total counter\nscreenline_parcels_screened_total 1\n",
            "screenline_parcel_decisions_total{decision=\"flag\"} 1\n",
            "screenline_parcel_decisions_total{decision=\"clear\"} 0\n",
            "screenline_controller_parcel_outcomes_total{line=\"L1\",outcome=\"fail_safe\"} 1\n",
            "screenline_xray_quarantined_files_total{line=\"L2\",reason=\"symlink\"} 1\n",
            "# TYPE screenline_store_used_bytes gauge\nscreenline_store_used_bytes 2048\n",
            "screenline_belt_speed_meters_per_second{line=\"L1\"} 1.5\n",
            "screenline_feed_backlog_messages 3\n",
            "screenline_link_up{line=\"L1\",device=\"reader\"} 1\n",
            "screenline_link_up{device=\"store\"} 0\n",
            "screenline_stack_light{line=\"L1\",light=\"green\"} 1\n",
            "screenline_stack_light{line=\"L1\",light=\"red\"} 0\n",
            "# TYPE screenline_decision_latency_seconds histogram\n",
            "screenline_decision_latency_seconds_bucket{le=\"0.032\"} 1\n",
            "screenline_decision_latency_seconds_count 1\n",
        ] {
            assert!(out.contains(want), "{want:?} missing from\n{out}");
        }
        // Every family is declared once, and every counter's samples end in `_total`.
        let mut declared = std::collections::HashSet::new();
        for line in out.lines() {
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                let (name, kind) = rest.split_once(' ').expect("name and type");
                assert!(declared.insert(name.to_owned()), "{name} declared twice");
                assert_eq!(kind == "counter", name.ends_with("_total"), "{line}");
            }
        }
    }
}
