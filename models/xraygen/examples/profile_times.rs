//! Times `render_scan` on every scanner profile, and the PNG encoding a dataset adds.
//!
//! `cargo run --release -p xraygen --example profile_times -- [N]` renders N scans per profile
//! (default 40; seeds 0..N, specs from `random_spec(seed, 0.5)`) on one thread and prints,
//! per profile, the mean and slowest render time, the mean image size, and the mean time to
//! encode what `write_dataset_with` writes (pseudo-colour PNG for `small`, the 16-bit pair
//! for the large profiles), into memory.

use std::io::Cursor;
use std::process::ExitCode;
use std::time::Instant;

use image::codecs::png::{CompressionType, FilterType, PngEncoder};
use xraygen::{random_spec, render_scan, Scanner};

fn encode_ms(scan: &xraygen::ScanWithItems) -> Result<f64, image::ImageError> {
    let started = Instant::now();
    let png = || {
        PngEncoder::new_with_quality(
            Cursor::new(Vec::new()),
            CompressionType::Fast,
            FilterType::Adaptive,
        )
    };
    if scan.scanner.writes_pairs() {
        scan.high.write_with_encoder(png())?;
        scan.low.write_with_encoder(png())?;
    } else {
        scan.rgb.write_with_encoder(png())?;
    }
    Ok(started.elapsed().as_secs_f64() * 1000.0)
}

fn main() -> ExitCode {
    let n: u64 = match std::env::args().nth(1).map(|a| a.parse()) {
        None => 40,
        Some(Ok(n)) if n > 0 => n,
        Some(_) => {
            eprintln!("usage: profile_times [N]  (N > 0 scans per profile)");
            return ExitCode::from(2);
        }
    };
    println!("| profile | image (mean) | render mean | render max | PNG encode mean |");
    println!("| --- | --- | --- | --- | --- |");
    for scanner in Scanner::all() {
        let (mut total, mut worst, mut encode, mut w, mut h) = (0.0, 0.0f64, 0.0, 0u64, 0u64);
        for seed in 0..n {
            let started = Instant::now();
            let scan = render_scan(*scanner, random_spec(seed, 0.5), seed);
            let ms = started.elapsed().as_secs_f64() * 1000.0;
            total += ms;
            worst = worst.max(ms);
            w += u64::from(scan.high.width());
            h += u64::from(scan.high.height());
            match encode_ms(&scan) {
                Ok(ms) => encode += ms,
                Err(e) => {
                    eprintln!("profile_times: cannot encode: {e}");
                    return ExitCode::FAILURE;
                }
            }
        }
        let k = n as f64;
        println!(
            "| {} | {} × {} px | {:.0} ms | {:.0} ms | {:.0} ms |",
            scanner.key(),
            w / n,
            h / n,
            total / k,
            worst,
            encode / k
        );
    }
    ExitCode::SUCCESS
}
