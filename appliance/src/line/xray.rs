//! The X-ray drop folder source: notices each complete image and hands it to the join as an
//! [`XrayScan`]; and, once the parcel is decided, archives or deletes the files.
//!
//! A file is taken when the machine renamed it into place or closed it after writing (file
//! events), or — as a fallback for machines and filesystems without usable events — when its
//! size has stayed the same across two rescans. Each file is taken once.
//!
//! Before a file goes to the join its header is probed, without decoding the pixels: the
//! size on disk, the format (PNG, JPEG, TIFF), the pixel dimensions and the colour type
//! must be what the machine may write — one 8-bit RGB image `<scan-id>.<ext>`, or a
//! dual-energy pair `<scan-id>.high.<ext>` + `<scan-id>.low.<ext>`, 16-bit grey, the same
//! size. Anything else is moved to the line's quarantine folder with a reason file
//! ([`super::quarantine`]); so is a half whose partner has not come within `pair_wait`, and
//! an image no parcel claimed. Pixel data that turns out corrupt only at decoding is
//! quarantined after screening ([`XrayPolicy::after_screening`]). None of it stops the line.
//!
//! The optional `<scan-id>.json` sidecar gives `captured_at` and `waybill`; a bad sidecar is
//! counted and ignored, never a reason to lose the image. Without a sidecar waybill, a scan
//! id that is a waybill number (`SF1234567890123`) or ends in one (`0815_SF1234567890123`) names it.

use super::config::{LineConfig, XrayAfter};
use super::dropfile::{entry_id, open_regular, read_regular, remove_if_same, DropError, FileId};
use super::image::{limits, Evidence, MAX_IMAGE_BYTES, MAX_PIXELS_SIDE};
use super::quarantine::{quarantine_files, Refused};
use super::LineInput;
use crate::domain::{WaybillNo, XrayScan};
use crate::telemetry::{Device, LineCounter, Link, Telemetry};
use image::{ColorType, ImageDecoder, ImageFormat};
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
pub const IMAGE_EXTENSIONS: [&str; 4] = ["png", "jpg", "tif", "tiff"];

/// Most pixels one image may have (a decompression bomb declares far more).
pub const MAX_PIXELS: u64 = 40_000_000;

/// Largest sidecar taken: `captured_at` and a waybill number fit in a few hundred bytes.
pub const MAX_SIDECAR_BYTES: u64 = 4096;

/// What a line does with its X-ray files besides screening them.
#[derive(Debug, Clone)]
pub struct XrayPolicy {
    /// Where bad files go, each with a reason file.
    pub quarantine_dir: PathBuf,
    /// Keep (archive into the store) or delete a screened scan's files.
    pub after: XrayAfter,
    /// How long the first half of a dual-energy pair waits for the other.
    pub pair_wait: Duration,
    /// How long a sidecar waits for its image (the line's join window); after that it is
    /// quarantined, so that a scan id used again never picks up a stale waybill.
    pub sidecar_wait: Duration,
}

impl XrayPolicy {
    /// The policy configured for `line`.
    pub fn for_line(line: &LineConfig, data_dir: &Path) -> XrayPolicy {
        XrayPolicy {
            quarantine_dir: line.quarantine_dir(data_dir),
            after: line.xray_after,
            pair_wait: Duration::from_millis(line.pair_wait_ms),
            sidecar_wait: Duration::from_millis(line.join_window_ms),
        }
    }

    /// Whether every screened scan, cleared ones too, is archived into the store
    /// (`xray_after = "keep"`; flagged and manual parcels' scans always are) before
    /// [`XrayPolicy::after_screening`] takes it out of the drop folder.
    pub fn keeps_images(&self) -> bool {
        self.after == XrayAfter::Keep
    }

    /// Disposes of a scan's files once its parcel is decided (and, when `archived`, archived
    /// by the store from the bytes screening read). `loaded` is that evidence, or the
    /// decoder's complaint when the pixels could not be read — then the files go to
    /// quarantine. Otherwise a drop-folder name is removed only while it still is the file
    /// that was read.
    pub fn after_screening(
        &self,
        line_id: &str,
        scan: &XrayScan,
        loaded: Result<&Evidence, &str>,
        archived: bool,
        telemetry: &Telemetry,
    ) -> std::io::Result<()> {
        let evidence = match loaded {
            Ok(e) => e,
            Err(why) => {
                let why = format!("the image could not be decoded: {why}");
                self.quarantine_scan(line_id, scan, "unreadable", &why, telemetry);
                return Ok(());
            }
        };
        if !archived {
            telemetry.incr_line(line_id, LineCounter::XrayDeleted);
        }
        for (path, file) in scan_files(scan).zip(evidence.files()) {
            if !remove_if_same(path, &file.id)? {
                tracing::info!(line = line_id, file = %path.display(), "X-ray file replaced since it was read: left for the intake");
            }
        }
        Ok(())
    }

    /// The extensions of a scan's files, in the evidence's order (image or high half, then
    /// low half), lower-case: what the store archives them under.
    pub fn extensions(scan: &XrayScan) -> Vec<String> {
        scan_files(scan)
            .map(|p| {
                p.extension()
                    .and_then(|e| e.to_str())
                    .map_or_else(|| "img".to_owned(), str::to_ascii_lowercase)
            })
            .collect()
    }

    /// Quarantines the files of a scan the join gave to no parcel (`why` is the join's note).
    pub fn orphaned(
        &self,
        line_id: &str,
        scan: &XrayScan,
        why: super::join::JoinNote,
        telemetry: &Telemetry,
    ) {
        let (kind, reason) = match why {
            super::join::JoinNote::AmbiguousImage => (
                "ambiguous",
                "more than one parcel entered the line within image_window of this image's expected time; joined to none rather than by guess",
            ),
            _ => (
                "orphan",
                "no parcel entered the line near the time of this image, and no parcel's waybill matched it",
            ),
        };
        self.quarantine_scan(line_id, scan, kind, reason, telemetry);
    }

    /// Moves a scan's files to quarantine as `kind`, with `reason` beside them.
    fn quarantine_scan(
        &self,
        line_id: &str,
        scan: &XrayScan,
        kind: &'static str,
        reason: &str,
        telemetry: &Telemetry,
    ) {
        let files: Vec<Refused<'_>> = scan_files(scan).map(Refused::path).collect();
        quarantine_files(
            line_id,
            &self.quarantine_dir,
            &files,
            MAX_IMAGE_BYTES,
            kind,
            reason,
            telemetry,
        );
    }
}

fn scan_files(scan: &XrayScan) -> impl Iterator<Item = &Path> {
    std::iter::once(scan.path.as_path()).chain(scan.low_energy.as_deref())
}

#[derive(Deserialize)]
struct Sidecar {
    #[serde(default)]
    captured_at: Option<String>,
    #[serde(default)]
    waybill: Option<String>,
}

/// Whether a name is not a temporary (hidden) file.
fn visible(path: &Path) -> bool {
    path.file_name()
        .and_then(|n| n.to_str())
        .is_some_and(|n| !n.starts_with('.'))
}

fn has_extension(path: &Path, exts: &[&str]) -> bool {
    path.extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| exts.iter().any(|x| e.eq_ignore_ascii_case(x)))
}

/// Whether a path is an image the machine may drop (not a temporary or a sidecar).
pub fn is_image(path: &Path) -> bool {
    visible(path) && has_extension(path, &IMAGE_EXTENSIONS)
}

/// Whether a path is a sidecar `<scan-id>.json`.
pub fn is_sidecar(path: &Path) -> bool {
    visible(path) && has_extension(path, &["json"])
}
/// Which part of a scan a file is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Part {
    /// The one pseudo-colour image.
    Single,
    /// The high-energy half of a pair.
    High,
    /// The low-energy half of a pair.
    Low,
}

/// The scan id and part a file name stands for: `a.png` → (`a`, Single), `a.high.tif` →
/// (`a`, High). `None` for a name that is not an image or not UTF-8.
pub fn classify(path: &Path) -> Option<(String, Part)> {
    if !is_image(path) {
        return None;
    }
    let stem = path.file_stem()?.to_str()?;
    let lower = stem.to_ascii_lowercase();
    let (id, part) = if lower.ends_with(".high") {
        (&stem[..stem.len() - 5], Part::High)
    } else if lower.ends_with(".low") {
        (&stem[..stem.len() - 4], Part::Low)
    } else {
        (stem, Part::Single)
    };
    (!id.is_empty()).then(|| (id.to_owned(), part))
}

/// Why a file was refused, for the counter (`xray.quarantined.<kind>`) and the reason file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// A short key: `too_large`, `unreadable`, `too_many_pixels`, `wrong_colour`,
    /// `lone_half`, `mismatched_pair`, `unsupported_format`.
    pub kind: &'static str,
    /// The reason in words, naming the limit or the expectation.
    pub reason: String,
}

fn refuse(kind: &'static str, reason: String) -> Refusal {
    Refusal { kind, reason }
}

/// What a file's header says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Probe {
    /// Width and height in pixels.
    pub dimensions: (u32, u32),
    /// The colour type the pixels would decode to.
    pub colour: ColorType,
}

/// Opens a dropped image through a checked descriptor ([`open_regular`]) and probes its
/// header ([`probe_file`]).
pub fn probe(path: &Path, part: Part) -> Result<Probe, Refusal> {
    let (file, id) =
        open_regular(path, MAX_IMAGE_BYTES).map_err(|e| refuse(e.kind(), e.to_string()))?;
    probe_file(file, id.size(), part)
}

/// Reads an opened file's header — format, dimensions, colour type — through its descriptor,
/// without decoding the pixels, and checks it against the limits and what `part` must be.
pub fn probe_file(file: std::fs::File, len: u64, part: Part) -> Result<Probe, Refusal> {
    if len == 0 {
        return Err(refuse("unreadable", "the file is empty".into()));
    }
    let reader = image::ImageReader::new(std::io::BufReader::new(file))
        .with_guessed_format()
        .map_err(|e| refuse("unreadable", format!("cannot read the file: {e}")))?;
    match reader.format() {
        Some(ImageFormat::Png | ImageFormat::Jpeg | ImageFormat::Tiff) => {}
        Some(f) => {
            return Err(refuse(
                "unsupported_format",
                format!("{f:?}: only PNG, JPEG and TIFF are taken"),
            ))
        }
        None => {
            return Err(refuse(
                "unreadable",
                "not a PNG, JPEG or TIFF file (unknown signature)".into(),
            ))
        }
    }
    let mut decoder = reader
        .into_decoder()
        .map_err(|e| refuse("unreadable", format!("bad image header: {e}")))?;
    let (w, h) = decoder.dimensions();
    let pixels = u64::from(w) * u64::from(h);
    if w == 0 || h == 0 || w > MAX_PIXELS_SIDE || h > MAX_PIXELS_SIDE || pixels > MAX_PIXELS {
        return Err(refuse(
            "too_many_pixels",
            format!(
                "{w}x{h} pixels: each side must be 1 to {MAX_PIXELS_SIDE} and the total at most {MAX_PIXELS}"
            ),
        ));
    }
    decoder
        .set_limits(limits())
        .map_err(|e| refuse("too_many_pixels", format!("over the decoding limits: {e}")))?;
    let colour = decoder.color_type();
    let ok = match part {
        Part::Single => matches!(colour, ColorType::Rgb8 | ColorType::Rgba8),
        Part::High | Part::Low => colour == ColorType::L16,
    };
    if !ok {
        let want = match part {
            Part::Single => "a single image must be 8-bit RGB (a 16-bit grey image must be one half of a pair NAME.high.png + NAME.low.png)",
            Part::High | Part::Low => "each half of a dual-energy pair must be 16-bit grey",
        };
        return Err(refuse("wrong_colour", format!("{colour:?}: {want}")));
    }
    Ok(Probe {
        dimensions: (w, h),
        colour,
    })
}

/// A half of a dual-energy pair waiting for the other.
struct HalfPair {
    high: Option<(PathBuf, Probe)>,
    low: Option<(PathBuf, Probe)>,
    since: Instant,
}

/// The watcher's state between events: which files were taken, which halves and sidecars
/// wait.
struct Intake {
    line_id: String,
    policy: XrayPolicy,
    telemetry: Arc<Telemetry>,
    /// Each name taken, with which file it was: the same name seen again as another file
    /// (another inode, size or modification time) is a new scan.
    taken: HashMap<PathBuf, FileId>,
    pairs: HashMap<String, HalfPair>,
    /// Sidecars in the folder, with when each was first seen (by this appliance's clock:
    /// the machine's modification times are not trusted).
    sidecars: HashMap<PathBuf, (FileId, Instant)>,
}

impl Intake {
    fn new(line_id: String, policy: XrayPolicy, telemetry: Arc<Telemetry>) -> Intake {
        Intake {
            line_id,
            policy,
            telemetry,
            taken: HashMap::new(),
            pairs: HashMap::new(),
            sidecars: HashMap::new(),
        }
    }

    /// Takes one complete file; returns a scan when it completes one.
    fn take(&mut self, path: PathBuf) -> Option<XrayScan> {
        let (scan_id, part) = classify(&path)?;
        let seen = entry_id(&path).ok().flatten()?;
        if self.taken.get(&path) == Some(&seen) {
            return None;
        }
        self.taken.insert(path.clone(), seen);
        self.telemetry
            .incr_line(&self.line_id, LineCounter::XrayFiles);
        let (file, id) = match open_regular(&path, MAX_IMAGE_BYTES) {
            Ok(f) => f,
            Err(e) if e.is_gone() => return None,
            Err(e) => {
                // A link, a FIFO, a giant: nothing of it is read or kept.
                self.refuse_unread(&path, seen, &e);
                return None;
            }
        };
        if id != seen {
            // Replaced between the look and the open: the next event or rescan takes it.
            self.taken.remove(&path);
            return None;
        }
        let probe = match probe_file(file, id.size(), part) {
            Ok(p) => p,
            Err(r) => {
                self.quarantine(&[Refused::path(&path)], r);
                return None;
            }
        };
        if part == Part::Single {
            return Some(self.scan_for(&scan_id, path, None));
        }
        let half = self
            .pairs
            .entry(scan_id.clone())
            .or_insert_with(|| HalfPair {
                high: None,
                low: None,
                since: Instant::now(),
            });
        let slot = if part == Part::High {
            &mut half.high
        } else {
            &mut half.low
        };
        let replaced = slot.replace((path, probe));
        let complete = match (&half.high, &half.low) {
            (Some((high, hp)), Some((low, lp))) => {
                Some((high.clone(), low.clone(), hp.dimensions, lp.dimensions))
            }
            _ => None,
        };
        if let Some((old, _)) = replaced {
            // The same half twice under two spellings (a.high.png and a.high.tif).
            self.quarantine(
                &[Refused::path(&old)],
                refuse(
                    "mismatched_pair",
                    "another file for the same half of this pair arrived".into(),
                ),
            );
        }
        let (high, low, hd, ld) = complete?;
        self.pairs.remove(&scan_id);
        if hd != ld {
            self.quarantine(
                &[Refused::path(&high), Refused::path(&low)],
                refuse(
                    "mismatched_pair",
                    format!(
                        "the halves differ in size: high {}x{}, low {}x{}",
                        hd.0, hd.1, ld.0, ld.1
                    ),
                ),
            );
            return None;
        }
        Some(self.scan_for(&scan_id, high, Some(low)))
    }

    /// Refuses a name that could not be opened as a regular file of its own within the
    /// limit: a reason, a counter, a log line; the name leaves the folder, nothing is read.
    fn refuse_unread(&self, path: &Path, seen: FileId, e: &DropError) {
        self.quarantine(
            &[Refused {
                path,
                seen: Some(seen),
                bytes: None,
            }],
            refuse(e.kind(), e.to_string()),
        );
    }

    /// Forgets taken names no longer in the folder (screened, quarantined, deleted), so the
    /// map stays small and a file later dropped under such a name is a new scan even if it
    /// got the old one's inode number, size and (coarse) modification time.
    fn forget_missing(&mut self, present: &HashSet<PathBuf>) {
        self.taken.retain(|p, _| present.contains(p));
    }

    /// Quarantines halves whose partner did not come in time.
    fn expire_pairs(&mut self, now: Instant) {
        let wait = self.policy.pair_wait;
        let expired: Vec<String> = self
            .pairs
            .iter()
            .filter(|(_, h)| now >= h.since + wait)
            .map(|(id, _)| id.clone())
            .collect();
        for id in expired {
            let Some(h) = self.pairs.remove(&id) else {
                continue;
            };
            for (half, missing) in [(h.high, "low"), (h.low, "high")] {
                if let Some((path, _)) = half {
                    self.quarantine(
                        &[Refused::path(&path)],
                        refuse(
                            "lone_half",
                            format!(
                                "the {missing}-energy half {id}.{missing}.* did not arrive within {} ms",
                                wait.as_millis()
                            ),
                        ),
                    );
                }
            }
        }
    }

    /// Notes the sidecars a rescan found and quarantines those whose image has not come
    /// within `sidecar_wait` of their first sighting (a sidecar taken with its image has
    /// left the folder by then).
    fn sweep_sidecars(&mut self, found: Vec<(PathBuf, FileId)>, now: Instant) {
        let mut still = HashMap::with_capacity(found.len());
        for (path, id) in found {
            let since = match self.sidecars.get(&path) {
                Some((was, since)) if *was == id => *since,
                _ => now,
            };
            still.insert(path, (id, since));
        }
        self.sidecars = still;
        let wait = self.policy.sidecar_wait;
        let stale: Vec<(PathBuf, FileId)> = self
            .sidecars
            .iter()
            .filter(|(_, (_, since))| now >= *since + wait)
            .map(|(p, (id, _))| (p.clone(), *id))
            .collect();
        for (path, id) in stale {
            self.sidecars.remove(&path);
            self.telemetry
                .incr_line(&self.line_id, LineCounter::XrayOrphanSidecars);
            let (bytes, why) = match read_regular(&path, MAX_SIDECAR_BYTES) {
                Ok((b, read)) if read == id => (Some(b), None),
                Ok(_) => continue, // rewritten since the rescan: a new sidecar
                Err(e) if e.is_gone() => continue,
                Err(e) => (None, Some(e)),
            };
            self.quarantine(
                &[Refused {
                    path: &path,
                    seen: Some(id),
                    bytes: bytes.as_deref(),
                }],
                refuse(
                    "orphan_sidecar",
                    match why {
                        None => format!(
                            "no image of this scan id arrived within {} ms (the join window) of this sidecar",
                            wait.as_millis()
                        ),
                        Some(e) => format!("a sidecar that cannot be taken: {e}"),
                    },
                ),
            );
        }
    }

    fn quarantine(&self, files: &[Refused<'_>], r: Refusal) {
        quarantine_files(
            &self.line_id,
            &self.policy.quarantine_dir,
            files,
            MAX_IMAGE_BYTES,
            r.kind,
            &r.reason,
            &self.telemetry,
        );
    }

    /// The scan for a complete image (or pair), with what its sidecar says: the sidecar is
    /// read through a checked descriptor (a link, a FIFO or anything over
    /// [`MAX_SIDECAR_BYTES`] is refused unread and quarantined), then leaves the folder —
    /// its content lives on in the scan and the parcel's record.
    fn scan_for(&mut self, scan_id: &str, path: PathBuf, low_energy: Option<PathBuf>) -> XrayScan {
        let sidecar = path
            .parent()
            .unwrap_or(Path::new("."))
            .join(format!("{scan_id}.json"));
        let mut scan = XrayScan {
            scan_id: scan_id.to_owned(),
            path,
            completed: Instant::now(),
            low_energy,
            waybill: waybill_in_name(scan_id),
            captured_at: SystemTime::now(),
        };
        self.sidecars.remove(&sidecar);
        let telemetry = self.telemetry.clone();
        let bad = |what: &str, e: &dyn std::fmt::Display| {
            telemetry.incr_line(&self.line_id, LineCounter::XrayBadSidecars);
            tracing::warn!(line = %self.line_id, file = %sidecar.display(), error = %e, "sidecar {what}");
        };
        let (bytes, id) = match read_regular(&sidecar, MAX_SIDECAR_BYTES) {
            Ok(read) => read,
            Err(e) if e.is_gone() => return scan,
            Err(e) => {
                bad("refused", &e);
                if let Ok(Some(seen)) = entry_id(&sidecar) {
                    self.refuse_unread(&sidecar, seen, &e);
                }
                return scan;
            }
        };
        match serde_json::from_slice::<Sidecar>(&bytes) {
            Ok(s) => {
                match s.captured_at.as_deref().map(crate::time_fmt::parse) {
                    Some(Ok(t)) => scan.captured_at = t,
                    Some(Err(e)) => bad("captured_at ignored", &e),
                    None => {}
                }
                match s.waybill.as_deref().map(WaybillNo::parse) {
                    Some(Ok(w)) => scan.waybill = Some(w),
                    Some(Err(e)) => bad("waybill ignored", &e),
                    None => {}
                }
            }
            Err(e) => bad("ignored", &e),
        }
        if let Err(e) = remove_if_same(&sidecar, &id) {
            tracing::warn!(line = %self.line_id, file = %sidecar.display(), error = %e, "cannot remove a taken sidecar");
        }
        scan
    }
}

/// Watches one line's drop folder until `shutdown`.
pub async fn watch(
    line_id: String,
    dir: PathBuf,
    policy: XrayPolicy,
    out: mpsc::Sender<LineInput>,
    telemetry: Arc<Telemetry>,
    shutdown: CancellationToken,
) {
    let link = Link::line(&line_id, Device::Xray);
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
                telemetry.link(link.clone(), true, format!("watching {}", dir.display()));
                Some(w)
            }
            Err(e) => {
                telemetry.link(
                    link.clone(),
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
    let mut intake = Intake::new(line_id.clone(), policy, telemetry.clone());
    let mut sizes: HashMap<PathBuf, u64> = HashMap::new();
    let mut rescan = tokio::time::interval(RESCAN);
    loop {
        let (ready, sidecars) = tokio::select! {
            _ = shutdown.cancelled() => return,
            Some(p) = events.recv() => (vec![p], None),
            _ = rescan.tick() => {
                match list_folder(&dir, &mut sizes) {
                    Ok((files, sidecars)) => {
                        telemetry.link(link.clone(), true, format!("watching {}", dir.display()));
                        let present: HashSet<PathBuf> =
                            sizes.keys().chain(&files).cloned().collect();
                        (files, Some((sidecars, present)))
                    }
                    Err(e) => {
                        telemetry.link(link.clone(), false, format!("cannot read {}: {e}", dir.display()));
                        (Vec::new(), None)
                    }
                }
            },
        };
        // Probing and quarantining read files: off the async workers.
        let (back, scans) = match tokio::task::spawn_blocking(move || {
            if let Some((found, present)) = sidecars {
                let now = Instant::now();
                intake.forget_missing(&present);
                intake.expire_pairs(now);
                intake.sweep_sidecars(found, now);
            }
            let scans: Vec<XrayScan> = ready.into_iter().filter_map(|p| intake.take(p)).collect();
            (intake, scans)
        })
        .await
        {
            Ok(r) => r,
            Err(e) => {
                tracing::error!(error = %e, "X-ray intake failed");
                return;
            }
        };
        intake = back;
        for scan in scans {
            telemetry.incr_line(&line_id, LineCounter::XrayImages);
            telemetry.seen(&link);
            if out
                .send(LineInput::Image(scan, Instant::now()))
                .await
                .is_err()
            {
                return;
            }
        }
    }
}

/// One rescan of the folder: the images whose size did not change since the previous
/// rescan, and any name that is no regular file (refused at once, whatever its size); and
/// the sidecars there, each with what it is (not following links).
#[allow(clippy::type_complexity)]
fn list_folder(
    dir: &Path,
    sizes: &mut HashMap<PathBuf, u64>,
) -> std::io::Result<(Vec<PathBuf>, Vec<(PathBuf, FileId)>)> {
    let mut now = HashMap::new();
    let mut stable = Vec::new();
    let mut sidecars = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let path = entry.path();
        if is_sidecar(&path) {
            if let Ok(Some(id)) = entry_id(&path) {
                sidecars.push((path, id));
            }
            continue;
        }
        if !is_image(&path) {
            continue;
        }
        // DirEntry::metadata does not follow links.
        let Ok(meta) = entry.metadata() else { continue };
        if !meta.file_type().is_file() {
            stable.push(path);
            continue;
        }
        let len = meta.len();
        if len > 0 && sizes.get(&path) == Some(&len) {
            stable.push(path.clone());
        }
        now.insert(path, len);
    }
    *sizes = now;
    Ok((stable, sidecars))
}

/// The waybill a scan id names: the whole id, or its part after the last `_`, when that is
/// a waybill number with a carrier's letter prefix (`SF…`, `JD…`). A bare counter such as
/// `20260101120000` names none: it could be mistaken for a number-only waybill.
pub fn waybill_in_name(scan_id: &str) -> Option<WaybillNo> {
    let candidate = scan_id.rsplit('_').next()?;
    let letters = candidate
        .bytes()
        .take_while(|b| b.is_ascii_uppercase())
        .count();
    if !(1..=4).contains(&letters) || !candidate[letters..].bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    WaybillNo::parse(candidate).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use image::{ImageBuffer, Luma, Rgb, RgbImage};
    use sha2::Digest;

    struct Dir(crate::testutil::TempDir);
    impl Dir {
        fn new(tag: &str) -> Dir {
            let d = crate::testutil::temp_dir(&format!("xray-{tag}"));
            std::fs::create_dir_all(d.join("drop")).expect("dir");
            Dir(d)
        }
        fn drop_dir(&self) -> PathBuf {
            self.0.join("drop")
        }
        fn quarantine(&self) -> PathBuf {
            self.0.join("q")
        }
    }
    fn rgb(w: u32, h: u32) -> RgbImage {
        RgbImage::from_fn(w, h, |x, y| Rgb([x as u8, y as u8, 128]))
    }

    /// The next image the watcher hands on, within 5 s.
    async fn next_image(rx: &mut mpsc::Receiver<LineInput>) -> XrayScan {
        let got = tokio::time::timeout(Duration::from_secs(5), rx.recv())
            .await
            .expect("in time")
            .expect("an image");
        let LineInput::Image(scan, _) = got else {
            panic!("not an image: {got:?}")
        };
        scan
    }
    fn grey16(w: u32, h: u32) -> ImageBuffer<Luma<u16>, Vec<u16>> {
        ImageBuffer::from_fn(w, h, |x, y| Luma([(x * 300 + y) as u16]))
    }

    fn crc32(bytes: &[u8]) -> u32 {
        let mut c = 0xffff_ffffu32;
        for b in bytes {
            c ^= u32::from(*b);
            for _ in 0..8 {
                c = if c & 1 == 1 {
                    (c >> 1) ^ 0xedb8_8320
                } else {
                    c >> 1
                };
            }
        }
        !c
    }

    /// A valid small PNG whose header claims `w`×`h` pixels: a decompression bomb's shape.
    fn png_claiming(w: u32, h: u32) -> Vec<u8> {
        let mut bytes = Vec::new();
        rgb(2, 2)
            .write_to(&mut std::io::Cursor::new(&mut bytes), ImageFormat::Png)
            .expect("png");
        // Signature (8), IHDR length (4), "IHDR" (4), width, height, …, CRC over type+data.
        bytes[16..20].copy_from_slice(&w.to_be_bytes());
        bytes[20..24].copy_from_slice(&h.to_be_bytes());
        let crc = crc32(&bytes[12..29]);
        bytes[29..33].copy_from_slice(&crc.to_be_bytes());
        bytes
    }

    /// Line L1's counter `c`.
    fn count(t: &Telemetry, c: LineCounter) -> u64 {
        t.get(crate::telemetry::Counter::line("L1", c))
    }

    /// Line L1's files quarantined as `kind`.
    fn quarantined(t: &Telemetry, kind: &'static str) -> u64 {
        count(t, LineCounter::XrayQuarantined(kind))
    }

    fn intake(dir: &Dir) -> Intake {
        Intake::new(
            "L1".into(),
            XrayPolicy {
                quarantine_dir: dir.quarantine(),
                after: XrayAfter::Keep,
                pair_wait: Duration::from_millis(100),
                sidecar_wait: Duration::from_millis(300),
            },
            Arc::new(Telemetry::default()),
        )
    }

    /// A fresh folder, its drop folder and an intake on it.
    fn fresh_intake(tag: &str) -> (Dir, PathBuf, Intake) {
        let dir = Dir::new(tag);
        let (d, intake) = (dir.drop_dir(), intake(&dir));
        (dir, d, intake)
    }

    fn reason(dir: &Dir, name: &str) -> String {
        std::fs::read_to_string(dir.quarantine().join(format!("{name}.reason.txt")))
            .unwrap_or_else(|e| panic!("no reason file for {name}: {e}"))
    }

    #[test]
    fn names_say_single_or_which_half() {
        let c = |n: &str| classify(Path::new(n));
        assert_eq!(c("a.png"), Some(("a".into(), Part::Single)));
        assert_eq!(c("a.HIGH.TIF"), Some(("a".into(), Part::High)));
        assert_eq!(c("scan.7.low.tiff"), Some(("scan.7".into(), Part::Low)));
        assert_eq!(c(".a.png.part"), None);
        assert_eq!(c("a.json"), None);
        assert_eq!(c(".high.png"), None);
        assert_eq!(
            waybill_in_name("0815_SF1234567890123").map(|w| w.to_string()),
            Some("SF1234567890123".into())
        );
        assert!(waybill_in_name("SF1234567890123").is_some());
        assert!(waybill_in_name("20260101120000123").is_none());
        assert!(waybill_in_name("scan-0001").is_none());
    }

    #[test]
    fn takes_rgb_images_in_every_format_and_whole_pairs() {
        let (dir, d, mut intake) = fresh_intake("good");
        for (name, fmt) in [
            ("p.png", ImageFormat::Png),
            ("j.jpg", ImageFormat::Jpeg),
            ("t.tif", ImageFormat::Tiff),
        ] {
            rgb(40, 30)
                .save_with_format(d.join(name), fmt)
                .expect("save");
            let scan = intake.take(d.join(name)).expect("taken");
            assert_eq!(scan.path, d.join(name));
            assert_eq!(scan.low_energy, None);
            // Taken once only.
            assert!(intake.take(d.join(name)).is_none());
        }
        grey16(40, 30)
            .save(d.join("SF1234567890123.high.png"))
            .expect("save");
        assert!(
            intake.take(d.join("SF1234567890123.high.png")).is_none(),
            "waits for its partner"
        );
        grey16(40, 30)
            .save(d.join("SF1234567890123.low.png"))
            .expect("save");
        let scan = intake
            .take(d.join("SF1234567890123.low.png"))
            .expect("a pair");
        assert_eq!(scan.scan_id, "SF1234567890123");
        assert_eq!(scan.path, d.join("SF1234567890123.high.png"));
        assert_eq!(scan.low_energy, Some(d.join("SF1234567890123.low.png")));
        assert_eq!(
            scan.waybill.as_ref().map(|w| w.to_string()).as_deref(),
            Some("SF1234567890123")
        );
        // And the pair decodes as a pair.
        let (_, _, img) = crate::line::image::load_scan(&scan).expect("decodes");
        assert!(matches!(img, crate::line::image::Decoded::Pair { .. }));
        assert_eq!(img.dimensions(), (40, 30));
        assert!(!dir.quarantine().exists(), "nothing quarantined");
    }

    #[test]
    fn bad_files_go_to_quarantine_with_a_reason_and_a_counter() {
        let (dir, d, mut intake) = fresh_intake("bad");
        std::fs::write(d.join("bomb.png"), png_claiming(100_000, 100_000)).expect("write");
        std::fs::write(d.join("wide.png"), png_claiming(8000, 8000)).expect("write");
        std::fs::write(d.join("junk.png"), b"\x89PNG\r\n\x1a\nnot really").expect("write");
        std::fs::write(d.join("text.jpg"), b"hello").expect("write");
        std::fs::write(d.join("empty.tif"), b"").expect("write");
        grey16(10, 10).save(d.join("grey.png")).expect("save");
        rgb(10, 10).save(d.join("rgb.high.png")).expect("save");
        grey16(10, 10).save(d.join("rgb.low.png")).expect("save");
        grey16(10, 10).save(d.join("m.high.png")).expect("save");
        grey16(12, 10).save(d.join("m.low.png")).expect("save");
        for name in [
            "bomb.png",
            "wide.png",
            "junk.png",
            "text.jpg",
            "empty.tif",
            "grey.png",
            "rgb.high.png",
            "rgb.low.png",
            "m.high.png",
            "m.low.png",
        ] {
            assert!(intake.take(d.join(name)).is_none(), "{name} refused");
        }
        assert!(reason(&dir, "bomb.png").contains("100000x100000"));
        assert!(reason(&dir, "wide.png").contains("at most 40000000"));
        assert!(
            reason(&dir, "junk.png").contains("header"),
            "{}",
            reason(&dir, "junk.png")
        );
        // Read through the descriptor, the format comes from the bytes, not the name.
        assert!(reason(&dir, "text.jpg").contains("unknown signature"));
        assert!(reason(&dir, "empty.tif").contains("empty"));
        assert!(reason(&dir, "grey.png").contains("must be 8-bit RGB"));
        assert!(reason(&dir, "rgb.high.png").contains("16-bit grey"));
        assert!(reason(&dir, "m.high.png").contains("differ in size"));
        assert!(reason(&dir, "m.low.png").contains("high 10x10, low 12x10"));
        // The good half of the pair with a bad half waits, then goes as a lone half.
        assert!(d.join("rgb.low.png").exists());
        intake.expire_pairs(Instant::now() + Duration::from_millis(150));
        assert!(reason(&dir, "rgb.low.png").contains("high-energy half rgb.high.* did not arrive"));
        let t = &intake.telemetry;
        assert_eq!(t.counters().to_map()["xray.quarantined"], 10);
        assert_eq!(quarantined(t, "too_many_pixels"), 2);
        assert_eq!(quarantined(t, "lone_half"), 1);
        assert_eq!(quarantined(t, "mismatched_pair"), 2);
        assert_eq!(
            std::fs::read_dir(&d).expect("drop").count(),
            0,
            "the drop folder is empty"
        );
    }

    #[test]
    fn after_screening_archives_deletes_or_quarantines() {
        let dir = Dir::new("after");
        let d = dir.drop_dir();
        let images = dir.0.join("data/images");
        std::fs::create_dir_all(&images).expect("images");
        let mut intake = intake(&dir);
        let t = intake.telemetry.clone();
        for id in ["k", "x", "u"] {
            grey16(8, 8)
                .save(d.join(format!("{id}.high.png")))
                .expect("save");
            grey16(8, 8)
                .save(d.join(format!("{id}.low.png")))
                .expect("save");
            std::fs::write(d.join(format!("{id}.json")), "{}").expect("sidecar");
        }
        let mut take = |id: &str| {
            intake.take(d.join(format!("{id}.high.png")));
            intake
                .take(d.join(format!("{id}.low.png")))
                .expect("a pair")
        };
        let (k, x, u) = (take("k"), take("x"), take("u"));
        // The sidecars were taken with their images.
        assert!(!d.join("k.json").exists());
        let evidence = |scan: &XrayScan| {
            let (image, low_energy, _) = crate::line::image::load_scan(scan).expect("loads");
            Evidence {
                image,
                low_energy,
                thumbnail_jpeg: None,
            }
        };
        let (ke, xe) = (evidence(&k), evidence(&x));
        let mut policy = intake.policy.clone();
        // As the sink does: the store archives what screening read, then the scan leaves.
        assert!(policy.keeps_images());
        let kept =
            crate::store::images::archive(&images, "rec-1", &ke, &XrayPolicy::extensions(&k))
                .expect("archived");
        policy
            .after_screening("L1", &k, Ok(&ke), true, &t)
            .expect("taken out of the drop folder");
        assert_eq!(kept, dir.0.join("data/images/rec-1.high.png"));
        // What is archived is exactly what screening read and hashed.
        for (f, part) in ke.files().zip(["high", "low"]) {
            let archived = std::fs::read(dir.0.join(format!("data/images/rec-1.{part}.png")))
                .expect("archived");
            assert_eq!(hex::encode(sha2::Sha256::digest(&archived)), f.sha256);
        }
        policy.after = XrayAfter::Delete;
        assert!(!policy.keeps_images());
        policy
            .after_screening("L1", &x, Ok(&xe), false, &t)
            .expect("deleted");
        policy
            .after_screening("L1", &u, Err("unexpected end of file"), false, &t)
            .expect("quarantined");
        assert!(reason(&dir, "u.high.png").contains("unexpected end of file"));
        assert!(dir.quarantine().join("u.low.png").exists());
        assert_eq!(
            std::fs::read_dir(&d).expect("drop").count(),
            0,
            "nothing left behind"
        );
        assert_eq!(count(&t, LineCounter::XrayDeleted), 1);
        assert_eq!(std::fs::read_dir(&images).expect("images").count(), 2);
        assert_eq!(quarantined(&t, "unreadable"), 2);
    }

    #[tokio::test]
    async fn the_watcher_takes_only_complete_files_and_sidecars() {
        let mut w = Watching::start("watch");
        let d = w.dir.drop_dir();
        // Give the watcher its first rescan before files arrive.
        tokio::time::sleep(Duration::from_millis(100)).await;
        std::fs::write(
            d.join("s1.json"),
            r#"{"captured_at":"2026-03-01T08:00:00Z","waybill":"SF9000000000001"}"#,
        )
        .expect("sidecar");
        let png = png_bytes(0);
        // Half a file, written and held open: never taken while it is incomplete.
        let mut partial = std::fs::File::create(d.join("s2.png")).expect("create");
        std::io::Write::write_all(&mut partial, &png[..png.len() / 2]).expect("write");
        std::io::Write::flush(&mut partial).expect("flush");
        // A complete one, renamed into place.
        drop_file(&d, "s1.png", &png);
        let scan = next_image(&mut w.rx).await;
        assert_eq!(scan.scan_id, "s1");
        assert_eq!(
            scan.waybill.as_ref().map(|w| w.to_string()).as_deref(),
            Some("SF9000000000001")
        );
        assert_eq!(
            crate::time_fmt::format(scan.captured_at),
            "2026-03-01T08:00:00Z"
        );
        // The partial file: finished, closed, then taken.
        std::io::Write::write_all(&mut partial, &png[png.len() / 2..]).expect("write");
        drop(partial);
        let scan = next_image(&mut w.rx).await;
        assert_eq!(scan.scan_id, "s2");
        crate::line::image::load_scan(&scan).expect("complete when taken");
        w.stop().await;
    }

    #[tokio::test]
    async fn a_folder_recreated_under_the_watcher_is_read_by_the_rescan() {
        // The X-ray machine's share remounted, or its folder re-created: the file-event
        // watch is gone with the old folder, and only the periodic rescan still sees files.
        let mut w = Watching::start("recreated");
        let d = w.dir.drop_dir();
        let link_is = |up: bool| {
            let t = w.telemetry.clone();
            async move {
                while t.link_up(&Link::line("L1", Device::Xray)) != up {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            }
        };
        tokio::time::timeout(Duration::from_secs(5), link_is(true))
            .await
            .expect("watching");
        std::fs::remove_dir_all(&d).expect("remove the folder");
        tokio::time::timeout(Duration::from_secs(5), link_is(false))
            .await
            .expect("the folder's loss shows on the link");
        std::fs::create_dir_all(&d).expect("re-create the folder");
        drop_file(&d, "s9.png", &png_bytes(9));
        let scan = next_image(&mut w.rx).await;
        assert_eq!(scan.scan_id, "s9");
        assert!(w.telemetry.link_up(&Link::line("L1", Device::Xray)));
        w.stop().await;
    }

    /// The folder watcher of line L1 on a drop folder of its own, and what it hands on.
    struct Watching {
        rx: mpsc::Receiver<LineInput>,
        telemetry: Arc<Telemetry>,
        shutdown: CancellationToken,
        task: tokio::task::JoinHandle<()>,
        dir: Dir,
    }

    impl Watching {
        fn start(tag: &str) -> Watching {
            let dir = Dir::new(tag);
            let (tx, rx) = mpsc::channel(16);
            let shutdown = CancellationToken::new();
            let telemetry = Arc::new(Telemetry::default());
            let task = tokio::spawn(watch(
                "L1".into(),
                dir.drop_dir(),
                intake(&dir).policy,
                tx,
                telemetry.clone(),
                shutdown.clone(),
            ));
            Watching {
                rx,
                telemetry,
                shutdown,
                task,
                dir,
            }
        }

        async fn stop(self) {
            self.shutdown.cancel();
            self.task.await.expect("watcher");
        }
    }

    fn png_bytes(seed: u8) -> Vec<u8> {
        let mut png = Vec::new();
        RgbImage::from_fn(20, 20, |x, y| Rgb([x as u8, y as u8, seed]))
            .write_to(&mut std::io::Cursor::new(&mut png), ImageFormat::Png)
            .expect("png");
        png
    }

    /// Writes a file as the machine does: under a temporary name, renamed into place.
    fn drop_file(d: &Path, name: &str, bytes: &[u8]) {
        let tmp = d.join(format!(".{name}.part"));
        std::fs::write(&tmp, bytes).expect("write");
        std::fs::rename(&tmp, d.join(name)).expect("rename");
    }

    #[test]
    fn links_fifos_and_giants_named_like_scans_are_refused_unread() {
        let (dir, d, mut intake) = fresh_intake("links");
        let secret = dir.0.join("secret.txt");
        std::fs::write(&secret, b"password=hunter2").expect("secret");
        std::os::unix::fs::symlink(&secret, d.join("SF1000000000001.png")).expect("link");
        std::os::unix::fs::symlink("/dev/zero", d.join("zero.png")).expect("link");
        nix::unistd::mkfifo(&d.join("fifo.png"), nix::sys::stat::Mode::S_IRWXU).expect("fifo");
        let giant = std::fs::File::create(d.join("giant.png")).expect("create");
        giant.set_len(1_500_000_000).expect("sparse");
        std::fs::hard_link(&secret, d.join("hard.png")).expect("hard link");
        for name in [
            "SF1000000000001.png",
            "zero.png",
            "fifo.png",
            "giant.png",
            "hard.png",
        ] {
            assert!(intake.take(d.join(name)).is_none(), "{name} refused");
            let why = reason(&dir, name);
            assert!(why.contains("content not kept"), "{name}: {why}");
        }
        assert!(reason(&dir, "SF1000000000001.png").contains("symbolic link"));
        assert!(reason(&dir, "fifo.png").contains("a FIFO"));
        assert!(reason(&dir, "giant.png").contains("1500000000 bytes"));
        assert!(reason(&dir, "hard.png").contains("hard link"));
        // Nothing of any target was copied: the quarantine holds reason files only.
        for e in std::fs::read_dir(dir.quarantine()).expect("q") {
            let name = e.expect("entry").file_name().to_string_lossy().into_owned();
            assert!(name.ends_with(".reason.txt"), "{name} kept");
        }
        assert_eq!(std::fs::read(&secret).expect("target"), b"password=hunter2");
        assert_eq!(
            std::fs::read_dir(&d).expect("drop").count(),
            0,
            "the names are gone"
        );
        let t = &intake.telemetry;
        assert_eq!(quarantined(t, "symlink"), 2);
        assert_eq!(quarantined(t, "not_regular"), 2);
        assert_eq!(quarantined(t, "too_large"), 1);
    }

    #[test]
    fn a_reused_name_is_a_new_file() {
        let (_dir, d, mut intake) = fresh_intake("reuse");
        drop_file(&d, "s.png", &png_bytes(1));
        assert!(intake.take(d.join("s.png")).is_some());
        assert!(
            intake.take(d.join("s.png")).is_none(),
            "the same file, once"
        );
        // Screened and gone (a rescan notices), then the machine uses the scan id again.
        std::fs::remove_file(d.join("s.png")).expect("remove");
        intake.forget_missing(&HashSet::new());
        drop_file(&d, "s.png", &png_bytes(2));
        let again = intake.take(d.join("s.png")).expect("taken again");
        let (image, _, _) = crate::line::image::load_scan(&again).expect("loads");
        assert_eq!(image.bytes, png_bytes(2));
        // Even renamed over the old one while it was still there.
        drop_file(&d, "s.png", &png_bytes(3));
        assert!(
            intake.take(d.join("s.png")).is_some(),
            "a new file under the name"
        );
    }

    #[test]
    fn bad_sidecars_are_refused_unread_and_never_stall_the_image() {
        let (dir, d, mut intake) = fresh_intake("sidecars");
        let secret = dir.0.join("secret.json");
        std::fs::write(&secret, r#"{"waybill":"SF6666666666666"}"#).expect("secret");
        nix::unistd::mkfifo(&d.join("a.json"), nix::sys::stat::Mode::S_IRWXU).expect("fifo");
        let sparse = std::fs::File::create(d.join("b.json")).expect("create");
        sparse.set_len(1_500_000_000).expect("sparse");
        std::os::unix::fs::symlink(&secret, d.join("c.json")).expect("link");
        for id in ["a", "b", "c"] {
            drop_file(&d, &format!("{id}.png"), &png_bytes(4));
            // Taken at once (a FIFO opened without O_NONBLOCK would block here for ever).
            let scan = intake.take(d.join(format!("{id}.png"))).expect("the image");
            assert_eq!(scan.waybill, None, "{id}: nothing read through the sidecar");
            assert!(reason(&dir, &format!("{id}.json")).contains("content not kept"));
        }
        assert!(reason(&dir, "b.json").contains("over the 4096-byte limit"));
        assert_eq!(count(&intake.telemetry, LineCounter::XrayBadSidecars), 3);
        assert_eq!(
            std::fs::read_dir(dir.quarantine()).expect("q").count(),
            3,
            "reasons only"
        );
    }

    #[test]
    fn a_sidecar_whose_image_never_came_is_quarantined_after_the_window() {
        let (dir, d, mut intake) = fresh_intake("orphan-sidecar");
        drop_file(&d, "s7.json", br#"{"waybill":"SF7777777777777"}"#);
        let mut sizes = HashMap::new();
        let t0 = Instant::now();
        let (_, found) = list_folder(&d, &mut sizes).expect("list");
        intake.sweep_sidecars(found, t0);
        let (_, found) = list_folder(&d, &mut sizes).expect("list");
        intake.sweep_sidecars(found, t0 + Duration::from_millis(299));
        assert!(d.join("s7.json").exists(), "waits out the window");
        let (_, found) = list_folder(&d, &mut sizes).expect("list");
        intake.sweep_sidecars(found, t0 + Duration::from_millis(300));
        assert!(!d.join("s7.json").exists());
        assert!(reason(&dir, "s7.json").contains("no image of this scan id arrived"));
        assert_eq!(
            std::fs::read(dir.quarantine().join("s7.json")).expect("kept"),
            br#"{"waybill":"SF7777777777777"}"#
        );
        assert_eq!(quarantined(&intake.telemetry, "orphan_sidecar"), 1);
        // The scan id used again later picks up no stale waybill.
        drop_file(&d, "s7.png", &png_bytes(5));
        assert_eq!(intake.take(d.join("s7.png")).expect("image").waybill, None);
    }
}
