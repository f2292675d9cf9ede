//! Writes a labelled synthetic dataset: what the training recipe calls.
//!
//! `cargo run --release -p xraygen --example generate -- --out DIR --count N --seed S`

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

const USAGE: &str = "usage: generate --out DIR --count N --seed S";

fn parse() -> Result<(PathBuf, usize, u64), String> {
    let (mut out, mut count, mut seed) = (None, None, None);
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        let value = args
            .next()
            .ok_or_else(|| format!("{flag} needs a value; {USAGE}"))?;
        match flag.as_str() {
            "--out" => out = Some(PathBuf::from(value)),
            "--count" => {
                count = Some(
                    value
                        .parse()
                        .map_err(|_| format!("--count {value}: not a whole number"))?,
                )
            }
            "--seed" => {
                seed = Some(
                    value
                        .parse()
                        .map_err(|_| format!("--seed {value}: not a whole number"))?,
                )
            }
            other => return Err(format!("unknown option {other}; {USAGE}")),
        }
    }
    match (out, count, seed) {
        (Some(o), Some(c), Some(s)) => Ok((o, c, s)),
        _ => Err(format!(
            "--out, --count and --seed are all required; {USAGE}"
        )),
    }
}

fn main() -> ExitCode {
    let (out, count, seed) = match parse() {
        Ok(args) => args,
        Err(msg) => {
            eprintln!("generate: {msg}");
            return ExitCode::from(2);
        }
    };
    let started = Instant::now();
    let result = xraygen::write_dataset(&out, count, seed, |done, total| {
        if done % 500 == 0 || done == total {
            eprintln!("generate: {done}/{total}");
        }
    });
    match result {
        Ok(()) => {
            let secs = started.elapsed().as_secs_f64();
            eprintln!(
                "generate: wrote {count} images to {} in {secs:.1} s ({:.1} ms/image incl. PNG)",
                out.display(),
                1000.0 * secs / count.max(1) as f64
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("generate: {e}");
            ExitCode::FAILURE
        }
    }
}
