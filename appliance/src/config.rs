//! The appliance's configuration: one TOML file, every key with a documented default,
//! unknown keys rejected, and errors that name the line, the key, the value and what would be
//! valid.
//!
//! Each component owns its section — its struct, defaults and checks live beside its code
//! (`line::config`, `screen::config`, `store::config`, `report::config`); this module only
//! assembles the file, checks what spans sections (ids, lines that must differ) and reports
//! every problem with its line number. The console's section is here: the console sits
//! above the configuration (it shows it and checks pasted ones), not below it.

pub use crate::line::config::{ControllerGeometry, LineConfig, XrayAfter};
use crate::problems::{is_id, Problem, Problems};
pub use crate::report::config::{
    parse_broker_url, BrokerAddr, FeedConfig, MqttConfig, RegulatorConfig, SiteConfig, MAX_WINDOW,
};
pub use crate::screen::config::{ModelConfig, RulesConfig};
pub use crate::store::config::{StoreConfig, MIN_RETENTION_DAYS};
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
    /// Values that parse but cannot work together; each problem starts with its line in the
    /// file where the key is set (or its section's, for a default).
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
    /// Sightings shared with the site's other appliances. Default: none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub site: Option<SiteConfig>,
    /// The lines this appliance serves; at least one.
    pub lines: Vec<LineConfig>,
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
    /// The judging queue (`[console.queue]`).
    #[serde(default)]
    pub queue: QueueConfig,
}

impl Default for ConsoleConfig {
    fn default() -> Self {
        ConsoleConfig {
            listen: default_console(),
            allowed_hosts: None,
            trusted_proxies: Vec::new(),
            metrics_token: None,
            queue: QueueConfig::default(),
        }
    }
}

/// The judging queue (`[console.queue]`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QueueConfig {
    /// How long a parcel an operator has opened is offered to no one else, seconds, 30 to
    /// 3600. Default: 180.
    #[serde(default = "default_lease_s")]
    pub lease_s: u64,
    /// How long a clear can be undone before it is recorded, seconds, 1 to 60. Default: 5.
    #[serde(default = "default_undo_s")]
    pub undo_s: u64,
    /// The share of cleared parcels drawn at random for re-review: their scans are kept and
    /// they enter the queue marked so, and the statistics count what their re-reviews find.
    /// 0 to 1. Default: 0.01 (1 %).
    #[serde(default = "default_rereview_share")]
    pub rereview_share: f64,
}

impl Default for QueueConfig {
    fn default() -> Self {
        QueueConfig {
            lease_s: default_lease_s(),
            undo_s: default_undo_s(),
            rereview_share: default_rereview_share(),
        }
    }
}

fn default_rereview_share() -> f64 {
    0.01
}

fn default_lease_s() -> u64 {
    180
}

fn default_undo_s() -> u64 {
    5
}

impl ConsoleConfig {
    /// Checks `[console]`.
    pub fn problems(&self, p: &mut Problems) {
        for h in self.allowed_hosts.iter().flatten() {
            let ok = !h.is_empty()
                && h.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b".-_:[]".contains(&b));
            if !ok {
                p.push("allowed_hosts", format_args!(": {h:?} is not a host name or address; give names like \"screenline.local\" or addresses like \"10.0.0.5\", without port or scheme"));
            }
        }
        p.range(
            "queue.lease_s",
            self.queue.lease_s,
            30..=3600,
            " seconds (a few minutes: long enough to open a parcel)",
        );
        p.range("queue.undo_s", self.queue.undo_s, 1..=60, " seconds");
        p.range(
            "queue.rereview_share",
            self.queue.rereview_share,
            0.0..=1.0,
            " (0.01 draws 1 % of cleared parcels for re-review)",
        );
        if let Some(t) = &self.metrics_token {
            if t.chars().count() < 16 || t.chars().any(|c| c.is_whitespace() || c.is_control()) {
                p.push("metrics_token", ": use at least 16 characters and no spaces (e.g. the output of `openssl rand -hex 16`)");
            }
        }
    }
}

fn default_console() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 8080))
}

/// Where the appliance keeps its data unless configured otherwise.
pub const DEFAULT_DATA_DIR: &str = "/var/lib/screenline";

fn default_data_dir() -> PathBuf {
    PathBuf::from(DEFAULT_DATA_DIR)
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
                problems: problems
                    .into_iter()
                    .map(|p| match locate(text, &p.key) {
                        Some(line) => format!("line {line}: {}", p.text),
                        None => p.text,
                    })
                    .collect(),
            })
        }
    }

    /// Every problem of every section, in the file's order of sections.
    fn problems(&self) -> Vec<Problem> {
        let mut p = Problems::new("");
        for (key, value) in [
            ("site_id", &self.site_id),
            ("appliance_id", &self.appliance_id),
        ] {
            if !is_id(value) {
                p.push(key, format_args!(" = {value:?}: use letters, digits, - and _ (it becomes an MQTT topic level)"));
            }
        }
        let mut section = |name: &str, check: &dyn Fn(&mut Problems)| {
            let mut sub = Problems::new(name);
            check(&mut sub);
            p.extend(sub);
        };
        section("console", &|s| self.console.problems(s));
        section("mqtt", &|s| self.mqtt.problems(s));
        section("regulator", &|s| self.regulator.problems(s));
        if let Some(site) = &self.site {
            section("site", &|s| site.problems(s, &self.appliance_id));
        }
        section("model", &|s| self.model.problems(s));
        section("rules", &|s| self.rules.problems(s));
        section("store", &|s| self.store.problems(s));
        for (i, l) in self.lines.iter().enumerate() {
            section(&format!("lines[{i}]"), &|s| l.problems(s));
        }
        if self.lines.is_empty() {
            p.push("lines", ": at least one [[lines]] table is needed");
        }
        for (i, l) in self.lines.iter().enumerate() {
            let earlier = &self.lines[..i];
            if earlier.iter().any(|o| o.id == l.id) {
                p.push(
                    &format!("lines[{i}].id"),
                    format_args!(" = {:?}: used by two lines", l.id),
                );
            }
            if let Some(j) = earlier.iter().position(|o| o.xray_dir == l.xray_dir) {
                p.push(
                    &format!("lines[{i}].xray_dir"),
                    format_args!(
                        " = {:?}: already lines[{j}]'s drop folder; each line needs its own",
                        l.xray_dir
                    ),
                );
            }
        }
        p.into_vec()
    }

    /// The MQTT client id.
    pub fn client_id(&self) -> String {
        self.feed().client_id()
    }

    /// `screenline/v1/{site_id}/{appliance_id}`.
    pub fn topic_root(&self) -> String {
        self.feed().topic_root()
    }

    /// What the regulator feed needs of the configuration.
    pub fn feed(&self) -> FeedConfig {
        FeedConfig {
            site_id: self.site_id.clone(),
            appliance_id: self.appliance_id.clone(),
            mqtt: self.mqtt.clone(),
            regulator: self.regulator.clone(),
            site: self.site.clone(),
        }
    }
}

/// The line (1-based) of `text` where the key path `key` (`mqtt.url`, `lines[1].controller
/// .gate_width_mm`) is set; failing that, where the nearest enclosing table or key is. `None`
/// when the file sets nothing on the path (a default at fault, with no section written).
fn locate(text: &str, key: &str) -> Option<usize> {
    // The path of every table header and key, as `a.b[2].c`.
    let mut arrays: std::collections::HashMap<String, usize> = Default::default();
    let mut table = String::new();
    let mut best: Option<(usize, usize)> = None; // (matched length, line)
    let resolve = |dotted: &str, arrays: &std::collections::HashMap<String, usize>| {
        // `lines.controller` inside the current `[[lines]]` is `lines[k].controller`.
        let mut out = String::new();
        for part in dotted.split('.').map(str::trim) {
            if !out.is_empty() {
                out.push('.');
            }
            out.push_str(part.trim_matches('"'));
            if let Some(k) = arrays.get(&out) {
                out = format!("{out}[{k}]");
            }
        }
        out
    };
    for (n, raw) in text.lines().enumerate() {
        let line = raw.trim();
        let path = if let Some(name) = line.strip_prefix("[[").and_then(|l| l.split("]]").next()) {
            // The array itself is not indexed yet: only the tables it lies in.
            let base = match name.rsplit_once('.') {
                Some((parent, last)) => format!("{}.{}", resolve(parent, &arrays), last.trim()),
                None => name.trim().to_owned(),
            };
            let k = arrays
                .entry(base.clone())
                .and_modify(|k| *k += 1)
                .or_insert(0);
            table = format!("{base}[{k}]");
            table.clone()
        } else if let Some(name) = line.strip_prefix('[').and_then(|l| l.split(']').next()) {
            table = resolve(name, &arrays);
            table.clone()
        } else if let Some((k, _)) = line.split_once('=').filter(|_| !line.starts_with('#')) {
            let k = resolve(k, &Default::default());
            if table.is_empty() {
                k
            } else {
                format!("{table}.{k}")
            }
        } else {
            continue;
        };
        let matches =
            key == path || key.starts_with(&path) && key[path.len()..].starts_with(['.', '[']);
        if matches && best.is_none_or(|(len, _)| path.len() >= len) {
            best = Some((path.len(), n + 1));
        }
    }
    best.map(|(_, line)| line)
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
    use crate::line::waybill::Framing;

    const MINIMAL: &str = r#"
site_id = "SZ01"
appliance_id = "xr-01"
[[lines]]
id = "L1"
reader_port = "/dev/screenline/L1-reader"
controller_port = "/dev/screenline/L1-controller"
xray_dir = "/var/spool/xray/L1"
"#;

    /// The problems of a configuration that must not pass, as one message.
    fn invalid(text: &str) -> String {
        Config::parse(text, Path::new("t.toml"))
            .expect_err("invalid")
            .to_string()
    }

    #[test]
    fn minimal_config_gets_defaults() {
        let c = Config::parse(MINIMAL, Path::new("t.toml")).expect("valid");
        assert_eq!(c.mqtt.url, "mqtt://127.0.0.1:1883");
        assert_eq!(c.lines[0].reader_framing, Framing::Line);
        assert_eq!(c.topic_root(), "screenline/v1/SZ01/xr-01");
        assert_eq!(c.console.listen.port(), 8080);
        let q = &c.console.queue;
        assert_eq!((q.lease_s, q.undo_s, q.rereview_share), (180, 5, 0.01));
        let e = invalid(&format!(
            "{MINIMAL}[console.queue]\nrereview_share = 1.5\nundo_s = 0\n"
        ));
        assert!(
            e.contains("console.queue.rereview_share = 1.5: must be 0 to 1"),
            "{e}"
        );
        assert!(
            e.contains("console.queue.undo_s = 0: must be 1 to 60"),
            "{e}"
        );
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
    fn every_problem_names_its_line() {
        let text = format!(
            "{MINIMAL}join_window_ms = 50\n[lines.controller]\neye_to_gate_mm = 200\n\
             [[lines]]\nid = \"L1\"\nreader_port = \"/r\"\ncontroller_port = \"/c\"\n\
             xray_dir = \"/var/spool/xray/L1\"\n[lines.controller]\neye_to_gate_mm = 4000\ngate_width_mm = 0\n\
             [mqtt]\nwindow = 0\n[rules.policy]\ndecision_late = \"count\"\n"
        );
        let e = Config::parse(&text, Path::new("t.toml")).expect_err("invalid");
        let ConfigError::Invalid { problems, .. } = &e else {
            panic!("{e}")
        };
        for expected in [
            "line 9: lines[0].join_window_ms = 50: must be 100 to 10000",
            "line 10: lines[0].controller.decision_margin_mm = 300",
            "line 4: lines[0]: read_window_ms",
            "line 13: lines[1].id = \"L1\": used by two lines",
            "line 16: lines[1].xray_dir",
            "line 19: lines[1].controller.gate_width_mm = 0",
            "line 21: mqtt.window = 0",
            "line 23: rules.policy.decision_late: cannot be overridden",
        ] {
            assert!(
                problems.iter().any(|p| p.starts_with(expected)),
                "{expected:?} not in {problems:#?}"
            );
        }
        // A default at fault: the line of its section.
        let text = format!("{MINIMAL}decision_deadline_ms = 1000\n");
        let e = Config::parse(&text, Path::new("t.toml")).expect_err("invalid");
        assert!(
            e.to_string().contains(
                "line 4: lines[0].join_window_ms = 1500: must be less than decision_deadline_ms"
            ),
            "{e}"
        );
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
        let s = invalid(&text);
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
        let s = invalid(&bad);
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
        let s = invalid(&huge);
        assert!(s.contains("beyond the encoder's range"), "{s}");
    }

    #[test]
    fn tls_and_regulator_keys_are_checked_and_explained() {
        let tls = format!("{MINIMAL}[mqtt]\nurl = \"mqtts://b:8883\"\nclient_cert_file = \"/nonexistent/c.pem\"\n");
        let s = invalid(&tls);
        assert!(
            s.contains("mqtt.ca_file") && s.contains("client_key_file"),
            "{s}"
        );
        assert!(
            s.contains("/nonexistent/c.pem") && s.contains("no such file"),
            "{s}"
        );
        let plain = format!("{MINIMAL}[mqtt]\nca_file = \"/etc/hostname\"\n");
        let s = invalid(&plain);
        assert!(
            s.contains("mqtt.ca_file is set but") && s.contains("mqtts://"),
            "{s}"
        );
        let window = format!("{MINIMAL}[mqtt]\nwindow = 500\n");
        assert!(invalid(&window).contains("mqtt.window = 500: must be 1 to 100"));
        let key = format!("{MINIMAL}[regulator]\npublic_key = \"AAAA\"\n");
        let s = invalid(&key);
        assert!(
            s.contains("regulator.public_key") && s.contains("32 raw bytes"),
            "{s}"
        );
        let c = Config::parse(MINIMAL, Path::new("t.toml")).expect("valid");
        assert_eq!(c.regulator.public_key, None);
        assert_eq!(c.regulator.max_age_s, 300);
        assert_eq!(c.mqtt.stats_period_s, 3600);
    }
}
