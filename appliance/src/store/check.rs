//! `screenline store check`: reads every tree of a store that no appliance is using and
//! reports what is wrong and how to recover.

use super::{OutboxEntry, Store, StoreError};
use serde::Serialize;
use std::path::Path;

/// What a check found.
#[derive(Debug, Default, Serialize)]
pub struct CheckReport {
    pub records: usize,
    pub flagged: usize,
    pub outbox: usize,
    pub reviews: usize,
    pub audit_entries: usize,
    pub images: usize,
    /// Images a record names that are gone (evicted by retention or the disk budget, or lost).
    pub images_missing: usize,
    /// Everything that is wrong, one sentence each.
    pub problems: Vec<String>,
}

impl CheckReport {
    /// Whether nothing is wrong.
    pub fn is_clean(&self) -> bool {
        self.problems.is_empty()
    }

    /// What to do about the problems found.
    pub fn advice(&self) -> &'static str {
        "Keep the folder: nothing in it is deleted by the appliance to fix this. Unreadable \
         records and outbox entries are left where they are and skipped; a flagged record \
         whose report is missing from the outbox was acknowledged by the broker already or \
         lost before its commit. If the store cannot be opened at all, move the folder aside \
         (it holds the evidence), start the appliance on a fresh one, and keep the old one for \
         the regulator."
    }
}

/// Checks the store in `data_dir`. Fails only if it cannot be opened at all (in use by a
/// running appliance, or damaged beyond what sled recovers).
pub fn check(data_dir: &Path) -> Result<CheckReport, StoreError> {
    let store = Store::open(data_dir)?;
    let mut r = CheckReport::default();
    let mut flagged_without_report = 0usize;
    for item in store.records.iter() {
        let (k, v) = item?;
        r.records += 1;
        let key = String::from_utf8_lossy(&k).into_owned();
        let record: serde_json::Value = match serde_json::from_slice(&v) {
            Ok(x) => x,
            Err(e) => {
                r.problems
                    .push(format!("record {key} is not readable JSON: {e}"));
                continue;
            }
        };
        if record["record_id"].as_str() != Some(key.as_str()) {
            r.problems
                .push(format!("record {key} names itself {}", record["record_id"]));
        }
        if record["decision"] == "flag" {
            r.flagged += 1;
            if record["report_id"].as_str().is_none() {
                flagged_without_report += 1;
            }
        }
        if let Some(image) = record["image"].as_str() {
            if Path::new(image).exists() {
                r.images += 1;
            } else {
                r.images_missing += 1;
            }
        }
    }
    if flagged_without_report > 0 {
        r.problems.push(format!(
            "{flagged_without_report} flagged record(s) have no report id"
        ));
    }
    for item in store.outbox.iter() {
        let (k, v) = item?;
        r.outbox += 1;
        let key = String::from_utf8_lossy(&k).into_owned();
        match serde_json::from_slice::<OutboxEntry>(&v) {
            Ok(e) => {
                if store.records.get(&k)?.is_none() {
                    r.problems.push(format!(
                        "report {} waits in the outbox for record {key}, which is missing",
                        e.report_id
                    ));
                }
            }
            Err(e) => r
                .problems
                .push(format!("outbox entry {key} is not readable: {e}")),
        }
    }
    if r.outbox != store.outbox_len() {
        r.problems.push(format!(
            "the outbox count is {} but {} entries are there",
            store.outbox_len(),
            r.outbox
        ));
    }
    for item in store.reviews.iter() {
        let (k, v) = item?;
        r.reviews += 1;
        let key = String::from_utf8_lossy(&k).into_owned();
        match serde_json::from_slice::<super::review::Review>(&v) {
            Ok(rv) if store.records.get(rv.record_id.as_bytes())?.is_none() => r
                .problems
                .push(format!("review {key} is of a record that is missing")),
            Ok(_) => {}
            Err(e) => r
                .problems
                .push(format!("review {key} is not readable: {e}")),
        }
    }
    for item in store.audit.iter() {
        let (k, v) = item?;
        r.audit_entries += 1;
        if let Err(e) = serde_json::from_slice::<super::audit::AuditEntry>(&v) {
            r.problems.push(format!(
                "audit entry {} is not readable: {e}",
                String::from_utf8_lossy(&k)
            ));
        }
    }
    Ok(r)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[tokio::test]
    async fn a_sound_store_is_clean_and_damage_is_named() {
        let dir = std::env::temp_dir().join(format!("sl-check-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        {
            let store = Store::open(&dir).expect("open");
            let r = json!({"record_id": "r1", "decision": "flag", "report_id": "rep1"});
            store
                .commit(b"r1", &r, Some(("rep1", "reports/flagged", b"{}")))
                .await
                .expect("commit");
            store
                .commit(
                    b"r2",
                    &json!({"record_id": "r2", "decision": "clear"}),
                    None,
                )
                .await
                .expect("commit");
        }
        let report = check(&dir).expect("check");
        assert!(report.is_clean(), "{:?}", report.problems);
        assert_eq!((report.records, report.flagged, report.outbox), (2, 1, 1));
        {
            let store = Store::open(&dir).expect("open");
            store
                .records
                .insert("r3", &b"not json"[..])
                .expect("insert");
            store.records.remove("r1").expect("remove");
            store.flush_blocking().expect("flush");
        }
        let report = check(&dir).expect("check");
        assert_eq!(report.problems.len(), 2, "{:?}", report.problems);
        assert!(report
            .problems
            .iter()
            .any(|p| p.contains("r3 is not readable")));
        assert!(report
            .problems
            .iter()
            .any(|p| p.contains("rep1 waits in the outbox")));
        // A store in use cannot be checked, and says so.
        let _held = Store::open(&dir).expect("open");
        let e = check(&dir).expect_err("locked").to_string();
        assert!(e.contains("cannot open the store"), "{e}");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
