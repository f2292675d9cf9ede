//! Periodic statistics for the regulator (`{root}/stats`, `screenline.stats.v1`): what was
//! screened in each period, from the appliance's counters.
//!
//! Every `mqtt.stats_period_s` the counters are read and the difference to the last reading
//! becomes one message, queued durably in the store's statistics outbox. The feed sends it
//! only when no flagged report is waiting (PRODUCT.md: flagged reports go ahead of
//! statistics when a backlog drains). A clean stop queues the period it cuts short. The
//! counters are kept in the store (parcels' with their records), and so is where the last
//! queued period ended: after a crash the next period starts there and misses nothing.

use crate::store::counters::{is_durable, StatsMark};
use crate::store::owner::StoreHandle;
use crate::telemetry::Telemetry;
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
    before: &BTreeMap<String, u64>,
    after: &BTreeMap<String, u64>,
) -> StatsPayload {
    let delta = |name: &str| -> u64 {
        after
            .get(name)
            .copied()
            .unwrap_or(0)
            .saturating_sub(before.get(name).copied().unwrap_or(0))
    };
    let by_prefix = |prefix: &str| -> BTreeMap<String, u64> {
        after
            .keys()
            .filter_map(|k| k.strip_prefix(prefix).map(|rest| (k, rest)))
            .filter_map(|(k, rest)| {
                let d = delta(k);
                (d > 0).then(|| (rest.to_owned(), d))
            })
            .collect()
    };
    StatsPayload {
        schema: "screenline.stats.v1".to_owned(),
        site_id: site_id.to_owned(),
        appliance_id: appliance_id.to_owned(),
        from,
        to,
        parcels: ParcelCounts {
            screened: delta("parcels.decided"),
            cleared: delta("parcels.clear"),
            flagged: delta("parcels.flag"),
            manual: delta("parcels.manual"),
            no_read: delta("reasons.no_read"),
            no_image: delta("reasons.no_image"),
        },
        flagged_by_reason: by_prefix("flagged.reason."),
        flagged_by_category: by_prefix("flagged.category."),
        reviews: ReviewCounts {
            confirmed: delta("reviews.confirmed"),
            cleared: delta("reviews.cleared"),
        },
        commands: CommandCounts {
            accepted: delta("cmd.accepted"),
            refused: delta("cmd.refused"),
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
    pub commands: CommandCounts,
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
}

/// The regulator's commands of a period.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CommandCounts {
    pub accepted: u64,
    pub refused: u64,
}

/// The counters statistics are made of (those the store keeps).
fn durable(all: &BTreeMap<String, u64>) -> BTreeMap<String, u64> {
    all.iter()
        .filter(|(k, _)| is_durable(k))
        .map(|(k, v)| (k.clone(), *v))
        .collect()
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
        Ok(None) => (SystemTime::now(), durable(&telemetry.counters())),
        Err(e) => {
            tracing::error!(error = %e, "statistics mark unreadable; statistics start now");
            (SystemTime::now(), durable(&telemetry.counters()))
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
        let after = durable(&telemetry.counters());
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
                        telemetry.incr("feed.stats_queued");
                        wake.notify_one();
                    }
                    Err(e) => {
                        telemetry.incr("feed.stats_errors");
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
        let before: BTreeMap<String, u64> = [
            ("parcels.decided", 10),
            ("parcels.flag", 2),
            ("flagged.reason.counterfeit_suspected", 2),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect();
        let mut after = before.clone();
        after.insert("parcels.decided".into(), 15);
        after.insert("parcels.flag".into(), 4);
        after.insert("parcels.clear".into(), 3);
        after.insert("flagged.reason.counterfeit_suspected".into(), 3);
        after.insert("flagged.reason.watchlisted_sender".into(), 1);
        after.insert("flagged.category.electronics".into(), 2);
        after.insert("reviews.confirmed".into(), 1);
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
            counters: [("parcels.decided".to_owned(), 5)].into_iter().collect(),
        };
        store.set_stats_mark(&mark).expect("mark");
        for _ in 0..8 {
            store.count("parcels.decided").expect("count");
        }
        // After the restart: counters come back from the store, as Appliance::start does.
        let telemetry = Arc::new(Telemetry::default());
        for (k, v) in store.durable_counters().expect("counters") {
            telemetry.add(&k, v);
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
        assert_eq!(next.counters["parcels.decided"], 8);
        drop(store);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
