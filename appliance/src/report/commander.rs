//! The regulator's commands, handled off the feed's event loop: the event loop hands each
//! message to [`Commander::run`] through a small bounded queue (a full queue refuses the
//! command `busy` at once) and publishes the answers it gets back. Verifying a large
//! message, claiming its nonce, applying it, auditing it: none of it holds up the
//! connection, its keep-alive or the outbox.

use super::commands::{self, Command, Refusal, Verified, Verifier};
use super::{EVIDENCE_SCAN, MAX_PACKET};
use crate::screen::Screener;
use crate::store::audit::AuditEntry;
use crate::store::owner::StoreHandle;
use crate::telemetry::{Counter, Link, Telemetry};
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};
use tokio::sync::mpsc;

/// Commands waiting for the worker.
pub const QUEUE: usize = 8;
/// Why a command found the queue full.
pub const BUSY: &str =
    "refused (busy): the appliance is still handling earlier commands; send it again later";
/// How often an unverified refusal of one kind reaches the audit log.
const SAMPLE_EVERY: Duration = Duration::from_secs(60);

/// What a command makes the feed publish.
#[derive(Debug, Default)]
pub struct Answer {
    /// Whether the command was signed by the regulator (its answer is never dropped).
    pub verified: bool,
    /// (topic, payload): the answer first, then any evidence.
    pub publish: Vec<(String, Vec<u8>)>,
}

/// The command worker.
pub struct Commander {
    pub root: String,
    pub verifier: Verifier,
    pub store: StoreHandle,
    pub screener: Arc<Screener>,
    pub telemetry: Arc<Telemetry>,
    /// Per refusal kind: when it was last written to the store, and how many since.
    sampled: HashMap<&'static str, (Instant, u64)>,
}

impl Commander {
    /// A worker applying verified commands to `screener` and keeping them in `store`.
    pub fn new(
        root: String,
        verifier: Verifier,
        store: StoreHandle,
        screener: Arc<Screener>,
        telemetry: Arc<Telemetry>,
    ) -> Commander {
        Commander {
            root,
            verifier,
            store,
            screener,
            telemetry,
            sampled: HashMap::new(),
        }
    }

    /// Handles commands until the queue closes; answers go to `answers`. `busy` counts the
    /// commands the event loop refused because the queue was full: they are sampled into the
    /// store like any unverified refusal. Refusals not yet written are written at the end.
    pub async fn run(
        mut self,
        mut queue: mpsc::Receiver<(String, Vec<u8>)>,
        answers: mpsc::Sender<Answer>,
        busy: Arc<AtomicU64>,
    ) {
        while let Some((name, raw)) = queue.recv().await {
            let n = busy.swap(0, Ordering::Relaxed);
            if n > 0 {
                self.sample("busy", n, BUSY).await;
            }
            let answer = self.command(name, raw).await;
            if !answer.publish.is_empty() && answers.send(answer).await.is_err() {
                break;
            }
        }
        let n = busy.swap(0, Ordering::Relaxed);
        self.sampled.entry("busy").or_insert((Instant::now(), 0)).1 += n;
        let left: Vec<(&'static str, u64)> = self
            .sampled
            .iter()
            .filter(|(_, (_, n))| *n > 0)
            .map(|(k, (_, n))| (*k, *n))
            .collect();
        for (key, n) in left {
            self.flush_sampled(key, n, "(no more)").await;
        }
    }

    /// Counts a command's outcome, in telemetry and durably for the statistics.
    async fn count(&self, counter: Counter) {
        self.telemetry.incr(counter.clone());
        let key = counter.key();
        if let Err(e) = self.store.count(counter).await {
            tracing::error!(error = %e, counter = %key, "not counted in the store");
        }
    }

    /// Verifies, applies, audits and answers one regulator command; returns what to publish
    /// (the answer, and the evidence for an accepted `evidence` command).
    ///
    /// A command whose signature does not verify is anyone's: its answer and its (sampled)
    /// audit entry carry only why it was refused and the length and SHA-256 of what came,
    /// never its text, so no input can make an answer too large to send or fill the disk.
    async fn command(&mut self, name: String, raw: Vec<u8>) -> Answer {
        let now = SystemTime::now();
        let verifier = self.verifier.clone();
        let topic = name.clone();
        // Parsing and verifying a message of several MB is CPU work: off the async workers.
        let checked = tokio::task::spawn_blocking(move || {
            let received = format!(
                "{} bytes, sha256 {}",
                raw.len(),
                hex::encode(<sha2::Sha256 as sha2::Digest>::digest(&raw))
            );
            let (claimed, verified) = verifier.verify(&raw, &topic, now);
            (claimed, verified, received)
        })
        .await;
        let Ok((claimed, verified, received)) = checked else {
            tracing::error!("verifying a command failed with an internal error");
            return Answer::default();
        };
        let answer_topic = format!("{}/cmd-result", self.root);
        if !claimed.signed {
            let why = verified.err().unwrap_or(Refusal::BadSignature);
            let message = format!("refused ({}): {why}; received {received}", why.key());
            self.refused_unverified(why.key(), 1, &message).await;
            return Answer {
                verified: false,
                publish: vec![(answer_topic, commands::result(&claimed, false, &message))],
            };
        }
        let outcome = match verified {
            Err(r) => Err(r),
            Ok(v) => {
                let forget = now.checked_sub(self.verifier.max_age).unwrap_or(now);
                let (nonce, issued_at) = (v.nonce.clone(), v.issued_at);
                match self
                    .store
                    .write(move |s| s.claim_nonce(&nonce, issued_at, forget))
                    .await
                {
                    Ok(true) => self.apply(v).await,
                    Ok(false) => Err(Refusal::Replay(v.nonce)),
                    Err(e) => Err(Refusal::Store(e.to_string())),
                }
            }
        };
        let mut publish = Vec::new();
        let (ok, message) = match outcome {
            Ok((message, extra)) => {
                self.count(Counter::CommandsAccepted).await;
                tracing::info!(command = %commands::audit_name(&name), nonce = ?claimed.nonce, "regulator command applied: {message}");
                publish.extend(extra);
                (true, message)
            }
            Err(r) => {
                self.count(Counter::CommandsRefused).await;
                self.telemetry.incr(Counter::CommandsRefusedBy(r.key()));
                tracing::warn!(command = %commands::audit_name(&name), nonce = ?claimed.nonce, why = r.key(), "regulator command refused: {r}");
                (false, format!("refused ({}): {r}", r.key()))
            }
        };
        let action = format!("cmd.{}", commands::audit_name(&name));
        let target = claimed.nonce.as_deref().unwrap_or("-");
        if let Err(e) = self
            .store
            .audit("regulator", &action, target, &message)
            .await
        {
            self.telemetry.incr(Counter::CommandAuditErrors);
            tracing::error!(error = %e, "regulator command not audited");
        }
        publish.insert(0, (answer_topic, commands::result(&claimed, ok, &message)));
        Answer {
            verified: true,
            publish,
        }
    }

    /// A command refused before its signature verified: counted at once in telemetry; in the
    /// store's counters and the audit log at most once per reason per minute, with how many
    /// came since (a flood of forged commands costs the disk nothing).
    async fn refused_unverified(&mut self, key: &'static str, n: u64, message: &str) {
        self.telemetry.add(Counter::CommandsRefused, n);
        self.telemetry.add(Counter::CommandsRefusedBy(key), n);
        self.sample(key, n, message).await;
    }

    /// Notes `n` unverified refusals of `key` for the store (see
    /// [`Commander::refused_unverified`]).
    async fn sample(&mut self, key: &'static str, n: u64, message: &str) {
        let now = Instant::now();
        let due = self
            .sampled
            .get(key)
            .is_none_or(|(last, _)| now.duration_since(*last) >= SAMPLE_EVERY);
        let entry = self.sampled.entry(key).or_insert((now, 0));
        entry.1 += n;
        if !due {
            tracing::debug!(why = key, "unverified command refused");
            return;
        }
        let n = std::mem::take(&mut entry.1);
        entry.0 = now;
        self.flush_sampled(key, n, message).await;
    }

    /// Writes `n` refusals of `key` to the store: the counter, and one audit entry.
    async fn flush_sampled(&self, key: &str, n: u64, message: &str) {
        tracing::warn!(
            why = key,
            count = n,
            "unverified command(s) refused: {message}"
        );
        let detail = format!("{n} refused in the last minute or less; the latest: {message}");
        let action = format!("cmd.refused.{key}");
        let result = self
            .store
            .write(move |s| {
                s.count_by(&Counter::CommandsRefused, n)?;
                s.audit(&AuditEntry::now("unverified", &action, "-", &detail))
            })
            .await;
        if let Err(e) = result {
            self.telemetry.incr(Counter::CommandAuditErrors);
            tracing::error!(error = %e, "refused commands not audited");
        }
    }

    /// Acts on a verified command whose nonce is claimed: the message for the answer and
    /// anything else to publish.
    async fn apply(&self, v: Verified) -> Result<(String, Vec<(String, Vec<u8>)>), Refusal> {
        match v.command {
            Command::Watchlist => {
                let file = commands::watchlist_body(&v.body)?;
                let hashed = crate::screen::rules::Watchlist::hash(&file, self.store.hasher());
                let keep = hashed.clone();
                self.store
                    .write(move |s| s.save_watchlist(&keep))
                    .await
                    .map_err(|e| Refusal::Store(e.to_string()))?;
                // The list kept and the list applied are one: what a restart re-applies.
                let list = crate::screen::rules::Watchlist::from_hashes(&hashed);
                let (version, entries) = (list.version.clone(), list.len());
                let old = self.screener.set_watchlist(list);
                self.telemetry.link(
                    Link::Watchlist,
                    true,
                    format!("version {version} ({entries} entries)"),
                );
                Ok((
                    format!("watch-list version {version} applied ({entries} entries; was version {old:?})"),
                    Vec::new(),
                ))
            }
            Command::Thresholds => {
                let t = commands::thresholds_body(&v.body)?;
                let keyed = t.iter().map(|(c, x)| (c.key().to_owned(), *x)).collect();
                self.store
                    .write(move |s| s.save_thresholds(&keyed))
                    .await
                    .map_err(|e| Refusal::Store(e.to_string()))?;
                self.screener.set_thresholds(&t);
                let list: Vec<String> = t.iter().map(|(c, x)| format!("{c}={x}")).collect();
                Ok((format!("thresholds set: {}", list.join(", ")), Vec::new()))
            }
            Command::Evidence => {
                let report_id = commands::evidence_body(&v.body)?;
                let missing = || Refusal::NoEvidence(report_id.clone());
                let id = report_id.clone();
                let record = self
                    .store
                    .read(move |s| match s.record_for_report(&id)? {
                        Some(r) => Ok(Some(r)),
                        // Reports sent before the index existed: look through the latest
                        // records.
                        None => Ok(s
                            .latest_records(1, EVIDENCE_SCAN, |r| {
                                r.report_id.as_deref() == Some(id.as_str())
                            })?
                            .pop()),
                    })
                    .await
                    .map_err(|e| Refusal::Store(e.to_string()))?
                    .ok_or_else(missing)?;
                let path = record.image.clone().ok_or_else(missing)?;
                let (image, low) =
                    tokio::task::spawn_blocking(move || commands::read_evidence(&path))
                        .await
                        .map_err(|e| Refusal::Store(e.to_string()))?
                        .ok_or_else(missing)?;
                let size = image.bytes.len() + low.as_ref().map_or(0, |l| l.bytes.len());
                let topic = format!("{}/evidence/{report_id}", self.root);
                let messages = commands::evidence_messages(
                    &report_id,
                    &record.record_id,
                    &image,
                    low.as_ref(),
                    MAX_PACKET,
                );
                Ok((
                    format!(
                        "image of {report_id} ({size} bytes) published on evidence/{report_id} in {} message(s)",
                        messages.len()
                    ),
                    messages.into_iter().map(|m| (topic.clone(), m)).collect(),
                ))
            }
        }
    }
}
