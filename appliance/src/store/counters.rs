//! The counters the regulator's statistics are made of, kept in the store so that a restart
//! or a crash loses no count: parcels decided, per decision and reason, and flagged per
//! reason and category (committed in the same transaction as their records), operator
//! reviews and regulator commands. Beside them, the statistics mark: where the last queued
//! statistics period ended and what the counters were then, so the next period, even after
//! a crash, starts exactly there.

use super::{Store, StoreError};
use serde::{Deserialize, Serialize};
use sled::transaction::{ConflictableTransactionError, TransactionalTree};
use std::collections::BTreeMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

pub(super) const COUNTERS: &str = "counters";
const STATS_MARK: &str = "stats_mark";

/// The counters the statistics use: the only ones kept in the store.
pub fn is_durable(name: &str) -> bool {
    ["parcels.", "reasons.", "flagged.", "reviews.", "cmd."]
        .iter()
        .any(|p| name.starts_with(p))
        && !name.starts_with("cmd.refused.")
}

fn read(v: Option<sled::IVec>) -> u64 {
    v.and_then(|b| <[u8; 8]>::try_from(b.as_ref()).ok())
        .map_or(0, u64::from_be_bytes)
}

/// Adds `delta` (negative: takes away, never below zero) inside a transaction.
pub(super) fn apply(
    tree: &TransactionalTree,
    delta: &BTreeMap<&str, i64>,
) -> Result<(), ConflictableTransactionError<()>> {
    for (name, n) in delta {
        if *n == 0 {
            continue;
        }
        let was = read(tree.get(name.as_bytes())?);
        let now = if *n > 0 {
            was.saturating_add(n.unsigned_abs())
        } else {
            was.saturating_sub(n.unsigned_abs())
        };
        tree.insert(name.as_bytes(), &now.to_be_bytes())?;
    }
    Ok(())
}

/// Where the last queued statistics period ended, and the counters then.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StatsMark {
    /// Milliseconds since the Unix epoch.
    pub at_ms: u64,
    pub counters: BTreeMap<String, u64>,
}

impl StatsMark {
    /// The mark's time.
    pub fn at(&self) -> SystemTime {
        UNIX_EPOCH + Duration::from_millis(self.at_ms)
    }
}

impl Store {
    /// Every counter kept in the store.
    pub fn durable_counters(&self) -> Result<BTreeMap<String, u64>, StoreError> {
        let mut out = BTreeMap::new();
        for item in self.db.open_tree(COUNTERS)?.iter() {
            let (k, v) = item?;
            out.insert(String::from_utf8_lossy(&k).into_owned(), read(Some(v)));
        }
        Ok(out)
    }

    /// Adds one to a kept counter (reviews, regulator commands: a few an hour).
    pub fn count(&self, name: &str) -> Result<(), StoreError> {
        self.count_by(name, 1)
    }

    /// Adds `n` to a kept counter.
    pub fn count_by(&self, name: &str, n: u64) -> Result<(), StoreError> {
        self.db.open_tree(COUNTERS)?.update_and_fetch(name, |v| {
            Some(
                read(v.map(sled::IVec::from))
                    .saturating_add(n)
                    .to_be_bytes()
                    .to_vec(),
            )
        })?;
        Ok(())
    }

    /// Sets the statistics mark (after the period's message is queued: a crash in between
    /// sends that period twice, never loses it).
    pub fn set_stats_mark(&self, mark: &StatsMark) -> Result<(), StoreError> {
        self.db
            .open_tree(STATS_MARK)?
            .insert("mark", serde_json::to_vec(mark)?)?;
        Ok(())
    }

    /// The statistics mark, if a period was ever queued.
    pub fn stats_mark(&self) -> Result<Option<StatsMark>, StoreError> {
        self.get_json(STATS_MARK, "mark")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Commit;

    #[tokio::test]
    async fn counts_are_committed_with_their_records_and_survive_a_reopen() {
        let (dir, store) = crate::store::testing::reopened("counters", |store| {
            let record = crate::record::Record::example("r1", crate::domain::Decision::Flag);
            let commit = |key: &str, counts: &[&str]| Commit {
                key: key.to_owned(),
                record: record.clone(),
                report: None,
                waybill: None,
                counts: counts.iter().map(|c| (*c).to_owned()).collect(),
            };
            store
                .commit_counted(&[
                    commit("0000000000001-L1-1", &["parcels.decided", "parcels.flag"]),
                    commit("0000000000002-L1-2", &["parcels.decided", "parcels.flag"]),
                ])
                .expect("commit");
            // Committed again (a retry after a failed flush), now as a manual parcel: its
            // counts move, they do not add up.
            store
                .commit_counted(&[commit(
                    "0000000000002-L1-2",
                    &["parcels.decided", "parcels.manual"],
                )])
                .expect("commit again");
            store.count("reviews.confirmed").expect("count");
            let mark = StatsMark {
                at_ms: 1_795_600_000_000,
                counters: store.durable_counters().expect("read"),
            };
            store.set_stats_mark(&mark).expect("mark");
        });
        let c = store.durable_counters().expect("read");
        assert_eq!(c["parcels.decided"], 2);
        assert_eq!(c["parcels.flag"], 1);
        assert_eq!(c["parcels.manual"], 1);
        assert_eq!(c["reviews.confirmed"], 1);
        let mark = store.stats_mark().expect("read").expect("a mark");
        assert_eq!(mark.counters, c);
        assert_eq!(
            mark.at(),
            UNIX_EPOCH + Duration::from_millis(1_795_600_000_000)
        );
        drop(store);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn only_what_statistics_use_is_kept() {
        assert!(is_durable("parcels.flag") && is_durable("cmd.accepted"));
        assert!(!is_durable("cmd.refused.stale") && !is_durable("xray.images"));
    }
}
