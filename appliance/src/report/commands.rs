//! The regulator's signed commands (`{root}/cmd/{command}`): verification as pure functions,
//! the envelope's format, and the bodies of `watchlist`, `thresholds` and `evidence`. The
//! feed ([`super::Feed`]) does the I/O: it claims the nonce in the store, applies the command,
//! audits it and answers on `{root}/cmd-result`.
//!
//! # The envelope (`screenline.cmd.v1`)
//!
//! ```json
//! {"schema": "screenline.cmd.v1",
//!  "payload": "{\"command\":\"thresholds\",\"site_id\":\"SZ01\",\"appliance_id\":\"xr-01\",\"issued_at\":\"2026-11-25T16:00:00Z\",\"nonce\":\"4f1c9a0e2b7d\",\"body\":{\"medicine\":0.7}}",
//!  "signature": "base64 of the 64-byte Ed25519 signature"}
//! ```
//!
//! The signature is over the exact UTF-8 bytes of the `payload` string (after JSON
//! unescaping of the envelope), so nothing has to be canonicalised: the regulator signs the
//! bytes it puts in the string, and the appliance verifies those bytes before it reads them.
//! The payload names the appliance (`site_id`, `appliance_id`) so that a command signed for
//! one appliance cannot be replayed to another, carries `issued_at` (RFC 3339, UTC) checked
//! against `[regulator] max_age_s` and `max_future_s`, and a `nonce` (8–128 of
//! `A-Z a-z 0-9 - _`) that the appliance accepts once.

use crate::domain::Category;
use crate::screen::rules::WatchlistFile;
use base64::Engine;
use ed25519_dalek::{Signature, VerifyingKey};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};
use thiserror::Error;

/// The envelope's `schema`.
pub const CMD_SCHEMA: &str = "screenline.cmd.v1";
/// The answer's `schema`.
pub const RESULT_SCHEMA: &str = "screenline.cmd-result.v1";

/// The commands a regulator may send.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Command {
    /// Replace the watch-list (body: the watch-list file format).
    Watchlist,
    /// Set counterfeit thresholds per category (body: `{category_key: 0..1}`).
    Thresholds,
    /// Publish a report's full image (body: `{"report_id": "rpt-…"}`).
    Evidence,
}

impl Command {
    /// The command's name, as in the topic and the payload.
    pub fn key(self) -> &'static str {
        match self {
            Command::Watchlist => "watchlist",
            Command::Thresholds => "thresholds",
            Command::Evidence => "evidence",
        }
    }

    /// Parses a command name.
    pub fn from_key(key: &str) -> Option<Command> {
        [Command::Watchlist, Command::Thresholds, Command::Evidence]
            .into_iter()
            .find(|c| c.key() == key)
    }
}

/// Why a command was refused. Every variant has a counter `cmd.refused.<key>`.
#[derive(Debug, Clone, PartialEq, Error)]
pub enum Refusal {
    #[error(
        "no regulator public key is configured ([regulator] public_key): every command is refused"
    )]
    NoKey,
    #[error("malformed command: {0}")]
    Malformed(String),
    #[error("unsigned command: the envelope has no signature")]
    Unsigned,
    #[error("the signature does not verify against the regulator's public key")]
    BadSignature,
    #[error("stale command: issued {age_s} s ago, more than the {max_s} s allowed")]
    Stale { age_s: u64, max_s: u64 },
    #[error("command issued {ahead_s} s in the future, more than the {max_s} s allowed")]
    Future { ahead_s: u64, max_s: u64 },
    #[error("replayed command: nonce {0:?} was seen before")]
    Replay(String),
    #[error("the topic names command {topic:?} but the payload says {command:?}")]
    WrongTopic { topic: String, command: String },
    #[error("the command is addressed to {0}, not to this appliance")]
    WrongTarget(String),
    #[error("unknown command {0:?} (watchlist, thresholds, evidence)")]
    UnknownCommand(String),
    #[error("malformed body: {0}")]
    BadBody(String),
    #[error("no image for report {0:?}: unknown report, or its image was deleted or evicted")]
    NoEvidence(String),
    #[error("the appliance's store failed: {0}")]
    Store(String),
}

impl Refusal {
    /// The short key used in counters and audit entries.
    pub fn key(&self) -> &'static str {
        match self {
            Refusal::NoKey => "no_key",
            Refusal::Malformed(_) => "malformed",
            Refusal::Unsigned => "unsigned",
            Refusal::BadSignature => "bad_signature",
            Refusal::Stale { .. } => "stale",
            Refusal::Future { .. } => "future",
            Refusal::Replay(_) => "replay",
            Refusal::WrongTopic { .. } => "wrong_topic",
            Refusal::WrongTarget(_) => "wrong_target",
            Refusal::UnknownCommand(_) => "unknown_command",
            Refusal::BadBody(_) => "bad_body",
            Refusal::NoEvidence(_) => "no_evidence",
            Refusal::Store(_) => "store_error",
        }
    }
}

/// What the appliance checks commands against.
#[derive(Debug, Clone)]
pub struct Verifier {
    /// The regulator's key; without one every command is refused.
    pub key: Option<VerifyingKey>,
    pub site_id: String,
    pub appliance_id: String,
    /// Oldest `issued_at` accepted, as an age.
    pub max_age: Duration,
    /// How far ahead of our clock `issued_at` may be.
    pub max_future: Duration,
}

/// Parses the configured public key: base64 of the raw 32-byte Ed25519 key.
pub fn parse_public_key(b64: &str) -> Result<VerifyingKey, String> {
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(b64.trim())
        .map_err(|e| format!("not base64 ({e})"))?;
    let arr: [u8; 32] = bytes.as_slice().try_into().map_err(|_| {
        format!(
            "{} bytes; an Ed25519 public key is 32 raw bytes, base64-encoded",
            bytes.len()
        )
    })?;
    VerifyingKey::from_bytes(&arr).map_err(|e| format!("not an Ed25519 public key ({e})"))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Envelope {
    schema: String,
    payload: String,
    #[serde(default)]
    signature: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Payload {
    command: String,
    site_id: String,
    appliance_id: String,
    issued_at: String,
    nonce: String,
    body: Value,
}

/// What a command says about itself, for the answer: the command (only a known name) and,
/// once the signature verified, the nonce. Nothing an unverified sender wrote is echoed.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Claimed {
    pub nonce: Option<String>,
    pub command: Option<String>,
    /// Whether the signature verified: the payload is the regulator's own words.
    pub signed: bool,
}

/// A command whose signature, target, age and topic were checked. The nonce is still to be
/// claimed (in the store) before it is acted on.
#[derive(Debug, Clone, PartialEq)]
pub struct Verified {
    pub command: Command,
    pub nonce: String,
    pub issued_at: SystemTime,
    pub body: Value,
}

fn nonce_ok(n: &str) -> bool {
    (8..=128).contains(&n.len())
        && n.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

impl Verifier {
    /// Checks a command received on `{root}/cmd/{topic_command}` at `now`. Returns what the
    /// command claims (for the answer) and the verified command or why it is refused.
    pub fn verify(
        &self,
        raw: &[u8],
        topic_command: &str,
        now: SystemTime,
    ) -> (Claimed, Result<Verified, Refusal>) {
        let mut claimed = Claimed {
            nonce: None,
            command: Command::from_key(topic_command).map(|c| c.key().to_owned()),
            signed: false,
        };
        let malformed = |what: &str, e: serde_json::Error| {
            Refusal::Malformed(format!("{what}: {}", without_values(&e)))
        };
        let env: Envelope = match serde_json::from_slice(raw) {
            Ok(e) => e,
            Err(e) => {
                let what = format!("not a {CMD_SCHEMA} envelope");
                return (claimed, Err(malformed(&what, e)));
            }
        };
        if env.schema != CMD_SCHEMA {
            return (
                claimed,
                Err(Refusal::Malformed(format!("schema is not {CMD_SCHEMA:?}"))),
            );
        }
        let payload: Payload = match serde_json::from_str(&env.payload) {
            Ok(p) => p,
            Err(e) => return (claimed, Err(malformed("payload", e))),
        };
        let nonce = payload.nonce.clone();
        let result = self.check(&env, payload, topic_command, now);
        claimed.signed = !matches!(
            result,
            Err(Refusal::NoKey | Refusal::Unsigned | Refusal::BadSignature)
        );
        if claimed.signed {
            claimed.nonce = Some(nonce);
        }
        (claimed, result)
    }

    fn check(
        &self,
        env: &Envelope,
        payload: Payload,
        topic_command: &str,
        now: SystemTime,
    ) -> Result<Verified, Refusal> {
        let key = self.key.as_ref().ok_or(Refusal::NoKey)?;
        let sig_b64 = env
            .signature
            .as_deref()
            .filter(|s| !s.trim().is_empty())
            .ok_or(Refusal::Unsigned)?;
        let sig = base64::engine::general_purpose::STANDARD
            .decode(sig_b64.trim())
            .ok()
            .and_then(|b| Signature::from_slice(&b).ok())
            .ok_or(Refusal::BadSignature)?;
        key.verify_strict(env.payload.as_bytes(), &sig)
            .map_err(|_| Refusal::BadSignature)?;
        // From here on the payload is the regulator's own words.
        if payload.command != topic_command {
            return Err(Refusal::WrongTopic {
                topic: topic_command.to_owned(),
                command: payload.command,
            });
        }
        if payload.site_id != self.site_id || payload.appliance_id != self.appliance_id {
            return Err(Refusal::WrongTarget(format!(
                "{}/{}",
                payload.site_id, payload.appliance_id
            )));
        }
        if !nonce_ok(&payload.nonce) {
            return Err(Refusal::Malformed(
                "nonce must be 8 to 128 of A-Z a-z 0-9 - _".into(),
            ));
        }
        let issued_at = crate::time_fmt::parse(&payload.issued_at)
            .map_err(|e| Refusal::Malformed(format!("issued_at {:?}: {e}", payload.issued_at)))?;
        match now.duration_since(issued_at) {
            Ok(age) if age > self.max_age => {
                return Err(Refusal::Stale {
                    age_s: age.as_secs(),
                    max_s: self.max_age.as_secs(),
                })
            }
            Err(ahead) if ahead.duration() > self.max_future => {
                return Err(Refusal::Future {
                    ahead_s: ahead.duration().as_secs(),
                    max_s: self.max_future.as_secs(),
                })
            }
            _ => {}
        }
        let command = Command::from_key(&payload.command)
            .ok_or_else(|| Refusal::UnknownCommand(payload.command.clone()))?;
        Ok(Verified {
            command,
            nonce: payload.nonce,
            issued_at,
            body: payload.body,
        })
    }
}

/// What a serde error expected, without the value it found: `expected a string`, `missing
/// field `ids``. The value may be personal data (an ID number in the wrong place) or an
/// attacker's bulk, and never travels on in our words.
fn expectation(e: &serde_json::Error) -> String {
    let msg = e.to_string();
    let msg = msg.split(" at line ").next().unwrap_or_default();
    if msg.starts_with("missing field") {
        msg.to_owned()
    } else if let Some((_, expected)) = msg.split_once(", expected ") {
        format!("expected {expected}")
    } else {
        "invalid value".to_owned()
    }
}

/// A parse error of unverified input: where, and what was expected; never what was found.
pub fn without_values(e: &serde_json::Error) -> String {
    match e.classify() {
        serde_json::error::Category::Data => {
            format!(
                "{} (line {}, column {})",
                expectation(e),
                e.line(),
                e.column()
            )
        }
        _ => format!("not valid JSON (line {}, column {})", e.line(), e.column()),
    }
}

/// Reads a signed command's body as `T`; an error names the field and what it should be,
/// never the value.
fn body<T: serde::de::DeserializeOwned>(what: &str, body: &Value) -> Result<T, Refusal> {
    serde_path_to_error::deserialize(body).map_err(|e| {
        let field = e.path().to_string();
        Refusal::BadBody(format!("{what}: {field}: {}", expectation(e.inner())))
    })
}

/// The `watchlist` body: the watch-list file format.
pub fn watchlist_body(body_value: &Value) -> Result<WatchlistFile, Refusal> {
    let file: WatchlistFile = body("watch-list", body_value)?;
    if file.version.trim().is_empty() {
        return Err(Refusal::BadBody("watch-list: empty version".into()));
    }
    Ok(file)
}

/// The `thresholds` body: `{category_key: 0..1}`, at least one.
pub fn thresholds_body(body: &Value) -> Result<BTreeMap<Category, f32>, Refusal> {
    let map = body
        .as_object()
        .filter(|m| !m.is_empty())
        .ok_or_else(|| Refusal::BadBody("thresholds: an object of category key → 0..1".into()))?;
    let mut out = BTreeMap::new();
    for (k, v) in map {
        let cat = Category::from_key(k).ok_or_else(|| {
            Refusal::BadBody(format!(
                "thresholds: {k:?} is not a category key (one of {})",
                Category::ALL.map(|c| c.key()).join(", ")
            ))
        })?;
        let t = v
            .as_f64()
            .filter(|t| (0.0..=1.0).contains(t))
            .ok_or_else(|| {
                Refusal::BadBody(format!("thresholds: {k}: expected a number from 0 to 1"))
            })?;
        out.insert(cat, t as f32);
    }
    Ok(out)
}

/// The `evidence` body: `{"report_id": "rpt-…"}`.
pub fn evidence_body(body_value: &Value) -> Result<String, Refusal> {
    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct B {
        report_id: String,
    }
    let b: B = body("evidence", body_value)?;
    let ok = b.report_id.len() <= 64
        && b.report_id.starts_with("rpt-")
        && b.report_id[4..].bytes().all(|c| c.is_ascii_hexdigit());
    if !ok {
        return Err(Refusal::BadBody(
            "evidence: report_id: expected a report id (rpt- and hex digits, at most 64)".into(),
        ));
    }
    Ok(b.report_id)
}

/// The command's name for the audit log: a known command, else `unknown` (the topic level is
/// the sender's choice and is not copied into the log).
pub fn audit_name(topic_command: &str) -> &'static str {
    Command::from_key(topic_command).map_or("unknown", Command::key)
}

/// The `screenline.cmd-result.v1` answer.
pub fn result(claimed: &Claimed, ok: bool, message: &str) -> Vec<u8> {
    serde_json::to_vec(&json!({
        "schema": RESULT_SCHEMA,
        "nonce": claimed.nonce,
        "command": claimed.command,
        "ok": ok,
        "message": message,
    }))
    .unwrap_or_default()
}

/// One archived evidence file, read for the regulator.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EvidenceFile {
    /// The file's extension (png, tif, ...).
    pub format: String,
    /// Its bytes, exactly as archived.
    pub bytes: Vec<u8>,
}

impl EvidenceFile {
    fn read(path: &std::path::Path) -> Option<EvidenceFile> {
        // Through a checked descriptor, like the drop folder: a link is never followed.
        let (bytes, _) =
            crate::line::dropfile::read_regular(path, crate::line::image::MAX_IMAGE_BYTES).ok()?;
        let format = path.extension()?.to_str()?.to_ascii_lowercase();
        Some(EvidenceFile { format, bytes })
    }
}

/// Reads a report's archived evidence, as the record names it: the image, and when that is
/// the high-energy half of a pair (`<record>.high.<ext>`), the low-energy half beside it
/// (`<record>.low.<ext>`) — the files whose hashes the report gave. `None` when a file is
/// missing (evicted, deleted) or is not a regular file.
pub fn read_evidence(image: &std::path::Path) -> Option<(EvidenceFile, Option<EvidenceFile>)> {
    let first = EvidenceFile::read(image)?;
    let name = image.file_name()?.to_str()?;
    let Some(stem) = name
        .strip_suffix(&format!(".{}", first.format))
        .and_then(|n| n.strip_suffix(".high"))
    else {
        return Some((first, None));
    };
    let low = crate::line::xray::IMAGE_EXTENSIONS
        .iter()
        .find_map(|ext| EvidenceFile::read(&image.with_file_name(format!("{stem}.low.{ext}"))))?;
    Some((first, Some(low)))
}

/// The `screenline.evidence.v1` payload: the stored image (the high-energy half of a pair)
/// and, for a pair, the low-energy half, each with the SHA-256 the report gave for it.
pub fn evidence_payload(
    report_id: &str,
    record_id: &str,
    image: &EvidenceFile,
    low_energy: Option<&EvidenceFile>,
) -> Vec<u8> {
    use sha2::{Digest, Sha256};
    /// One image of `screenline.evidence.v1`.
    #[derive(Serialize)]
    struct Image<'a> {
        format: &'a str,
        image_sha256: String,
        image_base64: String,
    }
    #[derive(Serialize)]
    struct Evidence<'a> {
        schema: &'static str,
        report_id: &'a str,
        record_id: &'a str,
        #[serde(flatten)]
        image: Image<'a>,
        #[serde(skip_serializing_if = "Option::is_none")]
        low_energy: Option<Image<'a>>,
    }
    fn image_of(f: &EvidenceFile) -> Image<'_> {
        Image {
            format: &f.format,
            image_sha256: hex::encode(Sha256::digest(&f.bytes)),
            image_base64: base64::engine::general_purpose::STANDARD.encode(&f.bytes),
        }
    }
    serde_json::to_vec(&Evidence {
        schema: "screenline.evidence.v1",
        report_id,
        record_id,
        image: image_of(image),
        low_energy: low_energy.map(image_of),
    })
    .unwrap_or_default()
}

/// The messages that carry a report's evidence: the one `screenline.evidence.v1` payload
/// when it fits in `max_packet` bytes; otherwise each file in order, the image then the
/// low-energy half, cut into `screenline.evidence-part.v1` parts that do (a line-sized
/// dual-energy pair can outgrow one packet). A part carries the whole file's SHA-256 and
/// size, its own offset and its base64 chunk: the receiver joins a file's parts in order
/// of `part` and checks the hash.
pub fn evidence_messages(
    report_id: &str,
    record_id: &str,
    image: &EvidenceFile,
    low_energy: Option<&EvidenceFile>,
    max_packet: usize,
) -> Vec<Vec<u8>> {
    use sha2::{Digest, Sha256};
    let whole = evidence_payload(report_id, record_id, image, low_energy);
    if whole.len() <= max_packet {
        return vec![whole];
    }
    #[derive(Serialize)]
    struct Part<'a> {
        schema: &'static str,
        report_id: &'a str,
        record_id: &'a str,
        file: &'static str,
        format: &'a str,
        image_sha256: &'a str,
        size: usize,
        part: usize,
        parts: usize,
        offset: usize,
        chunk_base64: String,
    }
    // Raw bytes per part: base64 grows them by a third; 4 KiB is room for the JSON around.
    let chunk = ((max_packet.saturating_sub(4096)) / 4 * 3).max(3);
    let mut out = Vec::new();
    for (file, f) in std::iter::once(("image", image)).chain(low_energy.map(|l| ("low_energy", l)))
    {
        let sha = hex::encode(Sha256::digest(&f.bytes));
        let parts = f.bytes.len().div_ceil(chunk).max(1);
        for part in 0..parts {
            let offset = part * chunk;
            let bytes = &f.bytes[offset.min(f.bytes.len())..(offset + chunk).min(f.bytes.len())];
            out.push(
                serde_json::to_vec(&Part {
                    schema: "screenline.evidence-part.v1",
                    report_id,
                    record_id,
                    file,
                    format: &f.format,
                    image_sha256: &sha,
                    size: f.bytes.len(),
                    part,
                    parts,
                    offset,
                    chunk_base64: base64::engine::general_purpose::STANDARD.encode(bytes),
                })
                .unwrap_or_default(),
            );
        }
    }
    out
}

/// Signs a payload as the regulator does: the envelope for `payload_json` (tests, docs).
pub fn sign_envelope(key: &ed25519_dalek::SigningKey, payload_json: &str) -> String {
    use ed25519_dalek::Signer;
    let sig = key.sign(payload_json.as_bytes());
    json!({
        "schema": CMD_SCHEMA,
        "payload": payload_json,
        "signature": base64::engine::general_purpose::STANDARD.encode(sig.to_bytes()),
    })
    .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use ed25519_dalek::SigningKey;

    fn key() -> SigningKey {
        SigningKey::from_bytes(&rand::random::<[u8; 32]>())
    }

    fn verifier(k: &SigningKey) -> Verifier {
        Verifier {
            key: Some(k.verifying_key()),
            site_id: "SZ01".into(),
            appliance_id: "xr-01".into(),
            max_age: Duration::from_secs(300),
            max_future: Duration::from_secs(60),
        }
    }

    fn payload(command: &str, issued: SystemTime, nonce: &str, body: Value) -> String {
        json!({
            "command": command, "site_id": "SZ01", "appliance_id": "xr-01",
            "issued_at": crate::time_fmt::format(issued), "nonce": nonce, "body": body,
        })
        .to_string()
    }

    fn check(v: &Verifier, env: &str, topic: &str) -> Result<Verified, Refusal> {
        v.verify(env.as_bytes(), topic, SystemTime::now()).1
    }

    #[test]
    fn a_signed_fresh_command_verifies() {
        let k = key();
        let v = verifier(&k);
        let p = payload(
            "thresholds",
            SystemTime::now(),
            "nonce-0001",
            json!({"medicine": 0.7}),
        );
        let (claimed, r) = v.verify(
            sign_envelope(&k, &p).as_bytes(),
            "thresholds",
            SystemTime::now(),
        );
        let ok = r.expect("verifies");
        assert_eq!(ok.command, Command::Thresholds);
        assert_eq!(ok.nonce, "nonce-0001");
        assert_eq!(claimed.nonce.as_deref(), Some("nonce-0001"));
        assert_eq!(
            thresholds_body(&ok.body).expect("body")[&Category::Medicine],
            0.7
        );
    }

    #[test]
    fn every_refusal_reason() {
        let k = key();
        let v = verifier(&k);
        let now = SystemTime::now();
        let fresh = payload("watchlist", now, "nonce-0002", json!({"version": "7"}));
        // No key configured.
        let nokey = Verifier {
            key: None,
            ..v.clone()
        };
        assert_eq!(
            check(&nokey, &sign_envelope(&k, &fresh), "watchlist"),
            Err(Refusal::NoKey)
        );
        // Not JSON, wrong schema, payload not the payload format.
        assert_eq!(
            check(&v, "{", "watchlist").map_err(|e| e.key()),
            Err("malformed")
        );
        let other = sign_envelope(&k, &fresh).replace(CMD_SCHEMA, "screenline.cmd.v0");
        assert_eq!(
            check(&v, &other, "watchlist").map_err(|e| e.key()),
            Err("malformed")
        );
        let junk = sign_envelope(&k, r#"{"command":"watchlist"}"#);
        assert_eq!(
            check(&v, &junk, "watchlist").map_err(|e| e.key()),
            Err("malformed")
        );
        // Unsigned: no signature field, or an empty one.
        let unsigned = json!({"schema": CMD_SCHEMA, "payload": fresh}).to_string();
        assert_eq!(check(&v, &unsigned, "watchlist"), Err(Refusal::Unsigned));
        let empty = json!({"schema": CMD_SCHEMA, "payload": fresh, "signature": ""}).to_string();
        assert_eq!(check(&v, &empty, "watchlist"), Err(Refusal::Unsigned));
        // Signed by another key; signature of other bytes; not base64.
        assert_eq!(
            check(&v, &sign_envelope(&key(), &fresh), "watchlist"),
            Err(Refusal::BadSignature)
        );
        let mut env: Value =
            serde_json::from_str(&sign_envelope(&k, &fresh)).expect("envelope json");
        env["payload"] = Value::String(fresh.replace("\"7\"", "\"8\""));
        assert_eq!(
            check(&v, &env.to_string(), "watchlist"),
            Err(Refusal::BadSignature)
        );
        env["signature"] = Value::String("%%%".into());
        assert_eq!(
            check(&v, &env.to_string(), "watchlist"),
            Err(Refusal::BadSignature)
        );
        // Signed by the regulator's key, and still refused: (payload, topic, why).
        let signed_but_refused = [
            // Stale and future.
            (
                payload(
                    "watchlist",
                    now - Duration::from_secs(301),
                    "nonce-0003",
                    json!({}),
                ),
                "watchlist",
                "stale",
            ),
            (
                payload(
                    "watchlist",
                    now + Duration::from_secs(120),
                    "nonce-0004",
                    json!({}),
                ),
                "watchlist",
                "future",
            ),
            // Topic and command disagree.
            (fresh.clone(), "thresholds", "wrong_topic"),
            // Addressed to another appliance.
            (fresh.replace("xr-01", "xr-02"), "watchlist", "wrong_target"),
            // Bad nonce, bad time.
            (
                payload("watchlist", now, "short", json!({})),
                "watchlist",
                "malformed",
            ),
            (
                fresh.replace(&crate::time_fmt::format(now), "yesterday"),
                "watchlist",
                "malformed",
            ),
            // A command we do not know.
            (
                payload("reboot", now, "nonce-0005", json!({})),
                "reboot",
                "unknown_command",
            ),
        ];
        for (body, topic, why) in signed_but_refused {
            assert_eq!(
                check(&v, &sign_envelope(&k, &body), topic).map_err(|e| e.key()),
                Err(why),
                "{topic}: {body}"
            );
        }
    }

    #[test]
    fn bodies_are_validated() {
        assert!(watchlist_body(&json!({"version": "3", "id_numbers": ["1"]})).is_ok());
        for bad in [
            json!({"version": ""}),
            json!({"id_numbers": []}),
            json!({"version": "3", "names": ["x"]}),
            json!([1]),
        ] {
            assert_eq!(
                watchlist_body(&bad).map_err(|e| e.key()).err(),
                Some("bad_body")
            );
        }
        assert!(thresholds_body(&json!({"food": 0, "ppe": 1.0})).is_ok());
        for bad in [
            json!({}),
            json!({"food": 1.5}),
            json!({"food": "0.5"}),
            json!({"guns": 0.5}),
            json!(0.5),
        ] {
            assert_eq!(
                thresholds_body(&bad).map_err(|e| e.key()).err(),
                Some("bad_body"),
                "{bad}"
            );
        }
        assert_eq!(
            evidence_body(&json!({"report_id": "rpt-0a1b"})).as_deref(),
            Ok("rpt-0a1b")
        );
        for bad in [
            json!({"report_id": "../../etc/passwd"}),
            json!({}),
            json!({"report_id": "rpt-x"}),
        ] {
            assert!(evidence_body(&bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn public_keys_parse_or_say_why() {
        let k = key();
        let b64 = base64::engine::general_purpose::STANDARD.encode(k.verifying_key().to_bytes());
        assert_eq!(parse_public_key(&b64), Ok(k.verifying_key()));
        assert!(parse_public_key("AAAA")
            .unwrap_err()
            .contains("32 raw bytes"));
        assert!(parse_public_key("***").unwrap_err().contains("base64"));
    }

    /// A pair too large for one packet goes in parts that each fit, carry the whole file's
    /// hash and size, join back to the very bytes, and match the part schema; one that fits
    /// goes whole.
    #[test]
    fn evidence_too_large_for_a_packet_goes_in_parts_that_join_back() {
        use base64::Engine;
        let noise = |n: usize, seed: u8| -> Vec<u8> {
            (0..n)
                .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
                .collect()
        };
        let image = EvidenceFile {
            format: "png".into(),
            bytes: noise(250_000, 1),
        };
        let low = EvidenceFile {
            format: "png".into(),
            bytes: noise(90_000, 2),
        };
        let rid = "rpt-0123456789abcdef0123456789abcdef";
        let whole = evidence_messages(rid, "r1", &image, Some(&low), 8 << 20);
        assert_eq!(whole.len(), 1);
        let max = 100_000;
        let parts = evidence_messages(rid, "r1", &image, Some(&low), max);
        assert_eq!(
            parts.len(),
            4 + 2,
            "250 kB in 4 parts of ≤ 72 kB, 90 kB in 2"
        );
        let text = std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../docs/schemas/evidence-part.schema.json"
        ))
        .expect("schema");
        let schema =
            jsonschema::draft202012::new(&serde_json::from_str::<Value>(&text).expect("json"))
                .expect("a valid schema");
        #[derive(serde::Deserialize)]
        struct Part {
            file: String,
            image_sha256: String,
            size: usize,
            part: usize,
            parts: usize,
            offset: usize,
            chunk_base64: String,
        }
        let mut joined: std::collections::BTreeMap<String, Vec<u8>> = Default::default();
        for m in &parts {
            assert!(m.len() <= max, "a part of {} bytes", m.len());
            let v: Value = serde_json::from_slice(m).expect("json");
            assert!(
                schema.is_valid(&v),
                "{}",
                String::from_utf8_lossy(&m[..200])
            );
            let p: Part = serde_json::from_slice(m).expect("a part");
            let chunk = base64::engine::general_purpose::STANDARD
                .decode(&p.chunk_base64)
                .expect("base64");
            let file = joined.entry(p.file.clone()).or_default();
            assert_eq!(p.offset, file.len(), "parts in order");
            assert!(p.part < p.parts);
            file.extend(chunk);
            let want = if p.file == "image" { &image } else { &low };
            assert_eq!(p.size, want.bytes.len());
            use sha2::Digest;
            assert_eq!(
                p.image_sha256,
                hex::encode(sha2::Sha256::digest(&want.bytes))
            );
        }
        assert_eq!(joined["image"], image.bytes);
        assert_eq!(joined["low_energy"], low.bytes);
    }
}
