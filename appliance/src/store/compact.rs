//! `screenline store compact`: rewrites the database into a fresh one, which gives back the
//! space sled keeps after insert-then-remove patterns such as the outbox (sled #1333, #1484):
//! sled reuses that space for new writes but does not shrink its files.
//!
//! Crash-safe by renames: the copy is written to `db.compact-new` and checked (same
//! checksum over every tree) while `db` is untouched; then `db` becomes `db.compact-old`,
//! `db.compact-new` becomes `db`, and `db.compact-old` is deleted. [`Store::open`] finishes or
//! undoes a compaction cut short between those steps (see [`finish_interrupted`]).

use super::{Store, StoreError, CACHE_BYTES};
use serde::Serialize;
use std::path::Path;

const NEW: &str = "db.compact-new";
const OLD: &str = "db.compact-old";

/// Sizes before and after.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Compacted {
    pub bytes_before: u64,
    pub bytes_after: u64,
}

/// Called by `Store::open` before opening `db`: a compaction stopped after `db` was renamed
/// away is completed (the checked copy is in place) or undone (the copy was not complete).
pub(crate) fn finish_interrupted(data_dir: &Path) -> std::io::Result<()> {
    let (db, new, old) = (data_dir.join("db"), data_dir.join(NEW), data_dir.join(OLD));
    if !db.exists() && old.exists() {
        if new.join("COMPLETE").exists() {
            std::fs::rename(&new, &db)?;
        } else {
            std::fs::rename(&old, &db)?;
        }
        tracing::warn!("finished a store compaction that was interrupted");
    }
    if db.exists() {
        if old.exists() {
            std::fs::remove_dir_all(&old)?;
        }
        if new.exists() {
            std::fs::remove_dir_all(&new)?;
        }
    }
    Ok(())
}

/// Compacts the store in `data_dir`, which no appliance may be using.
pub fn compact(data_dir: &Path) -> Result<Compacted, StoreError> {
    let store = Store::open(data_dir)?;
    let bytes_before = store.db.size_on_disk()?;
    let new_path = data_dir.join(NEW);
    if new_path.exists() {
        std::fs::remove_dir_all(&new_path)?;
    }
    let fresh = sled::Config::new()
        .path(&new_path)
        .cache_capacity(CACHE_BYTES)
        .open()?;
    for name in store.db.tree_names() {
        let from = store.db.open_tree(&name)?;
        let to = fresh.open_tree(&name)?;
        let mut batch = sled::Batch::default();
        let mut n = 0;
        for item in from.iter() {
            let (k, v) = item?;
            batch.insert(k, v);
            n += 1;
            if n % 10_000 == 0 {
                to.apply_batch(std::mem::take(&mut batch))?;
            }
        }
        to.apply_batch(batch)?;
    }
    fresh.flush()?;
    if fresh.checksum()? != store.db.checksum()? {
        drop(fresh);
        let _ = std::fs::remove_dir_all(&new_path);
        return Err(StoreError::Open {
            path: data_dir.to_owned(),
            why: "the compacted copy does not match the store; the store is left as it was".into(),
            damaged: false,
        });
    }
    let bytes_after = fresh.size_on_disk()?;
    drop(fresh);
    drop(store);
    std::fs::write(new_path.join("COMPLETE"), b"checked\n")?;
    std::fs::rename(data_dir.join("db"), data_dir.join(OLD))?;
    std::fs::rename(&new_path, data_dir.join("db"))?;
    std::fs::remove_dir_all(data_dir.join(OLD))?;
    let _ = std::fs::remove_file(data_dir.join("db").join("COMPLETE"));
    Ok(Compacted {
        bytes_before,
        bytes_after,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn compaction_keeps_every_entry_and_an_interrupted_one_is_finished() {
        let dir = crate::testutil::temp_dir("compact");
        {
            let store = Store::open(&dir).expect("open");
            let payload = vec![b'x'; 2000];
            for i in 0..3000u32 {
                let key = format!("{:013}-L1-{i}", 1_700_000_000_000u64 + u64::from(i));
                let rec = crate::record::Record::example(&key, crate::domain::Decision::Flag);
                store
                    .commit(
                        key.as_bytes(),
                        &rec,
                        Some(("r", "reports/flagged", &payload)),
                    )
                    .expect("commit");
                if i % 3 != 0 {
                    store.ack(key.as_bytes()).expect("ack");
                }
            }
            store.flush_blocking().expect("flush");
        }
        let c = compact(&dir).expect("compact");
        assert!(c.bytes_after <= c.bytes_before, "{c:?}");
        {
            let store = Store::open(&dir).expect("open");
            assert_eq!(store.outbox_len(), 1000);
            assert_eq!(store.records.len(), 3000);
            assert!(store.schema_version().expect("version") == super::super::SCHEMA_VERSION);
        }
        // Cut short after `db` was renamed away, before the copy was checked: undone.
        std::fs::rename(dir.join("db"), dir.join(OLD)).expect("rename");
        std::fs::create_dir_all(dir.join(NEW)).expect("partial copy");
        let store = Store::open(&dir).expect("open undoes it");
        assert_eq!(store.outbox_len(), 1000);
        assert!(!dir.join(OLD).exists() && !dir.join(NEW).exists());
    }
}
