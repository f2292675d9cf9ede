//! The rules' configuration (`[rules]`), with defaults and checks.

use crate::domain::{Category, ReasonCode};
use crate::problems::Problems;
use crate::rules::LEDGER_KEEP;
use serde::{Deserialize, Serialize};
use std::path::PathBuf;

/// The screening rules.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RulesConfig {
    /// The regulator's watch-list (JSON: version, id_numbers, phones, agreement_customers).
    /// Default: none until the regulator sends one.
    #[serde(default)]
    pub watchlist_file: Option<PathBuf>,
    /// Declared goods → category dictionary (TOML). Default: the one shipped.
    #[serde(default)]
    pub dictionary_file: Option<PathBuf>,
    /// Per-category floors of plausible declared value (TOML). Default: the ones shipped.
    #[serde(default)]
    pub value_floors_file: Option<PathBuf>,
    /// Model confidence above which a different declared category is a mismatch. Default: 0.8.
    #[serde(default = "default_mismatch_confidence")]
    pub mismatch_confidence: f32,
    /// Categories the counterfeit rule applies to. Default: all.
    #[serde(default)]
    pub priority_categories: Option<Vec<String>>,
    /// Parcels of one sender and category that make a split shipment. Default: 5.
    #[serde(default = "default_split_min")]
    pub split_min_parcels: usize,
    /// The split-shipment window in hours. Default: 24.
    #[serde(default = "default_split_hours")]
    pub split_window_hours: f64,
    /// Policy overrides, reason code = "flag" | "manual" | "count". Default: see README.
    #[serde(default)]
    pub policy: std::collections::BTreeMap<ReasonCode, crate::rules::Action>,
}

impl Default for RulesConfig {
    fn default() -> Self {
        RulesConfig {
            watchlist_file: None,
            dictionary_file: None,
            value_floors_file: None,
            mismatch_confidence: default_mismatch_confidence(),
            priority_categories: None,
            split_min_parcels: default_split_min(),
            split_window_hours: default_split_hours(),
            policy: Default::default(),
        }
    }
}

fn default_mismatch_confidence() -> f32 {
    0.8
}
fn default_split_min() -> usize {
    5
}
fn default_split_hours() -> f64 {
    24.0
}

impl RulesConfig {
    /// Checks `[rules]`.
    pub fn problems(&self, p: &mut Problems) {
        let r = self;
        p.range("mismatch_confidence", r.mismatch_confidence, 0.0..=1.0, "");
        p.range(
            "split_min_parcels",
            r.split_min_parcels,
            2..=LEDGER_KEEP,
            " (the split-shipment ledger keeps that many parcels per sender and category)",
        );
        if !(r.split_window_hours > 0.0 && r.split_window_hours <= 24.0 * 90.0) {
            p.push(
                "split_window_hours",
                format_args!(
                    " = {}: must be more than 0 and at most 2160 (90 days)",
                    r.split_window_hours
                ),
            );
        }
        for key in r.priority_categories.iter().flatten() {
            if Category::from_key(key).is_none() {
                p.push(
                    "priority_categories",
                    format_args!(
                        ": {key:?} is not a category key (one of {})",
                        Category::ALL.map(|c| c.key()).join(", ")
                    ),
                );
            }
        }
        // What happened to these parcels is physics, not policy: no pass went to the
        // controller in time, so it has diverted them already.
        for code in [ReasonCode::DecisionLate, ReasonCode::StoreFailed] {
            if r.policy.contains_key(&code) {
                p.push(&format!("policy.{}", code.key()), format_args!(
                    ": cannot be overridden; the line controller has already diverted such a parcel (no pass reached it in time), so it is always recorded as manual. Remove this key"
                ));
            }
        }
    }
}
