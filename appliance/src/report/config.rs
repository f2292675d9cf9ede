//! The regulator feed's configuration (`[mqtt]`, `[regulator]`, `[site]`): the broker, TLS,
//! the feed's window and statistics period, the regulator's command key, the site's shared
//! sightings (key files and peers), with their defaults and checks.

use crate::problems::Problems;
use serde::{Deserialize, Serialize};
use std::path::PathBuf;

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

fn default_keep_alive() -> u64 {
    15
}
fn default_window() -> usize {
    32
}
/// The largest `mqtt.window`: rumqttc's in-flight limit is set to twice this plus room for
/// status, stats and command answers, far below its 16-bit packet-id space.
pub const MAX_WINDOW: usize = 100;
fn default_broker() -> String {
    "mqtt://127.0.0.1:1883".into()
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

/// The appliances of one site sharing pseudonymous sightings, so that the split-shipment
/// rule counts a sender's parcels on all of them (README, "Split shipments across a site").
/// Without this section nothing is shared.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SiteConfig {
    /// The site key: a file holding base64 of at least 32 random bytes
    /// (`head -c 32 /dev/urandom | base64`), the same on every appliance of the site, readable
    /// by the service user only (mode 0600 or 0400). Signs this appliance's sightings.
    pub key_file: PathBuf,
    /// Keys also accepted from peers during a rotation (same form and mode). Default: none.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub accepted_key_files: Vec<PathBuf>,
    /// The site's other appliances (their `appliance_id`s) whose sightings are folded into
    /// the ledger; sightings from any other are refused.
    pub peers: Vec<String>,
    /// Sightings per second one peer may send, sustained. Default: 50 (an appliance of 8
    /// lines at full belt speed sends 16).
    #[serde(default = "default_peer_rate")]
    pub peer_rate_per_s: u32,
    /// Sightings one peer may send at once beyond its rate: the catch-up after a broker
    /// outage. Default: 20000.
    #[serde(default = "default_peer_burst")]
    pub peer_burst: u32,
    /// Most senders (× categories) the ledger holds; beyond it peers' sightings of new
    /// senders are refused (`ledger_full`), parcels seen here are always counted.
    /// Default: 1000000.
    #[serde(default = "default_max_senders")]
    pub max_senders: usize,
}

fn default_peer_rate() -> u32 {
    50
}
fn default_peer_burst() -> u32 {
    20_000
}
fn default_max_senders() -> usize {
    1_000_000
}

/// A site key file that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum KeyFileError {
    #[error("{path:?}: cannot read it: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path:?} is readable by group or others (mode {mode:04o}): a site key must be readable by the service user only; run `chown screenline: {path:?} && chmod 600 {path:?}`")]
    Exposed { path: PathBuf, mode: u32 },
    #[error("{path:?}: {why}")]
    Invalid {
        path: PathBuf,
        why: screenline_core::sighting::KeyError,
    },
}

/// Reads a site key file, refusing one that group or others may read.
pub fn read_key_file(path: &std::path::Path) -> Result<SiteKey, KeyFileError> {
    use std::os::unix::fs::PermissionsExt;
    let read = |source| KeyFileError::Read {
        path: path.to_owned(),
        source,
    };
    let mode = std::fs::metadata(path).map_err(read)?.permissions().mode() & 0o7777;
    if mode & 0o077 != 0 {
        return Err(KeyFileError::Exposed {
            path: path.to_owned(),
            mode,
        });
    }
    let text = std::fs::read_to_string(path).map_err(read)?;
    SiteKey::from_base64(&text).map_err(|why| KeyFileError::Invalid {
        path: path.to_owned(),
        why,
    })
}

use screenline_core::sighting::{SiteKey, SiteKeys};

impl SiteConfig {
    /// A site of `peers` sharing the key in `key_file`, every other setting its default.
    pub fn new(key_file: PathBuf, peers: Vec<String>) -> SiteConfig {
        SiteConfig {
            key_file,
            accepted_key_files: Vec::new(),
            peers,
            peer_rate_per_s: default_peer_rate(),
            peer_burst: default_peer_burst(),
            max_senders: default_max_senders(),
        }
    }

    /// The site's keys, read from their files.
    pub fn keys(&self) -> Result<SiteKeys, KeyFileError> {
        let current = read_key_file(&self.key_file)?;
        let accepted = self
            .accepted_key_files
            .iter()
            .map(|f| read_key_file(f))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(SiteKeys::new(current, accepted))
    }

    /// Checks `[site]` for the appliance `appliance_id`.
    pub fn problems(&self, p: &mut Problems, appliance_id: &str) {
        if let Err(e) = read_key_file(&self.key_file) {
            p.push("key_file", format_args!(": {e}"));
        }
        for (i, f) in self.accepted_key_files.iter().enumerate() {
            if let Err(e) = read_key_file(f) {
                p.push(&format!("accepted_key_files[{i}]"), format_args!(": {e}"));
            }
        }
        if self.peers.is_empty() {
            p.push("peers", ": name the site's other appliances (their appliance_id), e.g. peers = [\"xr-02\", \"xr-03\"]; without peers, remove [site]");
        }
        for (i, peer) in self.peers.iter().enumerate() {
            if !crate::problems::is_id(peer) {
                p.push(
                    &format!("peers[{i}]"),
                    format_args!(" = {peer:?}: an appliance_id is letters, digits, - and _"),
                );
            } else if peer == appliance_id {
                p.push(
                    &format!("peers[{i}]"),
                    format_args!(" = {peer:?}: this appliance itself; list only the others"),
                );
            } else if self.peers[..i].contains(peer) {
                p.push(
                    &format!("peers[{i}]"),
                    format_args!(" = {peer:?}: listed twice"),
                );
            }
        }
        p.range("peer_rate_per_s", self.peer_rate_per_s, 1..=100_000, "");
        p.range("peer_burst", self.peer_burst, 1..=10_000_000, "");
        p.range("max_senders", self.max_senders, 1_000..=100_000_000, "");
    }
}

/// What the feed needs of the whole configuration: the appliance's ids and its sections.
#[derive(Debug, Clone)]
pub struct FeedConfig {
    pub site_id: String,
    pub appliance_id: String,
    pub mqtt: MqttConfig,
    pub regulator: RegulatorConfig,
    /// `[site]`: the sightings shared with the site's other appliances, if any.
    pub site: Option<SiteConfig>,
}

impl FeedConfig {
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

impl MqttConfig {
    /// Checks `[mqtt]`.
    pub fn problems(&self, p: &mut Problems) {
        let m = self;
        match parse_broker_url(&m.url) {
            Err(e) => p.push("url", format_args!(": {e}")),
            Ok(a) if a.tls => {
                if m.ca_file.is_none() {
                    p.push("ca_file", format_args!(": {:?} is TLS; set ca_file to the PEM file of the CA that signed the broker's certificate", m.url));
                }
                if m.client_cert_file.is_some() != m.client_key_file.is_some() {
                    p.push("client_cert_file", " and mqtt.client_key_file: set both (a client certificate and its private key, PEM) or neither");
                }
                for (key, f) in [
                    ("ca_file", &m.ca_file),
                    ("client_cert_file", &m.client_cert_file),
                    ("client_key_file", &m.client_key_file),
                ] {
                    if let Some(f) = f {
                        if !f.is_file() {
                            p.push(
                                key,
                                format_args!(" = {f:?}: no such file; give the path of a PEM file"),
                            );
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
                        p.push(key, format_args!(" is set but mqtt.url {:?} is plain TCP; use mqtts://HOST:PORT for TLS, or remove {key}", m.url));
                    }
                }
            }
        }
        // rumqttc's packet ids run 1..=inflight; the feed keeps its own window (plus a
        // few status, stats and command answers) well below that (see PITFALLS.md).
        p.range("window", m.window, 1..=MAX_WINDOW, "");
        p.range("stats_period_s", m.stats_period_s, 1..=86_400, " (one day)");
    }
}

impl RegulatorConfig {
    /// Checks `[regulator]`.
    pub fn problems(&self, p: &mut Problems) {
        if let Some(k) = &self.public_key {
            if let Err(e) = crate::report::commands::parse_public_key(k) {
                p.push("public_key", format_args!(": {e}; give the regulator's Ed25519 public key as base64 of its 32 raw bytes (see README)"));
            }
        }
        p.range("max_age_s", self.max_age_s, 10..=86_400, "");
        if self.max_future_s > 3600 {
            p.push(
                "max_future_s",
                format_args!(" = {}: must be at most 3600", self.max_future_s),
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_site_key_readable_by_others_is_refused() {
        use std::os::unix::fs::PermissionsExt;
        let dir = crate::testutil::temp_dir("site-key");
        let f = dir.join("site.key");
        std::fs::write(&f, "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=\n").expect("write");
        for (mode, ok) in [(0o644, false), (0o640, false), (0o600, true), (0o400, true)] {
            std::fs::set_permissions(&f, std::fs::Permissions::from_mode(mode)).expect("chmod");
            let r = read_key_file(&f);
            assert_eq!(r.is_ok(), ok, "mode {mode:o}: {r:?}");
            if let Err(e) = r {
                assert!(e.to_string().contains("chmod 600"), "{e}");
            }
        }
        std::fs::write(&f, "c2hvcnQ=").expect("write");
        let e = read_key_file(&f).expect_err("too short");
        assert!(e.to_string().contains("at least 32"), "{e}");
        let c = SiteConfig {
            key_file: f.clone(),
            accepted_key_files: vec![],
            peers: vec!["a1".into(), "a2".into(), "a2".into(), "bad id".into()],
            peer_rate_per_s: default_peer_rate(),
            peer_burst: default_peer_burst(),
            max_senders: default_max_senders(),
        };
        let mut p = Problems::new("site");
        c.problems(&mut p, "a1");
        let text: Vec<String> = p.into_vec().into_iter().map(|p| p.text).collect();
        assert_eq!(text.len(), 4, "{text:?}");
        assert!(text[0].starts_with("site.key_file"), "{text:?}");
        assert!(text[1].contains("this appliance itself"), "{text:?}");
        assert!(text[2].contains("listed twice"), "{text:?}");
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
