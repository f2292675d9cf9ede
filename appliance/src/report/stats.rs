//! Periodic statistics for the regulator (`{root}/stats`, `screenline.stats.v1`): what was
//! screened in each period, from the appliance's counters.
//!
//! Every `mqtt.stats_period_s` the counters are read and the difference to the last reading
//! becomes one message, queued durably in the store's statistics outbox. The feed sends it
//! only when no flagged report is waiting (PRODUCT.md: flagged reports go ahead of
//! statistics when a backlog drains). A clean stop queues the period it cuts short; after a
//! crash, counters (in memory) restart, and the period is reported from the restart on:
//! `from` says where each period starts.

use crate::store::Store;
use crate::telemetry::Telemetry;
use serde_json::{json, Map, Value};
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
) -> Value {
    let delta = |name: &str| -> u64 {
        after
            .get(name)
            .copied()
            .unwrap_or(0)
            .saturating_sub(before.get(name).copied().unwrap_or(0))
    };
    let by_prefix = |prefix: &str| -> Map<String, Value> {
        after
            .keys()
            .filter_map(|k| k.strip_prefix(prefix).map(|rest| (k, rest)))
            .filter_map(|(k, rest)| {
                let d = delta(k);
                (d > 0).then(|| (rest.to_owned(), json!(d)))
            })
            .collect()
    };
    json!({
        "schema": "screenline.stats.v1",
        "site_id": site_id,
        "appliance_id": appliance_id,
        "from": crate::time_fmt::format(from),
        "to": crate::time_fmt::format(to),
        "parcels": {
            "screened": delta("parcels.decided"),
            "cleared": delta("parcels.clear"),
            "flagged": delta("parcels.flag"),
            "manual": delta("parcels.manual"),
            "no_read": delta("reasons.no_read"),
            "no_image": delta("reasons.no_image"),
        },
        "flagged_by_reason": by_prefix("flagged.reason."),
        "flagged_by_category": by_prefix("flagged.category."),
        "reviews": {
            "confirmed": delta("reviews.confirmed"),
            "cleared": delta("reviews.cleared"),
        },
        "commands": {
            "accepted": delta("cmd.accepted"),
            "refused": delta("cmd.refused"),
        },
    })
}

/// Queues a statistics message every `period` until `shutdown`, then one last one for the
/// period cut short.
pub async fn run(
    period: Duration,
    site_id: String,
    appliance_id: String,
    store: Arc<Store>,
    wake: Arc<Notify>,
    telemetry: Arc<Telemetry>,
    shutdown: CancellationToken,
) {
    let mut from = SystemTime::now();
    let mut before = telemetry.counters();
    let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        // The period cut short by a stop is queued too; it goes out after the next start.
        let last = tokio::select! {
            _ = tick.tick() => false,
            _ = shutdown.cancelled() => true,
        };
        let to = SystemTime::now();
        let after = telemetry.counters();
        let body = stats_payload(&site_id, &appliance_id, from, to, &before, &after);
        match serde_json::to_vec(&body) {
            Ok(bytes) => match store.queue_stats(to, &bytes).await {
                Ok(()) => {
                    telemetry.incr("feed.stats_queued");
                    wake.notify_one();
                }
                Err(e) => {
                    telemetry.incr("feed.stats_errors");
                    tracing::error!(error = %e, "statistics not queued; the next period carries on");
                }
            },
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
        assert_eq!(v["parcels"]["screened"], 5);
        assert_eq!(v["parcels"]["flagged"], 2);
        assert_eq!(v["parcels"]["cleared"], 3);
        assert_eq!(v["parcels"]["manual"], 0);
        assert_eq!(
            v["flagged_by_reason"],
            json!({"counterfeit_suspected": 1, "watchlisted_sender": 1})
        );
        assert_eq!(v["flagged_by_category"], json!({"electronics": 2}));
        assert_eq!(v["reviews"]["confirmed"], 1);
    }
}
