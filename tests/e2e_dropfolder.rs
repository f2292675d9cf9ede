//! The X-ray drop folder attacked as whoever can write it would, against the real
//! `screenline run` binary on a real folder: symbolic links named like scans (to a text
//! file, to `/dev/zero`), a FIFO and a 1.5 GB sparse file as sidecars, a scan name used
//! again, a sidecar whose image never comes. Each must be refused with a reason, a counter
//! and a log line, nothing else lost, the intake running on and memory flat.

mod common;

use common::*;
use std::path::Path;
use std::time::{Duration, Instant};

fn png(seed: u64) -> Vec<u8> {
    let scan = xraygen::render(
        xraygen::ParcelSpec {
            category: 5,
            counterfeit: false,
        },
        seed,
    );
    let mut out = Vec::new();
    scan.rgb
        .write_to(&mut std::io::Cursor::new(&mut out), image::ImageFormat::Png)
        .expect("png");
    out
}

/// Scans L1 took from its folder.
const IMAGES: &str = "screenline_xray_images_total{line=\"L1\"}";

/// Writes a file as the X-ray machine does: under a temporary name, renamed into place.
fn drop_file(xray: &Path, name: &str, bytes: &[u8]) {
    let tmp = xray.join(format!(".{name}.part"));
    std::fs::write(&tmp, bytes).expect("write");
    std::fs::rename(&tmp, xray.join(name)).expect("rename");
}

/// Waits until the console's counter `name` reaches `at_least`.
fn wait_metric(app: &mut Appliance, console: u16, name: &str, at_least: u64) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let v = metric(console, name).unwrap_or(0);
        if v >= at_least {
            return;
        }
        assert!(app.is_running(), "exited: {}", app.log_text());
        assert!(
            Instant::now() < deadline,
            "{name} = {v}, waited for {at_least}\n{}",
            app.log_text()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn hostile_names_in_the_drop_folder_are_refused_and_the_intake_runs_on() {
    let site = Site::start("dropfolder");
    let (dir, port) = (&site.dir, site.port);
    let xray = dir.path().join("xray");
    std::fs::create_dir_all(&xray).expect("xray dir");
    let data = dir.path().join("data");
    // No line controller or reader answers: the intake is what is under attack here, and
    // images no parcel claims go to quarantine as orphans.
    let console = free_port();
    let config = line_config_on(
        &data,
        port,
        &dir.path().join("no-reader"),
        &dir.path().join("no-controller"),
        &xray,
        console,
    );
    let mut app = Appliance::start(dir.path(), &config);
    app.wait_log(Duration::from_secs(30), "the console", |l| {
        (!http_get(console, "/metrics").is_empty()).then(|| l.to_owned())
    });
    let pid = app.proc.0.id();

    // 1. Links named like scans, to a secret and to /dev/zero.
    let secret = dir.path().join("secret.txt");
    std::fs::write(&secret, "db_password=correct horse battery staple\n").expect("secret");
    std::os::unix::fs::symlink(&secret, xray.join("SF5000000000001.png")).expect("link");
    std::os::unix::fs::symlink("/dev/zero", xray.join("zero.png")).expect("link");
    wait_metric(
        &mut app,
        console,
        "screenline_xray_quarantined_files_total{line=\"L1\",reason=\"symlink\"}",
        2,
    );
    let quarantine = data.join("quarantine/L1");
    for name in ["SF5000000000001.png", "zero.png"] {
        let reason = std::fs::read_to_string(quarantine.join(format!("{name}.reason.txt")))
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        assert!(reason.contains("symbolic link"), "{reason}");
        assert!(
            std::fs::symlink_metadata(xray.join(name)).is_err(),
            "{name} left"
        );
    }

    // 2. A FIFO sidecar with its image, then more images: none stalls.
    nix::unistd::mkfifo(&xray.join("f1.json"), nix::sys::stat::Mode::S_IRWXU).expect("fifo");
    let before = metric(console, IMAGES).unwrap_or(0);
    drop_file(&xray, "f1.png", &png(1));
    drop_file(&xray, "f2.png", &png(2));
    wait_metric(&mut app, console, IMAGES, before + 2);
    assert!(
        metric(console, "screenline_xray_bad_sidecars_total{line=\"L1\"}").unwrap_or(0) >= 1,
        "the FIFO sidecar counted"
    );
    assert!(
        app.log_text().contains("sidecar refused"),
        "{}",
        app.log_text()
    );
    assert!(
        http_get(console, "/metrics").contains("screenline_link_up{line=\"L1\",device=\"xray\"} 1")
    );

    // 3. A 1.5 GB sparse sidecar: refused without being read, memory flat.
    let peak_before = peak_kib(pid);
    let sparse = std::fs::File::create(xray.join("s1.json")).expect("sparse");
    sparse.set_len(1_500_000_000).expect("sparse");
    drop(sparse);
    let before = metric(console, IMAGES).unwrap_or(0);
    drop_file(&xray, "s1.png", &png(3));
    wait_metric(&mut app, console, IMAGES, before + 1);
    wait_metric(
        &mut app,
        console,
        "screenline_xray_bad_sidecars_total{line=\"L1\"}",
        2,
    );
    let grown_mib = peak_kib(pid).saturating_sub(peak_before) / 1024;
    println!(
        "peak RSS before the sparse sidecar {} MiB, grew by {grown_mib} MiB",
        peak_before / 1024
    );
    assert!(grown_mib < 100, "peak memory grew by {grown_mib} MiB");
    let reason = std::fs::read_to_string(quarantine.join("s1.json.reason.txt")).expect("reason");
    assert!(reason.contains("over the 4096-byte limit"), "{reason}");

    // 4. A scan name used again is a new scan: taken again once the first is gone.
    let before = metric(console, IMAGES).unwrap_or(0);
    drop_file(&xray, "r1.png", &png(4));
    wait_metric(&mut app, console, IMAGES, before + 1);
    let deadline = Instant::now() + Duration::from_secs(30);
    while xray.join("r1.png").exists() {
        assert!(Instant::now() < deadline, "r1.png never left the folder");
        std::thread::sleep(Duration::from_millis(100));
    }
    drop_file(&xray, "r1.png", &png(5));
    wait_metric(&mut app, console, IMAGES, before + 2);

    // 5. A sidecar whose image never comes: quarantined after the join window.
    drop_file(&xray, "o1.json", br#"{"waybill":"SF5000000000009"}"#);
    wait_metric(
        &mut app,
        console,
        "screenline_xray_quarantined_files_total{line=\"L1\",reason=\"orphan_sidecar\"}",
        1,
    );
    assert!(!xray.join("o1.json").exists());
    let reason = std::fs::read_to_string(quarantine.join("o1.json.reason.txt")).expect("reason");
    assert!(
        reason.contains("no image of this scan id arrived"),
        "{reason}"
    );

    // Nothing of the secret was ever copied anywhere the appliance keeps or serves files.
    let secret_text = std::fs::read(&secret).expect("secret");
    for folder in [data.join("images"), quarantine.clone()] {
        for e in std::fs::read_dir(&folder).into_iter().flatten().flatten() {
            let bytes = std::fs::read(e.path()).unwrap_or_default();
            assert!(
                !bytes
                    .windows(secret_text.len())
                    .any(|w| w == secret_text.as_slice()),
                "{} holds the secret",
                e.path().display()
            );
        }
    }
    assert!(app.is_running());
}
