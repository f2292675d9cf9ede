//! End to end on real parts: the real `screenline run` binary, a real Mosquitto broker checked
//! with the independent `mosquitto_sub`, the waybill reader and the line controller on
//! pseudo-terminal pairs — the controller being the real firmware logic in the host
//! emulator — and a real drop folder.

mod common;

use common::rig::{Line, Rig};
use common::*;
use screenline_emulator::{BeltConfig, LineEvent};
use screenline_protocol::{StackLight, Verdict};
use std::time::Duration;

#[test]
fn one_flagged_and_one_cleared_parcel_from_reader_to_regulator() {
    let site = Site::start("e2e");
    let (dir, port) = (&site.dir, site.port);
    let reports = site.sub("screenline/v1/T1/a1/reports/flagged");
    let status = site.sub("screenline/v1/T1/a1/status");
    let mut rig = Rig::start(dir.path(), &dir.path().join("data"), port, &[]);
    status.wait_state(Duration::from_secs(30), "online");

    // Parcel 1: valid real-name data, counterfeit goods → flagged and diverted.
    rig.line.parcel("SF1000000000001", true, 11);
    std::thread::sleep(Duration::from_millis(700));
    // Parcel 2: valid real-name data, genuine goods → cleared and passed.
    rig.line.parcel("SF1000000000002", false, 12);

    rig.wait_left(2, Duration::from_secs(30));
    let (line, app) = (&rig.line, &rig.app);
    let seen = &line.seen;
    assert!(
        line.decided_as(1, Verdict::Divert),
        "{seen:?}\n{}",
        app.log_text()
    );
    assert!(
        line.decided_as(2, Verdict::Pass),
        "{seen:?}\n{}",
        app.log_text()
    );
    assert!(seen.contains(&LineEvent::Diverted { seq: 1 }), "{seen:?}");
    assert!(seen.contains(&LineEvent::Passed { seq: 2 }), "{seen:?}");
    assert!(
        !seen.iter().any(|e| matches!(e, LineEvent::FailSafe { .. })),
        "no fail-safe expected: {seen:?}"
    );

    let msgs = reports.wait_for(Duration::from_secs(20), "the flagged report", |m| {
        !m.is_empty()
    });
    // Anything that was going to arrive has had time to.
    std::thread::sleep(Duration::from_secs(2));
    let msgs = if reports.messages().len() > msgs.len() {
        reports.messages()
    } else {
        msgs
    };
    assert_eq!(msgs.len(), 1, "exactly one report: {msgs:?}");
    let report: serde_json::Value = serde_json::from_str(&msgs[0].1).expect("report is JSON");
    assert_eq!(report["schema"], "screenline.report.v1");
    assert_eq!(report["waybill"], "SF1000000000001");
    assert_eq!(report["decision"], "flag");
    assert_eq!(report["line_id"], "L1");
    assert!(
        report["reasons"]
            .as_array()
            .is_some_and(|r| r.iter().any(|x| x["code"] == "counterfeit_suspected")),
        "{report}"
    );
    assert_eq!(report["sender"]["id_number"], "11010519491231002X");
    assert_eq!(
        report["evidence"]["image_sha256"].as_str().map(str::len),
        Some(64)
    );
    assert!(report["evidence"]["thumbnail_jpeg"]
        .as_str()
        .is_some_and(|t| t.len() > 100));
    assert!(report["report_id"]
        .as_str()
        .is_some_and(|id| id.starts_with("rpt-")));

    rig.app.stop_cleanly(Duration::from_secs(15));
    status.wait_state(Duration::from_secs(10), "stopped");
    rig.line.shutdown();
}

#[test]
fn bad_input_and_a_down_broker_send_parcels_to_manual_without_crashing() {
    let dir = TempDir::new("bad");
    let port = free_port();
    // No broker yet: the appliance must run the line regardless.
    let mut rig = Rig::start(dir.path(), &dir.path().join("data"), port, &[]);
    let xray = rig.line.xray.clone();

    // A malformed record: counted and logged, and the parcel has no read → manual.
    rig.line.read("{\"waybill\": this is not json");
    rig.line.place(400);
    std::fs::write(
        xray.join("scan-bad1.png"),
        b"\x89PNG\r\n\x1a\nnot really a png",
    )
    .expect("bad image");
    std::thread::sleep(Duration::from_millis(700));
    // A good read with an unreadable image → manual.
    rig.line.parcel_unscanned("SF2000000000002");
    std::fs::write(
        xray.join("scan-bad2.json"),
        r#"{"waybill":"SF2000000000002"}"#,
    )
    .expect("sidecar");
    std::fs::write(xray.join("scan-bad2.png"), b"truncated").expect("bad image");

    rig.wait(Duration::from_secs(30), "both parcels diverted", |s| {
        s.iter()
            .filter(|e| matches!(e, LineEvent::Diverted { .. }))
            .count()
            >= 2
    });
    let seen = &rig.line.seen;
    assert!(rig.line.decided_as(1, Verdict::Divert), "{seen:?}");
    assert!(rig.line.decided_as(2, Verdict::Divert), "{seen:?}");
    assert!(
        rig.app.is_running(),
        "the appliance survived\n{}",
        rig.app.log_text()
    );
    // Both bad images were quarantined with a reason, and the drop folder is clean.
    let quarantine = dir.path().join("data/quarantine/L1");
    for bad in ["scan-bad1.png", "scan-bad2.png"] {
        let reason = std::fs::read_to_string(quarantine.join(format!("{bad}.reason.txt")))
            .unwrap_or_else(|e| panic!("{bad} quarantined with a reason: {e}"));
        assert!(
            reason.contains("header") || reason.contains("signature"),
            "{reason}"
        );
    }
    assert!(!xray.join("scan-bad1.png").exists() && !xray.join("scan-bad2.png").exists());
    let log = rig.app.log_text();
    assert!(log.contains("waybill record dropped"), "{log}");
    assert!(log.contains("X-ray file quarantined"), "{log}");
    assert!(
        !log.contains("11010519491231002X"),
        "identity must never be logged"
    );

    // The broker comes up late: the appliance connects and says it is online.
    let _broker = start_mosquitto(dir.path(), port);
    let status = Sub::start(dir.path(), port, "screenline/v1/T1/a1/status");
    status.wait_for(
        Duration::from_secs(30),
        "status online after the broker came up",
        |m| m.iter().any(|(_, p)| p.contains("\"state\":\"online\"")),
    );
    rig.app.stop_cleanly(Duration::from_secs(15));
    rig.line.shutdown();
}

/// Whether a `…/status` payload shows link `name` in state `up`.
fn status_shows(payload: &str, name: &str, up: bool) -> bool {
    serde_json::from_str::<serde_json::Value>(payload)
        .is_ok_and(|v| v["links"][name]["up"] == serde_json::Value::Bool(up))
}

#[test]
fn an_unplugged_reader_sends_parcels_to_manual_and_is_reopened_when_replugged() {
    let site = Site::start("unplug");
    let (dir, port) = (&site.dir, site.port);
    let status = site.sub("screenline/v1/T1/a1/status");
    // The reader by a stable name, as udev gives it: /dev/screenline/L1-reader.
    let line = Line::start_with(
        dir.path(),
        BeltConfig::default(),
        Some(dir.path().join("L1-reader")),
    );
    let data = dir.path().join("data");
    let mut rig = Rig::on(line, dir.path(), &data, port, &[], |c| c);
    status.wait_for(
        Duration::from_secs(30),
        "the reader up in the status",
        |m| m.iter().any(|(_, p)| status_shows(p, "L1.reader", true)),
    );
    // The appliance set the belt's geometry and lit the line green.
    rig.wait(Duration::from_secs(10), "geometry and a green light", |s| {
        s.iter().any(|e| {
            matches!(e, LineEvent::Configured(c) if c.eye_to_gate_counts == 5000 && c.gate_width_counts == 400)
        }) && s.last_light() == Some(StackLight::Green)
    });

    // Unplug: the device and its udev name vanish.
    rig.line.unplug_reader();
    status.wait_for(
        Duration::from_secs(15),
        "the reader down in the status",
        |m| m.iter().any(|(_, p)| status_shows(p, "L1.reader", false)),
    );
    // Every parcel goes to manual now, and the line's stack light says so.
    rig.wait(Duration::from_secs(10), "an amber light", |s| {
        s.last_light() == Some(StackLight::Amber)
    });

    // A parcel while the reader is down, with a dual-energy image that even names its
    // waybill: without a read it is never cleared — it goes to manual inspection.
    rig.line.place(400);
    std::fs::write(
        rig.line.xray.join("scan-0001.json"),
        r#"{"waybill":"SF1000000000001"}"#,
    )
    .expect("sidecar");
    rig.line.dual_scan("scan-0001", 21);
    rig.wait(Duration::from_secs(30), "parcel 1 diverted", |s| {
        s.contains(&LineEvent::Diverted { seq: 1 })
    });
    assert!(
        rig.line.decided_as(1, Verdict::Divert),
        "{:?}\n{}",
        rig.line.seen,
        rig.app.log_text()
    );

    // Replug: a new device node behind the same name; the link comes back by itself.
    rig.line.replug_reader();
    let up_again = status.messages().len();
    status.wait_for(Duration::from_secs(15), "the reader up again", |m| {
        m[up_again.min(m.len())..]
            .iter()
            .any(|(_, p)| status_shows(p, "L1.reader", true))
    });
    rig.wait(Duration::from_secs(10), "green again", |s| {
        s.last_light() == Some(StackLight::Green)
    });
    rig.line.parcel("SF1000000000002", false, 22);
    rig.wait(Duration::from_secs(30), "parcel 2 passed", |s| {
        s.contains(&LineEvent::Passed { seq: 2 })
    });

    let log = rig.app.log_text();
    assert!(log.contains("waybill reader disconnected"), "{log}");
    assert!(log.contains("L1.reader"), "{log}");
    // The pair was screened and archived, both halves; the drop folder is empty.
    let kept: Vec<String> = std::fs::read_dir(data.join("images"))
        .expect("images")
        .filter_map(|e| e.ok().map(|e| e.file_name().to_string_lossy().into_owned()))
        .collect();
    assert!(
        kept.iter().any(|n| n.ends_with("-L1-1.high.png")),
        "{kept:?}"
    );
    assert!(
        kept.iter().any(|n| n.ends_with("-L1-1.low.png")),
        "{kept:?}"
    );
    assert_eq!(std::fs::read_dir(&rig.line.xray).expect("xray").count(), 0);
    rig.app.stop_cleanly(Duration::from_secs(15));
    rig.line.shutdown();
}

/// Runs `screenline waybill check` over `capture` (a file, or stdin with `--framing`).
fn waybill_check(
    capture: &[u8],
    framing: Option<&str>,
    dir: &std::path::Path,
) -> Vec<serde_json::Value> {
    use std::io::Write;
    use std::process::{Command, Stdio};
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_screenline"));
    cmd.args(["waybill", "check"]);
    let child = match framing {
        None => {
            let f = dir.join("capture.bin");
            std::fs::write(&f, capture).expect("capture");
            cmd.arg(&f).stdout(Stdio::piped()).spawn()
        }
        Some(fr) => cmd
            .args(["--framing", fr])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn(),
    };
    let mut child = child.expect("screenline");
    if let Some(mut stdin) = child.stdin.take() {
        stdin.write_all(capture).expect("stdin");
    }
    let out = child.wait_with_output().expect("output");
    assert!(out.status.success(), "{out:?}");
    String::from_utf8(out.stdout)
        .expect("utf-8")
        .lines()
        .map(|l| serde_json::from_str(l).expect("one JSON object per line"))
        .collect()
}

#[test]
fn waybill_check_reads_a_capture_in_both_framings() {
    let dir = TempDir::new("wbcheck");
    let good = valid_waybill("SF1000000000001");
    let bad_id = good.replace("11010519491231002X", "110105194912310021");
    let no_sender = r#"{"waybill":"SF1000000000003","recipient":{"name":"李四","phone":"13900139000","address":"x"}}"#;
    let contract = r#"{"waybill":"SF1000000000004","agreement_customer":"C0042"}"#;
    let mut line = Vec::new();
    for r in [
        good.as_str(),
        &bad_id,
        no_sender,
        contract,
        "SF12345678",
        "sf-1",
        "{\"waybill\":",
    ] {
        line.extend_from_slice(r.as_bytes());
        line.extend_from_slice(b"\r\n");
    }
    line.extend_from_slice(b"\xff\xfe\n");
    line.extend_from_slice(&[b'A'; 5000]);
    line.extend_from_slice(b"\nYT87654321");
    let out = waybill_check(&line, None, dir.path());
    assert_eq!(out.len(), 10, "{out:#?}");
    assert_eq!(out[0]["waybill"], "SF1000000000001");
    assert_eq!(out[0]["findings"], serde_json::json!([]));
    assert_eq!(out[0]["sender"]["id_number"], "11**************2X");
    assert_eq!(out[0]["recipient"]["name"], "李*");
    assert!(
        out[1]["findings"][0]["en"]
            .as_str()
            .is_some_and(|e| e.contains("check character") && e.contains("sender.id_number")),
        "{}",
        out[1]
    );
    assert_eq!(out[2]["findings"][0]["code"], "real_name_missing");
    assert_eq!(out[3]["findings"], serde_json::json!([]));
    assert_eq!(out[4]["waybill"], "SF12345678");
    for (i, why) in [(5, "8 to 32"), (6, "JSON"), (7, "UTF-8"), (8, "4096")] {
        assert!(
            out[i]["error"].as_str().is_some_and(|e| e.contains(why)),
            "{}",
            out[i]
        );
    }
    assert_eq!(
        out[9]["waybill"], "YT87654321",
        "an unterminated last line is a record"
    );
    let text = serde_json::to_string(&out).expect("json");
    for secret in ["11010519491231002X", "13800138000", "张三", "北京市朝阳区"] {
        assert!(!text.contains(secret), "{secret} must be masked");
    }

    // STX … ETX on stdin, with noise between frames and a frame cut off at the end.
    let mut stx = b"noise".to_vec();
    for r in [good.as_str(), "YT87654321"] {
        stx.push(0x02);
        stx.extend_from_slice(r.as_bytes());
        stx.push(0x03);
    }
    stx.extend_from_slice(b"\x02SF99999");
    let out = waybill_check(&stx, Some("stx-etx"), dir.path());
    let waybills: Vec<_> = out.iter().filter_map(|v| v["waybill"].as_str()).collect();
    assert_eq!(waybills, ["SF1000000000001", "YT87654321"], "{out:#?}");
    assert!(
        out.iter()
            .any(|v| v["error"].as_str().is_some_and(|e| e.contains("outside"))),
        "{out:#?}"
    );
}

/// The stack light's latest state among the events seen.
trait LastLight {
    fn last_light(&self) -> Option<StackLight>;
}

impl LastLight for [LineEvent] {
    fn last_light(&self) -> Option<StackLight> {
        self.iter().rev().find_map(|e| match e {
            LineEvent::StackLight { light } => Some(*light),
            _ => None,
        })
    }
}

/// The epoch of the last `EpochAssigned` among `events`.
fn last_epoch(events: &[LineEvent]) -> Option<screenline_protocol::Epoch> {
    events.iter().rev().find_map(|e| match e {
        LineEvent::EpochAssigned { epoch } => Some(*epoch),
        _ => None,
    })
}

#[test]
fn a_controller_reboot_with_decisions_to_come_passes_no_parcel_of_the_new_boot() {
    let dir = TempDir::new("reboot");
    let port = free_port();
    // A slow belt: 10 s from the photo-eye to the gate, so that a parcel of the new boot is
    // still undecided on the belt when the decisions for the last boot's parcels come.
    let belt = BeltConfig {
        belt_mm_per_s: 500,
        ..BeltConfig::default()
    };
    let line = Line::start_with(dir.path(), belt, None);
    // Parcels wait up to 6 s for their read and image, and are decided within 9 s (the
    // decision point is at 9.4 s on this belt).
    let mut rig = Rig::on(line, dir.path(), &dir.path().join("data"), port, &[], |c| {
        c.replace(
            "[lines.controller]",
            "join_window_ms = 6000\ndecision_deadline_ms = 9000\n[lines.controller]",
        )
    });
    rig.wait(Duration::from_secs(30), "an epoch and a green light", |s| {
        last_epoch(s).is_some() && s.last_light() == Some(StackLight::Green)
    });

    // Two parcels with good reads enter; their clean images are still to come.
    for (seq, waybill) in [(1, "SF3000000000001"), (2, "SF3000000000002")] {
        rig.line.read(&valid_waybill(waybill));
        rig.line.emulator.place_parcel(100);
        rig.wait(
            Duration::from_secs(10),
            "a parcel of the first boot entering",
            |s| s.contains(&LineEvent::Entered { seq }),
        );
        // Past the photo-eye (0.2 s at 500 mm/s) before the next parcel or the reboot, so
        // that the new boot does not see it enter again.
        std::thread::sleep(Duration::from_millis(400));
    }
    let old_epoch = last_epoch(&rig.line.seen).expect("an epoch");

    // The controller reboots: its sequence numbers start at 1 again.
    rig.line.emulator.reboot();
    rig.wait(Duration::from_secs(10), "the new boot's epoch", |s| {
        s.iter()
            .position(|e| *e == LineEvent::Rebooted)
            .is_some_and(|at| last_epoch(&s[at..]).is_some())
    });
    // Two parcels of the new boot, with no read: they are to go to manual inspection.
    for seq in [1, 2] {
        rig.line.emulator.place_parcel(100);
        rig.wait(
            Duration::from_secs(10),
            "a parcel of the new boot entering",
            |s| {
                s.iter()
                    .rposition(|e| *e == LineEvent::Rebooted)
                    .is_some_and(|at| s[at..].contains(&LineEvent::Entered { seq }))
            },
        );
        std::thread::sleep(Duration::from_millis(400));
    }
    // Now the images of the last boot's parcels 1 and 2 complete: they are cleared, and
    // their decisions — pass, for sequence numbers 1 and 2 — are made while parcels 1 and 2
    // of the new boot are undecided on the belt.
    rig.line.scan("scan-0001", "SF3000000000001", false, 31);
    rig.line.scan("scan-0002", "SF3000000000002", false, 32);

    let rebooted_at = rig
        .line
        .seen
        .iter()
        .rposition(|e| *e == LineEvent::Rebooted)
        .expect("rebooted");
    rig.wait(
        Duration::from_secs(40),
        "both parcels of the new boot to leave the belt",
        |s| {
            let after = &s[rebooted_at..];
            [1, 2].iter().all(|&seq| {
                after.iter().any(|e| {
                    matches!(e, LineEvent::Diverted { seq: s } | LineEvent::Passed { seq: s } if *s == seq)
                })
            })
        },
    );
    let new_boot = &rig.line.seen[rebooted_at..];
    let new_epoch = last_epoch(new_boot).expect("the new epoch");
    assert_ne!(new_epoch, old_epoch);
    assert!(
        !new_boot
            .iter()
            .any(|e| matches!(e, LineEvent::Passed { .. })),
        "a parcel of the new boot passed: {new_boot:?}\n{}",
        rig.app.log_text()
    );
    assert!(
        new_boot.iter().all(|e| match e {
            LineEvent::DecisionReceived { epoch, .. } => *epoch == new_epoch,
            _ => true,
        }),
        "every decision the new boot received names its epoch: {new_boot:?}"
    );
    // The decisions for the last boot's parcels were made, and were passes: the appliance
    // dropped them rather than send them to the new boot.
    let log = rig.app.log_text();
    let dropped: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("decision dropped"))
        .collect();
    assert_eq!(dropped.len(), 2, "{log}");
    assert!(
        dropped.iter().any(|l| l.contains("Pass")),
        "the old parcels were cleared, so a pass was withheld: {dropped:?}"
    );
    rig.app.stop_cleanly(Duration::from_secs(15));
    rig.line.shutdown();
}

/// `xray_after = "delete"` empties the drop folder, but a flagged parcel's scan is evidence
/// that the operator and the regulator will read: it is archived all the same, byte for byte
/// as screened; only the cleared parcel's scan is gone, its record keeping the hash.
#[test]
fn with_xray_after_delete_a_flagged_scan_is_still_kept() {
    use sha2::{Digest, Sha256};
    let site = Site::start("xray-delete");
    let (dir, port) = (&site.dir, site.port);
    let status = site.sub("screenline/v1/T1/a1/status");
    let data = dir.path().join("data");
    let mut rig = Rig::on(Line::start(dir.path()), dir.path(), &data, port, &[], |c| {
        c.replace(
            "[lines.controller]",
            "xray_after = \"delete\"\n[lines.controller]",
        )
    });
    status.wait_state(Duration::from_secs(30), "online");
    rig.line.parcel("SF1000000000011", true, 11);
    std::thread::sleep(Duration::from_millis(700));
    rig.line.parcel("SF1000000000012", false, 12);
    rig.wait_left(2, Duration::from_secs(30));
    assert!(
        rig.line.decided_as(1, Verdict::Divert),
        "{:?}",
        rig.line.seen
    );
    assert!(rig.line.decided_as(2, Verdict::Pass), "{:?}", rig.line.seen);
    rig.app.stop_cleanly(Duration::from_secs(30));

    let left: Vec<_> = std::fs::read_dir(&rig.line.xray)
        .expect("drop folder")
        .filter_map(Result::ok)
        .map(|e| e.file_name())
        .collect();
    assert!(left.is_empty(), "the drop folder keeps {left:?}");
    let store = screenline::store::Store::open(&data).expect("open the store");
    let records = store
        .latest_records(usize::MAX, usize::MAX, |_| true)
        .expect("records");
    let by = |d: screenline::domain::Decision| {
        records
            .iter()
            .find(|r| r.decision == d)
            .unwrap_or_else(|| panic!("a {d:?} record among {records:?}"))
    };
    let flagged = by(screenline::domain::Decision::Flag);
    let image = flagged
        .image
        .as_ref()
        .expect("the flagged parcel's scan is kept");
    let bytes = std::fs::read(image).expect("the archived scan");
    assert_eq!(
        flagged.image_sha256.as_deref(),
        Some(hex::encode(Sha256::digest(&bytes)).as_str()),
        "archived byte for byte as screened"
    );
    let cleared = by(screenline::domain::Decision::Clear);
    assert_eq!(cleared.image, None, "the cleared parcel's scan is deleted");
    assert!(cleared.image_sha256.is_some(), "its record keeps the hash");
    let archived = std::fs::read_dir(data.join("images"))
        .expect("images")
        .count();
    assert_eq!(archived, 1, "only the flagged parcel's scan is archived");
    rig.line.shutdown();
}
