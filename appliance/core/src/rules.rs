//! The rules and the decision policy: what the image cannot see — real name, watch-lists,
//! declared goods, split shipments, declared value — turned into reasons a person can read,
//! and the reasons into a [`Decision`].
//!
//! The policy is a table from reason code to action (flag, manual, count-only) and a pure
//! function over it. The rule data — goods dictionary, value floors, watch-list — are data
//! files; the split-shipment history sits behind [`SplitLedger`] (the store keeps it on disk,
//! so the window survives restarts).

use crate::domain::{Category, Decision, Lang, Parcel, Reason, ReasonCode, Scores};
use crate::keys::KeyedHasher;
use crate::sighting::{Seen, SiteKeys};
use crate::waybill::{normalise_id, normalise_phone};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::time::{Duration, SystemTime};
use thiserror::Error;

/// What a reason does to a parcel.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    /// Divert and report to the regulator.
    Flag,
    /// Divert for manual inspection.
    Manual,
    /// Record and count only.
    Count,
}

/// The decision policy: an action for every reason code.
#[derive(Debug, Clone, PartialEq)]
pub struct Policy(BTreeMap<ReasonCode, Action>);

impl Default for Policy {
    fn default() -> Self {
        use ReasonCode::*;
        Policy(
            ReasonCode::ALL
                .into_iter()
                .map(|c| {
                    let a = match c {
                        RealNameMissing | RealNameInvalid | WatchlistedSender
                        | DeclaredMismatch | CounterfeitSuspected | SplitShipment => Action::Flag,
                        // A low declared value alone is weak evidence: it is recorded and
                        // shown with the other reasons, and counted.
                        ValueImplausible => Action::Count,
                        NoRead | NoImage | ImageUnreadable | ScreeningFailed | DecisionLate
                        | StoreFailed => Action::Manual,
                    };
                    (c, a)
                })
                .collect(),
        )
    }
}

impl Policy {
    /// The default policy with `overrides` applied.
    pub fn with_overrides(overrides: &BTreeMap<ReasonCode, Action>) -> Policy {
        let mut p = Policy::default();
        p.0.extend(overrides.iter().map(|(c, a)| (*c, *a)));
        p
    }

    /// The action for a code.
    pub fn action(&self, code: ReasonCode) -> Action {
        self.0.get(&code).copied().unwrap_or(Action::Manual)
    }

    /// The decision for a set of reasons: any flag flags; else any manual sends to manual
    /// inspection; count-only reasons never change the decision.
    pub fn decide(&self, reasons: &[Reason]) -> Decision {
        let actions: Vec<Action> = reasons.iter().map(|r| self.action(r.code)).collect();
        if actions.contains(&Action::Flag) {
            Decision::Flag
        } else if actions.contains(&Action::Manual) {
            Decision::Manual
        } else {
            Decision::Clear
        }
    }
}

/// Rule data that could not be loaded.
#[derive(Debug, Error)]
pub enum RuleDataError {
    /// A configured rule file could not be read (the appliance reads them; this crate never
    /// does).
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file, as configured.
        path: std::path::PathBuf,
        /// Why it could not be read.
        source: std::io::Error,
    },
    /// A rule file or a watch-list payload is not what it must be.
    #[error("{what}: {why}")]
    Invalid {
        /// Which data: a file's path, `built-in`, or the name given to the parser.
        what: String,
        /// What is wrong with it (a parse error, or an unknown category key, or a bad floor).
        why: String,
    },
}

fn category(key: &str, what: &str) -> Result<Category, RuleDataError> {
    Category::from_key(key).ok_or_else(|| RuleDataError::Invalid {
        what: what.to_owned(),
        why: format!("{key:?} is not a category key"),
    })
}

/// Declared goods words (zh and en) → category.
#[derive(Debug, Clone)]
pub struct GoodsDictionary {
    /// Lower-case terms, longest first.
    terms: Vec<(String, Category)>,
}

/// The dictionary shipped with the appliance.
pub const DEFAULT_DICTIONARY: &str = include_str!("../data/goods_dictionary.toml");
/// The value floors shipped with the appliance.
pub const DEFAULT_VALUE_FLOORS: &str = include_str!("../data/value_floors.toml");

/// A rule-data file's text as `T`, or why not (naming the file as `what`).
fn parse_toml<T: serde::de::DeserializeOwned>(text: &str, what: &str) -> Result<T, RuleDataError> {
    toml::from_str(text).map_err(|e| RuleDataError::Invalid {
        what: what.to_owned(),
        why: e.to_string(),
    })
}

impl GoodsDictionary {
    /// Parses a dictionary file's text.
    pub fn parse(text: &str, what: &str) -> Result<GoodsDictionary, RuleDataError> {
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        struct File {
            categories: BTreeMap<String, Vec<String>>,
        }
        let f: File = parse_toml(text, what)?;
        let mut terms = Vec::new();
        for (key, words) in f.categories {
            let c = category(&key, what)?;
            terms.extend(words.into_iter().map(|w| (w.to_lowercase(), c)));
        }
        terms.sort_by_key(|t| std::cmp::Reverse(t.0.chars().count()));
        Ok(GoodsDictionary { terms })
    }

    /// The category a declared text names, by its longest matching term.
    pub fn classify(&self, text: &str) -> Option<Category> {
        let text = text.to_lowercase();
        self.terms
            .iter()
            .find(|(t, _)| text.contains(t.as_str()))
            .map(|(_, c)| *c)
    }
}

/// Per-category floors of plausible declared value, CNY per item.
#[derive(Debug, Clone)]
pub struct ValueFloors(BTreeMap<Category, f64>);

impl ValueFloors {
    /// Parses a value-floors file's text.
    pub fn parse(text: &str, what: &str) -> Result<ValueFloors, RuleDataError> {
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        struct File {
            floors_cny: BTreeMap<String, f64>,
        }
        let f: File = parse_toml(text, what)?;
        let mut floors = BTreeMap::new();
        for (key, v) in f.floors_cny {
            if !(v.is_finite() && v >= 0.0) {
                return Err(RuleDataError::Invalid {
                    what: what.to_owned(),
                    why: format!("{key} = {v}: a floor is a non-negative amount of CNY"),
                });
            }
            floors.insert(category(&key, what)?, v);
        }
        Ok(ValueFloors(floors))
    }

    fn floor(&self, c: Category) -> f64 {
        self.0.get(&c).copied().unwrap_or(0.0)
    }
}

/// The regulator's watch-list, held only as keyed hashes.
#[derive(Debug, Clone, Default)]
pub struct Watchlist {
    /// The list's version as the regulator named it; quoted in `watchlisted_sender` reasons
    /// and reported back when a new list replaces it. Empty for no list.
    pub version: String,
    ids: HashSet<String>,
    phones: HashSet<String>,
    customers: HashSet<String>,
    /// Hashed raw, before normalisation (a list kept from an older version): matched both
    /// ways until the regulator sends it again.
    legacy: bool,
}

/// The normalisation a hashed watch-list's values went through (recorded with the list the
/// store keeps): 1 = [`normalise_phone`] and [`normalise_id`]; 0 (absent) = trimmed only.
pub const WATCHLIST_NORMALISATION: u32 = 1;

/// The watch-list file (and the regulator's command payload), as plain values.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WatchlistFile {
    /// The regulator's name for this version of the list.
    pub version: String,
    /// Senders' ID numbers, of any document type, in any spelling (normalised before hashing).
    #[serde(default)]
    pub id_numbers: Vec<String>,
    /// Senders' phone numbers, in any spelling (normalised before hashing).
    #[serde(default)]
    pub phones: Vec<String>,
    /// Agreement-customer (协议客户) codes, matched trimmed.
    #[serde(default)]
    pub agreement_customers: Vec<String>,
}

impl Watchlist {
    /// Hashes the plain values; nothing plain is kept.
    pub fn from_file(file: WatchlistFile, hasher: &KeyedHasher) -> Watchlist {
        Watchlist::from_hashes(&Watchlist::hash(&file, hasher))
    }

    /// The list as the store keeps it: keyed hashes of the normalised values (one form per
    /// phone or ID number, however it was written), sorted, never the plain values.
    pub fn hash(file: &WatchlistFile, hasher: &KeyedHasher) -> HashedWatchlist {
        let h = |v: &[String], norm: fn(&str) -> String| -> Vec<String> {
            let mut out: Vec<String> = v
                .iter()
                .map(|x| norm(x))
                .filter(|x| !x.is_empty())
                .map(|x| hasher.hash(&x))
                .collect();
            out.sort_unstable();
            out.dedup();
            out
        };
        HashedWatchlist {
            version: file.version.clone(),
            id_keys: h(&file.id_numbers, normalise_id),
            phone_keys: h(&file.phones, normalise_phone),
            customer_keys: h(&file.agreement_customers, |c| c.trim().to_owned()),
            normalisation: WATCHLIST_NORMALISATION,
        }
    }

    /// Whether this list was hashed before values were normalised, and must be sent again.
    pub fn is_legacy(&self) -> bool {
        self.legacy
    }

    /// What the console and the status say about a kept list hashed before normalisation
    /// (`None` for a current one).
    pub fn resend_alarm(&self) -> Option<String> {
        self.legacy.then(|| {
            format!(
                "watch-list version {} was kept from before phones and ID numbers were normalised: it still matches as written, but other spellings of a listed number are missed — ask the regulator to send the list again",
                self.version
            )
        })
    }

    /// Whether a value, normalised by `norm`, is in `keys` — for a legacy list also as
    /// written (trimmed), as it was matched before.
    fn holds(
        &self,
        keys: &HashSet<String>,
        value: &str,
        norm: fn(&str) -> String,
        hasher: &KeyedHasher,
    ) -> bool {
        let n = norm(value);
        (!n.is_empty() && keys.contains(&hasher.hash(&n)))
            || (self.legacy
                && !value.trim().is_empty()
                && keys.contains(&hasher.hash(value.trim())))
    }

    /// The list the regulator last pushed, as the store keeps it (hashes only).
    pub fn from_hashes(kept: &HashedWatchlist) -> Watchlist {
        let set = |v: &[String]| v.iter().cloned().collect::<HashSet<String>>();
        Watchlist {
            version: kept.version.clone(),
            ids: set(&kept.id_keys),
            phones: set(&kept.phone_keys),
            customers: set(&kept.customer_keys),
            legacy: kept.normalisation < WATCHLIST_NORMALISATION,
        }
    }

    /// Parses a watch-list file's text (JSON); `what` names it in errors.
    pub fn parse(text: &str, what: &str, hasher: &KeyedHasher) -> Result<Watchlist, RuleDataError> {
        let file: WatchlistFile =
            serde_json::from_str(text).map_err(|e| RuleDataError::Invalid {
                what: what.to_owned(),
                why: e.to_string(),
            })?;
        Ok(Watchlist::from_file(file, hasher))
    }

    /// Entries on the list.
    pub fn len(&self) -> usize {
        self.ids.len() + self.phones.len() + self.customers.len()
    }

    /// Whether the list is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Most timestamps a ledger keeps per identity and category: the largest
/// `split_min_parcels` it can count to.
pub const LEDGER_KEEP: usize = 256;

/// The regulator's watch-list as kept on disk: keyed hashes only, never the plain values.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HashedWatchlist {
    /// The list's version as the regulator named it.
    pub version: String,
    /// Keyed hashes (hex) of the normalised ID numbers.
    pub id_keys: Vec<String>,
    /// Keyed hashes (hex) of the normalised phone numbers.
    pub phone_keys: Vec<String>,
    /// Keyed hashes (hex) of the trimmed agreement-customer codes.
    pub customer_keys: Vec<String>,
    /// How the values were normalised before hashing (see [`WATCHLIST_NORMALISATION`]);
    /// absent (0) in a list kept by an older version, which hashed them as written.
    #[serde(default)]
    pub normalisation: u32,
}

/// How many parcels of one sender and category the ledger holds within the window: seen
/// here (this one included) and seen by the site's other appliances (their sightings).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SplitCount {
    /// Screened by this appliance.
    pub here: usize,
    /// Screened by other appliances of the site, as their sightings told.
    pub elsewhere: usize,
}

impl SplitCount {
    /// Both together.
    pub fn total(self) -> usize {
        self.here + self.elsewhere
    }
}

/// The split-shipment history: parcels per sender identity and category over time, here and
/// (with a site key) on the site's other appliances.
pub trait SplitLedger: Send {
    /// Records a parcel screened here — under `seen.identities[0]`, counted under every one of
    /// `seen.identities` — forgets what is older than `window`, and returns how many parcels
    /// are in the window, this one included.
    fn record(&mut self, seen: &Seen, window: Duration) -> SplitCount;
}

/// A ledger in memory, for offline screening and tests: this appliance's parcels only.
#[derive(Debug, Default)]
pub struct MemoryLedger(BTreeMap<(String, Category), Vec<SystemTime>>);

impl SplitLedger for MemoryLedger {
    fn record(&mut self, seen: &Seen, window: Duration) -> SplitCount {
        let at = seen.at;
        let mut here = 0;
        for (i, id) in seen.identities.iter().enumerate() {
            let v = self.0.entry((id.clone(), seen.category)).or_default();
            v.retain(|t| at.duration_since(*t).map_or(true, |age| age <= window));
            if i == 0 {
                v.push(at);
            }
            here += v.len();
        }
        SplitCount { here, elsewhere: 0 }
    }
}

/// Rule settings from the configuration.
#[derive(Debug, Clone)]
pub struct RuleSettings {
    /// The action for each reason code: the default with the configuration's overrides.
    pub policy: Policy,
    /// Categories the counterfeit rule applies to.
    pub priority: BTreeSet<Category>,
    /// Model confidence above which a declared category that differs is a mismatch.
    pub mismatch_confidence: f32,
    /// Parcels of one identity and category that make a split shipment.
    pub split_min_parcels: usize,
    /// The split-shipment window.
    pub split_window: Duration,
    /// Counterfeit thresholds set by the regulator, over the model manifest's.
    pub thresholds: BTreeMap<Category, f32>,
}

impl Default for RuleSettings {
    fn default() -> Self {
        RuleSettings {
            policy: Policy::default(),
            priority: Category::ALL.into_iter().collect(),
            mismatch_confidence: 0.8,
            split_min_parcels: 5,
            split_window: Duration::from_secs(24 * 3600),
            thresholds: BTreeMap::new(),
        }
    }
}

impl RuleSettings {
    /// The settings a configuration asks for.
    pub fn from_config(c: &config::RulesConfig) -> RuleSettings {
        RuleSettings {
            policy: Policy::with_overrides(&c.policy),
            priority: match &c.priority_categories {
                Some(keys) => keys.iter().filter_map(|k| Category::from_key(k)).collect(),
                None => Category::ALL.into_iter().collect(),
            },
            mismatch_confidence: c.mismatch_confidence,
            split_min_parcels: c.split_min_parcels,
            split_window: Duration::from_secs_f64(c.split_window_hours * 3600.0),
            thresholds: BTreeMap::new(),
        }
    }
}

/// The texts of a configuration's rule files, each with where it came from: `None` for the
/// shipped dictionary and value floors, and for no watch-list.
#[derive(Debug, Default)]
pub struct RuleSources {
    /// The goods dictionary's TOML text and its path; `None`: [`DEFAULT_DICTIONARY`].
    pub dictionary: Option<(String, String)>,
    /// The value floors' TOML text and its path; `None`: [`DEFAULT_VALUE_FLOORS`].
    pub value_floors: Option<(String, String)>,
    /// The watch-list's JSON text ([`WatchlistFile`]) and its path; `None`: an empty list.
    pub watchlist: Option<(String, String)>,
}

/// Everything the rules need, owned by the screening stage.
pub struct RuleSet {
    /// Thresholds, windows and the policy; the regulator's threshold updates land here.
    pub settings: RuleSettings,
    /// Reads a category from the declared category or goods words, where they name no key.
    pub dictionary: GoodsDictionary,
    /// The lowest plausible declared value per category (`value_implausible`).
    pub floors: ValueFloors,
    /// The regulator's watch-list (`watchlisted_sender`); replaced when a new one is pushed.
    pub watchlist: Watchlist,
    /// Hashes identities for the watch-list and the ledger; the store's key on the appliance,
    /// so its hashes match the ones the store keeps.
    pub hasher: KeyedHasher,
    /// The split-shipment history (`split_shipment`): the store's on the appliance, a
    /// [`MemoryLedger`] offline.
    pub ledger: Box<dyn SplitLedger>,
    /// The site's keys, when the appliances of a site share their sightings: the ledger then
    /// names senders under the site key (so that peers' sightings match), and still counts
    /// what it recorded under [`RuleSet::hasher`] before.
    pub site_keys: Option<SiteKeys>,
}

impl RuleSet {
    /// Rules as a configuration asks for, from the texts of its files (read by the caller:
    /// this crate does no I/O), with the given hasher and ledger.
    pub fn new(
        c: &config::RulesConfig,
        sources: RuleSources,
        hasher: KeyedHasher,
        ledger: Box<dyn SplitLedger>,
    ) -> Result<RuleSet, RuleDataError> {
        let builtin = |text: &str| (text.to_owned(), "built-in".to_owned());
        let (d, dname) = sources
            .dictionary
            .unwrap_or_else(|| builtin(DEFAULT_DICTIONARY));
        let (f, fname) = sources
            .value_floors
            .unwrap_or_else(|| builtin(DEFAULT_VALUE_FLOORS));
        let watchlist = match &sources.watchlist {
            Some((text, what)) => Watchlist::parse(text, what, &hasher)?,
            None => Watchlist::default(),
        };
        Ok(RuleSet {
            settings: RuleSettings::from_config(c),
            dictionary: GoodsDictionary::parse(&d, &dname)?,
            floors: ValueFloors::parse(&f, &fname)?,
            watchlist,
            hasher,
            ledger,
            site_keys: None,
        })
    }

    /// Applies every rule and the policy.
    pub fn apply(
        &mut self,
        parcel: &Parcel,
        scores: Option<&Scores>,
        threshold: &dyn Fn(Category) -> f32,
        problems: Vec<Reason>,
    ) -> (Decision, Vec<Reason>) {
        let mut reasons = Vec::new();
        if parcel.waybill.is_none() {
            reasons.push(Reason::new(
                ReasonCode::NoRead,
                "未读到面单",
                "no waybill was read for this parcel",
            ));
        }
        if parcel.scan.is_none() {
            reasons.push(Reason::new(
                ReasonCode::NoImage,
                "没有对应的 X 光图像",
                "no X-ray image was joined to this parcel",
            ));
        }
        reasons.extend(parcel.findings.iter().cloned());
        reasons.extend(problems);
        self.watchlist_rule(parcel, &mut reasons);
        let seen = scores.and_then(|s| s.top());
        let declared = self.declared_category(parcel);
        if let (Some(s), Some((top, p))) = (scores, seen) {
            let threshold = threshold(top);
            if self.settings.priority.contains(&top) && s.counterfeit >= threshold {
                reasons.push(
                    Reason::new(
                        ReasonCode::CounterfeitSuspected,
                        format!(
                            "疑似侵权假冒商品：{}，可疑度 {:.2}（阈值 {:.2}）",
                            top.label(Lang::Zh),
                            s.counterfeit,
                            threshold
                        ),
                        format!(
                            "suspected counterfeit {}: score {:.2} (threshold {:.2})",
                            top.label(Lang::En),
                            s.counterfeit,
                            threshold
                        ),
                    )
                    .on_detection(s.most_suspicious()),
                );
            }
            if let Some(d) = declared {
                if d != top && p >= self.settings.mismatch_confidence {
                    reasons.push(
                        Reason::new(
                            ReasonCode::DeclaredMismatch,
                            format!(
                                "申报品名为{}，X 光图像显示为{}（置信度 {:.2}）",
                                d.label(Lang::Zh),
                                top.label(Lang::Zh),
                                p
                            ),
                            format!(
                                "declared as {}, the X-ray image shows {} (confidence {:.2})",
                                d.label(Lang::En),
                                top.label(Lang::En),
                                p
                            ),
                        )
                        .on_detection(s.best_of(top)),
                    );
                }
            }
        }
        // What the parcel holds: what the model sees when it is sure, else what was declared.
        let confident = seen.filter(|(_, p)| *p >= self.settings.mismatch_confidence);
        let category = confident.map(|(c, _)| c).or(declared);
        self.value_rule(parcel, category, &mut reasons);
        self.split_rule(parcel, category, &mut reasons);
        (self.settings.policy.decide(&reasons), reasons)
    }

    fn declared_category(&self, parcel: &Parcel) -> Option<Category> {
        let d = parcel.waybill.as_ref()?.declared.as_ref()?;
        Category::from_key(d.category.trim())
            .or_else(|| self.dictionary.classify(&d.category))
            .or_else(|| self.dictionary.classify(&d.goods))
    }

    fn watchlist_rule(&self, parcel: &Parcel, reasons: &mut Vec<Reason>) {
        let Some(w) = &parcel.waybill else { return };
        let wl = &self.watchlist;
        let mut hits: Vec<(&str, &str)> = Vec::new();
        if let Some(s) = &w.sender {
            if wl.holds(&wl.ids, &s.id_number, normalise_id, &self.hasher) {
                hits.push(("证件号码", "ID number"));
            }
            if wl.holds(&wl.phones, &s.phone, normalise_phone, &self.hasher) {
                hits.push(("电话", "phone"));
            }
        }
        if let Some(c) = &w.agreement_customer {
            if wl.holds(&wl.customers, c, |c| c.trim().to_owned(), &self.hasher) {
                hits.push(("协议客户", "agreement customer"));
            }
        }
        if !hits.is_empty() {
            let zh: Vec<&str> = hits.iter().map(|h| h.0).collect();
            let en: Vec<&str> = hits.iter().map(|h| h.1).collect();
            reasons.push(Reason::new(
                ReasonCode::WatchlistedSender,
                format!(
                    "寄件人在监管关注名单上（{}，名单版本 {}）",
                    zh.join("、"),
                    wl.version
                ),
                format!(
                    "the sender is on the regulator's watch-list ({}, list version {})",
                    en.join(", "),
                    wl.version
                ),
            ));
        }
    }

    fn value_rule(&self, parcel: &Parcel, category: Option<Category>, reasons: &mut Vec<Reason>) {
        let (Some(c), Some(d)) = (
            category,
            parcel.waybill.as_ref().and_then(|w| w.declared.as_ref()),
        ) else {
            return;
        };
        let floor = self.floors.floor(c) * f64::from(d.quantity.max(1));
        if d.value_cny < floor {
            reasons.push(Reason::new(
                ReasonCode::ValueImplausible,
                format!(
                    "申报价值 {:.2} 元低于{}的合理下限 {:.2} 元（{} 件）",
                    d.value_cny,
                    c.label(Lang::Zh),
                    floor,
                    d.quantity
                ),
                format!(
                    "declared value CNY {:.2} is below the plausible floor for {} of CNY {:.2} ({} items)",
                    d.value_cny,
                    c.label(Lang::En),
                    floor,
                    d.quantity
                ),
            ));
        }
    }

    fn split_rule(
        &mut self,
        parcel: &Parcel,
        category: Option<Category>,
        reasons: &mut Vec<Reason>,
    ) {
        let identity = parcel
            .waybill
            .as_ref()
            .and_then(|w| w.sender.as_ref())
            .map(|s| normalise_id(&s.id_number))
            .filter(|id| !id.is_empty());
        let (Some(id), Some(c)) = (identity, category) else {
            return;
        };
        let mut identities = match &self.site_keys {
            Some(keys) => keys.sender_keys(&id),
            None => Vec::new(),
        };
        identities.push(self.hasher.hash(&id));
        let seen = Seen {
            identities,
            category: c,
            at: parcel.entered_at,
            line_id: parcel.line_id.clone(),
            parcel: parcel_ref(parcel),
        };
        let n = self.ledger.record(&seen, self.settings.split_window);
        if n.total() >= self.settings.split_min_parcels {
            reasons.push(split_reason(
                n,
                c,
                self.settings.split_window,
                self.site_keys.is_some(),
            ));
        }
    }
}

/// A parcel's stable reference on this appliance: its entry time, line and sequence number
/// (the record id the sink gives it).
pub fn parcel_ref(parcel: &Parcel) -> String {
    let ms = parcel
        .entered_at
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis());
    format!("{ms:013}-{}-{}", parcel.line_id, parcel.seq)
}

/// The `split_shipment` reason: how many parcels, and with sightings shared across the site,
/// how many of them were seen here and how many on the site's other appliances.
fn split_reason(n: SplitCount, c: Category, window: Duration, site: bool) -> Reason {
    let hours = window.as_secs_f64() / 3600.0;
    let total = n.total();
    let (zh_where, en_where) = if site || n.elsewhere > 0 {
        (
            format!("（本机 {} 件，站点其他设备 {} 件）", n.here, n.elsewhere),
            format!(
                " ({} on this appliance, {} on other appliances of the site)",
                n.here, n.elsewhere
            ),
        )
    } else {
        (String::new(), String::new())
    };
    Reason::new(
        ReasonCode::SplitShipment,
        format!(
            "疑似蚂蚁搬家：同一寄件人 {hours:.0} 小时内寄出 {total} 件{}{zh_where}",
            c.label(Lang::Zh)
        ),
        format!(
            "possible split shipment: the same sender sent {total} parcels of {} within {hours:.0} h{en_where}",
            c.label(Lang::En)
        ),
    )
}

/// The reason for an image that could not be read.
pub fn image_unreadable(why: &str) -> Reason {
    Reason::new(
        ReasonCode::ImageUnreadable,
        format!("X 光图像无法读取：{why}"),
        format!("the X-ray image cannot be read: {why}"),
    )
}

/// The reason for a decision that reached the line after the parcel's decision point.
pub fn decision_late(late_by: Duration) -> Reason {
    let ms = late_by.as_millis();
    Reason::new(
        ReasonCode::DecisionLate,
        format!("判定晚到 {ms} 毫秒，包裹已由分拣控制器转人工"),
        format!("the decision was {ms} ms late; the line controller sent the parcel to manual inspection"),
    )
}

pub mod config;

#[cfg(test)]
mod tests;
