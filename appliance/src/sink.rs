//! Decide, store, divert: the stage after screening.
//!
//! # The contract
//!
//! A decision reaches the line controller **only after** the parcel's record — and a flagged
//! parcel's report, in the outbox — is durable in the store (`store/owner.rs`). So:
//!
//! - If archiving the image or the group commit fails (a full disk, the images folder gone),
//!   **no decision is sent**: the controller diverts the parcel to manual inspection when it
//!   reaches the decision point, as it does for any late decision. The parcel is marked as
//!   what happened to it — reason `store_failed`, and a `clear` becomes `manual` (a `flag`
//!   stays `flag`: it was going to be diverted anyway) — and is **held** in memory, with its
//!   screening result and image bytes, to be stored by a retry every [`RETRY_EVERY`]. The
//!   `store` link goes down with the error until a retry succeeds.
//! - Held parcels are bounded ([`HELD_MAX`] parcels, [`HELD_BYTES`] of image data). At the
//!   bound the sink takes no new parcel: screening backs up, and the controllers divert
//!   every parcel for want of a decision, rather than the appliance forgetting one.
//! - A retried parcel is stored as what happened (diverted for the store failure), a
//!   flagged one with its report, which the feed then delivers. Its counters go into the
//!   same transaction as its record, so the statistics agree with the store.
//! - A crash while parcels are held loses them (they live in memory): those parcels were
//!   diverted to manual inspection, and the crash restarts the appliance; the console's
//!   `store` alarm and the `sink.held` gauge showed them waiting.

use crate::domain::{Decision, Reason, ReasonCode};
use crate::line::waybill::{normalise_id, normalise_phone};
use crate::line::xray::XrayPolicy;
use crate::record::{Record, StoredSender};
use crate::report::payload;
use crate::screen::Screened;
use crate::store::owner::StoreHandle;
use crate::store::{images, Commit};
use crate::supervise::{Faults, Stage};
use crate::telemetry::{Counter, Gauge, LineCounter, Link, ParcelSummary, Telemetry};
use screenline_protocol::ToController;
use std::collections::{HashMap, VecDeque};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::sync::{mpsc, Notify};

/// Most parcels committed in one group (one transaction, one flush).
const GROUP_MAX: usize = 64;
/// Most parcels held for a retry after a store failure.
pub const HELD_MAX: usize = 512;
/// Most image bytes held for a retry.
pub const HELD_BYTES: usize = 256 << 20;
/// How often held parcels are tried again.
pub const RETRY_EVERY: Duration = Duration::from_secs(1);

/// The decide-and-store stage.
pub struct Sink {
    /// Each line's controller queue.
    pub controllers: HashMap<String, mpsc::Sender<ToController>>,
    /// Each line's decision deadline (the controller's decision point).
    pub deadlines: HashMap<String, Duration>,
    /// Each line's X-ray file policy.
    pub xray: HashMap<String, XrayPolicy>,
    pub store: StoreHandle,
    /// Notified when reports were queued.
    pub wake: Arc<Notify>,
    pub telemetry: Arc<Telemetry>,
    pub site_id: String,
    pub appliance_id: String,
    pub stage: Stage,
    /// The share of cleared parcels drawn for re-review (`console.queue.rereview_share`).
    pub rereview_share: f64,
}

/// A screened parcel on its way into the store.
struct Pending {
    s: Screened,
    /// Where its image was archived, once that has succeeded.
    archived: Option<Option<PathBuf>>,
    /// Whether its decision may still go to the controller (first attempt only).
    first: bool,
    /// Drawn for re-review (if it stays cleared): its scan is kept and it joins the queue.
    rereview: bool,
}

impl Pending {
    fn image_bytes(&self) -> usize {
        self.s.evidence.as_ref().map_or(0, |e| {
            e.image.bytes.len() + e.low_energy.as_ref().map_or(0, |l| l.bytes.len())
        })
    }
}

impl Sink {
    /// Runs until the screened channel closes; then tries once more to store what is held.
    pub async fn run(mut self, mut screened: mpsc::Receiver<Screened>) {
        let mut held: VecDeque<Pending> = VecDeque::new();
        let mut retry = tokio::time::interval(RETRY_EVERY);
        retry.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let held_bytes: usize = held.iter().map(Pending::image_bytes).sum();
            let room = held.len() < HELD_MAX && held_bytes < HELD_BYTES;
            self.telemetry.set(Gauge::SinkHeld, held.len() as u64);
            tokio::select! {
                got = screened.recv(), if room => {
                    let Some(first) = got else { break };
                    let mut group = vec![first];
                    while group.len() < GROUP_MAX {
                        match screened.try_recv() {
                            Ok(s) => group.push(s),
                            Err(_) => break,
                        }
                    }
                    let group = group
                        .into_iter()
                        .map(|s| Pending {
                            s: self.mark_late(s),
                            archived: None,
                            first: true,
                            rereview: drawn(self.rereview_share, rand::random()),
                        })
                        .collect();
                    self.store_group(group, &mut held).await;
                }
                _ = retry.tick(), if !held.is_empty() => {
                    let n = held.len().min(GROUP_MAX);
                    let group = held.drain(..n).collect();
                    self.store_group(group, &mut held).await;
                }
            }
        }
        if !held.is_empty() {
            let group = held.drain(..).collect();
            self.store_group(group, &mut held).await;
        }
        if !held.is_empty() {
            self.telemetry
                .add(Counter::SinkLostAtStop, held.len() as u64);
            tracing::error!(
                parcels = held.len(),
                "stopping with parcels not stored (the store still fails); they were diverted to manual inspection"
            );
        }
    }

    /// Past the decision point the controller has diverted the parcel already: say so, and
    /// never record as cleared a parcel that went to the inspection lane.
    fn mark_late(&self, mut s: Screened) -> Screened {
        let age = SystemTime::now()
            .duration_since(s.parcel.entered_at)
            .unwrap_or_default();
        let deadline = self.deadlines.get(&s.parcel.line_id);
        if let Some(late_by) = deadline.and_then(|d| age.checked_sub(*d)) {
            self.telemetry.incr(Counter::DecisionsLate);
            s.reasons.push(crate::screen::rules::decision_late(late_by));
            if s.decision == Decision::Clear {
                s.decision = Decision::Manual;
            }
        }
        s
    }

    /// Archives and commits a group; sends the decisions of what was stored (first attempts
    /// only); holds what was not.
    async fn store_group(&mut self, group: Vec<Pending>, held: &mut VecDeque<Pending>) {
        let _working = self.stage.work();
        Faults::strike("sink").await;
        let mut group = group;
        let mut commits = Vec::with_capacity(group.len());
        let mut failed = Vec::new();
        let mut error = None;
        for (i, p) in group.iter_mut().enumerate() {
            match self.prepare(p) {
                Ok(c) => commits.push((i, c)),
                Err(e) => {
                    tracing::error!(line = %p.s.parcel.line_id, seq = p.s.parcel.seq, error = %e, "parcel not stored");
                    error.get_or_insert(e);
                    failed.push(i);
                }
            }
            // Archiving is blocking file work: let the line tasks run between two parcels.
            tokio::task::yield_now().await;
        }
        let batch: Vec<Commit> = commits.iter().map(|(_, c)| c.clone()).collect();
        let stored = if batch.is_empty() {
            true
        } else {
            match self.store.write(move |s| s.commit_counted(&batch)).await {
                Ok(()) => {
                    self.telemetry.incr(Counter::StoreGroups);
                    self.telemetry
                        .add(Counter::StoreCommitted, commits.len() as u64);
                    true
                }
                Err(e) => {
                    tracing::error!(parcels = commits.len(), error = %e, "group of records not stored");
                    error.get_or_insert_with(|| anyhow::Error::new(e));
                    false
                }
            }
        };
        if !stored {
            failed.extend(commits.iter().map(|(i, _)| *i));
            commits.clear();
        }
        failed.sort_unstable();
        for (i, c) in &commits {
            let p = &group[*i];
            if p.first {
                self.send_decision(&p.s);
            }
            for counter in &c.counts {
                self.telemetry.incr(counter.clone());
            }
            self.announce(&p.s, &c.key);
        }
        if !commits.is_empty() {
            self.wake.notify_one();
        }
        if let Some(e) = error {
            self.telemetry
                .add(Counter::StoreErrors, failed.len() as u64);
            self.telemetry.link(
                Link::Store,
                false,
                format!(
                    "records cannot be stored: {e:#}; {} parcel(s) held for a retry, diverted to manual inspection meanwhile",
                    held.len() + failed.len()
                ),
            );
        } else if self
            .telemetry
            .link_state(&Link::Store)
            .is_some_and(|l| !l.up && l.detail.starts_with("records cannot be stored"))
            && held.is_empty()
        {
            tracing::info!("the store takes records again");
            self.telemetry.link(
                Link::Store,
                true,
                format!("schema {}", crate::store::SCHEMA_VERSION),
            );
        }
        // Held parcels go back in front, in order: the oldest is retried first.
        let mut failed_parcels: Vec<Pending> = Vec::with_capacity(failed.len());
        for (i, mut p) in group.into_iter().enumerate() {
            if failed.binary_search(&i).is_ok() {
                if p.first {
                    self.telemetry.incr(Counter::SinkStoreFailed);
                    mark_store_failed(&mut p.s);
                    p.first = false;
                }
                failed_parcels.push(p);
            }
        }
        for p in failed_parcels.into_iter().rev() {
            held.push_front(p);
        }
    }

    fn send_decision(&self, s: &Screened) {
        let line = &s.parcel.line_id;
        // A parcel without an epoch entered before the controller had one: the controller
        // diverted it already, and no decision could name it.
        let decision = s.parcel.epoch.map(|epoch| ToController::Decision {
            epoch,
            seq: s.parcel.seq,
            verdict: s.decision.verdict(),
        });
        if let (Some(tx), Some(decision)) = (self.controllers.get(line), decision) {
            if tx.try_send(decision).is_err() {
                self.telemetry.incr(Counter::SinkDecisionsNotSent);
                tracing::warn!(line = %line, seq = s.parcel.seq, "controller queue full; the controller will divert fail-safe");
            }
        }
        if let Some(scan) = &s.parcel.scan {
            self.telemetry
                .observe_decision_latency(scan.completed.elapsed());
        }
    }

    /// Archives a parcel's image (once) and builds its record (and a flagged parcel's
    /// report).
    fn prepare(&self, p: &mut Pending) -> anyhow::Result<Commit> {
        let s = &p.s;
        let record_id = record_id(s);
        if p.archived.is_none() {
            let image = match (&s.parcel.scan, self.xray.get(&s.parcel.line_id)) {
                (Some(scan), Some(policy)) => {
                    let loaded = s.evidence.as_ref().ok_or_else(|| {
                        s.reasons
                            .iter()
                            .find(|r| r.code == ReasonCode::ImageUnreadable)
                            .map_or("unknown", |r| r.en.as_str())
                    });
                    // Archived first, from the bytes screening read; only then does the
                    // scan leave the drop folder. A flagged or manual parcel's scan is
                    // evidence that an operator and the regulator will read, and a cleared
                    // one drawn for re-review waits for an operator: they are kept whatever
                    // the line's `xray_after` says.
                    let kept = match loaded {
                        Ok(evidence) if policy.keeps_images() || waits_for_operator(p) => {
                            let first = images::archive(
                                self.store.images_dir(),
                                &record_id,
                                evidence,
                                &XrayPolicy::extensions(scan),
                            )?;
                            self.telemetry
                                .incr_line(&s.parcel.line_id, LineCounter::XrayArchived);
                            Some(first)
                        }
                        _ => None,
                    };
                    policy.after_screening(
                        &s.parcel.line_id,
                        scan,
                        loaded,
                        kept.is_some(),
                        &self.telemetry,
                    )?;
                    kept
                }
                _ => None,
            };
            p.archived = Some(image);
        }
        let image_path = p.archived.clone().flatten();
        let mut commit = build_commit(
            s,
            record_id,
            image_path,
            &self.store,
            &self.site_id,
            &self.appliance_id,
        )?;
        if p.rereview && s.decision == Decision::Clear {
            commit.record.rereview = true;
            commit.counts.push(Counter::RereviewsDrawn);
        }
        Ok(commit)
    }

    /// Shows a stored parcel on the console.
    fn announce(&self, s: &Screened, record_id: &str) {
        let wb = s.parcel.waybill.as_ref();
        let top = s.scores.as_ref().and_then(|x| x.top());
        self.telemetry.push_parcel(ParcelSummary {
            record_id: record_id.to_owned(),
            line_id: s.parcel.line_id.clone(),
            seq: s.parcel.seq,
            waybill: wb.map(|w| w.waybill.to_string()),
            decision: s.decision,
            reasons: s.reasons.clone(),
            category: top.map(|(c, _)| c.key().to_owned()),
            counterfeit: s.scores.as_ref().map(|x| x.counterfeit),
            sender: wb.and_then(|w| w.sender.as_ref()).map(|snd| snd.masked()),
            decided_at: SystemTime::now(),
            outcome: None,
        });
    }
}

/// Whether a parcel drawn with `draw` (uniform in 0..1) is re-reviewed at `share`.
fn drawn(share: f64, draw: f64) -> bool {
    draw < share
}

/// Whether an operator will judge the parcel: flagged, manual, or cleared and drawn for
/// re-review.
fn waits_for_operator(p: &Pending) -> bool {
    p.s.decision != Decision::Clear || p.rereview
}

/// A parcel that could not be stored when it was decided: its decision was not sent, so
/// the controller diverted it.
fn mark_store_failed(s: &mut Screened) {
    s.reasons.push(Reason::new(
        ReasonCode::StoreFailed,
        "记录无法保存，未发出放行指令，包裹已由分拣控制器转人工".to_owned(),
        "the record could not be stored, so no pass was sent; the line controller sent the parcel to manual inspection".to_owned(),
    ));
    if s.decision == Decision::Clear {
        s.decision = Decision::Manual;
    }
}

fn entered_ms(s: &Screened) -> u64 {
    s.parcel
        .entered_at
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// A record's key: when the parcel entered, its line and sequence number (time first, so
/// that keys sort by age for retention).
fn record_id(s: &Screened) -> String {
    format!(
        "{:013}-{}-{}",
        entered_ms(s),
        s.parcel.line_id,
        s.parcel.seq
    )
}

/// The counters a decided parcel adds to: the console's and the regulator's statistics
/// (`report/stats.rs`), kept in the store with the parcel's record.
fn decided_counters(s: &Screened) -> Vec<Counter> {
    let mut counters = vec![Counter::ParcelsDecided, Counter::Decided(s.decision)];
    counters.extend(s.reasons.iter().map(|r| Counter::Reason(r.code)));
    if s.decision == Decision::Flag {
        counters.extend(s.reasons.iter().map(|r| Counter::FlaggedReason(r.code)));
        if let Some((c, _)) = s.scores.as_ref().and_then(|x| x.top()) {
            counters.push(Counter::FlaggedCategory(c));
        }
    }
    counters
}

/// The record (and a flagged parcel's report) of a screened parcel.
fn build_commit(
    s: &Screened,
    record_id: String,
    image_path: Option<PathBuf>,
    store: &StoreHandle,
    site_id: &str,
    appliance_id: &str,
) -> anyhow::Result<Commit> {
    let wb = s.parcel.waybill.as_ref();
    // Real-name data is kept in full only where the regulator may need it; for cleared
    // parcels, only keyed hashes (what split-shipment detection matches on).
    let keep_identity = s.decision != Decision::Clear;
    let sender = wb.and_then(|w| w.sender.as_ref()).map(|snd| {
        if keep_identity {
            StoredSender::Full(snd.clone())
        } else {
            // Normalised as the watch-list and the split-shipment ledger hash them.
            StoredSender::Keys {
                id_key: store.hasher().hash(&normalise_id(&snd.id_number)),
                phone_key: store.hasher().hash(&normalise_phone(&snd.phone)),
            }
        }
    });
    let report = (s.decision == Decision::Flag).then(|| {
        let report_id = payload::report_id(
            site_id,
            &s.parcel.line_id,
            wb.map(|w| w.waybill.as_str()),
            entered_ms(s),
            s.parcel.scan.as_ref().map_or("", |x| x.scan_id.as_str()),
        );
        let body = payload::flagged_report(s, &report_id, site_id, appliance_id);
        (report_id, "reports/flagged".to_owned(), body.to_vec())
    });
    let record = Record {
        record_id: record_id.clone(),
        line_id: s.parcel.line_id.clone(),
        seq: s.parcel.seq,
        entered_at: s.parcel.entered_at,
        screened_at: s.screened_at,
        waybill: wb.map(|w| w.waybill.clone()),
        declared: wb.and_then(|w| w.declared.clone()),
        sender,
        recipient: wb
            .and_then(|w| w.recipient.clone())
            .filter(|_| keep_identity),
        decision: s.decision,
        reasons: s.reasons.clone(),
        scores: s.scores.clone(),
        model: Some(s.model.clone()),
        image: image_path,
        image_sha256: s.evidence.as_ref().map(|e| e.image.sha256.clone()),
        low_energy_sha256: s
            .evidence
            .as_ref()
            .and_then(|e| e.low_energy.as_ref())
            .map(|f| f.sha256.clone()),
        report_id: report.as_ref().map(|r| r.0.clone()),
        image_evicted: None,
        slimmed: false,
        // Drawn for re-review or not: the caller says (`Sink::prepare`).
        rereview: false,
    };
    Ok(Commit {
        key: record_id,
        record,
        report,
        waybill: wb.map(|w| w.waybill.to_string()),
        counts: decided_counters(s),
    })
}
