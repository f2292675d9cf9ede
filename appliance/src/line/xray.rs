//! The X-ray drop folder source: notices each complete image and hands it to the join as an
//! [`XrayScan`].
//!
//! A file is taken when the machine renamed it into place or closed it after writing (file
//! events), or — as a fallback for machines and filesystems without usable events — when its
//! size has stayed the same across two rescans. Each file is taken once. The optional
//! `<scan-id>.json` sidecar gives `captured_at` and `waybill`; a bad sidecar is counted and
//! ignored, never a reason to lose the image.

use super::LineInput;
use crate::domain::{WaybillNo, XrayScan};
use crate::telemetry::Telemetry;
use notify::{EventKind, RecursiveMode, Watcher};
use serde::Deserialize;
use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// How often the folder is rescanned when no file event arrives.
const RESCAN: Duration = Duration::from_millis(250);

/// Image extensions the X-ray machine writes.
const IMAGE_EXTENSIONS: [&str; 4] = ["png", "jpg", "tif", "tiff"];

#[derive(Deserialize)]
struct Sidecar {
    #[serde(default)]
    captured_at: Option<String>,
    #[serde(default)]
    waybill: Option<String>,
}

/// Whether a path is an image the machine may drop (not a temporary or a sidecar).
pub fn is_image(path: &Path) -> bool {
    let hidden = path
        .file_name()
        .and_then(|n| n.to_str())
        .is_none_or(|n| n.starts_with('.'));
    let ext = path
        .extension()
        .and_then(|e| e.to_str())
        .map(|e| e.to_ascii_lowercase());
    !hidden && ext.is_some_and(|e| IMAGE_EXTENSIONS.contains(&e.as_str()))
}

/// Watches one line's drop folder until `shutdown`.
pub async fn watch(
    line_id: String,
    dir: PathBuf,
    out: mpsc::Sender<LineInput>,
    telemetry: Arc<Telemetry>,
    shutdown: CancellationToken,
) {
    let link = format!("{line_id}.xray");
    let (tx, mut events) = mpsc::channel::<PathBuf>(1024);
    let watcher = notify::recommended_watcher(move |res: notify::Result<notify::Event>| {
        if let Ok(ev) = res {
            let complete = matches!(
                ev.kind,
                EventKind::Modify(notify::event::ModifyKind::Name(_))
                    | EventKind::Access(notify::event::AccessKind::Close(
                        notify::event::AccessMode::Write
                    ))
            );
            if complete {
                for p in ev.paths {
                    // A full channel only delays the file to the next rescan.
                    let _ = tx.try_send(p);
                }
            }
        }
    });
    let _watcher = match watcher {
        Ok(mut w) => match w.watch(&dir, RecursiveMode::NonRecursive) {
            Ok(()) => {
                telemetry.link(&link, true, format!("watching {}", dir.display()));
                Some(w)
            }
            Err(e) => {
                telemetry.link(
                    &link,
                    false,
                    format!("cannot watch {}: {e}; rescanning only", dir.display()),
                );
                None
            }
        },
        Err(e) => {
            tracing::warn!(error = %e, "file events unavailable; rescanning only");
            None
        }
    };
    let mut taken: HashSet<PathBuf> = HashSet::new();
    let mut sizes: HashMap<PathBuf, u64> = HashMap::new();
    let mut rescan = tokio::time::interval(RESCAN);
    loop {
        let ready: Vec<PathBuf> = tokio::select! {
            _ = shutdown.cancelled() => return,
            Some(p) = events.recv() => vec![p],
            _ = rescan.tick() => match stable_files(&dir, &mut sizes) {
                Ok(files) => {
                    telemetry.link(&link, true, format!("watching {}", dir.display()));
                    files
                }
                Err(e) => {
                    telemetry.link(&link, false, format!("cannot read {}: {e}", dir.display()));
                    Vec::new()
                }
            },
        };
        for path in ready {
            if !is_image(&path) || taken.contains(&path) || !path.is_file() {
                continue;
            }
            taken.insert(path.clone());
            let scan = scan_for(&path, &telemetry);
            telemetry.incr("xray.images");
            if out
                .send(LineInput::Image(scan, Instant::now()))
                .await
                .is_err()
            {
                return;
            }
        }
        // Forget files that are gone (consumed by the store), so the set stays small.
        if taken.len() > 256 {
            taken.retain(|p| p.exists());
        }
    }
}

/// Files whose size did not change since the previous rescan.
fn stable_files(dir: &Path, sizes: &mut HashMap<PathBuf, u64>) -> std::io::Result<Vec<PathBuf>> {
    let mut now = HashMap::new();
    let mut stable = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let path = entry.path();
        if !is_image(&path) {
            continue;
        }
        let len = entry.metadata().map(|m| m.len()).unwrap_or(0);
        if len > 0 && sizes.get(&path) == Some(&len) {
            stable.push(path.clone());
        }
        now.insert(path, len);
    }
    *sizes = now;
    Ok(stable)
}

fn scan_for(path: &Path, telemetry: &Telemetry) -> XrayScan {
    let scan_id = path
        .file_stem()
        .and_then(|s| s.to_str())
        .unwrap_or_default()
        .to_owned();
    let mut scan = XrayScan {
        scan_id,
        path: path.to_owned(),
        completed: Instant::now(),
        waybill: None,
        captured_at: SystemTime::now(),
    };
    let sidecar = path.with_extension("json");
    match std::fs::read(&sidecar) {
        Ok(bytes) => match serde_json::from_slice::<Sidecar>(&bytes) {
            Ok(s) => {
                if let Some(t) = s
                    .captured_at
                    .as_deref()
                    .and_then(|t| crate::time_fmt::parse(t).ok())
                {
                    scan.captured_at = t;
                }
                scan.waybill = s.waybill.as_deref().and_then(|w| WaybillNo::parse(w).ok());
            }
            Err(e) => {
                telemetry.incr("xray.bad_sidecars");
                tracing::warn!(file = %sidecar.display(), error = %e, "sidecar ignored");
            }
        },
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => tracing::warn!(file = %sidecar.display(), error = %e, "sidecar unreadable"),
    }
    scan
}
