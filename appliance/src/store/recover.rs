//! A store that sled cannot open: moved aside so that the line keeps screening on a fresh
//! one, and what can still be read brought back from it later (`screenline store recover`).
//!
//! Nothing here deletes anything. The damaged folder stays as `<data_dir>/db.broken-<UTC time>`
//! (it may hold unsent reports and evidence); recovery works on a copy of it, so the folder the
//! regulator or the vendor may want to examine is left exactly as it was found.

use super::{OutboxEntry, Store, StoreError};
use serde::Serialize;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::time::SystemTime;

/// Prefix of the folders damaged stores are moved to, inside the data folder.
pub const BROKEN_PREFIX: &str = "db.broken-";
/// The file written into a set-aside folder once its content has been recovered.
pub const RECOVERED_MARK: &str = "RECOVERED.txt";

/// A damaged store moved aside at start.
#[derive(Debug, Clone, Serialize)]
pub struct SetAside {
    /// Where the damaged store now is.
    pub folder: PathBuf,
    /// What sled said.
    pub why: String,
}

impl SetAside {
    /// The alarm's words: what happened and what to do.
    pub fn alarm(&self, data_dir: &Path) -> String {
        format!(
            "the store could not be opened ({}) and was moved to {}; screening goes on with a fresh store. Unsent reports in the old one are not lost: stop screenline and run `screenline store recover --data {} --from {}`",
            self.why,
            self.folder.display(),
            data_dir.display(),
            self.folder.display()
        )
    }
}

/// Opens the store in `data_dir`; if sled finds it damaged (an error or a panic), moves
/// `db` aside to `db.broken-<now>` and opens a fresh one. Errors that moving aside cannot
/// help (the store in use, permissions, a newer schema) are returned as they are.
pub fn open_or_set_aside(
    data_dir: &Path,
    now: SystemTime,
) -> Result<(Store, Option<SetAside>), StoreError> {
    match Store::open(data_dir) {
        Ok(store) => Ok((store, None)),
        Err(StoreError::Open {
            why, damaged: true, ..
        }) => {
            let folder = aside_name(data_dir, now);
            std::fs::rename(data_dir.join("db"), &folder)?;
            tracing::error!(folder = %folder.display(), %why, "damaged store moved aside; starting a fresh one");
            let store = Store::open(data_dir)?;
            Ok((store, Some(SetAside { folder, why })))
        }
        Err(e) => Err(e),
    }
}

fn aside_name(data_dir: &Path, now: SystemTime) -> PathBuf {
    let stamp = time::OffsetDateTime::from(now)
        .format(&time::macros::format_description!(
            "[year][month][day]T[hour][minute][second]Z"
        ))
        .unwrap_or_else(|_| "unknown".into());
    let mut folder = data_dir.join(format!("{BROKEN_PREFIX}{stamp}"));
    let mut n = 1;
    while folder.exists() {
        n += 1;
        folder = data_dir.join(format!("{BROKEN_PREFIX}{stamp}-{n}"));
    }
    folder
}

/// Set-aside stores in `data_dir`, oldest first, each with whether it was recovered.
pub fn set_aside_folders(data_dir: &Path) -> Vec<(PathBuf, bool)> {
    let mut out: Vec<(PathBuf, bool)> = std::fs::read_dir(data_dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with(BROKEN_PREFIX))
        .map(|e| {
            let p = e.path();
            let done = p.join(RECOVERED_MARK).exists();
            (p, done)
        })
        .collect();
    out.sort();
    out
}

/// What a recovery brought back.
#[derive(Debug, Default, Serialize)]
pub struct Recovered {
    pub records: usize,
    pub reports: usize,
    pub reviews: usize,
    pub audit_entries: usize,
    /// Entries already in the new store (kept as they are there).
    pub already_present: usize,
    /// Outbox entries that could not be decoded: left behind, named in `problems`.
    pub unreadable: usize,
    /// Whether sled's settings file had to be rebuilt to open the copy.
    pub settings_rebuilt: bool,
    pub problems: Vec<String>,
}

/// Copies what can be read from the set-aside store `from` into the store in `data_dir`
/// (which no appliance may be using): records, unsent reports, reviews, the audit log and the
/// waybill index. Keys already present win. The split-shipment ledger is not brought back:
/// its keys are hashes under the old store's key, which the fresh store does not have.
pub fn recover(data_dir: &Path, from: &Path) -> Result<Recovered, StoreError> {
    let store = Store::open(data_dir)?;
    let work = data_dir.join(format!(
        "recover-tmp-{}-{}",
        std::process::id(),
        rand::random::<u32>()
    ));
    copy_dir(from, &work)?;
    let result = recover_from_copy(&store, &work);
    let _ = std::fs::remove_dir_all(&work);
    let r = result?;
    store.flush_blocking()?;
    let _ = std::fs::write(
        from.join(RECOVERED_MARK),
        format!(
            "recovered into {} at {}: {} records, {} reports, {} reviews, {} audit entries\n",
            data_dir.display(),
            crate::time_fmt::format(SystemTime::now()),
            r.records,
            r.reports,
            r.reviews,
            r.audit_entries
        ),
    );
    Ok(r)
}

fn open_copy(work: &Path) -> Result<sled::Db, String> {
    let attempt = || {
        std::panic::catch_unwind(|| sled::Config::new().path(work).open())
            .map_err(|_| "sled panicked while opening it".to_owned())
            .and_then(|r| r.map_err(|e| e.to_string()))
    };
    attempt()
}

fn recover_from_copy(store: &Store, work: &Path) -> Result<Recovered, StoreError> {
    let mut r = Recovered::default();
    let db = match open_copy(work) {
        Ok(db) => db,
        Err(first) => {
            // sled's `conf` file holds only its settings (we use its defaults): with it gone,
            // sled writes a fresh one and reads the data files as they are.
            let _ = std::fs::remove_file(work.join("conf"));
            r.settings_rebuilt = true;
            open_copy(work).map_err(|again| StoreError::Open {
                path: work.to_owned(),
                why: format!("{first}; again without its settings file: {again}. Keep the folder for the vendor"),
                damaged: true,
            })?
        }
    };
    let prefs = store.db.open_tree("prefs")?;
    for (name, into) in [
        ("records", &store.records),
        ("outbox", &store.outbox),
        ("reviews", &store.reviews),
        ("audit", &store.audit),
        ("by_waybill", &store.by_waybill),
        ("prefs", &prefs),
    ] {
        let tree = match db.open_tree(name) {
            Ok(t) => t,
            Err(e) => {
                r.problems
                    .push(format!("tree {name} cannot be opened: {e}"));
                continue;
            }
        };
        for item in tree.iter() {
            let (k, v) = match item {
                Ok(kv) => kv,
                Err(e) => {
                    r.problems.push(format!(
                        "tree {name}: reading stopped at a damaged page: {e}"
                    ));
                    break;
                }
            };
            if name == "outbox" && OutboxEntry::decode(&v).is_err() {
                r.unreadable += 1;
                r.problems.push(format!(
                    "outbox entry {} is not readable; left in the set-aside folder",
                    String::from_utf8_lossy(&k)
                ));
                continue;
            }
            if into
                .compare_and_swap(&k, None as Option<&[u8]>, Some(v))?
                .is_err()
            {
                r.already_present += 1;
                continue;
            }
            match name {
                "records" => r.records += 1,
                "outbox" => {
                    r.reports += 1;
                    store.backlog.fetch_add(1, Ordering::Relaxed);
                }
                "reviews" => r.reviews += 1,
                "audit" => r.audit_entries += 1,
                _ => {}
            }
        }
    }
    Ok(r)
}

fn copy_dir(from: &Path, to: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(to)?;
    for entry in std::fs::read_dir(from)? {
        let entry = entry?;
        let dest = to.join(entry.file_name());
        if entry.file_type()?.is_dir() {
            copy_dir(&entry.path(), &dest)?;
        } else if entry.file_name() != RECOVERED_MARK {
            std::fs::copy(entry.path(), dest)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    async fn fill(dir: &Path) {
        let store = Store::open(dir).expect("open");
        for i in 0..20u32 {
            let key = format!("{:013}-L1-{i}", 1_700_000_000_000u64 + u64::from(i));
            let mut rec = crate::record::Record::example(&key, crate::domain::Decision::Flag);
            rec.report_id = Some(format!("rep{i}"));
            let rid = format!("rep{i}");
            store
                .commit(
                    key.as_bytes(),
                    &rec,
                    Some((rid.as_str(), "reports/flagged", b"{}")),
                )
                .expect("commit");
        }
    }

    #[tokio::test]
    async fn a_store_with_garbled_settings_is_set_aside_and_its_reports_recovered() {
        let dir = crate::testutil::temp_dir("aside");
        fill(&dir).await;
        // Garble sled's settings file: every open of it now fails.
        std::fs::write(
            dir.join("db").join("conf"),
            b"\xff\xfe garbage, not sled settings\n",
        )
        .expect("garble");
        let e = Store::open(&dir)
            .err()
            .expect("a garbled store does not open");
        assert!(matches!(e, StoreError::Open { damaged: true, .. }), "{e}");
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_764_000_000);
        let (store, aside) = open_or_set_aside(&dir, now).expect("fresh store");
        let aside = aside.expect("moved aside");
        assert!(
            aside.folder.ends_with("db.broken-20251124T160000Z"),
            "{:?}",
            aside.folder
        );
        assert!(aside.alarm(&dir).contains("screenline store recover"));
        assert_eq!(store.outbox_len(), 0, "the fresh store starts empty");
        assert_eq!(set_aside_folders(&dir), vec![(aside.folder.clone(), false)]);
        drop(store);

        let r = recover(&dir, &aside.folder).expect("recover");
        assert_eq!((r.records, r.reports, r.unreadable), (20, 20, 0), "{r:?}");
        assert!(r.settings_rebuilt);
        let store = Store::open(&dir).expect("open");
        assert_eq!(
            store.outbox_len(),
            20,
            "every unsent report is back in the outbox"
        );
        assert_eq!(set_aside_folders(&dir), vec![(aside.folder.clone(), true)]);
        // The set-aside folder itself is untouched but for the mark.
        assert!(std::fs::read(aside.folder.join("conf"))
            .expect("conf")
            .starts_with(b"\xff\xfe garbage"));
        drop(store);
        // Recovering twice brings nothing in twice.
        let again = recover(&dir, &aside.folder).expect("again");
        assert_eq!((again.records, again.already_present), (0, 40));
    }

    #[tokio::test]
    async fn a_store_with_garbage_data_files_is_set_aside_and_the_line_goes_on() {
        let dir = crate::testutil::temp_dir("garble");
        fill(&dir).await;
        // Truncate and garble every data file sled wrote.
        let db = dir.join("db");
        for entry in std::fs::read_dir(&db).expect("db").flatten() {
            if entry.file_type().is_ok_and(|t| t.is_file()) {
                let p = entry.path();
                let len = std::fs::metadata(&p).map(|m| m.len()).unwrap_or(0) as usize;
                let junk: Vec<u8> = (0..len.clamp(64, 1 << 20) / 2)
                    .map(|i| (i * 7919 % 251) as u8)
                    .collect();
                std::fs::write(&p, junk).expect("garble");
            }
        }
        let (store, aside) =
            open_or_set_aside(&dir, SystemTime::now()).expect("the line keeps screening");
        // sled may or may not notice garbage in its log (it truncates a torn tail); either
        // way the store opens, and what it holds is readable or set aside.
        match aside {
            Some(a) => {
                assert!(a.folder.exists());
                assert_eq!(store.outbox_len(), 0);
            }
            None => assert!(store.outbox_len() <= 20),
        }
        let rec = crate::record::Record::example("x", crate::domain::Decision::Clear);
        store
            .commit(b"x", &rec, None)
            .expect("the fresh store takes records");
    }

    #[test]
    fn a_store_in_use_is_not_set_aside() {
        let dir = crate::testutil::temp_dir("inuse");
        let _held = Store::open(&dir).expect("open");
        let e = open_or_set_aside(&dir, SystemTime::now())
            .err()
            .expect("in use");
        assert!(matches!(e, StoreError::Open { damaged: false, .. }), "{e}");
        assert!(set_aside_folders(&dir).is_empty());
    }
}
