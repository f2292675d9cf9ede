//! Split shipments across a site: three real appliances (`screenline run`, each on its own
//! simulated line) share pseudonymous sightings over a real Mosquitto, checked by an
//! independent `mosquitto_sub`.
//!
//! 1. One sender sends six parcels of one category spread over the three appliances, a
//!    second or more apart: the fifth and the sixth are flagged `split_shipment` wherever
//!    they arrive, and the reason says how many were seen here and on other appliances.
//! 2. The same with the broker down while parcels are screened (and restarted).
//! 3. The same with one appliance SIGKILLed and restarted while its peers go on: it catches
//!    up on what they published meanwhile (its persistent session).
//! 4. Sightings carry no personal data: no ID number, phone or name the test generated, and
//!    `sender_key` is no unkeyed hash (SHA-256, MD5) of any ID.
//! 5. A flood of 100 000 malformed, 100 000 unauthenticated and 100 000 authenticated
//!    sightings from a listed peer: the appliance keeps screening, its memory and its ledger
//!    stay bounded, and the counters say what happened.
//! 6. `screenline demo --appliances 3` catches a split shipment across the appliances in its
//!    first minute.

mod common;

use common::rig::{Line, Rig};
use common::*;
use rand::{Rng, SeedableRng};
use screenline_core::sighting::{Seen, Sighting, SiteKey, SiteKeys};
use screenline_protocol::Verdict;
use sha2::{Digest, Sha256};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime};

const SITE: &str = "T1";
const IDS: [&str; 3] = ["a1", "a2", "a3"];

/// Each test runs three appliances: one test at a time.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn one_at_a_time() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

/// A resident ID number that passes GB 11643 (area, birth date, MOD 11-2 check character).
fn resident_id(rng: &mut impl Rng) -> String {
    let body = format!(
        "110105{}{:02}{:02}{:03}",
        rng.gen_range(1950..2000),
        rng.gen_range(1..=12),
        rng.gen_range(1..=28),
        rng.gen_range(0..1000)
    );
    const W: [u32; 17] = [7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2];
    let sum: u32 = body
        .bytes()
        .zip(W)
        .map(|(b, w)| u32::from(b - b'0') * w)
        .sum();
    let check = b"10X98765432"[(sum % 11) as usize] as char;
    format!("{body}{check}")
}

/// One generated sender: everything personal the test must never see in a sighting.
struct Sender {
    name: String,
    id: String,
    phone: String,
}

fn sender(rng: &mut impl Rng) -> Sender {
    const FAMILY: [&str; 6] = ["王", "李", "张", "刘", "陈", "杨"];
    const GIVEN: [&str; 6] = ["伟", "芳", "娜", "敏", "静", "磊"];
    Sender {
        name: format!(
            "{}{}{}",
            FAMILY[rng.gen_range(0..6)],
            GIVEN[rng.gen_range(0..6)],
            GIVEN[rng.gen_range(0..6)]
        ),
        id: resident_id(rng),
        phone: format!("139{:08}", rng.gen_range(0..100_000_000u32)),
    }
}

/// A reader record of one parcel of electronics from `s`.
fn waybill(no: &str, s: &Sender) -> String {
    serde_json::json!({
        "waybill": no,
        "sender": {"name": s.name, "id_type": "resident_id", "id_number": s.id,
                   "phone": s.phone, "address": "北京市朝阳区某某路1号"},
        "recipient": {"name": "赵六", "phone": "13700137001", "address": "上海市长宁区某某路2号"},
        "declared": {"goods": "蓝牙耳机", "category": "electronics", "value_cny": 399.0, "quantity": 1},
        "weight_g": 850,
        "agreement_customer": null
    })
    .to_string()
}

/// The site key file, readable by its owner only.
fn key_file(dir: &Path, key: &[u8; 32]) -> PathBuf {
    use base64::Engine;
    use std::os::unix::fs::PermissionsExt;
    let f = dir.join("site.key");
    std::fs::write(&f, base64::engine::general_purpose::STANDARD.encode(key)).expect("key");
    std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    f
}

/// The `[site]` section of appliance `me`.
fn site_section(key: &Path, me: &str, extra: &str) -> String {
    let peers: Vec<String> = IDS
        .iter()
        .filter(|i| **i != me)
        .map(|i| format!("{i:?}"))
        .collect();
    format!(
        "\n[site]\nkey_file = \"{}\"\npeers = [{}]\n{extra}",
        key.display(),
        peers.join(", ")
    )
}

/// Starts appliance `me` on `line`, its data in `dir/data`.
fn start(line: Line, dir: &Path, broker: u16, key: &Path, me: &str, extra: &str) -> Rig {
    let data = dir.join("data");
    Rig::on(line, dir, &data, broker, &[], |c| {
        c.replace("appliance_id = \"a1\"", &format!("appliance_id = \"{me}\""))
            + &site_section(key, me, extra)
    })
}

/// Restarts appliance `me` on the line it had, with the same data.
fn restart(rig: Rig, dir: &Path, broker: u16, key: &Path, me: &str) -> Rig {
    let Rig { line, app, .. } = rig;
    drop(app);
    start(line, dir, broker, key, me, "")
}

/// The site: a persistent Mosquitto (so that a restart keeps sessions), three appliances.
struct Site3 {
    dir: TempDir,
    port: u16,
    broker: Option<Proc>,
    key: PathBuf,
    rigs: Vec<Rig>,
    /// Parcels each appliance's line has had.
    seqs: [u32; 3],
    /// Peers' sightings each appliance has folded since it started.
    received: [u64; 3],
    /// Appliances down (killed).
    down: [bool; 3],
}

impl Site3 {
    fn start(tag: &str) -> Site3 {
        let dir = TempDir::new(tag);
        let port = free_port();
        let broker = start_mosquitto_persistent(dir.path(), port);
        let key = key_file(dir.path(), &rand::random());
        let rigs = IDS
            .iter()
            .map(|me| {
                let d = dir.path().join(me);
                std::fs::create_dir_all(&d).expect("dir");
                start(Line::start(&d), &d, port, &key, me, "")
            })
            .collect();
        let site = Site3 {
            dir,
            port,
            broker: Some(broker),
            key,
            rigs,
            seqs: [0; 3],
            received: [0; 3],
            down: [false; 3],
        };
        for i in 0..3 {
            site.wait_metric(i, "screenline_link_up{device=\"broker\"}", 1);
        }
        site
    }

    fn app_dir(&self, i: usize) -> PathBuf {
        self.dir.path().join(IDS[i])
    }

    fn stop_broker(&mut self) {
        if let Some(mut b) = self.broker.take() {
            terminate(&mut b);
        }
    }

    fn start_broker(&mut self) {
        self.broker = Some(start_mosquitto_persistent(self.dir.path(), self.port));
    }

    /// Waits until appliance `i`'s `/metrics` shows `name` at `at_least` or more.
    fn wait_metric(&self, i: usize, name: &str, at_least: u64) {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if metric(self.rigs[i].console, name).is_some_and(|v| v >= at_least) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{}: {name} never reached {at_least}; log:\n{}",
                IDS[i],
                self.rigs[i].app.log_text()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// One parcel from `s` on appliance `i`'s line; waits for its decision and returns it.
    fn parcel(&mut self, i: usize, no: &str, s: &Sender, seed: u64) -> Verdict {
        self.seqs[i] += 1;
        let seq = self.seqs[i];
        let rig = &mut self.rigs[i];
        rig.line.read(&waybill(no, s));
        rig.line.place(400);
        rig.line.scan(&format!("scan-{no}"), no, false, seed);
        rig.wait(Duration::from_secs(30), &format!("{no}'s decision"), |seen| {
            seen.iter().any(|e| {
                matches!(e, screenline_emulator::LineEvent::DecisionReceived { seq: q, .. } if *q == seq)
            })
        });
        if rig.line.decided_as(seq, Verdict::Divert) {
            Verdict::Divert
        } else {
            Verdict::Pass
        }
    }
}

/// The six parcels of one sender over the three appliances (`0, 1, 2, 0, 1, 2`), each at
/// least a second after the one before, and after every peer up has folded its sighting;
/// `before(site, k)` runs before parcel `k` (0-based) and `after(site, k)` once it is
/// decided. Checks the fifth and sixth are flagged `split_shipment`, with the counts of where
/// they were seen, at an independent durable subscriber; the first four pass.
fn six_parcels(
    site: &mut Site3,
    tag: &str,
    before: impl Fn(&mut Site3, usize),
    after: impl Fn(&mut Site3, usize),
) -> Sender {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(tag.len() as u64 * 7919);
    let s = sender(&mut rng);
    let flagged = Sub::durable(
        site.dir.path(),
        site.port,
        &format!("screenline/v1/{SITE}/+/reports/flagged"),
        &format!("regulator-{tag}"),
    );
    for k in 0..6 {
        before(site, k);
        let i = k % 3;
        let no = format!("SL{}{k:02}0000001", tag.to_uppercase());
        let started = Instant::now();
        let verdict = site.parcel(i, &no, &s, 12);
        let expect = if k >= 4 {
            Verdict::Divert
        } else {
            Verdict::Pass
        };
        assert_eq!(verdict, expect, "parcel {} on {}", k + 1, IDS[i]);
        after(site, k);
        // Every peer up has folded this parcel's sighting before the next parcel.
        for j in 0..3 {
            if j != i {
                site.received[j] += 1;
                if !site.down[j] {
                    site.wait_metric(j, "screenline_sightings_received_total", site.received[j]);
                }
            }
        }
        let spent = started.elapsed();
        if spent < Duration::from_secs(1) {
            std::thread::sleep(Duration::from_secs(1) - spent);
        }
    }
    let reports = flagged.wait_for(Duration::from_secs(60), "two flagged reports", |m| {
        m.iter()
            .filter(|(_, p)| p.contains("split_shipment"))
            .count()
            >= 2
    });
    for (k, here, elsewhere) in [(4, 2, 3), (5, 2, 4)] {
        let no = format!("SL{}{k:02}0000001", tag.to_uppercase());
        let (topic, body) = reports
            .iter()
            .find(|(_, p)| p.contains(&no))
            .unwrap_or_else(|| panic!("no report of parcel {}", k + 1));
        assert!(topic.contains(&format!("/{}/", IDS[k % 3])), "{topic}");
        let v: serde_json::Value = serde_json::from_str(body).expect("report JSON");
        let reason = v["reasons"]
            .as_array()
            .and_then(|r| r.iter().find(|r| r["code"] == "split_shipment"))
            .unwrap_or_else(|| panic!("parcel {}: {body}", k + 1));
        let en = reason["en"].as_str().unwrap_or_default();
        assert!(
            en.contains(&format!("sent {} parcels", k + 1))
                && en.contains(&format!(
                    "{here} on this appliance, {elsewhere} on other appliances"
                )),
            "parcel {}: {en}",
            k + 1
        );
        let zh = reason["zh"].as_str().unwrap_or_default();
        assert!(
            zh.contains(&format!("本机 {here} 件，站点其他设备 {elsewhere} 件")),
            "{zh}"
        );
    }
    s
}

/// [`six_parcels`] tagged `tag` on a site of its own (`sightings-{tag}`), one test at a time.
fn six_parcels_on_a_new_site(
    tag: &str,
    before: impl Fn(&mut Site3, usize),
    after: impl Fn(&mut Site3, usize),
) {
    let _one = one_at_a_time();
    let mut site = Site3::start(&format!("sightings-{tag}"));
    six_parcels(&mut site, tag, before, after);
}

#[test]
fn the_fifth_parcel_of_a_sender_is_flagged_on_whichever_appliance_it_reaches() {
    let _one = one_at_a_time();
    let mut site = Site3::start("sightings-plain");
    let sightings = site.dir.path().to_owned();
    let all = Sub::start(
        &sightings,
        site.port,
        &format!("screenline/v1/{SITE}/+/sightings"),
    );
    let s = six_parcels(&mut site, "plain", |_, _| {}, |_, _| {});
    // Six sightings, one per parcel, each from the appliance that screened it.
    let msgs = all.wait_for(Duration::from_secs(30), "six sightings", |m| m.len() >= 6);
    assert_eq!(msgs.len(), 6, "{msgs:#?}");
    no_personal_data(&msgs, &[s]);
    // As docs/schemas and the AsyncAPI document describe them.
    let docs = Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs");
    let asyncapi = std::fs::read_to_string(docs.join("asyncapi.yaml")).expect("asyncapi");
    assert!(asyncapi.contains("./schemas/sighting.schema.json"));
    let schema: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(docs.join("schemas/sighting.schema.json")).expect("schema"),
    )
    .expect("schema JSON");
    let validator = jsonschema::draft202012::new(&schema).expect("a valid schema");
    for (k, (topic, body)) in msgs.iter().enumerate() {
        let v: serde_json::Value = serde_json::from_str(body).expect("JSON");
        let errors: Vec<String> = validator.iter_errors(&v).map(|e| e.to_string()).collect();
        assert!(errors.is_empty(), "{topic}: {errors:?}\n{body}");
        assert!(
            topic.ends_with(&format!("/{}/sightings", IDS[k % 3])),
            "{topic}"
        );
        assert_eq!(v["appliance_id"], IDS[k % 3]);
        assert_eq!(v["category"], "electronics");
    }
    let ids: std::collections::HashSet<&str> = msgs
        .iter()
        .map(|(_, b)| b.split("\"sender_key\":\"").nth(1).unwrap_or_default())
        .map(|rest| rest.split('"').next().unwrap_or_default())
        .collect();
    assert_eq!(
        ids.len(),
        1,
        "one sender, one sender key on every appliance"
    );
}

#[test]
fn a_broker_outage_delays_sightings_and_loses_none() {
    // The broker goes away before the second and the fifth parcel: each is decided all the
    // same, its sighting waits on disk, and reaches the peers once the broker is back.
    let outage = |k| k == 1 || k == 4;
    six_parcels_on_a_new_site(
        "broker",
        |site, k| {
            if outage(k) {
                site.stop_broker();
            }
        },
        |site, k| {
            if outage(k) {
                site.start_broker();
            }
        },
    );
}

#[test]
fn an_appliance_killed_and_restarted_catches_up_on_its_peers_sightings() {
    six_parcels_on_a_new_site(
        "kill",
        |site, k| {
            if k == 2 {
                // a2 dies hard after its first parcel; its peers go on.
                let _ = site.rigs[1].app.proc.0.kill();
                let _ = site.rigs[1].app.proc.0.wait();
                site.down[1] = true;
            }
            if k == 4 {
                // Back before the fifth parcel, which reaches it: it must count the two
                // parcels its peers screened while it was down (its persistent session).
                let rig = site.rigs.remove(1);
                let dir = site.app_dir(1);
                let rig = restart(rig, &dir, site.port, &site.key.clone(), IDS[1]);
                site.rigs.insert(1, rig);
                site.down[1] = false;
                site.received[1] = 2;
                site.wait_metric(1, "screenline_sightings_received_total", 2);
                site.wait_metric(
                    1,
                    "screenline_link_up{line=\"L1\",device=\"controller\"}",
                    1,
                );
            }
        },
        |_, _| {},
    );
}

/// No sighting holds anything personal of `senders`, and no sender key is an unkeyed hash.
fn no_personal_data(msgs: &[(String, String)], senders: &[Sender]) {
    for (topic, body) in msgs {
        let v: serde_json::Value = serde_json::from_str(body).expect("sighting JSON");
        assert_eq!(v["schema"], "screenline.sighting.v1");
        let key = v["sender_key"].as_str().expect("sender_key");
        for s in senders {
            for secret in [
                &s.id[..],
                &s.phone[..],
                &s.name[..],
                &s.id[..14],
                &s.phone[3..],
            ] {
                assert!(!body.contains(secret), "{topic}: {body}");
            }
            for unkeyed in [
                hex::encode(Sha256::digest(s.id.as_bytes())),
                md5_hex(&s.id),
                hex::encode(Sha256::digest(s.phone.as_bytes())),
            ] {
                assert_ne!(key, unkeyed, "sender_key is an unkeyed hash");
                assert!(!body.contains(&unkeyed));
            }
        }
    }
}

/// MD5 (hex) by the system's `md5sum`, an independent implementation.
fn md5_hex(s: &str) -> String {
    let out = run_with_input(&mut Command::new("md5sum"), s.as_bytes(), "coreutils");
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .unwrap_or_default()
        .to_owned()
}

#[test]
fn a_flood_of_sightings_is_refused_counted_and_bounded() {
    let _one = one_at_a_time();
    let dir = TempDir::new("sightings-flood");
    let port = free_port();
    let _broker = start_mosquitto_persistent(dir.path(), port);
    let raw: [u8; 32] = rand::random();
    let key = key_file(dir.path(), &raw);
    let (rate, burst) = (200u64, 1000u64);
    let mut rig = start(
        Line::start(dir.path()),
        dir.path(),
        port,
        &key,
        "a1",
        &format!("peer_rate_per_s = {rate}\npeer_burst = {burst}\n"),
    );
    let console = rig.console;
    let wait_metric = |name: &str, at_least: u64, rig: &Rig| {
        let deadline = Instant::now() + Duration::from_secs(120);
        while metric(console, name).unwrap_or(0) < at_least {
            assert!(
                Instant::now() < deadline,
                "{name} < {at_least}:\n{}",
                rig.app.log_text()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    };
    wait_metric("screenline_link_up{device=\"broker\"}", 1, &rig);
    let pid = rig.app.proc.0.id();
    let rss_before = rss_kib(pid);
    let keys = SiteKeys::new(SiteKey::new(raw.to_vec()).expect("key"), vec![]);
    let impostor = SiteKeys::new(
        SiteKey::new(rand::random::<[u8; 32]>().to_vec()).expect("key"),
        vec![],
    );
    let now = SystemTime::now();
    let sighting = |keys: &SiteKeys, n: u64| {
        Sighting::signed(
            keys,
            SITE,
            "a2",
            &Seen {
                identities: vec![format!("{n:064x}")],
                category: screenline::domain::Category::Electronics,
                at: now,
                line_id: "L1".into(),
                parcel: format!("flood-{n}"),
            },
        )
    };
    const N: u64 = 100_000;
    let mut flood = Vec::with_capacity(3 * N as usize);
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(5);
    for n in 0..N {
        // Malformed: junk, truncated JSON, wrong types, and now and then too large.
        let m = match n % 4 {
            0 => format!("junk-{n}"),
            1 => {
                let s = String::from_utf8(sighting(&keys, n).to_vec()).expect("utf-8");
                s[..s.len() / 2].to_owned()
            }
            2 => format!("{{\"schema\":\"screenline.sighting.v1\",\"sighting_id\":{n}}}"),
            _ if n % 100 == 3 => "x".repeat(2000),
            _ => format!("[{}]", rng.gen::<u32>()),
        };
        flood.push(m);
        // Unauthenticated: made with another key, or with ours but altered after signing.
        let forged = if n % 2 == 0 {
            sighting(&impostor, N + n)
        } else {
            let mut s = sighting(&keys, N + n);
            s.category = "food".into();
            s
        };
        flood.push(String::from_utf8(forged.to_vec()).expect("utf-8"));
        // Authenticated, from a listed peer, every one a new sender.
        flood.push(String::from_utf8(sighting(&keys, 2 * N + n).to_vec()).expect("utf-8"));
    }
    let started = Instant::now();
    // In chunks of 10 000, one `mosquitto_pub -l` each: a single one publishing far more than
    // that is disconnected by Mosquitto ("out of memory") and says nothing.
    let topic = format!("screenline/v1/{SITE}/a2/sightings");
    let feeder = std::thread::spawn(move || {
        for chunk in flood.chunks(10_000) {
            let mut publisher = Command::new("mosquitto_pub")
                .args(["-h", "127.0.0.1", "-p", &port.to_string(), "-q", "1"])
                .args(["-t", &topic, "-l"])
                .stdin(Stdio::piped())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("mosquitto_pub");
            let mut stdin = publisher.stdin.take().expect("stdin");
            let mut text = chunk.join("\n");
            text.push('\n');
            stdin.write_all(text.as_bytes()).expect("publish");
            drop(stdin);
            assert!(publisher.wait().expect("mosquitto_pub").success());
        }
    });
    // Screening goes on under the flood.
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(9);
    let s = sender(&mut rng);
    for k in 0..3u32 {
        rig.line.read(&waybill(&format!("SLFLOOD{k:02}000001"), &s));
        rig.line.place(400);
        rig.line.scan(
            &format!("scan-f{k}"),
            &format!("SLFLOOD{k:02}000001"),
            false,
            12,
        );
        rig.wait(Duration::from_secs(30), "a decision under the flood", |seen| {
            seen.iter().any(|e| {
                matches!(e, screenline_emulator::LineEvent::DecisionReceived { seq, .. } if *seq == k + 1)
            })
        });
    }
    feeder.join().expect("feeder");
    let refused = |why: &str| {
        metric(
            console,
            &format!("screenline_sightings_refused_total{{reason=\"{why}\"}}"),
        )
        .unwrap_or(0)
    };
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let malformed = refused("malformed") + refused("too_large");
        let unauthenticated = refused("unknown_key") + refused("bad_mac");
        let authenticated = metric(console, "screenline_sightings_received_total").unwrap_or(0)
            + refused("rate")
            + refused("ledger_full");
        if (malformed, unauthenticated, authenticated) == (N, N, N) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "counted {malformed} malformed, {unauthenticated} unauthenticated, {authenticated} authenticated of {N} each"
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    let elapsed = started.elapsed().as_secs() + 1;
    assert!(refused("too_large") > 0 && refused("unknown_key") > 0 && refused("bad_mac") > 0);
    let received = metric(console, "screenline_sightings_received_total").unwrap_or(0);
    assert!(received >= burst, "the peer's burst was taken: {received}");
    // The ledger grew by what the peer's rate allows, not by the flood.
    assert!(
        received <= burst + rate * elapsed,
        "{received} folded in {elapsed} s"
    );
    let ledger = metric(console, "screenline_split_ledger_keys").unwrap_or(0);
    assert!(ledger <= received + 3, "ledger {ledger}, folded {received}");
    assert!(refused("rate") > N / 2, "most were over the peer's rate");
    let rss_after = rss_kib(pid);
    assert!(
        rss_after < rss_before + 64 * 1024,
        "memory grew from {rss_before} KiB to {rss_after} KiB"
    );
    assert!(rig.app.is_running());
    println!(
        "flood: {N}×3 sightings counted; {received} folded; ledger {ledger} keys; VmRSS {rss_before} → {rss_after} KiB"
    );
}

/// `screenline demo --appliances 3`: three appliances on the embedded broker, one line each,
/// with the showcase's repeat sender spreading parcels over all three. Alone, each appliance
/// could flag at most two of its six repeat-sender parcels (the fifth and sixth): together
/// they flag more, and the demo says so within its first minute.
#[test]
fn the_demo_on_three_appliances_catches_a_split_shipment_across_them() {
    let _one = one_at_a_time();
    let dir = TempDir::new("sightings-demo");
    let started = Instant::now();
    let out = Command::new(env!("CARGO_BIN_EXE_screenline"))
        .args([
            "demo",
            "--appliances",
            "3",
            "--parcels",
            "30",
            "--console",
            "127.0.0.1:0",
        ])
        .env("RUST_LOG", "warn")
        .current_dir(dir.path())
        .output()
        .expect("screenline demo");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let split: u64 = stdout
        .split("split_shipment ")
        .nth(1)
        .and_then(|r| r.split(|c: char| !c.is_ascii_digit()).next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no split shipment in the summary: {stdout}"));
    assert!(
        split > 6,
        "{split} split shipments: no more than three lone appliances catch\n{stdout}"
    );
    let first = stderr
        .lines()
        .find(|l| l.contains("split shipment across the site"))
        .unwrap_or_else(|| panic!("no split shipment across the site announced:\n{stderr}"));
    let secs: u64 = first
        .split_whitespace()
        .next()
        .and_then(|s| s.parse().ok())
        .expect("seconds");
    assert!(secs < 60, "{first}");
    assert!(first.contains("on other appliances of the site"), "{first}");
    println!(
        "demo: {first}; {split} split shipments in {:?}",
        started.elapsed()
    );
}
