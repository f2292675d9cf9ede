//! The join: binds the line controller's parcel-entered event, the waybill read and the X-ray
//! image into one [`Parcel`].
//!
//! The photo-eye's event is the anchor, because its sequence number is what the decision
//! goes back with. A wrong join puts a stranger's name on a suspect parcel, so nothing is
//! joined by order alone:
//!
//! - a **read** joins the parcel whose entry is within `read_window` of it, either side; it
//!   is placed only once that window has passed, so that no other parcel can still appear;
//! - an **image** that names its waybill (sidecar or file name) joins the parcel with that
//!   read;
//! - an image without a waybill joins the parcel whose entry plus the X-ray machine's
//!   `image_delay` is within `image_window` of it.
//!
//! The windows are the jitter the line is known to have. When more than one parcel still
//! waiting is inside the window, the read or image is *ambiguous*: it joins none of them
//! (they go to manual inspection) rather than the nearest by guess. So on a busy line —
//! at 3 m/s with parcels 300 mm apart, one every 100 ms — windows under half the spacing
//! join everything, and jitter beyond them costs manual inspections, never a wrong join.
//!
//! A parcel leaves as soon as it has both, or when `window` after its entry has passed with
//! whatever it has (it then goes to manual inspection as `no_read`/`no_image`).
//!
//! Pure logic over explicit instants: no I/O, no clock, so that every sequence is testable.

use crate::domain::{Parcel, WaybillNo, XrayScan};
use crate::waybill::ReadRecord;
use std::collections::VecDeque;
use std::time::{Duration, Instant, SystemTime};

/// What the join did with an input, for the counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum JoinNote {
    /// A repeated read of a waybill already seen, merged into the first.
    DoubleRead,
    /// A read no parcel entered near enough to.
    OrphanRead,
    /// An image no parcel claimed.
    OrphanImage,
    /// A read with more than one waiting parcel inside its window: joined to none.
    AmbiguousRead,
    /// An image with more than one waiting parcel inside its window: joined to none.
    AmbiguousImage,
}

/// What a parcel leaving the join has: the outcome counted per line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum JoinOutcome {
    /// A read and an image.
    Joined,
    /// An image but no readable waybill: manual inspection.
    NoRead,
    /// A read but no image: manual inspection.
    NoImage,
    /// Neither: manual inspection.
    NoReadNoImage,
}

/// The outcome of a parcel that left the join.
pub fn outcome(parcel: &Parcel) -> JoinOutcome {
    match (parcel.waybill.is_some(), parcel.scan.is_some()) {
        (true, true) => JoinOutcome::Joined,
        (false, true) => JoinOutcome::NoRead,
        (true, false) => JoinOutcome::NoImage,
        (false, false) => JoinOutcome::NoReadNoImage,
    }
}

/// The join's timing, from the line's geometry.
#[derive(Debug, Clone, Copy)]
pub struct JoinTiming {
    /// How long after entry a parcel waits for its read and image.
    pub window: Duration,
    /// How far a read may be from the parcel's entry, either side.
    pub read_window: Duration,
    /// When the X-ray machine's image usually completes after entry.
    pub image_delay: Duration,
    /// How far from that an image without a waybill may complete.
    pub image_window: Duration,
}

struct Pending {
    seq: u32,
    epoch: Option<screenline_protocol::Epoch>,
    at: Instant,
    entered_at: SystemTime,
    read: Option<ReadRecord>,
    scan: Option<XrayScan>,
}

/// The join for one line.
pub struct Joiner {
    line_id: String,
    timing: JoinTiming,
    parcels: VecDeque<Pending>,
    reads: Vec<(Instant, ReadRecord)>,
    images: Vec<(Instant, XrayScan)>,
    /// Waybills recently read, to merge double reads.
    recent: VecDeque<(Instant, WaybillNo)>,
    notes: Vec<JoinNote>,
    /// Images no parcel claimed, and why, for the caller to quarantine.
    orphans: Vec<(XrayScan, JoinNote)>,
}

fn distance(a: Instant, b: Instant) -> Duration {
    if a > b {
        a - b
    } else {
        b - a
    }
}

impl Joiner {
    /// A join for `line_id`.
    pub fn new(line_id: impl Into<String>, timing: JoinTiming) -> Joiner {
        Joiner {
            line_id: line_id.into(),
            timing,
            parcels: VecDeque::new(),
            reads: Vec::new(),
            images: Vec::new(),
            recent: VecDeque::new(),
            notes: Vec::new(),
            orphans: Vec::new(),
        }
    }

    /// The line this join is for.
    pub fn line_id(&self) -> &str {
        &self.line_id
    }

    /// The photo-eye saw parcel `seq` of controller epoch `epoch`.
    pub fn on_entered(
        &mut self,
        seq: u32,
        epoch: Option<screenline_protocol::Epoch>,
        at: Instant,
        entered_at: SystemTime,
    ) {
        self.parcels.push_back(Pending {
            seq,
            epoch,
            at,
            entered_at,
            read: None,
            scan: None,
        });
    }

    /// The reader delivered a waybill.
    pub fn on_read(&mut self, record: ReadRecord, at: Instant) {
        let no = &record.waybill.waybill;
        let known = self.recent.iter().any(|(_, w)| w == no)
            || self.reads.iter().any(|(_, r)| &r.waybill.waybill == no);
        if known {
            self.notes.push(JoinNote::DoubleRead);
            return;
        }
        self.recent.push_back((at, no.clone()));
        self.reads.push((at, record));
    }

    /// The X-ray machine finished an image.
    pub fn on_image(&mut self, scan: XrayScan, at: Instant) {
        self.images.push((at, scan));
    }

    /// Places reads whose window has passed on the nearest parcel.
    fn place_reads(&mut self, now: Instant) {
        let w = self.timing.read_window;
        let mut i = 0;
        while i < self.reads.len() {
            let t = self.reads[i].0;
            if now < t + w {
                i += 1;
                continue;
            }
            let (_, record) = self.reads.swap_remove(i);
            let mut inside = self
                .parcels
                .iter_mut()
                .filter(|p| p.read.is_none() && distance(p.at, t) <= w);
            match (inside.next(), inside.next()) {
                (Some(p), None) => p.read = Some(record),
                (None, _) => self.notes.push(JoinNote::OrphanRead),
                (Some(_), Some(_)) => self.notes.push(JoinNote::AmbiguousRead),
            }
        }
    }

    /// Places images by waybill, or by time once no nearer parcel can appear.
    fn place_images(&mut self, now: Instant) {
        let JoinTiming {
            window,
            image_delay,
            image_window,
            ..
        } = self.timing;
        let mut i = 0;
        while i < self.images.len() {
            let (t, ref scan) = self.images[i];
            let by_waybill = scan.waybill.as_ref().and_then(|w| {
                self.parcels.iter().position(|p| {
                    p.scan.is_none() && p.read.as_ref().is_some_and(|r| &r.waybill.waybill == w)
                })
            });
            // By time, once no nearer parcel can still enter. An image that names a waybill
            // only goes to a parcel whose read is missing: it never contradicts a read.
            let time_ready = now + image_delay >= t + image_window;
            // Ok(Some(k)): the one parcel inside the window; Ok(None): none; Err: several.
            let by_time = || {
                let mut inside = self
                    .parcels
                    .iter()
                    .enumerate()
                    .filter(|(_, p)| {
                        p.scan.is_none() && (scan.waybill.is_none() || p.read.is_none())
                    })
                    .filter(|(_, p)| distance(p.at + image_delay, t) <= image_window)
                    .map(|(k, _)| k);
                match (inside.next(), inside.next()) {
                    (Some(k), None) => Ok(Some(k)),
                    (None, _) => Ok(None),
                    (Some(_), Some(_)) => Err(()),
                }
            };
            let target = match by_waybill {
                Some(k) => Ok(Some(k)),
                None if time_ready => by_time(),
                None => {
                    i += 1;
                    continue;
                }
            };
            match target {
                Ok(Some(k)) => {
                    let (_, scan) = self.images.swap_remove(i);
                    self.parcels[k].scan = Some(scan);
                }
                // An image that names a waybill may wait for its read; any other is orphaned
                // once every parcel it could belong to has had its chance.
                Ok(None) | Err(()) if scan.waybill.is_some() && now < t + window => i += 1,
                Ok(None) => {
                    let (_, scan) = self.images.swap_remove(i);
                    self.orphans.push((scan, JoinNote::OrphanImage));
                    self.notes.push(JoinNote::OrphanImage);
                }
                Err(()) => {
                    let (_, scan) = self.images.swap_remove(i);
                    self.orphans.push((scan, JoinNote::AmbiguousImage));
                    self.notes.push(JoinNote::AmbiguousImage);
                }
            }
        }
    }

    /// Parcels that are complete, or whose window closed by `now`, in entry order.
    pub fn poll(&mut self, now: Instant) -> Vec<Parcel> {
        self.place_reads(now);
        self.place_images(now);
        let window = self.timing.window;
        let mut out = Vec::new();
        let mut kept = VecDeque::with_capacity(self.parcels.len());
        for p in self.parcels.drain(..) {
            if (p.read.is_some() && p.scan.is_some()) || now >= p.at + window {
                let (waybill, findings) = match p.read {
                    Some(r) => (Some(r.waybill), r.findings),
                    None => (None, Vec::new()),
                };
                out.push(Parcel {
                    line_id: self.line_id.clone(),
                    seq: p.seq,
                    epoch: p.epoch,
                    entered_at: p.entered_at,
                    waybill,
                    findings,
                    scan: p.scan,
                });
            } else {
                kept.push_back(p);
            }
        }
        self.parcels = kept;
        let horizon = window * 2;
        self.recent.retain(|(t, _)| now < *t + horizon);
        out
    }

    /// When the join next has something to do, for the caller's timer.
    pub fn next_deadline(&self) -> Option<Instant> {
        let t = &self.timing;
        let parcels = self.parcels.iter().map(|p| p.at + t.window);
        let reads = self.reads.iter().map(|(at, _)| *at + t.read_window);
        let images = self.images.iter().map(|(at, s)| {
            if s.waybill.is_some() {
                *at + t.window
            } else {
                (*at + t.image_window)
                    .checked_sub(t.image_delay)
                    .unwrap_or(*at)
            }
        });
        parcels.chain(reads).chain(images).min()
    }

    /// Notes since the last call, for the counters.
    pub fn take_notes(&mut self) -> Vec<JoinNote> {
        std::mem::take(&mut self.notes)
    }

    /// Images joined to no parcel since the last call, with why (`OrphanImage` or
    /// `AmbiguousImage`): their files are still in the drop folder.
    pub fn take_orphans(&mut self) -> Vec<(XrayScan, JoinNote)> {
        std::mem::take(&mut self.orphans)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::waybill::parse_record;
    use std::path::PathBuf;

    const TIMING: JoinTiming = JoinTiming {
        window: Duration::from_millis(1500),
        read_window: Duration::from_millis(150),
        image_delay: Duration::from_millis(300),
        image_window: Duration::from_millis(200),
    };

    fn read(no: &str) -> ReadRecord {
        parse_record(no, (2026, 1, 1)).expect("valid")
    }

    fn scan(id: &str, waybill: Option<&str>) -> XrayScan {
        XrayScan {
            scan_id: id.into(),
            path: PathBuf::from(format!("{id}.png")),
            completed: Instant::now(),
            low_energy: None,
            waybill: waybill.map(|w| WaybillNo::parse(w).expect("valid")),
            captured_at: SystemTime::UNIX_EPOCH,
        }
    }

    fn ms(t0: Instant, n: u64) -> Instant {
        t0 + Duration::from_millis(n)
    }

    /// Runs the join over a script of events and polls every 10 ms; returns
    /// (seq, waybill, scan id) per parcel in the order they left.
    fn run(script: &mut [(u64, Ev)]) -> Vec<(u32, Option<String>, Option<String>)> {
        run_with(TIMING, script)
    }

    fn run_with(
        timing: JoinTiming,
        script: &mut [(u64, Ev)],
    ) -> Vec<(u32, Option<String>, Option<String>)> {
        let t0 = Instant::now();
        script.sort_by_key(|(t, _)| *t);
        let mut j = Joiner::new("L1", timing);
        let mut out = Vec::new();
        let end = script.last().map_or(0, |(t, _)| *t) + 3000;
        let mut next = 0;
        for now in (0..=end).step_by(10) {
            while next < script.len() && script[next].0 <= now {
                let at = ms(t0, script[next].0);
                match &script[next].1 {
                    Ev::Eye(seq) => j.on_entered(*seq, None, at, SystemTime::now()),
                    Ev::Read(no) => j.on_read(read(no), at),
                    Ev::Image(id, wb) => j.on_image(scan(id, wb.as_deref()), at),
                }
                next += 1;
            }
            for p in j.poll(ms(t0, now)) {
                out.push((
                    p.seq,
                    p.waybill.map(|w| w.waybill.to_string()),
                    p.scan.map(|s| s.scan_id),
                ));
            }
        }
        out
    }

    enum Ev {
        Eye(u32),
        Read(String),
        Image(String, Option<String>),
    }

    fn eye(t: u64, seq: u32) -> (u64, Ev) {
        (t, Ev::Eye(seq))
    }
    fn rd(t: u64, no: &str) -> (u64, Ev) {
        (t, Ev::Read(no.into()))
    }
    fn img(t: u64, id: &str, wb: Option<&str>) -> (u64, Ev) {
        (t, Ev::Image(id.into(), wb.map(Into::into)))
    }
    fn want(seq: u32, wb: Option<&str>, id: Option<&str>) -> (u32, Option<String>, Option<String>) {
        (seq, wb.map(Into::into), id.map(Into::into))
    }

    #[test]
    fn read_eye_image_in_order() {
        let got = run(&mut [rd(0, "SF00000001"), eye(5, 1), img(310, "a", None)]);
        assert_eq!(got, vec![want(1, Some("SF00000001"), Some("a"))]);
    }

    #[test]
    fn images_join_by_waybill_even_out_of_order() {
        let got = run(&mut [
            rd(0, "SF00000001"),
            eye(2, 1),
            rd(150, "SF00000002"),
            eye(152, 2),
            img(400, "b", Some("SF00000002")),
            img(420, "a", Some("SF00000001")),
        ]);
        // Parcel 2 is complete first and leaves first.
        assert_eq!(
            got,
            vec![
                want(2, Some("SF00000002"), Some("b")),
                want(1, Some("SF00000001"), Some("a"))
            ]
        );
    }

    /// Runs `script`, in which parcel 1 lacks a read or an image: parcel 2 leaves first with
    /// its own read `SF00000002` and image `b`, then parcel 1 as `parcel_1`.
    fn parcel_2_leaves_first_with_its_own(script: &mut [(u64, Ev)], parcel_1: Joined) {
        let parcel_2 = want(2, Some("SF00000002"), Some("b"));
        assert_eq!(run(script), vec![parcel_2, parcel_1]);
    }

    #[test]
    fn a_missing_read_never_shifts_reads_onto_the_wrong_parcel() {
        // Parcel 1 is not read; parcel 2's read comes a moment before parcel 2 enters and
        // must not be given to parcel 1, which is still waiting.
        parcel_2_leaves_first_with_its_own(
            &mut [
                eye(0, 1),
                img(300, "a", None),
                rd(495, "SF00000002"),
                eye(500, 2),
                img(800, "b", None),
            ],
            want(1, None, Some("a")),
        );
    }

    #[test]
    fn a_missing_image_never_shifts_images_onto_the_wrong_parcel() {
        parcel_2_leaves_first_with_its_own(
            &mut [
                rd(0, "SF00000001"),
                eye(0, 1),
                rd(500, "SF00000002"),
                eye(500, 2),
                img(810, "b", None),
            ],
            want(1, Some("SF00000001"), None),
        );
    }

    #[test]
    fn an_image_naming_a_waybill_joins_an_unread_parcel_by_time_but_never_a_read_one() {
        let got = run(&mut [
            eye(0, 1),
            img(300, "a", Some("SF00000009")),
            rd(500, "SF00000002"),
            eye(500, 2),
            img(800, "b", Some("SF00000003")),
        ]);
        assert_eq!(
            got,
            vec![want(1, None, Some("a")), want(2, Some("SF00000002"), None)]
        );
    }

    /// Parcel `k`'s expected join: (seq, waybill, scan id).
    type Joined = (u32, Option<String>, Option<String>);

    /// A scripted busy line: 3 m/s with parcels 300 mm apart, one every 100 ms. Reads come
    /// ±`read_jitter` ms around the photo-eye, images 300 ms after it ±`image_jitter` ms.
    /// Some reads are missing, some doubled (a second read up to 90 ms later — nearer the
    /// next parcel than its own), some images missing, and a third of the images name their
    /// waybill and may come up to 500 ms late, out of order. Returns what left the join,
    /// sorted by seq, and the truth.
    fn busy_line(
        read_jitter: u64,
        image_jitter: u64,
        timing: JoinTiming,
    ) -> (Vec<Joined>, Vec<Joined>) {
        // splitmix64: a fixed, dependency-free stream so the script is the same on every run.
        let mut state = 0x5c2e_e11e_u64;
        let mut next = move || {
            state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
            let mut z = state;
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            z ^ (z >> 31)
        };
        let mut jitter = |half: u64| (next() % (2 * half + 1)) as i64 - half as i64;
        const N: u32 = 400;
        let mut script = Vec::new();
        let mut truth = Vec::new();
        let (mut missing_reads, mut double_reads, mut missing_images, mut late) = (0, 0, 0, 0);
        for k in 0..N {
            let t = 1000 + 100 * u64::from(k);
            let waybill = format!("SF3{k:012}");
            let scan_id = format!("x{k:04}");
            script.push(eye(t, k));
            let has_read = k % 11 != 4;
            let has_image = k % 13 != 9;
            if has_read {
                let at = (t as i64 + jitter(read_jitter)) as u64;
                script.push(rd(at, &waybill));
                if k % 7 == 2 {
                    script.push(rd(at + 30 + (jitter(30) + 30) as u64, &waybill));
                    double_reads += 1;
                }
            } else {
                missing_reads += 1;
            }
            if has_image {
                let mut at = (t as i64 + 300 + jitter(image_jitter)) as u64;
                let names = has_read && k % 3 == 0;
                if names && k % 2 == 0 {
                    at += 100 + (jitter(200) + 200) as u64;
                    late += 1;
                }
                script.push(img(at, &scan_id, names.then_some(waybill.as_str())));
            } else {
                missing_images += 1;
            }
            truth.push(want(
                k,
                has_read.then_some(waybill.as_str()),
                has_image.then_some(scan_id.as_str()),
            ));
        }
        assert!(missing_reads > 0 && double_reads > 0 && missing_images > 0 && late > 0);
        let mut got = run_with(timing, &mut script);
        assert_eq!(got.len(), N as usize, "every parcel leaves exactly once");
        got.sort();
        (got, truth)
    }

    /// Joins that put a read or an image on a parcel it does not belong to.
    fn wrong_joins<'a>(got: &'a [Joined], truth: &'a [Joined]) -> Vec<(&'a Joined, &'a Joined)> {
        got.iter()
            .zip(truth)
            .filter(|(g, t)| {
                g.0 != t.0
                    || g.1.as_ref().is_some_and(|w| Some(w) != t.1.as_ref())
                    || g.2.as_ref().is_some_and(|s| Some(s) != t.2.as_ref())
            })
            .collect()
    }

    /// Windows for 3 m/s and 300 mm: under half the 100 ms between parcels.
    const BUSY: JoinTiming = JoinTiming {
        window: Duration::from_millis(1500),
        read_window: Duration::from_millis(45),
        image_delay: Duration::from_millis(300),
        image_window: Duration::from_millis(45),
    };

    #[test]
    fn three_metres_per_second_300_mm_apart_zero_wrong_joins() {
        let (got, truth) = busy_line(30, 40, BUSY);
        assert_eq!(wrong_joins(&got, &truth), vec![]);
        assert_eq!(got, truth, "a read or an image that was there was left out");
    }

    #[test]
    fn jitter_beyond_the_spacing_costs_manual_inspections_never_a_wrong_join() {
        // Images ±70 ms at 100 ms spacing: windows wide enough to take them overlap, so a
        // time join is often ambiguous. Those parcels go without (manual); none goes wrong.
        let timing = JoinTiming {
            image_window: Duration::from_millis(75),
            ..BUSY
        };
        let (got, truth) = busy_line(30, 70, timing);
        assert_eq!(wrong_joins(&got, &truth), vec![]);
        let unjoined = got.iter().zip(&truth).filter(|(g, t)| g != t).count();
        assert!(
            unjoined > 0 && unjoined < got.len() / 2,
            "{unjoined} parcels lost their image"
        );
    }

    #[test]
    fn a_double_read_is_merged() {
        let t0 = Instant::now();
        let mut j = Joiner::new("L1", TIMING);
        j.on_read(read("SF00000001"), ms(t0, 0));
        j.on_read(read("SF00000001"), ms(t0, 30));
        j.on_entered(1, None, ms(t0, 10), SystemTime::now());
        assert_eq!(j.take_notes(), vec![JoinNote::DoubleRead]);
        let out = j.poll(ms(t0, 2000));
        assert_eq!(out.len(), 1);
        assert_eq!(
            out[0].waybill.as_ref().map(|w| w.waybill.as_str()),
            Some("SF00000001")
        );
    }

    #[test]
    fn a_read_with_no_parcel_is_an_orphan() {
        let t0 = Instant::now();
        let mut j = Joiner::new("L1", TIMING);
        j.on_read(read("SF00000001"), ms(t0, 0));
        assert!(j.poll(ms(t0, 1000)).is_empty());
        assert_eq!(j.take_notes(), vec![JoinNote::OrphanRead]);
    }
}
