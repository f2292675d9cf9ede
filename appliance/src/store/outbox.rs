//! The outbox's stored entries: a flagged report waiting for the broker's PUBACK.
//!
//! Schema 3 keeps the payload as it was queued, bytes for bytes, behind a small header:
//! `0x01`, the report id and the topic suffix (each a big-endian `u16` length and UTF-8),
//! then the payload. Schema 1 and 2 kept a JSON object with the payload in base64;
//! [`OutboxEntry::decode`] reads both (recovery may meet an old store set aside), and the
//! migration to schema 3 rewrites the old ones. Either way the payload that reaches the
//! broker is the one that was queued.
//!
//! [`batch`] is how every outbox of the store (reports, statistics, sightings) is read for
//! the broker: oldest key first, a few at a time.

use base64::Engine;
use serde::Deserialize;

use super::StoreError;

/// Up to `max` entries of an outbox tree in key order (oldest first), skipping keys for which
/// `skip` is true (in flight already) and entries `take` makes nothing of (`None`).
pub(super) fn batch<T>(
    tree: &sled::Tree,
    max: usize,
    skip: impl Fn(&[u8]) -> bool,
    mut take: impl FnMut(&[u8], &[u8]) -> Option<T>,
) -> Result<Vec<T>, StoreError> {
    let mut out = Vec::new();
    if max == 0 {
        return Ok(out);
    }
    for item in tree.iter() {
        let (k, v) = item?;
        if skip(&k) {
            continue;
        }
        if let Some(t) = take(&k, &v) {
            out.push(t);
            if out.len() == max {
                break;
            }
        }
    }
    Ok(out)
}

/// The first byte of a schema-3 entry (a JSON entry starts with `{`).
const TAG: u8 = 0x01;

/// A queued report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct OutboxEntry {
    pub report_id: String,
    pub topic_suffix: String,
    pub payload: Vec<u8>,
}

/// The entry as schema 1 and 2 stored it.
#[derive(Deserialize)]
struct Legacy {
    report_id: String,
    topic_suffix: String,
    /// base64.
    payload: String,
}

impl OutboxEntry {
    /// The stored form (schema 3).
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(
            5 + self.report_id.len() + self.topic_suffix.len() + self.payload.len(),
        );
        out.push(TAG);
        for text in [&self.report_id, &self.topic_suffix] {
            // Report ids and topic suffixes are short and made here; a longer one is cut
            // at a character boundary rather than written with a wrong length.
            let mut end = text.len().min(usize::from(u16::MAX));
            while !text.is_char_boundary(end) {
                end -= 1;
            }
            out.extend_from_slice(&(end as u16).to_be_bytes());
            out.extend_from_slice(&text.as_bytes()[..end]);
        }
        out.extend_from_slice(&self.payload);
        out
    }

    /// Reads a stored entry of any schema.
    pub fn decode(bytes: &[u8]) -> Result<OutboxEntry, String> {
        match bytes.split_first() {
            Some((&TAG, rest)) => {
                let (report_id, rest) = text(rest, "report id")?;
                let (topic_suffix, payload) = text(rest, "topic")?;
                Ok(OutboxEntry {
                    report_id,
                    topic_suffix,
                    payload: payload.to_vec(),
                })
            }
            _ => {
                let old: Legacy = serde_json::from_slice(bytes).map_err(|e| e.to_string())?;
                let payload = base64::engine::general_purpose::STANDARD
                    .decode(old.payload)
                    .map_err(|e| format!("payload: {e}"))?;
                Ok(OutboxEntry {
                    report_id: old.report_id,
                    topic_suffix: old.topic_suffix,
                    payload,
                })
            }
        }
    }

    /// Whether `bytes` is an entry of schema 1 or 2 (JSON).
    pub fn is_legacy(bytes: &[u8]) -> bool {
        bytes.first() != Some(&TAG)
    }
}

/// A length-prefixed UTF-8 text and what follows it.
fn text<'a>(bytes: &'a [u8], what: &str) -> Result<(String, &'a [u8]), String> {
    let short = || format!("the entry ends inside its {what}");
    let (len, rest) = bytes.split_first_chunk::<2>().ok_or_else(short)?;
    let len = usize::from(u16::from_be_bytes(*len));
    if rest.len() < len {
        return Err(short());
    }
    let (text, rest) = rest.split_at(len);
    let text = std::str::from_utf8(text).map_err(|_| format!("the {what} is not UTF-8"))?;
    Ok((text.to_owned(), rest))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_schemas_read_the_payload_byte_for_byte() {
        let payload = b"{\"schema\":\"screenline.report.v1\",\"x\":\"\xe4\xb8\xad\"}".to_vec();
        let e = OutboxEntry {
            report_id: "rpt-0123".into(),
            topic_suffix: "reports/flagged".into(),
            payload: payload.clone(),
        };
        assert_eq!(OutboxEntry::decode(&e.encode()), Ok(e.clone()));
        assert!(!OutboxEntry::is_legacy(&e.encode()));
        let old = serde_json::json!({
            "report_id": "rpt-0123",
            "topic_suffix": "reports/flagged",
            "payload": base64::engine::general_purpose::STANDARD.encode(&payload),
        })
        .to_string();
        assert!(OutboxEntry::is_legacy(old.as_bytes()));
        assert_eq!(OutboxEntry::decode(old.as_bytes()), Ok(e));
        for bad in [
            &b"\x01\x00"[..],
            b"\x01\x00\x09rpt",
            b"\x01\x00\x01\xff\x00\x00",
            b"{",
            b"",
        ] {
            assert!(OutboxEntry::decode(bad).is_err(), "{bad:?}");
        }
    }
}
