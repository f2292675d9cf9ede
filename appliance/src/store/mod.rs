//! The on-disk store (sled): screening records, the outbox of reports not yet acknowledged
//! by the broker, the images kept as evidence, reviews, the audit log and the split-shipment
//! ledger. Every other stage reaches the disk only through [`Store`].
//!
//! # Durability point
//!
//! [`Store::commit_batch`] writes a group of records — each flagged one with its report in the
//! outbox, and the waybill index — in **one sled transaction**, then waits for **one**
//! `flush_async`. It returns only after that flush; the sink sends the decisions of the group
//! to the line controllers only after it returns. So:
//!
//! - **`kill -9` of the appliance** (or a panic, or the OOM killer) at any moment: every
//!   record whose decision reached a controller is on disk, with its report; a group whose
//!   flush had not returned is either wholly there or wholly absent (the transaction is
//!   atomic), and none of its decisions was sent — the controller diverts those parcels
//!   fail-safe.
//! - **Power loss or a kernel crash**: sled's flush uses `sync_file_range` (sled 0.34.7 on
//!   Linux), which writes the data to the drive but neither flushes the drive's volatile write
//!   cache nor the file's metadata. A drive with a power-loss-protected cache (or with its
//!   write cache off, `hdparm -W0`) keeps what was flushed; any other drive may lose the last
//!   writes it had acknowledged. We claim no more than that, and the SIGKILL tests prove only
//!   the first point.
//! - A report leaves the outbox only through [`Store::ack`], which the feed calls on the
//!   broker's PUBACK of that very publish. An ack that was not flushed yet when the power went
//!   means the report is sent again: consumers de-duplicate by `report_id`.
//!
//! # Schema
//!
//! `meta/schema_version` (decimal text) says what layout the store has; [`Store::open`]
//! migrates older stores forward and refuses a newer one (a downgraded binary would
//! misread it). See [`SCHEMA_VERSION`].

use crate::record::Record;
use sled::transaction::{ConflictableTransactionError, TransactionError};
use sled::Transactional;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, AtomicUsize, Ordering};
use std::sync::Arc;
use thiserror::Error;

pub mod audit;
pub mod check;
pub mod compact;
pub mod config;
pub mod counters;
pub mod images;
mod outbox;
pub mod owner;
pub mod prefs;
pub mod query;
pub mod queue;
pub mod recover;
pub mod regulator;
pub mod retention;
pub mod review;
pub mod sightings;
#[cfg(test)]
mod testing;

/// A store that could not do what was asked.
#[derive(Debug, Error)]
pub enum StoreError {
    /// The store could not be opened. `damaged` says whether sled found it unreadable
    /// (corrupt, or it panicked) — as opposed to in use, not permitted, or a full disk, where
    /// moving it aside would help nothing.
    #[error("cannot open the store in {path}: {why}. Run `screenline store check --data {path}` for what to do")]
    Open {
        path: PathBuf,
        why: String,
        damaged: bool,
    },
    /// The store was written by a newer screenline.
    #[error("the store in {path} has schema version {found}, but this screenline knows versions up to {supported}: it was written by a newer screenline. Install that version again (a downgrade would misread the store), or move {path}/db aside and start on a fresh store")]
    NewerSchema {
        path: PathBuf,
        found: u32,
        supported: u32,
    },
    #[error("store: {0}")]
    Sled(#[from] sled::Error),
    #[error("store: {0}")]
    Io(#[from] std::io::Error),
    #[error("store: record cannot be encoded: {0}")]
    Encode(#[from] serde_json::Error),
    #[error("no record {0} in the store")]
    NotFound(String),
    /// The flush after a write failed: the write is not durable and counts as not done.
    #[error("store: flush failed: {0}")]
    Flush(String),
    /// The store thread could not run the job (the database is closed after a fault).
    #[error("store unavailable: {0}")]
    Unavailable(String),
    /// The store thread has ended (shutdown, or it died).
    #[error("the store thread has ended")]
    Gone,
}

/// The store layout this screenline writes. 1: the walking skeleton's (no version key).
/// 2: records may carry `image_evicted` / `slimmed` (retention and the disk budget), and the
/// version key exists. 3: outbox entries keep the report's payload as queued instead of
/// base64 inside JSON (`outbox.rs`). An older store is migrated at open.
pub const SCHEMA_VERSION: u32 = 3;

/// One outbox entry: its ordering key and the report's payload.
#[derive(Debug, Clone)]
pub struct Queued {
    pub key: Vec<u8>,
    pub report_id: String,
    pub payload: Vec<u8>,
}

use outbox::OutboxEntry;

pub use screenline_core::keys::KeyedHasher;

/// sled's page cache (its default is 1 GiB). What the appliance holds in memory stays bounded
/// by this however large the backlog grows: the rest waits on disk.
pub const CACHE_BYTES: u64 = 16 << 20;

/// Per record key, the counters its commit added (see [`Store::commit_counted`]).
pub(crate) const COUNTED: &str = "counted";

/// The appliance's store.
pub struct Store {
    db: sled::Db,
    records: sled::Tree,
    outbox: sled::Tree,
    meta: sled::Tree,
    split: sled::Tree,
    reviews: sled::Tree,
    audit: sled::Tree,
    by_waybill: sled::Tree,
    images: PathBuf,
    hasher: KeyedHasher,
    /// Outbox length, kept here because sled's `len()` walks the whole tree; shared with
    /// the [`owner::StoreHandle`]s, which read it without a job.
    backlog: Arc<AtomicUsize>,
    /// Parcels recorded in the split-shipment ledger since its last sweep.
    ledger_since_sweep: Arc<AtomicU32>,
    /// The sightings' outbox and ledger figures (`sightings.rs`).
    sightings: Arc<sightings::State>,
}

/// One record of a group commit ([`Store::commit_counted`]), owned: it travels to the store
/// thread.
#[derive(Debug, Clone)]
pub struct Commit {
    /// The record's key (its record id).
    pub key: String,
    pub record: Record,
    /// A flagged record's report: (report id, topic suffix, payload).
    pub report: Option<(String, String, Vec<u8>)>,
    /// The waybill to index the record under, if it has one.
    pub waybill: Option<String>,
    /// The counters this record adds to (the regulator's statistics): added in the same
    /// transaction, once per record key however often the record is committed.
    pub counts: Vec<crate::telemetry::Counter>,
}

/// Whether an error from sled's open means the files are unreadable (so that moving them
/// aside and starting fresh is the remedy) rather than a cause outside them.
fn sled_damaged(e: &sled::Error) -> bool {
    match e {
        // `Unsupported` is what sled says of a settings file it cannot parse: this binary
        // pins one sled version, so it never means a genuinely other format.
        sled::Error::Corruption { .. }
        | sled::Error::ReportableBug(_)
        | sled::Error::Unsupported(_) => true,
        sled::Error::Io(io) => {
            // Held by another process, not permitted, disk full: the files are fine.
            !(io.to_string().contains("could not acquire lock")
                || matches!(
                    io.kind(),
                    std::io::ErrorKind::PermissionDenied
                        | std::io::ErrorKind::StorageFull
                        | std::io::ErrorKind::ReadOnlyFilesystem
                        | std::io::ErrorKind::NotFound
                ))
        }
        _ => false,
    }
}

impl Store {
    /// Opens (or creates) the store under `data_dir`, migrating an older schema forward.
    /// sled has been seen to panic on open after an abrupt stop; that panic is caught and
    /// reported like any other open error (`damaged: true`).
    pub fn open(data_dir: &Path) -> Result<Store, StoreError> {
        Store::open_with(data_dir, true)
    }

    /// Opens the store; `migrate` false leaves an older schema as it is (`store check`).
    pub(crate) fn open_with(data_dir: &Path, migrate: bool) -> Result<Store, StoreError> {
        let open_err = |why: String, damaged: bool| StoreError::Open {
            path: data_dir.to_owned(),
            why,
            damaged,
        };
        std::fs::create_dir_all(data_dir).map_err(|e| open_err(e.to_string(), false))?;
        compact::finish_interrupted(data_dir).map_err(|e| {
            open_err(
                format!("an interrupted compaction could not be finished: {e}"),
                false,
            )
        })?;
        let db_path = data_dir.join("db");
        // A store just closed by this process is unlocked only once sled's flusher thread
        // has ended: give a held lock a moment before calling the store in use.
        let mut tries = 0;
        let opened = loop {
            let opened =
                std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| Store::open_db(&db_path)));
            match &opened {
                Ok(Err(sled::Error::Io(e)))
                    if tries < 10 && e.to_string().contains("could not acquire lock") =>
                {
                    tries += 1;
                    std::thread::sleep(std::time::Duration::from_millis(100));
                }
                _ => break opened,
            }
        };
        let (db, trees) = match opened {
            Err(_) => {
                return Err(open_err(
                    "sled panicked while opening the database".into(),
                    true,
                ))
            }
            Ok(Err(e)) => {
                let damaged = sled_damaged(&e);
                return Err(open_err(e.to_string(), damaged));
            }
            Ok(Ok(x)) => x,
        };
        let [records, outbox, meta, split, reviews, audit, by_waybill] = trees;
        let fresh = meta.get("hash_key")?.is_none() && records.is_empty() && outbox.is_empty();
        let version = match meta.get("schema_version")? {
            Some(v) => std::str::from_utf8(&v)
                .ok()
                .and_then(|v| v.trim().parse::<u32>().ok())
                .ok_or_else(|| {
                    open_err(
                        format!(
                            "meta/schema_version is {:?}, not a number",
                            String::from_utf8_lossy(&v)
                        ),
                        true,
                    )
                })?,
            None if fresh => SCHEMA_VERSION,
            None => 1,
        };
        if version > SCHEMA_VERSION {
            return Err(StoreError::NewerSchema {
                path: data_dir.to_owned(),
                found: version,
                supported: SCHEMA_VERSION,
            });
        }
        if migrate && (version < SCHEMA_VERSION || fresh) {
            migrate_schema(&meta, &outbox, version)?;
        }
        let hash_key = match meta.get("hash_key")? {
            Some(k) => k.to_vec(),
            None => {
                let key: [u8; 32] = rand::random();
                meta.insert("hash_key", &key[..])?;
                key.to_vec()
            }
        };
        db.flush()?;
        let images = data_dir.join("images");
        std::fs::create_dir_all(&images)?;
        let backlog = Arc::new(AtomicUsize::new(outbox.len()));
        let sightings = sightings::State::open(&db, &split)?;
        let store = Store {
            db,
            records,
            outbox,
            meta,
            split,
            reviews,
            audit,
            by_waybill,
            images,
            hasher: KeyedHasher::new(hash_key),
            backlog,
            ledger_since_sweep: Arc::default(),
            sightings,
        };
        if migrate {
            store.build_queue_index()?;
        }
        Ok(store)
    }

    fn open_db(db_path: &Path) -> Result<(sled::Db, [sled::Tree; 7]), sled::Error> {
        // No background flusher: only the store thread flushes (`owner.rs`), never beside
        // a transaction on another thread.
        let db = sled::Config::new()
            .path(db_path)
            .cache_capacity(CACHE_BYTES)
            .flush_every_ms(None)
            .open()?;
        let trees = [
            db.open_tree("records")?,
            db.open_tree("outbox")?,
            db.open_tree("meta")?,
            db.open_tree("split")?,
            db.open_tree("reviews")?,
            db.open_tree("audit")?,
            db.open_tree("by_waybill")?,
        ];
        // Read `meta` whole: a damaged page there shows now rather than mid-shift.
        for item in trees[2].iter() {
            item?;
        }
        Ok((db, trees))
    }

    /// The schema version written in the store (1 if none is).
    pub fn schema_version(&self) -> Result<u32, StoreError> {
        Ok(match self.meta.get("schema_version")? {
            Some(v) => String::from_utf8_lossy(&v).trim().parse().unwrap_or(0),
            None => 1,
        })
    }

    /// The folder the store's images are kept in.
    pub fn images_dir(&self) -> &Path {
        &self.images
    }

    /// The store's keyed hasher.
    pub fn hasher(&self) -> &KeyedHasher {
        &self.hasher
    }

    /// Writes one record and, if there is one, its report ([`Store::commit_counted`] of a
    /// group of one, counting nothing).
    pub fn commit(
        &self,
        record_key: &[u8],
        record: &Record,
        report: Option<(&str, &str, &[u8])>,
    ) -> Result<(), StoreError> {
        self.commit_counted(&[Commit {
            key: String::from_utf8_lossy(record_key).into_owned(),
            record: record.clone(),
            report: report
                .map(|(id, topic, body)| (id.to_owned(), topic.to_owned(), body.to_vec())),
            waybill: None,
            counts: Vec::new(),
        }])
    }

    /// Writes a group of records with their reports, waybill index entries and counters in
    /// one transaction. Durable once the store thread's flush after it returns (`owner.rs`):
    /// the sink waits for that before any decision of the group reaches a controller.
    ///
    /// Idempotent by record key: a record committed again (the sink retrying a group whose
    /// flush failed, which a later flush may have written after all) replaces the earlier
    /// one, its counters are moved from what the earlier one counted to what this one
    /// counts, and its report is queued once.
    pub fn commit_counted(&self, batch: &[Commit]) -> Result<(), StoreError> {
        if batch.is_empty() {
            return Ok(());
        }
        let counters = self.db.open_tree(counters::COUNTERS)?;
        let counted = self.db.open_tree(COUNTED)?;
        let queue = self.db.open_tree(queue::QUEUE)?;
        let mut encoded = Vec::with_capacity(batch.len());
        for c in batch {
            let entry = c.report.as_ref().map(|(report_id, topic_suffix, payload)| {
                OutboxEntry {
                    report_id: report_id.clone(),
                    topic_suffix: topic_suffix.clone(),
                    payload: payload.clone(),
                }
                .encode()
            });
            let index = c
                .waybill
                .as_ref()
                .map(|w| [w.as_bytes(), b"\0", c.key.as_bytes()].concat());
            encoded.push((
                c.key.as_bytes(),
                c.record.to_vec(),
                entry,
                index,
                counters::encode_counts(&c.counts),
                queue::Waiting::of(&c.record).map(|w| w.encode()),
            ));
        }
        let added = (
            &self.records,
            &self.outbox,
            &self.by_waybill,
            &counters,
            &counted,
            &queue,
        )
            .transaction(|(records, outbox, by_waybill, counters, counted, queue)| {
                let mut added = 0usize;
                let mut delta: BTreeMap<&str, i64> = BTreeMap::new();
                let mut before = Vec::new();
                for (key, record, entry, index, counts, waiting) in &encoded {
                    // A parcel an operator has to judge joins the queue with its record.
                    if let Some(w) = waiting {
                        queue.insert(*key, w.as_slice())?;
                    }
                    if let Some(old) = counted.insert(*key, counts.as_bytes())? {
                        before.push(old);
                    }
                    for name in counts.split('\n').filter(|n| !n.is_empty()) {
                        *delta.entry(name).or_default() += 1;
                    }
                    records.insert(*key, record.as_slice())?;
                    if let Some(e) = entry {
                        if outbox.insert(*key, e.as_slice())?.is_none() {
                            added += 1;
                        }
                    }
                    if let Some(i) = index {
                        by_waybill.insert(i.as_slice(), &[])?;
                    }
                }
                for old in &before {
                    for name in std::str::from_utf8(old)
                        .unwrap_or_default()
                        .split('\n')
                        .filter(|n| !n.is_empty())
                    {
                        *delta.entry(name).or_default() -= 1;
                    }
                }
                counters::apply(counters, &delta)?;
                Ok::<usize, ConflictableTransactionError<()>>(added)
            })
            .map_err(|e| match e {
                TransactionError::Storage(e) => StoreError::Sled(e),
                TransactionError::Abort(()) => {
                    StoreError::Sled(sled::Error::Unsupported("transaction aborted".into()))
                }
            })?;
        self.backlog.fetch_add(added, Ordering::Relaxed);
        Ok(())
    }

    /// Up to `max` outbox entries in order, skipping keys for which `skip` is true.
    pub fn outbox_batch(
        &self,
        max: usize,
        skip: impl Fn(&[u8]) -> bool,
    ) -> Result<Vec<(Queued, String)>, StoreError> {
        outbox::batch(&self.outbox, max, skip, |k, v| {
            match OutboxEntry::decode(v) {
                Ok(e) => Some((
                    Queued {
                        key: k.to_vec(),
                        report_id: e.report_id,
                        payload: e.payload,
                    },
                    e.topic_suffix,
                )),
                Err(err) => {
                    // Never delete what cannot be read: leave it for `store check` and say so.
                    tracing::error!(error = %err, "unreadable outbox entry left in place");
                    None
                }
            }
        })
    }

    /// Reports waiting for the broker.
    pub fn outbox_len(&self) -> usize {
        self.backlog.load(Ordering::Relaxed)
    }

    /// The broker acknowledged the report under `key`: it leaves the outbox. Returns whether
    /// it was still there (a report sent twice is acknowledged twice).
    pub fn ack(&self, key: &[u8]) -> Result<bool, StoreError> {
        let was_there = self.outbox.remove(key)?.is_some();
        if was_there {
            self.backlog.fetch_sub(1, Ordering::Relaxed);
        }
        Ok(was_there)
    }

    /// Counts the outbox into `shared` and keeps counting there (a store reopened by the
    /// store thread goes on with the handles' counter).
    pub(crate) fn adopt_backlog(&mut self, shared: Arc<AtomicUsize>) {
        shared.store(self.outbox.len(), Ordering::Relaxed);
        self.backlog = shared;
    }

    /// The JSON value kept under `key` in the tree `tree`, if there is one.
    pub(crate) fn get_json<T: serde::de::DeserializeOwned>(
        &self,
        tree: &str,
        key: &str,
    ) -> Result<Option<T>, StoreError> {
        match self.db.open_tree(tree)?.get(key)? {
            Some(v) => Ok(Some(serde_json::from_slice(&v)?)),
            None => Ok(None),
        }
    }

    /// A record by key.
    pub fn record(&self, key: &[u8]) -> Result<Option<Record>, StoreError> {
        Ok(match self.records.get(key)? {
            Some(v) => Some(Record::from_slice(&v)?),
            None => None,
        })
    }

    /// The database's files' size on disk (images not included).
    pub fn db_size(&self) -> Result<u64, StoreError> {
        Ok(self.db.size_on_disk()?)
    }

    /// Flushes everything, from outside an async runtime.
    pub fn flush_blocking(&self) -> Result<(), StoreError> {
        self.db.flush()?;
        Ok(())
    }
}

impl Drop for Store {
    /// What was written is flushed when the store closes (the store thread flushes after
    /// every job round already; this covers offline commands and tests).
    fn drop(&mut self) {
        if let Err(e) = self.db.flush() {
            tracing::error!(error = %e, "the store's final flush failed");
        }
    }
}

/// Brings `meta` (and whatever else a step needs) from schema `from` to [`SCHEMA_VERSION`].
/// Each step is idempotent, so a migration cut short by a crash runs again at the next open.
fn migrate_schema(meta: &sled::Tree, outbox: &sled::Tree, from: u32) -> Result<(), StoreError> {
    if from < SCHEMA_VERSION {
        tracing::info!(from, to = SCHEMA_VERSION, "migrating the store's schema");
    }
    // 1 → 2: no record is rewritten. Version 2 only adds fields (`image_evicted`, `slimmed`)
    // that version 1 never wrote; the version key itself is what makes an older screenline's
    // misreading impossible from now on.
    // 2 → 3: every waiting report is rewritten in the new form, its payload unchanged. Each
    // rewrite stands alone: a migration cut short is finished at the next open (the version
    // is stamped last, and both forms read). An entry that cannot be read is left as it is
    // for `store check` to name.
    if from < 3 {
        let mut rewritten = 0usize;
        for item in outbox.iter() {
            let (k, v) = item?;
            if !OutboxEntry::is_legacy(&v) {
                continue;
            }
            match OutboxEntry::decode(&v) {
                Ok(entry) => {
                    outbox.insert(k, entry.encode())?;
                    rewritten += 1;
                }
                Err(e) => tracing::error!(error = %e, "unreadable outbox entry left as it was"),
            }
        }
        if rewritten > 0 {
            tracing::info!(rewritten, "waiting reports moved to the outbox's new form");
        }
    }
    meta.insert("schema_version", SCHEMA_VERSION.to_string().as_bytes())?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn reports_stay_in_the_outbox_until_acknowledged_across_reopen() {
        let (_dir, store) = crate::store::testing::reopened("store", |store| {
            let rec = Record::example("0001-L1-1", crate::domain::Decision::Flag);
            store
                .commit(
                    b"0001-L1-1",
                    &rec,
                    Some(("rpt-a", "reports/flagged", b"{}")),
                )
                .expect("commit");
            store.commit(b"0002-L1-2", &rec, None).expect("commit");
            store
                .commit(
                    b"0003-L1-3",
                    &rec,
                    Some(("rpt-b", "reports/flagged", b"{}")),
                )
                .expect("commit");
            assert_eq!(store.outbox_len(), 2);
            let batch = store
                .outbox_batch(10, |k| k == b"0001-L1-1")
                .expect("batch");
            assert_eq!(batch.len(), 1);
            assert_eq!(batch[0].0.report_id, "rpt-b");
            assert!(store.ack(b"0001-L1-1").expect("ack"));
            assert!(!store.ack(b"0001-L1-1").expect("second ack is a no-op"));
        });
        assert_eq!(store.outbox_len(), 1, "the unacknowledged report survived");
        assert_eq!(
            store
                .record(b"0002-L1-2")
                .expect("read")
                .map(|r| r.decision),
            Some(crate::domain::Decision::Flag)
        );
        let h = store.hasher().hash("11010519491231002X");
        assert_eq!(
            h,
            store.hasher().hash("11010519491231002X"),
            "the key survives a reopen"
        );
        assert!(!h.contains("1101051949"));
    }

    #[test]
    fn reports_queued_by_schema_2_leave_byte_for_byte_after_the_migration() {
        use base64::Engine;
        let dir = crate::testutil::temp_dir("outbox-v2");
        // Queued by a schema-2 screenline: base64 inside JSON, one entry per report.
        let payloads: Vec<Vec<u8>> = (0..3)
            .map(|i| format!("{{\"report_id\":\"rpt-{i}\",\"who\":\"张三\"}}").into_bytes())
            .collect();
        {
            let store = Store::open(&dir).expect("open");
            for (i, p) in payloads.iter().enumerate() {
                let old = serde_json::json!({
                    "report_id": format!("rpt-{i}"),
                    "topic_suffix": "reports/flagged",
                    "payload": base64::engine::general_purpose::STANDARD.encode(p),
                });
                store
                    .outbox
                    .insert(format!("000{i}-L1-{i}"), old.to_string().as_bytes())
                    .expect("insert");
            }
            store
                .meta
                .insert("schema_version", &b"2"[..])
                .expect("stamp");
            store.flush_blocking().expect("flush");
        }
        let store = Store::open(&dir).expect("open migrates");
        assert_eq!(store.schema_version().expect("version"), SCHEMA_VERSION);
        assert_eq!(store.outbox_len(), 3);
        for item in store.outbox.iter() {
            let (_, v) = item.expect("entry");
            assert!(!OutboxEntry::is_legacy(&v), "rewritten in the new form");
        }
        let batch = store.outbox_batch(10, |_| false).expect("batch");
        let sent: Vec<Vec<u8>> = batch.into_iter().map(|(q, _)| q.payload).collect();
        assert_eq!(sent, payloads, "what reaches the broker is what was queued");
    }

    #[test]
    fn the_schema_version_is_stamped_migrated_and_a_newer_one_refused() {
        let dir = crate::testutil::temp_dir("store");
        {
            let store = Store::open(&dir).expect("open");
            assert_eq!(store.schema_version().expect("version"), SCHEMA_VERSION);
            // Make it look like a walking-skeleton store: data, no version key.
            let r1 = Record::example("r1", crate::domain::Decision::Clear);
            store.records.insert("r1", r1.to_vec()).expect("insert");
            store.meta.remove("schema_version").expect("remove");
            store.flush_blocking().expect("flush");
        }
        {
            let store = Store::open_with(&dir, false).expect("open without migrating");
            assert_eq!(
                store.schema_version().expect("version"),
                1,
                "left as it was"
            );
        }
        {
            let store = Store::open(&dir).expect("open migrates");
            assert_eq!(store.schema_version().expect("version"), SCHEMA_VERSION);
            assert!(store.record(b"r1").expect("read").is_some());
            store
                .meta
                .insert("schema_version", &b"99"[..])
                .expect("insert");
            store.flush_blocking().expect("flush");
        }
        let e = Store::open(&dir).err().expect("newer schema refused");
        assert!(
            matches!(e, StoreError::NewerSchema { found: 99, .. }),
            "{e}"
        );
        assert!(
            e.to_string().contains("written by a newer screenline"),
            "{e}"
        );
        // Refusing is not damage: nothing may move the store aside for it.
        let e = recover::open_or_set_aside(&dir, std::time::SystemTime::now())
            .err()
            .expect("still refused");
        assert!(matches!(e, StoreError::NewerSchema { .. }));
    }
}
