//! Renders one parcel (pseudo-colour PNG, optionally the 16-bit dual-energy pair), or
//! times the renderer.
//!
//! `cargo run --release -p xraygen --example render -- --category KEY --counterfeit 0|1 --seed S --out FILE.png [--dual PREFIX] [--scanner KEY]`
//! writes FILE.png and, with `--dual`, PREFIX.high.png and PREFIX.low.png. With `--scanner`
//! (`small`, `6550`, `100100`) the scan comes from `render_scan` on that profile and its
//! lots' boxes are printed, one `category,counterfeit,x0,y0,x1,y1` line each (x1, y1
//! exclusive), main lot first.
//! `cargo run --release -p xraygen --example render -- --bench N` prints the mean render time
//! (of `render`; see the `profile_times` example for every profile).

use std::process::ExitCode;
use std::time::Instant;

use xraygen::{
    category_index, random_spec, render, render_scan, ParcelSpec, Scanner, CATEGORY_KEYS,
};

fn bench(n: u64) {
    let started = Instant::now();
    let mut pixels = 0u64;
    for seed in 0..n {
        let scan = render(random_spec(seed, 0.5), seed);
        pixels += u64::from(scan.rgb.width() * scan.rgb.height());
    }
    let ms = started.elapsed().as_secs_f64() * 1000.0 / n.max(1) as f64;
    println!(
        "render: {n} parcels, {ms:.2} ms/parcel, {} px/parcel on average",
        pixels / n.max(1)
    );
}

fn run() -> Result<(), String> {
    let mut args = std::env::args().skip(1);
    let (mut category, mut counterfeit, mut seed, mut out, mut dual, mut scanner) =
        (None, None, None, None, None, None);
    while let Some(flag) = args.next() {
        let value = args.next().ok_or_else(|| format!("{flag} needs a value"))?;
        match flag.as_str() {
            "--bench" => {
                bench(
                    value
                        .parse()
                        .map_err(|_| format!("--bench {value}: not a number"))?,
                );
                return Ok(());
            }
            "--category" => {
                category = Some(category_index(&value).ok_or_else(|| {
                    format!(
                        "--category {value}: not a category; one of {}",
                        CATEGORY_KEYS.join(", ")
                    )
                })?)
            }
            "--counterfeit" => counterfeit = Some(value == "1" || value == "true"),
            "--seed" => {
                seed = Some(
                    value
                        .parse::<u64>()
                        .map_err(|_| format!("--seed {value}: not a number"))?,
                )
            }
            "--out" => out = Some(value),
            "--dual" => dual = Some(value),
            "--scanner" => {
                scanner = Some(
                    Scanner::from_key(&value)
                        .ok_or_else(|| format!("--scanner {value}: small, 6550 or 100100"))?,
                )
            }
            other => return Err(format!("unknown option {other}")),
        }
    }
    let (Some(category), Some(seed), Some(out)) = (category, seed, out) else {
        return Err("--category, --seed and --out are required".into());
    };
    let spec = ParcelSpec {
        category,
        counterfeit: counterfeit.unwrap_or(false),
    };
    let scan = match scanner {
        None => render(spec, seed),
        Some(scanner) => {
            let scan = render_scan(scanner, spec, seed);
            for it in &scan.items {
                println!("{}", it.csv_fields());
            }
            scan.into_scan()
        }
    };
    scan.rgb
        .save(&out)
        .map_err(|e| format!("cannot write {out}: {e}"))?;
    if let Some(prefix) = dual {
        for (suffix, img) in [("high", &scan.high), ("low", &scan.low)] {
            let path = format!("{prefix}.{suffix}.png");
            img.save(&path)
                .map_err(|e| format!("cannot write {path}: {e}"))?;
        }
    }
    Ok(())
}

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(msg) => {
            eprintln!("render: {msg}");
            ExitCode::from(2)
        }
    }
}
