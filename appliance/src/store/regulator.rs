//! What the regulator feed keeps beside the records: the nonces of accepted commands (against
//! replay), an index from report id to record (for evidence requests), the statistics
//! outbox (drained after every flagged report), and the regulator's watch-list as keyed
//! hashes.
//!
//! Each lives in its own sled tree, opened by name on first use (sled caches open trees), so
//! the store's layout is unchanged for everything else.

use super::{Store, StoreError};
use screenline_core::rules::HashedWatchlist;
use std::time::{SystemTime, UNIX_EPOCH};

const NONCES: &str = "cmd_nonces";
const REPORT_INDEX: &str = "report_index";
const STATS_OUTBOX: &str = "stats_outbox";
const REGULATOR: &str = "regulator";

fn millis(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// A queued statistics message: its key (for the acknowledgement) and its payload.
pub type QueuedStats = (Vec<u8>, Vec<u8>);

impl Store {
    /// Claims a command's nonce, durably: `true` the first time, `false` for a replay. Nonces
    /// of commands issued before `forget_before` are dropped — such commands are refused as
    /// stale anyway.
    pub fn claim_nonce(
        &self,
        nonce: &str,
        issued_at: SystemTime,
        forget_before: SystemTime,
    ) -> Result<bool, StoreError> {
        let tree = self.db.open_tree(NONCES)?;
        let oldest = millis(forget_before);
        for item in tree.iter() {
            let (k, v) = item?;
            let at = v.as_ref().try_into().map(u64::from_be_bytes).unwrap_or(0);
            if at < oldest {
                tree.remove(k)?;
            }
        }
        let fresh = tree
            .compare_and_swap(
                nonce.as_bytes(),
                None as Option<&[u8]>,
                Some(&millis(issued_at).to_be_bytes()[..]),
            )?
            .is_ok();
        // Claimed on disk before the command acts: a replay after a crash is still refused.
        Ok(fresh)
    }

    /// Remembers which record a report came from (the outbox key is the record key).
    pub fn index_report(&self, report_id: &str, record_key: &[u8]) -> Result<(), StoreError> {
        self.db
            .open_tree(REPORT_INDEX)?
            .insert(report_id.as_bytes(), record_key)?;
        Ok(())
    }

    /// Forgets which record a report came from (the record leaves the store).
    pub(crate) fn forget_report(&self, report_id: &str) -> Result<(), StoreError> {
        self.db
            .open_tree(REPORT_INDEX)?
            .remove(report_id.as_bytes())?;
        Ok(())
    }

    /// The record a report was made from, if it is still kept.
    pub fn record_for_report(
        &self,
        report_id: &str,
    ) -> Result<Option<crate::record::Record>, StoreError> {
        match self.db.open_tree(REPORT_INDEX)?.get(report_id.as_bytes())? {
            Some(key) => self.record(&key),
            None => Ok(None),
        }
    }

    /// Queues a statistics message, durably, under a time-ordered key.
    pub fn queue_stats(&self, at: SystemTime, payload: &[u8]) -> Result<(), StoreError> {
        let key = format!("{:013}-{:016x}", millis(at), self.db.generate_id()?);
        self.db
            .open_tree(STATS_OUTBOX)?
            .insert(key.as_bytes(), payload)?;
        Ok(())
    }

    /// Up to `max` queued statistics messages, oldest first, skipping keys for which `skip`
    /// holds.
    pub fn stats_batch(
        &self,
        max: usize,
        skip: impl Fn(&[u8]) -> bool,
    ) -> Result<Vec<QueuedStats>, StoreError> {
        let tree = self.db.open_tree(STATS_OUTBOX)?;
        super::outbox::batch(&tree, max, skip, |k, v| Some((k.to_vec(), v.to_vec())))
    }

    /// The broker acknowledged a statistics message.
    pub fn ack_stats(&self, key: &[u8]) -> Result<bool, StoreError> {
        Ok(self.db.open_tree(STATS_OUTBOX)?.remove(key)?.is_some())
    }

    /// Keeps the regulator's latest watch-list (hashed), durably.
    pub fn save_watchlist(&self, list: &HashedWatchlist) -> Result<(), StoreError> {
        self.db
            .open_tree(REGULATOR)?
            .insert("watchlist", serde_json::to_vec(list)?)?;
        Ok(())
    }

    /// Adds the regulator's thresholds to those kept (a later command for a category
    /// replaces the earlier one), durably; returns all kept.
    pub fn save_thresholds(
        &self,
        add: &std::collections::BTreeMap<String, f32>,
    ) -> Result<std::collections::BTreeMap<String, f32>, StoreError> {
        let mut all = self.saved_thresholds()?;
        all.extend(add.iter().map(|(k, v)| (k.clone(), *v)));
        self.db
            .open_tree(REGULATOR)?
            .insert("thresholds", serde_json::to_vec(&all)?)?;
        Ok(all)
    }

    /// The regulator's thresholds, by category key.
    pub fn saved_thresholds(&self) -> Result<std::collections::BTreeMap<String, f32>, StoreError> {
        Ok(self.get_json(REGULATOR, "thresholds")?.unwrap_or_default())
    }

    /// The regulator's latest watch-list, if one was received.
    pub fn saved_watchlist(&self) -> Result<Option<HashedWatchlist>, StoreError> {
        self.get_json(REGULATOR, "watchlist")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn nonces_are_claimed_once_across_reopen_and_forgotten_when_old() {
        let dir = crate::testutil::temp_dir("regulator");
        let now = SystemTime::now();
        let long_ago = now - Duration::from_secs(3600);
        {
            let store = Store::open(&dir).expect("open");
            assert!(store.claim_nonce("n-1", now, long_ago).expect("claim"));
            assert!(!store.claim_nonce("n-1", now, long_ago).expect("again"));
            assert!(store.claim_nonce("n-old", long_ago, long_ago).expect("old"));
            store.queue_stats(now, b"{\"a\":1}").expect("stats");
            store
                .queue_stats(now + Duration::from_millis(1), b"{\"a\":2}")
                .expect("stats");
            store.index_report("rpt-00", b"0001-L1-1").expect("index");
        }
        let store = Store::open(&dir).expect("reopen");
        assert!(!store.claim_nonce("n-1", now, long_ago).expect("replay"));
        // Claiming prunes what was issued before `forget_before`.
        assert!(store.claim_nonce("n-2", now, now).expect("claim"));
        assert!(store
            .claim_nonce("n-old", long_ago, long_ago)
            .expect("forgotten, so new"));
        let batch = store.stats_batch(10, |_| false).expect("batch");
        assert_eq!(batch.len(), 2);
        assert_eq!(batch[0].1, b"{\"a\":1}");
        assert!(store.ack_stats(&batch[0].0).expect("ack"));
        assert_eq!(store.stats_batch(10, |_| false).expect("batch").len(), 1);
        assert_eq!(store.record_for_report("rpt-00").expect("lookup"), None);
        let t = |k: &str, v: f32| std::collections::BTreeMap::from([(k.to_owned(), v)]);
        store.save_thresholds(&t("food", 0.5)).expect("save");
        let all = store.save_thresholds(&t("ppe", 0.7)).expect("save");
        assert_eq!(all.len(), 2);
        store.save_thresholds(&t("food", 0.6)).expect("save");
        assert_eq!(store.saved_thresholds().expect("read")["food"], 0.6);
    }
}
