//! A serial link that survives unplugging: opens the port by its configured (udev) name and,
//! after each session ends — a read of zero bytes, an I/O error — reopens it with backoff.
//! The link's state is kept in telemetry under its [`LinkId`].

use crate::telemetry::{Counter, LineCounter, LinkId, Telemetry};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio_serial::{SerialPortBuilderExt, SerialStream};
use tokio_util::sync::CancellationToken;

const BACKOFF_MIN: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(5);
/// A session shorter than this did not prove the device healthy: the backoff keeps growing,
/// so a device that opens and drops at once is not hammered (nor the log flooded).
const HEALTHY_SESSION: Duration = Duration::from_secs(10);

/// One serial link's reconnect loop.
///
/// ```text
/// while let Some(port) = link.open().await { let r = session(port).await; link.closed(r); }
/// ```
pub struct Link {
    id: LinkId,
    path: PathBuf,
    baud: u32,
    telemetry: Arc<Telemetry>,
    shutdown: CancellationToken,
    backoff: Duration,
    opened: Option<std::time::Instant>,
}

impl Link {
    /// The link of device `id` (e.g. `L1.reader`) on `path`.
    pub fn new(
        id: LinkId,
        path: PathBuf,
        baud: u32,
        telemetry: Arc<Telemetry>,
        shutdown: CancellationToken,
    ) -> Link {
        Link {
            id,
            path,
            baud,
            telemetry,
            shutdown,
            backoff: Duration::ZERO,
            opened: None,
        }
    }

    /// Opens the port, waiting with backoff while it is missing; `None` at shutdown.
    pub async fn open(&mut self) -> Option<SerialStream> {
        loop {
            if !self.backoff.is_zero() {
                tokio::select! {
                    _ = tokio::time::sleep(self.backoff) => {}
                    _ = self.shutdown.cancelled() => return None,
                }
            }
            if self.shutdown.is_cancelled() {
                return None;
            }
            self.backoff = (self.backoff * 2).clamp(BACKOFF_MIN, BACKOFF_MAX);
            match tokio_serial::new(self.path.to_string_lossy(), self.baud).open_native_async() {
                Ok(port) => {
                    self.telemetry
                        .link(self.link(), true, format!("{} open", self.path.display()));
                    self.count(LineCounter::SerialOpens(self.id.device));
                    self.opened = Some(std::time::Instant::now());
                    return Some(port);
                }
                Err(e) => self.telemetry.link(
                    self.link(),
                    false,
                    format!(
                        "cannot open {}: {e}; retrying every {} ms at most",
                        self.path.display(),
                        BACKOFF_MAX.as_millis()
                    ),
                ),
            }
        }
    }

    /// Records how the last session ended. A session that ran for a while resets the backoff.
    pub fn closed(&mut self, outcome: anyhow::Result<()>) {
        let healthy = self
            .opened
            .take()
            .is_some_and(|t| t.elapsed() >= HEALTHY_SESSION);
        let detail = match outcome {
            Ok(()) => format!("{} closed by the device", self.path.display()),
            Err(e) => format!("{}: {e:#}", self.path.display()),
        };
        self.count(LineCounter::SerialDisconnects(self.id.device));
        self.telemetry.link(self.link(), false, detail);
        if healthy {
            self.backoff = BACKOFF_MIN;
        }
    }

    fn link(&self) -> crate::telemetry::Link {
        crate::telemetry::Link::Line(self.id.clone())
    }

    fn count(&self, c: LineCounter) {
        self.telemetry.incr(Counter::line(&self.id.line, c));
    }

    /// The shutdown token, for sessions to select on.
    pub fn shutdown(&self) -> &CancellationToken {
        &self.shutdown
    }
}
