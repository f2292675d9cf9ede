//! Screening: decode the parcel's image, run the classifier, apply the rules, and decide.
//!
//! [`screen_parcel`] is the one code path for the line and for `screenline screen`; the
//! line runs it in two halves on two dedicated threads ([`spawn`]: [`load`] decodes, then
//! [`screen_loaded`] runs the model — blocking, and needing `&mut` on the session — and the
//! rules, batching parcels that queued together), fed and drained by bounded channels.

pub mod channels;
pub mod config;
pub mod eval;
pub mod model;
pub mod swap;

pub use screenline_core::rules;

/// The rules a configuration asks for: its rule files read, then parsed and checked
/// ([`rules::RuleSet::new`]), with the given hasher and split-shipment ledger.
pub fn load_rules(
    c: &config::RulesConfig,
    hasher: crate::keys::KeyedHasher,
    ledger: Box<dyn rules::SplitLedger>,
) -> Result<rules::RuleSet, rules::RuleDataError> {
    let read = |path: &Option<std::path::PathBuf>| {
        path.as_ref()
            .map(|p| {
                std::fs::read_to_string(p)
                    .map(|text| (text, p.display().to_string()))
                    .map_err(|source| rules::RuleDataError::Read {
                        path: p.clone(),
                        source,
                    })
            })
            .transpose()
    };
    let sources = rules::RuleSources {
        dictionary: read(&c.dictionary_file)?,
        value_floors: read(&c.value_floors_file)?,
        watchlist: read(&c.watchlist_file)?,
    };
    rules::RuleSet::new(c, sources, hasher, ledger)
}

use crate::domain::{Category, Decision, Parcel, Reason, ReasonCode, Scores};
use crate::line::image::{load_scan, Decoded};
pub use crate::line::image::{Evidence, ScanFile};
use crate::telemetry::{Gauge, Link, Telemetry};
use model::{Model, ModelInfo};
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::SystemTime;
use tokio::sync::mpsc;

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

/// A parcel's image as loaded: none, unreadable (why), or its files and the image.
type Loaded = Option<Result<(ScanFile, Option<ScanFile>, Decoded), String>>;

/// Screens one parcel: the same path for the line and for `screenline screen`.
pub fn screen_parcel(model: &mut Model, rules: &mut rules::RuleSet, parcel: Parcel) -> Screened {
    let loaded = parcel.scan.as_ref().map(load_scan);
    let scores = match &loaded {
        Some(Ok((_, _, scan))) => Some(model.infer(scan).map_err(|e| e.to_string())),
        _ => None,
    };
    decide(model, rules, parcel, loaded, scores)
}

/// Screens parcels that were waiting together with one batched inference: each image is
/// decoded as in [`screen_parcel`], the model runs once over all that decoded, and the rules
/// then judge the parcels one by one in arrival order (split-shipment history depends on
/// it). The results are exactly [`screen_parcel`]'s, in the same order. If the batched run
/// fails, each image is run alone, so one parcel's failure stays its own.
pub fn screen_parcels(
    model: &mut Model,
    rules: &mut rules::RuleSet,
    parcels: Vec<Parcel>,
) -> Vec<Screened> {
    let loaded = parcels.into_iter().map(load).collect();
    screen_loaded(model, rules, loaded)
}

/// A parcel with its image read and decoded: the half of screening that needs no model,
/// so that the stage can do it on another thread (see [`spawn`]).
#[derive(Clone)]
pub struct LoadedParcel {
    parcel: Parcel,
    loaded: Loaded,
}

/// Reads, decodes and hashes a parcel's image (if it has one), with the line's limits.
pub fn load(parcel: Parcel) -> LoadedParcel {
    let loaded = parcel.scan.as_ref().map(load_scan);
    LoadedParcel { parcel, loaded }
}

/// Screens loaded parcels with one batched inference; see [`screen_parcels`].
pub fn screen_loaded(
    model: &mut Model,
    rules: &mut rules::RuleSet,
    parcels: Vec<LoadedParcel>,
) -> Vec<Screened> {
    let images: Vec<&Decoded> = parcels
        .iter()
        .filter_map(|p| match &p.loaded {
            Some(Ok((_, _, scan))) => Some(scan),
            _ => None,
        })
        .collect();
    let mut batch = match model.infer_batch(&images) {
        Ok(scores) => scores.into_iter().map(Ok).collect::<Vec<_>>(),
        Err(_) => images
            .iter()
            .map(|scan| model.infer(scan).map_err(|e| e.to_string()))
            .collect(),
    }
    .into_iter();
    let scores: Vec<Option<Result<Scores, String>>> = parcels
        .iter()
        .map(|p| match &p.loaded {
            Some(Ok(_)) => batch.next(),
            _ => None,
        })
        .collect();
    parcels
        .into_iter()
        .zip(scores)
        .map(|(p, scores)| decide(model, rules, p.parcel, p.loaded, scores))
        .collect()
}

/// The rules and the decision for a parcel whose image was loaded (or not) and scored (or not).
fn decide(
    model: &Model,
    rules: &mut rules::RuleSet,
    parcel: Parcel,
    loaded: Loaded,
    scored: Option<Result<Scores, String>>,
) -> Screened {
    if let Some(wb) = &crate::supervise::Faults::get().panic_waybill {
        if parcel
            .waybill
            .as_ref()
            .is_some_and(|w| w.waybill.as_str() == wb)
        {
            panic!("test fault: screening panics on this parcel");
        }
    }
    let mut evidence = None;
    let mut scores = None;
    let mut problems: Vec<Reason> = Vec::new();
    match loaded {
        None => {}
        Some(Err(e)) => problems.push(rules::image_unreadable(&e)),
        Some(Ok((image, low_energy, scan))) => {
            match scored {
                Some(Ok(s)) => scores = Some(s),
                Some(Err(e)) => problems.push(Reason::new(
                    ReasonCode::ScreeningFailed,
                    format!("模型推理失败：{e}"),
                    format!("the classifier failed: {e}"),
                )),
                None => problems.push(Reason::new(
                    ReasonCode::ScreeningFailed,
                    "模型未给出结果".to_owned(),
                    "the classifier gave no result".to_owned(),
                )),
            }
            evidence = Some((image, low_energy, scan));
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
    let evidence = evidence.map(|(image, low_energy, scan)| Evidence {
        thumbnail_jpeg: (decision == Decision::Flag)
            .then(|| thumbnail_of(&scan))
            .flatten(),
        image,
        low_energy,
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

/// The longer side of a flagged parcel's thumbnail, at most.
const THUMBNAIL_SIDE: f64 = 128.0;

/// A thumbnail's size for an image of `w × h`: its shape, at most [`THUMBNAIL_SIDE`].
fn thumbnail_size(w: u32, h: u32) -> (u32, u32) {
    let long = w.max(h).max(1);
    let scale = (THUMBNAIL_SIDE / f64::from(long)).min(1.0);
    (
        ((f64::from(w) * scale).round() as u32).max(1),
        ((f64::from(h) * scale).round() as u32).max(1),
    )
}

/// A flagged parcel's thumbnail ([`thumbnail`]) of its scan. A pair is shrunk first and
/// rendered to pseudo-colour at the thumbnail's size: rendering a 1 250 px pair whole took
/// 37 ms, fourteen times its inference (benches/inference.rs).
pub fn thumbnail_of(scan: &Decoded) -> Option<Vec<u8>> {
    match scan {
        Decoded::Rgb(rgb) => thumbnail(rgb),
        Decoded::Pair { high, low } => {
            let (w, h) = thumbnail_size(high.width(), high.height());
            thumbnail(&xraygen::pseudo_colour(
                &channels::shrink(high, w, h),
                &channels::shrink(low, w, h),
            ))
        }
    }
}

/// A JPEG of at most 128 pixels on its longer side, for flagged parcels' reports.
///
/// SIMD resize (fast_image_resize) straight from the decoded image and a fast JPEG encoder:
/// `image`'s own `thumbnail` on a cloned `DynamicImage` and its JPEG encoder took 1.3 ms a
/// flagged parcel, five times the inference (benches/inference.rs).
pub fn thumbnail(rgb: &image::RgbImage) -> Option<Vec<u8>> {
    use fast_image_resize as fr;
    let (w, h) = rgb.dimensions();
    let (tw, th) = thumbnail_size(w, h);
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

    /// Screens parcels that queued together with one batched inference (see
    /// [`screen_parcels`]); results in the parcels' order.
    pub fn screen_batch(&self, parcels: Vec<Parcel>) -> Vec<Screened> {
        let mut model = lock(&self.model);
        let mut rules = lock(&self.rules);
        screen_parcels(&mut model, &mut rules, parcels)
    }

    /// Screens parcels whose images were loaded already (by [`load`], on another thread).
    ///
    /// A panic while screening (a decoder, the runtime, a rule) is caught: the batch is
    /// screened again parcel by parcel, and the parcel that panics alone goes to manual
    /// inspection with `screening_failed`; the others are screened as usual.
    pub fn screen_loaded(&self, parcels: Vec<LoadedParcel>) -> Vec<Screened> {
        let run = |parcels: Vec<LoadedParcel>| {
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                let mut model = lock(&self.model);
                let mut rules = lock(&self.rules);
                screen_loaded(&mut model, &mut rules, parcels)
            }))
        };
        let copies = parcels.clone();
        match run(parcels) {
            Ok(screened) => screened,
            Err(_) => copies
                .into_iter()
                .map(|p| {
                    let parcel = p.parcel.clone();
                    match run(vec![p]) {
                        Ok(mut one) if one.len() == 1 => one.remove(0),
                        _ => self.failed(parcel),
                    }
                })
                .collect(),
        }
    }

    /// The result for a parcel whose screening panicked.
    fn failed(&self, parcel: Parcel) -> Screened {
        tracing::error!(line = %parcel.line_id, seq = parcel.seq, "screening this parcel panicked: manual inspection");
        Screened {
            parcel,
            decision: Decision::Manual,
            reasons: vec![Reason::new(
                ReasonCode::ScreeningFailed,
                "筛查此包裹时程序出错，转人工".to_owned(),
                "screening this parcel failed with an internal error; manual inspection".to_owned(),
            )],
            scores: None,
            model: self.model_info(),
            evidence: None,
            screened_at: SystemTime::now(),
        }
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

/// Most parcels screened in one batched inference.
pub const SCREEN_BATCH: usize = 8;

/// Runs screening until the parcel channel closes, on two threads: one reads and decodes
/// images ([`load`]), the other runs the model and the rules ([`Screener::screen_loaded`]).
/// On a 2-core appliance decoding a PNG costs more than this model's inference, so the two
/// halves overlap instead of adding up (benches/inference.rs measures it). The queue
/// between them holds [`SCREEN_BATCH`] parcels: decoding never runs far ahead.
///
/// Dynamic batching: the model thread takes whatever has been decoded meanwhile (up to
/// [`SCREEN_BATCH`], never waiting for more) and screens it with one inference; a lone
/// parcel goes at once, alone. Parcels leave in the order they came.
pub fn spawn(
    set: &mut crate::supervise::StageSet,
    stages: &Arc<crate::supervise::Stages>,
    screener: Arc<Screener>,
    parcels: mpsc::Receiver<crate::domain::Parcel>,
    screened: mpsc::Sender<Screened>,
    telemetry: Arc<Telemetry>,
) -> std::io::Result<()> {
    let (decode, screen) = stage_threads(
        (stages.stage("decode"), stages.stage("screening")),
        screener,
        parcels,
        screened,
        telemetry,
    );
    set.spawn_thread("screening-decode", decode)?;
    set.spawn_thread("screening", screen)
}

/// The two threads' bodies: decode, then model and rules (see [`spawn`]).
fn stage_threads(
    (decode_stage, screen_stage): (crate::supervise::Stage, crate::supervise::Stage),
    screener: Arc<Screener>,
    mut parcels: mpsc::Receiver<crate::domain::Parcel>,
    screened: mpsc::Sender<Screened>,
    telemetry: Arc<Telemetry>,
) -> (
    impl FnOnce() + Send + 'static,
    impl FnOnce() + Send + 'static,
) {
    let (loaded_tx, loaded_rx) =
        std::sync::mpsc::sync_channel::<(std::time::Instant, LoadedParcel)>(SCREEN_BATCH);
    let decode = move || {
        while let Some(parcel) = parcels.blocking_recv() {
            let started = std::time::Instant::now();
            let loaded = {
                let _working = decode_stage.work();
                crate::supervise::Faults::strike_blocking("decode");
                let copy = parcel.clone();
                std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| load(parcel)))
                    .unwrap_or_else(|_| {
                        tracing::error!(line = %copy.line_id, seq = copy.seq, "decoding this parcel's image panicked");
                        LoadedParcel {
                            parcel: copy,
                            loaded: Some(Err("the decoder failed with an internal error".into())),
                        }
                    })
            };
            if loaded_tx.send((started, loaded)).is_err() {
                return;
            }
        }
    };
    let screen = move || {
        while let Ok(first) = loaded_rx.recv() {
            let _working = screen_stage.work();
            crate::supervise::Faults::strike_blocking("screening");
            let mut batch = vec![first];
            while batch.len() < SCREEN_BATCH {
                match loaded_rx.try_recv() {
                    Ok(p) => batch.push(p),
                    Err(_) => break,
                }
            }
            telemetry.set(Gauge::ScreenLastBatch, batch.len() as u64);
            let oldest = batch[0].0;
            let results = screener.screen_loaded(batch.into_iter().map(|(_, p)| p).collect());
            telemetry.set(
                Gauge::ScreenLastLatencyMicros,
                u64::try_from(oldest.elapsed().as_micros()).unwrap_or(u64::MAX),
            );
            if results.iter().any(|s| s.scores.is_some()) {
                telemetry.seen(&Link::Model);
            }
            for s in results {
                if screened.blocking_send(s).is_err() {
                    return;
                }
            }
        }
    };
    (decode, screen)
}

/// Screens `parcels` through the stage as the line runs it ([`spawn`]) and returns the
/// results in order; for benches and tests.
pub fn run_stage(screener: Arc<Screener>, parcels: Vec<Parcel>) -> Vec<Screened> {
    let n = parcels.len();
    let (tx, rx) = mpsc::channel(64);
    let (out_tx, mut out_rx) = mpsc::channel(64);
    let stages = Arc::new(crate::supervise::Stages::default());
    let (decode, screen) = stage_threads(
        (stages.stage("decode"), stages.stage("screening")),
        screener,
        rx,
        out_tx,
        Arc::new(Telemetry::default()),
    );
    let threads = [std::thread::spawn(decode), std::thread::spawn(screen)];
    let feeder = std::thread::spawn(move || {
        for p in parcels {
            if tx.blocking_send(p).is_err() {
                return;
            }
        }
    });
    let mut out = Vec::with_capacity(n);
    while let Some(s) = out_rx.blocking_recv() {
        out.push(s);
    }
    let _ = feeder.join();
    for t in threads {
        let _ = t.join();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::XrayScan;
    use model::{default_model_dir, init_runtime};
    use rules::MemoryLedger;
    use std::path::PathBuf;

    /// A pair's thumbnail, shrunk before its pseudo-colour, has the thumbnail's size and
    /// looks like the thumbnail of the whole render (mean difference a few grey levels).
    #[test]
    fn a_pair_s_thumbnail_is_its_render_s() {
        let spec = xraygen::ParcelSpec {
            category: 5,
            counterfeit: true,
        };
        let scan = xraygen::render_scan(xraygen::Scanner::S6550, spec, 3);
        let (w, h) = scan.high.dimensions();
        let pair = Decoded::Pair {
            high: scan.high,
            low: scan.low,
        };
        let decode = |jpeg: Vec<u8>| image::load_from_memory(&jpeg).expect("a JPEG").to_rgb8();
        let fast = decode(thumbnail_of(&pair).expect("thumbnail"));
        let whole = decode(thumbnail(&pair.pseudo_colour()).expect("thumbnail"));
        assert_eq!(fast.dimensions(), thumbnail_size(w, h));
        assert_eq!(fast.dimensions(), whole.dimensions());
        assert!(fast.width().max(fast.height()) == 128);
        let diff: f64 = fast
            .as_raw()
            .iter()
            .zip(whole.as_raw())
            .map(|(a, b)| f64::from(a.abs_diff(*b)))
            .sum::<f64>()
            / fast.as_raw().len() as f64;
        assert!(diff < 12.0, "mean difference {diff}");
    }

    fn parcel(seq: u32, path: Option<PathBuf>) -> Parcel {
        Parcel {
            line_id: "L1".into(),
            seq,
            epoch: None,
            entered_at: SystemTime::now(),
            waybill: None,
            findings: Vec::new(),
            scan: path.map(|path| XrayScan {
                scan_id: format!("{seq}"),
                path,
                completed: std::time::Instant::now(),
                low_energy: None,
                waybill: None,
                captured_at: SystemTime::now(),
            }),
        }
    }

    /// A batch gives each parcel exactly what screening it alone gives, in order, with a
    /// broken image and a parcel without image among them.
    #[test]
    fn a_batch_screens_like_parcels_one_by_one() {
        let dir = crate::testutil::temp_dir("batch");
        let mut paths = Vec::new();
        for i in 0..6u64 {
            let spec = xraygen::ParcelSpec {
                category: (i * 5 % 16) as usize,
                counterfeit: i % 2 == 1,
            };
            let p = dir.join(format!("{i}.png"));
            xraygen::render(spec, 7_400_000 + i)
                .rgb
                .save(&p)
                .expect("png");
            paths.push(Some(p));
        }
        let broken = dir.join("broken.png");
        std::fs::write(&broken, b"not a png").expect("write");
        paths.insert(2, Some(broken));
        paths.insert(4, None);
        let env = init_runtime(None).expect("ONNX Runtime");
        let mut model = Model::load(&default_model_dir().expect("model"), &env, 1).expect("load");
        let rules = || {
            crate::screen::load_rules(
                &config::RulesConfig::default(),
                crate::keys::KeyedHasher::random(),
                Box::new(MemoryLedger::default()),
            )
            .expect("rules")
        };
        let mut one_rules = rules();
        let alone: Vec<Screened> = paths
            .iter()
            .enumerate()
            .map(|(i, p)| screen_parcel(&mut model, &mut one_rules, parcel(i as u32, p.clone())))
            .collect();
        let mut batch_rules = rules();
        let batch = screen_parcels(
            &mut model,
            &mut batch_rules,
            paths
                .iter()
                .enumerate()
                .map(|(i, p)| parcel(i as u32, p.clone()))
                .collect(),
        );
        // And through the stage as the line runs it (decode thread, model thread).
        let staged = run_stage(
            Screener::new(model, rules()),
            paths
                .iter()
                .enumerate()
                .map(|(i, p)| parcel(i as u32, p.clone()))
                .collect(),
        );
        assert_eq!(batch.len(), alone.len());
        assert_eq!(staged.len(), alone.len());
        for (a, b) in alone
            .iter()
            .zip(batch.iter().chain(&staged))
            .chain(alone.iter().zip(&staged))
        {
            assert_eq!(a.parcel.seq, b.parcel.seq);
            assert_eq!(a.decision, b.decision, "parcel {}", a.parcel.seq);
            let codes = |s: &Screened| s.reasons.iter().map(|r| r.code).collect::<Vec<_>>();
            assert_eq!(codes(a), codes(b), "parcel {}", a.parcel.seq);
            match (&a.scores, &b.scores) {
                (Some(x), Some(y)) => {
                    assert_eq!(x.top().map(|t| t.0), y.top().map(|t| t.0));
                    assert!((x.counterfeit - y.counterfeit).abs() < 1e-4);
                }
                (None, None) => {}
                other => panic!("parcel {}: {other:?}", a.parcel.seq),
            }
        }
        assert!(batch[2]
            .reasons
            .iter()
            .any(|r| r.code == ReasonCode::ImageUnreadable));
        assert!(batch[4].parcel.scan.is_none() && batch[4].scores.is_none());
    }
}
