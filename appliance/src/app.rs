//! The appliance assembled: sources → join → screen → decide/store/divert ([`crate::sink`])
//! → report, with the console beside it. Stages are tasks and threads joined by bounded
//! channels; every one listens to one shutdown token, and every one is supervised
//! ([`crate::supervise`]): a stage that ends while the appliance runs stops the appliance
//! with an error, so that systemd restarts it.

use crate::config::Config;
use crate::report::Feed;
use crate::screen::{self, model};
use crate::sink::Sink;
use crate::store::owner::StoreHandle;
use crate::store::Store;
use crate::supervise::{sd_notify, StageSet, Stages};
use crate::telemetry::{Counter, Gauge, Link, Telemetry};
use anyhow::Context;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime};
use tokio::sync::{mpsc, Notify};
use tokio_util::sync::CancellationToken;

/// Parcels waiting for screening, across all lines.
const SCREEN_QUEUE: usize = 64;

/// A running appliance.
pub struct Appliance {
    /// What it knows about itself.
    pub telemetry: Arc<Telemetry>,
    /// Where the console listens.
    pub console_addr: std::net::SocketAddr,
    /// Every stage's health.
    pub stages: Arc<Stages>,
    /// With `[site]`: the peers heard and the sightings' backlog (for the console).
    pub sightings: Option<Arc<crate::report::sightings::SightingsStatus>>,
    store: StoreHandle,
    set: StageSet,
    shutdown: CancellationToken,
}

/// How long the stages get to end once asked to stop.
const STOP_WITHIN: Duration = Duration::from_secs(20);

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
            Link::Model,
            true,
            format!("{} {} ({})", info.name, info.version, model_dir.display()),
        );
        let store = if config.store.set_aside_broken {
            let (store, aside) =
                crate::store::recover::open_or_set_aside(&config.data_dir, SystemTime::now())?;
            if let Some(a) = aside {
                // An alarm on the console's devices page and in the retained status: the
                // line screens on, the old store waits for `screenline store recover`.
                telemetry.incr(Counter::StoreSetAside);
                telemetry.link(Link::Store, false, a.alarm(&config.data_dir));
            }
            store
        } else {
            Store::open(&config.data_dir)?
        };
        let stages = Arc::new(Stages::default());
        let mut set = StageSet::default();
        let (store, owner) = StoreHandle::new(store, &config.data_dir, stages.stage("store"));
        set.spawn_thread("store", owner)
            .context("starting the store thread")?;
        if telemetry.link_state(&Link::Store).is_none() {
            let aside = crate::store::recover::set_aside_folders(&config.data_dir)
                .into_iter()
                .filter(|(_, recovered)| !recovered)
                .count();
            if aside > 0 {
                telemetry.link(Link::Store,
                    false,
                    format!("{aside} set-aside store(s) in {} not yet recovered: run `screenline store check --data {}`", config.data_dir.display(), config.data_dir.display()),
                );
            } else {
                telemetry.link(
                    Link::Store,
                    true,
                    format!("schema {}", crate::store::SCHEMA_VERSION),
                );
            }
        }
        telemetry.set(Gauge::FeedBacklog, store.outbox_len() as u64);
        // Counts go on from where the store left them, across restarts and crashes.
        for (counter, n) in store
            .read(|s| s.durable_counters())
            .await
            .context("reading the store's counters")?
        {
            telemetry.add(counter, n);
        }
        let sharing = crate::report::sightings::SiteSharing::from_config(
            &config.feed(),
            crate::screen::rules::RuleSettings::from_config(&config.rules).split_window,
            telemetry.clone(),
        )?;
        let mut rules = crate::screen::load_rules(
            &config.rules,
            store.hasher().clone(),
            Box::new(store.split_ledger(sharing.as_ref().map(|s| s.signer.clone()))),
        )
        .context("loading the screening rules")?;
        rules.site_keys = sharing.as_ref().map(|s| s.signer.keys.clone());
        // The list the regulator pushed last is newer than the configured file.
        if let Some(kept) = store
            .read(|s| s.saved_watchlist())
            .await
            .context("reading the regulator's watch-list from the store")?
        {
            tracing::info!(version = %kept.version, "the regulator's watch-list replaces the configured file's");
            rules.watchlist = crate::screen::rules::Watchlist::from_hashes(&kept);
        }
        // A kept list hashed before normalisation still matches, but the regulator must send
        // it again: an alarm on the console and in the status until a new list arrives.
        if let Some(alarm) = rules.watchlist.resend_alarm() {
            tracing::warn!(version = %rules.watchlist.version, "{alarm}");
            telemetry.link(Link::Watchlist, false, alarm);
        } else if !rules.watchlist.is_empty() {
            telemetry.link(
                Link::Watchlist,
                true,
                format!(
                    "version {} ({} entries)",
                    rules.watchlist.version,
                    rules.watchlist.len()
                ),
            );
        }

        let shutdown = CancellationToken::new();
        let (parcel_tx, parcel_rx) = mpsc::channel(SCREEN_QUEUE);
        let (screened_tx, screened_rx) = mpsc::channel(SCREEN_QUEUE);
        let mut controllers = HashMap::new();
        for line in &config.lines {
            let cmds = crate::line::spawn(
                &mut set,
                &stages,
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
        screen::spawn(
            &mut set,
            &stages,
            screener.clone(),
            parcel_rx,
            screened_tx,
            telemetry.clone(),
        )
        .context("starting the screening threads")?;

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
        set.spawn(
            "sink",
            Sink {
                controllers,
                deadlines,
                xray,
                store: store.clone(),
                wake: wake.clone(),
                telemetry: telemetry.clone(),
                site_id: config.site_id.clone(),
                appliance_id: config.appliance_id.clone(),
                stage: stages.stage("sink"),
                rereview_share: config.console.queue.rereview_share,
            }
            .run(screened_rx),
        );
        set.spawn(
            "sweeper",
            sweeper(
                store.clone(),
                crate::store::retention::Retention::from_config(&config.store),
                Duration::from_secs(config.store.sweep_interval_s),
                telemetry.clone(),
                stages.stage("sweeper"),
                shutdown.clone(),
            ),
        );
        let feed = Feed::new(
            &config.feed(),
            store.clone(),
            screener.clone(),
            wake,
            telemetry.clone(),
            stages.stage("feed"),
            sharing.clone(),
        )
        .await?;
        set.spawn("feed", feed.run(shutdown.clone()));

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
            &config,
            crate::console::Pipeline {
                store: store.clone(),
                model_dir,
                screener: screener.clone(),
                stages: stages.clone(),
                sightings: sharing.as_ref().map(|s| s.status.clone()),
            },
            shutdown.clone(),
        );
        set.spawn(
            "console",
            crate::console::serve(listener, Arc::new(console), shutdown.clone()),
        );
        set.spawn(
            "watchdog",
            stages.clone().watchdog(telemetry.clone(), shutdown.clone()),
        );
        tracing::info!(console = %console_addr, lines = config.lines.len(), "appliance running");
        Ok(Appliance {
            telemetry,
            console_addr,
            stages,
            sightings: sharing.map(|s| s.status),
            store,
            set,
            shutdown,
        })
    }

    /// Runs until `stop` resolves (a clean stop: `Ok`) or a stage ends on its own, which
    /// stops the appliance with an error naming the stage. Tells systemd when it is ready
    /// and when it stops.
    pub async fn run_until(
        mut self,
        stop: impl std::future::Future<Output = ()>,
    ) -> anyhow::Result<()> {
        sd_notify::notify("READY=1");
        let ended = tokio::select! {
            () = stop => None,
            end = self.set.next_end() => end,
        };
        sd_notify::notify("STOPPING=1");
        let outcome = match ended {
            None => Ok(()),
            Some((stage, why)) => {
                let why = why.unwrap_or_else(|| "ended".into());
                tracing::error!(stage = %stage, why = %why, "a stage ended while the appliance ran: stopping");
                Err(anyhow::anyhow!(
                    "stage {stage} ended while the appliance ran ({why}); the appliance stops so that it can be restarted"
                ))
            }
        };
        self.stop().await;
        outcome
    }

    /// Reports not yet acknowledged by the broker.
    pub fn backlog(&self) -> usize {
        self.store.outbox_len()
    }

    /// Stops every stage: the sources end, the channels drain (the sink stores what is
    /// screened), the feed says `stopped`, and the store thread flushes once the last handle
    /// is gone. A stage that does not end within [`STOP_WITHIN`] is left behind and named.
    pub async fn stop(self) {
        let Appliance {
            mut set,
            shutdown,
            store,
            ..
        } = self;
        shutdown.cancel();
        drop(store);
        let all = async {
            while let Some((stage, why)) = set.next_end().await {
                if let Some(why) = why {
                    tracing::error!(stage = %stage, why = %why, "stage failed while stopping");
                }
            }
        };
        if tokio::time::timeout(STOP_WITHIN, all).await.is_err() {
            tracing::error!("some stages did not stop in time");
        }
        tracing::info!("appliance stopped");
    }
}

/// Retention and the disk budget: a sweep at start and every `every`, off the async
/// threads. Its alarms are links on the console and in the retained status: `disk` (over
/// the budget with nothing left that may go) and `retention` (records past retention held
/// for their unsent reports).
async fn sweeper(
    store: StoreHandle,
    retention: crate::store::retention::Retention,
    every: Duration,
    telemetry: Arc<Telemetry>,
    stage: crate::supervise::Stage,
    shutdown: CancellationToken,
) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = shutdown.cancelled() => return,
        }
        let sweep = {
            let _working = stage.work();
            let before = SystemTime::now()
                .checked_sub(retention.keep_for)
                .unwrap_or(SystemTime::UNIX_EPOCH);
            match store.write(move |s| s.prune_audit(before, AUDIT_MAX)).await {
                Ok(n) => telemetry.add(Counter::StoreAuditPruned, n as u64),
                Err(e) => tracing::error!(error = %e, "audit log not pruned"),
            }
            match sweep(&store, &retention).await {
                Ok(sweep) => sweep,
                Err(e) => {
                    telemetry.incr(Counter::StoreSweepErrors);
                    tracing::error!(error = %e, "retention sweep failed");
                    continue;
                }
            }
        };
        telemetry.add(Counter::StoreExpiredRecords, sweep.expired_records as u64);
        telemetry.add(Counter::StoreEvictedImages, sweep.evicted_images as u64);
        telemetry.add(Counter::StoreSlimmedRecords, sweep.slimmed_records as u64);
        telemetry.set(Gauge::StoreBytes, sweep.used_bytes);
        telemetry.set(Gauge::StoreRetentionHeld, sweep.held_unsent as u64);
        match sweep.budget_alarm() {
            Some(alarm) => {
                telemetry.incr(Counter::StoreBudgetAlarms);
                telemetry.link(Link::Disk, false, alarm);
            }
            None => telemetry.link(
                Link::Disk,
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
            Some(alarm) => telemetry.link(Link::Retention, false, alarm),
            None => telemetry.link(Link::Retention, true, "nothing held past retention"),
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

/// Most audit entries kept (about 300 B each): past it the oldest go, whatever floods in.
const AUDIT_MAX: usize = 200_000;

/// Records looked at per step of a sweep: one store job, short enough that records of the
/// line are committed between two steps.
const SWEEP_STEP: usize = 512;

/// One sweep, in steps that are jobs on the store thread.
async fn sweep(
    store: &StoreHandle,
    retention: &crate::store::retention::Retention,
) -> Result<crate::store::retention::Sweep, crate::store::StoreError> {
    let now = SystemTime::now();
    let mut progress = crate::store::retention::SweepProgress::default();
    loop {
        let (r, mut p) = (retention.clone(), progress);
        let (done, p) = store
            .write(move |s| Ok((s.sweep_step(now, &r, &mut p, SWEEP_STEP)?, p)))
            .await?;
        progress = p;
        if done {
            return Ok(progress.sweep);
        }
    }
}
