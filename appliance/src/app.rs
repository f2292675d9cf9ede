//! The appliance assembled: sources → join → screen → decide/divert/store → report, with the
//! console beside it. Stages are tasks (screening a thread) joined by bounded channels, and
//! every task listens to one shutdown token.

use crate::config::Config;
use crate::domain::{mask, Decision};
use crate::report::{payload, Feed};
use crate::screen::rules::RuleSet;
use crate::screen::{self, model, Screened};
use crate::store::Store;
use crate::telemetry::{ParcelSummary, Telemetry};
use anyhow::Context;
use screenline_protocol::ToController;
use serde_json::json;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::sync::{mpsc, Notify};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

/// Parcels waiting for screening, across all lines.
const SCREEN_QUEUE: usize = 64;

/// A running appliance.
pub struct Appliance {
    /// What it knows about itself.
    pub telemetry: Arc<Telemetry>,
    /// Where the console listens.
    pub console_addr: std::net::SocketAddr,
    store: Arc<Store>,
    tasks: JoinSet<()>,
    feed: tokio::task::JoinHandle<()>,
    screening: Option<std::thread::JoinHandle<()>>,
    shutdown: CancellationToken,
}

impl Appliance {
    /// Starts every stage for `config`.
    pub async fn start(config: Config) -> anyhow::Result<Appliance> {
        let telemetry = Arc::new(Telemetry::default());
        let model_dir = match &config.model.dir {
            Some(d) => d.clone(),
            None => model::default_model_dir().context(
                "no model folder found: set model.dir in the configuration to a folder with manifest.json",
            )?,
        };
        let (ort_path, threads) = (
            config.model.ort_dylib_path.clone(),
            config.model.intra_threads,
        );
        let dir = model_dir.clone();
        let model = tokio::task::spawn_blocking(move || {
            let env = model::init_runtime(ort_path.as_deref())?;
            model::Model::load(&dir, &env, threads)
        })
        .await
        .context("model loader")??;
        let info = model.info().clone();
        telemetry.link(
            "model",
            true,
            format!("{} {} ({})", info.name, info.version, model_dir.display()),
        );
        let store = if config.store.set_aside_broken {
            let (store, aside) =
                crate::store::recover::open_or_set_aside(&config.data_dir, SystemTime::now())?;
            if let Some(a) = aside {
                // An alarm on the console's devices page and in the retained status: the
                // line screens on, the old store waits for `screenline store recover`.
                telemetry.incr("store.set_aside");
                telemetry.link("store", false, a.alarm(&config.data_dir));
            }
            store
        } else {
            Store::open(&config.data_dir)?
        };
        let store = Arc::new(store);
        if !telemetry.links().contains_key("store") {
            let aside = crate::store::recover::set_aside_folders(&config.data_dir)
                .into_iter()
                .filter(|(_, recovered)| !recovered)
                .count();
            if aside > 0 {
                telemetry.link(
                    "store",
                    false,
                    format!("{aside} set-aside store(s) in {} not yet recovered: run `screenline store check --data {}`", config.data_dir.display(), config.data_dir.display()),
                );
            } else {
                telemetry.link(
                    "store",
                    true,
                    format!("schema {}", crate::store::SCHEMA_VERSION),
                );
            }
        }
        telemetry.set("feed.backlog", store.outbox_len() as u64);
        // Counts go on from where the store left them, across restarts and crashes.
        for (name, n) in store
            .durable_counters()
            .context("reading the store's counters")?
        {
            telemetry.add(&name, n);
        }
        let mut rules = RuleSet::load(
            &config.rules,
            store.hasher().clone(),
            Box::new(store.split_ledger()),
        )
        .context("loading the screening rules")?;
        // The list the regulator pushed last is newer than the configured file.
        if let Some(kept) = store
            .saved_watchlist()
            .context("reading the regulator's watch-list from the store")?
        {
            tracing::info!(version = %kept.version, "the regulator's watch-list replaces the configured file's");
            rules.watchlist = crate::screen::rules::Watchlist::from_hashes(&kept);
        }
        if !rules.watchlist.is_empty() {
            telemetry.link(
                "watchlist",
                true,
                format!(
                    "version {} ({} entries)",
                    rules.watchlist.version,
                    rules.watchlist.len()
                ),
            );
        }

        let shutdown = CancellationToken::new();
        let mut tasks = JoinSet::new();
        let (parcel_tx, parcel_rx) = mpsc::channel(SCREEN_QUEUE);
        let (screened_tx, screened_rx) = mpsc::channel(SCREEN_QUEUE);
        let mut controllers = HashMap::new();
        for line in &config.lines {
            let cmds = crate::line::spawn(
                &mut tasks,
                line,
                &config.data_dir,
                parcel_tx.clone(),
                telemetry.clone(),
                shutdown.clone(),
            );
            controllers.insert(line.id.clone(), cmds);
        }
        drop(parcel_tx);
        let screener = screen::Screener::new(model, rules);
        let screening = screen::spawn(screener.clone(), parcel_rx, screened_tx, telemetry.clone())
            .context("starting the screening thread")?;

        let wake = Arc::new(Notify::new());
        let deadlines = config
            .lines
            .iter()
            .map(|l| (l.id.clone(), Duration::from_millis(l.decision_deadline_ms)))
            .collect();
        let xray = config
            .lines
            .iter()
            .map(|l| {
                let p = crate::line::xray::XrayPolicy::for_line(l, &config.data_dir);
                (l.id.clone(), p)
            })
            .collect();
        tasks.spawn(
            Sink {
                controllers,
                deadlines,
                xray,
                store: store.clone(),
                wake: wake.clone(),
                telemetry: telemetry.clone(),
                site_id: config.site_id.clone(),
                appliance_id: config.appliance_id.clone(),
            }
            .run(screened_rx),
        );
        tasks.spawn(sweeper(
            store.clone(),
            crate::store::retention::Retention::from_config(&config.store),
            Duration::from_secs(config.store.sweep_interval_s),
            telemetry.clone(),
            shutdown.clone(),
        ));
        let feed = Feed::new(
            &config,
            store.clone(),
            screener.clone(),
            wake,
            telemetry.clone(),
        )?;
        let feed = tokio::spawn(feed.run(shutdown.clone()));

        let listener = tokio::net::TcpListener::bind(config.console.listen)
            .await
            .with_context(|| {
                format!(
                    "cannot serve the console on {}: is another screenline running? Set console.listen",
                    config.console.listen
                )
            })?;
        let console_addr = listener.local_addr()?;
        let console = crate::console::Console::new(
            telemetry.clone(),
            store.clone(),
            &config,
            model_dir,
            screener.clone(),
        );
        tasks.spawn(crate::console::serve(
            listener,
            Arc::new(console),
            shutdown.clone(),
        ));
        tracing::info!(console = %console_addr, lines = config.lines.len(), "appliance running");
        Ok(Appliance {
            telemetry,
            console_addr,
            store,
            tasks,
            feed,
            screening: Some(screening),
            shutdown,
        })
    }

    /// Reports not yet acknowledged by the broker.
    pub fn backlog(&self) -> usize {
        self.store.outbox_len()
    }

    /// Stops every stage: sources first, then the feed says `stopped`, then the store flushes.
    pub async fn stop(mut self) {
        self.shutdown.cancel();
        while self.tasks.join_next().await.is_some() {}
        let _ = self.feed.await;
        if let Some(t) = self.screening.take() {
            let _ = tokio::task::spawn_blocking(move || t.join()).await;
        }
        if let Err(e) = self.store.flush().await {
            tracing::error!(error = %e, "final flush failed");
        }
        tracing::info!("appliance stopped");
    }
}

/// Retention and the disk budget: a sweep at start and every `every`, off the async
/// threads. Its alarms are links on the console and in the retained status: `disk` (over
/// the budget with nothing left that may go) and `retention` (records past retention held
/// for their unsent reports).
async fn sweeper(
    store: Arc<Store>,
    retention: crate::store::retention::Retention,
    every: Duration,
    telemetry: Arc<Telemetry>,
    shutdown: CancellationToken,
) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = shutdown.cancelled() => return,
        }
        let (s, r) = (store.clone(), retention.clone());
        let swept = tokio::task::spawn_blocking(move || s.sweep(SystemTime::now(), &r)).await;
        let sweep = match swept {
            Ok(Ok(sweep)) => sweep,
            Ok(Err(e)) => {
                telemetry.incr("store.sweep_errors");
                tracing::error!(error = %e, "retention sweep failed");
                continue;
            }
            Err(e) => {
                telemetry.incr("store.sweep_errors");
                tracing::error!(error = %e, "retention sweep panicked");
                continue;
            }
        };
        telemetry.add("store.expired_records", sweep.expired_records as u64);
        telemetry.add("store.evicted_images", sweep.evicted_images as u64);
        telemetry.add("store.slimmed_records", sweep.slimmed_records as u64);
        telemetry.set("store.bytes", sweep.used_bytes);
        telemetry.set("store.retention_held", sweep.held_unsent as u64);
        match sweep.budget_alarm() {
            Some(alarm) => {
                telemetry.incr("store.budget_alarms");
                telemetry.link("disk", false, alarm);
            }
            None => telemetry.link(
                "disk",
                true,
                match sweep.budget_bytes {
                    Some(b) => format!(
                        "store {} MB of a {} MB budget",
                        sweep.used_bytes >> 20,
                        b >> 20
                    ),
                    None => format!("store {} MB (no budget set)", sweep.used_bytes >> 20),
                },
            ),
        }
        match sweep.retention_alarm() {
            Some(alarm) => telemetry.link("retention", false, alarm),
            None => telemetry.link("retention", true, "nothing held past retention"),
        }
        if sweep.expired_records + sweep.evicted_images > 0 {
            tracing::info!(
                expired = sweep.expired_records,
                evicted_images = sweep.evicted_images,
                slimmed = sweep.slimmed_records,
                "store swept"
            );
        }
    }
}

/// Decide, divert, store, report: the stage after screening.
struct Sink {
    controllers: HashMap<String, mpsc::Sender<ToController>>,
    deadlines: HashMap<String, Duration>,
    xray: HashMap<String, crate::line::xray::XrayPolicy>,
    store: Arc<Store>,
    wake: Arc<Notify>,
    telemetry: Arc<Telemetry>,
    site_id: String,
    appliance_id: String,
}

/// Most parcels committed in one group (one transaction, one flush).
const GROUP_MAX: usize = 64;

impl Sink {
    /// Takes every screened parcel already waiting (up to [`GROUP_MAX`]), commits their
    /// records and reports in one transaction and one flush, and only then sends their
    /// decisions: the durability point documented in `store/mod.rs`. A group costs one flush
    /// however many parcels it holds, so a burst (several lines at once, a slow disk) is
    /// absorbed instead of queueing one flush per parcel; a lone parcel waits for no one.
    async fn run(self, mut screened: mpsc::Receiver<Screened>) {
        let Sink {
            controllers,
            deadlines,
            xray,
            store,
            wake,
            telemetry,
            site_id,
            appliance_id,
        } = self;
        let mut group: Vec<Screened> = Vec::with_capacity(GROUP_MAX);
        while let Some(first) = screened.recv().await {
            group.clear();
            group.push(first);
            while group.len() < GROUP_MAX {
                match screened.try_recv() {
                    Ok(s) => group.push(s),
                    Err(_) => break,
                }
            }
            let mut prepared = Vec::with_capacity(group.len());
            for s in group.iter_mut() {
                let line = s.parcel.line_id.clone();
                // Past the decision point the controller has diverted the parcel already: say
                // so, and never record as cleared a parcel that went to the inspection lane.
                let age = SystemTime::now()
                    .duration_since(s.parcel.entered_at)
                    .unwrap_or_default();
                if let Some(late_by) = deadlines.get(&line).and_then(|d| age.checked_sub(*d)) {
                    telemetry.incr("decisions.late");
                    s.reasons.push(crate::screen::rules::decision_late(late_by));
                    if s.decision == Decision::Clear {
                        s.decision = Decision::Manual;
                    }
                }
                match prepare(
                    s,
                    &store,
                    xray.get(&line),
                    &site_id,
                    &appliance_id,
                    &telemetry,
                ) {
                    Ok(p) => prepared.push(Some(p)),
                    Err(e) => {
                        telemetry.incr("store.errors");
                        tracing::error!(line = %line, seq = s.parcel.seq, error = %e, "record not stored");
                        prepared.push(None);
                    }
                }
                // Archiving an image is blocking file work: let the line tasks run between
                // two parcels of a large group, as they did between two flushes before.
                tokio::task::yield_now().await;
            }
            // Stored (and reports in the outbox) before the decisions act on the belt: a
            // crash in between can then divert a parcel without a record, never the reverse —
            // a flagged parcel diverted whose report was lost.
            let commits: Vec<crate::store::Commit<'_>> =
                prepared.iter().flatten().map(Prepared::commit).collect();
            let mut counts = std::collections::BTreeMap::new();
            for name in group.iter().flat_map(decided_counters) {
                *counts.entry(name).or_insert(0u64) += 1;
            }
            let stored = match store.commit_counted(&commits, &counts).await {
                Ok(()) => {
                    telemetry.incr("store.groups");
                    telemetry.add("store.committed", commits.len() as u64);
                    true
                }
                Err(e) => {
                    telemetry.add("store.errors", commits.len() as u64);
                    tracing::error!(parcels = commits.len(), error = %e, "group of records not stored");
                    false
                }
            };
            drop(commits);
            for (s, p) in group.iter().zip(prepared) {
                let line = &s.parcel.line_id;
                let decision = s.parcel.epoch.map(|epoch| ToController::Decision {
                    epoch,
                    seq: s.parcel.seq,
                    verdict: s.decision.verdict(),
                });
                if let (Some(tx), Some(decision)) = (controllers.get(line), decision) {
                    if tx.try_send(decision).is_err() {
                        telemetry.incr("sink.decisions_not_sent");
                        tracing::warn!(line = %line, seq = s.parcel.seq, "controller queue full; the controller will divert fail-safe");
                    }
                }
                if let Some(scan) = &s.parcel.scan {
                    telemetry.observe(
                        "decision_latency_us",
                        scan.completed.elapsed().as_micros() as u64,
                    );
                }
                if let (true, Some(p)) = (stored, p) {
                    announce(s, p, &telemetry);
                }
            }
            for (name, n) in counts {
                telemetry.add(&name, n);
            }
            wake.notify_one();
        }
    }
}

/// The counters a decided parcel adds to: the console's and the regulator's statistics
/// (`report/stats.rs`), kept in the store with the parcel's record.
fn decided_counters(s: &Screened) -> Vec<String> {
    let mut names = vec![
        "parcels.decided".to_owned(),
        format!("parcels.{}", s.decision.key()),
    ];
    names.extend(
        s.reasons
            .iter()
            .map(|r| format!("reasons.{}", r.code.key())),
    );
    if s.decision == Decision::Flag {
        names.extend(
            s.reasons
                .iter()
                .map(|r| format!("flagged.reason.{}", r.code.key())),
        );
        if let Some((c, _)) = s.scores.as_ref().and_then(|x| x.top()) {
            names.push(format!("flagged.category.{}", c.key()));
        }
    }
    names
}

/// A parcel's record, ready to commit.
struct Prepared {
    record_id: String,
    record: serde_json::Value,
    report: Option<(String, Vec<u8>)>,
    waybill: Option<String>,
}

impl Prepared {
    fn commit(&self) -> crate::store::Commit<'_> {
        crate::store::Commit {
            key: self.record_id.as_bytes(),
            record: &self.record,
            report: self
                .report
                .as_ref()
                .map(|(id, body)| (id.as_str(), "reports/flagged", body.as_slice())),
            waybill: self.waybill.as_deref(),
        }
    }
}

/// Archives a parcel's image and builds its record (and a flagged parcel's report).
fn prepare(
    s: &Screened,
    store: &Store,
    xray: Option<&crate::line::xray::XrayPolicy>,
    site_id: &str,
    appliance_id: &str,
    telemetry: &Telemetry,
) -> anyhow::Result<Prepared> {
    let entered_ms = s
        .parcel
        .entered_at
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0);
    let record_id = format!("{entered_ms:013}-{}-{}", s.parcel.line_id, s.parcel.seq);
    let wb = s.parcel.waybill.as_ref();
    let image_path = match (&s.parcel.scan, xray) {
        (Some(scan), Some(policy)) => {
            let unreadable = s.evidence.is_none().then(|| {
                s.reasons
                    .iter()
                    .find(|r| r.code == crate::domain::ReasonCode::ImageUnreadable)
                    .map_or("unknown", |r| r.en.as_str())
            });
            policy.after_screening(
                &s.parcel.line_id,
                scan,
                &record_id,
                unreadable,
                store,
                telemetry,
            )?
        }
        _ => None,
    };
    // Real-name data is kept in full only where the regulator may need it; for cleared
    // parcels, only keyed hashes (what split-shipment detection matches on).
    let keep_identity = s.decision != Decision::Clear;
    let sender = wb.and_then(|w| w.sender.as_ref()).map(|snd| {
        if keep_identity {
            serde_json::to_value(snd).unwrap_or_default()
        } else {
            json!({"id_key": store.hasher().hash(&snd.id_number), "phone_key": store.hasher().hash(&snd.phone)})
        }
    });
    let report = if s.decision == Decision::Flag {
        let report_id = payload::report_id(
            site_id,
            &s.parcel.line_id,
            wb.map_or("", |w| w.waybill.as_str()),
            s.parcel.scan.as_ref().map_or("", |x| x.scan_id.as_str()),
        );
        let body = payload::flagged_report(s, &report_id, site_id, appliance_id);
        Some((report_id, serde_json::to_vec(&body)?))
    } else {
        None
    };
    let record = json!({
        "record_id": record_id,
        "line_id": s.parcel.line_id,
        "seq": s.parcel.seq,
        "entered_at": crate::time_fmt::format(s.parcel.entered_at),
        "screened_at": crate::time_fmt::format(s.screened_at),
        "waybill": wb.map(|w| w.waybill.as_str()),
        "declared": wb.and_then(|w| w.declared.as_ref()),
        "sender": sender,
        "recipient": if keep_identity { wb.and_then(|w| w.recipient.as_ref()).map(|r| serde_json::to_value(r).unwrap_or_default()) } else { None },
        "decision": s.decision.key(),
        "reasons": s.reasons,
        "scores": s.scores,
        "model": s.model,
        "image": image_path.as_ref().map(|p| p.display().to_string()),
        "image_sha256": s.evidence.as_ref().map(|e| e.sha256.clone()),
        "report_id": report.as_ref().map(|r| r.0.clone()),
    });
    Ok(Prepared {
        record_id,
        record,
        report,
        waybill: wb.map(|w| w.waybill.to_string()),
    })
}

/// Shows a stored parcel on the console.
fn announce(s: &Screened, p: Prepared, telemetry: &Telemetry) {
    let record_id = p.record_id;
    let wb = s.parcel.waybill.as_ref();
    let top = s.scores.as_ref().and_then(|x| x.top());
    telemetry.push_parcel(ParcelSummary {
        record_id,
        line_id: s.parcel.line_id.clone(),
        seq: s.parcel.seq,
        waybill: wb.map(|w| w.waybill.to_string()),
        decision: s.decision,
        reasons: s.reasons.clone(),
        category: top.map(|(c, _)| c.key().to_owned()),
        counterfeit: s.scores.as_ref().map(|x| x.counterfeit),
        sender: wb
            .and_then(|w| w.sender.as_ref())
            .map(|snd| format!("{} {}", mask(&snd.name), mask(&snd.id_number))),
        decided_at: SystemTime::now(),
        outcome: None,
    });
}
