//! Nothing flagged is ever lost: the real binary (`screenline demo --wave`, every parcel
//! counterfeit, on the real firmware emulator and pipeline) against a real Mosquitto, checked
//! by an independent `mosquitto_sub` against the appliance's own store.
//!
//! 1. The broker is stopped and restarted every few seconds while flagged parcels flow.
//! 2. The appliance is killed with SIGKILL at random moments, 20 times, under load; the store
//!    checks clean after every kill; then a last run drains what is left.
//! 3. The broker is down for the whole run, then comes up: the backlog drains, and the
//!    appliance's memory stays flat while the backlog grows on disk.

mod common;

use common::*;
use rand::Rng;
use std::collections::HashSet;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const TOPIC: &str = "screenline/v1/DEMO/demo-01/reports/flagged";

/// Each test loads both cores; they run one at a time.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn one_at_a_time() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

/// A fresh directory tagged `tag` and a persistent Mosquitto on a free port, its state in it.
fn persistent_broker(tag: &str) -> (TempDir, u16, Proc) {
    let dir = TempDir::new(tag);
    let port = free_port();
    let broker = start_mosquitto_persistent(dir.path(), port);
    (dir, port, broker)
}

/// Starts the demo on the wave mix with the given extra arguments, its log in `dir`.
fn demo(dir: &Path, broker: u16, data: &Path, args: &[&str]) -> Appliance {
    let broker = format!("mqtt://127.0.0.1:{broker}");
    let data = data.to_string_lossy();
    let mut all = vec![
        "--wave",
        "--console",
        "127.0.0.1:0",
        "--broker",
        &broker,
        "--data",
        &data,
    ];
    all.extend_from_slice(args);
    Appliance::demo(dir, &all)
}

/// The report ids of every flagged record in the store.
fn stored_report_ids(data: &Path) -> HashSet<String> {
    let store = screenline::store::Store::open(data).expect("open the store");
    assert_eq!(store.outbox_len(), 0, "the outbox drained");
    store
        .latest_records(usize::MAX, usize::MAX, |r| {
            r.decision == screenline::domain::Decision::Flag
        })
        .expect("records")
        .into_iter()
        .map(|r| r.report_id.expect("a flagged record has a report id"))
        .collect()
}

fn seen_ids(msgs: &[(String, String)]) -> HashSet<String> {
    msgs.iter()
        .filter_map(|(_, p)| serde_json::from_str::<serde_json::Value>(p).ok())
        .filter_map(|v| v["report_id"].as_str().map(str::to_owned))
        .collect()
}

/// Every stored report reaches the subscriber (at least once).
fn assert_all_delivered(sub: &Sub, data: &Path, at_least: usize) {
    let stored = stored_report_ids(data);
    assert!(
        stored.len() >= at_least,
        "only {} flagged reports stored",
        stored.len()
    );
    let deadline = Instant::now() + Duration::from_secs(60);
    let msgs = loop {
        let msgs = sub.messages();
        let seen = seen_ids(&msgs);
        let missing: Vec<&String> = stored.difference(&seen).collect();
        if missing.is_empty() {
            break msgs;
        }
        assert!(
            Instant::now() < deadline,
            "{} of {} stored reports never reached mosquitto_sub: {missing:?}",
            missing.len(),
            stored.len()
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    let seen = seen_ids(&msgs);
    println!(
        "{} flagged reports stored, {} distinct ids seen by mosquitto_sub in {} messages ({} duplicates)",
        stored.len(),
        seen.len(),
        msgs.len(),
        msgs.len() - seen.len()
    );
}

#[test]
fn broker_restarts_lose_no_report() {
    let _serial = one_at_a_time();
    let (dir, port, mut broker) = persistent_broker("feed-restarts");
    let sub = Sub::durable(dir.path(), port, TOPIC, "regulator-restarts");
    let data = dir.path().join("data");
    // 8 lines × 200 parcels at 5 parcels/s each: 1600 parcels in 40 s, nearly all flagged.
    let mut d = demo(
        dir.path(),
        port,
        &data,
        &["--lines", "8", "--rate", "5", "--parcels", "200"],
    );
    let mut restarts = 0;
    while d.is_running() {
        std::thread::sleep(Duration::from_millis(2500));
        terminate(&mut broker);
        std::thread::sleep(Duration::from_millis(700));
        broker = start_mosquitto_persistent(dir.path(), port);
        restarts += 1;
        assert!(restarts < 100, "the demo never finished: {}", d.log_text());
    }
    println!("broker restarted {restarts} times");
    assert!(restarts >= 3, "the run was too short to test anything");
    d.finish(Duration::from_secs(10));
    // How many of the 1600 are flagged depends on the machine: on a loaded one more decisions
    // come late, and a late parcel is manual, not flagged. The invariant is that every one
    // stored is delivered. A CPU-starved machine (load 10 on two cores) stored 132; fifty
    // spread over at least three restarts still test it.
    assert_all_delivered(&sub, &data, 50);
}

#[test]
fn sigkill_at_random_moments_loses_no_report() {
    let _serial = one_at_a_time();
    let site = Site::start("feed-kills");
    let (dir, port) = (&site.dir, site.port);
    let sub = site.sub(TOPIC);
    let data = dir.path().join("data");
    let mut rng = rand::thread_rng();
    for cycle in 0..20u32 {
        // A fresh seed each time, so each run's parcels are new waybills.
        let seed = (cycle + 100).to_string();
        let mut d = demo(
            dir.path(),
            port,
            &data,
            &["--lines", "2", "--rate", "5", "--seed", &seed],
        );
        std::thread::sleep(Duration::from_millis(rng.gen_range(1500..3500)));
        assert!(d.is_running(), "cycle {cycle}: {}", d.log_text());
        let _ = d.proc.0.kill();
        let _ = d.proc.0.wait();
        store_check(&data);
    }
    // A last run sends whatever the kills left in the outbox, and exits once it is empty.
    let d = demo(
        dir.path(),
        port,
        &data,
        &["--parcels", "1", "--seed", "999"],
    );
    d.finish(Duration::from_secs(120));
    store_check(&data);
    assert_all_delivered(&sub, &data, 20);
}

#[test]
fn a_backlog_waits_on_disk_and_drains_when_the_broker_comes() {
    let _serial = one_at_a_time();
    // Register the regulator's durable subscription, then take the broker down.
    let (dir, port, mut broker) = persistent_broker("feed-backlog");
    drop(Sub::durable(dir.path(), port, TOPIC, "regulator-backlog"));
    terminate(&mut broker);

    let data = dir.path().join("data");
    let console = free_port();
    let console_arg = format!("127.0.0.1:{console}");
    let log = dir.path().join("demo.log");
    let child = Command::new(env!("CARGO_BIN_EXE_screenline"))
        .args([
            "demo",
            "--wave",
            "--lines",
            "4",
            "--rate",
            "5",
            "--parcels",
            "125",
        ])
        .args(["--console", &console_arg, "--broker"])
        .arg(format!("mqtt://127.0.0.1:{port}"))
        .arg("--data")
        .arg(&data)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).expect("log"))
        .spawn()
        .expect("screenline demo");
    let pid = child.id();
    let d = Appliance {
        proc: Proc(child),
        log,
    };
    // While the backlog grows, the process's memory does not grow with it.
    let total = 4 * 125;
    let mut samples: Vec<(u64, u64)> = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(180);
    loop {
        let decided = metric(console, "screenline_parcels_screened_total").unwrap_or(0);
        let backlog = metric(console, "screenline_feed_backlog_messages").unwrap_or(0);
        // From 40 reports on: the model and the lines are warm by then.
        if backlog >= 40 && samples.last().is_none_or(|s| backlog >= s.0 + 50) {
            samples.push((backlog, rss_kib(pid)));
        }
        if decided >= total {
            samples.push((backlog, rss_kib(pid)));
            break;
        }
        assert!(
            Instant::now() < deadline,
            "parcels not decided: {}",
            d.log_text()
        );
        std::thread::sleep(Duration::from_millis(250));
    }
    for (backlog, rss) in &samples {
        println!(
            "backlog {backlog:>4} reports, RSS {:.1} MiB",
            *rss as f64 / 1024.0
        );
    }
    let (first, last) = (samples[0], samples[samples.len() - 1]);
    // Every parcel of the wave is flagged unless it was decided too late (then it goes to
    // manual, unreported): how many depends on the machine's speed, so the bound is half.
    assert!(
        last.0 >= BACKLOG_AT_LEAST as u64,
        "the backlog grew to {}",
        last.0
    );
    let bytes_on_disk: u64 = std::fs::read_dir(data.join("db"))
        .map(|d| {
            d.filter_map(|e| e.ok()?.metadata().ok())
                .map(|m| m.len())
                .sum()
        })
        .unwrap_or(0);
    println!(
        "RSS grew {:.1} MiB while the backlog grew by {} reports; the store is {:.1} MiB on disk",
        (last.1 as f64 - first.1 as f64) / 1024.0,
        last.0 - first.0,
        bytes_on_disk as f64 / (1 << 20) as f64
    );
    // Bounded by sled's cache, not by the backlog, with room for allocator slack.
    let bound_kib = screenline::store::CACHE_BYTES / 1024 + 12 * 1024;
    assert!(
        last.1 < first.1 + bound_kib,
        "memory grew with the backlog: {samples:?}"
    );

    // The broker comes back: the regulator's subscription gets every report.
    let _broker = start_mosquitto_persistent(dir.path(), port);
    let sub = Sub::durable(dir.path(), port, TOPIC, "regulator-backlog");
    let drained = Instant::now();
    d.finish(Duration::from_secs(120));
    println!("backlog of {} drained in {:?}", last.0, drained.elapsed());
    assert_all_delivered(&sub, &data, BACKLOG_AT_LEAST);
}

/// Reports the backlog test must at least have queued (of its 500 flagged parcels).
const BACKLOG_AT_LEAST: usize = 250;
