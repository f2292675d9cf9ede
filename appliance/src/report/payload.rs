//! The feed's JSON payloads, each with its `schema` field: the status and the flagged report
//! (whose type is [`crate::record::FlaggedReport`]).

use crate::domain::Decision;
use crate::record::{FlaggedReport, ReportEvidence};
use crate::screen::Screened;
use crate::telemetry::{Gauge, Link as LinkName, LinkState, Telemetry};
use serde::Serialize;
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::time::SystemTime;

/// `…/status`: availability and the health of every link.
pub fn status(state: &str, telemetry: &Telemetry) -> Vec<u8> {
    /// `screenline.status.v1`.
    #[derive(Serialize)]
    struct Status<'a> {
        schema: &'static str,
        state: &'a str,
        #[serde(with = "crate::time_fmt::rfc3339")]
        at: SystemTime,
        version: &'static str,
        links: BTreeMap<LinkName, Link>,
        backlog: u64,
    }
    /// A link as the contract shows it (no more: `since` stays on the appliance).
    #[derive(Serialize)]
    struct Link {
        up: bool,
        detail: String,
    }
    serde_json::to_vec(&Status {
        schema: "screenline.status.v1",
        state,
        at: SystemTime::now(),
        version: env!("CARGO_PKG_VERSION"),
        links: telemetry
            .links()
            .into_iter()
            .map(|(name, l)| {
                let LinkState { up, detail, .. } = l;
                (name, Link { up, detail })
            })
            .collect(),
        backlog: telemetry.gauge(Gauge::FeedBacklog),
    })
    .unwrap_or_default()
}

/// The stable id of a report: the same site, line, waybill and scan always give the same id,
/// so that a consumer recognises a redelivery. Without a read, the parcel's entry time
/// (ms since the epoch) stands in for the waybill: an X-ray machine that reuses scan ids
/// then still gives two unread parcels two ids.
pub fn report_id(
    site_id: &str,
    line_id: &str,
    waybill: Option<&str>,
    entered_ms: u64,
    scan_id: &str,
) -> String {
    let unread;
    let who = match waybill {
        Some(w) => w,
        None => {
            unread = format!("entered:{entered_ms}");
            &unread
        }
    };
    let mut h = Sha256::new();
    for part in [site_id, line_id, who, scan_id] {
        h.update(part.as_bytes());
        h.update([0u8]);
    }
    format!("rpt-{}", &hex::encode(h.finalize())[..32])
}

/// The `screenline.report.v1` payload for a flagged parcel.
pub fn flagged_report(
    s: &Screened,
    report_id: &str,
    site_id: &str,
    appliance_id: &str,
) -> FlaggedReport {
    debug_assert_eq!(s.decision, Decision::Flag);
    let wb = s.parcel.waybill.as_ref();
    FlaggedReport {
        schema: FlaggedReport::SCHEMA.to_owned(),
        report_id: report_id.to_owned(),
        site_id: site_id.to_owned(),
        appliance_id: appliance_id.to_owned(),
        line_id: s.parcel.line_id.clone(),
        waybill: wb.map(|w| w.waybill.clone()),
        scanned_at: s
            .parcel
            .scan
            .as_ref()
            .map_or(s.parcel.entered_at, |x| x.captured_at),
        decision: s.decision,
        reasons: s.reasons.clone(),
        // The detector's boxes travel in the evidence (the schema's `evidence.detections`).
        scores: s.scores.clone().map(|mut sc| {
            sc.detections.clear();
            sc
        }),
        model: s.model.clone(),
        declared: wb.and_then(|w| w.declared.clone()),
        sender: wb.and_then(|w| w.sender.clone()),
        recipient: wb.and_then(|w| w.recipient.clone()),
        agreement_customer: wb.and_then(|w| w.agreement_customer.clone()),
        // A dual-energy pair: `image_sha256` is the high-energy file's.
        evidence: s.evidence.as_ref().map(|e| ReportEvidence {
            image_sha256: e.image.sha256.clone(),
            thumbnail_jpeg: e.thumbnail_jpeg.clone(),
            low_energy_sha256: e.low_energy.as_ref().map(|l| l.sha256.clone()),
            detections: s
                .scores
                .as_ref()
                .map(|sc| sc.detections.clone())
                .unwrap_or_default(),
        }),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn report_ids_are_stable_and_distinct() {
        let a = super::report_id("SZ01", "L1", Some("SF12345678"), 1, "scan-1");
        assert_eq!(
            a,
            super::report_id("SZ01", "L1", Some("SF12345678"), 2, "scan-1")
        );
        assert_ne!(
            a,
            super::report_id("SZ01", "L1", Some("SF12345678"), 1, "scan-2")
        );
        assert_ne!(
            a,
            super::report_id("SZ01", "L11", Some("SF12345678"), 1, "scan-")
        );
        // No read and a reused scan id: the entry time tells the parcels apart.
        let unread = super::report_id("SZ01", "L1", None, 1_000, "scan-1");
        assert_eq!(
            unread,
            super::report_id("SZ01", "L1", None, 1_000, "scan-1")
        );
        assert_ne!(
            unread,
            super::report_id("SZ01", "L1", None, 2_000, "scan-1")
        );
        assert!(a.starts_with("rpt-") && a.len() == 36);
    }
}
