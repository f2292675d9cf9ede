//! The regulator's side of the feed, end to end on real parts: the real `screenline run`
//! binary on pseudo-terminal lines (the controller being the real firmware logic in the host
//! emulator), a real Mosquitto, commands sent with `mosquitto_pub` and signed here with
//! Ed25519, answers and reports read with the independent `mosquitto_sub`.
//!
//! A signed watch-list is applied and a parcel from the listed sender is flagged
//! `watchlisted_sender`; a replay, a stale command and an unsigned one are refused; the
//! flagged parcel's full image comes back on a signed evidence request with the SHA-256 the
//! report gave; statistics arrive every few seconds; every command is in the audit log.

mod common;

use base64::Engine;
use common::*;
use ed25519_dalek::SigningKey;
use screenline::demo::write_scan;
use screenline::report::commands::sign_envelope;
use screenline_emulator::pty::Pty;
use screenline_emulator::{BeltConfig, LineEmulator};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use std::process::Command;
use std::time::{Duration, SystemTime};

const ROOT: &str = "screenline/v1/T1/a1";

fn publish(port: u16, topic: &str, message: &str) {
    let ok = Command::new("mosquitto_pub")
        .args([
            "-h",
            "127.0.0.1",
            "-p",
            &port.to_string(),
            "-q",
            "1",
            "-t",
            topic,
            "-m",
            message,
        ])
        .status()
        .expect("mosquitto_pub must be installed: run tests/setup.sh")
        .success();
    assert!(ok, "mosquitto_pub failed");
}

fn payload(command: &str, issued_at: SystemTime, nonce: &str, body: Value) -> String {
    json!({
        "command": command, "site_id": "T1", "appliance_id": "a1",
        "issued_at": screenline::time_fmt::format(issued_at), "nonce": nonce, "body": body,
    })
    .to_string()
}

fn json_of(msgs: &[(String, String)]) -> Vec<(String, Value)> {
    msgs.iter()
        .filter_map(|(t, p)| Some((t.clone(), serde_json::from_str(p).ok()?)))
        .collect()
}

fn result_for(results: &[(String, String)], nonce: &str) -> Option<Value> {
    json_of(results)
        .into_iter()
        .map(|(_, v)| v)
        .find(|v| v["nonce"] == nonce)
}

#[test]
fn signed_commands_are_applied_and_everything_else_is_refused_and_audited() {
    let dir = TempDir::new("regulator");
    let port = free_port();
    let _broker = start_mosquitto(dir.path(), port);
    let results = Sub::start(dir.path(), port, &format!("{ROOT}/cmd-result"));
    let reports = Sub::start(dir.path(), port, &format!("{ROOT}/reports/flagged"));
    let status = Sub::start(dir.path(), port, &format!("{ROOT}/status"));
    let stats = Sub::start(dir.path(), port, &format!("{ROOT}/stats"));
    let evidence = Sub::start(dir.path(), port, &format!("{ROOT}/evidence/+"));

    let regulator = SigningKey::from_bytes(&rand::random::<[u8; 32]>());
    let public_b64 =
        base64::engine::general_purpose::STANDARD.encode(regulator.verifying_key().to_bytes());

    let reader = Pty::open().expect("reader pty");
    let controller = Pty::open().expect("controller pty");
    let emulator = LineEmulator::start(controller.master().expect("master"), BeltConfig::default())
        .expect("emulator");
    let xray = dir.path().join("xray");
    std::fs::create_dir_all(&xray).expect("xray dir");
    let data = dir.path().join("data");
    let config = line_config(
        &data,
        port,
        reader.slave_path(),
        controller.slave_path(),
        &xray,
    )
    .replace("keep_alive_s = 5", "keep_alive_s = 5\nstats_period_s = 2")
        + &format!("[regulator]\npublic_key = \"{public_b64}\"\n");
    let mut app = Appliance::start(dir.path(), &config);
    status.wait_for(Duration::from_secs(30), "status online", |m| {
        m.iter().any(|(_, p)| p.contains("\"state\":\"online\""))
    });

    // A signed watch-list naming the sender of valid_waybill(), then the same message again
    // (a replay), a stale one, an unsigned one, and one signed by someone else.
    let now = SystemTime::now();
    let watchlist = json!({"version": "2026-11-25.1", "id_numbers": ["11010519491231002X"]});
    let signed = sign_envelope(
        &regulator,
        &payload("watchlist", now, "wl-00000001", watchlist.clone()),
    );
    publish(port, &format!("{ROOT}/cmd/watchlist"), &signed);
    results.wait_for(Duration::from_secs(10), "the watch-list's answer", |m| {
        result_for(m, "wl-00000001").is_some()
    });
    publish(port, &format!("{ROOT}/cmd/watchlist"), &signed);
    let stale = sign_envelope(
        &regulator,
        &payload(
            "watchlist",
            now - Duration::from_secs(600),
            "wl-00000002",
            watchlist.clone(),
        ),
    );
    publish(port, &format!("{ROOT}/cmd/watchlist"), &stale);
    let unsigned = json!({
        "schema": "screenline.cmd.v1",
        "payload": payload("watchlist", now, "wl-00000003", json!({"version": "evil"})),
    })
    .to_string();
    publish(port, &format!("{ROOT}/cmd/watchlist"), &unsigned);
    let impostor = SigningKey::from_bytes(&rand::random::<[u8; 32]>());
    let forged = sign_envelope(
        &impostor,
        &payload(
            "thresholds",
            now,
            "th-00000004",
            json!({"electronics": 0.0}),
        ),
    );
    publish(port, &format!("{ROOT}/cmd/thresholds"), &forged);
    let msgs = results.wait_for(Duration::from_secs(10), "five answers", |m| m.len() >= 5);
    let answers: Vec<Value> = json_of(&msgs).into_iter().map(|(_, v)| v).collect();
    let find = |nonce: &str, skip: usize| -> Value {
        answers
            .iter()
            .filter(|v| v["nonce"] == nonce)
            .nth(skip)
            .cloned()
            .unwrap_or_else(|| panic!("no answer #{skip} for {nonce}: {answers:#?}"))
    };
    let accepted = find("wl-00000001", 0);
    assert_eq!(accepted["ok"], true, "{accepted}");
    assert_eq!(accepted["command"], "watchlist");
    let replay = find("wl-00000001", 1);
    assert_eq!(replay["ok"], false, "{replay}");
    assert!(
        replay["message"]
            .as_str()
            .is_some_and(|m| m.contains("replay")),
        "{replay}"
    );
    let stale = find("wl-00000002", 0);
    assert_eq!(stale["ok"], false);
    assert!(
        stale["message"]
            .as_str()
            .is_some_and(|m| m.contains("stale")),
        "{stale}"
    );
    let unsigned = find("wl-00000003", 0);
    assert_eq!(unsigned["ok"], false);
    assert!(
        unsigned["message"]
            .as_str()
            .is_some_and(|m| m.contains("unsigned")),
        "{unsigned}"
    );
    let forged = find("th-00000004", 0);
    assert_eq!(forged["ok"], false);
    assert!(
        forged["message"]
            .as_str()
            .is_some_and(|m| m.contains("bad_signature")),
        "{forged}"
    );

    // A parcel of genuine goods from the watch-listed sender: flagged for the sender alone.
    let mut reader_tx = reader.master().expect("reader master");
    send_record(&mut reader_tx, &valid_waybill("SF2000000000001"));
    emulator.place_parcel(400);
    std::thread::sleep(Duration::from_millis(300));
    write_scan(
        &xray,
        "scan-0001",
        "SF2000000000001",
        xraygen::ParcelSpec {
            category: 5,
            counterfeit: false,
        },
        21,
    )
    .expect("scan");
    let msgs = reports.wait_for(Duration::from_secs(20), "the flagged report", |m| {
        !m.is_empty()
    });
    let report: Value = serde_json::from_str(&msgs[0].1).expect("report JSON");
    let codes: Vec<&str> = report["reasons"]
        .as_array()
        .map(|r| r.iter().filter_map(|x| x["code"].as_str()).collect())
        .unwrap_or_default();
    assert!(codes.contains(&"watchlisted_sender"), "{report}");
    let report_id = report["report_id"].as_str().expect("report id").to_owned();

    // The full image on a signed evidence request; an unknown report is refused.
    let ask = sign_envelope(
        &regulator,
        &payload(
            "evidence",
            SystemTime::now(),
            "ev-00000005",
            json!({"report_id": report_id}),
        ),
    );
    publish(port, &format!("{ROOT}/cmd/evidence"), &ask);
    let unknown = sign_envelope(
        &regulator,
        &payload(
            "evidence",
            SystemTime::now(),
            "ev-00000006",
            json!({"report_id": "rpt-0000"}),
        ),
    );
    publish(port, &format!("{ROOT}/cmd/evidence"), &unknown);
    let ev = evidence.wait_for(Duration::from_secs(10), "the evidence", |m| !m.is_empty());
    assert_eq!(ev[0].0, format!("{ROOT}/evidence/{report_id}"));
    let ev: Value = serde_json::from_str(&ev[0].1).expect("evidence JSON");
    let image = base64::engine::general_purpose::STANDARD
        .decode(ev["image_base64"].as_str().expect("image"))
        .expect("base64");
    assert_eq!(hex::encode(Sha256::digest(&image)), ev["image_sha256"]);
    assert_eq!(
        ev["image_sha256"], report["evidence"]["image_sha256"],
        "the report's image"
    );
    let msgs = results.wait_for(Duration::from_secs(10), "the evidence answers", |m| {
        result_for(m, "ev-00000006").is_some()
    });
    assert_eq!(
        result_for(&msgs, "ev-00000005").map(|v| v["ok"].clone()),
        Some(json!(true))
    );
    let refused = result_for(&msgs, "ev-00000006").expect("answer");
    assert!(
        refused["message"]
            .as_str()
            .is_some_and(|m| m.contains("no_evidence")),
        "{refused}"
    );

    // Statistics every two seconds, counting the flagged parcel by reason and category.
    let msgs = stats.wait_for(
        Duration::from_secs(15),
        "statistics with the flagged parcel",
        |m| json_of(m).iter().any(|(_, v)| v["parcels"]["flagged"] == 1),
    );
    let all: Vec<Value> = json_of(&msgs).into_iter().map(|(_, v)| v).collect();
    let with = all
        .iter()
        .find(|v| v["parcels"]["flagged"] == 1)
        .expect("stats");
    assert_eq!(with["flagged_by_reason"]["watchlisted_sender"], 1, "{with}");
    assert_eq!(
        with["flagged_by_category"].as_object().map(|m| m.len()),
        Some(1),
        "{with}"
    );
    assert!(with["parcels"]["screened"].as_u64() >= Some(1), "{with}");
    let total: u64 = all
        .iter()
        .filter_map(|v| v["commands"]["refused"].as_u64())
        .sum();
    println!(
        "{} statistics messages; {total} refusals counted; {with}",
        all.len()
    );

    assert!(
        app.interrupt(Duration::from_secs(15)),
        "clean exit\n{}",
        app.log_text()
    );
    emulator.shutdown();
    let store = screenline::store::Store::open(&data).expect("store");
    let audit = store
        .audit_log(100, |e| e.action.starts_with("cmd."))
        .expect("audit");
    assert_eq!(audit.len(), 7, "every command audited: {audit:#?}");
    assert!(audit
        .iter()
        .any(|e| e.actor == "regulator" && e.detail.contains("applied")));
    assert!(audit
        .iter()
        .any(|e| e.actor == "unverified" && e.detail.contains("unsigned")));
    let saved = store.saved_watchlist().expect("read").expect("saved");
    assert_eq!(saved.version, "2026-11-25.1");
    assert!(!serde_json::to_string(&saved)
        .expect("json")
        .contains("11010519491231002X"));
}
