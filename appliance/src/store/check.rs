//! `screenline store check`: reads every tree of a store that no appliance is using and
//! reports what is wrong and how to recover.

use super::{recover, OutboxEntry, Store, StoreError, SCHEMA_VERSION};
use crate::domain::Decision;
use crate::record::Record;
use serde::Serialize;
use std::collections::BTreeSet;
use std::path::Path;

/// What a check found.
#[derive(Debug, Default, Serialize)]
pub struct CheckReport {
    /// The schema version written in the store (an older one is migrated at the next start).
    pub schema_version: u32,
    pub records: usize,
    pub flagged: usize,
    pub outbox: usize,
    pub reviews: usize,
    pub audit_entries: usize,
    pub images: usize,
    /// Records whose image was deleted by the disk budget (recorded in the record: not a
    /// problem).
    pub images_evicted: usize,
    /// Images a record names that are gone without the record saying why.
    pub images_missing: usize,
    /// Image files in the image folder that no record names.
    pub orphan_images: usize,
    /// Damaged stores moved aside at start and not yet recovered.
    pub set_aside: Vec<String>,
    /// The database's size on disk, in bytes.
    pub db_bytes: u64,
    /// Everything that is wrong, one sentence each.
    pub problems: Vec<String>,
    /// Findings that are expected after some events and need no action, one sentence each.
    pub notes: Vec<String>,
    /// What to do about them, one sentence each.
    pub advice: Vec<String>,
}

impl CheckReport {
    /// Whether nothing is wrong.
    pub fn is_clean(&self) -> bool {
        self.problems.is_empty()
    }

    /// What to do about the problems found, as one text.
    pub fn advice(&self) -> String {
        let mut a = self.advice.join(" ");
        if !a.is_empty() {
            a.push(' ');
        }
        a.push_str(
            "Keep the folder: nothing in it is deleted by the appliance to fix this, and \
             unreadable entries are left where they are and skipped.",
        );
        a
    }

    /// What `decoded` holds, or, when the entry `key` could not be read, `None` and a
    /// problem that says so.
    fn readable<T, E: std::fmt::Display>(
        &mut self,
        what: &str,
        key: &str,
        decoded: Result<T, E>,
    ) -> Option<T> {
        decoded
            .map_err(|e| {
                self.problem(
                    format!("{what} {key} is not readable: {e}"),
                    ADVICE_UNREADABLE,
                )
            })
            .ok()
    }

    /// Reads every entry of `tree` (each a `what`): one `decode` cannot read is a problem, a
    /// readable one goes to `f` with its key, raw and as text. How many entries there were.
    fn each<T, E: std::fmt::Display>(
        &mut self,
        tree: &sled::Tree,
        what: &str,
        decode: impl Fn(&[u8]) -> Result<T, E>,
        mut f: impl FnMut(&mut Self, &[u8], &str, T) -> Result<(), StoreError>,
    ) -> Result<usize, StoreError> {
        let mut n = 0;
        for item in tree.iter() {
            let (k, v) = item?;
            n += 1;
            let key = String::from_utf8_lossy(&k).into_owned();
            if let Some(entry) = self.readable(what, &key, decode(&v)) {
                f(self, &k, &key, entry)?;
            }
        }
        Ok(n)
    }

    fn problem(&mut self, what: String, advice: &str) {
        self.problems.push(what);
        if !self.advice.iter().any(|a| a == advice) {
            self.advice.push(advice.to_owned());
        }
    }
}

const ADVICE_UNREADABLE: &str = "Unreadable entries were damaged on disk (a power cut with the drive's write cache on): if they are outbox entries, the reports must be re-sent by hand from the records; keep the folder for the vendor.";
const ADVICE_OUTBOX: &str = "An outbox entry that does not match its record was written by another program or a damaged store: compare the report with the record before it is sent (the feed sends it as it is).";
const ADVICE_IMAGES: &str = "Images missing without `image_evicted` in their record were deleted outside the appliance: restore them from a backup if the regulator may ask for that evidence.";
const ADVICE_ASIDE: &str = "A damaged store was set aside at start: stop the appliance and run `screenline store recover --data DATA --from FOLDER` to bring its unsent reports back.";

/// The record id an image file is kept under: `ID.ext`, or `ID.high.ext` / `ID.low.ext`.
fn image_record_id(name: &str) -> &str {
    let stem = name.rsplit_once('.').map_or(name, |(s, _)| s);
    stem.strip_suffix(".high")
        .or_else(|| stem.strip_suffix(".low"))
        .unwrap_or(stem)
}

/// Checks the store in `data_dir`, which no appliance may be using; an older schema is
/// reported, not migrated. Fails only if the store cannot be opened at all (in use by a
/// running appliance, written by a newer screenline, or damaged beyond what sled recovers).
pub fn check(data_dir: &Path) -> Result<CheckReport, StoreError> {
    let store = Store::open_with(data_dir, false)?;
    let mut r = CheckReport {
        schema_version: store.schema_version()?,
        db_bytes: store.db.size_on_disk()?,
        ..CheckReport::default()
    };
    let mut flagged_without_report = 0usize;
    r.records = r.each(
        &store.records,
        "record",
        Record::from_slice,
        |r, _, key, record| {
            if record.record_id != key {
                r.problem(
                    format!("record {key} names itself {:?}", record.record_id),
                    ADVICE_UNREADABLE,
                );
            }
            if record.decision == Decision::Flag {
                r.flagged += 1;
                if record.report_id.is_none() {
                    flagged_without_report += 1;
                }
            }
            if record.image_evicted.is_some() {
                r.images_evicted += 1;
            }
            for image in record.image_files() {
                if image.exists() {
                    r.images += 1;
                } else {
                    r.images_missing += 1;
                    r.problem(
                        format!(
                            "record {key} names image {}, which is missing",
                            image.display()
                        ),
                        ADVICE_IMAGES,
                    );
                }
            }
            Ok(())
        },
    )?;
    if flagged_without_report > 0 {
        r.problem(
            format!("{flagged_without_report} flagged record(s) have no report id"),
            ADVICE_UNREADABLE,
        );
    }
    // Every outbox entry must be readable and be the report of its own flagged record —
    // checked entry by entry against the records, not against a count kept from the same
    // tree.
    r.outbox = r.each(
        &store.outbox,
        "outbox entry",
        OutboxEntry::decode,
        |r, k, key, entry| {
            let record = match store.records.get(k)? {
                None => {
                    r.problem(
                        format!(
                            "report {} waits in the outbox for record {key}, which is missing",
                            entry.report_id
                        ),
                        ADVICE_OUTBOX,
                    );
                    return Ok(());
                }
                // An unreadable record was named above.
                Some(v) => match Record::from_slice(&v) {
                    Ok(record) => record,
                    Err(_) => return Ok(()),
                },
            };
            if record.decision != Decision::Flag
                || record.report_id.as_deref() != Some(entry.report_id.as_str())
            {
                r.problem(
                    format!(
                        "report {} waits in the outbox for record {key}, which is {} with report id {}",
                        entry.report_id,
                        record.decision.key(),
                        record.report_id.as_deref().unwrap_or("none")
                    ),
                    ADVICE_OUTBOX,
                );
            }
            if serde_json::from_slice::<serde_json::Value>(&entry.payload).is_err() {
                r.problem(
                    format!("report {} in the outbox is not JSON", entry.report_id),
                    ADVICE_UNREADABLE,
                );
            }
            Ok(())
        },
    )?;
    let review = |v: &[u8]| serde_json::from_slice::<super::review::Review>(v);
    r.reviews = r.each(&store.reviews, "review", review, |r, _, key, rv| {
        if store.records.get(rv.record_id.as_bytes())?.is_none() {
            r.problem(
                format!("review {key} is of a record that is missing"),
                ADVICE_UNREADABLE,
            );
        }
        Ok(())
    })?;
    let audit = |v: &[u8]| serde_json::from_slice::<super::audit::AuditEntry>(v);
    r.audit_entries = r.each(&store.audit, "audit entry", audit, |_, _, _, _| Ok(()))?;
    let mut orphans = BTreeSet::new();
    for entry in std::fs::read_dir(store.images_dir())?.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if !store
            .records
            .contains_key(image_record_id(&name).as_bytes())?
        {
            orphans.insert(name);
        }
    }
    r.orphan_images = orphans.len();
    if !orphans.is_empty() {
        let examples: Vec<&str> = orphans.iter().take(3).map(String::as_str).collect();
        // Not a problem: a stop between archiving a parcel's image and committing its
        // record leaves one (that parcel's decision was never sent, so the controller
        // diverted it), and so does a store set aside. Kept as evidence, never deleted.
        r.notes.push(format!(
            "{} image file(s) in {} belong to no record (e.g. {}): left by a stop between archiving an image and committing its record (that parcel was diverted fail-safe), or by a store set aside; kept as evidence",
            orphans.len(),
            store.images_dir().display(),
            examples.join(", ")
        ));
    }
    for (folder, recovered) in recover::set_aside_folders(data_dir) {
        if !recovered {
            r.set_aside.push(folder.display().to_string());
            r.problem(
                format!(
                    "a damaged store was set aside to {} and not recovered: run `screenline store recover --data {} --from {}`",
                    folder.display(),
                    data_dir.display(),
                    folder.display()
                ),
                ADVICE_ASIDE,
            );
        }
    }
    if r.schema_version < SCHEMA_VERSION {
        tracing::info!(
            version = r.schema_version,
            "older schema: migrated at the next start"
        );
    }
    Ok(r)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::Decision;
    use crate::record::Record;

    fn rec(id: &str, decision: Decision, report_id: Option<&str>, image: Option<&str>) -> Record {
        let mut r = Record::example(id, decision);
        r.report_id = report_id.map(str::to_owned);
        r.image = image.map(Into::into);
        r
    }

    #[tokio::test]
    async fn a_sound_store_is_clean_and_damage_is_named() {
        let dir = crate::testutil::temp_dir("check");
        {
            let store = Store::open(&dir).expect("open");
            let r = rec("r1", Decision::Flag, Some("rep1"), None);
            store
                .commit(b"r1", &r, Some(("rep1", "reports/flagged", b"{}")))
                .expect("commit");
            store
                .commit(b"r2", &rec("r2", Decision::Clear, None, None), None)
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
        // Damage of the kinds a count cannot see.
        {
            let store = Store::open(&dir).expect("open");
            store.records.remove("r3").expect("remove");
            let img = store.images_dir().join("r4.png");
            std::fs::write(&img, b"png").expect("image");
            // r4's report in the outbox names another report id than its record.
            store
                .commit(
                    b"r4",
                    &rec("r4", Decision::Flag, Some("rep4"), img.to_str()),
                    Some(("rep-other", "reports/flagged", b"{}")),
                )
                .expect("commit");
            store
                .commit(
                    b"r5",
                    &rec("r5", Decision::Clear, None, Some("/nowhere/r5.png")),
                    None,
                )
                .expect("commit");
            std::fs::write(store.images_dir().join("r9.high.png"), b"png").expect("orphan");
            store.flush_blocking().expect("flush");
        }
        std::fs::create_dir_all(dir.join("db.broken-20260101T000000Z")).expect("aside");
        let report = check(&dir).expect("check");
        assert_eq!(report.schema_version, crate::store::SCHEMA_VERSION);
        assert_eq!(
            (report.images, report.images_missing, report.orphan_images),
            (1, 1, 1)
        );
        let all = report.problems.join("\n");
        assert_eq!(report.problems.len(), 4, "{all}");
        assert!(report.notes[0].contains("belong to no record (e.g. r9.high.png)"));
        for expected in [
            "rep1 waits in the outbox",
            "rep-other waits in the outbox for record r4, which is flag with report id rep4",
            "r5 names image /nowhere/r5.png, which is missing",
            "store recover --data",
        ] {
            assert!(all.contains(expected), "{expected} not in {all}");
        }
        assert!(report.advice().contains("store recover"));
        std::fs::write(
            dir.join("db.broken-20260101T000000Z")
                .join(crate::store::recover::RECOVERED_MARK),
            b"done",
        )
        .expect("mark");
        assert_eq!(
            check(&dir).expect("check").problems.len(),
            3,
            "a recovered folder is no problem"
        );
        // A store in use cannot be checked, and says so.
        let _held = Store::open(&dir).expect("open");
        let e = check(&dir).expect_err("locked").to_string();
        assert!(e.contains("cannot open the store"), "{e}");
    }
}
