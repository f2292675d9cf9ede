//! Operator reviews: what a person found after opening a parcel — the suspicion confirmed, or
//! the parcel cleared — recorded against the decision it answers. The decision itself is
//! never rewritten; each review is kept beside it, oldest first, with who made it and when.

use super::{Store, StoreError};
use crate::domain::Decision;
use serde::{Deserialize, Serialize};
use std::time::SystemTime;

pub use crate::domain::Finding;

/// One review of one decision.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Review {
    /// The record (decision) reviewed.
    pub record_id: String,
    /// The decision as it stood when reviewed.
    pub decision: Decision,
    pub finding: Finding,
    /// The console user.
    pub by: String,
    /// RFC 3339.
    pub at: String,
    /// Free text, e.g. what was found.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
    /// How long the parcel had waited in the judging queue, from its arrival to this
    /// decision (ms); absent for a review of a parcel no longer waiting.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub waited_ms: Option<u64>,
}

/// Longest note kept.
pub const MAX_NOTE_CHARS: usize = 500;

impl Store {
    /// Records `finding` by `by` against the decision of record `record_id`, now. The
    /// judging queue records through [`Store::judge`], which counts it too.
    pub fn review(
        &self,
        record_id: &str,
        finding: Finding,
        by: &str,
        note: Option<&str>,
    ) -> Result<Review, StoreError> {
        let record = self
            .record(record_id.as_bytes())?
            .ok_or_else(|| StoreError::NotFound(record_id.to_owned()))?;
        self.review_of(
            record_id,
            &record,
            finding,
            by,
            note,
            SystemTime::now(),
            None,
        )
    }

    /// Records `finding` by `by` on `record` (kept under `record_id`), decided at `now`,
    /// after the parcel `waited` in the queue.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn review_of(
        &self,
        record_id: &str,
        record: &crate::record::Record,
        finding: Finding,
        by: &str,
        note: Option<&str>,
        now: SystemTime,
        waited: Option<std::time::Duration>,
    ) -> Result<Review, StoreError> {
        let review = Review {
            record_id: record_id.to_owned(),
            decision: record.decision,
            finding,
            by: by.to_owned(),
            at: crate::time_fmt::format(now),
            note: note
                .map(|n| n.trim().chars().take(MAX_NOTE_CHARS).collect::<String>())
                .filter(|n| !n.is_empty()),
            waited_ms: waited.map(|w| w.as_millis() as u64),
        };
        let nanos = now
            .duration_since(SystemTime::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        let key = format!("{record_id}\u{0}{nanos:032}");
        self.reviews
            .insert(key.as_bytes(), serde_json::to_vec(&review)?)?;
        Ok(review)
    }

    /// Every review of a record, oldest first.
    pub fn reviews(&self, record_id: &str) -> Result<Vec<Review>, StoreError> {
        let prefix = format!("{record_id}\u{0}");
        self.reviews
            .scan_prefix(prefix.as_bytes())
            .map(|item| Ok(serde_json::from_slice(&item?.1)?))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::Record;

    #[tokio::test]
    async fn reviews_are_kept_against_the_decision_across_reopen() {
        let (_dir, store) = crate::store::testing::reopened("review", |store| {
            let record = Record::example("r1", Decision::Flag);
            store.commit(b"r1", &record, None).expect("commit");
            let r = store
                .review(
                    "r1",
                    Finding::Confirmed,
                    "op1",
                    Some("  40 pairs of branded shoes  "),
                )
                .expect("review");
            assert_eq!(r.decision, Decision::Flag);
            assert_eq!(r.note.as_deref(), Some("40 pairs of branded shoes"));
            store
                .review("r1", Finding::Cleared, "tech1", Some(""))
                .expect("second review");
            assert!(matches!(
                store.review("nope", Finding::Cleared, "op1", None),
                Err(StoreError::NotFound(_))
            ));
            // The decision itself is untouched.
            assert_eq!(store.record(b"r1").expect("read"), Some(record));
        });
        let all = store.reviews("r1").expect("reviews");
        assert_eq!(all.len(), 2);
        assert_eq!(
            (all[0].finding, all[0].by.as_str()),
            (Finding::Confirmed, "op1")
        );
        assert_eq!(
            (all[1].finding, all[1].note.as_deref()),
            (Finding::Cleared, None)
        );
        assert!(store.reviews("r").expect("prefix is exact").is_empty());
    }
}
