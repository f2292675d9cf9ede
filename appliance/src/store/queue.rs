//! The judging queue's index (the `queue` tree): every parcel an operator still has to
//! judge — flagged and manual parcels, and cleared ones drawn for re-review, not yet
//! reviewed — under its record key, so oldest
//! first, with when it arrived. A record enters it in the same transaction that stores it
//! ([`Store::commit_counted`]) and leaves it with its first review ([`Store::judge`]); the
//! disk budget never takes the scan of a parcel that is still in it (`retention.rs`).
//!
//! A store written before the queue existed has its index built from its records at the
//! first open (`meta/queue_index`). An entry whose record has a review all the same (one
//! made by an older screenline, which knew no queue) is passed over, never shown.

use super::review::{Finding, Review};
use super::{Store, StoreError};
use crate::domain::Decision;
use crate::record::Record;
use crate::telemetry::{Counter, DecisionTime};
use serde::{Deserialize, Serialize};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

pub(super) const QUEUE: &str = "queue";
/// Set once the index holds every waiting record of the store.
const BUILT: &str = "queue_index";

/// Why a parcel waits for an operator.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum QueueKind {
    /// Flagged: reported to the regulator, diverted; an operator opens and judges it.
    Flagged,
    /// Diverted to manual inspection.
    Manual,
    /// Cleared, and drawn for re-review (`console.queue.rereview_share`).
    Rereview,
}

impl QueueKind {
    /// Whether (and why) a stored record waits for an operator.
    pub fn of(record: &Record) -> Option<QueueKind> {
        match record.decision {
            Decision::Flag => Some(QueueKind::Flagged),
            Decision::Manual => Some(QueueKind::Manual),
            Decision::Clear => record.rereview.then_some(QueueKind::Rereview),
        }
    }

    pub fn key(self) -> &'static str {
        match self {
            QueueKind::Flagged => "flagged",
            QueueKind::Manual => "manual",
            QueueKind::Rereview => "rereview",
        }
    }
}

/// One parcel in the queue.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Waiting {
    pub record_id: String,
    pub kind: QueueKind,
    /// When it arrived in the queue (its decision was stored), ms since the epoch.
    pub arrived_ms: u64,
}

impl Waiting {
    /// The queue entry of a record that waits for an operator.
    pub fn of(record: &Record) -> Option<Waiting> {
        Some(Waiting {
            record_id: record.record_id.clone(),
            kind: QueueKind::of(record)?,
            arrived_ms: millis(record.screened_at),
        })
    }

    /// When it arrived.
    pub fn arrived(&self) -> SystemTime {
        UNIX_EPOCH + Duration::from_millis(self.arrived_ms)
    }

    pub(super) fn encode(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_default()
    }
}

fn millis(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// What one judgement recorded.
#[derive(Debug, Clone)]
pub struct Judged {
    pub review: Review,
    /// The counters it added to (the regulator's statistics), by how much: the caller adds
    /// the same to the telemetry.
    pub counted: Vec<(Counter, u64)>,
    /// From the parcel's arrival in the queue to this decision; `None` if it was not waiting
    /// (a second review).
    pub waited: Option<Duration>,
}

impl Store {
    /// The parcels waiting for an operator, oldest first, at most `max`.
    pub fn waiting(&self, max: usize) -> Result<Vec<Waiting>, StoreError> {
        let queue = self.db.open_tree(QUEUE)?;
        let mut out = Vec::new();
        for item in queue.iter() {
            if out.len() == max {
                break;
            }
            let (k, v) = item?;
            let Ok(w) = serde_json::from_slice::<Waiting>(&v) else {
                tracing::error!(key = %String::from_utf8_lossy(&k), "unreadable queue entry passed over");
                continue;
            };
            if self.reviewed(&w.record_id)? {
                continue;
            }
            out.push(w);
        }
        Ok(out)
    }

    /// The queue entry of `record_id`, if it still waits for an operator.
    pub fn queued(&self, record_id: &str) -> Result<Option<Waiting>, StoreError> {
        let Some(v) = self.db.open_tree(QUEUE)?.get(record_id.as_bytes())? else {
            return Ok(None);
        };
        if self.reviewed(record_id)? {
            return Ok(None);
        }
        Ok(serde_json::from_slice(&v).ok())
    }

    fn reviewed(&self, record_id: &str) -> Result<bool, StoreError> {
        let prefix = format!("{record_id}\u{0}");
        Ok(self.reviews.scan_prefix(prefix.as_bytes()).next().is_some())
    }

    /// Records `finding` by `by`, decided at `at`, against record `record_id`: the review
    /// (with the time it waited in the queue), the counters the regulator's statistics are
    /// made of, and the parcel leaves the queue.
    pub fn judge(
        &self,
        record_id: &str,
        finding: Finding,
        by: &str,
        note: Option<&str>,
        at: SystemTime,
    ) -> Result<Judged, StoreError> {
        let waiting = self.queued(record_id)?;
        let waited = waiting
            .as_ref()
            .map(|w| at.duration_since(w.arrived()).unwrap_or_default());
        let record = self
            .record(record_id.as_bytes())?
            .ok_or_else(|| StoreError::NotFound(record_id.to_owned()))?;
        let review = self.review_of(record_id, &record, finding, by, note, at, waited)?;
        // What a re-review finds is counted apart: a confirmation there is a parcel the line
        // had cleared.
        let mut counted = vec![(
            if record.rereview {
                Counter::Rereview(finding)
            } else {
                Counter::Review(finding)
            },
            1,
        )];
        if let Some(w) = waited {
            counted.push((Counter::QueueDecided(DecisionTime::of(w)), 1));
            counted.push((Counter::QueueWaitMillis, w.as_millis() as u64));
        }
        for (c, n) in &counted {
            self.count_by(c, *n)?;
        }
        self.db.open_tree(QUEUE)?.remove(record_id.as_bytes())?;
        Ok(Judged {
            review,
            counted,
            waited,
        })
    }

    /// Builds the queue's index from the records, once (a store of before the queue).
    pub(super) fn build_queue_index(&self) -> Result<(), StoreError> {
        if self.meta.get(BUILT)?.is_some() {
            return Ok(());
        }
        let queue = self.db.open_tree(QUEUE)?;
        let mut added = 0usize;
        for item in self.records.iter() {
            let (k, v) = item?;
            let Some(w) = Record::from_slice(&v).ok().as_ref().and_then(Waiting::of) else {
                continue;
            };
            if !self.reviewed(&w.record_id)? {
                queue.insert(k, w.encode())?;
                added += 1;
            }
        }
        if added > 0 {
            tracing::info!(
                parcels = added,
                "judging queue built from the stored records"
            );
        }
        self.meta.insert(BUILT, &b"1"[..])?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn put(store: &Store, id: &str, decision: Decision, screened_ms: u64) {
        let mut r = Record::example(id, decision);
        r.screened_at = UNIX_EPOCH + Duration::from_millis(screened_ms);
        store.commit(id.as_bytes(), &r, None).expect("commit");
    }

    #[tokio::test]
    async fn flagged_and_manual_parcels_wait_oldest_first_until_judged() {
        let (_dir, store) = crate::store::testing::reopened("queue", |store| {
            put(store, "0003-L2-1", Decision::Manual, 3_000);
            put(store, "0001-L1-1", Decision::Flag, 1_000);
            put(store, "0002-L1-2", Decision::Clear, 2_000);
        });
        let ids = |store: &Store| -> Vec<String> {
            store
                .waiting(10)
                .expect("queue")
                .into_iter()
                .map(|w| w.record_id)
                .collect()
        };
        assert_eq!(ids(&store), ["0001-L1-1", "0003-L2-1"]);
        let at = UNIX_EPOCH + Duration::from_millis(1_000 + 90_000);
        let j = store
            .judge("0001-L1-1", Finding::Confirmed, "op1", Some("fakes"), at)
            .expect("judge");
        assert_eq!(j.waited, Some(Duration::from_secs(90)));
        assert_eq!(j.review.waited_ms, Some(90_000));
        assert!(j
            .counted
            .contains(&(Counter::QueueDecided(DecisionTime::Within5m), 1)));
        assert!(j.counted.contains(&(Counter::QueueWaitMillis, 90_000)));
        assert_eq!(ids(&store), ["0003-L2-1"]);
        // A second review waited for nothing.
        let again = store
            .judge("0001-L1-1", Finding::Cleared, "op2", None, at)
            .expect("again");
        assert_eq!(again.waited, None);
        let kept = store.durable_counters().expect("counters");
        assert_eq!(kept[&Counter::QueueWaitMillis], 90_000);
        assert_eq!(kept[&Counter::Review(Finding::Confirmed)], 1);
        assert_eq!(kept[&Counter::Review(Finding::Cleared)], 1);
    }

    #[tokio::test]
    async fn a_cleared_parcel_drawn_for_re_review_waits_and_its_finding_is_counted_apart() {
        let (_dir, store) = crate::store::testing::fresh("queue-rereview");
        let mut r = Record::example("0001-L1-1", Decision::Clear);
        r.rereview = true;
        store.commit(b"0001-L1-1", &r, None).expect("commit");
        let w = store.waiting(10).expect("queue");
        assert_eq!(w.len(), 1);
        assert_eq!(w[0].kind, QueueKind::Rereview);
        let j = store
            .judge(
                "0001-L1-1",
                Finding::Confirmed,
                "op",
                None,
                SystemTime::now(),
            )
            .expect("judge");
        assert_eq!(j.counted[0], (Counter::Rereview(Finding::Confirmed), 1));
        let kept = store.durable_counters().expect("counters");
        assert_eq!(kept.get(&Counter::Review(Finding::Confirmed)), None);
        assert_eq!(kept[&Counter::Rereview(Finding::Confirmed)], 1);
    }

    #[test]
    fn a_store_from_before_the_queue_gets_its_index_at_the_first_open() {
        let dir = crate::testutil::temp_dir("queue-build");
        {
            let store = Store::open(&dir).expect("open");
            put(&store, "0001-L1-1", Decision::Flag, 1_000);
            put(&store, "0002-L1-2", Decision::Manual, 2_000);
            store
                .review("0002-L1-2", Finding::Cleared, "op", None)
                .expect("review");
            // As an older screenline left it: records, no index.
            store.db.drop_tree(QUEUE).expect("drop");
            store.meta.remove(BUILT).expect("unmark");
            store.flush_blocking().expect("flush");
        }
        let store = Store::open(&dir).expect("open builds the index");
        let w = store.waiting(10).expect("queue");
        assert_eq!(w.len(), 1, "{w:?}");
        assert_eq!(
            (w[0].record_id.as_str(), w[0].kind, w[0].arrived_ms),
            ("0001-L1-1", QueueKind::Flagged, 1_000)
        );
    }
}
