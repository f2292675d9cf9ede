//! The one thread that owns the database.
//!
//! sled 0.34.7 deadlocks when `flush_async` runs beside a transaction on another thread
//! (sled #1308, #1412; `../shared/PITFALLS.md`): failed-login audit entries each flushing
//! while the sink committed on a tokio worker froze the whole appliance. So the running
//! appliance never calls sled from anywhere but here. Every stage holds a [`StoreHandle`] and
//! sends it jobs over a bounded channel; the `store` thread runs them one after another and
//! answers each through a oneshot reply.
//!
//! # Durability
//!
//! The thread takes every job already queued (up to [`JOBS_PER_ROUND`]), runs them, and if
//! any of them wrote, calls `flush()` **once** for all of them — a group commit across the
//! sink's records, audit entries, reviews, acks. sled's own background flusher is off
//! (`flush_every_ms(None)`): nothing flushes but this thread. A [`StoreHandle::write`]
//! answers only after that flush returned, so when it returns `Ok` what it wrote survives a
//! `kill -9`. A [`StoreHandle::update`] answers before the flush: for writes whose loss in a
//! crash costs nothing but a repeat (an outbox ack: the report is sent again; the split
//! ledger between two flushes).
//!
//! # Faults
//!
//! A write job that fails, or whose flush fails (a full disk, an I/O error), leaves sled's
//! in-memory state ahead of the disk and sled may refuse everything after an I/O error. The
//! thread then reopens the database before the next job: what it finds is the last durable
//! state, which is exactly what the callers were told was stored. Commits are idempotent by
//! record key (`Store::commit_counted`), so a group that was written after all, by a later
//! flush, is not counted twice when the sink retries it.

use super::sightings::Signer;
use super::{KeyedHasher, Store, StoreError};
use crate::supervise::Stage;
use screenline_core::rules::{SplitCount, SplitLedger};
use screenline_core::sighting::Seen;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};

/// Jobs waiting for the store thread.
const QUEUE: usize = 1024;
/// Most jobs run before one flush.
pub const JOBS_PER_ROUND: usize = 256;

type Finish = Box<dyn FnOnce(Option<&StoreError>) + Send>;

/// A job's body: run on the store, or told why there is none (`Err`); returns what to do
/// once the round's flush is done, if it waits for it.
type Run = Box<dyn FnOnce(Result<&Store, &StoreError>) -> Option<Finish> + Send>;

struct Job {
    writes: bool,
    run: Run,
}

/// A cheap, cloneable way to the store: every call is a job on the store thread.
#[derive(Clone)]
pub struct StoreHandle {
    tx: mpsc::Sender<Job>,
    hasher: KeyedHasher,
    images: PathBuf,
    backlog: Arc<AtomicUsize>,
}

impl std::fmt::Debug for StoreHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoreHandle").finish_non_exhaustive()
    }
}

impl StoreHandle {
    /// A handle on an open store, and the store thread's body to run (on a thread of its
    /// own: `StageSet::spawn_thread`). The thread ends when every handle is gone, after a
    /// final flush.
    pub fn new(
        store: Store,
        data_dir: &Path,
        stage: Stage,
    ) -> (StoreHandle, impl FnOnce() + Send + 'static) {
        let (tx, rx) = mpsc::channel(QUEUE);
        let handle = StoreHandle {
            tx,
            hasher: store.hasher().clone(),
            images: store.images_dir().to_owned(),
            backlog: store.backlog.clone(),
        };
        let data_dir = data_dir.to_owned();
        let backlog = handle.backlog.clone();
        (handle, move || owner(store, data_dir, backlog, rx, stage))
    }

    /// Starts the store thread on a thread of its own, outside any supervision: for
    /// offline commands, tests and benches.
    pub fn start(store: Store, data_dir: &Path) -> std::io::Result<StoreHandle> {
        let stages = Arc::new(crate::supervise::Stages::default());
        let (handle, owner) = StoreHandle::new(store, data_dir, stages.stage("store"));
        std::thread::Builder::new()
            .name("store".into())
            .spawn(owner)?;
        Ok(handle)
    }

    /// The store's keyed hasher (no job needed: the key never changes).
    pub fn hasher(&self) -> &KeyedHasher {
        &self.hasher
    }

    /// The folder kept images go to.
    pub fn images_dir(&self) -> &Path {
        &self.images
    }

    /// Reports waiting for the broker (kept beside the thread: no job needed).
    pub fn outbox_len(&self) -> usize {
        self.backlog.load(Ordering::Relaxed)
    }

    async fn send(&self, job: Job) -> Result<(), StoreError> {
        self.tx.send(job).await.map_err(|_| StoreError::Gone)
    }

    /// Runs `f` on the store thread and returns what it read.
    pub async fn read<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Store) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        self.ask(answered_at_once(false, f)).await
    }

    /// Runs `f` on the store thread and answers once what it wrote is flushed: durable.
    pub async fn write<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Store) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        self.ask(durable(f)).await
    }

    /// Runs `f` on the store thread and answers before the flush that follows it (module
    /// docs: for writes a crash may undo at no cost).
    pub async fn update<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Store) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        self.ask(answered_at_once(true, f)).await
    }

    /// Sends a job to the store thread and waits for its answer.
    async fn ask<T>(
        &self,
        (job, rx): (Job, oneshot::Receiver<Result<T, StoreError>>),
    ) -> Result<T, StoreError> {
        self.send(job).await?;
        rx.await.map_err(|_| StoreError::Gone)?
    }

    /// [`StoreHandle::update`] from a thread outside the async runtime (screening).
    pub fn update_blocking<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Store) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        let (job, rx) = answered_at_once(true, f);
        self.tx.blocking_send(job).map_err(|_| StoreError::Gone)?;
        rx.blocking_recv().map_err(|_| StoreError::Gone)?
    }

    /// Appends an audit entry, durably.
    pub async fn audit(
        &self,
        actor: &str,
        action: &str,
        target: &str,
        detail: &str,
    ) -> Result<(), StoreError> {
        let entry = super::audit::AuditEntry::now(actor, action, target, detail);
        self.write(move |s| s.audit(&entry)).await
    }

    /// Adds one to a kept counter, durably.
    pub async fn count(&self, counter: crate::telemetry::Counter) -> Result<(), StoreError> {
        self.write(move |s| s.count(&counter)).await
    }

    /// The split-shipment ledger, kept in the store and updated through this thread; with
    /// `signer`, every parcel recorded also queues its sighting for the site's other
    /// appliances.
    pub fn split_ledger(&self, signer: Option<Arc<Signer>>) -> OwnedLedger {
        OwnedLedger::new(self.clone(), signer)
    }
}

fn answered_at_once<T: Send + 'static>(
    writes: bool,
    f: impl FnOnce(&Store) -> Result<T, StoreError> + Send + 'static,
) -> (Job, oneshot::Receiver<Result<T, StoreError>>) {
    let (tx, rx) = oneshot::channel();
    let job = Job {
        writes,
        run: Box::new(move |s| {
            let _ = tx.send(s.map_err(unavailable).and_then(f));
            None
        }),
    };
    (job, rx)
}

fn unavailable(e: &StoreError) -> StoreError {
    StoreError::Unavailable(e.to_string())
}

fn durable<T: Send + 'static>(
    f: impl FnOnce(&Store) -> Result<T, StoreError> + Send + 'static,
) -> (Job, oneshot::Receiver<Result<T, StoreError>>) {
    let (tx, rx) = oneshot::channel();
    let job = Job {
        writes: true,
        run: Box::new(move |s| {
            let result = s.map_err(unavailable).and_then(f);
            Some(Box::new(move |flushed: Option<&StoreError>| {
                let _ = tx.send(match (result, flushed) {
                    (Ok(_), Some(e)) => Err(StoreError::Flush(e.to_string())),
                    (r, _) => r,
                });
            }) as Finish)
        }),
    };
    (job, rx)
}

/// The store thread's loop (module docs).
fn owner(
    store: Store,
    data_dir: PathBuf,
    backlog: Arc<AtomicUsize>,
    mut rx: mpsc::Receiver<Job>,
    stage: Stage,
) {
    let mut store = Some(store);
    // Set when a write failed: sled's memory may be ahead of the disk.
    let mut suspect = false;
    while let Some(first) = rx.blocking_recv() {
        let mut jobs = vec![first];
        while jobs.len() < JOBS_PER_ROUND {
            match rx.try_recv() {
                Ok(j) => jobs.push(j),
                Err(_) => break,
            }
        }
        let _working = stage.work();
        crate::supervise::Faults::strike_blocking(stage.name());
        if suspect || store.is_none() {
            // Drop the old handle first: sled holds a lock on the folder while it lives.
            store = None;
            match Store::open(&data_dir) {
                Ok(mut s) => {
                    tracing::warn!("the store was reopened after a failed write");
                    s.adopt_backlog(backlog.clone());
                    store = Some(s);
                    suspect = false;
                }
                Err(e) => {
                    tracing::error!(error = %e, "the store cannot be reopened");
                }
            }
        }
        let Some(db) = store.as_ref() else {
            let why = StoreError::Unavailable(
                "the store could not be reopened after a failed write".into(),
            );
            for job in jobs {
                if let Some(finish) = (job.run)(Err(&why)) {
                    finish(Some(&why));
                }
            }
            continue;
        };
        let mut wrote = false;
        let mut finishes = Vec::new();
        for job in jobs {
            wrote |= job.writes;
            let run = job.run;
            match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| run(Ok(db)))) {
                Ok(Some(finish)) => finishes.push(finish),
                Ok(None) => {}
                Err(_) => {
                    // The job's reply went with it: its caller sees `StoreError::Gone`.
                    tracing::error!("a store job panicked");
                    suspect = true;
                }
            }
        }
        let flushed = if wrote {
            db.flush_blocking().err()
        } else {
            None
        };
        if let Some(e) = &flushed {
            tracing::error!(error = %e, "store flush failed");
            suspect = true;
        }
        for finish in finishes {
            finish(flushed.as_ref());
        }
    }
    if let Some(db) = store {
        if let Err(e) = db.flush_blocking() {
            tracing::error!(error = %e, "final flush failed");
        }
    }
}
/// The ledger as the line uses it: every record a job on the store thread, which also
/// queues the parcel's signed sighting when the site shares them.
#[derive(Clone)]
pub struct OwnedLedger {
    store: StoreHandle,
    signer: Option<Arc<Signer>>,
}

impl OwnedLedger {
    /// The ledger through `store`; with `signer`, each parcel's sighting is queued.
    pub fn new(store: StoreHandle, signer: Option<Arc<Signer>>) -> OwnedLedger {
        OwnedLedger { store, signer }
    }
}

impl SplitLedger for OwnedLedger {
    fn record(&mut self, seen: &Seen, window: Duration) -> SplitCount {
        let sighting = self.signer.as_ref().map(|s| {
            screenline_core::sighting::Sighting::signed(&s.keys, &s.site_id, &s.appliance_id, seen)
                .to_vec()
        });
        let seen = seen.clone();
        match self
            .store
            .update_blocking(move |s| s.split_ledger().record_here(&seen, window, sighting))
        {
            Ok(n) => n,
            Err(e) => {
                tracing::error!(error = %e, "split-shipment ledger unavailable");
                SplitCount {
                    here: 1,
                    elsewhere: 0,
                }
            }
        }
    }
}
