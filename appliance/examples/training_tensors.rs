//! Writes a training set for the detector models (screenline-ref 0.2) as the tensors the
//! line itself would feed the model, so that training and screening cannot preprocess
//! differently: each scan is rendered by xraygen (`render_scan`, the seeds of
//! `write_dataset_with`), its model input computed by `screenline::screen::channels` — the
//! appliance's own code — and stored, with the scan's labels and lot boxes.
//!
//! ```text
//! cargo run --release --example training_tensors -- \
//!     --scanner 6550 --count 6000 --seed 11 --size 320 --kind pair --out /tmp/t/6550-s11
//! ```
//!
//! Writes into OUT:
//! - `x.npy`: uint16 `[N, 3, SIZE, SIZE]`, the channels × 4096 (rounded, clamped to u16);
//! - `labels.csv`: `index,category,counterfeit,width,height` (the scan's size in pixels);
//! - `boxes.csv`: `index,category,counterfeit,x0,y0,x1,y1` in the scan's pixels.
//!
//! `--kind pair` computes the dual-energy channels; `--kind rgb` those of the pseudo-colour
//! render of the same scan (the model variant for machines that write only that image).
//! Rendering is the cost; `--threads` renders that many scans at once.

use anyhow::{bail, Context};
use screenline::screen::channels::{pair_channels, rgb_channels, AreaResize, CHANNELS};
use std::io::{BufWriter, Write};
use std::path::PathBuf;
use xraygen::{derive_seed, random_spec, render_scan, Scanner, DATASET_COUNTERFEIT_PROBABILITY};

/// Channel value per unit of a stored u16.
const QUANTUM: f32 = 4096.0;

struct Args {
    scanner: Scanner,
    count: usize,
    seed: u64,
    size: usize,
    pair: bool,
    threads: usize,
    out: PathBuf,
}

fn args() -> anyhow::Result<Args> {
    let mut a = Args {
        scanner: Scanner::S6550,
        count: 100,
        seed: 1,
        size: 320,
        pair: true,
        threads: 2,
        out: PathBuf::from("tensors"),
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let value = it.next().with_context(|| format!("{flag} wants a value"))?;
        match flag.as_str() {
            "--scanner" => {
                a.scanner = Scanner::from_key(&value)
                    .with_context(|| format!("unknown scanner {value:?}"))?
            }
            "--count" => a.count = value.parse()?,
            "--seed" => a.seed = value.parse()?,
            "--size" => a.size = value.parse()?,
            "--threads" => a.threads = value.parse::<usize>()?.max(1),
            "--kind" => {
                a.pair = match value.as_str() {
                    "pair" => true,
                    "rgb" => false,
                    _ => bail!("--kind is pair or rgb, not {value:?}"),
                }
            }
            "--out" => a.out = PathBuf::from(value),
            _ => bail!("unknown option {flag}"),
        }
    }
    if a.pair && !a.scanner.writes_pairs() {
        bail!(
            "the {} scanner writes pseudo-colour only: use --kind rgb",
            a.scanner
        );
    }
    Ok(a)
}

/// One rendered scan, as stored.
struct Row {
    x: Vec<u16>,
    label: String,
    boxes: String,
}

fn row(a: &Args, i: usize, resize: &mut Option<AreaResize>) -> anyhow::Result<Row> {
    let s = derive_seed(a.seed, i as u64);
    let scan = render_scan(
        a.scanner,
        random_spec(s, DATASET_COUNTERFEIT_PROBABILITY),
        s,
    );
    let mut x = vec![0f32; CHANNELS * a.size * a.size];
    if a.pair {
        pair_channels(&scan.high, &scan.low, resize, (a.size, a.size), &mut x)?;
    } else {
        rgb_channels(&scan.rgb, resize, (a.size, a.size), &mut x)?;
    }
    let label = format!(
        "{i},{},{},{},{}\n",
        scan.category_key(),
        u8::from(scan.counterfeit),
        scan.high.width(),
        scan.high.height()
    );
    let boxes = scan
        .items
        .iter()
        .map(|it| format!("{i},{}\n", it.csv_fields()))
        .collect();
    let x = x
        .iter()
        .map(|v| (v * QUANTUM).round().clamp(0.0, 65535.0) as u16)
        .collect();
    Ok(Row { x, label, boxes })
}

fn main() -> anyhow::Result<()> {
    let a = args()?;
    std::fs::create_dir_all(&a.out).with_context(|| format!("creating {}", a.out.display()))?;
    let npy = a.out.join("x.npy");
    let mut x = BufWriter::new(std::fs::File::create(&npy)?);
    // NPY 1.0: magic, header length, a dict padded with spaces to a multiple of 64.
    let mut header = format!(
        "{{'descr': '<u2', 'fortran_order': False, 'shape': ({}, {CHANNELS}, {}, {}), }}",
        a.count, a.size, a.size
    );
    while (10 + header.len() + 1) % 64 != 0 {
        header.push(' ');
    }
    header.push('\n');
    x.write_all(b"\x93NUMPY\x01\x00")?;
    x.write_all(&u16::try_from(header.len())?.to_le_bytes())?;
    x.write_all(header.as_bytes())?;
    let mut labels = String::from("index,category,counterfeit,width,height\n");
    let mut boxes = String::from("index,category,counterfeit,x0,y0,x1,y1\n");
    let started = std::time::Instant::now();
    for chunk in (0..a.count).collect::<Vec<_>>().chunks(a.threads * 8) {
        let rows: Vec<anyhow::Result<Row>> = std::thread::scope(|scope| {
            let parts: Vec<_> = chunk
                .chunks(chunk.len().div_ceil(a.threads))
                .map(|part| {
                    let a = &a;
                    scope.spawn(move || {
                        let mut resize = None;
                        part.iter()
                            .map(|&i| row(a, i, &mut resize))
                            .collect::<Vec<_>>()
                    })
                })
                .collect();
            parts
                .into_iter()
                .flat_map(|p| {
                    p.join()
                        .unwrap_or_else(|_| vec![Err(anyhow::anyhow!("a renderer panicked"))])
                })
                .collect()
        });
        for r in rows {
            let r = r?;
            for v in &r.x {
                x.write_all(&v.to_le_bytes())?;
            }
            labels.push_str(&r.label);
            boxes.push_str(&r.boxes);
        }
        let done = chunk.last().map_or(0, |i| i + 1);
        eprint!(
            "\r{done}/{} scans, {:.0} s",
            a.count,
            started.elapsed().as_secs_f64()
        );
    }
    eprintln!();
    x.flush()?;
    std::fs::write(a.out.join("boxes.csv"), boxes)?;
    std::fs::write(a.out.join("labels.csv"), labels)?;
    Ok(())
}
