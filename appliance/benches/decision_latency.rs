//! Decision latency under load: from the X-ray image complete in the drop folder to the
//! decision sent to the line controller, p50/p99/max, for growing loads, each run side by
//! side against the same budget (the belt time from image complete to the decision point).
//!
//! Every run is the whole demo system in this process: simulated lines over pseudo-terminals
//! driving the firmware emulator, the generator writing images (which is itself load on the
//! same cores), the folder watcher, join, the ONNX model, the rules, the sled store and the
//! embedded broker.
//!
//! The max includes parcels whose waybill read never came: they wait for the line's join
//! window by design, and are still decided before the decision point.
//!
//! `cargo bench -p screenline --bench decision_latency` (needs ONNX Runtime: see README).
//! `SCREENLINE_BENCH_SECONDS` sets each run's length (default 20).
//!
//! The last row adds the site's sharing: simulated peer appliances publish signed sightings
//! of sixteen more lines' parcels on the broker, which this appliance checks and folds into
//! its split-shipment ledger while it screens its own eight lines; the row above it is the
//! same eight lines alone.
//!
//! The last two rows are eight lines of line-sized X-ray machines (`6550`, `100100`:
//! 16-bit dual-energy pairs, 800–1,250 px across) screened by the detector
//! (`models/screenline-ref-0.2`, or `SCREENLINE_BENCH_MODEL`). Their scans are rendered
//! before the run ([`demo::ScanPool`]: rendering forty such pairs a second would itself take
//! the cores being measured); each parcel's copy carries its own stamp, so every scan is
//! still a file of its own for the line and the demo's truth.

use screenline::demo::{self, traffic::Mix, DemoOptions, ScanPool, XrayMachines};
use std::path::PathBuf;
use std::sync::Arc;
use xraygen::Scanner;

/// Pre-rendered scans per category, genuine and counterfeit, for the line-sized rows.
const POOL_PER_KIND: usize = 3;

fn main() -> anyhow::Result<()> {
    let seconds: f64 = std::env::var("SCREENLINE_BENCH_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(20.0);
    let detector = std::env::var_os("SCREENLINE_BENCH_MODEL")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../models/screenline-ref-0.2")
        });
    let runtime = tokio::runtime::Runtime::new()?;
    println!(
        "decision latency, image complete → decision sent ({} cores, {seconds:.0} s per load)",
        std::thread::available_parallelism().map_or(1, |n| n.get())
    );
    println!(
        "{:>7} {:>5} {:>7} {:>10} {:>8} {:>8} {:>8} {:>8} {:>10} {:>5} {:>9} {:>7}",
        "scanner",
        "lines",
        "rate/s",
        "parcels/h",
        "p50 ms",
        "p99 ms",
        "max ms",
        "budget",
        "p99/budget",
        "late",
        "peers' /s",
        "folded"
    );
    // The last two side by side: eight lines at full belt speed, alone and with the
    // sightings of sixteen more lines (their parcels' rate) from peers of the site.
    for (scanner, lines, rate, peers) in [
        (Scanner::Small, 1usize, 2.0f64, 0.0f64),
        (Scanner::Small, 2, 4.0, 0.0),
        (Scanner::Small, 4, 4.0, 0.0),
        (Scanner::Small, 4, 5.0, 0.0),
        (Scanner::Small, 8, 5.0, 0.0),
        (Scanner::Small, 8, 5.0, 16.0 * 5.0),
        (Scanner::S6550, 8, 5.0, 0.0),
        (Scanner::S100100, 8, 5.0, 0.0),
    ] {
        let parcels = (rate * seconds).ceil() as u64;
        let machines = XrayMachines {
            scanner,
            pool: scanner
                .writes_pairs()
                .then(|| ScanPool::render(scanner, POOL_PER_KIND, 2026))
                .transpose()?
                .map(Arc::new),
            ..XrayMachines::default()
        };
        let opts = DemoOptions {
            parcels: Some(parcels),
            rate,
            seed: 11,
            lines,
            appliances: 1,
            broker: None,
            console: "127.0.0.1:0".parse()?,
            model_dir: scanner.writes_pairs().then(|| detector.clone()),
            mix: Mix::Realistic,
            data_dir: None,
            peer_sightings_per_s: peers,
        };
        let s = runtime.block_on(demo::run_with(opts, machines, true))?;
        let l = &s.decision_latency;
        let ms = |us: u64| us as f64 / 1000.0;
        println!(
            "{:>7} {:>5} {:>7.1} {:>10.0} {:>8.1} {:>8.1} {:>8.1} {:>8.0} {:>10.3} {:>5} {:>9.0} {:>7}",
            scanner.key(),
            lines,
            rate,
            rate * lines as f64 * 3600.0,
            ms(l.p50_us),
            ms(l.p99_us),
            ms(l.max_us),
            ms(l.budget_us),
            l.p99_us as f64 / l.budget_us.max(1) as f64,
            l.late,
            peers,
            s.sightings_folded
        );
    }
    Ok(())
}
