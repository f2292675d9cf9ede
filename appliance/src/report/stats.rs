//! Periodic statistics for the regulator (`{root}/stats`, `screenline.stats.v1`): what was
//! screened in each period, from the appliance's counters.
//!
//! Every `mqtt.stats_period_s` the counters are read and the difference to the last reading
//! becomes one message, queued durably in the store's statistics outbox. The feed sends it
//! only when no flagged report is waiting (PRODUCT.md: flagged reports go ahead of
//! statistics when a backlog drains). A clean stop queues the period it cuts short. The
//! counters are kept in the store (parcels' with their records), and so is where the last
//! queued period ended: after a crash the next period starts there and misses nothing.

use crate::domain::{Category, Decision, Finding, ReasonCode};
use crate::store::counters::StatsMark;
use crate::store::owner::StoreHandle;
use crate::telemetry::{Counter, DecisionTime, Telemetry};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

/// The `screenline.stats.v1` payload for the counters' change from `before` to `after`.
pub fn stats_payload(
    site_id: &str,
    appliance_id: &str,
    from: SystemTime,
    to: SystemTime,
    before: &BTreeMap<Counter, u64>,
    after: &BTreeMap<Counter, u64>,
) -> StatsPayload {
    let delta = |c: Counter| -> u64 {
        after
            .get(&c)
            .copied()
            .unwrap_or(0)
            .saturating_sub(before.get(&c).copied().unwrap_or(0))
    };
    // Only what occurred in the period, by its key on the wire.
    let occurred = |counts: Vec<(&'static str, u64)>| -> BTreeMap<String, u64> {
        counts
            .into_iter()
            .filter(|(_, n)| *n > 0)
            .map(|(k, n)| (k.to_owned(), n))
            .collect()
    };
    StatsPayload {
        schema: "screenline.stats.v1".to_owned(),
        site_id: site_id.to_owned(),
        appliance_id: appliance_id.to_owned(),
        from,
        to,
        parcels: ParcelCounts {
            screened: delta(Counter::ParcelsDecided),
            cleared: delta(Counter::Decided(Decision::Clear)),
            flagged: delta(Counter::Decided(Decision::Flag)),
            manual: delta(Counter::Decided(Decision::Manual)),
            no_read: delta(Counter::Reason(ReasonCode::NoRead)),
            no_image: delta(Counter::Reason(ReasonCode::NoImage)),
        },
        flagged_by_reason: occurred(
            ReasonCode::ALL
                .iter()
                .map(|r| (r.key(), delta(Counter::FlaggedReason(*r))))
                .collect(),
        ),
        flagged_by_category: occurred(
            Category::ALL
                .iter()
                .map(|c| (c.key(), delta(Counter::FlaggedCategory(*c))))
                .collect(),
        ),
        reviews: ReviewCounts {
            confirmed: delta(Counter::Review(Finding::Confirmed)),
            cleared: delta(Counter::Review(Finding::Cleared)),
            time_to_decision: DecisionTimes {
                count: DecisionTime::ALL
                    .iter()
                    .map(|t| delta(Counter::QueueDecided(*t)))
                    .sum(),
                sum_ms: delta(Counter::QueueWaitMillis),
                within_1m: delta(Counter::QueueDecided(DecisionTime::Within1m)),
                within_5m: delta(Counter::QueueDecided(DecisionTime::Within5m)),
                within_30m: delta(Counter::QueueDecided(DecisionTime::Within30m)),
                over_30m: delta(Counter::QueueDecided(DecisionTime::Over30m)),
            },
        },
        rereviews: RereviewCounts {
            drawn: delta(Counter::RereviewsDrawn),
            confirmed: delta(Counter::Rereview(Finding::Confirmed)),
            cleared: delta(Counter::Rereview(Finding::Cleared)),
        },
        commands: CommandCounts {
            accepted: delta(Counter::CommandsAccepted),
            refused: delta(Counter::CommandsRefused),
        },
    }
}

/// `screenline.stats.v1`: what one period screened.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StatsPayload {
    pub schema: String,
    pub site_id: String,
    pub appliance_id: String,
    #[serde(with = "crate::time_fmt::rfc3339")]
    pub from: SystemTime,
    #[serde(with = "crate::time_fmt::rfc3339")]
    pub to: SystemTime,
    pub parcels: ParcelCounts,
    /// Flagged parcels per reason key (reasons that occurred only).
    pub flagged_by_reason: BTreeMap<String, u64>,
    /// Flagged parcels per category key (categories that occurred only).
    pub flagged_by_category: BTreeMap<String, u64>,
    pub reviews: ReviewCounts,
    /// The sampled re-review of cleared parcels (absent from statistics queued before it).
    #[serde(default)]
    pub rereviews: RereviewCounts,
    pub commands: CommandCounts,
}

/// Cleared parcels drawn for re-review in a period, and what the re-reviews found.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RereviewCounts {
    /// Cleared parcels drawn (`console.queue.rereview_share` of them).
    pub drawn: u64,
    /// Re-reviews that confirmed a suspicion: parcels the line had cleared.
    pub confirmed: u64,
    /// Re-reviews that found nothing wrong.
    pub cleared: u64,
}

/// Parcels of a period.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ParcelCounts {
    pub screened: u64,
    pub cleared: u64,
    pub flagged: u64,
    pub manual: u64,
    pub no_read: u64,
    pub no_image: u64,
}

/// Operators' reviews of a period.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReviewCounts {
    pub confirmed: u64,
    pub cleared: u64,
    /// How long the parcels judged in the period had waited in the judging queue, from
    /// their arrival to the decision (absent from statistics queued before the queue).
    #[serde(default)]
    pub time_to_decision: DecisionTimes,
}

/// The time from arrival in the judging queue to an operator's decision, over a period.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct DecisionTimes {
    /// Parcels judged from the queue.
    pub count: u64,
    /// Their waits summed, in milliseconds (`sum_ms / count`: the mean).
    pub sum_ms: u64,
    pub within_1m: u64,
    pub within_5m: u64,
    pub within_30m: u64,
    pub over_30m: u64,
}

/// The regulator's commands of a period.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CommandCounts {
    pub accepted: u64,
    pub refused: u64,
}

/// Queues a statistics message every `period` until `shutdown`, then one last one for the
/// period cut short.
pub async fn run(
    period: Duration,
    site_id: String,
    appliance_id: String,
    store: StoreHandle,
    wake: Arc<Notify>,
    telemetry: Arc<Telemetry>,
    shutdown: CancellationToken,
) {
    // The last queued period's end, kept in the store: after a restart, or a crash, the
    // next period starts exactly there, and the counters (kept too) count all it holds.
    let (mut from, mut before) = match store.read(|s| s.stats_mark()).await {
        Ok(Some(mark)) => (mark.at(), mark.counters),
        Ok(None) => (SystemTime::now(), telemetry.counters().durable()),
        Err(e) => {
            tracing::error!(error = %e, "statistics mark unreadable; statistics start now");
            (SystemTime::now(), telemetry.counters().durable())
        }
    };
    let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        // The period cut short by a stop is queued too; it goes out after the next start.
        let last = tokio::select! {
            _ = tick.tick() => false,
            _ = shutdown.cancelled() => true,
        };
        let to = SystemTime::now();
        let after = telemetry.counters().durable();
        let body = stats_payload(&site_id, &appliance_id, from, to, &before, &after);
        match serde_json::to_vec(&body) {
            Ok(bytes) => {
                // The period and the mark where the next one starts, in one durable write.
                let mark = StatsMark {
                    at_ms: to
                        .duration_since(std::time::UNIX_EPOCH)
                        .map_or(0, |d| d.as_millis() as u64),
                    counters: after.clone(),
                };
                match store
                    .write(move |s| {
                        s.queue_stats(to, &bytes)?;
                        s.set_stats_mark(&mark)
                    })
                    .await
                {
                    Ok(()) => {
                        telemetry.incr(Counter::FeedStatsQueued);
                        wake.notify_one();
                    }
                    Err(e) => {
                        telemetry.incr(Counter::FeedStatsErrors);
                        tracing::error!(error = %e, "statistics not queued; the next period carries on");
                    }
                }
            }
            Err(e) => tracing::error!(error = %e, "statistics not encoded"),
        }
        if last {
            return;
        }
        from = to;
        before = after;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_period_counts_only_its_own_parcels() {
        let counterfeit = Counter::FlaggedReason(ReasonCode::CounterfeitSuspected);
        let before: BTreeMap<Counter, u64> = [
            (Counter::ParcelsDecided, 10),
            (Counter::Decided(Decision::Flag), 2),
            (counterfeit.clone(), 2),
        ]
        .into_iter()
        .collect();
        let mut after = before.clone();
        after.insert(Counter::ParcelsDecided, 15);
        after.insert(Counter::Decided(Decision::Flag), 4);
        after.insert(Counter::Decided(Decision::Clear), 3);
        after.insert(counterfeit, 3);
        after.insert(Counter::FlaggedReason(ReasonCode::WatchlistedSender), 1);
        after.insert(Counter::FlaggedCategory(Category::Electronics), 2);
        after.insert(Counter::Review(Finding::Confirmed), 1);
        after.insert(Counter::QueueDecided(DecisionTime::Within5m), 1);
        after.insert(Counter::QueueWaitMillis, 95_000);
        after.insert(Counter::RereviewsDrawn, 2);
        after.insert(Counter::Rereview(Finding::Confirmed), 1);
        let now = SystemTime::now();
        let v = stats_payload("S", "A", now, now, &before, &after);
        let p = &v.parcels;
        assert_eq!((p.screened, p.flagged, p.cleared, p.manual), (5, 2, 3, 0));
        let by =
            |m: &BTreeMap<String, u64>| m.iter().map(|(k, n)| (k.clone(), *n)).collect::<Vec<_>>();
        assert_eq!(
            by(&v.flagged_by_reason),
            [
                ("counterfeit_suspected".to_owned(), 1),
                ("watchlisted_sender".to_owned(), 1)
            ]
        );
        assert_eq!(by(&v.flagged_by_category), [("electronics".to_owned(), 2)]);
        assert_eq!(v.reviews.confirmed, 1);
        let t = &v.reviews.time_to_decision;
        assert_eq!(
            (t.count, t.sum_ms, t.within_5m, t.within_1m),
            (1, 95_000, 1, 0)
        );
        assert_eq!(
            (
                v.rereviews.drawn,
                v.rereviews.confirmed,
                v.rereviews.cleared
            ),
            (2, 1, 0)
        );
        // As the schema says, before and after: statistics queued without the new fields
        // still read.
        let schema: serde_json::Value = serde_json::from_str(
            &std::fs::read_to_string(
                std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                    .join("../docs/schemas/stats.schema.json"),
            )
            .expect("the schema"),
        )
        .expect("JSON");
        let validator = jsonschema::draft202012::new(&schema).expect("a schema");
        let mut json = serde_json::to_value(&v).expect("json");
        let errors: Vec<String> = validator
            .iter_errors(&json)
            .map(|e| e.to_string())
            .collect();
        assert!(errors.is_empty(), "{errors:?}");
        json.as_object_mut().expect("object").remove("rereviews");
        json["reviews"]
            .as_object_mut()
            .expect("object")
            .remove("time_to_decision");
        assert!(validator.is_valid(&json));
        let old: StatsPayload = serde_json::from_value(json).expect("an older payload");
        assert_eq!(old.rereviews, RereviewCounts::default());
    }

    #[tokio::test]
    async fn after_a_crash_the_next_period_starts_at_the_last_mark_and_misses_nothing() {
        let dir = crate::testutil::temp_dir("stats-mark");
        let store = crate::store::Store::open(&dir).expect("open");
        // Before the crash: a period queued up to `mark`, with 5 parcels decided by then; 3
        // more decided (and kept) before the process died.
        let mark_at = SystemTime::now() - Duration::from_secs(600);
        let mark = StatsMark {
            at_ms: mark_at
                .duration_since(std::time::UNIX_EPOCH)
                .expect("after 1970")
                .as_millis() as u64,
            counters: [(Counter::ParcelsDecided, 5)].into_iter().collect(),
        };
        store.set_stats_mark(&mark).expect("mark");
        for _ in 0..8 {
            store.count(&Counter::ParcelsDecided).expect("count");
        }
        // After the restart: counters come back from the store, as Appliance::start does.
        let telemetry = Arc::new(Telemetry::default());
        for (c, n) in store.durable_counters().expect("counters") {
            telemetry.add(c, n);
        }
        let store = StoreHandle::start(store, &dir).expect("store thread");
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(run(
            Duration::from_secs(3600),
            "S".into(),
            "A".into(),
            store.clone(),
            Arc::new(Notify::new()),
            telemetry,
            shutdown.clone(),
        ));
        tokio::time::sleep(Duration::from_millis(50)).await;
        shutdown.cancel();
        task.await.expect("stats task");
        let queued = store
            .read(|s| s.stats_batch(10, |_| false))
            .await
            .expect("queued");
        assert_eq!(queued.len(), 1);
        let v: StatsPayload = serde_json::from_slice(&queued[0].1).expect("a stats payload");
        assert_eq!(
            crate::time_fmt::format(v.from),
            crate::time_fmt::format(mark.at()),
            "{v:?}"
        );
        assert_eq!(v.parcels.screened, 3, "{v:?}");
        let next = store
            .read(|s| s.stats_mark())
            .await
            .expect("read")
            .expect("mark");
        assert_eq!(next.counters[&Counter::ParcelsDecided], 8);
    }
}
