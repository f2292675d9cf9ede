//! The feed's JSON payloads, each with its `schema` field: the status and the flagged report.

use crate::domain::{Decision, Reason, Recipient, Sender};
use crate::screen::Screened;
use crate::telemetry::Telemetry;
use base64::Engine;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use std::time::SystemTime;

/// `…/status`: availability and the health of every link.
pub fn status(state: &str, telemetry: &Telemetry) -> Vec<u8> {
    let links: serde_json::Map<String, Value> = telemetry
        .links()
        .into_iter()
        .map(|(name, l)| (name, json!({"up": l.up, "detail": l.detail})))
        .collect();
    let v = json!({
        "schema": "screenline.status.v1",
        "state": state,
        "at": crate::time_fmt::format(SystemTime::now()),
        "version": env!("CARGO_PKG_VERSION"),
        "links": links,
        "backlog": telemetry.get("feed.backlog"),
    });
    serde_json::to_vec(&v).unwrap_or_default()
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

fn reasons_json(reasons: &[Reason]) -> Value {
    Value::Array(
        reasons
            .iter()
            .map(|r| json!({"code": r.code.key(), "zh": r.zh, "en": r.en}))
            .collect(),
    )
}

fn sender_json(s: &Sender) -> Value {
    json!({
        "name": s.name, "id_type": s.id_type, "id_number": s.id_number,
        "phone": s.phone, "address": s.address,
    })
}

fn recipient_json(r: &Recipient) -> Value {
    json!({"name": r.name, "phone": r.phone, "address": r.address})
}

/// The `screenline.report.v1` payload for a flagged parcel.
pub fn flagged_report(s: &Screened, report_id: &str, site_id: &str, appliance_id: &str) -> Value {
    debug_assert_eq!(s.decision, Decision::Flag);
    let wb = s.parcel.waybill.as_ref();
    let scores = s.scores.as_ref().map(|sc| json!(sc));
    let evidence = s.evidence.as_ref().map(|e| {
        let mut ev = json!({
            "image_sha256": e.image.sha256,
            "thumbnail_jpeg": e.thumbnail_jpeg.as_ref()
                .map(|t| base64::engine::general_purpose::STANDARD.encode(t)),
        });
        // A dual-energy pair: `image_sha256` is the high-energy file's, this the low one's.
        if let Some(low) = &e.low_energy {
            ev["low_energy_sha256"] = json!(low.sha256);
        }
        ev
    });
    json!({
        "schema": "screenline.report.v1",
        "report_id": report_id,
        "site_id": site_id,
        "appliance_id": appliance_id,
        "line_id": s.parcel.line_id,
        "waybill": wb.map(|w| w.waybill.as_str()),
        "scanned_at": crate::time_fmt::format(
            s.parcel.scan.as_ref().map_or(s.parcel.entered_at, |x| x.captured_at)),
        "decision": s.decision.key(),
        "reasons": reasons_json(&s.reasons),
        "scores": scores,
        "model": {"name": s.model.name, "version": s.model.version, "sha256": s.model.sha256},
        "declared": wb.and_then(|w| w.declared.as_ref()),
        "sender": wb.and_then(|w| w.sender.as_ref()).map(sender_json),
        "recipient": wb.and_then(|w| w.recipient.as_ref()).map(recipient_json),
        "agreement_customer": wb.and_then(|w| w.agreement_customer.as_deref()),
        "evidence": evidence,
    })
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
