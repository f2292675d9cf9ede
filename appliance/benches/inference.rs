//! Inference speed on this machine, measured side by side in one run on the same images:
//!
//! - **bare**: ONNX Runtime `Session::run` alone, on input tensors made beforehand, with the
//!   session settings the line uses ([`new_session`]: 1 intra-op thread, spinning off);
//! - **stage**: the whole screen stage per parcel, [`Screener::screen`] — read the PNG from
//!   the drop folder (page cache), decode with limits, SHA-256 of the evidence, resize and
//!   normalise, inference, the rules, and a thumbnail for each flagged parcel;
//! - **as spawned**: the stage as the line runs it (`screen::spawn` through
//!   `screen::run_stage`): a decode thread and a model thread with dynamic batching;
//! - **batched**: [`Screener::screen_batch`] on the same parcels, B at a time, and bare
//!   `run` on B-image tensors.
//!
//! It prints throughput, the ratio stage / bare (what the stage keeps of the model's speed;
//! target ≥ 0.85) and per-image latency p50/p99 at batch 1. Rounds alternate between the
//! paths so a busy neighbour slows all of them; the median round is reported.
//!
//! Then, per image, where the time goes (read, decode, SHA-256, preprocess, inference), and
//! the **ideal**: those unavoidable costs summed and spread over the cores, the most parcels
//! a second this machine could screen; the stage as spawned is given as a share of it.
//!
//! For the pairs, the line's PNG decoder is timed beside `zune-png` on the same files (the
//! pixels must agree): decoding is the largest cost at this size.
//!
//! Each scanner profile is measured on its own scans, rendered before the first round:
//! `small` (one pseudo-colour PNG, 224–288 px) with the bundled classifier
//! (`screenline-ref-0.1`), and the line-sized `6550` and `100100` (16-bit dual-energy PNG
//! pairs, 812 and 1,250 px across) with the detector (`models/screenline-ref-0.2`, or
//! `SCREENLINE_BENCH_MODEL`). Eight lines at full belt speed are about 40 parcels a second.
//!
//! `cargo bench -p screenline --bench inference` (needs ONNX Runtime: see README).
//! `SCREENLINE_BENCH_SCANNERS` picks the profiles (default `small,6550,100100`);
//! `SCREENLINE_BENCH_IMAGES` the images per profile (default 256 small, 64 line-sized).

use anyhow::Context;
use screenline::config::RulesConfig;
use screenline::domain::{Parcel, XrayScan};
use screenline::line::image::Decoded;
use screenline::line::invariants::TODAY;
use screenline::line::waybill::parse_record;
use screenline::screen::model::{
    default_model_dir, init_runtime, new_session, InputKind, Manifest, Model,
};
use screenline::screen::rules::MemoryLedger;
use screenline::screen::Screener;
use screenline::store::KeyedHasher;
use sha2::Digest;
use std::path::PathBuf;
use std::time::{Duration, Instant, SystemTime};

const ROUNDS: usize = 5;
const BATCHES: [usize; 2] = [8, 32];

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

/// A resident ID with a correct GB 11643 check character: one sender per parcel, so no
/// split-shipment flags colour the figures.
fn resident_id(seq: usize) -> String {
    let first17 = format!("11010519800101{:03}", seq % 1000);
    let check = screenline::line::waybill::resident_id_check(&first17).unwrap_or('0');
    format!("{first17}{check}")
}

/// One scan of the bench's dataset: its file (the high-energy half of a pair), the pair's
/// low-energy half, and its category.
struct Row {
    image: PathBuf,
    low: Option<PathBuf>,
    category: String,
}

fn parcel(seq: usize, row: &Row) -> anyhow::Result<Parcel> {
    let category = &row.category;
    let record = format!(
        r#"{{"waybill":"SF{seq:013}","sender":{{"name":"张三","id_type":"resident_id","id_number":"{}","phone":"13800138000","address":"北京市朝阳区某某路1号"}},"recipient":{{"name":"李四","phone":"021-62345678","address":"上海市长宁区某某路2号"}},"declared":{{"goods":"货物","category":"{category}","value_cny":999.0,"quantity":1}}}}"#,
        resident_id(seq)
    );
    let r = parse_record(&record, TODAY)?;
    Ok(Parcel {
        line_id: "L1".into(),
        seq: seq as u32,
        epoch: None,
        entered_at: SystemTime::now(),
        scan: Some(XrayScan {
            scan_id: format!("{seq}"),
            path: row.image.clone(),
            completed: Instant::now(),
            low_energy: row.low.clone(),
            waybill: Some(r.waybill.waybill.clone()),
            captured_at: SystemTime::now(),
        }),
        waybill: Some(r.waybill),
        findings: r.findings,
    })
}

fn main() -> anyhow::Result<()> {
    let scanners =
        std::env::var("SCREENLINE_BENCH_SCANNERS").unwrap_or_else(|_| "small,6550,100100".into());
    let env = init_runtime(None)?;
    let detector = std::env::var_os("SCREENLINE_BENCH_MODEL")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../models/screenline-ref-0.2")
        });
    for key in scanners.split(',') {
        let scanner = xraygen::Scanner::from_key(key)
            .ok_or_else(|| anyhow::anyhow!("no scanner profile {key:?}"))?;
        let (dir, default_n) = if scanner.writes_pairs() {
            (detector.clone(), 64)
        } else {
            (
                default_model_dir().ok_or_else(|| anyhow::anyhow!("no model folder"))?,
                256,
            )
        };
        let n: usize = std::env::var("SCREENLINE_BENCH_IMAGES")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(default_n);
        bench(&env, scanner, &dir, n)?;
        println!();
    }
    Ok(())
}

/// The graph a bare session runs for `kind`: its file, input name and size, and the name of
/// its counterfeit output.
fn graph(
    manifest: &Manifest,
    kind: InputKind,
) -> anyhow::Result<(String, String, usize, usize, String)> {
    Ok(match manifest {
        Manifest::V1(m) => (
            m.file.clone(),
            m.input.name.clone(),
            m.input.width as usize,
            m.input.height as usize,
            m.outputs.counterfeit.clone(),
        ),
        Manifest::V2(m) => {
            let v = m
                .variants
                .iter()
                .find(|v| v.kind == kind)
                .or_else(|| m.variants.iter().find(|v| v.kind == InputKind::Rgb))
                .ok_or_else(|| anyhow::anyhow!("the model has no variant for these scans"))?;
            (
                v.file.clone(),
                v.input.name.clone(),
                v.input.width as usize,
                v.input.height as usize,
                m.outputs.counterfeit.clone(),
            )
        }
    })
}

/// `zune-png`'s time per pair on the same files as the line's PNG decoder (the `png` crate
/// through `image`, [`decode_pair`]), whose pixels it must give exactly.
///
/// [`decode_pair`]: screenline::line::image::decode_pair
fn other_decoder(rows: &[Row]) -> anyhow::Result<Duration> {
    let zune = |bytes: &[u8]| -> anyhow::Result<Vec<u16>> {
        let mut d = zune_png::PngDecoder::new(zune_core::bytestream::ZCursor::new(bytes));
        match d.decode().map_err(|e| anyhow::anyhow!("zune-png: {e:?}"))? {
            zune_core::result::DecodingResult::U16(v) => Ok(v),
            _ => anyhow::bail!("zune-png: not a 16-bit image"),
        }
    };
    let mut took = Duration::ZERO;
    for row in rows {
        let high = std::fs::read(&row.image)?;
        let low = std::fs::read(row.low.as_ref().context("a pair has a low half")?)?;
        let s = Instant::now();
        let (h, l) = (zune(&high)?, zune(&low)?);
        took += s.elapsed();
        let Decoded::Pair {
            high: want_h,
            low: want_l,
        } = screenline::line::image::decode_pair(&high, &low).map_err(anyhow::Error::msg)?
        else {
            anyhow::bail!("a pair decoded as one image");
        };
        anyhow::ensure!(
            h == *want_h.as_raw() && l == *want_l.as_raw(),
            "zune-png and the line's decoder disagree on a pair's pixels"
        );
    }
    Ok(took / rows.len().max(1) as u32)
}

fn bench(
    env: &ort::environment::Environment,
    scanner: xraygen::Scanner,
    dir: &std::path::Path,
    n: usize,
) -> anyhow::Result<()> {
    let mut model = Model::load(dir, env, 1)?;
    let kind = if scanner.writes_pairs() {
        InputKind::Pair
    } else {
        InputKind::Rgb
    };
    let (file, input_name, w, h, counterfeit) = graph(model.manifest(), kind)?;
    let onnx = std::fs::read(dir.join(&file))?;
    let mut bare = new_session(env, 1, &onnx)?;

    // The scans: a held-out-style dataset (seed not used in training), as PNG files.
    let data = std::env::temp_dir().join(format!(
        "screenline-bench-inference-{}-{}",
        scanner.key(),
        std::process::id()
    ));
    let _ = std::fs::remove_dir_all(&data);
    xraygen::write_dataset_with(&data, n, 424_242, scanner, |_, _| {})?;
    let labels = std::fs::read_to_string(data.join("labels.csv"))?;
    let rows: Vec<Row> = labels
        .lines()
        .skip(1)
        .filter_map(|l| {
            let mut f = l.split(',');
            let mut files = f.next()?.split(';');
            Some(Row {
                image: data.join(files.next()?),
                low: files.next().map(|p| data.join(p)),
                category: f.next()?.to_owned(),
            })
        })
        .collect();
    anyhow::ensure!(
        rows.len() == n,
        "the dataset has {} of {n} scans",
        rows.len()
    );
    let (mut width, mut height) = ((u32::MAX, 0), (u32::MAX, 0));

    // Where the stage's time goes, on the same files: read, decode, SHA-256, preprocess, and
    // a thumbnail (flagged parcels only). Also makes the bare runs' input tensors.
    let mut tensors: Vec<f32> = Vec::new();
    let mut parts = [Duration::ZERO; 5];
    for row in &rows {
        let s = Instant::now();
        let bytes = std::fs::read(&row.image)?;
        let low = row.low.as_ref().map(std::fs::read).transpose()?;
        parts[0] += s.elapsed();
        let s = Instant::now();
        let scan = match &low {
            None => Decoded::Rgb(
                screenline::line::image::decode_image(&bytes).map_err(anyhow::Error::msg)?,
            ),
            Some(low) => {
                screenline::line::image::decode_pair(&bytes, low).map_err(anyhow::Error::msg)?
            }
        };
        parts[1] += s.elapsed();
        let s = Instant::now();
        std::hint::black_box(sha2::Sha256::digest(&bytes));
        if let Some(low) = &low {
            std::hint::black_box(sha2::Sha256::digest(low));
        }
        parts[2] += s.elapsed();
        let s = Instant::now();
        let input = model.preprocess(&scan)?;
        parts[3] += s.elapsed();
        tensors.extend(input);
        let s = Instant::now();
        std::hint::black_box(screenline::screen::thumbnail_of(&scan));
        parts[4] += s.elapsed();
        let (sw, sh) = scan.dimensions();
        width = (width.0.min(sw), width.1.max(sw));
        height = (height.0.min(sh), height.1.max(sh));
    }
    let parts = parts.map(|d| d / n as u32);
    // Timed here, with the line's decode, before the rounds; printed with the parts.
    let zune = if scanner.writes_pairs() {
        Some(other_decoder(&rows)?)
    } else {
        None
    };
    let plane = w * h * 3;
    let mut run_bare = |first: usize, batch: usize| -> anyhow::Result<f32> {
        let input = &tensors[first * plane..(first + batch) * plane];
        let t = ort::value::TensorRef::from_array_view(([batch, 3, h, w], input))?;
        let out = bare.run(ort::inputs![input_name.as_str() => t])?;
        let (_, cf) = out[counterfeit.as_str()].try_extract_tensor::<f32>()?;
        Ok(cf[0])
    };

    let rules = screenline::screen::load_rules(
        &RulesConfig::default(),
        KeyedHasher::random(),
        Box::new(MemoryLedger::default()),
    )?;
    let screener = Screener::new(model, rules);
    let parcels = |round: usize| -> anyhow::Result<Vec<Parcel>> {
        rows.iter()
            .enumerate()
            .map(|(i, row)| parcel(round * n + i, row))
            .collect()
    };
    // Warm up both (first runs allocate, page in the files).
    for i in 0..n.min(16) {
        run_bare(i, 1)?;
    }
    for p in parcels(999)?.into_iter().take(16) {
        screener.screen(p);
    }

    let mut bare_rounds = Vec::new();
    let mut stage_rounds = Vec::new();
    let mut bare_lat = Vec::new();
    let mut stage_lat = Vec::new();
    let mut batched: Vec<(usize, Vec<Duration>, Vec<Duration>)> = BATCHES
        .iter()
        .map(|b| (*b, Vec::new(), Vec::new()))
        .collect();
    let mut flagged = 0;
    let mut spawned_rounds = Vec::new();
    for round in 0..ROUNDS {
        let started = Instant::now();
        for i in 0..n {
            let t = Instant::now();
            std::hint::black_box(run_bare(i, 1)?);
            bare_lat.push(t.elapsed());
        }
        bare_rounds.push(started.elapsed());

        let ps = parcels(round)?;
        let started = Instant::now();
        for p in ps {
            let t = Instant::now();
            let s = screener.screen(p);
            stage_lat.push(t.elapsed());
            flagged += usize::from(s.decision == screenline::domain::Decision::Flag);
        }
        stage_rounds.push(started.elapsed());

        // The stage as the line runs it: decode thread + model thread, dynamic batching.
        let ps = parcels(round + 50)?;
        let started = Instant::now();
        let out = screenline::screen::run_stage(screener.clone(), ps);
        spawned_rounds.push(started.elapsed());
        anyhow::ensure!(out.len() == n, "the stage returned {} of {n}", out.len());

        for (b, bare_b, stage_b) in batched.iter_mut() {
            let started = Instant::now();
            let mut i = 0;
            while i + *b <= n {
                std::hint::black_box(run_bare(i, *b)?);
                i += *b;
            }
            bare_b.push(started.elapsed() * n as u32 / i.max(1) as u32);
            let ps = parcels(round + 100 * *b)?;
            let started = Instant::now();
            let mut batch = ps.into_iter().peekable();
            while batch.peek().is_some() {
                let chunk: Vec<Parcel> = batch.by_ref().take(*b).collect();
                std::hint::black_box(screener.screen_batch(chunk));
            }
            stage_b.push(started.elapsed());
        }
    }
    let _ = std::fs::remove_dir_all(&data);

    let per_s = |d: Duration| n as f64 / d.as_secs_f64();
    let (bare_t, stage_t) = (per_s(median(bare_rounds)), per_s(median(stage_rounds)));
    bare_lat.sort();
    stage_lat.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    let info = screener.model_info();
    let cores = std::thread::available_parallelism().map_or(1, |c| c.get());
    println!(
        "inference, scanner {}: {} scans of {}-{} x {}-{} px to {}x{}, model {} {}; {} rounds, median round; {} cores, 1 intra-op thread",
        scanner.key(),
        n,
        width.0,
        width.1,
        height.0,
        height.1,
        w,
        h,
        info.name,
        info.version,
        ROUNDS,
        cores
    );
    println!(
        "{:<44} {:>10} {:>9} {:>9}",
        "path", "images/s", "p50 ms", "p99 ms"
    );
    // One row: the path, its throughput, and its latency's median and 99th percentile.
    let row = |path: &str, per_s: f64, lat: &[Duration]| {
        println!(
            "{path:<44} {per_s:>10.0} {:>9.3} {:>9.3}",
            ms(percentile(lat, 0.5)),
            ms(percentile(lat, 0.99))
        );
    };
    row("bare Session::run, batch 1", bare_t, &bare_lat);
    row(
        "screen stage (decode+preprocess+run+rules)",
        stage_t,
        &stage_lat,
    );
    println!(
        "ratio stage / bare at batch 1: {:.3} (target >= 0.85); {} of {} parcels flagged",
        stage_t / bare_t,
        flagged,
        n * ROUNDS
    );
    let spawned_t = per_s(median(spawned_rounds));
    println!(
        "screen stage as spawned (decode thread + model thread, batches <= {}): {:.0} parcels/s, ratio to bare batch 1: {:.3}",
        screenline::screen::SCREEN_BATCH,
        spawned_t,
        spawned_t / bare_t
    );
    let bare_p50 = percentile(&bare_lat, 0.5);
    println!(
        "per image: read {:.3} ms, decode {:.3} ms, sha-256 {:.3} ms, preprocess {:.3} ms, thumbnail (flagged only) {:.3} ms (bare run p50 {:.3} ms)",
        ms(parts[0]),
        ms(parts[1]),
        ms(parts[2]),
        ms(parts[3]),
        ms(parts[4]),
        ms(bare_p50)
    );
    if let Some(zune) = zune {
        println!(
            "decoders side by side, per pair: the line's (png, through image) {:.3} ms, zune-png {:.3} ms (zune-png / the line's: {:.2}); same pixels",
            ms(parts[1]),
            ms(zune),
            ms(zune) / ms(parts[1])
        );
    }
    let unavoidable = parts[0] + parts[1] + parts[2] + parts[3] + bare_p50;
    let ideal = cores as f64 / unavoidable.as_secs_f64();
    println!(
        "ideal: read+decode+sha-256+preprocess+run = {:.3} ms a scan over {cores} cores = {ideal:.0} parcels/s; as spawned / ideal: {:.3}; 8 lines at full belt speed (40 parcels/s) take {:.0} % of the stage as spawned",
        ms(unavoidable),
        spawned_t / ideal,
        40.0 / spawned_t * 100.0
    );
    for (b, bare_b, stage_b) in batched {
        let (bt, st) = (per_s(median(bare_b)), per_s(median(stage_b)));
        println!(
            "batch {b:>2}: bare Session::run {bt:>6.0} images/s ({:.2}x batch 1), screen_batch {st:>6.0} parcels/s ({:.2}x batch 1), ratio {:.3}",
            bt / bare_t,
            st / stage_t,
            st / bt
        );
    }
    Ok(())
}
