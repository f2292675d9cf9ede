//! The appliance's configuration: one TOML file, every key with a documented default,
//! unknown keys rejected, and errors that name the key, the value and what would be valid.

use crate::line::waybill::Framing;
use serde::{Deserialize, Serialize};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use thiserror::Error;

/// A configuration that could not be used.
#[derive(Debug, Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    /// The TOML does not match the configuration's shape.
    #[error("{path}: {message}")]
    Parse { path: PathBuf, message: String },
    /// Values that parse but cannot work together.
    #[error("{path}: {}", .problems.join("; "))]
    Invalid {
        path: PathBuf,
        problems: Vec<String>,
    },
}

/// The whole configuration.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// The sorting centre's id in the regulator's feed.
    pub site_id: String,
    /// This appliance's id in the regulator's feed.
    pub appliance_id: String,
    /// Where records, the outbox and kept images live. Default: /var/lib/screenline.
    #[serde(default = "default_data_dir")]
    pub data_dir: PathBuf,
    #[serde(default)]
    pub model: ModelConfig,
    #[serde(default)]
    pub mqtt: MqttConfig,
    #[serde(default)]
    pub console: ConsoleConfig,
    #[serde(default)]
    pub rules: RulesConfig,
    #[serde(default)]
    pub store: StoreConfig,
    #[serde(default)]
    pub regulator: RegulatorConfig,
    /// The lines this appliance serves; at least one.
    pub lines: Vec<LineConfig>,
}

/// The classifier.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelConfig {
    /// The model folder (manifest.json + .onnx). Default: the newest folder in the bundled models/.
    #[serde(default)]
    pub dir: Option<PathBuf>,
    /// ONNX Runtime's shared library. Default: $ORT_DYLIB_PATH, else the path the setup script installs to.
    #[serde(default)]
    pub ort_dylib_path: Option<PathBuf>,
    /// Threads ONNX Runtime may use inside one inference. Default: 1.
    #[serde(default = "one")]
    pub intra_threads: usize,
}

impl Default for ModelConfig {
    fn default() -> Self {
        ModelConfig {
            dir: None,
            ort_dylib_path: None,
            intra_threads: 1,
        }
    }
}

/// The regulator feed.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MqttConfig {
    /// `mqtt://HOST:PORT` (plain TCP, which must be chosen explicitly). Default: mqtt://127.0.0.1:1883.
    #[serde(default = "default_broker")]
    pub url: String,
    /// Client id. Default: screenline-{site_id}-{appliance_id}.
    #[serde(default)]
    pub client_id: Option<String>,
    /// Keep-alive in seconds. Default: 15.
    #[serde(default = "default_keep_alive")]
    pub keep_alive_s: u64,
    /// Reports in flight at once; kept well below rumqttc's packet-id space. Default: 32.
    #[serde(default = "default_window")]
    pub window: usize,
    /// Seconds between two statistics messages on `…/stats`. Default: 3600.
    #[serde(default = "default_stats_period")]
    pub stats_period_s: u64,
    /// With `mqtts://`: the CA certificate(s) (PEM) the broker's certificate must chain to.
    /// Default: none, which an `mqtts://` url refuses.
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// With `mqtts://`: this appliance's client certificate chain (PEM). Default: none.
    #[serde(default)]
    pub client_cert_file: Option<PathBuf>,
    /// With `mqtts://`: the client certificate's private key (PEM, PKCS#8 or RSA or SEC1).
    /// Default: none.
    #[serde(default)]
    pub client_key_file: Option<PathBuf>,
}

/// The regulator's signed commands (see README, "Regulator feed").
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegulatorConfig {
    /// The regulator's Ed25519 public key: the 32 raw bytes, base64. Default: none, and then
    /// every command is refused.
    #[serde(default)]
    pub public_key: Option<String>,
    /// Oldest command accepted, in seconds since its `issued_at`. Default: 300.
    #[serde(default = "default_cmd_max_age")]
    pub max_age_s: u64,
    /// How far ahead of the appliance's clock a command's `issued_at` may be, in seconds.
    /// Default: 60.
    #[serde(default = "default_cmd_max_future")]
    pub max_future_s: u64,
}

impl Default for RegulatorConfig {
    fn default() -> Self {
        RegulatorConfig {
            public_key: None,
            max_age_s: default_cmd_max_age(),
            max_future_s: default_cmd_max_future(),
        }
    }
}

fn default_cmd_max_age() -> u64 {
    300
}
fn default_cmd_max_future() -> u64 {
    60
}
fn default_stats_period() -> u64 {
    3600
}

impl Default for MqttConfig {
    fn default() -> Self {
        MqttConfig {
            url: default_broker(),
            client_id: None,
            keep_alive_s: default_keep_alive(),
            window: default_window(),
            stats_period_s: default_stats_period(),
            ca_file: None,
            client_cert_file: None,
            client_key_file: None,
        }
    }
}

/// The screening rules.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RulesConfig {
    /// The regulator's watch-list (JSON: version, id_numbers, phones, agreement_customers).
    /// Default: none until the regulator sends one.
    #[serde(default)]
    pub watchlist_file: Option<PathBuf>,
    /// Declared goods → category dictionary (TOML). Default: the one shipped.
    #[serde(default)]
    pub dictionary_file: Option<PathBuf>,
    /// Per-category floors of plausible declared value (TOML). Default: the ones shipped.
    #[serde(default)]
    pub value_floors_file: Option<PathBuf>,
    /// Model confidence above which a different declared category is a mismatch. Default: 0.8.
    #[serde(default = "default_mismatch_confidence")]
    pub mismatch_confidence: f32,
    /// Categories the counterfeit rule applies to. Default: all.
    #[serde(default)]
    pub priority_categories: Option<Vec<String>>,
    /// Parcels of one sender and category that make a split shipment. Default: 5.
    #[serde(default = "default_split_min")]
    pub split_min_parcels: usize,
    /// The split-shipment window in hours. Default: 24.
    #[serde(default = "default_split_hours")]
    pub split_window_hours: f64,
    /// Policy overrides, reason code = "flag" | "manual" | "count". Default: see README.
    #[serde(default)]
    pub policy: std::collections::BTreeMap<crate::domain::ReasonCode, crate::screen::rules::Action>,
}

impl Default for RulesConfig {
    fn default() -> Self {
        RulesConfig {
            watchlist_file: None,
            dictionary_file: None,
            value_floors_file: None,
            mismatch_confidence: default_mismatch_confidence(),
            priority_categories: None,
            split_min_parcels: default_split_min(),
            split_window_hours: default_split_hours(),
            policy: Default::default(),
        }
    }
}

fn default_mismatch_confidence() -> f32 {
    0.8
}
fn default_split_min() -> usize {
    5
}
fn default_split_hours() -> f64 {
    24.0
}

/// The regulator's minimum retention for records and images, in days (PRODUCT.md).
pub const MIN_RETENTION_DAYS: u32 = 30;

/// Records, images and the disk they may use.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StoreConfig {
    /// Days records and kept images stay; older ones are deleted by the sweeper, except a
    /// record whose report the broker has not acknowledged. At least 30 (the regulator's
    /// minimum) unless `allow_short_retention`. Default: 30.
    #[serde(default = "default_retention_days")]
    pub retention_days: u32,
    /// Allows `retention_days` below 30: only for a lab or test appliance that no regulator
    /// relies on. Default: false.
    #[serde(default)]
    pub allow_short_retention: bool,
    /// The most the store (database + kept images) may use on disk, in MB. Over it, cleared
    /// parcels' images are deleted oldest first, then cleared records slimmed; flagged and
    /// manual records and unsent reports are never dropped — an alarm is raised instead.
    /// Default: none (only retention limits the store; the console shows the free space).
    #[serde(default)]
    pub disk_budget_mb: Option<u64>,
    /// Seconds between two sweeps (retention and budget). Default: 3600.
    #[serde(default = "default_sweep_interval")]
    pub sweep_interval_s: u64,
    /// A store sled cannot open (damaged after a power cut) is moved aside to
    /// `<data_dir>/db.broken-<time>` and screening goes on with a fresh store, with an alarm;
    /// `screenline store recover` brings its unsent reports back. false: `screenline run`
    /// refuses to start instead (the line stops). Default: true.
    #[serde(default = "yes")]
    pub set_aside_broken: bool,
}

impl Default for StoreConfig {
    fn default() -> Self {
        StoreConfig {
            retention_days: default_retention_days(),
            allow_short_retention: false,
            disk_budget_mb: None,
            sweep_interval_s: default_sweep_interval(),
            set_aside_broken: true,
        }
    }
}

fn default_retention_days() -> u32 {
    MIN_RETENTION_DAYS
}
fn default_sweep_interval() -> u64 {
    3600
}
fn yes() -> bool {
    true
}

/// The local console.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConsoleConfig {
    /// Address to serve on. Default: 127.0.0.1:8080.
    #[serde(default = "default_console")]
    pub listen: SocketAddr,
    /// Host names (or addresses) the console answers to; any other `Host` header is refused,
    /// so that a web page cannot reach the console through DNS rebinding. Default: the
    /// listen address, `localhost` and `127.0.0.1` (and, listening on every address, any
    /// address literal).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allowed_hosts: Option<Vec<String>>,
    /// Reverse proxies whose `X-Forwarded-For` and `X-Forwarded-Proto` are believed (the
    /// client's address is then the last one in `X-Forwarded-For` that is not a proxy).
    /// Default: none — the headers are ignored and the peer's address is the client's.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub trusted_proxies: Vec<std::net::IpAddr>,
    /// A bearer token `/metrics` requires from anything but loopback (at least 16
    /// characters). Default: none — `/metrics` answers loopback only.
    #[serde(default, skip_serializing)]
    pub metrics_token: Option<String>,
}

impl Default for ConsoleConfig {
    fn default() -> Self {
        ConsoleConfig {
            listen: default_console(),
            allowed_hosts: None,
            trusted_proxies: Vec::new(),
            metrics_token: None,
        }
    }
}

impl ConsoleConfig {
    fn problems(&self, p: &mut Vec<String>) {
        for h in self.allowed_hosts.iter().flatten() {
            let ok = !h.is_empty()
                && h.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b".-_:[]".contains(&b));
            if !ok {
                p.push(format!("console.allowed_hosts: {h:?} is not a host name or address; give names like \"screenline.local\" or addresses like \"10.0.0.5\", without port or scheme"));
            }
        }
        if let Some(t) = &self.metrics_token {
            if t.chars().count() < 16 || t.chars().any(|c| c.is_whitespace() || c.is_control()) {
                p.push("console.metrics_token: use at least 16 characters and no spaces (e.g. the output of `openssl rand -hex 16`)".into());
            }
        }
    }
}

/// One X-ray line.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LineConfig {
    /// The line's id, as reports name it.
    pub id: String,
    /// The waybill reader's serial port, e.g. /dev/screenline/L1-reader.
    pub reader_port: PathBuf,
    /// Default: 9600.
    #[serde(default = "default_reader_baud")]
    pub reader_baud: u32,
    /// Default: line.
    #[serde(default = "default_framing")]
    pub reader_framing: Framing,
    /// The line controller's serial port, e.g. /dev/screenline/L1-controller.
    pub controller_port: PathBuf,
    /// Default: 115200.
    #[serde(default = "default_controller_baud")]
    pub controller_baud: u32,
    /// The X-ray machine's drop folder.
    pub xray_dir: PathBuf,
    /// Where bad X-ray files (corrupt, truncated, oversized, a lone half of a dual-energy
    /// pair) are moved, each with a `<name>.reason.txt`. Default: `<data_dir>/quarantine/<id>/`.
    #[serde(default)]
    pub quarantine_dir: Option<PathBuf>,
    /// What happens to a screened X-ray file: `keep` (moved into the store's image folder)
    /// or `delete` (removed; the record keeps its SHA-256 only). Default: keep.
    #[serde(default)]
    pub xray_after: XrayAfter,
    /// How long the first half of a dual-energy pair waits for its partner before it is
    /// quarantined, in milliseconds. Default: 2000.
    #[serde(default = "default_pair_wait")]
    pub pair_wait_ms: u64,
    /// How long after the photo-eye a waybill read or an image may still join the parcel,
    /// in milliseconds. It must leave time to screen before the parcel reaches the diverter.
    /// Default: 1500.
    #[serde(default = "default_join_window")]
    pub join_window_ms: u64,
    /// How far from the photo-eye's event a waybill read may come, either side, in
    /// milliseconds. Keep it under half the time between two parcels (at 3 m/s and 300 mm,
    /// under 50): a read with two waiting parcels inside it joins neither. Default: 150.
    #[serde(default = "default_read_window")]
    pub read_window_ms: u64,
    /// When the X-ray machine's image usually completes after the photo-eye, in milliseconds.
    /// Default: 300.
    #[serde(default = "default_image_delay")]
    pub image_delay_ms: u64,
    /// How far from that an image without a waybill may complete and still join by time, in
    /// milliseconds. Keep it under half the time between two parcels: an image with two
    /// waiting parcels inside it joins neither (both go to manual). Default: 200.
    #[serde(default = "default_image_window")]
    pub image_window_ms: u64,
    /// How long after the photo-eye the decision must be sent: the belt time from the
    /// photo-eye to the controller's decision point. A later decision is counted and the
    /// parcel recorded as manual (the controller has diverted it already). Default: 2000.
    #[serde(default = "default_decision_deadline")]
    pub decision_deadline_ms: u64,
    /// The belt's geometry, sent to the line controller (`Configure`) after every hello.
    /// Without it the controller keeps the geometry it has.
    #[serde(default)]
    pub controller: Option<ControllerGeometry>,
}

/// A line's geometry as the technician measures it, in millimetres of belt; the appliance
/// converts it to encoder counts for the controller.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ControllerGeometry {
    /// Encoder counts per millimetre of belt. Default: 1.
    #[serde(default = "default_counts_per_mm")]
    pub counts_per_mm: u32,
    /// From the photo-eye to the diverter gate.
    pub eye_to_gate_mm: u32,
    /// How long the diverter stays energised for one parcel. Default: 400.
    #[serde(default = "default_gate_width")]
    pub gate_width_mm: u32,
    /// How far before the gate the decision must have arrived. Default: 300.
    #[serde(default = "default_decision_margin")]
    pub decision_margin_mm: u32,
    /// How long the photo-eye's level must hold to count. Default: 5.
    #[serde(default = "default_debounce")]
    pub debounce_mm: u32,
    /// Silence from the appliance after which the controller diverts everything.
    /// Default: 1000.
    #[serde(default = "default_heartbeat_timeout")]
    pub heartbeat_timeout_ms: u32,
}

impl ControllerGeometry {
    /// The controller's configuration message; `None` when a distance overflows the
    /// encoder's range (configuration validation reports that).
    pub fn controller_config(&self) -> Option<screenline_protocol::ControllerConfig> {
        let counts = |mm: u32| mm.checked_mul(self.counts_per_mm);
        Some(screenline_protocol::ControllerConfig {
            eye_to_gate_counts: counts(self.eye_to_gate_mm)?,
            gate_width_counts: counts(self.gate_width_mm)?,
            debounce_counts: counts(self.debounce_mm)?,
            decision_margin_counts: counts(self.decision_margin_mm)?,
            heartbeat_timeout_ms: self.heartbeat_timeout_ms,
            fail_safe: screenline_protocol::FailSafePolicy::DivertUndecided,
        })
    }

    fn problems(&self, i: usize, p: &mut Vec<String>) {
        let key = |k: &str| format!("lines[{i}].controller.{k}");
        if self.counts_per_mm == 0 {
            p.push(format!("{} = 0: must be at least 1", key("counts_per_mm")));
        }
        if self.decision_margin_mm >= self.eye_to_gate_mm {
            p.push(format!(
                "{} = {}: must be less than eye_to_gate_mm ({}), or no decision can ever be in time",
                key("decision_margin_mm"),
                self.decision_margin_mm,
                self.eye_to_gate_mm
            ));
        }
        if self.gate_width_mm == 0 {
            p.push(format!(
                "{} = 0: the diverter must stay energised over some belt",
                key("gate_width_mm")
            ));
        }
        let beat = crate::line::controller::HEARTBEAT.as_millis() as u32;
        if !(2 * beat..=10_000).contains(&self.heartbeat_timeout_ms) {
            p.push(format!(
                "{} = {}: must be {} to 10000 (the appliance beats every {beat} ms)",
                key("heartbeat_timeout_ms"),
                self.heartbeat_timeout_ms,
                2 * beat
            ));
        }
        if self.controller_config().is_none() {
            p.push(format!(
                "lines[{i}].controller: eye_to_gate_mm × counts_per_mm ({} × {}) is beyond the encoder's range",
                self.eye_to_gate_mm, self.counts_per_mm
            ));
        }
    }
}

fn default_counts_per_mm() -> u32 {
    1
}
fn default_gate_width() -> u32 {
    400
}
fn default_decision_margin() -> u32 {
    300
}
fn default_debounce() -> u32 {
    5
}
fn default_heartbeat_timeout() -> u32 {
    1000
}

/// What happens to an X-ray file once its parcel is screened.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum XrayAfter {
    /// Moved into the store's image folder, named by record.
    #[default]
    Keep,
    /// Deleted from the drop folder; the record keeps the image's SHA-256.
    Delete,
}

impl LineConfig {
    /// The line's quarantine folder, given the appliance's data folder.
    pub fn quarantine_dir(&self, data_dir: &Path) -> PathBuf {
        self.quarantine_dir
            .clone()
            .unwrap_or_else(|| data_dir.join("quarantine").join(&self.id))
    }
}

fn default_pair_wait() -> u64 {
    2000
}
fn one() -> usize {
    1
}
/// Where the appliance keeps its data unless configured otherwise.
pub const DEFAULT_DATA_DIR: &str = "/var/lib/screenline";

fn default_data_dir() -> PathBuf {
    PathBuf::from(DEFAULT_DATA_DIR)
}
fn default_broker() -> String {
    "mqtt://127.0.0.1:1883".into()
}
fn default_keep_alive() -> u64 {
    15
}
fn default_window() -> usize {
    32
}
/// The largest `mqtt.window`: rumqttc's in-flight limit is set to twice this plus room for
/// status, stats and command answers, far below its 16-bit packet-id space.
pub const MAX_WINDOW: usize = 100;
fn default_console() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 8080))
}
fn default_reader_baud() -> u32 {
    9600
}
fn default_framing() -> Framing {
    Framing::Line
}
fn default_controller_baud() -> u32 {
    115_200
}
fn default_join_window() -> u64 {
    1500
}
fn default_read_window() -> u64 {
    150
}
fn default_image_delay() -> u64 {
    300
}
fn default_image_window() -> u64 {
    200
}
fn default_decision_deadline() -> u64 {
    2000
}

/// A broker address taken apart.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BrokerAddr {
    pub host: String,
    pub port: u16,
    /// `mqtts://`: TLS.
    pub tls: bool,
}

/// Parses `mqtt://HOST[:PORT]` (plain TCP, port 1883 by default) or `mqtts://HOST[:PORT]`
/// (TLS, port 8883 by default).
pub fn parse_broker_url(url: &str) -> Result<BrokerAddr, String> {
    let (rest, tls, default_port) = if let Some(r) = url.strip_prefix("mqtts://") {
        (r, true, 8883)
    } else if let Some(r) = url.strip_prefix("mqtt://") {
        (r, false, 1883)
    } else {
        return Err(format!(
            "broker url {url:?} must start with mqtts:// (TLS) or mqtt:// (plain TCP)"
        ));
    };
    let (host, port) = match rest.rsplit_once(':') {
        Some((h, p)) if !h.ends_with(':') => (
            h,
            p.parse::<u16>()
                .map_err(|_| format!("broker url {url:?}: port {p:?} is not a number 1-65535"))?,
        ),
        _ => (rest, default_port),
    };
    if host.is_empty() {
        return Err(format!("broker url {url:?} has no host"));
    }
    Ok(BrokerAddr {
        host: host.trim_start_matches('[').trim_end_matches(']').into(),
        port,
        tls,
    })
}

impl Config {
    /// Reads and validates a configuration file.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.into(),
            source,
        })?;
        Config::parse(&text, path)
    }

    /// Parses and validates configuration text; `path` is only used in messages.
    pub fn parse(text: &str, path: &Path) -> Result<Config, ConfigError> {
        let config: Config = toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: path.into(),
            message: describe_toml_error(text, &e),
        })?;
        let problems = config.problems();
        if problems.is_empty() {
            Ok(config)
        } else {
            Err(ConfigError::Invalid {
                path: path.into(),
                problems,
            })
        }
    }

    fn problems(&self) -> Vec<String> {
        let mut p = Vec::new();
        let id_ok = |s: &str| {
            !s.is_empty()
                && s.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        };
        if !id_ok(&self.site_id) {
            p.push(format!(
                "site_id = {:?}: use letters, digits, - and _ (it becomes an MQTT topic level)",
                self.site_id
            ));
        }
        if !id_ok(&self.appliance_id) {
            p.push(format!("appliance_id = {:?}: use letters, digits, - and _ (it becomes an MQTT topic level)", self.appliance_id));
        }
        self.console.problems(&mut p);
        let m = &self.mqtt;
        match parse_broker_url(&m.url) {
            Err(e) => p.push(format!("mqtt.url: {e}")),
            Ok(a) if a.tls => {
                if m.ca_file.is_none() {
                    p.push(format!("mqtt.ca_file: {:?} is TLS; set ca_file to the PEM file of the CA that signed the broker's certificate", m.url));
                }
                if m.client_cert_file.is_some() != m.client_key_file.is_some() {
                    p.push("mqtt.client_cert_file and mqtt.client_key_file: set both (a client certificate and its private key, PEM) or neither".into());
                }
                for (key, f) in [
                    ("ca_file", &m.ca_file),
                    ("client_cert_file", &m.client_cert_file),
                    ("client_key_file", &m.client_key_file),
                ] {
                    if let Some(f) = f {
                        if !f.is_file() {
                            p.push(format!(
                                "mqtt.{key} = {:?}: no such file; give the path of a PEM file",
                                f
                            ));
                        }
                    }
                }
            }
            Ok(_) => {
                for (key, f) in [
                    ("ca_file", &m.ca_file),
                    ("client_cert_file", &m.client_cert_file),
                    ("client_key_file", &m.client_key_file),
                ] {
                    if f.is_some() {
                        p.push(format!("mqtt.{key} is set but mqtt.url {:?} is plain TCP; use mqtts://HOST:PORT for TLS, or remove {key}", m.url));
                    }
                }
            }
        }
        // rumqttc's packet ids run 1..=inflight; the feed keeps its own window (plus a
        // few status, stats and command answers) well below that (see PITFALLS.md).
        if !(1..=MAX_WINDOW).contains(&m.window) {
            p.push(format!(
                "mqtt.window = {}: must be 1 to {MAX_WINDOW}",
                m.window
            ));
        }
        if !(1..=86_400).contains(&m.stats_period_s) {
            p.push(format!(
                "mqtt.stats_period_s = {}: must be 1 to 86400 (one day)",
                m.stats_period_s
            ));
        }
        let r = &self.regulator;
        if let Some(k) = &r.public_key {
            if let Err(e) = crate::report::commands::parse_public_key(k) {
                p.push(format!("regulator.public_key: {e}; give the regulator's Ed25519 public key as base64 of its 32 raw bytes (see README)"));
            }
        }
        if !(10..=86_400).contains(&r.max_age_s) {
            p.push(format!(
                "regulator.max_age_s = {}: must be 10 to 86400",
                r.max_age_s
            ));
        }
        if r.max_future_s > 3600 {
            p.push(format!(
                "regulator.max_future_s = {}: must be at most 3600",
                r.max_future_s
            ));
        }
        if self.model.intra_threads == 0 {
            p.push("model.intra_threads = 0: must be at least 1".into());
        }
        let r = &self.rules;
        if !(0.0..=1.0).contains(&r.mismatch_confidence) {
            p.push(format!(
                "rules.mismatch_confidence = {}: must be 0 to 1",
                r.mismatch_confidence
            ));
        }
        if !(2..=crate::store::LEDGER_KEEP).contains(&r.split_min_parcels) {
            p.push(format!(
                "rules.split_min_parcels = {}: must be 2 to {} (the split-shipment ledger keeps that many parcels per sender and category)",
                r.split_min_parcels,
                crate::store::LEDGER_KEEP
            ));
        }
        if !(r.split_window_hours > 0.0 && r.split_window_hours <= 24.0 * 90.0) {
            p.push(format!(
                "rules.split_window_hours = {}: must be more than 0 and at most 2160 (90 days)",
                r.split_window_hours
            ));
        }
        for key in r.priority_categories.iter().flatten() {
            if crate::domain::Category::from_key(key).is_none() {
                p.push(format!(
                    "rules.priority_categories: {key:?} is not a category key (one of {})",
                    crate::domain::Category::ALL.map(|c| c.key()).join(", ")
                ));
            }
        }
        let st = &self.store;
        if st.retention_days == 0
            || (st.retention_days < MIN_RETENTION_DAYS && !st.allow_short_retention)
        {
            p.push(format!(
                "store.retention_days = {}: must be at least {MIN_RETENTION_DAYS} (the regulator's minimum); a lab appliance may set store.allow_short_retention = true for 1 or more",
                st.retention_days
            ));
        }
        if st.disk_budget_mb == Some(0) {
            p.push(
                "store.disk_budget_mb = 0: leave it out for no budget, or give megabytes".into(),
            );
        }
        if !(1..=86_400).contains(&st.sweep_interval_s) {
            p.push(format!(
                "store.sweep_interval_s = {}: must be 1 to 86400",
                st.sweep_interval_s
            ));
        }
        if self.lines.is_empty() {
            p.push("lines: at least one [[lines]] table is needed".into());
        }
        let mut seen = std::collections::HashSet::new();
        for (i, l) in self.lines.iter().enumerate() {
            if !id_ok(&l.id) {
                p.push(format!(
                    "lines[{i}].id = {:?}: use letters, digits, - and _",
                    l.id
                ));
            }
            if !seen.insert(&l.id) {
                p.push(format!("lines[{i}].id = {:?}: used by two lines", l.id));
            }
            if let Some(j) = self.lines[..i]
                .iter()
                .position(|o| o.xray_dir == l.xray_dir)
            {
                p.push(format!(
                    "lines[{i}].xray_dir = {:?}: already lines[{j}]'s drop folder; each line needs its own",
                    l.xray_dir
                ));
            }
            if l.read_window_ms >= l.join_window_ms
                || l.image_delay_ms + l.image_window_ms >= l.join_window_ms
            {
                p.push(format!(
                    "lines[{i}]: read_window_ms ({}) and image_delay_ms + image_window_ms ({}) must be less than join_window_ms ({})",
                    l.read_window_ms, l.image_delay_ms + l.image_window_ms, l.join_window_ms
                ));
            }
            if !(100..=60_000).contains(&l.pair_wait_ms) {
                p.push(format!(
                    "lines[{i}].pair_wait_ms = {}: must be 100 to 60000",
                    l.pair_wait_ms
                ));
            }
            if !(100..=10_000).contains(&l.join_window_ms) {
                p.push(format!(
                    "lines[{i}].join_window_ms = {}: must be 100 to 10000",
                    l.join_window_ms
                ));
            }
            if let Some(g) = &l.controller {
                g.problems(i, &mut p);
            }
            if l.join_window_ms >= l.decision_deadline_ms {
                p.push(format!(
                    "lines[{i}].join_window_ms = {}: must be less than decision_deadline_ms ({}), or a parcel still waiting for its read or image is diverted before it is screened",
                    l.join_window_ms, l.decision_deadline_ms
                ));
            }
        }
        p
    }

    /// The MQTT client id.
    pub fn client_id(&self) -> String {
        self.mqtt
            .client_id
            .clone()
            .unwrap_or_else(|| format!("screenline-{}-{}", self.site_id, self.appliance_id))
    }

    /// `screenline/v1/{site_id}/{appliance_id}`.
    pub fn topic_root(&self) -> String {
        format!("screenline/v1/{}/{}", self.site_id, self.appliance_id)
    }
}

/// Turns a TOML error into "line N, key K: what is wrong".
fn describe_toml_error(text: &str, e: &toml::de::Error) -> String {
    let msg = e.message().trim().to_string();
    match e.span() {
        Some(span) => {
            let line = text[..span.start.min(text.len())].matches('\n').count() + 1;
            let snippet = text.lines().nth(line - 1).unwrap_or("").trim();
            format!("line {line} (`{snippet}`): {msg}")
        }
        None => msg,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINIMAL: &str = r#"
site_id = "SZ01"
appliance_id = "xr-01"
[[lines]]
id = "L1"
reader_port = "/dev/screenline/L1-reader"
controller_port = "/dev/screenline/L1-controller"
xray_dir = "/var/spool/xray/L1"
"#;

    #[test]
    fn minimal_config_gets_defaults() {
        let c = Config::parse(MINIMAL, Path::new("t.toml")).expect("valid");
        assert_eq!(c.mqtt.url, "mqtt://127.0.0.1:1883");
        assert_eq!(c.lines[0].reader_framing, Framing::Line);
        assert_eq!(c.topic_root(), "screenline/v1/SZ01/xr-01");
        assert_eq!(c.console.listen.port(), 8080);
        assert_eq!(c.lines[0].xray_after, XrayAfter::Keep);
        assert_eq!(c.lines[0].pair_wait_ms, 2000);
        assert_eq!(
            c.lines[0].quarantine_dir(&c.data_dir),
            Path::new("/var/lib/screenline/quarantine/L1")
        );
        let c = Config::parse(
            &format!("{MINIMAL}xray_after = \"delete\"\nquarantine_dir = \"/q\"\n"),
            Path::new("t.toml"),
        )
        .expect("valid");
        assert_eq!(c.lines[0].xray_after, XrayAfter::Delete);
        assert_eq!(c.lines[0].quarantine_dir(&c.data_dir), Path::new("/q"));
        let bad = format!("{MINIMAL}xray_after = \"archive\"\n");
        assert!(Config::parse(&bad, Path::new("t.toml")).is_err());
    }

    #[test]
    fn unknown_keys_are_errors_naming_the_line() {
        let text = MINIMAL.replace("site_id", "site_idd");
        let e = Config::parse(&text, Path::new("t.toml")).expect_err("invalid");
        let s = e.to_string();
        assert!(s.contains("line 2") && s.contains("site_idd"), "{s}");
    }

    #[test]
    fn bad_values_are_explained() {
        let text = MINIMAL.replace("xr-01", "xr/01") + "[mqtt]\nurl = \"tcp://x\"\n";
        let s = Config::parse(&text, Path::new("t.toml"))
            .expect_err("invalid")
            .to_string();
        assert!(s.contains("appliance_id") && s.contains("mqtt.url"), "{s}");
    }

    #[test]
    fn controller_geometry_is_converted_and_checked() {
        let text =
            format!("{MINIMAL}[lines.controller]\neye_to_gate_mm = 4000\ncounts_per_mm = 4\n");
        let c = Config::parse(&text, Path::new("t.toml")).expect("valid");
        let g = c.lines[0].controller.and_then(|g| g.controller_config());
        let g = g.expect("geometry");
        assert_eq!(
            (
                g.eye_to_gate_counts,
                g.gate_width_counts,
                g.decision_margin_counts
            ),
            (16_000, 1600, 1200)
        );
        let bad = format!(
            "{MINIMAL}[lines.controller]\neye_to_gate_mm = 200\nheartbeat_timeout_ms = 100\ngate_width_mm = 0\n"
        );
        let s = Config::parse(&bad, Path::new("t.toml"))
            .expect_err("invalid")
            .to_string();
        for key in [
            "lines[0].controller.decision_margin_mm = 300",
            "lines[0].controller.heartbeat_timeout_ms = 100",
            "lines[0].controller.gate_width_mm = 0",
        ] {
            assert!(s.contains(key), "{key} in {s}");
        }
        let huge = format!(
            "{MINIMAL}[lines.controller]\neye_to_gate_mm = 4000000\ncounts_per_mm = 4000\n"
        );
        let s = Config::parse(&huge, Path::new("t.toml"))
            .expect_err("invalid")
            .to_string();
        assert!(s.contains("beyond the encoder's range"), "{s}");
    }

    #[test]
    fn tls_and_regulator_keys_are_checked_and_explained() {
        let tls = format!("{MINIMAL}[mqtt]\nurl = \"mqtts://b:8883\"\nclient_cert_file = \"/nonexistent/c.pem\"\n");
        let s = Config::parse(&tls, Path::new("t.toml"))
            .expect_err("invalid")
            .to_string();
        assert!(
            s.contains("mqtt.ca_file") && s.contains("client_key_file"),
            "{s}"
        );
        assert!(
            s.contains("/nonexistent/c.pem") && s.contains("no such file"),
            "{s}"
        );
        let plain = format!("{MINIMAL}[mqtt]\nca_file = \"/etc/hostname\"\n");
        let s = Config::parse(&plain, Path::new("t.toml"))
            .expect_err("invalid")
            .to_string();
        assert!(
            s.contains("mqtt.ca_file is set but") && s.contains("mqtts://"),
            "{s}"
        );
        let window = format!("{MINIMAL}[mqtt]\nwindow = 500\n");
        assert!(Config::parse(&window, Path::new("t.toml"))
            .expect_err("invalid")
            .to_string()
            .contains("mqtt.window = 500: must be 1 to 100"));
        let key = format!("{MINIMAL}[regulator]\npublic_key = \"AAAA\"\n");
        let s = Config::parse(&key, Path::new("t.toml"))
            .expect_err("invalid")
            .to_string();
        assert!(
            s.contains("regulator.public_key") && s.contains("32 raw bytes"),
            "{s}"
        );
        let c = Config::parse(MINIMAL, Path::new("t.toml")).expect("valid");
        assert_eq!(c.regulator.public_key, None);
        assert_eq!(c.regulator.max_age_s, 300);
        assert_eq!(c.mqtt.stats_period_s, 3600);
    }

    #[test]
    fn broker_urls() {
        assert_eq!(
            parse_broker_url("mqtt://127.0.0.1:1884"),
            Ok(BrokerAddr {
                host: "127.0.0.1".into(),
                port: 1884,
                tls: false,
            })
        );
        assert_eq!(
            parse_broker_url("mqtts://broker.example"),
            Ok(BrokerAddr {
                host: "broker.example".into(),
                port: 8883,
                tls: true,
            })
        );
        assert!(parse_broker_url("mqtt://h:99999").is_err());
        assert!(parse_broker_url("http://h").is_err());
    }
}
