//! Supervision: which stages of the pipeline are alive, and systemd's view of it.
//!
//! Every stage (a line's sources, the join, decode, screening, the sink, the store's owner
//! thread, the feed, the console, the sweeper) holds a [`Stage`]. Around each piece of work
//! — one parcel, one group commit, one store job, one feed event — it holds the guard that
//! [`Stage::work`] returns. A stage waiting for input is idle, which is healthy; a stage
//! that has been inside one piece of work for longer than its limit has **stalled** (a
//! deadlock, a hung device call, a runaway loop).
//!
//! [`Stages::watchdog`] is the only sender of systemd's `WATCHDOG=1`: it pings only while no
//! stage has stalled, and it runs on the same async runtime as the stages, so a runtime whose
//! worker threads are all blocked stops the pings too. systemd then kills and restarts the
//! appliance (`WatchdogSec=` in the unit). `/healthz` answers from the same state and names
//! the stalled stage. A stage that *exits* (or panics) while the appliance runs is not
//! watched here but by the task set in `app.rs`, which then stops the appliance with a
//! non-zero exit so that systemd restarts it.

use crate::telemetry::{Counter, Link};
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How long one piece of work may take before its stage counts as stalled. Generous: a
/// group commit on a slow disk or a batched inference is far below it, a deadlock is not.
pub const STALL_AFTER: Duration = Duration::from_secs(20);

#[derive(Debug)]
struct StageState {
    /// When the piece of work in hand began; `None` while idle.
    busy_since: Option<Instant>,
    stall_after: Duration,
}

/// Every stage's state.
#[derive(Debug, Default)]
pub struct Stages {
    inner: Mutex<BTreeMap<String, StageState>>,
}

/// A stalled stage.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stall {
    pub stage: String,
    pub busy_for: Duration,
}

impl std::fmt::Display for Stall {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "stage {} stalled: busy with one piece of work for {} s",
            self.stage,
            self.busy_for.as_secs()
        )
    }
}

impl Stages {
    fn with<T>(&self, f: impl FnOnce(&mut BTreeMap<String, StageState>) -> T) -> T {
        let mut g = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        f(&mut g)
    }

    /// Registers a stage (idle) and returns its handle.
    pub fn stage(self: &Arc<Self>, name: impl Into<String>) -> Stage {
        self.stage_with(name, STALL_AFTER)
    }

    /// [`Stages::stage`] with its own stall limit.
    pub fn stage_with(self: &Arc<Self>, name: impl Into<String>, stall_after: Duration) -> Stage {
        let name: Arc<str> = name.into().into();
        self.with(|m| {
            m.insert(
                name.to_string(),
                StageState {
                    busy_since: None,
                    stall_after,
                },
            )
        });
        Stage {
            name,
            stages: self.clone(),
        }
    }

    /// The stages that have stalled, at `now`.
    pub fn stalled(&self, now: Instant) -> Vec<Stall> {
        self.with(|m| {
            m.iter()
                .filter_map(|(name, s)| {
                    let busy_for = now.saturating_duration_since(s.busy_since?);
                    (busy_for > s.stall_after).then(|| Stall {
                        stage: name.clone(),
                        busy_for,
                    })
                })
                .collect()
        })
    }

    /// Pings systemd's watchdog while no stage has stalled, until `shutdown`. Without a
    /// watchdog configured it still checks, so that a stall is logged and shown.
    pub async fn watchdog(
        self: Arc<Self>,
        telemetry: Arc<crate::telemetry::Telemetry>,
        shutdown: tokio_util::sync::CancellationToken,
    ) {
        let every = sd_notify::watchdog_interval().map_or(Duration::from_secs(1), |w| {
            (w / 3).min(Duration::from_secs(1))
        });
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut was_stalled = false;
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = shutdown.cancelled() => return,
            }
            let stalled = self.stalled(Instant::now());
            if stalled.is_empty() {
                sd_notify::notify("WATCHDOG=1");
                if was_stalled {
                    tracing::info!("every stage is working again");
                    telemetry.link(Link::Pipeline, true, "every stage working");
                }
            } else if !was_stalled {
                let what = stalled
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join("; ");
                tracing::error!(stalled = %what, "a stage has stalled: watchdog pings stop");
                telemetry.incr(Counter::StageStalls);
                telemetry.link(Link::Pipeline, false, what);
            }
            was_stalled = !stalled.is_empty();
        }
    }
}

/// One stage's handle.
#[derive(Debug, Clone)]
pub struct Stage {
    name: Arc<str>,
    stages: Arc<Stages>,
}

/// Held while a stage works on one piece of work; dropping it makes the stage idle again.
#[must_use = "the stage is busy only while the guard lives"]
pub struct Working<'a> {
    stage: &'a Stage,
}

impl Stage {
    /// The stage's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Marks the stage busy until the guard is dropped.
    pub fn work(&self) -> Working<'_> {
        self.stages.with(|m| {
            if let Some(s) = m.get_mut(&*self.name) {
                s.busy_since = Some(Instant::now());
            }
        });
        Working { stage: self }
    }
}

impl Drop for Working<'_> {
    fn drop(&mut self) {
        self.stage.stages.with(|m| {
            if let Some(s) = m.get_mut(&*self.stage.name) {
                s.busy_since = None;
            }
        });
    }
}

/// The appliance's stages as tasks and threads, each with its name, so that the one that
/// ends is named.
#[derive(Default)]
pub struct StageSet {
    set: tokio::task::JoinSet<String>,
    names: std::collections::HashMap<tokio::task::Id, String>,
}

impl StageSet {
    /// Runs a stage as a task.
    pub fn spawn(
        &mut self,
        name: impl Into<String>,
        stage: impl std::future::Future<Output = ()> + Send + 'static,
    ) {
        let name = name.into();
        let ret = name.clone();
        let handle = self.set.spawn(async move {
            stage.await;
            ret
        });
        self.names.insert(handle.id(), name);
    }

    /// Runs a stage on a thread of its own; its end (or panic) is seen like a task's.
    pub fn spawn_thread(
        &mut self,
        name: impl Into<String>,
        stage: impl FnOnce() + Send + 'static,
    ) -> std::io::Result<()> {
        let name = name.into();
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        std::thread::Builder::new()
            .name(name.clone())
            .spawn(move || {
                // `tx` is dropped without a send when `stage` panics.
                stage();
                let _ = tx.send(());
            })?;
        let what = name.clone();
        self.spawn(name, async move {
            if rx.await.is_err() {
                panic!("thread {what} panicked");
            }
        });
        Ok(())
    }

    /// Waits for the next stage to end: its name, and why if it panicked. `None` when
    /// there is no stage left.
    pub async fn next_end(&mut self) -> Option<(String, Option<String>)> {
        match self.set.join_next_with_id().await? {
            Ok((id, name)) => {
                self.names.remove(&id);
                Some((name, None))
            }
            Err(e) => {
                let name = self.names.remove(&e.id()).unwrap_or_else(|| "?".into());
                let why = if e.is_panic() {
                    let p = e.into_panic();
                    p.downcast_ref::<&str>()
                        .map(|s| (*s).to_owned())
                        .or_else(|| p.downcast_ref::<String>().cloned())
                        .unwrap_or_else(|| "panicked".into())
                } else {
                    "cancelled".into()
                };
                Some((name, Some(why)))
            }
        }
    }
}

/// Faults a test can make the appliance suffer, from `SCREENLINE_TEST_FAULTS` (comma
/// separated): `panic_waybill=WB` panics while screening the parcel of waybill WB;
/// `hang=STAGE` makes that stage hang inside its next piece of work; `die=STAGE` makes it
/// end with a panic at its next piece of work. Read once; empty in production.
#[derive(Debug, Default, Clone)]
pub struct Faults {
    pub panic_waybill: Option<String>,
    pub hang: Option<String>,
    pub die: Option<String>,
}

impl Faults {
    /// The faults asked for in the environment.
    pub fn from_env() -> Faults {
        let mut f = Faults::default();
        let Ok(spec) = std::env::var("SCREENLINE_TEST_FAULTS") else {
            return f;
        };
        for item in spec.split(',') {
            match item.split_once('=') {
                Some(("panic_waybill", v)) => f.panic_waybill = Some(v.to_owned()),
                Some(("hang", v)) => f.hang = Some(v.to_owned()),
                Some(("die", v)) => f.die = Some(v.to_owned()),
                _ => tracing::warn!(item, "unknown SCREENLINE_TEST_FAULTS item ignored"),
            }
        }
        if f.panic_waybill.is_some() || f.hang.is_some() || f.die.is_some() {
            tracing::warn!(faults = ?f, "test faults armed (SCREENLINE_TEST_FAULTS)");
        }
        f
    }

    /// The process-wide faults.
    pub fn get() -> &'static Faults {
        static F: std::sync::OnceLock<Faults> = std::sync::OnceLock::new();
        F.get_or_init(Faults::from_env)
    }

    /// Called by a stage inside a piece of work: hangs or dies if a test asked it to.
    pub async fn strike(stage: &str) {
        let f = Faults::get();
        if f.die.as_deref() == Some(stage) {
            panic!("test fault: stage {stage} dies");
        }
        if f.hang.as_deref() == Some(stage) {
            std::future::pending::<()>().await;
        }
    }

    /// [`Faults::strike`] for a stage on its own thread.
    pub fn strike_blocking(stage: &str) {
        let f = Faults::get();
        if f.die.as_deref() == Some(stage) {
            panic!("test fault: stage {stage} dies");
        }
        if f.hang.as_deref() == Some(stage) {
            loop {
                std::thread::park();
            }
        }
    }
}

/// systemd's notification protocol (`sd_notify(3)`), without libsystemd: one datagram to
/// `$NOTIFY_SOCKET`. Without that variable (not under systemd, or `Type=simple`) every call
/// does nothing.
pub mod sd_notify {
    use std::os::unix::net::UnixDatagram;
    use std::time::Duration;

    /// Sends `state` (e.g. `READY=1`, `WATCHDOG=1`, `STOPPING=1`, `STATUS=…`).
    pub fn notify(state: &str) {
        let Some(path) = std::env::var_os("NOTIFY_SOCKET") else {
            return;
        };
        let Ok(sock) = UnixDatagram::unbound() else {
            return;
        };
        let bytes = path.as_encoded_bytes();
        let sent = if let Some(abstract_name) = bytes.strip_prefix(b"@") {
            send_abstract(&sock, abstract_name, state)
        } else {
            sock.send_to(state.as_bytes(), std::path::Path::new(&path))
                .map(|_| ())
        };
        if let Err(e) = sent {
            tracing::debug!(error = %e, "sd_notify failed");
        }
    }

    #[cfg(target_os = "linux")]
    fn send_abstract(sock: &UnixDatagram, name: &[u8], state: &str) -> std::io::Result<()> {
        use std::os::linux::net::SocketAddrExt;
        let addr = std::os::unix::net::SocketAddr::from_abstract_name(name)?;
        sock.send_to_addr(state.as_bytes(), &addr).map(|_| ())
    }

    #[cfg(not(target_os = "linux"))]
    fn send_abstract(_: &UnixDatagram, _: &[u8], _: &str) -> std::io::Result<()> {
        Err(std::io::ErrorKind::Unsupported.into())
    }

    /// The watchdog interval systemd asked for (`$WATCHDOG_USEC`, for this process).
    pub fn watchdog_interval() -> Option<Duration> {
        if let Ok(pid) = std::env::var("WATCHDOG_PID") {
            if pid.trim().parse::<u32>().ok() != Some(std::process::id()) {
                return None;
            }
        }
        let usec: u64 = std::env::var("WATCHDOG_USEC").ok()?.trim().parse().ok()?;
        (usec > 0).then(|| Duration::from_micros(usec))
    }
}

/// Resolves at SIGINT (Ctrl-C) or SIGTERM (systemd's stop).
pub async fn stop_signal() {
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(e) => {
                tracing::error!(error = %e, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        () = term => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stage_stalls_only_while_busy_past_its_limit() {
        let stages = Arc::new(Stages::default());
        let s = stages.stage_with("sink", Duration::from_millis(50));
        let t0 = Instant::now();
        assert!(
            stages.stalled(t0 + Duration::from_secs(60)).is_empty(),
            "idle is healthy"
        );
        {
            let _w = s.work();
            assert!(stages.stalled(Instant::now()).is_empty());
            let later = Instant::now() + Duration::from_millis(200);
            let stalled = stages.stalled(later);
            assert_eq!(stalled.len(), 1);
            assert_eq!(stalled[0].stage, "sink");
            assert!(stalled[0].to_string().contains("sink"));
        }
        assert!(stages
            .stalled(Instant::now() + Duration::from_secs(60))
            .is_empty());
    }

    #[test]
    fn sd_notify_sends_one_datagram_to_the_socket() {
        let dir = crate::testutil::temp_dir("notify");
        let _ = std::fs::create_dir_all(&dir);
        let path = dir.join("notify.sock");
        let _ = std::fs::remove_file(&path);
        let rx = std::os::unix::net::UnixDatagram::bind(&path).expect("bind");
        // The variable is read at each call; this test is the only one in the crate to set it.
        std::env::set_var("NOTIFY_SOCKET", &path);
        sd_notify::notify("READY=1");
        std::env::remove_var("NOTIFY_SOCKET");
        let mut buf = [0u8; 64];
        let n = rx.recv(&mut buf).expect("recv");
        assert_eq!(&buf[..n], b"READY=1");
    }
}
