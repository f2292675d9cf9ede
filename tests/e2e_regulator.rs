//! The regulator's side of the feed, end to end on real parts: the real `screenline run`
//! binary on pseudo-terminal lines (the controller being the real firmware logic in the host
//! emulator), a real Mosquitto, commands sent with `mosquitto_pub` and signed here with
//! Ed25519, answers and reports read with the independent `mosquitto_sub`.
//!
//! A signed watch-list is applied and a parcel from the listed sender is flagged
//! `watchlisted_sender`; a replay, a stale command and an unsigned one are refused; the
//! flagged parcel's full image comes back on a signed evidence request with the SHA-256 the
//! report gave; statistics arrive every few seconds; every command is in the audit log.
//! Every message seen, and the commands sent, are checked against docs/schemas.
//!
//! With the broker down, flagged reports and statistics pile up on disk; when it comes up,
//! every flagged report goes out before any statistics message. And the whole feed works
//! over TLS with client certificates (`mqtts://`), against a Mosquitto that requires them.

mod common;

use base64::Engine;
use common::rig::Line;
use common::*;
use ed25519_dalek::SigningKey;
use screenline::report::commands::sign_envelope;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime};

const ROOT: &str = "screenline/v1/T1/a1";

fn publish(port: u16, topic: &str, message: &str) {
    let out = mosquitto_pub(port, topic, message, &[]);
    assert!(
        out.status.success(),
        "mosquitto_pub failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
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

/// A regulator's new signing key, and the configuration that names its public half.
fn new_regulator() -> (SigningKey, String) {
    let key = SigningKey::from_bytes(&rand::random::<[u8; 32]>());
    let public_b64 =
        base64::engine::general_purpose::STANDARD.encode(key.verifying_key().to_bytes());
    (key, format!("[regulator]\npublic_key = \"{public_b64}\"\n"))
}

/// The regulator's side of the feed: a subscriber on each topic it reads.
struct Feed {
    results: Sub,
    reports: Sub,
    status: Sub,
    stats: Sub,
    evidence: Sub,
}

impl Feed {
    fn subscribe(site: &Site) -> Feed {
        let sub = |topic: &str| site.sub(&format!("{ROOT}/{topic}"));
        Feed {
            results: sub("cmd-result"),
            reports: sub("reports/flagged"),
            status: sub("status"),
            stats: sub("stats"),
            evidence: sub("evidence/+"),
        }
    }
}

/// The command `command` of `at` under `nonce`, signed by `key` as a regulator sends it.
fn signed_command(
    key: &SigningKey,
    command: &str,
    at: SystemTime,
    nonce: &str,
    body: Value,
) -> String {
    sign_envelope(key, &payload(command, at, nonce, body))
}

/// The regulator asks, signed, for the evidence of `report_id`; returns what it sent.
fn ask_evidence(port: u16, regulator: &SigningKey, nonce: &str, report_id: &str) -> String {
    let body = json!({ "report_id": report_id });
    let ask = signed_command(regulator, "evidence", SystemTime::now(), nonce, body);
    publish(port, &format!("{ROOT}/cmd/evidence"), &ask);
    ask
}

/// One line whose appliance hears a new regulator, started and online.
struct Regulated {
    /// The regulator's side of the feed.
    feed: Feed,
    /// The regulator's signing key.
    regulator: SigningKey,
    line: Line,
    data: PathBuf,
    /// The appliance's configuration: the line's, edited, with the regulator's key.
    config: String,
    app: Appliance,
}

fn regulated(site: &Site, edit: impl FnOnce(String) -> String) -> Regulated {
    let feed = Feed::subscribe(site);
    let (regulator, regulator_config) = new_regulator();
    let line = Line::start(site.dir.path());
    let data = site.dir.path().join("data");
    let config = edit(line.config(&data, site.port)) + &regulator_config;
    let app = Appliance::start(site.dir.path(), &config);
    feed.status.wait_state(Duration::from_secs(30), "online");
    Regulated {
        feed,
        regulator,
        line,
        data,
        config,
        app,
    }
}

/// Sends `watchlist` signed by `regulator` as of `at` under `nonce`; waits for its answer.
/// Returns the signed message and the answer.
fn send_watchlist(
    port: u16,
    regulator: &SigningKey,
    results: &Sub,
    watchlist: Value,
    at: SystemTime,
    nonce: &str,
) -> (String, Value) {
    let signed = signed_command(regulator, "watchlist", at, nonce, watchlist);
    publish(port, &format!("{ROOT}/cmd/watchlist"), &signed);
    let msgs = results.wait_for(Duration::from_secs(10), "the watch-list's answer", |m| {
        result_for(m, nonce).is_some()
    });
    let answer = result_for(&msgs, nonce).expect("the answer");
    (signed, answer)
}

#[test]
fn signed_commands_are_applied_and_everything_else_is_refused_and_audited() {
    let site = Site::start("regulator");
    let port = site.port;
    let dir = &site.dir;
    let Regulated {
        feed:
            Feed {
                results,
                reports,
                status,
                stats,
                evidence,
            },
        regulator,
        mut line,
        data,
        config,
        mut app,
    } = regulated(&site, |c| {
        c.replace("keep_alive_s = 5", "keep_alive_s = 5\nstats_period_s = 2")
    });

    // A signed watch-list naming the sender of valid_waybill(), then the same message again
    // (a replay), a stale one, an unsigned one, and one signed by someone else.
    let now = SystemTime::now();
    let watchlist = json!({"version": "2026-11-25.1", "id_numbers": ["11010519491231002X"]});
    let (signed, _) = send_watchlist(
        port,
        &regulator,
        &results,
        watchlist.clone(),
        now,
        "wl-00000001",
    );
    publish(port, &format!("{ROOT}/cmd/watchlist"), &signed);
    let stale = signed_command(
        &regulator,
        "watchlist",
        now - Duration::from_secs(600),
        "wl-00000002",
        watchlist.clone(),
    );
    publish(port, &format!("{ROOT}/cmd/watchlist"), &stale);
    let unsigned = json!({
        "schema": "screenline.cmd.v1",
        "payload": payload("watchlist", now, "wl-00000003", json!({"version": "evil"})),
    })
    .to_string();
    publish(port, &format!("{ROOT}/cmd/watchlist"), &unsigned);
    let impostor = SigningKey::from_bytes(&rand::random::<[u8; 32]>());
    let forged = signed_command(
        &impostor,
        "thresholds",
        now,
        "th-00000004",
        json!({"electronics": 0.0}),
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
    let refused = |nonce: &str, nth: usize, why: &str| {
        let r = find(nonce, nth);
        assert_eq!(r["ok"], false, "{r}");
        assert!(
            r["message"].as_str().is_some_and(|m| m.contains(why)),
            "{why}: {r}"
        );
    };
    refused("wl-00000001", 1, "replay");
    refused("wl-00000002", 0, "stale");
    // Unverified commands are anyone's: their answers name no nonce and echo nothing they
    // said, only the length and SHA-256 of what came.
    let refused_unverified = |raw: &str, command: &str, why: &str| {
        let hash = hex::encode(Sha256::digest(raw.as_bytes()));
        let r = answers
            .iter()
            .find(|v| v["message"].as_str().is_some_and(|m| m.contains(&hash)))
            .unwrap_or_else(|| panic!("no answer naming {hash}: {answers:#?}"));
        assert_eq!(r["ok"], false, "{r}");
        assert_eq!(r["nonce"], Value::Null, "{r}");
        assert_eq!(r["command"], command, "{r}");
        let m = r["message"].as_str().unwrap_or_default();
        assert!(
            m.contains(why) && m.contains(&format!("{} bytes", raw.len())),
            "{r}"
        );
        assert!(!m.contains("wl-00000003") && !m.contains("evil"), "{r}");
    };
    refused_unverified(&unsigned, "watchlist", "unsigned");
    refused_unverified(&forged, "thresholds", "bad_signature");

    // A parcel of genuine goods from the watch-listed sender: flagged for the sender alone.
    genuine_parcel(&mut line, 1);
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
    let ask = ask_evidence(port, &regulator, "ev-00000005", &report_id);
    ask_evidence(port, &regulator, "ev-00000006", "rpt-0000");
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

    let schemas = Schemas::load();
    let mut checked = std::collections::BTreeMap::new();
    for sub in [&results, &reports, &status, &stats, &evidence] {
        for (topic, v) in json_of(&sub.messages()) {
            *checked.entry(schemas.check(&topic, &v)).or_insert(0) += 1;
        }
    }
    for command in [&signed, &ask] {
        let envelope: Value = serde_json::from_str(command).expect("envelope");
        schemas.validate("cmd", &envelope);
        let inner: Value = serde_json::from_str(envelope["payload"].as_str().expect("payload"))
            .expect("payload JSON");
        schemas.validate("cmd-payload", &inner);
    }
    println!("checked against the schemas: {checked:?}");
    for kind in ["cmd-result", "report", "status", "stats", "evidence"] {
        assert!(checked.contains_key(kind), "no {kind} message was checked");
    }

    // Thresholds of 0 for every category (every parcel a suspected counterfeit) survive a
    // restart, and so does the watch-list (not in this configuration's file).
    let zero: serde_json::Map<String, Value> = screenline::domain::Category::ALL
        .iter()
        .map(|c| (c.key().to_owned(), json!(0.0)))
        .collect();
    let thresholds = signed_command(
        &regulator,
        "thresholds",
        SystemTime::now(),
        "th-00000007",
        Value::Object(zero),
    );
    publish(port, &format!("{ROOT}/cmd/thresholds"), &thresholds);
    let msgs = results.wait_for(Duration::from_secs(10), "the thresholds' answer", |m| {
        result_for(m, "th-00000007").is_some()
    });
    assert_eq!(
        result_for(&msgs, "th-00000007").map(|v| v["ok"].clone()),
        Some(json!(true))
    );
    app.stop_cleanly(Duration::from_secs(15));
    let online = |m: &[(String, String)]| {
        m.iter()
            .filter(|(_, p)| p.contains("\"state\":\"online\""))
            .count()
    };
    let before = online(&status.messages());
    let mut app = Appliance::start(dir.path(), &config);
    status.wait_for(Duration::from_secs(30), "status online again", |m| {
        online(m) > before
    });
    genuine_parcel(&mut line, 2);
    let msgs = reports.wait_for(Duration::from_secs(20), "the second report", |m| {
        m.iter().any(|(_, p)| p.contains("SF2000000000002"))
    });
    let second = json_of(&msgs)
        .into_iter()
        .map(|(_, v)| v)
        .find(|v| v["waybill"] == "SF2000000000002")
        .expect("second report");
    let codes: Vec<&str> = second["reasons"]
        .as_array()
        .map(|r| r.iter().filter_map(|x| x["code"].as_str()).collect())
        .unwrap_or_default();
    assert_eq!(
        codes,
        ["watchlisted_sender", "counterfeit_suspected"],
        "{second}"
    );
    app.stop_cleanly(Duration::from_secs(15));
    line.shutdown();
    let store = screenline::store::Store::open(&data).expect("store");
    let audit = store
        .audit_log(100, |e| e.action.starts_with("cmd."))
        .expect("audit");
    assert_eq!(audit.len(), 8, "every command audited: {audit:#?}");
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

/// Parcel `n` of genuine electronics from valid_waybill()'s (watch-listed) sender: its read,
/// the photo-eye, and its image.
fn genuine_parcel(line: &mut Line, n: u32) {
    line.parcel(&format!("SF20000000000{n:02}"), false, 20 + u64::from(n));
}

/// Parcel `n`, counterfeit, with valid real-name data: flagged.
fn counterfeit_parcel(line: &mut Line, n: u32) {
    line.parcel(&format!("SF30000000{n:05}"), true, 100 + u64::from(n));
    std::thread::sleep(Duration::from_millis(700));
}

#[test]
fn a_draining_backlog_sends_every_flagged_report_before_any_statistics() {
    let dir = TempDir::new("regulator-backlog");
    let port = free_port();
    // A durable subscriber whose session the broker keeps across its restart.
    let mut broker = start_mosquitto_persistent(dir.path(), port);
    let sub = Sub::durable(dir.path(), port, &format!("{ROOT}/#"), "backlog-watcher");
    terminate(&mut broker);

    let mut line = Line::start(dir.path());
    let config = line
        .config(&dir.path().join("data"), port)
        .replace("keep_alive_s = 5", "keep_alive_s = 5\nstats_period_s = 1");
    let mut app = Appliance::start(dir.path(), &config);
    std::thread::sleep(Duration::from_secs(2));
    for n in 1..=3 {
        counterfeit_parcel(&mut line, n);
    }
    // Statistics periods pass while the reports wait.
    std::thread::sleep(Duration::from_secs(2));
    let _broker = start_mosquitto_persistent(dir.path(), port);
    let msgs = sub.wait_for(
        Duration::from_secs(30),
        "three reports and statistics",
        |m| {
            m.iter()
                .filter(|(t, _)| t.ends_with("/reports/flagged"))
                .count()
                >= 3
                && m.iter().any(|(t, _)| t.ends_with("/stats"))
        },
    );
    let order: Vec<&str> = msgs
        .iter()
        .filter_map(|(t, _)| t.rsplit_once(&format!("{ROOT}/")).map(|(_, x)| x))
        .filter(|t| *t == "reports/flagged" || *t == "stats")
        .collect();
    let last_report = order.iter().rposition(|t| *t == "reports/flagged");
    let first_stats = order.iter().position(|t| *t == "stats");
    println!("order on the wire after the broker came up: {order:?}");
    assert!(
        last_report < first_stats,
        "statistics overtook a flagged report: {order:?}"
    );
    let flagged: u64 = json_of(&msgs)
        .iter()
        .filter(|(t, _)| t.ends_with("/stats"))
        .filter_map(|(_, v)| v["parcels"]["flagged"].as_u64())
        .sum();
    assert!(flagged <= 3, "stats count each parcel once: {flagged}");
    app.stop_cleanly(Duration::from_secs(15));
    line.shutdown();
}

/// `openssl` with `args` in `dir`; panics with its output on failure.
fn openssl(dir: &Path, args: &[&str]) {
    run_ok(Command::new("openssl").current_dir(dir).args(args));
}

/// `openssl req` with `extra` (`-x509` for a self-signed certificate): a new P-256 key in
/// `key`, and `out` for `subject`.
fn openssl_req(dir: &Path, extra: &[&str], key: &str, out: &str, subject: &str) {
    let mut args = vec!["req"];
    args.extend_from_slice(extra);
    args.extend([
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-nodes",
    ]);
    args.extend(["-keyout", key, "-out", out, "-subj", subject]);
    openssl(dir, &args);
}

/// A CA, a broker certificate for 127.0.0.1 and a client certificate, PEM, in `dir`.
fn make_certificates(dir: &Path) {
    let ca = ["-x509", "-days", "2"];
    openssl_req(dir, &ca, "ca.key", "ca.pem", "/CN=Test Regulator CA");
    for (name, ext) in [
        (
            "server",
            "subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth\n",
        ),
        ("client", "extendedKeyUsage=clientAuth\n"),
    ] {
        std::fs::write(dir.join(format!("{name}.ext")), ext).expect("ext");
        let (key, csr) = (format!("{name}.key"), format!("{name}.csr"));
        openssl_req(dir, &[], &key, &csr, &format!("/CN=screenline-{name}"));
        openssl(
            dir,
            &[
                "x509",
                "-req",
                "-in",
                &format!("{name}.csr"),
                "-CA",
                "ca.pem",
                "-CAkey",
                "ca.key",
                "-CAcreateserial",
                "-days",
                "2",
                "-out",
                &format!("{name}.pem"),
                "-extfile",
                &format!("{name}.ext"),
            ],
        );
    }
    // Mosquitto drops to its own user when started as root: it must be able to read these.
    for f in std::fs::read_dir(dir).expect("dir").flatten() {
        let _ = std::fs::set_permissions(
            f.path(),
            std::os::unix::fs::PermissionsExt::from_mode(0o644),
        );
    }
}

#[test]
fn the_feed_works_over_tls_with_client_certificates() {
    let dir = TempDir::new("regulator-tls");
    let certs = dir.path().join("certs");
    std::fs::create_dir_all(&certs).expect("certs dir");
    std::fs::set_permissions(&certs, std::os::unix::fs::PermissionsExt::from_mode(0o755))
        .expect("certs dir permissions");
    make_certificates(&certs);
    let port = free_port();
    let conf = dir.path().join("mosquitto-tls.conf");
    std::fs::write(
        &conf,
        format!(
            "listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\n\
             cafile {c}/ca.pem\ncertfile {c}/server.pem\nkeyfile {c}/server.key\n\
             require_certificate true\n",
            c = certs.display()
        ),
    )
    .expect("mosquitto config");
    let _broker = Proc(
        Command::new(if Path::new("/usr/sbin/mosquitto").exists() {
            "/usr/sbin/mosquitto"
        } else {
            "mosquitto"
        })
        .arg("-c")
        .arg(&conf)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("mosquitto"),
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "mosquitto (TLS) did not start");
        std::thread::sleep(Duration::from_millis(50));
    }
    let file = |name: &str| certs.join(name).to_string_lossy().into_owned();
    let (ca, cert, key) = (file("ca.pem"), file("client.pem"), file("client.key"));
    let sub = Sub::spawn(
        dir.path(),
        port,
        &format!("{ROOT}/#"),
        &["--cafile", &ca, "--cert", &cert, "--key", &key],
    );
    std::thread::sleep(Duration::from_millis(200));

    let mut line = Line::start(dir.path());
    let config = line
        .config(&dir.path().join("data"), port)
        .replace("mqtt://", "mqtts://")
        .replace(
            "keep_alive_s = 5",
            &format!(
                "keep_alive_s = 5\nca_file = \"{c}/ca.pem\"\nclient_cert_file = \"{c}/client.pem\"\nclient_key_file = \"{c}/client.key\"",
                c = certs.display()
            ),
        );
    let mut app = Appliance::start(dir.path(), &config);
    sub.wait_for(Duration::from_secs(30), "the status over TLS", |m| {
        json_of(m)
            .iter()
            .any(|(t, v)| t.ends_with("/status") && v["state"] == "online")
    });
    counterfeit_parcel(&mut line, 1);
    let msgs = sub.wait_for(Duration::from_secs(30), "a report over TLS", |m| {
        m.iter().any(|(t, _)| t.ends_with("/reports/flagged"))
    });
    let report = json_of(&msgs)
        .into_iter()
        .find(|(t, _)| t.ends_with("/reports/flagged"))
        .map(|(_, v)| v)
        .expect("a report over TLS");
    assert_eq!(report["decision"], "flag");
    assert_eq!(report["waybill"], "SF3000000000001");
    // A client without a certificate is turned away by the broker.
    let ca = certs.join("ca.pem");
    let anon = mosquitto_pub(port, "x", "y", &["--cafile", &ca.to_string_lossy()]);
    assert!(
        !anon.status.success(),
        "the broker requires client certificates"
    );
    app.stop_cleanly(Duration::from_secs(15));
    line.shutdown();
}

/// The JSON Schemas in docs/schemas, compiled, and the AsyncAPI document that names them.
struct Schemas(std::collections::BTreeMap<String, jsonschema::Validator>);

impl Schemas {
    fn load() -> Schemas {
        let docs = Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs");
        let asyncapi = std::fs::read_to_string(docs.join("asyncapi.yaml")).expect("asyncapi.yaml");
        let mut map = std::collections::BTreeMap::new();
        for name in [
            "report",
            "status",
            "stats",
            "cmd",
            "cmd-payload",
            "cmd-result",
            "evidence",
            "evidence-part",
        ] {
            let file = docs.join(format!("schemas/{name}.schema.json"));
            let text = std::fs::read_to_string(&file).expect("schema file");
            let schema: Value = serde_json::from_str(&text).expect("schema JSON");
            assert_eq!(
                schema["$schema"],
                "https://json-schema.org/draft/2020-12/schema"
            );
            let validator = jsonschema::draft202012::new(&schema)
                .unwrap_or_else(|e| panic!("{}: {e}", file.display()));
            if name != "cmd-payload" {
                assert!(
                    asyncapi.contains(&format!("./schemas/{name}.schema.json")),
                    "asyncapi.yaml does not name {name}.schema.json"
                );
            }
            map.insert(name.to_owned(), validator);
        }
        Schemas(map)
    }

    /// Validates `v` against the schema `name`; panics with every error.
    fn validate(&self, name: &str, v: &Value) {
        let errors: Vec<String> = self.0[name]
            .iter_errors(v)
            .map(|e| format!("{} at {}", e, e.instance_path()))
            .collect();
        assert!(errors.is_empty(), "{name}: {errors:#?}\n{v}");
    }

    /// Validates a message by its topic; returns which schema it matched.
    fn check(&self, topic: &str, v: &Value) -> &'static str {
        let rest = topic
            .strip_prefix(&format!("{ROOT}/"))
            .expect("under the root");
        let name = match rest {
            "reports/flagged" => "report",
            "status" => "status",
            "stats" => "stats",
            "cmd-result" => "cmd-result",
            r if r.starts_with("evidence/") => "evidence",
            other => panic!("a topic the AsyncAPI document does not describe: {other}"),
        };
        self.validate(name, v);
        name
    }
}

/// The README's recipe: a regulator with nothing but the `openssl` command line makes a key,
/// gives the appliance its public key and signs a command the appliance accepts.
#[test]
fn a_command_signed_with_the_openssl_cli_as_the_readme_shows_verifies() {
    let dir = TempDir::new("regulator-openssl");
    let sh = |script: &str| -> String {
        let out = Command::new("sh")
            .arg("-c")
            .arg(script)
            .current_dir(dir.path())
            .output()
            .expect("sh");
        assert!(
            out.status.success(),
            "{script}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    };
    sh("openssl genpkey -algorithm ed25519 -out regulator.pem");
    let public_key =
        sh("openssl pkey -in regulator.pem -pubout -outform DER | tail -c 32 | base64");
    let p = payload(
        "thresholds",
        SystemTime::now(),
        "ossl-0001",
        json!({"medicine": 0.65}),
    );
    std::fs::write(dir.path().join("payload.json"), &p).expect("payload");
    let signature =
        sh("openssl pkeyutl -sign -inkey regulator.pem -rawin -in payload.json | base64 -w0");
    let envelope =
        json!({"schema": "screenline.cmd.v1", "payload": p, "signature": signature}).to_string();
    let verifier = screenline::report::commands::Verifier {
        key: Some(screenline::report::commands::parse_public_key(&public_key).expect("public key")),
        site_id: "T1".into(),
        appliance_id: "a1".into(),
        max_age: Duration::from_secs(300),
        max_future: Duration::from_secs(60),
    };
    let (_, verified) = verifier.verify(envelope.as_bytes(), "thresholds", SystemTime::now());
    let verified = verified.expect("an openssl signature verifies");
    assert_eq!(verified.nonce, "ossl-0001");
    let tampered = envelope.replace("0.65", "0.99");
    let (_, refused) = verifier.verify(tampered.as_bytes(), "thresholds", SystemTime::now());
    assert_eq!(refused.map_err(|e| e.key()), Err("bad_signature"));
}

/// A flagged dual-energy parcel: the report hashes exactly the two files the X-ray machine
/// wrote, the store archives exactly those bytes, and the evidence command sends them —
/// every SHA-256 agrees, and nothing was re-encoded on the way.
#[test]
fn a_dual_energy_reports_hashes_are_those_of_what_is_archived_and_sent_as_evidence() {
    let site = Site::start("regulator-pair");
    let port = site.port;
    let Regulated {
        feed:
            Feed {
                results,
                reports,
                evidence,
                ..
            },
        regulator,
        mut line,
        data,
        // Bound, so that the appliance runs until the test ends.
        app: _app,
        ..
    } = regulated(&site, |c| c);
    // The sender is watch-listed: the parcel is flagged whatever the model says.
    let watchlist = json!({"version": "pair-1", "id_numbers": ["11010519491231002X"]});
    let (_, answer) = send_watchlist(
        port,
        &regulator,
        &results,
        watchlist,
        SystemTime::now(),
        "wl-00000011",
    );
    assert_eq!(answer["ok"], true, "{answer}");

    let waybill = "SF4000000000001";
    line.read(&valid_waybill(waybill));
    line.place(400);
    let written = line.dual_scan("pair-1", 77);
    let msgs = reports.wait_for(Duration::from_secs(30), "the flagged report", |m| {
        !m.is_empty()
    });
    let report: Value = serde_json::from_str(&msgs[0].1).expect("report JSON");
    let schemas = Schemas::load();
    schemas.validate("report", &report);
    let ev_hashes = (
        report["evidence"]["image_sha256"]
            .as_str()
            .map(str::to_owned),
        report["evidence"]["low_energy_sha256"]
            .as_str()
            .map(str::to_owned),
    );
    assert_eq!(
        ev_hashes,
        (Some(written[0].clone()), Some(written[1].clone())),
        "the report hashes the files as written: {report}"
    );
    // What is archived is those files, byte for byte.
    let archived: Vec<String> = ["high", "low"]
        .iter()
        .map(|half| {
            let file = std::fs::read_dir(data.join("images"))
                .expect("images")
                .filter_map(Result::ok)
                .map(|e| e.path())
                .find(|p| p.to_string_lossy().ends_with(&format!(".{half}.png")))
                .unwrap_or_else(|| panic!("no archived {half} half"));
            hex::encode(Sha256::digest(std::fs::read(file).expect("archived")))
        })
        .collect();
    assert_eq!(archived, written, "archived as written");

    let report_id = report["report_id"].as_str().expect("report id");
    ask_evidence(port, &regulator, "ev-00000012", report_id);
    let ev = evidence.wait_for(Duration::from_secs(10), "the evidence", |m| !m.is_empty());
    let ev: Value = serde_json::from_str(&ev[0].1).expect("evidence JSON");
    schemas.validate("evidence", &ev);
    let decoded = |v: &Value| {
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(v["image_base64"].as_str().expect("image"))
            .expect("base64");
        assert_eq!(
            hex::encode(Sha256::digest(&bytes)),
            v["image_sha256"],
            "{v}"
        );
        hex::encode(Sha256::digest(&bytes))
    };
    assert_eq!(
        vec![decoded(&ev), decoded(&ev["low_energy"])],
        written,
        "the evidence sends the files the report hashed"
    );
    assert_eq!(ev["format"], "png");
    assert_eq!(ev["low_energy"]["format"], "png");
}

/// The size of a folder's files, in bytes.
fn folder_bytes(dir: &Path) -> u64 {
    std::fs::read_dir(dir)
        .map(|rd| {
            rd.flatten()
                .map(|e| match e.metadata() {
                    Ok(m) if m.is_dir() => folder_bytes(&e.path()),
                    Ok(m) => m.len(),
                    Err(_) => 0,
                })
                .sum()
        })
        .unwrap_or(0)
}

/// Anyone who can publish on the broker floods the command topics — escape-heavy messages up
/// to the packet limit, forged signatures over large payloads, thousands of small ones — and
/// none of it drops the feed's connection, takes the status offline, or grows the database
/// by 1 MB. The broker is set up as the deployment guide says (packets over 8 MiB refused).
#[test]
fn a_command_flood_neither_drops_the_link_nor_fills_the_disk() {
    let dir = TempDir::new("cmd-flood");
    let port = free_port();
    let _broker = start_mosquitto_as_deployed(dir.path(), port);
    let status = Sub::start(dir.path(), port, &format!("{ROOT}/status"));
    let results = Sub::start(dir.path(), port, &format!("{ROOT}/cmd-result"));
    let (_, regulator_config) = new_regulator();
    let data = dir.path().join("data");
    let mut rig = common::rig::Rig::start_with(dir.path(), &data, port, &[], &regulator_config);
    status.wait_state(Duration::from_secs(30), "online");
    let console = rig.console;
    // Let start-up writes settle before measuring the database.
    std::thread::sleep(Duration::from_secs(2));
    let db_before = folder_bytes(&data.join("db"));

    // Escape-heavy: quotes, backslashes and control characters, which JSON escaping would
    // blow up six-fold were any of it echoed.
    const LIMIT: usize = 8 << 20;
    let nasty: String = "\"\\\u{1}\u{7f}<&>".repeat((LIMIT - 4096) >> 3);
    let impostor = SigningKey::from_bytes(&rand::random::<[u8; 32]>());
    let mut messages: Vec<(String, Vec<u8>)> = Vec::new();
    for i in 0..6 {
        // Not even JSON, just under the limit.
        messages.push((format!("{ROOT}/cmd/watchlist"), nasty.clone().into_bytes()));
        // A well-formed envelope, as large as fits, signed by someone else.
        let forged = (1..)
            .map(|k| {
                let ids = &nasty[..nasty.len() * 3 / 8 / k];
                let body = json!({"version": format!("v{i}"), "id_numbers": [ids]});
                signed_command(
                    &impostor,
                    "watchlist",
                    SystemTime::now(),
                    &format!("flood-{i:08}"),
                    body,
                )
            })
            .find(|m| m.len() + 256 < LIMIT)
            .expect("an envelope under the limit");
        messages.push((format!("{ROOT}/cmd/watchlist"), forged.into_bytes()));
    }
    for i in 0..3000 {
        let topic = if i % 3 == 0 {
            format!("{ROOT}/cmd/{}", "x".repeat(i % 200))
        } else {
            format!("{ROOT}/cmd/thresholds")
        };
        messages.push((topic, nasty.as_bytes()[..1024 + i % 512].to_vec()));
    }
    let sent = messages.len() as u64;
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    rt.block_on(async {
        let mut opts = rumqttc::MqttOptions::new("flooder", "127.0.0.1", port);
        opts.set_max_packet_size(16 << 20, 16 << 20)
            .set_inflight(100)
            .set_keep_alive(Duration::from_secs(30));
        let (client, mut eventloop) = rumqttc::AsyncClient::new(opts, 64);
        let pump = tokio::spawn(async move {
            let mut acked = 0u64;
            while acked < sent {
                match eventloop.poll().await {
                    Ok(rumqttc::Event::Incoming(rumqttc::Packet::PubAck(_))) => acked += 1,
                    Ok(_) => {}
                    Err(e) => panic!("the flooder lost its broker: {e}"),
                }
            }
        });
        for (topic, body) in messages {
            client
                .publish(topic, rumqttc::QoS::AtLeastOnce, false, body)
                .await
                .expect("publish");
        }
        tokio::time::timeout(Duration::from_secs(300), pump)
            .await
            .expect("the broker took the flood")
            .expect("pump");
    });
    // Every message that reached the appliance is refused, by the worker or as busy (the
    // broker itself drops what exceeds its queue for a slow subscriber): wait until the
    // count stops moving.
    let refused = || {
        metric(
            console,
            "screenline_regulator_commands_total{result=\"refused\"}",
        )
        .unwrap_or(0)
    };
    let deadline = Instant::now() + Duration::from_secs(300);
    let (mut last, mut since) = (refused(), Instant::now());
    while since.elapsed() < Duration::from_secs(5) {
        assert!(
            Instant::now() < deadline,
            "refusals never settled\n{}",
            rig.app.log_text()
        );
        std::thread::sleep(Duration::from_millis(200));
        let now = refused();
        if now != last {
            (last, since) = (now, Instant::now());
        }
    }
    let refused = last;
    assert!(
        refused >= 100 && refused <= sent,
        "{refused} of {sent} refused"
    );
    assert_eq!(
        metric(
            console,
            "screenline_regulator_commands_total{result=\"accepted\"}"
        )
        .unwrap_or(0),
        0
    );
    assert_eq!(
        metric(console, "screenline_feed_connection_errors_total").unwrap_or(0),
        0,
        "the feed's connection dropped\n{}",
        rig.app.log_text()
    );
    assert!(
        !status.messages().iter().any(|(_, p)| p.contains("offline")),
        "the status went offline: {:?}",
        status.messages()
    );
    // Answers echo nothing of what came.
    let answers = results.messages();
    assert!(!answers.is_empty());
    assert!(
        answers
            .iter()
            .all(|(_, p)| p.len() < 1024 && !p.contains("flood-")),
        "{:?}",
        &answers[..3.min(answers.len())]
    );
    let db_after = folder_bytes(&data.join("db"));
    println!(
        "command flood: {sent} messages ({} MB) sent, {refused} reached the appliance and were refused, {} answers; database {} → {} bytes ({:+} bytes); busy refusals {:?}",
        (12 * nasty.len() + 3000 * 1300) >> 20,
        answers.len(),
        db_before,
        db_after,
        db_after as i64 - db_before as i64,
        metric(console, "screenline_regulator_commands_refused_total{reason=\"busy\"}"),
    );
    assert!(
        db_after < db_before + (1 << 20),
        "the database grew from {db_before} to {db_after} bytes"
    );
    rig.app.stop_cleanly(Duration::from_secs(30));
    // The refusals are in the audit log, sampled: a few entries, not thousands.
    let store = screenline::store::Store::open(&data).expect("store");
    let audit = store
        .audit_log(usize::MAX, |e| e.action.starts_with("cmd."))
        .expect("audit");
    assert!(
        !audit.is_empty() && audit.len() <= 20,
        "{} audit entries",
        audit.len()
    );
    assert!(audit.iter().all(|e| e.detail.len() < 1024));
    assert_eq!(
        store
            .durable_counters()
            .expect("counters")
            .get(&screenline::telemetry::Counter::CommandsRefused)
            .copied(),
        Some(refused),
        "every refusal counted in the store"
    );
}
