//! Retention and the disk budget (PRODUCT.md, "Data and retention"): one sweep, run by the
//! appliance every `store.sweep_interval_s` with the clock passed in.
//!
//! - **Retention**: records older than `retention_days` (by the time in their key, which is
//!   when the parcel entered the line) are deleted with their images, reviews and waybill
//!   index entry — except a record whose report is still in the outbox: it stays, and the
//!   sweep says so (the appliance raises an alarm).
//! - **Budget**: while the store (database + kept images) is over `disk_budget_mb`, cleared
//!   parcels' images go first, oldest first; then cleared records are slimmed (scores and
//!   model dropped; the decision, reasons, waybill, keyed hashes and image SHA-256 stay).
//!   Flagged and manual records, their images, unsent reports and every scan the judging
//!   queue still waits on are never touched to make room: if that is not enough, the sweep
//!   reports how far over the budget the store is and the appliance raises an alarm.
//!
//! sled reuses the space of deleted and rewritten records for new ones rather than shrinking
//! its files, so slimming frees room inside the database more than on the disk; the images
//! are what the budget really buys back (a kept X-ray is some 100 kB, a record about 1 kB).

use super::{Store, StoreError};
use crate::domain::Decision;
use crate::record::{Eviction, Record};
use serde::Serialize;
use std::time::{Duration, SystemTime};

/// What a sweep is asked to keep.
#[derive(Debug, Clone)]
pub struct Retention {
    /// How long records and images stay.
    pub keep_for: Duration,
    /// The most the store may use on disk, if there is a budget.
    pub budget_bytes: Option<u64>,
}

impl Retention {
    /// The retention the configuration asks for.
    pub fn from_config(c: &super::config::StoreConfig) -> Retention {
        Retention {
            keep_for: Duration::from_secs(u64::from(c.retention_days) * 86_400),
            budget_bytes: c.disk_budget_mb.map(|mb| mb.saturating_mul(1 << 20)),
        }
    }
}

/// What one sweep did and found.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Sweep {
    /// Records deleted for age (with their reviews and index entries).
    pub expired_records: usize,
    /// Image files deleted with them.
    pub expired_images: usize,
    /// Records past retention kept because their report waits for the broker.
    pub held_unsent: usize,
    /// Cleared parcels' image files deleted for the budget.
    pub evicted_images: usize,
    /// Cleared records slimmed for the budget.
    pub slimmed_records: usize,
    /// What the store uses on disk after the sweep (database + images), in bytes.
    pub used_bytes: u64,
    pub budget_bytes: Option<u64>,
    /// How far over the budget the store still is with nothing left that may go.
    pub over_budget_bytes: u64,
}

impl Sweep {
    /// The budget alarm's words, if the store is over a budget it could not get under.
    pub fn budget_alarm(&self) -> Option<String> {
        let budget = self.budget_bytes?;
        (self.over_budget_bytes > 0).then(|| {
            format!(
                "the store uses {} MB, over its budget of {} MB, and only flagged or manual records, their images and unsent reports are left, which are never deleted to make room: add disk, raise store.disk_budget_mb, or get the broker link up so reports can leave",
                self.used_bytes >> 20,
                budget >> 20
            )
        })
    }

    /// The retention alarm's words, if records past retention are held for their reports.
    pub fn retention_alarm(&self) -> Option<String> {
        (self.held_unsent > 0).then(|| {
            format!(
                "{} record(s) past retention are kept because their reports have not reached the broker",
                self.held_unsent
            )
        })
    }
}

/// The time (ms since the epoch) at the start of a record key: `{entered_ms:013}-{line}-{seq}`.
pub(crate) fn key_millis(key: &[u8]) -> Option<u64> {
    let digits = key.get(..13)?;
    std::str::from_utf8(digits).ok()?.parse().ok()
}

fn millis(t: SystemTime) -> u64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

fn file_len(p: &std::path::Path) -> u64 {
    std::fs::metadata(p).map_or(0, |m| m.len())
}

impl Store {
    /// What the store uses on disk: the database's files and the kept images.
    pub fn disk_usage(&self) -> Result<u64, StoreError> {
        let mut total = self.db.size_on_disk()?;
        for entry in std::fs::read_dir(&self.images)?.flatten() {
            total += entry.metadata().map_or(0, |m| m.len());
        }
        Ok(total)
    }

    /// Deletes what retention lets go and, over the budget, what the budget may take
    /// (module docs), all at once. `now` is the sweep's clock. The appliance sweeps in steps
    /// instead ([`Store::sweep_step`]), so that other store jobs run in between.
    pub fn sweep(&self, now: SystemTime, r: &Retention) -> Result<Sweep, StoreError> {
        let mut p = SweepProgress::default();
        while !self.sweep_step(now, r, &mut p, usize::MAX)? {}
        Ok(p.sweep)
    }

    /// Does at most `max` records' worth of a sweep; `true` once the sweep is complete (its
    /// figures in `p.sweep`).
    pub fn sweep_step(
        &self,
        now: SystemTime,
        r: &Retention,
        p: &mut SweepProgress,
        max: usize,
    ) -> Result<bool, StoreError> {
        p.sweep.budget_bytes = r.budget_bytes;
        let range = |from: &Option<Vec<u8>>| match from {
            Some(k) => self.records.range(k.clone()..),
            None => self.records.range::<&[u8], _>(..),
        };
        let resume_after = |k: &[u8]| {
            let mut next = k.to_vec();
            next.push(0);
            Some(next)
        };
        match p.phase {
            Phase::Expire => {
                let cutoff = millis(now).saturating_sub(r.keep_for.as_millis() as u64);
                for (visited, item) in range(&p.from).enumerate() {
                    let (k, v) = item?;
                    if visited == max {
                        p.from = Some(k.to_vec());
                        return Ok(false);
                    }
                    // Keys without a time cannot be dated: never deleted for age.
                    let Some(t) = key_millis(&k) else { continue };
                    if t >= cutoff {
                        break;
                    }
                    self.expire(&k, &v, &mut p.sweep)?;
                }
                p.phase = Phase::Measure;
                p.from = None;
                Ok(false)
            }
            Phase::Measure => {
                p.sweep.used_bytes = self.disk_usage()?;
                p.phase = match r.budget_bytes {
                    Some(budget) if p.sweep.used_bytes > budget => Phase::Evict(Pass::Images),
                    _ => Phase::Done,
                };
                Ok(p.phase == Phase::Done)
            }
            Phase::Evict(pass) => {
                let budget = r.budget_bytes.unwrap_or(u64::MAX);
                let at = crate::time_fmt::format(now);
                for (visited, item) in range(&p.from).enumerate() {
                    if p.sweep.used_bytes <= budget {
                        p.phase = Phase::Done;
                        return Ok(true);
                    }
                    let (k, v) = item?;
                    if visited == max {
                        p.from = Some(k.to_vec());
                        return Ok(false);
                    }
                    self.evict_one(pass, &k, &v, &at, &mut p.sweep)?;
                    p.from = resume_after(&k);
                }
                p.from = None;
                p.phase = match pass {
                    Pass::Images => Phase::Evict(Pass::Slim),
                    Pass::Slim => {
                        p.sweep.over_budget_bytes = p.sweep.used_bytes.saturating_sub(budget);
                        Phase::Done
                    }
                };
                Ok(p.phase == Phase::Done)
            }
            Phase::Done => Ok(true),
        }
    }

    /// Deletes one record past retention with its images, reviews and index entries, unless
    /// its report still waits for the broker.
    fn expire(&self, k: &[u8], v: &[u8], out: &mut Sweep) -> Result<(), StoreError> {
        if self.outbox.contains_key(k)? {
            out.held_unsent += 1;
            return Ok(());
        }
        // A record that cannot be read still goes; so does what its key alone names.
        let record = Record::from_slice(v).ok();
        for f in record.iter().flat_map(Record::image_files) {
            if std::fs::remove_file(&f).is_ok() {
                out.expired_images += 1;
            }
        }
        let mut prefix = k.to_vec();
        prefix.push(0);
        for review in self.reviews.scan_prefix(&prefix).keys() {
            self.reviews.remove(review?)?;
        }
        if let Some(w) = record.as_ref().and_then(|r| r.waybill.as_ref()) {
            self.by_waybill
                .remove([w.as_str().as_bytes(), b"\0", k].concat())?;
        }
        if let Some(report_id) = record.as_ref().and_then(|r| r.report_id.as_deref()) {
            self.forget_report(report_id)?;
        }
        self.db.open_tree(super::COUNTED)?.remove(k)?;
        self.db.open_tree(super::queue::QUEUE)?.remove(k)?;
        self.records.remove(k)?;
        out.expired_records += 1;
        Ok(())
    }

    /// One pass of the budget over one record: only cleared records give anything up.
    fn evict_one(
        &self,
        pass: Pass,
        k: &[u8],
        v: &[u8],
        at: &str,
        out: &mut Sweep,
    ) -> Result<(), StoreError> {
        let Ok(mut record) = Record::from_slice(v) else {
            return Ok(());
        };
        // Only cleared parcels give anything up, and none an operator still has to judge.
        if record.decision != Decision::Clear
            || self.db.open_tree(super::queue::QUEUE)?.contains_key(k)?
        {
            return Ok(());
        }
        match pass {
            Pass::Images => {
                let files = record.image_files();
                if files.is_empty() {
                    return Ok(());
                }
                for f in files {
                    let len = file_len(&f);
                    if std::fs::remove_file(&f).is_ok() {
                        out.evicted_images += 1;
                        out.used_bytes = out.used_bytes.saturating_sub(len);
                    }
                }
                record.image = None;
                record.image_evicted = Some(Eviction {
                    at: at.to_owned(),
                    why: "disk_budget".to_owned(),
                });
            }
            Pass::Slim => {
                if record.slimmed {
                    return Ok(());
                }
                record.scores = None;
                record.model = None;
                record.slimmed = true;
                out.slimmed_records += 1;
            }
        }
        let bytes = record.to_vec();
        out.used_bytes = out
            .used_bytes
            .saturating_sub((v.len() as u64).saturating_sub(bytes.len() as u64));
        self.records.insert(k, bytes)?;
        Ok(())
    }
}

/// Where a sweep done in steps has got to ([`Store::sweep_step`]).
#[derive(Debug, Clone, Default)]
pub struct SweepProgress {
    phase: Phase,
    /// The record key to go on from.
    from: Option<Vec<u8>>,
    /// What the sweep did so far.
    pub sweep: Sweep,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
enum Phase {
    #[default]
    Expire,
    Measure,
    Evict(Pass),
    Done,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Pass {
    Images,
    Slim,
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use std::path::{Path, PathBuf};

    const DAY: u64 = 86_400_000;
    /// The fake clock: 2026-01-31 in ms.
    const NOW_MS: u64 = 1_769_817_600_000;

    fn now() -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_millis(NOW_MS)
    }

    /// A record entered `age_days` ago with an image of `image_kb` kB (0: none); a flagged
    /// one with its report in the outbox unless `acked`.
    async fn put(
        store: &Store,
        age_days: u64,
        seq: u32,
        decision: &str,
        image_kb: usize,
        acked: bool,
    ) -> String {
        let id = format!("{:013}-L1-{seq}", NOW_MS - age_days * DAY);
        let image = (image_kb > 0).then(|| {
            let p = store.images_dir().join(format!("{id}.png"));
            std::fs::write(&p, vec![7u8; image_kb * 1024]).expect("image");
            p.display().to_string()
        });
        let mut record = Record::example(
            &id,
            serde_json::from_value(json!(decision)).expect("a decision"),
        );
        record.waybill =
            Some(crate::domain::WaybillNo::parse(&format!("SF{seq:06}")).expect("waybill"));
        record.image = image.map(PathBuf::from);
        record.scores = Some(crate::domain::Scores {
            category: Vec::new(),
            counterfeit: 0.1,
            detections: Vec::new(),
        });
        record.model = Some(crate::domain::ModelInfo {
            name: "ref".into(),
            version: "0.1".into(),
            sha256: String::new(),
        });
        record.report_id = (decision == "flag").then(|| format!("rep-{seq}"));
        let rid = format!("rep-{seq}");
        let report = (decision == "flag").then_some((rid.as_str(), "reports/flagged", &b"{}"[..]));
        store
            .commit_counted(&[super::super::Commit {
                key: id.clone(),
                record,
                report: report.map(|(a, b, c)| (a.to_owned(), b.to_owned(), c.to_vec())),
                waybill: Some(format!("SF{seq:06}")),
                counts: Vec::new(),
            }])
            .expect("commit");
        if acked && report.is_some() {
            store.ack(id.as_bytes()).expect("ack");
        }
        id
    }

    /// Records seq 1, 2, … of `decisions`, one a day up to `newest_days` ago, each with an
    /// image of `image_kb` kB; a flagged one's report stays unsent.
    async fn daily<const N: usize>(
        store: &Store,
        newest_days: u64,
        image_kb: usize,
        decisions: [&str; N],
    ) -> [String; N] {
        let mut ids = Vec::with_capacity(N);
        for (k, decision) in decisions.into_iter().enumerate() {
            let (age, seq) = (newest_days + (N - 1 - k) as u64, k as u32 + 1);
            ids.push(put(store, age, seq, decision, image_kb, decision != "flag").await);
        }
        ids.try_into().expect("one id a decision")
    }

    /// Thirty days' keeping, within `budget_bytes` of disk if any.
    fn retention(budget_bytes: Option<u64>) -> Retention {
        Retention {
            keep_for: Duration::from_secs(30 * 86_400),
            budget_bytes,
        }
    }

    fn exists(store: &Store, id: &str) -> bool {
        store.record(id.as_bytes()).expect("read").is_some()
    }

    fn image_exists(dir: &Path, id: &str) -> bool {
        dir.join(format!("{id}.png")).exists()
    }

    #[tokio::test]
    async fn records_and_images_past_retention_go_except_unsent_reports() {
        let (_dir, store) = crate::store::testing::fresh("retention");
        let old_clear = put(&store, 40, 1, "clear", 4, true).await;
        let old_flag_sent = put(&store, 31, 2, "flag", 4, true).await;
        let old_flag_unsent = put(&store, 35, 3, "flag", 4, false).await;
        let recent = put(&store, 29, 4, "manual", 4, true).await;
        store
            .review(
                &old_flag_sent,
                super::super::review::Finding::Confirmed,
                "op",
                None,
            )
            .expect("review");
        // The feed indexed the sent report (for evidence requests).
        store
            .index_report("rep-2", old_flag_sent.as_bytes())
            .expect("index");
        let r = retention(None);
        let s = store.sweep(now(), &r).expect("sweep");
        assert_eq!(
            (s.expired_records, s.expired_images, s.held_unsent),
            (2, 2, 1),
            "{s:?}"
        );
        // Its report index entry left with the record.
        assert!(store
            .db
            .open_tree("report_index")
            .expect("tree")
            .get("rep-2")
            .expect("read")
            .is_none());
        assert!(!exists(&store, &old_clear) && !image_exists(store.images_dir(), &old_clear));
        assert!(!exists(&store, &old_flag_sent));
        assert!(store.reviews(&old_flag_sent).expect("reviews").is_empty());
        assert!(store
            .find_by_waybill("SF000002", 10)
            .expect("search")
            .is_empty());
        assert!(
            exists(&store, &old_flag_unsent),
            "its report has not left yet"
        );
        assert!(image_exists(store.images_dir(), &old_flag_unsent));
        assert!(s.retention_alarm().is_some());
        assert!(exists(&store, &recent) && image_exists(store.images_dir(), &recent));
        // Once the broker has it, the next sweep lets it go.
        store.ack(old_flag_unsent.as_bytes()).expect("ack");
        let s = store.sweep(now(), &r).expect("sweep");
        assert_eq!((s.expired_records, s.held_unsent), (1, 0));
        assert!(s.retention_alarm().is_none());
        // A sweep in steps of one record does what one sweep does.
        let again = put(&store, 40, 5, "clear", 4, true).await;
        let mut p = SweepProgress::default();
        let mut steps = 0;
        while !store.sweep_step(now(), &r, &mut p, 1).expect("step") {
            steps += 1;
        }
        assert_eq!(p.sweep.expired_records, 1, "{:?}", p.sweep);
        assert!(steps >= 2 && !exists(&store, &again));
        // A day later the 29-day-old one is 30 days old and goes too.
        let s = store
            .sweep(now() + Duration::from_millis(DAY + 1), &r)
            .expect("sweep");
        assert_eq!(s.expired_records, 1);
        assert!(!exists(&store, &recent));
    }

    #[tokio::test]
    async fn over_the_budget_cleared_images_go_oldest_first_and_flagged_data_stays() {
        let (_dir, store) = crate::store::testing::fresh("retention");
        let decisions = ["clear", "flag", "clear", "manual", "clear"];
        let [c1, f2, c3, m4, c5] = daily(&store, 6, 200, decisions).await;
        let used = store.disk_usage().expect("usage");
        // Room for all but about one and a half images: the two oldest cleared ones go.
        let budget = used - 300 * 1024;
        let s = store.sweep(now(), &retention(Some(budget))).expect("sweep");
        assert_eq!(
            (s.evicted_images, s.slimmed_records, s.over_budget_bytes),
            (2, 0, 0),
            "{s:?}"
        );
        let images = store.images_dir().to_owned();
        assert!(!image_exists(&images, &c1) && !image_exists(&images, &c3));
        assert!(image_exists(&images, &c5), "the newest cleared image stays");
        assert!(image_exists(&images, &f2) && image_exists(&images, &m4));
        let r1 = store
            .record(c1.as_bytes())
            .expect("read")
            .expect("record stays");
        assert_eq!(r1.image, None);
        assert_eq!(
            r1.image_evicted.map(|e| e.why).as_deref(),
            Some("disk_budget")
        );
        assert_eq!(r1.decision, Decision::Clear);
        assert!(s.budget_alarm().is_none());
    }

    #[tokio::test]
    async fn with_only_flagged_data_left_the_budget_raises_an_alarm_and_deletes_nothing() {
        let (_dir, store) = crate::store::testing::fresh("retention");
        let [f1, m2, c3] = daily(&store, 3, 100, ["flag", "manual", "clear"]).await;
        // Only the cleared image (100 kB) may go; the budget asks for 150 kB.
        let budget = store.disk_usage().expect("usage") - 150 * 1024;
        let s = store.sweep(now(), &retention(Some(budget))).expect("sweep");
        // The cleared image went and the cleared record was slimmed; that was not enough.
        assert_eq!((s.evicted_images, s.slimmed_records), (1, 1), "{s:?}");
        assert!(s.over_budget_bytes > 0);
        let alarm = s.budget_alarm().expect("alarm");
        assert!(alarm.contains("never deleted"), "{alarm}");
        let images = store.images_dir().to_owned();
        assert!(image_exists(&images, &f1) && image_exists(&images, &m2));
        assert!(exists(&store, &f1) && exists(&store, &m2) && exists(&store, &c3));
        assert_eq!(store.outbox_len(), 1, "the unsent report stays");
        let c = store.record(c3.as_bytes()).expect("read").expect("record");
        assert!(c.slimmed && c.scores.is_none() && c.model.is_none());
        let f = store.record(f1.as_bytes()).expect("read").expect("record");
        assert_eq!(
            f.scores.map(|x| x.counterfeit),
            Some(0.1),
            "a flagged record is never slimmed"
        );
    }

    #[tokio::test]
    async fn the_budget_never_takes_a_scan_the_queue_waits_on() {
        let (_dir, store) = crate::store::testing::fresh("retention");
        // A cleared parcel drawn for re-review, older than a plain cleared one.
        let drawn = {
            let id = format!("{:013}-L1-1", NOW_MS - 3 * DAY);
            let p = store.images_dir().join(format!("{id}.png"));
            std::fs::write(&p, vec![7u8; 200 * 1024]).expect("image");
            let mut r = Record::example(&id, Decision::Clear);
            r.image = Some(p);
            r.rereview = true;
            store.commit(id.as_bytes(), &r, None).expect("commit");
            id
        };
        let plain = put(&store, 2, 2, "clear", 200, true).await;
        let r = retention(Some(store.disk_usage().expect("usage") - 100 * 1024));
        let s = store.sweep(now(), &r).expect("sweep");
        assert_eq!(s.evicted_images, 1, "{s:?}");
        let images = store.images_dir().to_owned();
        assert!(image_exists(&images, &drawn), "the queue waits on it");
        assert!(!image_exists(&images, &plain));
        // Re-reviewed, it is a cleared parcel like any other.
        store
            .judge(
                &drawn,
                super::super::review::Finding::Cleared,
                "op",
                None,
                now(),
            )
            .expect("judge");
        let r = retention(Some(store.disk_usage().expect("usage") - 100 * 1024));
        store.sweep(now(), &r).expect("sweep");
        assert!(!image_exists(&images, &drawn));
    }

    #[test]
    fn keys_tell_their_age() {
        assert_eq!(key_millis(b"1769817600000-L1-4"), Some(NOW_MS));
        assert_eq!(key_millis(b"r1"), None);
    }
}
