//! What the demo knows and the line has to work out: which waybill and which scan belong to
//! which parcel. After a run the stored records are held against it ([`Truth::audit`]): a
//! record that carries another parcel's scan or waybill is a wrong join; a parcel sent to
//! manual inspection as `no_read` or `no_image` although its code was read and its scan
//! written is one the line could not join safely.
//!
//! A parcel is known by its line and the sequence number the line controller gave it at the
//! photo-eye, as the line's join knows it: the demo's X-ray machine notes the parcel when the
//! controller reports that entry ([`super::xray::Machine`]).

use crate::domain::{Decision, ReasonCode};
use crate::record::Record;
use serde::Serialize;
use std::collections::HashMap;

/// One parcel as it really was.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrueParcel {
    /// The waybill on it.
    pub waybill: String,
    /// Whether its code reached the line's reader.
    pub read: bool,
    /// SHA-256 (hex) of its scan's image (a pair's high half), once written; `None` for a
    /// parcel the X-ray machine missed.
    pub scan_sha256: Option<String>,
    /// Whether the X-ray generator completed that scan late ([`Truth::late_scan`]).
    pub late: bool,
}

/// Every parcel of a run, by (line, sequence number).
#[derive(Debug, Default)]
pub struct Truth {
    parcels: HashMap<(String, u32), TrueParcel>,
    late: u64,
}

/// How the line's joins compare with the truth.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct JoinAudit {
    /// Records held against the truth.
    pub checked: u64,
    /// Records carrying another parcel's scan or waybill (or a scan or waybill on a parcel
    /// that was never placed).
    pub wrong_joins: u64,
    /// Manual parcels whose reasons say `no_read` or `no_image` although their code was
    /// read, or their scan written: the line could not join them safely (an ambiguous read
    /// or image, one outside its window), so it joined nothing rather than guess.
    pub unjoined_manual: u64,
}

impl Truth {
    /// The photo-eye saw parcel `seq` of `line_id`, which carries `waybill` (`read`: its
    /// code was sent to the reader).
    pub fn entered(&mut self, line_id: &str, seq: u32, waybill: &str, read: bool) {
        self.parcels.insert(
            (line_id.to_owned(), seq),
            TrueParcel {
                waybill: waybill.to_owned(),
                read,
                scan_sha256: None,
                late: false,
            },
        );
    }

    /// The X-ray machine wrote the scan with `sha256` of that parcel (`None`: it failed to).
    pub fn scanned(&mut self, line_id: &str, seq: u32, sha256: Option<&str>) {
        if let Some(p) = self.parcels.get_mut(&(line_id.to_owned(), seq)) {
            p.scan_sha256 = sha256.map(str::to_owned);
        }
    }

    /// The X-ray generator completed the scan of parcel `seq` late: after its due time,
    /// which a real machine does not miss. Joined by time, a late scan can look like the
    /// next parcel's.
    pub fn late_scan(&mut self, line_id: &str, seq: u32) {
        self.late += 1;
        if let Some(p) = self.parcels.get_mut(&(line_id.to_owned(), seq)) {
            p.late = true;
        }
    }

    /// Scans completed late.
    pub fn late_scans(&self) -> u64 {
        self.late
    }

    /// Parcel `seq` of `line_id`, if noted.
    pub fn parcel(&self, line_id: &str, seq: u32) -> Option<&TrueParcel> {
        self.parcels.get(&(line_id.to_owned(), seq))
    }

    /// Parcels noted.
    pub fn len(&self) -> usize {
        self.parcels.len()
    }

    /// Whether no parcel was noted.
    pub fn is_empty(&self) -> bool {
        self.parcels.is_empty()
    }

    /// Holds `records` against the truth.
    pub fn audit<'a>(&self, records: impl IntoIterator<Item = &'a Record>) -> JoinAudit {
        let mut audit = JoinAudit::default();
        let owners: HashMap<&str, &TrueParcel> = self
            .parcels
            .values()
            .filter_map(|p| p.scan_sha256.as_deref().map(|h| (h, p)))
            .collect();
        for r in records {
            audit.checked += 1;
            let Some(truth) = self.parcels.get(&(r.line_id.clone(), r.seq)) else {
                // No parcel was placed under this number: whatever it carries is another's.
                if r.waybill.is_some() || r.image_sha256.is_some() {
                    tracing::warn!(line = %r.line_id, seq = r.seq, "demo: a record for a parcel that was never placed carries a read or a scan");
                    audit.wrong_joins += 1;
                }
                continue;
            };
            let wrong_read = r
                .waybill
                .as_ref()
                .is_some_and(|w| w.as_str() != truth.waybill);
            let wrong_scan = r
                .image_sha256
                .as_ref()
                .is_some_and(|h| Some(h) != truth.scan_sha256.as_ref());
            if wrong_read || wrong_scan {
                // Whether the simulator, not the line, put the scan out of its time.
                let late_scan = r
                    .image_sha256
                    .as_deref()
                    .and_then(|h| owners.get(h))
                    .is_some_and(|p| p.late);
                tracing::warn!(line = %r.line_id, seq = r.seq, wrong_read, wrong_scan, late_scan, "demo: a wrong join");
                audit.wrong_joins += 1;
                continue;
            }
            let has = |code| r.reasons.iter().any(|x| x.code == code);
            let unjoined = (has(ReasonCode::NoRead) && truth.read)
                || (has(ReasonCode::NoImage) && truth.scan_sha256.is_some());
            if r.decision == Decision::Manual && unjoined {
                audit.unjoined_manual += 1;
            }
        }
        audit
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{Reason, WaybillNo};

    fn record(seq: u32, waybill: Option<&str>, sha: Option<&str>, decision: Decision) -> Record {
        let mut r = Record::example(&format!("r{seq}"), decision);
        r.line_id = "L1".into();
        r.seq = seq;
        r.waybill = waybill.map(|w| WaybillNo::parse(w).expect("a waybill"));
        r.image_sha256 = sha.map(str::to_owned);
        let code = |c: ReasonCode| Reason::new(c, "", "");
        if waybill.is_none() {
            r.reasons.push(code(ReasonCode::NoRead));
        }
        if sha.is_none() {
            r.reasons.push(code(ReasonCode::NoImage));
        }
        r
    }

    /// The four parcels of [`truth`]: (seq, read, scanned).
    const PARCELS: [(u32, bool, bool); 4] = [
        (1, true, true),
        (2, true, true),
        (3, false, true),
        (4, true, false),
    ];

    /// Four parcels: 1 and 2 read and scanned, 3 never read, 4 never scanned.
    fn truth() -> Truth {
        let mut t = Truth::default();
        for (seq, read, scanned) in PARCELS {
            t.entered("L1", seq, &format!("SF0000000{seq}"), read);
            if scanned {
                t.scanned("L1", seq, Some(&format!("sha{seq}")));
            }
        }
        t
    }

    #[test]
    fn right_joins_and_the_traffic_s_own_misses_count_nothing() {
        // Each parcel's own read and scan, where the traffic gave them; manual where it did not.
        let records: Vec<Record> = PARCELS
            .into_iter()
            .map(|(seq, read, scanned)| {
                let waybill = read.then(|| format!("SF0000000{seq}"));
                let sha = scanned.then(|| format!("sha{seq}"));
                let decision = if read && scanned {
                    Decision::Clear
                } else {
                    Decision::Manual
                };
                record(seq, waybill.as_deref(), sha.as_deref(), decision)
            })
            .collect();
        assert_eq!(
            truth().audit(&records),
            JoinAudit {
                checked: 4,
                ..JoinAudit::default()
            }
        );
    }

    #[test]
    fn another_parcel_s_scan_or_waybill_is_a_wrong_join() {
        use Decision::{Clear, Flag, Manual};
        let records = [
            // Scans swapped between two read parcels.
            record(1, Some("SF00000001"), Some("sha2"), Clear),
            record(2, Some("SF00000002"), Some("sha1"), Flag),
            // The unread parcel got its neighbour's scan.
            record(3, None, Some("sha4"), Manual),
            // A stranger's name on the unscanned parcel.
            record(4, Some("SF00000003"), None, Manual),
            // A parcel nobody placed, with a scan.
            record(9, None, Some("sha1"), Manual),
        ];
        let a = truth().audit(&records);
        assert_eq!(a.wrong_joins, 5, "{a:?}");
        assert_eq!(a.unjoined_manual, 0, "a wrong join is not also unjoined");
    }

    #[test]
    fn a_parcel_read_and_scanned_but_sent_to_manual_unjoined_is_counted() {
        use Decision::Manual;
        let records = [
            // Its scan was ambiguous: no image joined.
            record(1, Some("SF00000001"), None, Manual),
            // Its read was ambiguous: no read joined.
            record(2, None, Some("sha2"), Manual),
            // Neither.
            record(3, None, None, Manual),
        ];
        let a = truth().audit(&records);
        // Parcel 3 was never read, but its scan was written: unjoined all the same.
        assert_eq!(
            a,
            JoinAudit {
                checked: 3,
                wrong_joins: 0,
                unjoined_manual: 3
            }
        );
    }
}
