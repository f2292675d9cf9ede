//! Finding records for people: by waybill (an index kept beside the records) and the latest
//! ones of a kind.

use super::{Store, StoreError};

impl Store {
    /// Indexes a record under its waybill, so that search does not walk every record.
    pub fn index_waybill(&self, waybill: &str, record_id: &str) -> Result<(), StoreError> {
        self.by_waybill
            .insert(format!("{waybill}\u{0}{record_id}").as_bytes(), &[])?;
        Ok(())
    }

    /// Records whose waybill starts with `prefix`, newest first, at most `limit`.
    pub fn find_by_waybill(
        &self,
        prefix: &str,
        limit: usize,
    ) -> Result<Vec<serde_json::Value>, StoreError> {
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
    /// records.
    pub fn latest_records(
        &self,
        limit: usize,
        scan: usize,
        keep: impl Fn(&serde_json::Value) -> bool,
    ) -> Result<Vec<serde_json::Value>, StoreError> {
        let mut out = Vec::new();
        for item in self.records.iter().rev().take(scan) {
            let record: serde_json::Value = serde_json::from_slice(&item?.1)?;
            if keep(&record) {
                out.push(record);
                if out.len() == limit {
                    break;
                }
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[tokio::test]
    async fn waybill_search_finds_by_prefix_newest_first() {
        let dir = std::env::temp_dir().join(format!("sl-query-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let store = Store::open(&dir).expect("open");
        for (id, wb, decision) in [
            ("0001-L1-1", "SF100", "clear"),
            ("0002-L1-2", "SF200", "flag"),
            ("0003-L2-1", "SF100", "manual"),
        ] {
            let r = json!({"record_id": id, "waybill": wb, "decision": decision});
            store.commit(id.as_bytes(), &r, None).expect("commit");
            store.index_waybill(wb, id).expect("index");
        }
        let found = store.find_by_waybill("SF100", 10).expect("search");
        let ids: Vec<_> = found
            .iter()
            .map(|r| r["record_id"].as_str().unwrap_or(""))
            .collect();
        assert_eq!(ids, ["0003-L2-1", "0001-L1-1"]);
        assert_eq!(store.find_by_waybill("SF", 10).expect("prefix").len(), 3);
        assert!(store.find_by_waybill("YT", 10).expect("none").is_empty());
        let suspects = store
            .latest_records(10, 100, |r| r["decision"] != "clear")
            .expect("latest");
        assert_eq!(suspects.len(), 2);
        assert_eq!(suspects[0]["record_id"], "0003-L2-1");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
