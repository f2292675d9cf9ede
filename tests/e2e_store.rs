//! A damaged store does not stop the line and loses no report: the real binary, a real
//! Mosquitto, an independent `mosquitto_sub`.
//!
//! A store holding 30 unsent reports has its sled settings file garbled (as a power cut can
//! leave it). `screenline demo` must still screen — the store moved aside, the alarm in the
//! retained status —, `screenline store check` must fail naming the folder and the recover
//! command, `screenline store recover` must bring the 30 reports back, `store check` then
//! passes, and the next run delivers all 30 to the subscriber.

mod common;

use common::*;
use screenline::domain::Decision;
use screenline::record::Record;
use serde_json::json;
use std::path::Path;
use std::process::{Command, Output};
use std::time::Duration;

const ROOT: &str = "screenline/v1/DEMO/demo-01";

fn screenline(args: &[&str], data: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_screenline"))
        .args(args)
        .arg("--data")
        .arg(data)
        .output()
        .expect("screenline")
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// Runs `screenline demo --wave --parcels N` to its end; asserts it exited 0.
fn demo(dir: &Path, port: u16, data: &Path, parcels: u32) {
    let (parcels, broker) = (parcels.to_string(), format!("mqtt://127.0.0.1:{port}"));
    let data = data.to_string_lossy();
    let args = ["--wave", "--console", "127.0.0.1:0", "--parcels", &parcels];
    let args = [&args[..], &["--broker", &broker, "--data", &data]].concat();
    Appliance::demo(dir, &args).finish(Duration::from_secs(90));
}

#[test]
fn a_damaged_store_is_set_aside_the_line_goes_on_and_its_reports_are_recovered() {
    let dir = TempDir::new("store-aside");
    let port = free_port();
    let _broker = start_mosquitto(dir.path(), port);
    let data = dir.path().join("data");
    let ids: Vec<String> = (0..30).map(|i| format!("recovered-{i:02}")).collect();
    {
        let store = screenline::store::Store::open(&data).expect("store");
        for (i, id) in ids.iter().enumerate() {
            let key = format!("{:013}-L9-{i}", 1_764_000_000_000u64 + i as u64);
            let mut record = Record::example(&key, Decision::Flag);
            record.report_id = Some(id.clone());
            let payload = serde_json::to_vec(&json!({"report_id": id})).expect("json");
            store
                .commit(
                    key.as_bytes(),
                    &record,
                    Some((id.as_str(), "reports/flagged", &payload)),
                )
                .expect("commit");
        }
    }
    std::fs::write(
        data.join("db").join("conf"),
        b"\x00garbled by a power cut\xff",
    )
    .expect("garble");

    let sub = Sub::start(dir.path(), port, &format!("{ROOT}/#"));
    demo(dir.path(), port, &data, 3);
    // The alarm went out in the retained status.
    sub.wait_for(
        Duration::from_secs(10),
        "the store alarm in the status",
        |m| {
            m.iter().any(|(t, p)| {
                t.ends_with("/status")
                    && serde_json::from_str::<serde_json::Value>(p).is_ok_and(|v| {
                        v["links"]["store"]["up"] == false
                            && v["links"]["store"]["detail"]
                                .as_str()
                                .is_some_and(|d| d.contains("store recover"))
                    })
            })
        },
    );

    let check = screenline(&["store", "check"], &data);
    assert!(!check.status.success(), "check must fail: {}", text(&check));
    assert!(
        text(&check).contains("db.broken-") && text(&check).contains("store recover"),
        "{}",
        text(&check)
    );
    let aside = std::fs::read_dir(&data)
        .expect("data")
        .flatten()
        .map(|e| e.path())
        .find(|p| p.to_string_lossy().contains("db.broken-"))
        .expect("the set-aside folder");
    let recover = Command::new(env!("CARGO_BIN_EXE_screenline"))
        .args(["store", "recover", "--data"])
        .arg(&data)
        .arg("--from")
        .arg(&aside)
        .output()
        .expect("recover");
    assert!(recover.status.success(), "{}", text(&recover));
    assert!(text(&recover).contains("30 reports"), "{}", text(&recover));
    let check = screenline(&["store", "check"], &data);
    assert!(check.status.success(), "{}", text(&check));

    // The next run delivers every recovered report.
    demo(dir.path(), port, &data, 1);
    let msgs = sub.wait_for(Duration::from_secs(20), "the recovered reports", |m| {
        ids.iter().all(|id| {
            m.iter()
                .any(|(t, p)| t.ends_with("/reports/flagged") && p.contains(id.as_str()))
        })
    });
    assert!(msgs.len() > 30);
    let check = screenline(&["store", "check"], &data);
    assert!(check.status.success(), "{}", text(&check));
}
