//! The store's side of split shipments across a site: the split-shipment ledger (sled tree
//! `split`) with the parcels seen here and those the site's other appliances told of in
//! their sightings, and the outbox of this appliance's own sightings waiting for the broker
//! (tree `sightings_out`).
//!
//! Both are bounded. A ledger entry — one sender key and category — keeps at most
//! [`LEDGER_KEEP`] parcels of each origin, and only those within the window; an incremental
//! sweep drops entries gone quiet, a few thousand keys at a time so that no job walks the
//! whole tree; peers' sightings may add new senders only while the ledger holds fewer than
//! its cap (`ledger_full` otherwise; parcels seen here are always recorded). The outbox drops
//! sightings once they are older than the window (no peer would count them) and, past
//! [`OUTBOX_MAX`], the oldest — each counted, never silently.
//!
//! Everything here runs on the store thread (`owner.rs`).

use super::{Store, StoreError};
use crate::domain::Category;
use screenline_core::rules::{SplitCount, SplitLedger, LEDGER_KEEP};
use screenline_core::sighting::{Seen, Verified};
use serde::{Deserialize, Serialize};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

/// Sightings waiting for the broker at most; past this the oldest go (counted).
pub const OUTBOX_MAX: usize = 200_000;
/// Ledger records (here or folded) between two steps of the sweep.
const SWEEP_EVERY: u32 = 256;
/// Ledger keys looked at by one step of the sweep.
const SWEEP_STEP: usize = 4096;

/// What the store keeps about sightings beside the trees (shared with reopened stores'
/// callers through the counters' atomics).
#[derive(Debug)]
pub(crate) struct State {
    /// The outbox of own sightings.
    out: sled::Tree,
    /// Sightings in `sightings_out`.
    backlog: AtomicUsize,
    /// Keys in the ledger.
    ledger_keys: AtomicUsize,
    /// Sightings dropped from the outbox unsent: too old for any peer, or past the cap.
    dropped: AtomicU64,
    /// Where the incremental sweep goes on from.
    cursor: Mutex<Vec<u8>>,
}

impl State {
    pub(crate) fn open(db: &sled::Db, split: &sled::Tree) -> Result<Arc<State>, sled::Error> {
        let out = db.open_tree("sightings_out")?;
        Ok(Arc::new(State {
            backlog: AtomicUsize::new(out.len()),
            ledger_keys: AtomicUsize::new(split.len()),
            dropped: AtomicU64::new(0),
            cursor: Mutex::new(Vec::new()),
            out,
        }))
    }
}

/// One ledger entry: parcels of one sender key and category, by origin. Stored as JSON; an
/// entry of an older screenline (a bare list of times) reads as parcels seen here.
#[derive(Debug, Default, Serialize, Deserialize)]
struct Entry {
    /// Parcels seen here, ms since the epoch, oldest first.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    here: Vec<u64>,
    /// Parcels seen by peers: (ms since the epoch, sighting id without its prefix).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    peers: Vec<(u64, String)>,
}

impl Entry {
    fn decode(v: &[u8]) -> Entry {
        serde_json::from_slice::<Entry>(v)
            .or_else(|_| {
                serde_json::from_slice::<Vec<u64>>(v).map(|here| Entry {
                    here,
                    peers: vec![],
                })
            })
            .unwrap_or_default()
    }

    fn prune(&mut self, oldest: u64) {
        self.here.retain(|t| *t >= oldest);
        self.peers.retain(|(t, _)| *t >= oldest);
    }

    fn newest(&self) -> u64 {
        let h = self.here.iter().max().copied().unwrap_or(0);
        let p = self.peers.iter().map(|(t, _)| *t).max().unwrap_or(0);
        h.max(p)
    }

    fn is_empty(&self) -> bool {
        self.here.is_empty() && self.peers.is_empty()
    }
}

fn millis(t: SystemTime) -> u64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

fn ledger_key(identity: &str, category: Category) -> String {
    format!("{identity}/{}", category.key())
}

/// One own sighting waiting for the broker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueuedSighting {
    /// Its key in the outbox (what its PUBACK clears).
    pub key: Vec<u8>,
    /// The signed sighting, as published.
    pub payload: Vec<u8>,
}

/// What folding a group of peers' sightings did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Folded {
    /// Sightings now in the ledger.
    pub folded: usize,
    /// Sightings the ledger had already (a redelivery).
    pub duplicate: usize,
    /// Sightings of new senders refused because the ledger is full.
    pub ledger_full: usize,
}

/// The sightings' figures the console and `/metrics` show.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Figures {
    /// Own sightings waiting for the broker.
    pub backlog: usize,
    /// Sender keys and categories in the ledger.
    pub ledger_keys: usize,
    /// Own sightings dropped unsent (too old for any peer, or past [`OUTBOX_MAX`]).
    pub dropped: u64,
}

impl Store {
    /// The split-shipment ledger kept in this store, with the outbox of own sightings.
    pub fn split_ledger(&self) -> SledLedger {
        SledLedger {
            split: self.split.clone(),
            state: self.sightings.clone(),
            since_sweep: self.ledger_since_sweep.clone(),
        }
    }
}

/// The split-shipment ledger and the outbox of own sightings, on an open store (cheap to
/// make: sled's trees are shared handles).
pub struct SledLedger {
    split: sled::Tree,
    state: Arc<State>,
    since_sweep: Arc<std::sync::atomic::AtomicU32>,
}

impl SledLedger {
    /// Records a parcel screened here in the ledger (see [`SplitLedger::record`]) and, with
    /// `sighting` (its signed payload), queues it for the site's other appliances.
    pub fn record_here(
        &self,
        seen: &Seen,
        window: Duration,
        sighting: Option<Vec<u8>>,
    ) -> Result<SplitCount, StoreError> {
        let now = millis(seen.at);
        let oldest = now.saturating_sub(window.as_millis() as u64);
        let mut count = SplitCount::default();
        for (i, identity) in seen.identities.iter().enumerate() {
            let key = ledger_key(identity, seen.category);
            let old = self.split.get(&key)?;
            let mut e = old.as_deref().map(Entry::decode).unwrap_or_default();
            e.prune(oldest);
            if i == 0 {
                e.here.push(now);
                if e.here.len() > LEDGER_KEEP {
                    e.here.drain(..e.here.len() - LEDGER_KEEP);
                }
            }
            count.here += e.here.len();
            count.elsewhere += e.peers.len();
            if i == 0 || old.is_some() {
                self.put_entry(&key, &e, old.is_some())?;
            }
        }
        if let Some(payload) = sighting {
            let id = seen.parcel.as_bytes();
            let mut k = now.to_be_bytes().to_vec();
            k.extend_from_slice(id);
            let out = &self.state.out;
            if out.insert(k, payload)?.is_none() {
                self.state.backlog.fetch_add(1, Ordering::Relaxed);
            }
            while self.state.backlog.load(Ordering::Relaxed) > OUTBOX_MAX {
                if out.pop_min()?.is_none() {
                    break;
                }
                self.state.backlog.fetch_sub(1, Ordering::Relaxed);
                self.state.dropped.fetch_add(1, Ordering::Relaxed);
            }
        }
        self.sweep_step(oldest)?;
        Ok(count)
    }

    fn put_entry(&self, key: &str, e: &Entry, existed: bool) -> Result<(), StoreError> {
        if e.is_empty() {
            if existed && self.split.remove(key)?.is_some() {
                self.state.ledger_keys.fetch_sub(1, Ordering::Relaxed);
            }
            return Ok(());
        }
        if self.split.insert(key, serde_json::to_vec(e)?)?.is_none() {
            self.state.ledger_keys.fetch_add(1, Ordering::Relaxed);
        }
        Ok(())
    }

    /// Folds peers' verified sightings into the ledger, idempotently by sighting id; a
    /// sighting of a sender the ledger does not hold yet is refused once it holds
    /// `max_keys` senders.
    pub fn fold_sightings(
        &self,
        sightings: &[Verified],
        window: Duration,
        now: SystemTime,
        max_keys: usize,
    ) -> Result<Folded, StoreError> {
        let now = millis(now);
        let oldest = now.saturating_sub(window.as_millis() as u64);
        let mut out = Folded::default();
        for s in sightings {
            let key = ledger_key(&s.sender_key, s.category);
            let old = self.split.get(&key)?;
            if old.is_none() && self.state.ledger_keys.load(Ordering::Relaxed) >= max_keys {
                out.ledger_full += 1;
                continue;
            }
            let mut e = old.as_deref().map(Entry::decode).unwrap_or_default();
            e.prune(oldest);
            let id = s.sighting_id.trim_start_matches("sgt-");
            if e.peers.iter().any(|(_, i)| i == id) {
                out.duplicate += 1;
                continue;
            }
            let at = millis(s.at);
            if at < oldest {
                // Checked on arrival already; the window moved on while it waited.
                continue;
            }
            e.peers.push((at, id.to_owned()));
            e.peers.sort_unstable_by_key(|(t, _)| *t);
            if e.peers.len() > LEDGER_KEEP {
                e.peers.drain(..e.peers.len() - LEDGER_KEEP);
            }
            self.put_entry(&key, &e, old.is_some())?;
            out.folded += 1;
        }
        if !sightings.is_empty() {
            self.sweep_step(oldest)?;
        }
        Ok(out)
    }

    /// Every [`SWEEP_EVERY`] ledger records, looks at the next [`SWEEP_STEP`] ledger keys and
    /// drops those gone quiet, and drops own sightings older than the window from the outbox.
    fn sweep_step(&self, oldest: u64) -> Result<(), StoreError> {
        let since = self.since_sweep.fetch_add(1, Ordering::Relaxed) + 1;
        if since < SWEEP_EVERY {
            return Ok(());
        }
        self.since_sweep.store(0, Ordering::Relaxed);
        let mut cursor = self.state.cursor.lock().unwrap_or_else(|e| e.into_inner());
        let mut last = None;
        let mut seen = 0;
        for item in self.split.range(cursor.clone()..) {
            let (k, v) = item?;
            seen += 1;
            if Entry::decode(&v).newest() < oldest && self.split.remove(&k)?.is_some() {
                self.state.ledger_keys.fetch_sub(1, Ordering::Relaxed);
            }
            last = Some(k);
            if seen == SWEEP_STEP {
                break;
            }
        }
        *cursor = match last {
            Some(k) if seen == SWEEP_STEP => {
                let mut next = k.to_vec();
                next.push(0);
                next
            }
            _ => Vec::new(),
        };
        drop(cursor);
        let out = &self.state.out;
        while let Some((k, _)) = out.first()? {
            let at = k
                .get(..8)
                .and_then(|b| <[u8; 8]>::try_from(b).ok())
                .map_or(0, u64::from_be_bytes);
            if at >= oldest {
                break;
            }
            if out.remove(&k)?.is_some() {
                self.state.backlog.fetch_sub(1, Ordering::Relaxed);
                self.state.dropped.fetch_add(1, Ordering::Relaxed);
            }
        }
        Ok(())
    }

    /// Up to `max` own sightings waiting for the broker, oldest first, skipping keys for
    /// which `skip` is true.
    pub fn sightings_batch(
        &self,
        max: usize,
        skip: impl Fn(&[u8]) -> bool,
    ) -> Result<Vec<QueuedSighting>, StoreError> {
        super::outbox::batch(&self.state.out, max, skip, |k, v| {
            Some(QueuedSighting {
                key: k.to_vec(),
                payload: v.to_vec(),
            })
        })
    }

    /// The broker acknowledged the sighting under `key`: it leaves the outbox. Whether it
    /// was still there.
    pub fn ack_sighting(&self, key: &[u8]) -> Result<bool, StoreError> {
        let was = self.state.out.remove(key)?.is_some();
        if was {
            self.state.backlog.fetch_sub(1, Ordering::Relaxed);
        }
        Ok(was)
    }

    /// The sightings' figures (no tree is walked).
    pub fn figures(&self) -> Figures {
        Figures {
            backlog: self.state.backlog.load(Ordering::Relaxed),
            ledger_keys: self.state.ledger_keys.load(Ordering::Relaxed),
            dropped: self.state.dropped.load(Ordering::Relaxed),
        }
    }
}

/// Used directly (offline screening), the ledger records what is screened here and queues
/// no sighting.
impl SplitLedger for SledLedger {
    fn record(&mut self, seen: &Seen, window: Duration) -> SplitCount {
        match self.record_here(seen, window, None) {
            Ok(n) => n,
            Err(e) => {
                // Counted as the first parcel: a store fault never makes a parcel suspect.
                tracing::error!(error = %e, "split-shipment ledger not updated");
                SplitCount {
                    here: 1,
                    elsewhere: 0,
                }
            }
        }
    }
}

/// Signs the sightings of the parcels screened here: the site, this appliance and the keys.
#[derive(Debug, Clone)]
pub struct Signer {
    pub site_id: String,
    pub appliance_id: String,
    pub keys: screenline_core::sighting::SiteKeys,
}

#[cfg(test)]
mod tests {
    use super::*;
    use screenline_core::sighting::{Sighting, SiteKey, SiteKeys};

    fn seen(keys: &SiteKeys, at: SystemTime, parcel: &str) -> Seen {
        Seen {
            identities: keys.sender_keys("11010519491231002X"),
            category: Category::ApparelFootwear,
            at,
            line_id: "L1".into(),
            parcel: parcel.into(),
        }
    }

    fn verified(s: &Sighting) -> Verified {
        let keys = site_keys();
        let peers = vec![s.appliance_id.clone()];
        screenline_core::sighting::check(
            &s.appliance_id,
            &s.to_vec(),
            &screenline_core::sighting::Checks {
                site_id: &s.site_id,
                peers: &peers,
                keys: &keys,
                window: Duration::from_secs(3600),
                now: SystemTime::now(),
            },
        )
        .expect("verifies")
    }

    /// The one site key the tests sign and verify with.
    fn site_keys() -> SiteKeys {
        SiteKeys::new(SiteKey::new(vec![1; 32]).expect("key"), vec![])
    }

    #[test]
    fn peers_sightings_count_once_and_the_outbox_drains_on_ack() {
        let (dir, store) = crate::store::testing::fresh("sightings");
        let keys = site_keys();
        let w = Duration::from_secs(3600);
        let now = SystemTime::now();
        // Two parcels on a peer, one of them delivered twice.
        let a = Sighting::signed(&keys, "S1", "a2", &seen(&keys, now, "p1"));
        let b = Sighting::signed(&keys, "S1", "a2", &seen(&keys, now, "p2"));
        let f = store
            .split_ledger()
            .fold_sightings(&[verified(&a), verified(&b), verified(&a)], w, now, 1000)
            .expect("fold");
        assert_eq!((f.folded, f.duplicate), (2, 1));
        // Then one here: 1 here, 2 elsewhere; its sighting waits in the outbox.
        let mine = seen(&keys, now, "0001-L1-1");
        let payload = Sighting::signed(&keys, "S1", "a1", &mine).to_vec();
        let n = store
            .split_ledger()
            .record_here(&mine, w, Some(payload.clone()))
            .expect("record");
        assert_eq!((n.here, n.elsewhere), (1, 2));
        assert_eq!(store.split_ledger().figures().backlog, 1);
        let batch = store
            .split_ledger()
            .sightings_batch(10, |_| false)
            .expect("batch");
        assert_eq!(batch.len(), 1);
        assert_eq!(batch[0].payload, payload);
        assert!(store
            .split_ledger()
            .ack_sighting(&batch[0].key)
            .expect("ack"));
        assert!(!store
            .split_ledger()
            .ack_sighting(&batch[0].key)
            .expect("ack again"));
        assert_eq!(store.split_ledger().figures().backlog, 0);
        drop(store);
        // Across a reopen, a redelivery is still a duplicate.
        let store = Store::open(&dir).expect("reopen");
        let f = store
            .split_ledger()
            .fold_sightings(&[verified(&b)], w, now, 1000)
            .expect("fold");
        assert_eq!((f.folded, f.duplicate), (0, 1));
    }

    #[test]
    fn a_full_ledger_refuses_new_senders_from_peers_but_not_parcels_here() {
        let (_dir, store) = crate::store::testing::fresh("sightings-full");
        let w = Duration::from_secs(3600);
        let now = SystemTime::now();
        let flood: Vec<Verified> = (0..50)
            .map(|i| Verified {
                sighting_id: format!("sgt-{i:032x}"),
                appliance_id: "a2".into(),
                sender_key: format!("{i:064x}"),
                category: Category::Food,
                at: now,
            })
            .collect();
        let f = store
            .split_ledger()
            .fold_sightings(&flood, w, now, 20)
            .expect("fold");
        assert_eq!((f.folded, f.ledger_full), (20, 30));
        assert_eq!(store.split_ledger().figures().ledger_keys, 20);
        let keys = site_keys();
        let n = store
            .split_ledger()
            .record_here(&seen(&keys, now, "p"), w, None)
            .expect("record");
        assert_eq!(n.here, 1);
    }

    #[test]
    fn an_older_ledger_entry_reads_as_parcels_seen_here() {
        let e = Entry::decode(b"[1,2,3]");
        assert_eq!((e.here.len(), e.peers.len()), (3, 0));
    }

    #[test]
    fn the_sweep_forgets_senders_gone_quiet_and_sightings_too_old_to_count() {
        let (_dir, store) = crate::store::testing::fresh("sightings-sweep");
        let keys = site_keys();
        let w = Duration::from_secs(60);
        let t0 = SystemTime::now() - Duration::from_secs(3600);
        for i in 0..10 {
            let mut s = seen(&keys, t0, &format!("old-{i}"));
            s.identities = vec![format!("{i:064x}")];
            store
                .split_ledger()
                .record_here(&s, w, Some(b"{}".to_vec()))
                .expect("record");
        }
        assert_eq!(store.split_ledger().figures().ledger_keys, 10);
        let now = SystemTime::now();
        for i in 0..SWEEP_EVERY {
            store
                .split_ledger()
                .record_here(&seen(&keys, now, &format!("new-{i}")), w, None)
                .expect("record");
        }
        let f = store.split_ledger().figures();
        assert_eq!(f.ledger_keys, 1, "only the sender still active");
        assert_eq!((f.backlog, f.dropped), (0, 10));
    }
}
