//! The store's configuration (`[store]`): retention, the disk budget, the sweeper and what
//! to do with a damaged database, with defaults and checks.

use crate::problems::Problems;
use serde::{Deserialize, Serialize};

/// The regulator's minimum retention for records and images, in days (PRODUCT.md).
pub const MIN_RETENTION_DAYS: u32 = 30;

/// Records, images and the disk they may use.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StoreConfig {
    /// Days records and kept images stay; older ones are deleted by the sweeper, except a
    /// record whose report the broker has not acknowledged. At least 30 (the regulator's
    /// minimum) unless `allow_short_retention`. Default: 30.
    #[serde(default = "default_retention_days")]
    pub retention_days: u32,
    /// Allows `retention_days` below 30: only for a lab or test appliance that no regulator
    /// relies on. Default: false.
    #[serde(default)]
    pub allow_short_retention: bool,
    /// The most the store (database + kept images) may use on disk, in MB. Over it, cleared
    /// parcels' images are deleted oldest first, then cleared records slimmed; flagged and
    /// manual records and unsent reports are never dropped — an alarm is raised instead.
    /// Default: none (only retention limits the store; the console shows the free space).
    #[serde(default)]
    pub disk_budget_mb: Option<u64>,
    /// Seconds between two sweeps (retention and budget). Default: 3600.
    #[serde(default = "default_sweep_interval")]
    pub sweep_interval_s: u64,
    /// A store sled cannot open (damaged after a power cut) is moved aside to
    /// `<data_dir>/db.broken-<time>` and screening goes on with a fresh store, with an alarm;
    /// `screenline store recover` brings its unsent reports back. false: `screenline run`
    /// refuses to start instead (the line stops). Default: true.
    #[serde(default = "yes")]
    pub set_aside_broken: bool,
}

impl Default for StoreConfig {
    fn default() -> Self {
        StoreConfig {
            retention_days: default_retention_days(),
            allow_short_retention: false,
            disk_budget_mb: None,
            sweep_interval_s: default_sweep_interval(),
            set_aside_broken: true,
        }
    }
}

fn default_retention_days() -> u32 {
    MIN_RETENTION_DAYS
}
fn default_sweep_interval() -> u64 {
    3600
}
fn yes() -> bool {
    true
}

impl StoreConfig {
    /// Checks `[store]`.
    pub fn problems(&self, p: &mut Problems) {
        let st = self;
        if st.retention_days == 0
            || (st.retention_days < MIN_RETENTION_DAYS && !st.allow_short_retention)
        {
            p.push("retention_days", format_args!(
                " = {}: must be at least {MIN_RETENTION_DAYS} (the regulator's minimum); a lab appliance may set store.allow_short_retention = true for 1 or more",
                st.retention_days
            ));
        }
        if st.disk_budget_mb == Some(0) {
            p.push(
                "disk_budget_mb",
                " = 0: leave it out for no budget, or give megabytes",
            );
        }
        p.range("sweep_interval_s", st.sweep_interval_s, 1..=86_400, "");
    }
}
