//! The counters the regulator's statistics are made of, kept in the store so that a restart
//! or a crash loses no count: parcels decided, per decision and reason, and flagged per
//! reason and category (committed in the same transaction as their records), operator
//! reviews and regulator commands. Beside them, the statistics mark: where the last queued
//! statistics period ended and what the counters were then, so the next period, even after
//! a crash, starts exactly there.
//!
//! Counters are [`Counter`]s; the store keeps each under its key ([`Counter::key`],
//! `parcels.flag`, `flagged.reason.counterfeit_suspected`), the names it has always used,
//! so a store written before the typed counters reads back unchanged, with no migration.
//! A key this screenline does not know (a reason code since removed) is left in the store
//! and skipped, with a warning.

use super::{Store, StoreError};
use crate::telemetry::Counter;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use sled::transaction::{ConflictableTransactionError, TransactionalTree};
use std::collections::BTreeMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

pub(super) const COUNTERS: &str = "counters";
const STATS_MARK: &str = "stats_mark";

fn read(v: Option<sled::IVec>) -> u64 {
    v.and_then(|b| <[u8; 8]>::try_from(b.as_ref()).ok())
        .map_or(0, u64::from_be_bytes)
}

/// What a record counted, as kept beside it (its counters' keys, one a line): what a
/// commit of the same record again takes back.
pub(super) fn encode_counts(counts: &[Counter]) -> String {
    debug_assert!(counts.iter().all(Counter::is_durable), "{counts:?}");
    counts
        .iter()
        .map(Counter::key)
        .collect::<Vec<_>>()
        .join("\n")
}

/// Adds `delta` (negative: takes away, never below zero) inside a transaction, by key.
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

/// The durable counters of `(key, value)` pairs; unknown keys skipped, with a warning.
fn known(pairs: impl IntoIterator<Item = (String, u64)>) -> BTreeMap<Counter, u64> {
    pairs
        .into_iter()
        .filter_map(|(key, n)| match Counter::from_key(&key) {
            Some(c) => Some((c, n)),
            None => {
                tracing::warn!(counter = %key, "a kept counter this screenline does not know: left as it is, not counted");
                None
            }
        })
        .collect()
}

/// Where the last queued statistics period ended, and the counters then.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StatsMark {
    /// Milliseconds since the Unix epoch.
    pub at_ms: u64,
    /// By key in the stored JSON (`{"parcels.decided": 5}`), as it always was.
    #[serde(serialize_with = "by_key", deserialize_with = "from_keys")]
    pub counters: BTreeMap<Counter, u64>,
}

fn by_key<S: Serializer>(counters: &BTreeMap<Counter, u64>, s: S) -> Result<S::Ok, S::Error> {
    s.collect_map(counters.iter().map(|(c, n)| (c.key(), n)))
}

fn from_keys<'de, D: Deserializer<'de>>(d: D) -> Result<BTreeMap<Counter, u64>, D::Error> {
    Ok(known(BTreeMap::<String, u64>::deserialize(d)?))
}

impl StatsMark {
    /// The mark's time.
    pub fn at(&self) -> SystemTime {
        UNIX_EPOCH + Duration::from_millis(self.at_ms)
    }
}

impl Store {
    /// Every counter kept in the store.
    pub fn durable_counters(&self) -> Result<BTreeMap<Counter, u64>, StoreError> {
        let mut pairs = Vec::new();
        for item in self.db.open_tree(COUNTERS)?.iter() {
            let (k, v) = item?;
            pairs.push((String::from_utf8_lossy(&k).into_owned(), read(Some(v))));
        }
        Ok(known(pairs))
    }

    /// Adds one to a kept counter (reviews, regulator commands: a few an hour). Only the
    /// statistics' counters are kept ([`Counter::is_durable`]).
    pub fn count(&self, c: &Counter) -> Result<(), StoreError> {
        self.count_by(c, 1)
    }

    /// Adds `n` to a kept counter.
    pub fn count_by(&self, c: &Counter, n: u64) -> Result<(), StoreError> {
        debug_assert!(c.is_durable(), "{c:?} is not kept in the store");
        self.db
            .open_tree(COUNTERS)?
            .update_and_fetch(c.key(), |v| {
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
    use crate::domain::{Category, Decision, Finding, ReasonCode};
    use crate::store::Commit;

    #[tokio::test]
    async fn counts_are_committed_with_their_records_and_survive_a_reopen() {
        let (_dir, store) = crate::store::testing::reopened("counters", |store| {
            let record = crate::record::Record::example("r1", crate::domain::Decision::Flag);
            let commit = |key: &str, counts: &[Counter]| Commit {
                key: key.to_owned(),
                record: record.clone(),
                report: None,
                waybill: None,
                counts: counts.to_vec(),
            };
            let flag = [Counter::ParcelsDecided, Counter::Decided(Decision::Flag)];
            store
                .commit_counted(&[
                    commit("0000000000001-L1-1", &flag),
                    commit("0000000000002-L1-2", &flag),
                ])
                .expect("commit");
            // Committed again (a retry after a failed flush), now as a manual parcel: its
            // counts move, they do not add up.
            store
                .commit_counted(&[commit(
                    "0000000000002-L1-2",
                    &[Counter::ParcelsDecided, Counter::Decided(Decision::Manual)],
                )])
                .expect("commit again");
            store
                .count(&Counter::Review(Finding::Confirmed))
                .expect("count");
            let mark = StatsMark {
                at_ms: 1_795_600_000_000,
                counters: store.durable_counters().expect("read"),
            };
            store.set_stats_mark(&mark).expect("mark");
        });
        let c = store.durable_counters().expect("read");
        assert_eq!(c[&Counter::ParcelsDecided], 2);
        assert_eq!(c[&Counter::Decided(Decision::Flag)], 1);
        assert_eq!(c[&Counter::Decided(Decision::Manual)], 1);
        assert_eq!(c[&Counter::Review(Finding::Confirmed)], 1);
        let mark = store.stats_mark().expect("read").expect("a mark");
        assert_eq!(mark.counters, c);
        assert_eq!(
            mark.at(),
            UNIX_EPOCH + Duration::from_millis(1_795_600_000_000)
        );
    }

    /// A store written when counters were named by strings: its counters tree, a record's
    /// counted keys and the statistics mark, byte for byte as that screenline wrote them.
    #[test]
    fn an_old_stores_counters_and_mark_read_back_as_typed_counters() {
        let (_dir, store) = crate::store::testing::fresh("counters-old");
        let old: [(&str, u64); 10] = [
            ("parcels.decided", 7),
            ("parcels.clear", 4),
            ("parcels.flag", 2),
            ("parcels.manual", 1),
            ("reasons.no_read", 1),
            ("flagged.reason.counterfeit_suspected", 2),
            ("flagged.category.electronics", 2),
            ("reviews.cleared", 1),
            ("cmd.refused", 3),
            // A reason a later screenline might drop: kept, skipped, never fatal.
            ("reasons.since_removed", 9),
        ];
        let tree = store.db.open_tree(COUNTERS).expect("tree");
        for (k, n) in old {
            tree.insert(k, &n.to_be_bytes()).expect("insert");
        }
        store
            .db
            .open_tree(STATS_MARK)
            .expect("tree")
            .insert(
                "mark",
                br#"{"at_ms":1795600000000,"counters":{"parcels.decided":5,"parcels.flag":1,"cmd.audit_errors":2}}"#
                    .as_slice(),
            )
            .expect("mark");
        let c = store.durable_counters().expect("read");
        let want: BTreeMap<Counter, u64> = [
            (Counter::ParcelsDecided, 7),
            (Counter::Decided(Decision::Clear), 4),
            (Counter::Decided(Decision::Flag), 2),
            (Counter::Decided(Decision::Manual), 1),
            (Counter::Reason(ReasonCode::NoRead), 1),
            (Counter::FlaggedReason(ReasonCode::CounterfeitSuspected), 2),
            (Counter::FlaggedCategory(Category::Electronics), 2),
            (Counter::Review(Finding::Cleared), 1),
            (Counter::CommandsRefused, 3),
        ]
        .into_iter()
        .collect();
        assert_eq!(c, want);
        let mark = store.stats_mark().expect("read").expect("a mark");
        assert_eq!(
            mark.counters,
            [
                (Counter::ParcelsDecided, 5),
                (Counter::Decided(Decision::Flag), 1)
            ]
            .into_iter()
            .collect()
        );
        // Counting on writes the same keys: the old store and the new agree.
        store.count(&Counter::CommandsRefused).expect("count");
        assert_eq!(
            read(tree.get("cmd.refused").expect("get")),
            4,
            "counted under its old key"
        );
    }
}
