//! Finding records for people: by waybill (an index kept beside the records) and the latest
//! ones of a kind.

use super::{Store, StoreError};
use crate::record::Record;
use serde::de::DeserializeOwned;

impl Store {
    /// Records whose waybill starts with `prefix`, newest first, at most `limit`.
    pub fn find_by_waybill(&self, prefix: &str, limit: usize) -> Result<Vec<Record>, StoreError> {
        let mut ids = Vec::new();
        for item in self.by_waybill.scan_prefix(prefix.as_bytes()) {
            let (k, _) = item?;
            if let Some((_, id)) = String::from_utf8_lossy(&k).split_once('\u{0}') {
                ids.push(id.to_owned());
            }
            if ids.len() >= limit * 4 {
                break;
            }
        }
        // Record ids start with the time, so the largest is the newest.
        ids.sort_unstable_by(|a, b| b.cmp(a));
        ids.truncate(limit);
        ids.iter()
            .filter_map(|id| self.record(id.as_bytes()).transpose())
            .collect()
    }

    /// The latest records (newest first) for which `keep` holds, looking at most at `scan`
    /// records. A record that cannot be read is passed over (`store check` names it).
    pub fn latest_records(
        &self,
        limit: usize,
        scan: usize,
        keep: impl Fn(&Record) -> bool,
    ) -> Result<Vec<Record>, StoreError> {
        newest_first(&self.records, limit, scan, keep)
    }
}

/// Up to `limit` values of `tree` (JSON of type `T`), newest (largest key) first, for which
/// `keep` holds, looking at most at `scan` entries. Entries that do not read as `T` are
/// passed over with an error in the log.
pub(super) fn newest_first<T: DeserializeOwned>(
    tree: &sled::Tree,
    limit: usize,
    scan: usize,
    keep: impl Fn(&T) -> bool,
) -> Result<Vec<T>, StoreError> {
    let mut out = Vec::new();
    if limit == 0 {
        return Ok(out);
    }
    for item in tree.iter().rev().take(scan) {
        let (k, v) = item?;
        let value: T = match serde_json::from_slice(&v) {
            Ok(x) => x,
            Err(e) => {
                tracing::error!(key = %String::from_utf8_lossy(&k), error = %e, "unreadable entry passed over");
                continue;
            }
        };
        if keep(&value) {
            out.push(value);
            if out.len() == limit {
                break;
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{Decision, WaybillNo};
    use crate::store::Commit;

    #[tokio::test]
    async fn waybill_search_finds_by_prefix_newest_first() {
        let (_dir, store) = crate::store::testing::fresh("query");
        for (id, wb, decision) in [
            ("0001-L1-1", "SF100000", Decision::Clear),
            ("0002-L1-2", "SF200000", Decision::Flag),
            ("0003-L2-1", "SF100000", Decision::Manual),
        ] {
            let mut record = Record::example(id, decision);
            record.waybill = Some(WaybillNo::parse(wb).expect("waybill"));
            store
                .commit_counted(&[Commit {
                    key: id.to_owned(),
                    record,
                    report: None,
                    waybill: Some(wb.to_owned()),
                    counts: Vec::new(),
                }])
                .expect("commit");
        }
        // An entry that is no record is passed over, not an error for the whole list.
        store
            .records
            .insert("0004-L2-2", &b"{garbled"[..])
            .expect("insert");
        let found = store.find_by_waybill("SF100", 10).expect("search");
        let ids: Vec<_> = found.iter().map(|r| r.record_id.as_str()).collect();
        assert_eq!(ids, ["0003-L2-1", "0001-L1-1"]);
        assert_eq!(store.find_by_waybill("SF", 10).expect("prefix").len(), 3);
        assert!(store.find_by_waybill("YT", 10).expect("none").is_empty());
        let suspects = store
            .latest_records(10, 100, |r| r.decision != Decision::Clear)
            .expect("latest");
        assert_eq!(suspects.len(), 2);
        assert_eq!(suspects[0].record_id, "0003-L2-1");
    }
}
