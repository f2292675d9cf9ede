//! The on-disk store (sled): screening records, the outbox of reports not yet acknowledged
//! by the broker, and the images kept as evidence.
//!
//! Durability point: [`Store::commit`] writes a record and its report in one transaction and
//! returns only after `flush_async` — from then on both survive a `kill -9` of the
//! appliance. sled's flush uses `sync_file_range`, which does not flush the drive's cache, so
//! power-loss durability is that of the drive's write cache: we claim no more than that.
//! A report leaves the outbox only through [`Store::ack`], which the feed calls on the
//! broker's PUBACK of that very publish.

use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;
use sled::transaction::{ConflictableTransactionError, TransactionError};
use sled::Transactional;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use thiserror::Error;

pub mod audit;
pub mod check;
pub mod query;
pub mod regulator;
pub mod review;

/// A store that could not do what was asked.
#[derive(Debug, Error)]
pub enum StoreError {
    #[error("cannot open the store in {path}: {why}. Run `screenline store check --data {path}` for what to do")]
    Open { path: PathBuf, why: String },
    #[error("store: {0}")]
    Sled(#[from] sled::Error),
    #[error("store: {0}")]
    Io(#[from] std::io::Error),
    #[error("store: record cannot be encoded: {0}")]
    Encode(#[from] serde_json::Error),
    #[error("no record {0} in the store")]
    NotFound(String),
}

/// One outbox entry: its ordering key and the report's payload.
#[derive(Debug, Clone)]
pub struct Queued {
    pub key: Vec<u8>,
    pub report_id: String,
    pub payload: Vec<u8>,
}

#[derive(Serialize, Deserialize)]
struct OutboxEntry {
    report_id: String,
    topic_suffix: String,
    #[serde(with = "serde_bytes_b64")]
    payload: Vec<u8>,
}

mod serde_bytes_b64 {
    use base64::Engine;
    use serde::{Deserialize, Deserializer, Serializer};
    pub fn serialize<S: Serializer>(b: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&base64::engine::general_purpose::STANDARD.encode(b))
    }
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        let s = String::deserialize(d)?;
        base64::engine::general_purpose::STANDARD
            .decode(s)
            .map_err(serde::de::Error::custom)
    }
}

/// HMAC-SHA-256 with the store's secret key: personal data that must be matched later
/// (split shipments, watch-lists) without being kept.
#[derive(Clone)]
pub struct KeyedHasher {
    key: Vec<u8>,
}

impl KeyedHasher {
    /// A hasher with this key.
    pub fn new(key: Vec<u8>) -> KeyedHasher {
        KeyedHasher { key }
    }

    /// A hasher with a fresh random key (offline screening).
    pub fn random() -> KeyedHasher {
        KeyedHasher::new(rand::random::<[u8; 32]>().to_vec())
    }

    /// The keyed hash of `value`, hex.
    pub fn hash(&self, value: &str) -> String {
        let mut mac = Hmac::<Sha256>::new_from_slice(&self.key)
            .unwrap_or_else(|_| unreachable!("HMAC takes keys of any length"));
        mac.update(value.as_bytes());
        hex::encode(mac.finalize().into_bytes())
    }
}

impl std::fmt::Debug for KeyedHasher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("KeyedHasher(…)")
    }
}

/// sled's page cache (its default is 1 GiB). What the appliance holds in memory stays bounded
/// by this however large the backlog grows: the rest waits on disk.
pub const CACHE_BYTES: u64 = 16 << 20;

/// The appliance's store.
pub struct Store {
    db: sled::Db,
    records: sled::Tree,
    outbox: sled::Tree,
    split: sled::Tree,
    reviews: sled::Tree,
    audit: sled::Tree,
    by_waybill: sled::Tree,
    images: PathBuf,
    hasher: KeyedHasher,
    /// Outbox length, kept here because sled's `len()` walks the whole tree.
    backlog: AtomicUsize,
}

impl Store {
    /// Opens (or creates) the store under `data_dir`. sled has been seen to panic on open
    /// after an abrupt stop; that panic is caught and reported like any other open error.
    pub fn open(data_dir: &Path) -> Result<Store, StoreError> {
        let open_err = |why: String| StoreError::Open {
            path: data_dir.to_owned(),
            why,
        };
        std::fs::create_dir_all(data_dir).map_err(|e| open_err(e.to_string()))?;
        let db_path = data_dir.join("db");
        let db = std::panic::catch_unwind(|| {
            sled::Config::new()
                .path(&db_path)
                .cache_capacity(CACHE_BYTES)
                .open()
        })
        .map_err(|_| open_err("sled panicked while opening the database".into()))?
        .map_err(|e| open_err(e.to_string()))?;
        let records = db.open_tree("records")?;
        let outbox = db.open_tree("outbox")?;
        let meta = db.open_tree("meta")?;
        let split = db.open_tree("split")?;
        let reviews = db.open_tree("reviews")?;
        let audit = db.open_tree("audit")?;
        let by_waybill = db.open_tree("by_waybill")?;
        let hash_key = match meta.get("hash_key")? {
            Some(k) => k.to_vec(),
            None => {
                let key: [u8; 32] = rand::random();
                meta.insert("hash_key", &key[..])?;
                db.flush()?;
                key.to_vec()
            }
        };
        let images = data_dir.join("images");
        std::fs::create_dir_all(&images)?;
        let backlog = AtomicUsize::new(outbox.len());
        Ok(Store {
            db,
            records,
            outbox,
            split,
            reviews,
            audit,
            by_waybill,
            images,
            hasher: KeyedHasher::new(hash_key),
            backlog,
        })
    }

    /// The store's keyed hasher.
    pub fn hasher(&self) -> &KeyedHasher {
        &self.hasher
    }

    /// The split-shipment ledger kept in this store.
    pub fn split_ledger(&self) -> SledLedger {
        SledLedger {
            tree: self.split.clone(),
            since_sweep: 0,
        }
    }

    /// Stores a record and, if there is one, its report, atomically and durably.
    pub async fn commit(
        &self,
        record_key: &[u8],
        record: &serde_json::Value,
        report: Option<(&str, &str, &[u8])>,
    ) -> Result<(), StoreError> {
        let record_bytes = serde_json::to_vec(record)?;
        let entry = match report {
            Some((report_id, topic_suffix, payload)) => Some(serde_json::to_vec(&OutboxEntry {
                report_id: report_id.to_owned(),
                topic_suffix: topic_suffix.to_owned(),
                payload: payload.to_vec(),
            })?),
            None => None,
        };
        let replaced = (&self.records, &self.outbox)
            .transaction(|(records, outbox)| {
                records.insert(record_key, record_bytes.as_slice())?;
                let replaced = match &entry {
                    Some(e) => outbox.insert(record_key, e.as_slice())?.is_some(),
                    None => true,
                };
                Ok::<bool, ConflictableTransactionError<()>>(replaced)
            })
            .map_err(|e| match e {
                TransactionError::Storage(e) => StoreError::Sled(e),
                TransactionError::Abort(()) => {
                    StoreError::Sled(sled::Error::Unsupported("transaction aborted".into()))
                }
            })?;
        if !replaced {
            self.backlog.fetch_add(1, Ordering::Relaxed);
        }
        self.db.flush_async().await?;
        Ok(())
    }

    /// Up to `max` outbox entries in order, skipping keys for which `skip` is true.
    pub fn outbox_batch(
        &self,
        max: usize,
        skip: impl Fn(&[u8]) -> bool,
    ) -> Result<Vec<(Queued, String)>, StoreError> {
        let mut out = Vec::new();
        for item in self.outbox.iter() {
            let (k, v) = item?;
            if skip(&k) {
                continue;
            }
            match serde_json::from_slice::<OutboxEntry>(&v) {
                Ok(e) => out.push((
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
                    continue;
                }
            }
            if out.len() == max {
                break;
            }
        }
        Ok(out)
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

    /// Moves an image file into the store's image folder, named by record.
    pub fn keep_image(
        &self,
        record_id: &str,
        src: &Path,
        bytes: &[u8],
    ) -> Result<PathBuf, StoreError> {
        let ext = src.extension().and_then(|e| e.to_str()).unwrap_or("img");
        let dest = self.images.join(format!("{record_id}.{ext}"));
        if std::fs::rename(src, &dest).is_err() {
            // Another filesystem: write our copy, then remove the original.
            std::fs::write(&dest, bytes)?;
            std::fs::remove_file(src)?;
        }
        // The sidecar's content lives on in the record.
        let _ = std::fs::remove_file(src.with_extension("json"));
        Ok(dest)
    }

    /// A record by key.
    pub fn record(&self, key: &[u8]) -> Result<Option<serde_json::Value>, StoreError> {
        Ok(match self.records.get(key)? {
            Some(v) => Some(serde_json::from_slice(&v)?),
            None => None,
        })
    }

    /// Flushes everything, from outside an async runtime.
    pub fn flush_blocking(&self) -> Result<(), StoreError> {
        self.db.flush()?;
        Ok(())
    }

    /// Flushes everything (shutdown).
    pub async fn flush(&self) -> Result<(), StoreError> {
        self.db.flush_async().await?;
        Ok(())
    }
}

/// Split-shipment history on disk: per (identity hash, category), the times of the latest
/// parcels within the window. Survives restarts; stays bounded because each entry keeps at
/// most the parcels in its window and a periodic sweep drops identities gone quiet.
pub struct SledLedger {
    tree: sled::Tree,
    since_sweep: u32,
}

/// Parcels recorded between two sweeps of the split-shipment ledger.
const SWEEP_EVERY: u32 = 1000;
/// Most timestamps kept per identity and category.
const LEDGER_KEEP: usize = 256;

fn millis(t: std::time::SystemTime) -> u64 {
    t.duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

impl crate::screen::rules::SplitLedger for SledLedger {
    fn record(
        &mut self,
        identity: &str,
        category: crate::domain::Category,
        at: std::time::SystemTime,
        window: std::time::Duration,
    ) -> usize {
        let now = millis(at);
        let oldest = now.saturating_sub(window.as_millis() as u64);
        let key = format!("{identity}/{}", category.key());
        let mut times: Vec<u64> = match self.tree.get(&key) {
            Ok(Some(v)) => serde_json::from_slice(&v).unwrap_or_default(),
            _ => Vec::new(),
        };
        times.retain(|t| *t >= oldest);
        times.push(now);
        if times.len() > LEDGER_KEEP {
            times.drain(..times.len() - LEDGER_KEEP);
        }
        let n = times.len();
        if let Ok(v) = serde_json::to_vec(&times) {
            if let Err(e) = self.tree.insert(key.as_bytes(), v) {
                tracing::error!(error = %e, "split-shipment ledger not updated");
            }
        }
        self.since_sweep += 1;
        if self.since_sweep >= SWEEP_EVERY {
            self.since_sweep = 0;
            self.sweep(oldest);
        }
        n
    }
}

impl SledLedger {
    fn sweep(&self, oldest: u64) {
        for item in self.tree.iter() {
            let Ok((k, v)) = item else { continue };
            let newest = serde_json::from_slice::<Vec<u64>>(&v)
                .ok()
                .and_then(|t| t.last().copied())
                .unwrap_or(0);
            if newest < oldest {
                let _ = self.tree.remove(k);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp() -> PathBuf {
        let p = std::env::temp_dir().join(format!(
            "screenline-store-{}-{}",
            std::process::id(),
            rand::random::<u64>()
        ));
        std::fs::create_dir_all(&p).expect("temp");
        p
    }

    #[tokio::test]
    async fn reports_stay_in_the_outbox_until_acknowledged_across_reopen() {
        let dir = temp();
        {
            let store = Store::open(&dir).expect("open");
            let rec = serde_json::json!({"decision": "flag"});
            store
                .commit(
                    b"0001-L1-1",
                    &rec,
                    Some(("rpt-a", "reports/flagged", b"{}")),
                )
                .await
                .expect("commit");
            store
                .commit(b"0002-L1-2", &rec, None)
                .await
                .expect("commit");
            store
                .commit(
                    b"0003-L1-3",
                    &rec,
                    Some(("rpt-b", "reports/flagged", b"{}")),
                )
                .await
                .expect("commit");
            assert_eq!(store.outbox_len(), 2);
            let batch = store
                .outbox_batch(10, |k| k == b"0001-L1-1")
                .expect("batch");
            assert_eq!(batch.len(), 1);
            assert_eq!(batch[0].0.report_id, "rpt-b");
            assert!(store.ack(b"0001-L1-1").expect("ack"));
            assert!(!store.ack(b"0001-L1-1").expect("second ack is a no-op"));
        }
        let store = Store::open(&dir).expect("reopen");
        assert_eq!(store.outbox_len(), 1, "the unacknowledged report survived");
        assert_eq!(
            store
                .record(b"0002-L1-2")
                .expect("read")
                .map(|v| v["decision"].clone()),
            Some("flag".into())
        );
        let h = store.hasher().hash("11010519491231002X");
        assert_eq!(
            h,
            store.hasher().hash("11010519491231002X"),
            "the key survives a reopen"
        );
        assert!(!h.contains("1101051949"));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
