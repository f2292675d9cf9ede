//! What the appliance keeps and sends of a screened parcel, as types: the stored [`Record`]
//! (the store's `records` tree) and the regulator's [`FlaggedReport`]
//! (`…/reports/flagged`, `screenline.report.v1`). Both are built once, by the decide-and-store
//! stage (`sink`), and read as these types by the console, the feed, retention, `store
//! check`, recovery and searches — never as JSON looked up by string key.

use crate::domain::{Decision, Declared, ModelInfo, Reason, Recipient, Scores, Sender, WaybillNo};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::time::SystemTime;

/// A screened parcel as the store keeps it.
///
/// Serialised as the JSON object the store has always held; fields a record of an older
/// schema lacks read as absent (`None`, `false`; serde reads a missing `Option` as `None`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Record {
    /// The record's key: entry time (ms, 13 digits), line and sequence number.
    pub record_id: String,
    /// The configured id of the line the parcel came down.
    pub line_id: String,
    /// The parcel's sequence number on its line (0 where none was known).
    #[serde(default)]
    pub seq: u32,
    /// When the parcel passed the photo-eye.
    #[serde(with = "crate::time_fmt::rfc3339")]
    pub entered_at: SystemTime,
    /// When it was decided.
    #[serde(with = "crate::time_fmt::rfc3339")]
    pub screened_at: SystemTime,
    /// The waybill number read; `None` for a `no_read` parcel.
    pub waybill: Option<WaybillNo>,
    /// What the sender declared, if the waybill said.
    pub declared: Option<Declared>,
    /// The sender: in full for flagged and manual parcels, as keyed hashes for cleared ones.
    pub sender: Option<StoredSender>,
    /// Kept for flagged and manual parcels only.
    pub recipient: Option<Recipient>,
    /// What became of the parcel: a clear that came too late, or whose first attempt to be
    /// stored failed, is recorded as manual, since the controller diverted the parcel.
    pub decision: Decision,
    /// Every reason found, count-only ones included.
    #[serde(default)]
    pub reasons: Vec<Reason>,
    /// `None` without a model's view (no image) and in a slimmed record.
    pub scores: Option<Scores>,
    /// `None` in a slimmed record.
    pub model: Option<ModelInfo>,
    /// The archived image (the high half of a pair), while it is kept.
    pub image: Option<PathBuf>,
    /// SHA-256 (hex) of the image file as read from the drop folder (a pair's high half);
    /// `None` without a readable image. Kept when the image itself is evicted.
    pub image_sha256: Option<String>,
    /// SHA-256 (hex) of a dual-energy pair's low half.
    pub low_energy_sha256: Option<String>,
    /// A flagged record's report id.
    pub report_id: Option<String>,
    /// The disk budget took the image (schema 2).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_evicted: Option<Eviction>,
    /// The disk budget took the scores and the model (schema 2).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub slimmed: bool,
    /// A cleared parcel drawn for re-review: its scan is kept and an operator judges it in
    /// the queue like a flagged one (absent, false, from every other record).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub rereview: bool,
}

/// The sender as a record keeps it: in full where the regulator may need it (flagged and
/// manual parcels), only as keyed hashes for cleared ones (what split-shipment detection and
/// the watch-list match on).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum StoredSender {
    /// Every field as read: a flagged or manual parcel's sender.
    Full(Sender),
    /// A cleared parcel's sender: keyed hashes ([`KeyedHasher`](crate::keys::KeyedHasher),
    /// hex) of the normalised values, as the watch-list and the split-shipment ledger hash them.
    Keys {
        /// The hash of the ID number after [`normalise_id`](crate::waybill::normalise_id).
        id_key: String,
        /// The hash of the phone after [`normalise_phone`](crate::waybill::normalise_phone)
        /// (of the empty string when there was none).
        phone_key: String,
    },
}

/// Why and when a record's image went.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Eviction {
    /// RFC 3339.
    pub at: String,
    /// `disk_budget`.
    pub why: String,
}

impl Record {
    /// A record with nothing but its key and decision: what tests and benches store.
    pub fn example(record_id: &str, decision: Decision) -> Record {
        Record {
            record_id: record_id.to_owned(),
            line_id: String::new(),
            seq: 0,
            entered_at: SystemTime::UNIX_EPOCH,
            screened_at: SystemTime::UNIX_EPOCH,
            waybill: None,
            declared: None,
            sender: None,
            recipient: None,
            decision,
            reasons: Vec::new(),
            scores: None,
            model: None,
            image: None,
            image_sha256: None,
            low_energy_sha256: None,
            report_id: None,
            image_evicted: None,
            slimmed: false,
            rereview: false,
        }
    }

    /// Reads a stored record.
    pub fn from_slice(bytes: &[u8]) -> Result<Record, serde_json::Error> {
        serde_json::from_slice(bytes)
    }

    /// The stored form.
    pub fn to_vec(&self) -> Vec<u8> {
        // A struct of strings, numbers and paths: encoding it cannot fail.
        serde_json::to_vec(self).unwrap_or_default()
    }

    /// The record's image files: the one it names and, for a dual-energy pair, the `.low`
    /// half beside its `.high` one.
    pub fn image_files(&self) -> Vec<PathBuf> {
        self.image.as_deref().map_or_else(Vec::new, pair_files)
    }
}

/// An archived image and, if it is the `.high.` half of a pair, its `.low.` half.
fn pair_files(first: &Path) -> Vec<PathBuf> {
    let mut files = vec![first.to_owned()];
    if let Some(name) = first.file_name().and_then(|n| n.to_str()) {
        if let Some(i) = name.rfind(".high.") {
            files.push(first.with_file_name(format!("{}.low.{}", &name[..i], &name[i + 6..])));
        }
    }
    files
}

/// The `screenline.report.v1` payload of a flagged parcel (the contract's report schema).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FlaggedReport {
    /// Always [`FlaggedReport::SCHEMA`].
    pub schema: String,
    /// `rpt-` and 32 hex digits of a SHA-256 over site, line, waybill (or, without a read,
    /// the entry time) and scan id: a redelivery carries the same id, which consumers
    /// deduplicate on.
    pub report_id: String,
    /// The configured site, the topic's `{site_id}` level.
    pub site_id: String,
    /// The configured appliance, the topic's `{appliance_id}` level.
    pub appliance_id: String,
    /// The configured id of the line the parcel came down.
    pub line_id: String,
    /// The waybill number read; `None` when no code was read.
    pub waybill: Option<WaybillNo>,
    /// When the X-ray machine took the scan (the parcel's entry time without one).
    #[serde(with = "crate::time_fmt::rfc3339")]
    pub scanned_at: SystemTime,
    /// Always [`Decision::Flag`]: only flagged parcels are reported.
    pub decision: Decision,
    /// Every reason found, count-only ones included, each with its words in zh and en.
    pub reasons: Vec<Reason>,
    /// The model's view; `None` when it had none (no image, unreadable, screening failed).
    pub scores: Option<Scores>,
    /// The model in service when the parcel was decided.
    pub model: ModelInfo,
    /// What the sender declared, if the waybill said.
    pub declared: Option<Declared>,
    /// The sender's real-name data in full, unmasked: the regulator's copy.
    pub sender: Option<Sender>,
    /// The recipient in full, unmasked.
    pub recipient: Option<Recipient>,
    /// The contract customer's (协议客户) code, as written on the waybill.
    pub agreement_customer: Option<String>,
    /// The image evidence; `None` when no image was read.
    pub evidence: Option<ReportEvidence>,
}

impl FlaggedReport {
    /// The report's schema name.
    pub const SCHEMA: &'static str = "screenline.report.v1";

    /// The payload as it is queued and published.
    pub fn to_vec(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_default()
    }
}

/// The image evidence in a report.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReportEvidence {
    /// The image's (or a pair's high half's) SHA-256.
    pub image_sha256: String,
    /// A small JPEG, base64 in the JSON.
    #[serde(with = "b64_opt")]
    pub thumbnail_jpeg: Option<Vec<u8>>,
    /// A dual-energy pair's low half's SHA-256.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub low_energy_sha256: Option<String>,
    /// The items a detector model found, best first, boxes in pixels of the image (a
    /// pair's high half); absent without a detector.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub detections: Vec<crate::domain::Detection>,
}

/// `Option<Vec<u8>>` as standard base64 or null.
mod b64_opt {
    use base64::Engine;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(b: &Option<Vec<u8>>, s: S) -> Result<S::Ok, S::Error> {
        match b {
            Some(b) => s.serialize_str(&base64::engine::general_purpose::STANDARD.encode(b)),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Vec<u8>>, D::Error> {
        Option::<String>::deserialize(d)?
            .map(|s| {
                base64::engine::general_purpose::STANDARD
                    .decode(s)
                    .map_err(serde::de::Error::custom)
            })
            .transpose()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pair_names_both_halves() {
        let mut r = Record::example("r", Decision::Clear);
        r.image = Some("/d/images/0001-L1-1.high.png".into());
        assert_eq!(
            r.image_files(),
            [
                PathBuf::from("/d/images/0001-L1-1.high.png"),
                PathBuf::from("/d/images/0001-L1-1.low.png")
            ]
        );
        r.image = None;
        assert!(r.image_files().is_empty());
    }

    #[test]
    fn a_record_of_schema_one_reads() {
        // As the walking skeleton wrote them: no image_evicted, no slimmed.
        let old = br#"{"record_id":"0001-L1-1","line_id":"L1","seq":1,
            "entered_at":"2026-11-22T08:30:00.25Z","screened_at":"2026-11-22T08:30:01Z",
            "waybill":"SF1234567890123","declared":null,
            "sender":{"id_key":"k1","phone_key":"k2"},"recipient":null,"decision":"clear",
            "reasons":[],"scores":{"category":{"food":0.9},"counterfeit":0.1},
            "model":{"name":"m","version":"1","sha256":"ab"},"image":null,
            "image_sha256":null,"report_id":null}"#;
        let r = Record::from_slice(old).expect("an old record");
        assert_eq!(r.decision, Decision::Clear);
        assert!(matches!(r.sender, Some(StoredSender::Keys { .. })));
        assert!(!r.slimmed && r.image_evicted.is_none() && r.low_energy_sha256.is_none());
        assert!(!r.rereview);
        assert_eq!(Record::from_slice(&r.to_vec()).expect("again"), r);
        // Written back without the fields it never had: byte-compatible.
        assert!(!String::from_utf8_lossy(&r.to_vec()).contains("rereview"));
    }

    #[test]
    fn a_slimmed_record_reads_without_scores_or_model() {
        let r = Record::from_slice(
            br#"{"record_id":"x","line_id":"L1","decision":"clear","slimmed":true,
                "entered_at":"2026-11-22T08:30:00Z","screened_at":"2026-11-22T08:30:01Z"}"#,
        )
        .expect("slimmed");
        assert!(r.slimmed && r.scores.is_none() && r.model.is_none());
    }
}
