//! `screenline demo`: the whole appliance on one machine with nothing attached.
//!
//! Each simulated line is the real firmware logic (the host emulator) behind a
//! pseudo-terminal, a waybill reader behind another, and an X-ray machine writing generated
//! images into a temporary drop folder. The appliance itself is exactly the one
//! `screenline run` starts, talking to those ports, an MQTT broker (embedded rumqttd unless
//! one is given) and serving the console. With `--appliances K`, K such appliances share
//! the one broker, the lines spread over them, and a site key: they share pseudonymous
//! sightings, so that a sender spreading parcels over their lines is caught as a split
//! shipment (`report/sightings.rs`).
//!
//! The X-ray machines ([`xray`]) are those of a real site: most do not know the waybill
//! ([`Sidecars`]), and line-sized ones write 16-bit pairs. The demo knows which scan it made
//! of which parcel ([`truth`]) and, after the run, counts every join the line got wrong.

pub mod traffic;
pub mod truth;
pub mod xray;

pub use xray::{ScanPool, Sidecar, Sidecars, IMAGE_DELAY};

use crate::app::Appliance;
use crate::config::{
    Config, ConsoleConfig, ControllerGeometry, LineConfig, ModelConfig, MqttConfig, RulesConfig,
};
use crate::domain::Decision;
use crate::line::waybill::Framing;
use crate::telemetry::Counter;
use anyhow::Context;
use base64::Engine;
use screenline_emulator::pty::Pty;
use screenline_emulator::{BeltConfig, LineEmulator};
use serde::Serialize;
use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

/// What the demo is asked to do.
#[derive(Debug, Clone)]
pub struct DemoOptions {
    pub parcels: Option<u64>,
    pub rate: f64,
    pub seed: u64,
    pub lines: usize,
    /// Appliances on the one broker (lines spread over them); more than one share sightings.
    pub appliances: usize,
    pub broker: Option<String>,
    pub console: SocketAddr,
    pub model_dir: Option<PathBuf>,
    pub mix: traffic::Mix,
    /// Keep the store here instead of in the run's temporary folder.
    pub data_dir: Option<PathBuf>,
    /// Sightings per second that simulated peer appliances of the site publish on the
    /// broker, signed with the site's key (0: none). For the decision-latency bench: the
    /// appliances fold them as they would a real site's.
    pub peer_sightings_per_s: f64,
}

/// The demo's X-ray machines (`--sidecars`, `--scanner`).
#[derive(Debug, Clone, Default)]
pub struct XrayMachines {
    /// Which sidecars they write.
    pub sidecars: Sidecars,
    /// What machine each line has: `Small` writes one pseudo-colour image per scan, the
    /// line-sized profiles 16-bit dual-energy pairs.
    pub scanner: xraygen::Scanner,
    /// Scans rendered beforehand ([`xray::ScanPool`], for benches): the machines drop
    /// copies of these, of the pool's scanner, instead of rendering each parcel's.
    pub pool: Option<Arc<xray::ScanPool>>,
}

/// The simulated peers that publish [`DemoOptions::peer_sightings_per_s`], each well within
/// the default per-peer rate.
const SIMULATED_PEERS: [&str; 4] = ["peer-01", "peer-02", "peer-03", "peer-04"];

/// The demo's closing summary (`--json` prints exactly this).
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Summary {
    pub parcels: u64,
    pub cleared: u64,
    pub flagged: u64,
    pub manual: u64,
    pub reports_acked: u64,
    /// Parcels per reason code, for the codes that occurred.
    pub reasons: std::collections::BTreeMap<String, u64>,
    /// From image complete to decision sent to the line controller (the latest 4096
    /// parcels), and how many decisions missed the parcel's decision point.
    pub decision_latency: Latency,
    /// Peers' sightings the appliances folded into their split-shipment ledgers.
    pub sightings_folded: u64,
    /// Stored records of this run held against what the demo knows it put on the belt.
    pub joins_checked: u64,
    /// Stored records that carry another parcel's scan or waybill, against what the demo
    /// knows it put on the belt ([`truth::Truth::audit`]).
    pub wrong_joins: u64,
    /// Parcels sent to manual inspection as `no_read` or `no_image` although their code was
    /// read and their scan written: their read and scan could not be joined safely.
    pub unjoined_manual: u64,
    /// Scans the demo's X-ray generator completed over 50 ms after their due time (this
    /// computer could not render them in time), which a real machine does not do: joined by
    /// time, a late scan can look like the next parcel's and make a wrong join.
    pub scans_late: u64,
}

/// Decision latency figures, in microseconds.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Latency {
    pub p50_us: u64,
    pub p99_us: u64,
    pub max_us: u64,
    /// The budget: the belt time from image complete to the decision point.
    pub budget_us: u64,
    pub late: u64,
}

/// One simulated line: its ports, emulator and drop folder.
struct SimLine {
    id: String,
    reader: Pty,
    controller: Pty,
    emulator: Arc<Mutex<LineEmulator>>,
    /// The emulator's events, until the line's X-ray machine takes them.
    events: Option<std::sync::mpsc::Receiver<screenline_emulator::LineEvent>>,
    xray_dir: PathBuf,
}

/// A temporary folder removed when the demo ends.
struct TempDir(PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Starts rumqttd on a free loopback port; returns its `mqtt://` URL.
fn start_embedded_broker() -> anyhow::Result<String> {
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let config: rumqttd::Config = toml::from_str(&format!(
        r#"
id = 0
[router]
max_connections = 64
max_outgoing_packet_count = 200
max_segment_size = 104857600
max_segment_count = 10
[v4.1]
name = "demo"
listen = "127.0.0.1:{port}"
next_connection_delay_ms = 1
[v4.1.connections]
connection_timeout_ms = 60000
max_payload_size = 4194304
max_inflight_count = 100
dynamic_filters = true
"#
    ))
    .context("embedded broker configuration")?;
    std::thread::Builder::new()
        .name("rumqttd".into())
        .spawn(move || {
            let mut broker = rumqttd::Broker::new(config);
            if let Err(e) = broker.start() {
                tracing::error!(error = %e, "embedded broker stopped");
            }
        })?;
    Ok(format!("mqtt://127.0.0.1:{port}"))
}

/// Runs the demo with the default X-ray machines ([`XrayMachines::default`]: a mixed fleet
/// of small scanners); returns its summary.
pub async fn run(opts: DemoOptions, quiet: bool) -> anyhow::Result<Summary> {
    run_with(opts, XrayMachines::default(), quiet).await
}

/// Runs the demo with `machines` on its lines; returns its summary (after Ctrl-C, or after
/// `parcels` are decided and every report acknowledged).
pub async fn run_with(
    opts: DemoOptions,
    machines: XrayMachines,
    quiet: bool,
) -> anyhow::Result<Summary> {
    let root = std::env::temp_dir().join(format!(
        "screenline-demo-{}-{}",
        std::process::id(),
        SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map(|d| d.as_millis())
            .unwrap_or(0)
    ));
    std::fs::create_dir_all(&root)?;
    let tmp = TempDir(root.clone());

    let broker = match &opts.broker {
        Some(url) => url.clone(),
        None => start_embedded_broker()?,
    };

    let (belt, longest_mm) = belt_for(opts.rate)?;
    let mut lines = Vec::new();
    for k in 0..opts.lines.max(1) {
        let id = format!("L{}", k + 1);
        let reader = Pty::open().context("opening the reader pseudo-terminal")?;
        let controller = Pty::open().context("opening the controller pseudo-terminal")?;
        let mut emulator = LineEmulator::start(controller.master()?, belt.clone())
            .context("starting the line-controller emulator")?;
        let events = emulator
            .take_events()
            .context("the line-controller emulator's events")?;
        let xray_dir = root.join(format!("xray-{id}"));
        std::fs::create_dir_all(&xray_dir)?;
        lines.push(SimLine {
            id,
            reader,
            controller,
            emulator: Arc::new(Mutex::new(emulator)),
            events: Some(events),
            xray_dir,
        });
    }
    // Three quarters of the time between two parcels at the photo-eye (at most 150 and 200
    // ms, as on a slow line). A read or image off by under a quarter of that spacing has its
    // own parcel alone in the window; off by more, up to the window, its neighbour too, so it
    // joins neither (manual inspection); only one off by more than the window could join a
    // neighbour alone. A wide window is what keeps a loaded line from joining wrong.
    let spacing_ms = (1000.0 / opts.rate) as u64;
    let (read_window_ms, image_window_ms) =
        ((spacing_ms * 3 / 4).min(150), (spacing_ms * 3 / 4).min(200));

    let watchlist = root.join("watchlist.json");
    std::fs::write(&watchlist, traffic::watchlist(opts.seed).to_string())?;
    // The belt time from the photo-eye to the controller's decision point.
    let deadline_ms = u64::from(belt.eye_to_gate_mm - belt.decision_margin_mm) * 1000
        / u64::from(belt.belt_mm_per_s);
    // The demo is its own regulator: a fresh key pair, and one signed command ready to
    // publish, so a visitor can watch the appliance verify and apply it (`…/cmd-result`).
    let regulator = ed25519_dalek::SigningKey::from_bytes(&rand::random::<[u8; 32]>());
    let fleet = opts.appliances.max(1);
    let ids: Vec<String> = (1..=fleet).map(|a| format!("demo-{a:02}")).collect();
    // More than one appliance, or simulated peers: one site key shared by all, readable by
    // this user only.
    let site_key = root.join("site.key");
    let injected = opts.peer_sightings_per_s > 0.0;
    if fleet > 1 || injected {
        use std::os::unix::fs::OpenOptionsExt;
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&site_key)?;
        f.write_all(
            base64::engine::general_purpose::STANDARD
                .encode(rand::random::<[u8; 32]>())
                .as_bytes(),
        )?;
    }
    let data_root = opts.data_dir.clone().unwrap_or_else(|| root.join("data"));
    let config_of = |a: usize| Config {
        site_id: "DEMO".into(),
        appliance_id: ids[a].clone(),
        data_dir: if fleet == 1 {
            data_root.clone()
        } else {
            data_root.join(&ids[a])
        },
        model: ModelConfig {
            // Line-sized machines' pairs go to the detector, if it is installed.
            dir: opts.model_dir.clone().or_else(|| {
                machines
                    .scanner
                    .writes_pairs()
                    .then(crate::screen::model::default_detector_dir)
                    .flatten()
            }),
            ..ModelConfig::default()
        },
        mqtt: MqttConfig {
            url: broker.clone(),
            ..MqttConfig::default()
        },
        console: ConsoleConfig {
            listen: if a == 0 {
                opts.console
            } else {
                SocketAddr::from(([127, 0, 0, 1], 0))
            },
            ..ConsoleConfig::default()
        },
        rules: RulesConfig {
            watchlist_file: Some(watchlist.clone()),
            ..RulesConfig::default()
        },
        store: Default::default(),
        regulator: crate::config::RegulatorConfig {
            public_key: Some(
                base64::engine::general_purpose::STANDARD
                    .encode(regulator.verifying_key().to_bytes()),
            ),
            // Long enough that the sample command is still fresh an hour into the demo.
            max_age_s: 3600,
            ..Default::default()
        },
        site: (fleet > 1 || injected).then(|| {
            crate::config::SiteConfig::new(
                site_key.clone(),
                ids.iter()
                    .filter(|i| **i != ids[a])
                    .cloned()
                    .chain(
                        SIMULATED_PEERS
                            .iter()
                            .filter(|_| injected)
                            .map(|p| (*p).to_owned()),
                    )
                    .collect(),
            )
        }),
        lines: lines
            .iter()
            .enumerate()
            .filter(|(k, _)| k % fleet == a)
            .map(|(_, l)| LineConfig {
                id: l.id.clone(),
                reader_port: l.reader.slave_path().to_owned(),
                reader_baud: 9600,
                reader_framing: Framing::Line,
                controller_port: l.controller.slave_path().to_owned(),
                controller_baud: 115_200,
                xray_dir: l.xray_dir.clone(),
                quarantine_dir: None,
                xray_after: crate::config::XrayAfter::Keep,
                pair_wait_ms: 2000,
                // Leave a quarter of the belt time for screening a parcel whose read or
                // image never came.
                join_window_ms: 1500.min(deadline_ms * 3 / 4),
                read_window_ms,
                image_delay_ms: IMAGE_DELAY.as_millis() as u64,
                image_window_ms,
                decision_deadline_ms: deadline_ms,
                // The simulated belt's geometry, sent to its controller as a technician's
                // configuration would be.
                controller: Some(ControllerGeometry {
                    counts_per_mm: belt.counts_per_mm,
                    eye_to_gate_mm: belt.eye_to_gate_mm,
                    gate_width_mm: belt.gate_width_mm,
                    decision_margin_mm: belt.decision_margin_mm,
                    debounce_mm: belt.debounce_mm,
                    heartbeat_timeout_ms: belt.heartbeat_timeout_ms,
                }),
            })
            .collect(),
    };
    let configs: Vec<Config> = (0..fleet).map(config_of).collect();
    let data_dirs: Vec<PathBuf> = configs.iter().map(|c| c.data_dir.clone()).collect();
    let topic_root = configs[0].topic_root();
    // Console users for this run, with fresh passwords (printed below), on every appliance.
    let mut logins = Vec::new();
    let mut accounts = Vec::new();
    for (name, role) in [
        ("operator", crate::console::auth::Role::Operator),
        ("technician", crate::console::auth::Role::Technician),
    ] {
        let password = format!(
            "{name}-{:04x}-{:04x}",
            rand::random::<u16>(),
            rand::random::<u16>()
        );
        logins.push(format!("{name} / {password}"));
        accounts.push((name, role, password));
    }
    for c in &configs {
        let users = crate::console::auth::Users::in_data_dir(&c.data_dir);
        for (name, role, password) in &accounts {
            users.set(name, *role, password)?;
        }
    }
    let sample_command = root.join("cmd-thresholds.json");
    std::fs::write(
        &sample_command,
        demo_command(&regulator, &configs[0], SystemTime::now()),
    )?;
    let mut appliances = Vec::new();
    for c in configs {
        appliances.push(Appliance::start(c).await?);
    }
    let addr = crate::config::parse_broker_url(&broker).map_err(anyhow::Error::msg)?;
    let peers = if injected {
        let key = std::fs::read_to_string(&site_key)?;
        let keys = screenline_core::sighting::SiteKeys::new(
            screenline_core::sighting::SiteKey::from_base64(key.trim())
                .map_err(|e| anyhow::anyhow!("the demo's site key: {e}"))?,
            Vec::new(),
        );
        Some(tokio::spawn(simulated_peers(
            keys,
            addr.host.clone(),
            addr.port,
            opts.peer_sightings_per_s,
        )))
    } else {
        None
    };
    if !quiet {
        eprintln!(
            "\nScreenline demo: {} line(s), {} parcels/s each{}{}\n  console   {}   log in as {}\n  broker    {broker}{}\n  watch     mosquitto_sub -h {host} -p {port} -t '{topic_root}/#' -v\n  regulate  mosquitto_pub -h {host} -p {port} -t '{topic_root}/cmd/thresholds' -f {}   (a signed command; the answer is on …/cmd-result)\n  data      {}\nCtrl-C stops.\n",
            lines.len(),
            opts.rate,
            opts.parcels.map(|n| format!(", stopping after {n} parcels")).unwrap_or_default(),
            if fleet > 1 {
                format!(", on {fleet} appliances sharing sightings (watch screenline/v1/DEMO/+/sightings)")
            } else {
                String::new()
            },
            appliances
                .iter()
                .zip(&ids)
                .map(|(a, id)| format!("http://{}/ ({id})", a.console_addr))
                .collect::<Vec<_>>()
                .join("  "),
            logins.join("  or  "),
            if opts.broker.is_none() { " (embedded)" } else { "" },
            sample_command.display(),
            root.display(),
            host = addr.host,
            port = addr.port,
        );
    }

    let truth = Arc::new(Mutex::new(truth::Truth::default()));
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    // Records of this run only (a kept store has earlier runs' too).
    let run_started = SystemTime::now();
    let mut handles = Vec::new();
    for (k, l) in lines.iter_mut().enumerate() {
        let (placed_tx, placed) = std::sync::mpsc::channel();
        let (ready, warmed_up) = std::sync::mpsc::channel();
        let machine = xray::Machine {
            line_id: l.id.clone(),
            line: k,
            mix: opts.mix,
            seed: opts.seed,
            count: opts.parcels,
            events: l
                .events
                .take()
                .context("the line's events are taken once")?,
            placed,
            sidecar: machines.sidecars.for_line(k),
            scanner: machines.scanner,
            pool: machines.pool.clone(),
            dir: l.xray_dir.clone(),
            truth: truth.clone(),
            ready,
        };
        let feeder = feed_line(k, l, &opts, longest_mm, placed_tx, warmed_up)?;
        let s = stop.clone();
        handles.push(std::thread::spawn(move || machine.run(&s)));
        let s = stop.clone();
        handles.push(std::thread::spawn(move || feeder.run(&s)));
    }

    let target = opts.parcels.map(|n| n * lines.len() as u64);
    // A kept store (`--data`) brings its counts along: this run counts from here, summed over
    // the appliances.
    let at_start: Vec<_> = appliances
        .iter()
        .map(|a| (a.telemetry.clone(), a.telemetry.counters()))
        .collect();
    let count = |c: Counter| -> u64 {
        at_start
            .iter()
            .map(|(t, start)| t.get(c.clone()).saturating_sub(start.get(&c)))
            .sum()
    };
    let backlog = || appliances.iter().map(|a| a.backlog()).sum::<usize>();
    if fleet > 1 && !quiet {
        for (a, id) in appliances.iter().zip(&ids) {
            tokio::spawn(announce_site_splits(
                a.telemetry.subscribe(),
                id.clone(),
                Instant::now(),
            ));
        }
    }
    let started = Instant::now();
    // Generous: the parcels' own time on the belt, plus time for a slow machine to drain.
    let limit = target.map(|n| {
        Duration::from_secs_f64(n as f64 / opts.rate.max(0.01) / lines.len() as f64)
            + Duration::from_secs(120)
    });
    let outcome = loop {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => break Ok(()),
            _ = tokio::time::sleep(Duration::from_millis(100)) => {}
        }
        if let Some(n) = target {
            // The outbox empties on the store thread before the feed counts the ack: wait
            // for both, or the summary can read one acknowledgement short.
            let done = count(Counter::ParcelsDecided) >= n
                && backlog() == 0
                && count(Counter::FeedReportsAcked) >= count(Counter::Decided(Decision::Flag));
            if done {
                break Ok(());
            }
            if limit.is_some_and(|l| started.elapsed() > l) {
                break Err(anyhow::anyhow!(
                    "the demo did not finish in time: {} of {n} parcels decided, {} reports waiting for the broker",
                    count(Counter::ParcelsDecided),
                    backlog()
                ));
            }
        }
    };
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for h in handles {
        let _ = h.join();
    }
    // The slowest appliance's figure.
    let latency_us = |q| {
        appliances
            .iter()
            .filter_map(|a| a.telemetry.decision_latency(q))
            .max()
            .map_or(0, |d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX))
    };
    let mut summary = Summary {
        parcels: count(Counter::ParcelsDecided),
        cleared: count(Counter::Decided(Decision::Clear)),
        flagged: count(Counter::Decided(Decision::Flag)),
        manual: count(Counter::Decided(Decision::Manual)),
        reports_acked: count(Counter::FeedReportsAcked),
        sightings_folded: count(Counter::SightingsReceived),
        reasons: crate::domain::ReasonCode::ALL
            .iter()
            .map(|c| (c.key().to_owned(), count(Counter::Reason(*c))))
            .filter(|(_, n)| *n > 0)
            .collect(),
        decision_latency: Latency {
            p50_us: latency_us(0.5),
            p99_us: latency_us(0.99),
            max_us: latency_us(1.0),
            budget_us: (deadline_ms * 1000).saturating_sub(IMAGE_DELAY.as_micros() as u64),
            late: count(Counter::DecisionsLate),
        },
        joins_checked: 0,
        wrong_joins: 0,
        unjoined_manual: 0,
        scans_late: 0,
    };
    if let Some(p) = peers {
        p.abort();
    }
    for a in appliances {
        a.stop().await;
    }
    // The stores are closed now: what the line joined, against what the demo put on it.
    let audit = {
        let truth = truth.clone();
        tokio::task::spawn_blocking(move || audit_joins(&truth, &data_dirs, run_started))
            .await
            .context("checking the joins")??
    };
    summary.scans_late = truth.lock().unwrap_or_else(|e| e.into_inner()).late_scans();
    (
        summary.joins_checked,
        summary.wrong_joins,
        summary.unjoined_manual,
    ) = (audit.checked, audit.wrong_joins, audit.unjoined_manual);
    if audit.checked != summary.parcels {
        tracing::warn!(
            records = audit.checked,
            parcels = summary.parcels,
            "demo: not every decided parcel's record was checked against the truth"
        );
    }
    for l in lines {
        if let Ok(m) = Arc::try_unwrap(l.emulator) {
            m.into_inner().unwrap_or_else(|e| e.into_inner()).shutdown();
        }
    }
    drop(tmp);
    outcome.map(|()| summary)
}

/// Publishes signed sightings of new senders from [`SIMULATED_PEERS`] in turn, `rate` a
/// second in all, at QoS 1, until aborted: the load a site's other appliances put on this
/// one's ledger.
async fn simulated_peers(
    keys: screenline_core::sighting::SiteKeys,
    host: String,
    port: u16,
    rate: f64,
) {
    use screenline_core::sighting::{Seen, Sighting};
    let mut opts = rumqttc::MqttOptions::new("demo-simulated-peers", host, port);
    opts.set_keep_alive(Duration::from_secs(5));
    let (client, mut eventloop) = rumqttc::AsyncClient::new(opts, 256);
    let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / rate));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let mut n = 0u64;
    loop {
        tokio::select! {
            _ = tick.tick() => {
                let peer = SIMULATED_PEERS[(n % SIMULATED_PEERS.len() as u64) as usize];
                let seen = Seen {
                    identities: keys.sender_keys(&format!("{:018}", rand::random::<u64>())),
                    category: crate::domain::Category::ALL[(n % 16) as usize],
                    at: SystemTime::now(),
                    line_id: format!("P{}", n % 16),
                    parcel: format!("{peer}-{n}"),
                };
                let sighting = Sighting::signed(&keys, "DEMO", peer, &seen).to_vec();
                let topic = format!("screenline/v1/DEMO/{peer}/sightings");
                // While the broker is away the client's queue fills: those are skipped.
                let _ = client.try_publish(topic, rumqttc::QoS::AtLeastOnce, false, sighting);
                n += 1;
            }
            event = eventloop.poll() => {
                if event.is_err() {
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            }
        }
    }
}

/// Prints each split shipment an appliance of the demo's site catches with parcels seen on
/// other appliances (the reason's words say how many were seen where), the first few only.
async fn announce_site_splits(
    mut live: tokio::sync::broadcast::Receiver<crate::telemetry::Live>,
    appliance: String,
    started: Instant,
) {
    use crate::telemetry::Live;
    let mut shown = 0;
    while shown < 3 {
        match live.recv().await {
            Ok(Live::Parcel(p)) => {
                for r in &p.reasons {
                    if r.code == crate::domain::ReasonCode::SplitShipment
                        && !r.en.contains(" 0 on other appliances")
                    {
                        eprintln!(
                            "  {:>4} s  split shipment across the site, caught on {appliance} line {}: {}",
                            started.elapsed().as_secs(),
                            p.line_id,
                            r.en
                        );
                        shown += 1;
                    }
                }
            }
            Ok(_) => {}
            Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {}
            Err(_) => return,
        }
    }
}

/// Feeds one line's simulated parcels in real time.
struct Feeder {
    longest_mm: u32,
    line: usize,
    seed: u64,
    mix: traffic::Mix,
    rate: f64,
    count: Option<u64>,
    reader: std::fs::File,
    emulator: Arc<Mutex<LineEmulator>>,
    /// The line's X-ray machine, told of each parcel before it goes on the belt.
    xray: std::sync::mpsc::Sender<xray::Placed>,
    /// Says when the machine has its first scans rendered.
    xray_ready: std::sync::mpsc::Receiver<()>,
}

/// Real screening lines run at 2 to 3 m/s.
const BELT_MM_PER_S: std::ops::RangeInclusive<u32> = 2000..=3000;
/// The gap a loader keeps between parcels, and the parcels' lengths.
const GAP_MM: u32 = 300;
const PARCEL_MM: std::ops::Range<u32> = 250..600;

/// The belt for a line fed `rate` parcels a second: as slow as real lines run, but fast
/// enough that parcels keep their gap (at most 3 m/s, then parcels are kept shorter). Returns
/// the belt and the longest parcel it carries; a rate no real belt carries is an error.
fn belt_for(rate: f64) -> anyhow::Result<(BeltConfig, u32)> {
    let needed = (rate * f64::from(PARCEL_MM.end + GAP_MM)).ceil() as u32;
    let speed = needed.clamp(*BELT_MM_PER_S.start(), *BELT_MM_PER_S.end());
    let pitch = (f64::from(speed) / rate) as u32;
    let longest = pitch.saturating_sub(GAP_MM).min(PARCEL_MM.end);
    if longest <= PARCEL_MM.start {
        anyhow::bail!(
            "--rate {rate}: a {} m/s belt carries at most {:.1} parcels/s of {} mm with {GAP_MM} mm gaps; add lines with --lines instead",
            f64::from(*BELT_MM_PER_S.end()) / 1000.0,
            f64::from(*BELT_MM_PER_S.end()) / f64::from(PARCEL_MM.start + 1 + GAP_MM),
            PARCEL_MM.start + 1,
        );
    }
    Ok((
        BeltConfig {
            belt_mm_per_s: speed,
            ..BeltConfig::default()
        },
        longest,
    ))
}

fn feed_line(
    k: usize,
    l: &SimLine,
    opts: &DemoOptions,
    longest_mm: u32,
    xray: std::sync::mpsc::Sender<xray::Placed>,
    xray_ready: std::sync::mpsc::Receiver<()>,
) -> anyhow::Result<Feeder> {
    Ok(Feeder {
        longest_mm,
        line: k,
        seed: opts.seed,
        mix: opts.mix,
        rate: opts.rate,
        count: opts.parcels,
        reader: l.reader.master()?,
        emulator: l.emulator.clone(),
        xray,
        xray_ready,
    })
}

impl Feeder {
    fn run(mut self, stop: &std::sync::atomic::AtomicBool) {
        // The belt starts once the X-ray machine is warmed up (or has given up).
        let _ = self.xray_ready.recv_timeout(Duration::from_secs(30));
        let period = Duration::from_secs_f64(1.0 / self.rate.max(0.01));
        let start = Instant::now();
        let mut n = 0u64;
        while !stop.load(std::sync::atomic::Ordering::Relaxed) && self.count.is_none_or(|c| n < c) {
            let due = start + period.mul_f64(n as f64);
            if let Some(wait) = due.checked_duration_since(Instant::now()) {
                std::thread::sleep(wait.min(Duration::from_millis(100)));
                continue;
            }
            let p = traffic::parcel(self.mix, self.seed, self.line, n);
            if let Some(record) = &p.reader_record {
                if let Err(e) = self.reader.write_all(format!("{record}\r\n").as_bytes()) {
                    tracing::warn!(error = %e, "demo reader write failed");
                }
            }
            // The machine hears of the parcel first: it scans it when the photo-eye sees it.
            let placed = xray::Placed {
                n,
                waybill: p.waybill_no.clone(),
                read: p.reader_record.is_some(),
                at: Instant::now(),
            };
            if self.xray.send(placed).is_err() {
                tracing::warn!("demo: the X-ray machine stopped");
            }
            self.emulator
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .place_parcel(p.length_mm.min(self.longest_mm));
            n += 1;
        }
    }
}

/// Writes one scan as an X-ray machine that knows the waybill would: the sidecar naming
/// `waybill`, then the pseudo-colour image renamed into place ([`xray::EncodedScan`] writes
/// the other kinds).
pub fn write_scan(
    dir: &Path,
    scan_id: &str,
    waybill: &str,
    spec: xraygen::ParcelSpec,
    seed: u64,
) -> anyhow::Result<()> {
    let sidecar = Sidecar::Waybill.content(waybill, SystemTime::now());
    xray::EncodedScan::render(xraygen::Scanner::Small, spec, seed)?.drop_into(
        dir,
        scan_id,
        sidecar.as_ref(),
        None,
    )?;
    Ok(())
}

/// Reads this run's records (entered from `since` on) from the stores in `data_dirs`, closed
/// by now, and holds them against `truth`.
fn audit_joins(
    truth: &Mutex<truth::Truth>,
    data_dirs: &[PathBuf],
    since: SystemTime,
) -> anyhow::Result<truth::JoinAudit> {
    let mut records = Vec::new();
    for dir in data_dirs {
        let store = crate::store::Store::open(dir).with_context(|| {
            format!(
                "reopening the demo's store {} to check its joins",
                dir.display()
            )
        })?;
        records.extend(
            store
                .latest_records(usize::MAX, usize::MAX, |r| r.entered_at >= since)
                .with_context(|| format!("reading the records in {}", dir.display()))?,
        );
    }
    Ok(truth
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .audit(&records))
}

/// A thresholds command signed by the demo's regulator key: a lower counterfeit threshold
/// for footwear and apparel, as a regulator tightening screening in a campaign would send.
fn demo_command(key: &ed25519_dalek::SigningKey, config: &Config, at: SystemTime) -> String {
    let payload = serde_json::json!({
        "command": "thresholds",
        "site_id": config.site_id,
        "appliance_id": config.appliance_id,
        "issued_at": crate::time_fmt::format(at),
        "nonce": format!("demo-{:016x}", rand::random::<u64>()),
        "body": {"apparel_footwear": 0.3},
    });
    crate::report::commands::sign_envelope(key, &payload.to_string())
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_belt_runs_as_fast_as_the_rate_needs_and_no_faster_than_real_lines() {
        let (belt, longest) = super::belt_for(2.0).expect("2/s");
        assert_eq!((belt.belt_mm_per_s, longest), (2000, 600));
        let (belt, longest) = super::belt_for(4.0).expect("4/s");
        assert_eq!((belt.belt_mm_per_s, longest), (3000, 450));
        let (belt, longest) = super::belt_for(5.4).expect("5.4/s");
        assert_eq!(belt.belt_mm_per_s, 3000);
        assert!(longest > 250 && 3000.0 / 5.4 >= f64::from(longest + 300));
        let e = super::belt_for(6.0)
            .expect_err("no belt carries 6/s")
            .to_string();
        assert!(e.contains("--lines"), "{e}");
    }

    use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
    use std::time::Duration;

    #[tokio::test]
    async fn embedded_broker_acknowledges_qos1() {
        let url = super::start_embedded_broker().expect("broker");
        let addr = crate::config::parse_broker_url(&url).expect("url");
        let mut opts = MqttOptions::new("t", addr.host, addr.port);
        opts.set_keep_alive(Duration::from_secs(5));
        let (client, mut ev) = AsyncClient::new(opts, 10);
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        let mut published = false;
        loop {
            let e = tokio::time::timeout_at(deadline, ev.poll())
                .await
                .expect("in time");
            match e {
                Ok(Event::Incoming(Packet::ConnAck(_))) if !published => {
                    client
                        .try_publish("x/y", QoS::AtLeastOnce, true, b"hi".to_vec())
                        .expect("queued");
                    published = true;
                }
                Ok(Event::Incoming(Packet::PubAck(_))) => break,
                Ok(_) => {}
                // The broker thread may still be binding its port.
                Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
    }
}
