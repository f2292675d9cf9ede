//! Screening: decode the parcel's image, run the classifier, apply the rules, and decide.
//!
//! [`screen_parcel`] is the one code path for the line and for `screenline screen`. The
//! [`spawn`]ed stage runs it on a dedicated thread (inference is blocking and needs `&mut`
//! on the session), fed and drained by bounded channels.

pub mod eval;
pub mod model;
pub mod rules;
pub mod swap;

use crate::domain::{Category, Decision, Parcel, Reason, ReasonCode, Scores};
use crate::telemetry::Telemetry;
use image::ImageReader;
use model::{Model, ModelInfo};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::io::Cursor;
use std::sync::{Arc, Mutex};
use std::time::SystemTime;
use tokio::sync::mpsc;

/// Largest image file accepted from the drop folder.
pub const MAX_IMAGE_BYTES: u64 = 64 * 1024 * 1024;
/// Largest decoded image, against decompression bombs.
pub const MAX_PIXELS_SIDE: u32 = 8192;
/// Bytes the decoder may allocate.
pub const MAX_DECODE_ALLOC: u64 = 512 * 1024 * 1024;

/// The evidence kept for a screened image.
#[derive(Debug, Clone)]
pub struct Evidence {
    /// The image file's bytes, to keep in the store.
    pub bytes: Vec<u8>,
    /// SHA-256 of the bytes.
    pub sha256: String,
    /// A small JPEG for reports (made for flagged parcels only).
    pub thumbnail_jpeg: Option<Vec<u8>>,
}

/// A screened parcel: what was decided, why, and on what evidence.
#[derive(Debug, Clone)]
pub struct Screened {
    pub parcel: Parcel,
    pub decision: Decision,
    pub reasons: Vec<Reason>,
    pub scores: Option<Scores>,
    pub model: ModelInfo,
    pub evidence: Option<Evidence>,
    pub screened_at: SystemTime,
}

/// Decodes an image with limits against oversized and malicious files.
pub fn decode_image(bytes: &[u8]) -> Result<image::RgbImage, String> {
    Ok(decode_limited(bytes)?.to_rgb8())
}

fn decode_limited(bytes: &[u8]) -> Result<image::DynamicImage, String> {
    let mut reader = ImageReader::new(Cursor::new(bytes))
        .with_guessed_format()
        .map_err(|e| format!("cannot tell the image format: {e}"))?;
    let mut limits = image::Limits::default();
    limits.max_image_width = Some(MAX_PIXELS_SIDE);
    limits.max_image_height = Some(MAX_PIXELS_SIDE);
    limits.max_alloc = Some(MAX_DECODE_ALLOC);
    reader.limits(limits);
    reader.decode().map_err(|e| e.to_string())
}

/// A 16-bit grey channel of a dual-energy scan.
pub type Energy = image::ImageBuffer<image::Luma<u16>, Vec<u16>>;

/// Decodes a dual-energy pair (16-bit grey, same size) with the same limits as
/// [`decode_image`] and renders the pseudo-colour image the model was trained on.
pub fn decode_pair(high: &[u8], low: &[u8]) -> Result<image::RgbImage, String> {
    let grey = |bytes: &[u8], which: &str| -> Result<Energy, String> {
        let img = decode_limited(bytes).map_err(|e| format!("{which}-energy image: {e}"))?;
        if !matches!(img.color(), image::ColorType::L16 | image::ColorType::L8) {
            return Err(format!(
                "{which}-energy image is {:?}, not grey (16-bit expected)",
                img.color()
            ));
        }
        Ok(img.to_luma16())
    };
    let (h, l) = (grey(high, "high")?, grey(low, "low")?);
    if h.dimensions() != l.dimensions() {
        return Err(format!(
            "the pair's halves differ in size: high {}x{}, low {}x{}",
            h.width(),
            h.height(),
            l.width(),
            l.height()
        ));
    }
    Ok(xraygen::pseudo_colour(&h, &l))
}

/// Reads and decodes a scan from disk: one image, or a pair rendered to pseudo-colour.
/// Returns the evidence bytes (the file itself, or the rendered pair as PNG) and the image.
pub fn load_scan(scan: &crate::domain::XrayScan) -> Result<(Vec<u8>, image::RgbImage), String> {
    match &scan.low_energy {
        None => {
            let bytes = read_limited(&scan.path)?;
            let rgb = decode_image(&bytes)?;
            Ok((bytes, rgb))
        }
        Some(low) => {
            let rgb = decode_pair(&read_limited(&scan.path)?, &read_limited(low)?)?;
            // Evidence only: fast compression, since it is on the decision's critical path
            // (the default level made a pair ~10x a bare decode in benches/ingest.rs).
            let mut png = Vec::new();
            let encoder = image::codecs::png::PngEncoder::new_with_quality(
                &mut png,
                image::codecs::png::CompressionType::Fast,
                image::codecs::png::FilterType::Adaptive,
            );
            rgb.write_with_encoder(encoder)
                .map_err(|e| format!("cannot encode the rendered pair: {e}"))?;
            Ok((png, rgb))
        }
    }
}

/// Screens one parcel: the same path for the line and for `screenline screen`.
pub fn screen_parcel(model: &mut Model, rules: &mut rules::RuleSet, parcel: Parcel) -> Screened {
    let mut evidence = None;
    let mut scores = None;
    let mut problems: Vec<Reason> = Vec::new();
    if let Some(scan) = &parcel.scan {
        match load_scan(scan) {
            Err(e) => problems.push(rules::image_unreadable(&e)),
            Ok((bytes, rgb)) => {
                let sha256 = hex::encode(Sha256::digest(&bytes));
                match model.infer(&rgb) {
                    Ok(s) => scores = Some(s),
                    Err(e) => problems.push(Reason::new(
                        ReasonCode::ScreeningFailed,
                        format!("模型推理失败：{e}"),
                        format!("the classifier failed: {e}"),
                    )),
                }
                evidence = Some((bytes, sha256, rgb));
            }
        }
    }
    let overrides = rules.settings.thresholds.clone();
    let threshold = |c| {
        overrides
            .get(&c)
            .copied()
            .unwrap_or_else(|| model.threshold(c))
    };
    let (decision, reasons) = rules.apply(&parcel, scores.as_ref(), &threshold, problems);
    let evidence = evidence.map(|(bytes, sha256, rgb)| Evidence {
        thumbnail_jpeg: (decision == Decision::Flag)
            .then(|| thumbnail(&rgb))
            .flatten(),
        bytes,
        sha256,
    });
    Screened {
        parcel,
        decision,
        reasons,
        scores,
        model: model.info().clone(),
        evidence,
        screened_at: SystemTime::now(),
    }
}

pub fn read_limited(path: &std::path::Path) -> Result<Vec<u8>, String> {
    let meta = std::fs::metadata(path).map_err(|e| format!("{}: {e}", path.display()))?;
    if meta.len() > MAX_IMAGE_BYTES {
        return Err(format!(
            "{} is {} bytes, over the {MAX_IMAGE_BYTES}-byte limit",
            path.display(),
            meta.len()
        ));
    }
    std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))
}

/// A JPEG of at most 128 pixels on its longer side, for flagged parcels' reports.
///
/// SIMD resize (fast_image_resize) straight from the decoded image and a fast JPEG encoder:
/// `image`'s own `thumbnail` on a cloned `DynamicImage` and its JPEG encoder took 1.3 ms a
/// flagged parcel, five times the inference (benches/inference.rs).
pub fn thumbnail(rgb: &image::RgbImage) -> Option<Vec<u8>> {
    use fast_image_resize as fr;
    let (w, h) = rgb.dimensions();
    let long = w.max(h).max(1);
    let scale = (128.0 / long as f64).min(1.0);
    let (tw, th) = (
        ((w as f64 * scale).round() as u32).max(1),
        ((h as f64 * scale).round() as u32).max(1),
    );
    let src = fr::images::ImageRef::new(w, h, rgb.as_raw(), fr::PixelType::U8x3).ok()?;
    let mut dst = fr::images::Image::new(tw, th, fr::PixelType::U8x3);
    fr::Resizer::new()
        .resize(
            &src,
            &mut dst,
            &fr::ResizeOptions::new()
                .resize_alg(fr::ResizeAlg::Convolution(fr::FilterType::Bilinear)),
        )
        .ok()?;
    // jpeg-encoder (fast DCT, SIMD): `image`'s own encoder took ~0.8 ms for these 128 px.
    let mut out = Vec::new();
    jpeg_encoder::Encoder::new(&mut out, 75)
        .encode(
            dst.buffer(),
            u16::try_from(tw).ok()?,
            u16::try_from(th).ok()?,
            jpeg_encoder::ColorType::Rgb,
        )
        .ok()?;
    Some(out)
}

/// What the screening stage screens with: the model and the rules, shared so that a model
/// swap or a regulator's command can change them between two parcels while the line runs.
///
/// The screening thread holds the locks only while it screens; a change waits for at most
/// one parcel and never interrupts one.
pub struct Screener {
    model: Mutex<Model>,
    rules: Mutex<rules::RuleSet>,
}

impl Screener {
    /// A screener over a loaded model and rules.
    pub fn new(model: Model, rules: rules::RuleSet) -> Arc<Screener> {
        Arc::new(Screener {
            model: Mutex::new(model),
            rules: Mutex::new(rules),
        })
    }

    /// Screens one parcel (see [`screen_parcel`]).
    pub fn screen(&self, parcel: Parcel) -> Screened {
        let mut model = lock(&self.model);
        let mut rules = lock(&self.rules);
        screen_parcel(&mut model, &mut rules, parcel)
    }

    /// The running model.
    pub fn model_info(&self) -> ModelInfo {
        lock(&self.model).info().clone()
    }

    /// Replaces the running model with one already verified and warmed up; returns the old
    /// one's description.
    pub fn swap_model(&self, model: Model) -> ModelInfo {
        let old = std::mem::replace(&mut *lock(&self.model), model);
        old.info().clone()
    }

    /// Replaces the watch-list; returns the old list's version.
    pub fn set_watchlist(&self, list: rules::Watchlist) -> String {
        std::mem::replace(&mut lock(&self.rules).watchlist, list).version
    }

    /// The running watch-list's version and size.
    pub fn watchlist(&self) -> (String, usize) {
        let r = lock(&self.rules);
        (r.watchlist.version.clone(), r.watchlist.len())
    }

    /// Sets counterfeit thresholds for some categories, over the model's manifest.
    pub fn set_thresholds(&self, thresholds: &BTreeMap<Category, f32>) {
        lock(&self.rules)
            .settings
            .thresholds
            .extend(thresholds.iter().map(|(c, t)| (*c, *t)));
    }
}

/// A poisoned lock means a panic mid-screening; the model and rules are still whole (a
/// parcel is screened on copies of its data), so screening goes on.
fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Runs screening on its own thread until the parcel channel closes.
pub fn spawn(
    screener: Arc<Screener>,
    mut parcels: mpsc::Receiver<crate::domain::Parcel>,
    screened: mpsc::Sender<Screened>,
    telemetry: Arc<Telemetry>,
) -> std::io::Result<std::thread::JoinHandle<()>> {
    std::thread::Builder::new()
        .name("screening".into())
        .spawn(move || {
            while let Some(parcel) = parcels.blocking_recv() {
                let started = std::time::Instant::now();
                let s = screener.screen(parcel);
                telemetry.set(
                    "screen.last_latency_us",
                    u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX),
                );
                if screened.blocking_send(s).is_err() {
                    return;
                }
            }
        })
}
