//! The join: binds the line controller's parcel-entered event, the waybill read and the X-ray
//! image into one [`Parcel`].
//!
//! The photo-eye's event is the anchor, because its sequence number is what the decision
//! goes back with. A read joins the oldest parcel still without one whose entry is within
//! `read_lead` after the read or `window` before it; an image joins by waybill when the X-ray
//! machine knew it (sidecar or file name), otherwise the oldest parcel without an image that
//! entered before it. A parcel leaves the join as soon as it is complete, or when its window
//! closes with whatever it has (then it goes to manual inspection as `no_read`/`no_image`).
//!
//! Pure logic over explicit instants: no I/O, no clock, so that every sequence is testable.

use crate::domain::{Parcel, Reason, Waybill, WaybillNo, XrayScan};
use crate::line::waybill::ReadRecord;
use std::collections::VecDeque;
use std::time::{Duration, Instant, SystemTime};

/// What the join did with an input, for the counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JoinNote {
    /// A repeated read of a waybill already on a parcel, merged into it.
    DoubleRead,
    /// A read no parcel claimed within its window.
    OrphanRead,
    /// An image no parcel claimed within its window.
    OrphanImage,
}

struct Pending {
    seq: u32,
    at: Instant,
    entered_at: SystemTime,
    read: Option<ReadRecord>,
    scan: Option<XrayScan>,
}

/// The join for one line.
pub struct Joiner {
    line_id: String,
    window: Duration,
    read_lead: Duration,
    parcels: VecDeque<Pending>,
    reads: VecDeque<(Instant, ReadRecord)>,
    images: VecDeque<(Instant, XrayScan)>,
    /// Waybills recently joined, to merge double reads.
    recent: VecDeque<(Instant, WaybillNo)>,
    notes: Vec<JoinNote>,
}

impl Joiner {
    /// A join for `line_id`.
    pub fn new(line_id: impl Into<String>, window: Duration, read_lead: Duration) -> Joiner {
        Joiner {
            line_id: line_id.into(),
            window,
            read_lead,
            parcels: VecDeque::new(),
            reads: VecDeque::new(),
            images: VecDeque::new(),
            recent: VecDeque::new(),
            notes: Vec::new(),
        }
    }

    /// The photo-eye saw parcel `seq`.
    pub fn on_entered(&mut self, seq: u32, at: Instant, entered_at: SystemTime) {
        let mut p = Pending {
            seq,
            at,
            entered_at,
            read: None,
            scan: None,
        };
        if let Some(i) = self
            .reads
            .iter()
            .position(|(t, _)| *t + self.read_lead >= at)
        {
            if let Some((_, r)) = self.reads.remove(i) {
                p.read = Some(r);
            }
        }
        self.parcels.push_back(p);
        let idx = self.parcels.len() - 1;
        self.claim_images(idx);
    }

    /// The reader delivered a waybill.
    pub fn on_read(&mut self, record: ReadRecord, at: Instant) {
        let no = &record.waybill.waybill;
        let known = self.recent.iter().any(|(_, w)| w == no)
            || self.parcels.iter().any(|p| {
                p.read
                    .as_ref()
                    .is_some_and(|r| &r.waybill.waybill == no)
            })
            || self.reads.iter().any(|(_, r)| &r.waybill.waybill == no);
        if known {
            self.notes.push(JoinNote::DoubleRead);
            return;
        }
        let window = self.window;
        match self
            .parcels
            .iter()
            .position(|p| p.read.is_none() && at <= p.at + window)
        {
            Some(idx) => {
                self.parcels[idx].read = Some(record);
                self.claim_images(idx);
            }
            None => self.reads.push_back((at, record)),
        }
    }

    /// The X-ray machine finished an image.
    pub fn on_image(&mut self, scan: XrayScan, at: Instant) {
        self.images.push_back((at, scan));
        for idx in 0..self.parcels.len() {
            self.claim_images(idx);
        }
    }

    /// Gives parcel `idx` the image that belongs to it, if one is waiting.
    fn claim_images(&mut self, idx: usize) {
        let Some(p) = self.parcels.get(idx) else {
            return;
        };
        if p.scan.is_some() {
            return;
        }
        let wanted = p.read.as_ref().map(|r| r.waybill.waybill.clone());
        let by_waybill = wanted.as_ref().and_then(|w| {
            self.images
                .iter()
                .position(|(_, s)| s.waybill.as_ref() == Some(w))
        });
        // Time join only for images without a waybill, and only in entry order: the
        // oldest parcel lacking an image takes the oldest such image that came after it.
        let by_time = || {
            let oldest_without = self.parcels.iter().position(|q| q.scan.is_none())?;
            if oldest_without != idx {
                return None;
            }
            self.images
                .iter()
                .position(|(t, s)| s.waybill.is_none() && *t >= p.at)
        };
        if let Some(i) = by_waybill.or_else(by_time) {
            if let Some((_, scan)) = self.images.remove(i) {
                self.parcels[idx].scan = Some(scan);
            }
        }
    }

    /// Parcels that are complete, or whose window closed by `now`, in entry order as far
    /// as possible; also drops reads and images that outlived every window.
    pub fn poll(&mut self, now: Instant) -> Vec<Parcel> {
        let mut out = Vec::new();
        let mut i = 0;
        while i < self.parcels.len() {
            let p = &self.parcels[i];
            if (p.read.is_some() && p.scan.is_some()) || now >= p.at + self.window {
                if let Some(p) = self.parcels.remove(i) {
                    out.push(self.finish(p, now));
                }
                // A departure may free an image for the next parcel in line.
                for idx in 0..self.parcels.len() {
                    self.claim_images(idx);
                }
            } else {
                i += 1;
            }
        }
        let horizon = self.window * 2;
        let before = self.reads.len();
        self.reads.retain(|(t, _)| now < *t + horizon);
        let orphans = before - self.reads.len();
        let before = self.images.len();
        self.images.retain(|(t, _)| now < *t + horizon);
        let orphan_images = before - self.images.len();
        self.notes
            .extend(std::iter::repeat_n(JoinNote::OrphanRead, orphans));
        self.notes
            .extend(std::iter::repeat_n(JoinNote::OrphanImage, orphan_images));
        self.recent.retain(|(t, _)| now < *t + horizon);
        out
    }

    fn finish(&mut self, p: Pending, now: Instant) -> Parcel {
        let (waybill, findings): (Option<Waybill>, Vec<Reason>) = match p.read {
            Some(r) => {
                self.recent.push_back((now, r.waybill.waybill.clone()));
                (Some(r.waybill), r.findings)
            }
            None => (None, Vec::new()),
        };
        Parcel {
            line_id: self.line_id.clone(),
            seq: p.seq,
            entered_at: p.entered_at,
            waybill,
            findings,
            scan: p.scan,
        }
    }

    /// When the next window closes, for the caller's timer.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.parcels.iter().map(|p| p.at + self.window).min()
    }

    /// Notes since the last call, for the counters.
    pub fn take_notes(&mut self) -> Vec<JoinNote> {
        std::mem::take(&mut self.notes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::line::waybill::parse_record;
    use std::path::PathBuf;

    const W: Duration = Duration::from_millis(1500);
    const LEAD: Duration = Duration::from_millis(1000);

    fn read(no: &str) -> ReadRecord {
        parse_record(no, (2026, 1, 1)).expect("valid")
    }

    fn scan(id: &str, waybill: Option<&str>) -> XrayScan {
        XrayScan {
            scan_id: id.into(),
            path: PathBuf::from(format!("{id}.png")),
            waybill: waybill.map(|w| WaybillNo::parse(w).expect("valid")),
            captured_at: SystemTime::UNIX_EPOCH,
        }
    }

    fn ms(t0: Instant, n: u64) -> Instant {
        t0 + Duration::from_millis(n)
    }

    #[test]
    fn read_eye_image_in_order_joins_at_once() {
        let t0 = Instant::now();
        let mut j = Joiner::new("L1", W, LEAD);
        j.on_read(read("SF00000001"), ms(t0, 0));
        j.on_entered(1, ms(t0, 20), SystemTime::now());
        assert!(j.poll(ms(t0, 30)).is_empty());
        j.on_image(scan("a", None), ms(t0, 400));
        let out = j.poll(ms(t0, 400));
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].seq, 1);
        assert_eq!(out[0].waybill.as_ref().map(|w| w.waybill.as_str()), Some("SF00000001"));
        assert_eq!(out[0].scan.as_ref().map(|s| s.scan_id.as_str()), Some("a"));
    }

    #[test]
    fn images_join_by_waybill_even_out_of_order() {
        let t0 = Instant::now();
        let mut j = Joiner::new("L1", W, LEAD);
        j.on_read(read("SF00000001"), ms(t0, 0));
        j.on_entered(1, ms(t0, 10), SystemTime::now());
        j.on_read(read("SF00000002"), ms(t0, 150));
        j.on_entered(2, ms(t0, 160), SystemTime::now());
        // The second parcel's image lands first.
        j.on_image(scan("b", Some("SF00000002")), ms(t0, 500));
        j.on_image(scan("a", Some("SF00000001")), ms(t0, 520));
        let out = j.poll(ms(t0, 530));
        let pairs: Vec<_> = out
            .iter()
            .map(|p| (p.seq, p.scan.as_ref().map(|s| s.scan_id.clone())))
            .collect();
        assert_eq!(pairs, vec![(1, Some("a".into())), (2, Some("b".into()))]);
    }

    #[test]
    fn missing_read_and_missing_image_leave_when_the_window_closes() {
        let t0 = Instant::now();
        let mut j = Joiner::new("L1", W, LEAD);
        j.on_entered(1, ms(t0, 0), SystemTime::now());
        j.on_image(scan("a", None), ms(t0, 300));
        j.on_read(read("SF00000002"), ms(t0, 2000));
        j.on_entered(2, ms(t0, 2010), SystemTime::now());
        let out = j.poll(ms(t0, 1600));
        assert_eq!(out.len(), 1);
        assert!(out[0].waybill.is_none() && out[0].scan.is_some());
        assert!(j.poll(ms(t0, 3000)).is_empty());
        let out = j.poll(ms(t0, 3600));
        assert_eq!(out.len(), 1);
        assert!(out[0].waybill.is_some() && out[0].scan.is_none());
    }

    #[test]
    fn a_double_read_is_merged() {
        let t0 = Instant::now();
        let mut j = Joiner::new("L1", W, LEAD);
        j.on_read(read("SF00000001"), ms(t0, 0));
        j.on_read(read("SF00000001"), ms(t0, 30));
        j.on_entered(1, ms(t0, 40), SystemTime::now());
        j.on_read(read("SF00000002"), ms(t0, 200));
        j.on_entered(2, ms(t0, 210), SystemTime::now());
        assert_eq!(j.take_notes(), vec![JoinNote::DoubleRead]);
        let out = j.poll(ms(t0, 2000));
        let wb: Vec<_> = out
            .iter()
            .map(|p| p.waybill.as_ref().map(|w| w.waybill.to_string()))
            .collect();
        assert_eq!(
            wb,
            vec![Some("SF00000001".into()), Some("SF00000002".into())]
        );
    }
}
