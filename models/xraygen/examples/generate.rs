//! Writes a labelled synthetic dataset: what the training recipe calls.
//!
//! `cargo run --release -p xraygen --example generate -- --out DIR --count N --seed S [--scanner KEY] [--pseudo-colour 0|1]`
//!
//! Without `--scanner` this is `write_dataset` (pseudo-colour PNGs and `labels.csv`, as the
//! model 0.1 recipe expects). With `--scanner small|6550|100100` it is `write_dataset_with`:
//! the profile's images (16-bit `.high.png`/`.low.png` pairs for the large profiles, plus the
//! pseudo-colour `.png` with `--pseudo-colour 1`), `boxes.csv` and `labels.csv`.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use xraygen::{DatasetOptions, Scanner};

const USAGE: &str =
    "usage: generate --out DIR --count N --seed S [--scanner small|6550|100100] [--pseudo-colour 0|1]";

struct Args {
    out: PathBuf,
    count: usize,
    seed: u64,
    /// `None`: today's `write_dataset`.
    options: Option<DatasetOptions>,
}

fn parse() -> Result<Args, String> {
    let (mut out, mut count, mut seed, mut scanner, mut pseudo) = (None, None, None, None, None);
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
            "--scanner" => {
                scanner = Some(Scanner::from_key(&value).ok_or_else(|| {
                    let keys: Vec<&str> = Scanner::all().iter().map(|s| s.key()).collect();
                    format!(
                        "--scanner {value}: not a profile; one of {}",
                        keys.join(", ")
                    )
                })?)
            }
            "--pseudo-colour" => {
                pseudo = Some(match value.as_str() {
                    "1" | "true" => true,
                    "0" | "false" => false,
                    _ => return Err(format!("--pseudo-colour {value}: 0 or 1")),
                })
            }
            other => return Err(format!("unknown option {other}; {USAGE}")),
        }
    }
    let options = match (scanner, pseudo) {
        (None, None) => None,
        (scanner, pseudo) => Some(DatasetOptions {
            scanner: scanner.unwrap_or_default(),
            pseudo_colour: pseudo.unwrap_or(false),
        }),
    };
    match (out, count, seed) {
        (Some(out), Some(count), Some(seed)) => Ok(Args {
            out,
            count,
            seed,
            options,
        }),
        _ => Err(format!(
            "--out, --count and --seed are all required; {USAGE}"
        )),
    }
}

fn main() -> ExitCode {
    let Args {
        out,
        count,
        seed,
        options,
    } = match parse() {
        Ok(args) => args,
        Err(msg) => {
            eprintln!("generate: {msg}");
            return ExitCode::from(2);
        }
    };
    let started = Instant::now();
    let progress = |done: usize, total: usize| {
        // Not is_multiple_of: the workspace supports Rust 1.85.
        let into_block = done % 500;
        if into_block == 0 || done == total {
            eprintln!("generate: {done}/{total}");
        }
    };
    let result = match options {
        None => xraygen::write_dataset(&out, count, seed, progress),
        Some(options) => xraygen::write_dataset_with(&out, count, seed, options, progress),
    };
    match result {
        Ok(()) => {
            let secs = started.elapsed().as_secs_f64();
            eprintln!(
                "generate: wrote {count} {} scans to {} in {secs:.1} s ({:.1} ms/image incl. PNG)",
                options.map(|o| o.scanner).unwrap_or_default(),
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
