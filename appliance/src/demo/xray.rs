//! The demo's X-ray machines: each scans the parcels its line's photo-eye sees and drops
//! each scan into its line's folder [`IMAGE_DELAY`] after the parcel reached the eye, as the
//! contract's drop folder describes — the sidecar first, then the image (or the low-energy half, then
//! the high-energy half) renamed into place.
//!
//! Like a real site's machines, most do not know the waybill: with [`Sidecars`] a machine
//! writes a sidecar naming it, one with only `captured_at`, or none, so that the line joins
//! the scan by waybill or by time alone. With a line-sized [`xraygen::Scanner`] a machine
//! writes 16-bit dual-energy pairs instead of one pseudo-colour image.
//!
//! Each machine also tells the demo's [`Truth`] which scan it made of which parcel, keyed by
//! the sequence number the line controller gave the parcel at the photo-eye: what the join
//! should have done, to count what it did wrong.
//!
//! A real machine's image is ready a fixed time after the parcel passes, whatever its
//! computer is doing; so this one renders ahead of the belt and times each scan from when
//! the parcel was put at the eye, not from when its thread heard of the entry (on a loaded
//! computer that can be a hundred milliseconds later, which would make the simulator, not
//! the line, misplace scans in time). A scan it still completes late is counted.

use super::truth::Truth;
use anyhow::Context;
use image::codecs::png::{CompressionType, FilterType, PngEncoder};
use image::ImageEncoder;
use screenline_emulator::LineEvent;
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

/// How long after a parcel reaches the photo-eye the X-ray machine finishes its image.
pub const IMAGE_DELAY: Duration = Duration::from_millis(300);

/// Which sidecars the demo's X-ray machines write (`screenline demo --sidecars`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum Sidecars {
    /// Every machine names the waybill (it reads the code itself, or the line's reader is
    /// wired to it): `captured_at` and `waybill`. The line joins by waybill.
    Waybill,
    /// Every machine writes only `captured_at`: the line joins by time.
    Time,
    /// No machine writes a sidecar: the image alone, joined by time.
    None,
    /// A site's mixed fleet, by line: line 1's machine names the waybill (the one machine
    /// integrated with its reader), lines 2, 4, 6, 8 write only the capture time (newer
    /// machines), lines 3, 5, 7 write nothing (older ones). One line alone is line 1.
    #[default]
    Mix,
}

/// What one X-ray machine writes beside each image.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sidecar {
    /// `{"captured_at", "waybill"}`.
    Waybill,
    /// `{"captured_at"}`.
    Time,
    /// No sidecar.
    None,
}

impl Sidecars {
    /// What the machine of line `line` (0 for line 1) writes.
    pub fn for_line(self, line: usize) -> Sidecar {
        match self {
            Sidecars::Waybill => Sidecar::Waybill,
            Sidecars::Time => Sidecar::Time,
            Sidecars::None => Sidecar::None,
            Sidecars::Mix if line == 0 => Sidecar::Waybill,
            Sidecars::Mix if line % 2 == 1 => Sidecar::Time,
            Sidecars::Mix => Sidecar::None,
        }
    }
}

impl Sidecar {
    /// The sidecar's content for a scan of the parcel with `waybill`, captured `at`; `None`
    /// when the machine writes none.
    pub fn content(self, waybill: &str, at: SystemTime) -> Option<serde_json::Value> {
        let captured_at = crate::time_fmt::format(at);
        match self {
            Sidecar::Waybill => Some(serde_json::json!({
                "captured_at": captured_at,
                "waybill": waybill,
            })),
            Sidecar::Time => Some(serde_json::json!({ "captured_at": captured_at })),
            Sidecar::None => None,
        }
    }
}

/// A scan rendered and encoded, ready to drop: one pseudo-colour PNG, or a dual-energy pair.
pub struct EncodedScan {
    files: ScanFiles,
    /// SHA-256 (hex) of the image, or of a pair's high half: what the line's record keeps
    /// as `image_sha256`.
    pub sha256: String,
}

#[derive(Clone)]
enum ScanFiles {
    Single(Arc<[u8]>),
    Pair { high: Arc<[u8]>, low: Arc<[u8]> },
}

impl EncodedScan {
    /// Renders `spec` with `seed` on `scanner` ([`xraygen::render_scan_exact`]: the parcel
    /// holds what the traffic says, nothing counterfeit besides) and encodes it as
    /// that machine writes it: `Small` as one 8-bit RGB PNG (the bytes the demo always
    /// wrote), the line-sized profiles as a 16-bit grey pair with the encoder's fast
    /// settings (a 1250 px pair is several megabytes of noise: the default settings cost
    /// far more time and save little).
    pub fn render(
        scanner: xraygen::Scanner,
        spec: xraygen::ParcelSpec,
        seed: u64,
    ) -> anyhow::Result<EncodedScan> {
        // The traffic decides which parcels are counterfeit: no secondary lot is.
        let scan = xraygen::render_scan_exact(scanner, spec, seed);
        let files = if scanner.writes_pairs() {
            ScanFiles::Pair {
                high: png16(&scan.high)
                    .context("encoding the high-energy half")?
                    .into(),
                low: png16(&scan.low)
                    .context("encoding the low-energy half")?
                    .into(),
            }
        } else {
            let mut png = Vec::new();
            PngEncoder::new(&mut png)
                .write_image(
                    scan.rgb.as_raw(),
                    scan.rgb.width(),
                    scan.rgb.height(),
                    image::ExtendedColorType::Rgb8,
                )
                .context("encoding the pseudo-colour image")?;
            ScanFiles::Single(png.into())
        };
        Ok(EncodedScan::of(files))
    }

    fn of(files: ScanFiles) -> EncodedScan {
        let sha256 = hex::encode(Sha256::digest(files.last()));
        EncodedScan { files, sha256 }
    }

    /// The same scan with `text` in a PNG `tEXt` chunk (keyword `Comment`) right after the
    /// header of the file that completes it: the pixels are untouched, the bytes — and so
    /// the SHA-256 the line records — are this copy's own. A [`ScanPool`] stamps each
    /// parcel's copy so that the demo's truth still tells every scan from every other.
    pub fn stamped(&self, text: &str) -> anyhow::Result<EncodedScan> {
        let stamp = |png: &[u8]| -> anyhow::Result<Arc<[u8]>> {
            // Signature (8 bytes), then IHDR: length (4), type (4), 13 bytes, CRC (4).
            const AFTER_IHDR: usize = 8 + 4 + 4 + 13 + 4;
            anyhow::ensure!(
                png.len() > AFTER_IHDR && &png[12..16] == b"IHDR",
                "not a PNG file with its header first"
            );
            let mut data = b"Comment\0".to_vec();
            data.extend_from_slice(text.as_bytes());
            let mut chunk = Vec::with_capacity(data.len() + 12);
            chunk.extend_from_slice(&u32::try_from(data.len())?.to_be_bytes());
            chunk.extend_from_slice(b"tEXt");
            chunk.extend_from_slice(&data);
            chunk.extend_from_slice(&crc32fast::hash(&chunk[4..]).to_be_bytes());
            Ok([&png[..AFTER_IHDR], &chunk, &png[AFTER_IHDR..]]
                .concat()
                .into())
        };
        let files = match &self.files {
            ScanFiles::Single(png) => ScanFiles::Single(stamp(png)?),
            ScanFiles::Pair { high, low } => ScanFiles::Pair {
                high: stamp(high)?,
                low: low.clone(),
            },
        };
        Ok(EncodedScan::of(files))
    }

    /// Drops the scan into `dir` as `scan_id`, as an X-ray machine does: the sidecar (if
    /// any) first; then `<scan-id>.png`, or `<scan-id>.low.png` followed by
    /// `<scan-id>.high.png`, each written under a hidden temporary name and renamed into
    /// place. The last rename, which completes the scan for the line's intake, waits for
    /// `due` if that is still ahead. Returns the paths dropped, the sidecar first.
    pub fn drop_into(
        &self,
        dir: &Path,
        scan_id: &str,
        sidecar: Option<&serde_json::Value>,
        due: Option<Instant>,
    ) -> anyhow::Result<Vec<PathBuf>> {
        let mut dropped = Vec::new();
        if let Some(s) = sidecar {
            let path = dir.join(format!("{scan_id}.json"));
            std::fs::write(&path, s.to_string())
                .with_context(|| format!("writing the sidecar {}", path.display()))?;
            dropped.push(path);
        }
        let (first, last) = match &self.files {
            ScanFiles::Single(png) => (None, (format!("{scan_id}.png"), png)),
            ScanFiles::Pair { high, low } => (
                Some((format!("{scan_id}.low.png"), low)),
                (format!("{scan_id}.high.png"), high),
            ),
        };
        if let Some((name, bytes)) = first {
            let tmp = write_hidden(dir, &name, bytes)?;
            dropped.push(rename(&tmp, dir, &name)?);
        }
        let (name, bytes) = last;
        let tmp = write_hidden(dir, &name, bytes)?;
        if let Some(wait) = due.and_then(|d| d.checked_duration_since(Instant::now())) {
            std::thread::sleep(wait);
        }
        dropped.push(rename(&tmp, dir, &name)?);
        Ok(dropped)
    }
}

impl ScanFiles {
    /// The file whose rename completes the scan, whose SHA-256 the line records.
    fn last(&self) -> &[u8] {
        match self {
            ScanFiles::Single(png) => png,
            ScanFiles::Pair { high, .. } => high,
        }
    }
}

/// Scans rendered before the run, for the decision-latency bench: a line-sized pair takes
/// 50–200 ms to render, so forty a second would take the very cores the bench measures.
/// The pool holds `per_kind` scans of each category, genuine and counterfeit; a parcel gets
/// one of its own kind, stamped with its scan id ([`EncodedScan::stamped`]).
pub struct ScanPool {
    scanner: xraygen::Scanner,
    /// By `(category * 2 + counterfeit) * per_kind + variant`.
    scans: Vec<EncodedScan>,
    per_kind: usize,
}

impl std::fmt::Debug for ScanPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ScanPool")
            .field("scanner", &self.scanner)
            .field("scans", &self.scans.len())
            .finish()
    }
}

impl ScanPool {
    /// Renders `per_kind` scans of every category, genuine and counterfeit, on `scanner`,
    /// on every core.
    pub fn render(
        scanner: xraygen::Scanner,
        per_kind: usize,
        seed: u64,
    ) -> anyhow::Result<ScanPool> {
        let per_kind = per_kind.max(1);
        let n = xraygen::CATEGORY_KEYS.len() * 2 * per_kind;
        let threads = std::thread::available_parallelism().map_or(1, |c| c.get());
        let mut scans: Vec<Option<EncodedScan>> = (0..n).map(|_| None).collect();
        std::thread::scope(|s| -> anyhow::Result<()> {
            let chunk = n.div_ceil(threads);
            let workers: Vec<_> = scans
                .chunks_mut(chunk)
                .enumerate()
                .map(|(t, out)| {
                    s.spawn(move || -> anyhow::Result<()> {
                        for (k, slot) in out.iter_mut().enumerate() {
                            let i = t * chunk + k;
                            let spec = xraygen::ParcelSpec {
                                category: i / per_kind / 2,
                                counterfeit: (i / per_kind) % 2 == 1,
                            };
                            *slot = Some(EncodedScan::render(
                                scanner,
                                spec,
                                xraygen::derive_seed(seed, i as u64),
                            )?);
                        }
                        Ok(())
                    })
                })
                .collect();
            for w in workers {
                w.join()
                    .map_err(|_| anyhow::anyhow!("a pool renderer panicked"))??;
            }
            Ok(())
        })?;
        Ok(ScanPool {
            scanner,
            scans: scans.into_iter().flatten().collect(),
            per_kind,
        })
    }

    /// A scan of `spec`'s kind (picked by `seed`), stamped with `scan_id`.
    fn scan(
        &self,
        spec: xraygen::ParcelSpec,
        seed: u64,
        scan_id: &str,
    ) -> anyhow::Result<EncodedScan> {
        let kind =
            spec.category.min(xraygen::CATEGORY_KEYS.len() - 1) * 2 + usize::from(spec.counterfeit);
        let i = kind * self.per_kind + (seed % self.per_kind as u64) as usize;
        self.scans[i].stamped(scan_id)
    }
}

/// A 16-bit grey image as PNG, fast compression (as `xraygen`'s datasets write pairs).
fn png16(img: &image::ImageBuffer<image::Luma<u16>, Vec<u16>>) -> image::ImageResult<Vec<u8>> {
    let mut png = Vec::new();
    img.write_with_encoder(PngEncoder::new_with_quality(
        &mut png,
        CompressionType::Fast,
        FilterType::Adaptive,
    ))?;
    Ok(png)
}

/// Writes `bytes` to `dir/.NAME.part`; returns that path.
fn write_hidden(dir: &Path, name: &str, bytes: &[u8]) -> anyhow::Result<PathBuf> {
    let tmp = dir.join(format!(".{name}.part"));
    std::fs::write(&tmp, bytes).with_context(|| format!("writing {}", tmp.display()))?;
    Ok(tmp)
}

/// Renames `tmp` to `dir/NAME`; returns the new path.
fn rename(tmp: &Path, dir: &Path, name: &str) -> anyhow::Result<PathBuf> {
    let path = dir.join(name);
    std::fs::rename(tmp, &path)
        .with_context(|| format!("renaming {} into place", path.display()))?;
    Ok(path)
}

/// A parcel the loader put on the belt, as the X-ray machine will see it.
#[derive(Debug, Clone)]
pub struct Placed {
    /// The number of the parcel on its line (from 0), which names its scan.
    pub n: u64,
    /// The waybill on it.
    pub waybill: String,
    /// Whether the line's reader was sent its code.
    pub read: bool,
    /// When it was put on the belt, just before the photo-eye.
    pub at: Instant,
}

/// Scans rendered ahead of their parcels, per line: a real machine's image is ready a fixed
/// time after the photo-eye, whatever else this computer is doing, so the generator works
/// that far ahead (a line-sized pair takes 50–200 ms to render).
const RENDER_AHEAD: usize = 6;

/// A scan later than this past its due time is counted as late ([`Truth::late_scan`]).
const LATE: Duration = Duration::from_millis(50);

/// One line's simulated X-ray machine.
pub struct Machine {
    /// The line's id (`L1` …).
    pub line_id: String,
    /// The line's index (0 for `L1`), which, with the traffic's mix and seed, says what
    /// each of its parcels holds.
    pub line: usize,
    /// The traffic of the line.
    pub mix: super::traffic::Mix,
    /// The traffic's seed.
    pub seed: u64,
    /// How many parcels the line gets (`None`: until stopped).
    pub count: Option<u64>,
    /// The line controller's events: the machine starts a scan at each photo-eye entry.
    pub events: Receiver<LineEvent>,
    /// The parcels placed, in belt order.
    pub placed: Receiver<Placed>,
    /// What it writes beside each image.
    pub sidecar: Sidecar,
    /// The machine it is.
    pub scanner: xraygen::Scanner,
    /// Scans rendered beforehand, to drop instead of rendering each (of the pool's
    /// scanner, whatever `scanner` says).
    pub pool: Option<Arc<ScanPool>>,
    /// Its drop folder.
    pub dir: PathBuf,
    /// Where it notes which scan it made of which parcel.
    pub truth: Arc<Mutex<Truth>>,
    /// Told once the first scans are rendered ahead, so that the loader starts the belt
    /// with the machine warmed up.
    pub ready: std::sync::mpsc::Sender<()>,
}

/// A parcel the photo-eye saw, waiting for its scan to be dropped.
struct Due {
    seq: u32,
    parcel: Placed,
    /// When the scan completes: [`IMAGE_DELAY`] after the parcel reached the eye.
    at: Instant,
    captured_at: SystemTime,
}

impl Machine {
    /// Scans each parcel the photo-eye sees until `stop`: the parcel is the next one placed
    /// (the belt keeps their order), and its scan — rendered ahead by a thread of its own —
    /// completes [`IMAGE_DELAY`] after the parcel was put at the eye (5 mm before it: under
    /// 3 ms at belt speed). Returns once the scans due are dropped.
    pub fn run(self, stop: &AtomicBool) {
        let (rendered_tx, rendered) = std::sync::mpsc::sync_channel(RENDER_AHEAD);
        let (mix, seed, line, count, scanner) =
            (self.mix, self.seed, self.line, self.count, self.scanner);
        let (ready, pool, line_id) = (self.ready.clone(), self.pool.clone(), self.line_id.clone());
        std::thread::spawn(move || {
            for n in (0..).take_while(|n| count.is_none_or(|c| *n < c)) {
                if n == RENDER_AHEAD as u64 {
                    let _ = ready.send(());
                }
                let scan =
                    super::traffic::parcel(mix, seed, line, n)
                        .image
                        .and_then(|(spec, seed)| {
                            let scan = match &pool {
                                Some(pool) => pool.scan(spec, seed, &scan_id(&line_id, n)),
                                None => EncodedScan::render(scanner, spec, seed),
                            };
                            scan.inspect_err(|e| {
                            tracing::warn!(error = %format!("{e:#}"), "demo X-ray render failed");
                        })
                        .ok()
                        });
                // The machine stopped: nothing more to render.
                if rendered_tx.send((n, scan)).is_err() {
                    return;
                }
            }
            // Fewer parcels than it renders ahead.
            let _ = ready.send(());
        });
        let (due_tx, due) = std::sync::mpsc::channel();
        let dropper = {
            let (line_id, dir, truth, sidecar) = (
                self.line_id.clone(),
                self.dir.clone(),
                self.truth.clone(),
                self.sidecar,
            );
            std::thread::spawn(move || drop_scans(&line_id, &dir, sidecar, &truth, &rendered, &due))
        };
        while !stop.load(Ordering::Relaxed) {
            let seq = match self.events.recv_timeout(Duration::from_millis(100)) {
                Ok(LineEvent::Entered { seq }) => seq,
                Ok(_) | Err(RecvTimeoutError::Timeout) => continue,
                Err(RecvTimeoutError::Disconnected) => break,
            };
            let heard = Instant::now();
            // The loader sends each parcel before putting it on the belt.
            let Ok(parcel) = self.placed.recv_timeout(Duration::from_secs(1)) else {
                tracing::warn!(line = %self.line_id, seq, "demo: the photo-eye saw a parcel nobody placed");
                continue;
            };
            // The scan completes a fixed time after the parcel reached the photo-eye, as a
            // real machine's does, however late this thread heard of it.
            let at = parcel.at + IMAGE_DELAY;
            let captured_at = SystemTime::now() + at.saturating_duration_since(heard);
            self.truth
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .entered(&self.line_id, seq, &parcel.waybill, parcel.read);
            let due = Due {
                seq,
                parcel,
                at,
                captured_at,
            };
            if due_tx.send(due).is_err() {
                break;
            }
        }
        drop(due_tx);
        let _ = dropper.join();
    }
}

/// The name of a line's `n`-th scan in its drop folder (without the extension).
fn scan_id(line_id: &str, n: u64) -> String {
    format!("{line_id}-{n:07}")
}

/// Drops each parcel's scan, in belt order, when it is due; notes each in `truth`.
fn drop_scans(
    line_id: &str,
    dir: &Path,
    sidecar: Sidecar,
    truth: &Mutex<Truth>,
    rendered: &Receiver<(u64, Option<EncodedScan>)>,
    due: &Receiver<Due>,
) {
    let note = |f: &dyn Fn(&mut Truth)| f(&mut truth.lock().unwrap_or_else(|e| e.into_inner()));
    let mut warned = false;
    for d in due {
        // The renderer goes in parcel order, as the belt does.
        let scan = loop {
            match rendered.recv() {
                Ok((n, scan)) if n == d.parcel.n => break scan,
                Ok(_) => continue,
                Err(_) => return,
            }
        };
        let Some(scan) = scan else {
            continue;
        };
        let rendered_late = Instant::now() > d.at;
        // Noted before the scan can reach the line, so that the truth is never behind
        // what the line saw.
        note(&|t| t.scanned(line_id, d.seq, Some(&scan.sha256)));
        let scan_id = scan_id(line_id, d.parcel.n);
        let side = sidecar.content(&d.parcel.waybill, d.captured_at);
        match scan.drop_into(dir, &scan_id, side.as_ref(), Some(d.at)) {
            Ok(_) if Instant::now() > d.at + LATE => {
                note(&|t| t.late_scan(line_id, d.seq));
                tracing::debug!(line = %line_id, seq = d.seq, late_ms = (Instant::now() - d.at).as_millis() as u64, rendered_late, "demo: a late scan");
                if !warned && sidecar != Sidecar::Waybill {
                    warned = true;
                    tracing::warn!(line = %line_id, "demo: a scan completed late: this computer is too busy to keep the simulated X-ray machines on time, and joined by time a late scan can go to the next parcel (counted in wrong_joins, scans_late counts them); lower --rate or --lines, or use a smaller --scanner");
                }
            }
            Ok(_) => {}
            Err(e) => {
                note(&|t| t.scanned(line_id, d.seq, None));
                tracing::warn!(error = %format!("{e:#}"), "demo X-ray write failed");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::line::xray::{classify, probe, Part};

    fn spec() -> xraygen::ParcelSpec {
        xraygen::ParcelSpec {
            category: 5,
            counterfeit: false,
        }
    }

    #[test]
    fn the_mix_is_one_machine_naming_the_waybill_and_most_not() {
        let lines: Vec<Sidecar> = (0..8).map(|k| Sidecars::Mix.for_line(k)).collect();
        assert_eq!(
            lines,
            [
                Sidecar::Waybill,
                Sidecar::Time,
                Sidecar::None,
                Sidecar::Time,
                Sidecar::None,
                Sidecar::Time,
                Sidecar::None,
                Sidecar::Time
            ]
        );
        for k in 0..8 {
            assert_eq!(Sidecars::Waybill.for_line(k), Sidecar::Waybill);
            assert_eq!(Sidecars::Time.for_line(k), Sidecar::Time);
            assert_eq!(Sidecars::None.for_line(k), Sidecar::None);
        }
    }

    #[test]
    fn a_sidecar_names_the_waybill_only_when_the_machine_knows_it() {
        let at = SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        let w = Sidecar::Waybill
            .content("SF00000001", at)
            .expect("a sidecar");
        assert_eq!(w["waybill"], "SF00000001");
        assert_eq!(w["captured_at"], crate::time_fmt::format(at));
        let t = Sidecar::Time.content("SF00000001", at).expect("a sidecar");
        assert_eq!(
            t,
            serde_json::json!({"captured_at": crate::time_fmt::format(at)})
        );
        assert_eq!(Sidecar::None.content("SF00000001", at), None);
    }

    #[test]
    fn a_small_scan_is_one_rgb_png_the_intake_takes() {
        let dir = crate::testutil::temp_dir("demo-small");
        let scan = EncodedScan::render(xraygen::Scanner::Small, spec(), 7).expect("render");
        let side = Sidecar::Time.content("SF00000001", SystemTime::now());
        let files = scan
            .drop_into(&dir, "L1-0000001", side.as_ref(), None)
            .expect("drop");
        assert_eq!(
            files,
            [dir.join("L1-0000001.json"), dir.join("L1-0000001.png")]
        );
        let png = std::fs::read(&files[1]).expect("the image");
        assert_eq!(hex::encode(Sha256::digest(&png)), scan.sha256);
        assert!(probe(&files[1], Part::Single).is_ok());
        // The same bytes as before the machines knew other profiles.
        let legacy = xraygen::render(spec(), 7).rgb;
        let mut old = Vec::new();
        PngEncoder::new(&mut old)
            .write_image(
                legacy.as_raw(),
                legacy.width(),
                legacy.height(),
                image::ExtendedColorType::Rgb8,
            )
            .expect("encode");
        assert_eq!(png, old);
        assert_eq!(hidden(&dir), 0);
    }

    #[test]
    fn a_line_sized_scan_is_a_16_bit_pair_low_half_first() {
        let dir = crate::testutil::temp_dir("demo-pair");
        let scan = EncodedScan::render(xraygen::Scanner::S6550, spec(), 7).expect("render");
        let files = scan
            .drop_into(&dir, "L2-0000003", None, None)
            .expect("drop");
        assert_eq!(
            files,
            [
                dir.join("L2-0000003.low.png"),
                dir.join("L2-0000003.high.png")
            ]
        );
        let mut sizes = Vec::new();
        for (path, part) in files.iter().zip([Part::Low, Part::High]) {
            assert_eq!(classify(path), Some(("L2-0000003".to_owned(), part)));
            let p = probe(path, part).expect("a 16-bit grey half the intake takes");
            sizes.push(p.dimensions);
        }
        assert_eq!(sizes[0], sizes[1]);
        assert_eq!(sizes[0].0, 812, "the 6550's detector width");
        let high = std::fs::read(&files[1]).expect("high half");
        assert_eq!(hex::encode(Sha256::digest(&high)), scan.sha256);
        // The halves hold the generator's pixels.
        let want = xraygen::render_scan_exact(xraygen::Scanner::S6550, spec(), 7);
        let got = image::open(&files[0]).expect("decode").into_luma16();
        assert_eq!(got.as_raw(), want.low.as_raw());
        assert!(!dir.join("L2-0000003.json").exists(), "no sidecar");
        assert_eq!(hidden(&dir), 0);
    }

    /// A pooled scan's copies are the pool's pixels in files of their own: each decodes to
    /// the same image, each has its own SHA-256, and the pool gives each parcel a scan of
    /// its own kind.
    #[test]
    fn a_pooled_scan_is_stamped_per_parcel_and_decodes_unchanged() {
        let pool = ScanPool::render(xraygen::Scanner::Small, 1, 3).expect("pool");
        assert_eq!(pool.scans.len(), xraygen::CATEGORY_KEYS.len() * 2);
        let fake = xraygen::ParcelSpec {
            category: 7,
            counterfeit: true,
        };
        let (a, b) = (
            pool.scan(fake, 1, "L1-0000001").expect("a"),
            pool.scan(fake, 2, "L1-0000002").expect("b"),
        );
        assert_ne!(a.sha256, b.sha256);
        let decode = |s: &EncodedScan| match &s.files {
            ScanFiles::Single(png) => crate::line::image::decode_image(png).expect("decodes"),
            ScanFiles::Pair { .. } => panic!("a small scan is one image"),
        };
        let want = xraygen::render_scan(
            xraygen::Scanner::Small,
            fake,
            xraygen::derive_seed(3, (7 * 2 + 1) as u64),
        );
        assert_eq!(decode(&a), want.rgb);
        assert_eq!(decode(&b), want.rgb);
        // Not a PNG: refused, not garbled.
        let broken = EncodedScan::of(ScanFiles::Single(b"GIF89a".to_vec().into()));
        assert!(broken.stamped("x").is_err());
    }

    #[test]
    fn the_last_rename_waits_for_the_due_time() {
        let dir = crate::testutil::temp_dir("demo-due");
        let scan = EncodedScan::render(xraygen::Scanner::Small, spec(), 1).expect("render");
        let t0 = Instant::now();
        scan.drop_into(
            &dir,
            "L1-0000000",
            None,
            Some(t0 + Duration::from_millis(120)),
        )
        .expect("drop");
        assert!(t0.elapsed() >= Duration::from_millis(120));
    }

    #[test]
    fn the_machine_scans_each_parcel_the_photo_eye_sees_when_it_is_due() {
        use super::super::traffic::{parcel, Mix};
        let dir = crate::testutil::temp_dir("demo-machine");
        let (events_tx, events) = std::sync::mpsc::channel();
        let (placed_tx, placed) = std::sync::mpsc::channel();
        let truth = Arc::new(Mutex::new(Truth::default()));
        let machine = Machine {
            line_id: "L1".into(),
            line: 0,
            mix: Mix::Showcase,
            seed: 3,
            count: Some(20),
            events,
            placed,
            sidecar: Sidecar::Time,
            scanner: xraygen::Scanner::Small,
            pool: None,
            dir: dir.to_path_buf(),
            truth: truth.clone(),
            ready: std::sync::mpsc::channel().0,
        };
        let stop = Arc::new(AtomicBool::new(false));
        let stopped = stop.clone();
        let running = std::thread::spawn(move || machine.run(&stopped));
        // Parcel 0 enters as sequence 1, and so on; events the machine does not use pass.
        let t0 = Instant::now();
        for n in 0..20u64 {
            let p = parcel(Mix::Showcase, 3, 0, n);
            let placed = Placed {
                n,
                waybill: p.waybill_no,
                read: p.reader_record.is_some(),
                at: Instant::now(),
            };
            placed_tx.send(placed).expect("placed");
            events_tx.send(LineEvent::LinkUp).expect("event");
            let seq = u32::try_from(n + 1).expect("small");
            events_tx.send(LineEvent::Entered { seq }).expect("event");
        }
        let scanned: Vec<u64> = (0..20)
            .filter(|n| parcel(Mix::Showcase, 3, 0, *n).image.is_some())
            .collect();
        assert_eq!(scanned.len(), 19, "the showcase misses one image in twenty");
        let last = dir.join(format!("L1-{:07}.png", scanned[scanned.len() - 1]));
        while !last.exists() {
            assert!(t0.elapsed() < Duration::from_secs(30), "no scan");
            std::thread::sleep(Duration::from_millis(5));
        }
        assert!(t0.elapsed() >= IMAGE_DELAY, "a scan before it was due");
        stop.store(true, Ordering::Relaxed);
        running.join().expect("the machine stops");
        let truth = truth.lock().expect("truth");
        assert_eq!(truth.len(), 20);
        for n in 0..20u64 {
            let seq = u32::try_from(n + 1).expect("small");
            let t = truth.parcel("L1", seq).expect("noted");
            let id = format!("L1-{n:07}");
            assert_eq!(t.waybill, parcel(Mix::Showcase, 3, 0, n).waybill_no);
            if scanned.contains(&n) {
                let png = std::fs::read(dir.join(format!("{id}.png"))).expect("the scan");
                assert_eq!(t.scan_sha256, Some(hex::encode(Sha256::digest(&png))));
                let side: serde_json::Value = serde_json::from_slice(
                    &std::fs::read(dir.join(format!("{id}.json"))).expect("its sidecar"),
                )
                .expect("JSON");
                assert!(
                    side["captured_at"].is_string() && side["waybill"].is_null(),
                    "{side}"
                );
            } else {
                assert_eq!(t.scan_sha256, None);
                assert!(!dir.join(format!("{id}.png")).exists());
            }
        }
    }

    /// Temporary files left in `dir`.
    fn hidden(dir: &Path) -> usize {
        std::fs::read_dir(dir)
            .expect("dir")
            .filter_map(Result::ok)
            .filter(|e| e.file_name().to_string_lossy().starts_with('.'))
            .count()
    }
}
