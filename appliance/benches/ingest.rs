//! Ingest speed on this machine, measured side by side in one run.
//!
//! - Waybill records: a reader capture (JSON with real-name data, and bare numbers) through
//!   the framer and the payload parser with every field check — records per second.
//! - X-ray images: the drop-folder path (header probe with limits, read with the size
//!   limit, decode with pixel and allocation limits, RGB conversion; for a dual-energy pair,
//!   both halves and the pseudo-colour rendering) against a bare `image::open(..).decode()`
//!   of the same files. The ratio is what ingest adds.
//!
//! Rounds alternate between the two so that a busy neighbour on the machine slows both; the
//! median round is reported.

use screenline::domain::XrayScan;
use screenline::line::invariants::TODAY;
use screenline::line::waybill::{parse_record, Framed, Framer, Framing};
use screenline::line::xray::{classify, probe};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

const RECORDS: usize = 20_000;
const SINGLES: u64 = 24;
const PAIRS: u64 = 12;
const ROUNDS: usize = 5;

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn capture() -> Vec<u8> {
    let mut out = Vec::new();
    for i in 0..RECORDS {
        if i % 4 == 3 {
            out.extend(format!("YT{i:010}\r\n").as_bytes());
        } else {
            out.extend(format!(
                r#"{{"waybill":"SF{i:013}","sender":{{"name":"张三","id_type":"resident_id","id_number":"11010519491231002X","phone":"13800138000","address":"北京市朝阳区某某路1号"}},"recipient":{{"name":"李四","phone":"021-62345678","address":"上海市长宁区某某路2号"}},"declared":{{"goods":"运动鞋","category":"apparel","value_cny":199.0,"quantity":1}},"weight_g":850,"agreement_customer":null}}"#
            ).as_bytes());
            out.extend(b"\r\n");
        }
    }
    out
}

fn parse_all(bytes: &[u8]) -> usize {
    let mut framer = Framer::new(Framing::Line);
    let mut ok = 0;
    // As the port delivers it: 1 KiB reads.
    for chunk in bytes.chunks(1024) {
        for item in framer.push(chunk) {
            if let Framed::Record(text) = item {
                if parse_record(&text, TODAY).is_ok() {
                    ok += 1;
                }
            }
        }
    }
    ok
}

/// The drop folder: singles as PNG/JPEG/TIFF, pairs as 16-bit PNG halves.
fn drop_folder(dir: &Path) -> Vec<(PathBuf, Option<PathBuf>)> {
    std::fs::create_dir_all(dir).expect("bench folder");
    let mut scans = Vec::new();
    for i in 0..SINGLES + PAIRS {
        let spec = xraygen::random_spec(i, 0.3);
        let scan = xraygen::render(spec, i);
        if i < SINGLES {
            let (ext, fmt) = match i % 3 {
                0 => ("png", image::ImageFormat::Png),
                1 => ("jpg", image::ImageFormat::Jpeg),
                _ => ("tif", image::ImageFormat::Tiff),
            };
            let p = dir.join(format!("s{i}.{ext}"));
            scan.rgb.save_with_format(&p, fmt).expect("save");
            scans.push((p, None));
        } else {
            let (h, l) = (
                dir.join(format!("p{i}.high.png")),
                dir.join(format!("p{i}.low.png")),
            );
            scan.high.save(&h).expect("save");
            scan.low.save(&l).expect("save");
            scans.push((h, Some(l)));
        }
    }
    scans
}

fn ingest_all(scans: &[(PathBuf, Option<PathBuf>)]) -> u64 {
    let mut pixels = 0;
    for (path, low) in scans {
        for p in std::iter::once(path).chain(low) {
            let (_, part) = classify(p).expect("an image name");
            probe(p, part).expect("passes the probe");
        }
        let scan = XrayScan {
            scan_id: "bench".into(),
            path: path.clone(),
            completed: Instant::now(),
            low_energy: low.clone(),
            waybill: None,
            captured_at: SystemTime::now(),
        };
        let (_, _, decoded) = screenline::line::image::load_scan(&scan).expect("decodes");
        let (w, h) = decoded.dimensions();
        pixels += u64::from(w) * u64::from(h);
    }
    pixels
}

fn bare_all(scans: &[(PathBuf, Option<PathBuf>)]) -> u64 {
    let mut pixels = 0;
    for (path, low) in scans {
        for p in std::iter::once(path).chain(low) {
            let img = image::open(p).expect("decodes");
            pixels += u64::from(img.width()) * u64::from(img.height());
        }
    }
    pixels
}

fn main() {
    let bytes = capture();
    let dir = std::env::temp_dir().join(format!("screenline-bench-{}", std::process::id()));
    let scans = drop_folder(&dir);

    let (singles, pairs) = scans.split_at(SINGLES as usize);
    let mut rec = Vec::new();
    let mut times: [[Vec<Duration>; 2]; 2] = Default::default();
    for _ in 0..ROUNDS {
        let t = Instant::now();
        let ok = std::hint::black_box(parse_all(&bytes));
        rec.push(t.elapsed());
        assert_eq!(ok, RECORDS, "every record parses");
        for (k, set) in [singles, pairs].into_iter().enumerate() {
            let t = Instant::now();
            std::hint::black_box(ingest_all(set));
            times[k][0].push(t.elapsed());
            let t = Instant::now();
            std::hint::black_box(bare_all(set));
            times[k][1].push(t.elapsed());
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
    let rec = median(rec);
    println!(
        "waybill records: {:>10.0} records/s  ({RECORDS} records, {:.1} MB/s, median of {ROUNDS} rounds)",
        RECORDS as f64 / rec.as_secs_f64(),
        bytes.len() as f64 / rec.as_secs_f64() / 1e6,
    );
    let [s, p] = times.map(|[i, b]| (median(i), median(b)));
    for (what, n, (ing, bare), extra) in [
        (
            "single RGB (PNG/JPEG/TIFF)",
            SINGLES,
            s,
            "probe, limits, RGB conversion",
        ),
        (
            "dual-energy pairs (16-bit PNG)",
            PAIRS,
            p,
            "probe, limits, pseudo-colour rendering",
        ),
        ("all", SINGLES + PAIRS, (s.0 + p.0, s.1 + p.1), ""),
    ] {
        println!(
            "X-ray {what}: ingest {:.1} images/s, bare decode {:.1} images/s, ingest/bare {:.2}x time {extra}",
            n as f64 / ing.as_secs_f64(),
            n as f64 / bare.as_secs_f64(),
            ing.as_secs_f64() / bare.as_secs_f64()
        );
    }
}
