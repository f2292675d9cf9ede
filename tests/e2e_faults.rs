//! Liveness and no loss under faults, on the real binary: a burst of failed logins and
//! reviews while four lines run, the images folder replaced by a file, a full data
//! partition, a panic while screening one parcel, a stage that dies, a stage that hangs.
//! Each test asserts what must hold whatever the machine's speed: every parcel recorded,
//! no pass for a parcel that was not stored, every flagged report delivered, counters that
//! agree with the store.

mod common;

use common::http::{form_value, request};
use common::rig::Rig;
use common::*;
use screenline_emulator::LineEvent;
use std::collections::{BTreeSet, HashSet};
use std::net::Ipv4Addr;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const REPORTS: &str = "screenline/v1/T1/a1/reports/flagged";

/// What a stopped appliance's store holds, read with the library (as `store check` does).
struct Stored {
    /// (seq, decision, reason codes, report id)
    records: Vec<(u32, String, Vec<String>, Option<String>)>,
    counters: std::collections::BTreeMap<screenline::telemetry::Counter, u64>,
}

fn read_store(data: &std::path::Path) -> Stored {
    let store = screenline::store::Store::open(data).expect("store");
    let all = store
        .latest_records(usize::MAX, usize::MAX, |_| true)
        .expect("records");
    let records = all
        .iter()
        .map(|r| {
            let reasons = r.reasons.iter().map(|x| x.code.key().to_owned()).collect();
            (
                r.seq,
                r.decision.key().to_owned(),
                reasons,
                r.report_id.clone(),
            )
        })
        .collect();
    let counters = store.durable_counters().expect("counters");
    Stored { records, counters }
}

/// Runs 16 parcels through one line (every fourth without a scan, so that some records go
/// to the database without an image to archive); `fault` breaks the store after the 4th and
/// returns what mends it, which runs 5 s later. Then checks the sink's contract.
fn parcels_through_a_store_fault(
    tag: &str,
    data: &std::path::Path,
    dir: &std::path::Path,
    fault: impl FnOnce(&std::path::Path) -> Box<dyn FnOnce()>,
) {
    const N: usize = 16;
    let port = free_port();
    let _broker = start_mosquitto(dir, port);
    let reports = Sub::start(dir, port, REPORTS);
    let mut rig = Rig::start(dir, data, port, &[]);
    let console = rig.console;
    // Watch the store link from outside while the fault lasts.
    let store_down_seen = Arc::new(AtomicBool::new(false));
    let stop_watch = Arc::new(AtomicBool::new(false));
    let watcher = {
        let (seen, stop) = (store_down_seen.clone(), stop_watch.clone());
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                if metric(console, "screenline_link_up{device=\"store\"}") == Some(0) {
                    seen.store(true, Ordering::Relaxed);
                }
                std::thread::sleep(Duration::from_millis(100));
            }
        })
    };
    let mut fault = Some(fault);
    let mut mend = None;
    let mut broke_at = Instant::now();
    for i in 0..N {
        if let Some(f) = fault.take_if(|_| i == 4) {
            mend = Some(f(data));
            broke_at = Instant::now();
        }
        if let Some(m) = mend.take_if(|_| broke_at.elapsed() >= Duration::from_secs(5)) {
            m();
        }
        // Every fourth parcel has no scan: its record goes to the database alone.
        let waybill = format!("SF{tag}{i:08}");
        if i % 4 == 3 {
            rig.line.parcel_unscanned(&waybill);
        } else {
            rig.line.parcel(&waybill, i % 2 == 0, 100 + i as u64);
        }
        std::thread::sleep(Duration::from_millis(400));
    }
    if let Some(m) = mend.take() {
        std::thread::sleep(Duration::from_secs(5).saturating_sub(broke_at.elapsed()));
        m();
    }
    rig.wait_left(N, Duration::from_secs(120));
    // The held parcels are stored by a retry, and every report leaves.
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let held = metric(console, "screenline_sink_held_parcels");
        let backlog = metric(console, "screenline_feed_backlog_messages");
        let decided = metric(console, "screenline_parcels_screened_total");
        if held == Some(0) && backlog == Some(0) && decided == Some(N as u64) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "held {held:?}, backlog {backlog:?}, decided {decided:?}\n{}",
            rig.app.log_text()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    stop_watch.store(true, Ordering::Relaxed);
    let _ = watcher.join();
    rig.app.stop_cleanly(Duration::from_secs(30));
    let decided: HashSet<u32> = rig.line.decided().into_iter().collect();
    let stored = read_store(data);

    // Every parcel has its record: nothing was forgotten.
    let seqs: BTreeSet<u32> = stored.records.iter().map(|r| r.0).collect();
    assert_eq!(seqs.len(), N, "records: {seqs:?}");
    let failed: Vec<_> = stored
        .records
        .iter()
        .filter(|r| r.2.iter().any(|c| c == "store_failed"))
        .collect();
    assert!(
        !failed.is_empty(),
        "the fault hit no parcel: {:?}",
        stored.records
    );
    assert!(
        store_down_seen.load(Ordering::Relaxed),
        "the store link never showed the fault"
    );
    for (seq, decision, reasons, _) in &stored.records {
        if reasons.iter().any(|c| c == "store_failed") {
            // No decision went out for it: the controller diverted it on its own.
            assert!(
                !decided.contains(seq),
                "parcel {seq} was not stored, yet a decision was sent"
            );
            assert_ne!(decision, "clear", "parcel {seq}");
            assert!(
                rig.line.seen.contains(&LineEvent::Diverted { seq: *seq }),
                "parcel {seq} not diverted: {:?}",
                rig.line.seen
            );
        } else {
            assert!(
                decided.contains(seq),
                "parcel {seq} stored but never decided"
            );
        }
    }
    // Every flagged parcel's report reached the regulator, held ones included.
    let flagged: BTreeSet<String> = stored
        .records
        .iter()
        .filter(|r| r.1 == "flag")
        .map(|r| r.3.clone().expect("a flagged record names its report"))
        .collect();
    assert!(!flagged.is_empty());
    let delivered: BTreeSet<String> = reports
        .messages()
        .iter()
        .filter_map(|(_, p)| {
            serde_json::from_str::<serde_json::Value>(p).ok()?["report_id"]
                .as_str()
                .map(str::to_owned)
        })
        .collect();
    let missing: Vec<_> = flagged.difference(&delivered).collect();
    assert!(missing.is_empty(), "reports never delivered: {missing:?}");
    // The statistics' counters agree with the store.
    use screenline::domain::{Decision, ReasonCode};
    use screenline::telemetry::Counter;
    let count = |c: Counter| stored.counters.get(&c).copied().unwrap_or(0);
    assert_eq!(count(Counter::ParcelsDecided), N as u64);
    assert_eq!(
        count(Counter::Decided(Decision::Flag)),
        flagged.len() as u64
    );
    assert_eq!(
        count(Counter::Reason(ReasonCode::StoreFailed)),
        failed.len() as u64
    );
    let log = rig.app.log_text();
    eprintln!(
        "{tag}: {N} parcels, {} not stored at first (held and stored by a retry, diverted to manual), {} flagged, all delivered; log: {} archive failures, {} failed group commits, {} failed flushes, {} reopens",
        failed.len(),
        flagged.len(),
        log.matches("parcel not stored").count(),
        log.matches("group of records not stored").count(),
        log.matches("store flush failed").count(),
        log.matches("the store was reopened").count(),
    );
    store_check(data);
}

#[test]
fn the_images_folder_replaced_by_a_file_loses_nothing_and_passes_nothing_unstored() {
    let dir = TempDir::new("fault-images");
    let data = dir.path().join("data");
    parcels_through_a_store_fault("IMG", &data, dir.path(), |data| {
        let images = data.join("images");
        let aside = data.join("images.aside");
        std::fs::rename(&images, &aside).expect("move the images folder");
        std::fs::write(&images, b"not a folder").expect("a file in its place");
        Box::new(move || {
            std::fs::remove_file(&images).expect("remove the file");
            std::fs::rename(&aside, &images).expect("the folder back");
        })
    });
}

/// A tmpfs mounted for the test, unmounted on drop.
struct Mount(std::path::PathBuf);

impl Drop for Mount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

#[test]
fn a_full_data_partition_loses_nothing_and_passes_nothing_unstored() {
    let dir = TempDir::new("fault-full");
    let data = dir.path().join("data");
    std::fs::create_dir_all(&data).expect("data");
    let mounted = Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=48m", "tmpfs"])
        .arg(&data)
        .status()
        .expect("mount");
    assert!(
        mounted.success(),
        "this test mounts a small tmpfs as the data partition and must run as root"
    );
    let _mount = Mount(data.clone());
    parcels_through_a_store_fault("FULL", &data, dir.path(), |data| {
        // Fill what is left of the partition.
        let filler = data.join("filler");
        let mut f = std::fs::File::create(&filler).expect("filler");
        let chunk = vec![0xA5u8; 1 << 20];
        use std::io::Write;
        while f.write_all(&chunk).is_ok() {}
        while f.write_all(&chunk[..4096]).is_ok() {}
        let _ = f.sync_all();
        drop(f);
        Box::new(move || std::fs::remove_file(&filler).expect("free the partition"))
    });
}

/// A broker and one line whose appliance runs with `env`.
fn line_with(dir: &TempDir, env: &[(&str, &str)]) -> (Proc, std::path::PathBuf, Rig) {
    let port = free_port();
    let broker = start_mosquitto(dir.path(), port);
    let data = dir.path().join("data");
    let rig = Rig::start(dir.path(), &data, port, env);
    (broker, data, rig)
}

#[test]
fn a_panic_while_screening_one_parcel_sends_it_to_manual_and_the_next_are_screened() {
    let dir = TempDir::new("fault-panic");
    let (_broker, data, mut rig) = line_with(
        &dir,
        &[("SCREENLINE_TEST_FAULTS", "panic_waybill=SFPANIC00000002")],
    );
    for i in 1..=4 {
        rig.line.parcel(&format!("SFPANIC{i:08}"), false, 200 + i);
        std::thread::sleep(Duration::from_millis(400));
    }
    rig.wait_left(4, Duration::from_secs(90));
    assert!(rig.app.is_running(), "{}", rig.app.log_text());
    rig.app.stop_cleanly(Duration::from_secs(30));
    let stored = read_store(&data);
    let by_seq = |seq: u32| {
        stored
            .records
            .iter()
            .find(|r| r.0 == seq)
            .unwrap_or_else(|| panic!("no record {seq}: {:?}", stored.records))
    };
    let panicked = by_seq(2);
    assert_eq!(panicked.1, "manual", "{panicked:?}");
    assert!(
        panicked.2.contains(&"screening_failed".to_owned()),
        "{panicked:?}"
    );
    for seq in [1, 3, 4] {
        let r = by_seq(seq);
        assert_eq!(r.1, "clear", "parcel {seq} screened as usual: {r:?}");
    }
    assert!(
        rig.line.seen.contains(&LineEvent::Passed { seq: 3 }),
        "{:?}",
        rig.line.seen
    );
    assert!(
        rig.app.log_text().contains("panicked"),
        "the panic is logged"
    );
}

#[test]
fn a_stage_that_dies_stops_the_appliance_with_an_error() {
    let dir = TempDir::new("fault-die");
    let (_broker, _data, mut rig) = line_with(&dir, &[("SCREENLINE_TEST_FAULTS", "die=sink")]);
    rig.line.parcel("SFDIE000000001", false, 300);
    let deadline = Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Ok(Some(status)) = rig.app.proc.0.try_wait() {
            break status;
        }
        assert!(
            Instant::now() < deadline,
            "still running after its sink died\n{}",
            rig.app.log_text()
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(!status.success(), "a dead stage must exit non-zero");
    let log = rig.app.log_text();
    assert!(log.contains("stage sink ended"), "{log}");
}

#[test]
fn a_hung_stage_stops_the_watchdog_and_healthz_names_it() {
    let dir = TempDir::new("fault-hang");
    let sock_path = dir.path().join("notify.sock");
    let sock = std::os::unix::net::UnixDatagram::bind(&sock_path).expect("notify socket");
    sock.set_read_timeout(Some(Duration::from_millis(200)))
        .expect("timeout");
    let notes: Arc<Mutex<Vec<(Instant, String)>>> = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let listener = {
        let (notes, stop) = (notes.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut buf = [0u8; 256];
            while !stop.load(Ordering::Relaxed) {
                if let Ok(n) = sock.recv(&mut buf) {
                    let text = String::from_utf8_lossy(&buf[..n]).into_owned();
                    notes.lock().expect("notes").push((Instant::now(), text));
                }
            }
        })
    };
    let socket = sock_path.display().to_string();
    let (_broker, _data, mut rig) = line_with(
        &dir,
        &[
            ("SCREENLINE_TEST_FAULTS", "hang=sink"),
            ("NOTIFY_SOCKET", socket.as_str()),
            ("WATCHDOG_USEC", "3000000"),
        ],
    );
    let pings = |notes: &Arc<Mutex<Vec<(Instant, String)>>>, after: Instant| {
        notes
            .lock()
            .expect("notes")
            .iter()
            .filter(|(t, n)| *t > after && n == "WATCHDOG=1")
            .count()
    };
    let start = Instant::now();
    let deadline = start + Duration::from_secs(30);
    while pings(&notes, start) < 2 {
        assert!(
            Instant::now() < deadline,
            "no watchdog pings: {:?}",
            notes.lock().expect("n")
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(
        notes.lock().expect("n").iter().any(|(_, n)| n == "READY=1"),
        "READY=1 was sent"
    );
    assert_eq!(http_get(rig.console, "/healthz").trim(), "ok");
    // A parcel reaches the sink, which hangs inside it.
    rig.line.parcel("SFHANG00000001", false, 400);
    let deadline = Instant::now() + Duration::from_secs(90);
    let named = loop {
        let body = http_get(rig.console, "/healthz");
        if body.contains("sink") {
            break body;
        }
        assert!(
            Instant::now() < deadline,
            "healthz never named the hung stage: {body}"
        );
        std::thread::sleep(Duration::from_millis(250));
    };
    assert!(named.contains("stalled"), "{named}");
    // Once stalled, the pings stop.
    let stalled_at = Instant::now();
    std::thread::sleep(Duration::from_secs(6));
    assert_eq!(
        pings(&notes, stalled_at + Duration::from_millis(500)),
        0,
        "the watchdog was still fed with a stage hung"
    );
    assert!(
        rig.app.is_running(),
        "a hang is systemd's to end, by the watchdog"
    );
    stop.store(true, Ordering::Relaxed);
    let _ = listener.join();
}

/// The console answers and the line keeps deciding while 200 failed logins from 200
/// addresses and a burst of operator reviews arrive, with four lines at five parcels a
/// second.
#[test]
fn failed_logins_and_reviews_under_load_never_stall_the_line() {
    let site = Site::start("login-burst");
    let (dir, port) = (&site.dir, site.port);
    let console = free_port();
    let data = dir.path().join("data");
    let broker = format!("mqtt://127.0.0.1:{port}");
    let listen = format!("127.0.0.1:{console}");
    let data_arg = data.display().to_string();
    let mut demo = Appliance::demo(
        dir.path(),
        &[
            "--lines",
            "4",
            "--rate",
            "5",
            "--seed",
            "21",
            "--broker",
            &broker,
            "--console",
            &listen,
            "--data",
            &data_arg,
        ],
    );
    let password = demo.wait_log(Duration::from_secs(90), "the operator's login", |text| {
        text.split("operator / ")
            .nth(1)
            .and_then(|s| s.split_whitespace().next())
            .map(str::to_owned)
    });
    let decided = || metric(console, "screenline_parcels_screened_total").unwrap_or(0);
    let deadline = Instant::now() + Duration::from_secs(120);
    while decided() < 20 {
        assert!(
            Instant::now() < deadline,
            "the line never got going\n{}",
            demo.log_text()
        );
        std::thread::sleep(Duration::from_millis(200));
    }

    // /healthz, polled throughout from another thread.
    let stop = Arc::new(AtomicBool::new(false));
    let poller = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let mut latencies = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                let t = Instant::now();
                let body = http_get(console, "/healthz");
                latencies.push((t.elapsed(), body));
                std::thread::sleep(Duration::from_millis(50));
            }
            latencies
        })
    };
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let long = Duration::from_secs(180);
    let before = decided();
    let burst_started = Instant::now();
    let (failed, reviews) = rt.block_on(async {
        let local = Ipv4Addr::LOCALHOST;
        let login = request(
            local,
            console,
            "POST",
            "/login",
            None,
            Some(&format!(
                "user=operator&password={}&next=/",
                form_value(&password)
            )),
            long,
        )
        .await
        .expect("operator login");
        let cookie = login.cookie().expect("a session cookie");
        let flagged = request(local, console, "GET", "/flagged", Some(&cookie), None, long)
            .await
            .expect("flagged page");
        let records: Vec<String> = flagged
            .body
            .split("data-record=\"")
            .skip(1)
            .filter_map(|s| s.split('"').next().map(str::to_owned))
            .take(10)
            .collect();
        assert!(
            !records.is_empty(),
            "no parcel waits in the queue: {}",
            flagged.body
        );
        let page = request(
            local,
            console,
            "GET",
            &format!("/parcel/{}", records[0]),
            Some(&cookie),
            None,
            long,
        )
        .await
        .expect("parcel page");
        let csrf = page
            .body
            .split("name=\"csrf\" value=\"")
            .nth(1)
            .and_then(|s| s.split('"').next())
            .expect("a csrf token")
            .to_owned();
        let mut tasks = Vec::new();
        for i in 0..200u32 {
            let from = Ipv4Addr::new(127, 0, (1 + i / 250) as u8, (2 + i % 250) as u8);
            tasks.push(tokio::spawn(async move {
                request(
                    from,
                    console,
                    "POST",
                    "/login",
                    None,
                    Some(&format!("user=operator&password=wrong-{i}&next=/")),
                    long,
                )
                .await
            }));
        }
        let mut review_tasks = Vec::new();
        for i in 0..40usize {
            let (cookie, csrf, record) = (
                cookie.clone(),
                csrf.clone(),
                records[i % records.len()].clone(),
            );
            review_tasks.push(tokio::spawn(async move {
                request(
                    Ipv4Addr::LOCALHOST,
                    console,
                    "POST",
                    &format!("/parcel/{record}/review"),
                    Some(&cookie),
                    Some(&format!(
                        "csrf={}&finding=confirmed&note=burst+{i}",
                        form_value(&csrf)
                    )),
                    long,
                )
                .await
            }));
        }
        let mut failed = Vec::new();
        for t in tasks {
            failed.push(t.await.expect("task"));
        }
        let mut reviews = Vec::new();
        for t in review_tasks {
            reviews.push(t.await.expect("task"));
        }
        (failed, reviews)
    });
    let burst = burst_started.elapsed();
    // The line goes on after the burst as before it.
    let after = decided();
    let deadline = Instant::now() + Duration::from_secs(60);
    while decided() < after + 20 {
        assert!(
            Instant::now() < deadline,
            "the line stopped deciding after the burst"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    stop.store(true, Ordering::Relaxed);
    let polls = poller.join().expect("poller");
    assert!(demo.is_running(), "{}", demo.log_text());

    // Every login was answered: refused (401), or slowed down (429); none hung.
    let unanswered = failed.iter().filter(|a| a.is_none()).count();
    assert_eq!(unanswered, 0, "logins left unanswered");
    assert!(
        failed
            .iter()
            .flatten()
            .all(|a| matches!(a.status, 401 | 429 | 403)),
        "{:?}",
        failed
            .iter()
            .flatten()
            .map(|a| a.status)
            .collect::<Vec<_>>()
    );
    assert!(
        reviews
            .iter()
            .all(|a| a.as_ref().is_some_and(|a| a.status == 303)),
        "{:?}",
        reviews
            .iter()
            .map(|a| a.as_ref().map(|a| a.status))
            .collect::<Vec<_>>()
    );
    // Parcels were decided while the burst went on, and healthz always answered ok.
    assert!(
        after > before,
        "no parcel decided during the burst ({before} → {after})"
    );
    assert!(
        polls.iter().all(|(_, body)| body.trim() == "ok"),
        "healthz: {:?}",
        polls
            .iter()
            .filter(|(_, b)| b.trim() != "ok")
            .take(5)
            .collect::<Vec<_>>()
    );
    let mut ms: Vec<u128> = polls.iter().map(|(d, _)| d.as_millis()).collect();
    ms.sort_unstable();
    let q = |p: f64| ms[((ms.len() - 1) as f64 * p) as usize];
    eprintln!(
        "login burst: 200 failed logins from 200 addresses + 40 reviews in {:.1} s; parcels decided {before} → {after}; healthz {} polls, p50 {} ms, p99 {} ms, max {} ms",
        burst.as_secs_f64(),
        ms.len(),
        q(0.5),
        q(0.99),
        ms[ms.len() - 1]
    );
    demo.stop_cleanly(Duration::from_secs(60));
    // Every failed login that was refused is in the audit log.
    let store = screenline::store::Store::open(&data).expect("store");
    let audited = store
        .audit_log(usize::MAX, |e| e.action == "login_failed")
        .expect("audit")
        .len();
    let refused = failed.iter().flatten().filter(|a| a.status == 401).count();
    assert!(
        audited >= refused,
        "{refused} refused logins, {audited} audited"
    );
}
