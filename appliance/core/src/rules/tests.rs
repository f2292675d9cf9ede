//! Every rule on crafted parcels, and the policy as a table.

use super::*;
use crate::domain::Decision::{Clear, Flag};
use crate::domain::ReasonCode::{
    CounterfeitSuspected, DeclaredMismatch, ValueImplausible, WatchlistedSender,
};
use crate::domain::{Declared, IdType, Parcel, Sender, Waybill, WaybillNo, XrayScan};
use crate::rules::config::RulesConfig;
use std::path::PathBuf;
use std::time::Instant;

fn rules() -> RuleSet {
    let mut r = RuleSet::new(
        &RulesConfig::default(),
        RuleSources::default(),
        KeyedHasher::new(b"test key".to_vec()),
        Box::new(MemoryLedger::default()),
    )
    .expect("shipped data files load");
    r.watchlist = Watchlist::from_file(
        WatchlistFile {
            version: "w1".into(),
            id_numbers: vec!["11010519491231002X".into()],
            phones: vec!["13700137000".into()],
            agreement_customers: vec!["C-WATCH-01".into()],
        },
        &r.hasher,
    );
    r
}

fn parcel(
    id: &str,
    phone: &str,
    goods: &str,
    declared_category: &str,
    value: f64,
    qty: u32,
) -> Parcel {
    Parcel {
        line_id: "L1".into(),
        seq: 1,
        epoch: None,
        entered_at: SystemTime::now(),
        waybill: Some(Waybill {
            waybill: WaybillNo::parse("SF1234567890").expect("valid"),
            sender: Some(Sender {
                name: "张三".into(),
                id_type: IdType::ResidentId,
                id_number: id.into(),
                phone: phone.into(),
                address: "北京".into(),
            }),
            recipient: None,
            declared: Some(Declared {
                goods: goods.into(),
                category: declared_category.into(),
                value_cny: value,
                quantity: qty,
            }),
            weight_g: None,
            agreement_customer: None,
        }),
        findings: vec![],
        scan: Some(XrayScan {
            scan_id: "s".into(),
            path: PathBuf::from("s.png"),
            completed: Instant::now(),
            low_energy: None,
            waybill: None,
            captured_at: SystemTime::now(),
        }),
    }
}

/// The usual parcel: earphones of a clean sender, worth `value` CNY in all, `qty` of them.
fn earphones(value: f64, qty: u32) -> Parcel {
    parcel(CLEAN_ID, "13800138000", "耳机", "electronics", value, qty)
}

fn scores(top: Category, p: f32, counterfeit: f32) -> Scores {
    Scores {
        category: Category::ALL
            .iter()
            .map(|c| (*c, if *c == top { p } else { (1.0 - p) / 15.0 }))
            .collect(),
        counterfeit,
        detections: Vec::new(),
    }
}

const HALF: &dyn Fn(Category) -> f32 = &|_| 0.5;

/// What the rules decide for `p` with the model's view `s` and no other problems.
fn judge(r: &mut RuleSet, p: &Parcel, s: &Scores) -> (Decision, Vec<Reason>) {
    r.apply(p, Some(s), HALF, vec![])
}

fn codes(reasons: &[Reason]) -> Vec<ReasonCode> {
    reasons.iter().map(|r| r.code).collect()
}

/// What the rules decide for `p` on `s` (see [`judge`]), asserted to be `want` for the one
/// reason `code`; the reasons, for their words.
fn judged_for(
    r: &mut RuleSet,
    p: &Parcel,
    s: &Scores,
    want: Decision,
    code: ReasonCode,
) -> Vec<Reason> {
    let (d, reasons) = judge(r, p, s);
    assert_eq!((d, codes(&reasons)), (want, vec![code]));
    reasons
}

/// Asserts that `text` says each of `parts`.
fn assert_says(text: &str, parts: &[&str]) {
    for part in parts {
        assert!(text.contains(part), "{part:?} not in {text:?}");
    }
}

const CLEAN_ID: &str = "110105194912310011";

#[test]
fn a_clean_parcel_is_cleared() {
    let mut r = rules();
    let p = parcel(CLEAN_ID, "13800138000", "蓝牙耳机", "electronics", 399.0, 1);
    let (d, reasons) = judge(&mut r, &p, &scores(Category::Electronics, 0.97, 0.02));
    assert_eq!((d, codes(&reasons)), (Decision::Clear, vec![]));
}

#[test]
fn watch_list_hits_by_id_phone_or_customer() {
    let mut r = rules();
    let s = scores(Category::Electronics, 0.97, 0.02);
    let by_id = parcel(
        "11010519491231002X",
        "13800138000",
        "耳机",
        "electronics",
        399.0,
        1,
    );
    let reasons = judged_for(&mut r, &by_id, &s, Flag, WatchlistedSender);
    assert_says(&reasons[0].en, &["ID number", "w1"]);
    let by_phone = parcel(CLEAN_ID, "13700137000", "耳机", "electronics", 399.0, 1);
    assert!(r.apply(&by_phone, Some(&s), HALF, vec![]).1[0]
        .zh
        .contains("电话"));
    let mut by_customer = earphones(399.0, 1);
    if let Some(w) = by_customer.waybill.as_mut() {
        w.agreement_customer = Some("C-WATCH-01".into());
    }
    assert!(r.apply(&by_customer, Some(&s), HALF, vec![]).1[0]
        .en
        .contains("agreement customer"));
}

/// Whether the watch-list rule flags a parcel of this ID number and phone.
fn watchlisted(r: &mut RuleSet, id: &str, phone: &str) -> bool {
    let s = scores(Category::Electronics, 0.97, 0.02);
    let p = parcel(id, phone, "耳机", "electronics", 399.0, 1);
    codes(&r.apply(&p, Some(&s), HALF, vec![]).1).contains(&ReasonCode::WatchlistedSender)
}

#[test]
fn the_watch_list_matches_every_spelling_of_a_listed_number() {
    let mut r = rules();
    // On the list as 13700137000 and 11010519491231002X; the waybill writes them otherwise.
    for phone in [
        "+86 137-0013-7000",
        "137 0013 7000",
        "0086 13700137000",
        "+8613700137000",
    ] {
        assert!(watchlisted(&mut r, CLEAN_ID, phone), "{phone}");
    }
    assert!(watchlisted(&mut r, "11010519491231002x", "13800138000"));
    assert!(watchlisted(&mut r, " 110105 19491231 002X", "13800138000"));
    assert!(!watchlisted(&mut r, CLEAN_ID, "+86 137-0013-7001"));
    // And a list written in another spelling matches the plain one.
    r.watchlist = Watchlist::from_file(
        WatchlistFile {
            version: "w2".into(),
            id_numbers: vec!["11010519491231002x".into()],
            phones: vec!["+86 138-0013-8000".into(), "010-62345678".into()],
            agreement_customers: vec![],
        },
        &r.hasher,
    );
    assert!(watchlisted(&mut r, "11010519491231002X", "13900139000"));
    assert!(watchlisted(&mut r, CLEAN_ID, "13800138000"));
    assert!(watchlisted(&mut r, CLEAN_ID, "+86 10 6234 5678"));
}

#[test]
fn a_list_kept_from_before_normalisation_matches_as_before_and_asks_to_be_sent_again() {
    let mut r = rules();
    // What an older version kept: hashes of the values as written, no normalisation mark.
    let raw = |v: &[&str]| v.iter().map(|x| r.hasher.hash(x)).collect::<Vec<_>>();
    let old = serde_json::json!({
        "version": "w0",
        "id_keys": raw(&["11010519491231002x"]),
        "phone_keys": raw(&["137 0013 7000"]),
        "customer_keys": [],
    });
    let kept: HashedWatchlist = serde_json::from_value(old).expect("an old kept list reads");
    r.watchlist = Watchlist::from_hashes(&kept);
    assert!(r.watchlist.is_legacy());
    let alarm = r.watchlist.resend_alarm().expect("an alarm");
    assert!(
        alarm.contains("w0") && alarm.contains("send the list again"),
        "{alarm}"
    );
    // As written, as before; and the normalised spelling where the old one was canonical.
    assert!(watchlisted(&mut r, "11010519491231002x", "13800138000"));
    assert!(watchlisted(&mut r, CLEAN_ID, "137 0013 7000"));
    // A freshly sent list is current and raises nothing.
    let fresh = Watchlist::hash(
        &WatchlistFile {
            version: "w1".into(),
            id_numbers: vec![],
            phones: vec!["13700137000".into()],
            agreement_customers: vec![],
        },
        &r.hasher,
    );
    assert_eq!(fresh.normalisation, WATCHLIST_NORMALISATION);
    let back: HashedWatchlist =
        serde_json::from_slice(&serde_json::to_vec(&fresh).expect("json")).expect("back");
    r.watchlist = Watchlist::from_hashes(&back);
    assert!(!r.watchlist.is_legacy() && r.watchlist.resend_alarm().is_none());
    assert!(watchlisted(&mut r, CLEAN_ID, "+86 137 0013 7000"));
}

#[test]
fn the_watch_list_keeps_no_plain_identity() {
    let r = rules();
    let dump = format!("{:?}", r.watchlist);
    assert!(
        !dump.contains("11010519491231002X") && !dump.contains("13700137000"),
        "{dump}"
    );
}

#[test]
fn declared_goods_that_the_image_contradicts_are_a_mismatch() {
    let mut r = rules();
    let p = parcel(CLEAN_ID, "13800138000", "运动鞋", "apparel", 199.0, 1);
    let s = scores(Category::Electronics, 0.95, 0.02);
    let reasons = judged_for(&mut r, &p, &s, Flag, DeclaredMismatch);
    assert_says(&reasons[0].en, &["apparel", "electronics"]);
    // Not when the model is unsure.
    let (d, _) = judge(&mut r, &p, &scores(Category::Electronics, 0.5, 0.02));
    assert_eq!(d, Decision::Clear);
}

#[test]
fn the_dictionary_reads_zh_and_en() {
    let r = rules();
    assert_eq!(
        r.dictionary.classify("耐克运动鞋 42码"),
        Some(Category::ApparelFootwear)
    );
    assert_eq!(
        r.dictionary.classify("Bluetooth EARPHONES"),
        Some(Category::Electronics)
    );
    assert_eq!(r.dictionary.classify("口罩"), Some(Category::Ppe));
    assert_eq!(r.dictionary.classify("???"), None);
}

#[test]
fn counterfeit_over_the_threshold_of_a_priority_category() {
    let mut r = rules();
    let p = earphones(3990.0, 10);
    let s = scores(Category::Electronics, 0.97, 0.9);
    let reasons = judged_for(&mut r, &p, &s, Flag, CounterfeitSuspected);
    assert_says(&reasons[0].zh, &["电子产品"]);
    assert_says(&reasons[0].en, &["0.90"]);
    r.settings.priority.remove(&Category::Electronics);
    let (d, _) = judge(&mut r, &p, &s);
    assert_eq!(
        d,
        Decision::Clear,
        "not a priority category: no counterfeit reason"
    );
}

#[test]
fn a_low_declared_value_is_counted_not_flagged() {
    let mut r = rules();
    let s = scores(Category::Electronics, 0.97, 0.02);
    let reasons = judged_for(&mut r, &earphones(1.0, 1), &s, Clear, ValueImplausible);
    assert_says(&reasons[0].en, &["CNY 1.00"]);
}

#[test]
fn the_fifth_similar_parcel_of_one_sender_is_a_split_shipment() {
    let mut r = rules();
    let s = scores(Category::Electronics, 0.97, 0.02);
    for i in 1..=6 {
        let p = earphones(399.0, 1);
        let (d, reasons) = judge(&mut r, &p, &s);
        let split = codes(&reasons).contains(&ReasonCode::SplitShipment);
        assert_eq!(split, i >= 5, "parcel {i}");
        assert_eq!(d == Decision::Flag, i >= 5);
    }
    // Another category from the same sender is counted apart.
    let other = parcel(CLEAN_ID, "13800138000", "图书", "publications", 68.0, 1);
    let (d, _) = r.apply(
        &other,
        Some(&scores(Category::Publications, 0.97, 0.02)),
        HALF,
        vec![],
    );
    assert_eq!(d, Decision::Clear);
}

#[test]
fn parcels_outside_the_window_do_not_count() {
    let mut ledger = MemoryLedger::default();
    let t0 = SystemTime::now();
    let w = Duration::from_secs(3600);
    let seen = |at: SystemTime| crate::sighting::Seen {
        identities: vec!["x".into()],
        category: Category::Food,
        at,
        line_id: "L1".into(),
        parcel: "p".into(),
    };
    for k in 0..4 {
        ledger.record(&seen(t0 + Duration::from_secs(k * 1000)), w);
    }
    // At 5000 s, the parcels of 2000 s and 3000 s are within the hour; 0 s and 1000 s are not.
    assert_eq!(
        ledger
            .record(&seen(t0 + Duration::from_secs(5000)), w)
            .total(),
        3
    );
}

#[test]
fn with_a_site_key_the_reason_says_where_the_parcels_were_seen() {
    struct Site(usize);
    impl SplitLedger for Site {
        fn record(&mut self, seen: &crate::sighting::Seen, _: Duration) -> SplitCount {
            // Under the site key first, then the store's own key (parcels of before).
            assert_eq!(seen.identities.len(), 2);
            assert!(seen.identities.iter().all(|i| !i.contains("110105")));
            self.0 += 1;
            SplitCount {
                here: self.0,
                elsewhere: 4,
            }
        }
    }
    let mut r = rules();
    r.ledger = Box::new(Site(0));
    let key = crate::sighting::SiteKey::new(vec![7; 32]).expect("key");
    r.site_keys = Some(crate::sighting::SiteKeys::new(key, vec![]));
    let p = earphones(399.0, 1);
    let (d, reasons) = judge(&mut r, &p, &scores(Category::Electronics, 0.97, 0.02));
    assert_eq!(d, Decision::Flag);
    let split = reasons
        .iter()
        .find(|r| r.code == ReasonCode::SplitShipment)
        .expect("split shipment");
    assert_says(
        &split.en,
        &[
            "sent 5 parcels",
            "1 on this appliance, 4 on other appliances",
        ],
    );
    assert_says(&split.zh, &["本机 1 件，站点其他设备 4 件"]);
}

#[test]
fn missing_sources_and_problems_send_to_manual() {
    let mut r = rules();
    let mut p = earphones(399.0, 1);
    p.scan = None;
    let (d, reasons) = r.apply(&p, None, HALF, vec![]);
    assert_eq!(
        (d, codes(&reasons)),
        (Decision::Manual, vec![ReasonCode::NoImage])
    );
    p.waybill = None;
    let (d, reasons) = r.apply(&p, None, HALF, vec![image_unreadable("truncated")]);
    assert_eq!(
        (d, codes(&reasons)),
        (
            Decision::Manual,
            vec![
                ReasonCode::NoRead,
                ReasonCode::NoImage,
                ReasonCode::ImageUnreadable
            ]
        )
    );
}

#[test]
fn policy_table_covers_every_reason() {
    use ReasonCode::*;
    let table: &[(ReasonCode, Decision)] = &[
        (RealNameMissing, Decision::Flag),
        (RealNameInvalid, Decision::Flag),
        (WatchlistedSender, Decision::Flag),
        (DeclaredMismatch, Decision::Flag),
        (CounterfeitSuspected, Decision::Flag),
        (SplitShipment, Decision::Flag),
        (ValueImplausible, Decision::Clear),
        (NoRead, Decision::Manual),
        (NoImage, Decision::Manual),
        (ImageUnreadable, Decision::Manual),
        (ScreeningFailed, Decision::Manual),
        (DecisionLate, Decision::Manual),
        (StoreFailed, Decision::Manual),
    ];
    assert_eq!(
        table.len(),
        ReasonCode::ALL.len(),
        "every code is in the table"
    );
    let p = Policy::default();
    for (code, want) in table {
        assert_eq!(p.decide(&[Reason::new(*code, "", "")]), *want, "{code:?}");
    }
    assert_eq!(p.decide(&[]), Decision::Clear);
    let mixed = [
        Reason::new(NoImage, "", ""),
        Reason::new(RealNameInvalid, "", ""),
    ];
    assert_eq!(p.decide(&mixed), Decision::Flag, "a flag outweighs manual");
    let mut overrides = BTreeMap::new();
    overrides.insert(ValueImplausible, Action::Flag);
    overrides.insert(RealNameMissing, Action::Manual);
    let p = Policy::with_overrides(&overrides);
    assert_eq!(
        p.decide(&[Reason::new(ValueImplausible, "", "")]),
        Decision::Flag
    );
    assert_eq!(
        p.decide(&[Reason::new(RealNameMissing, "", "")]),
        Decision::Manual
    );
}

#[test]
fn policy_overrides_come_from_the_configuration() {
    let c: RulesConfig = toml::from_str(
        r#"
split_min_parcels = 3
priority_categories = ["electronics", "cosmetics"]
[policy]
value_implausible = "flag"
no_read = "count"
"#,
    )
    .expect("parses");
    let s = RuleSettings::from_config(&c);
    assert_eq!(s.split_min_parcels, 3);
    assert_eq!(s.priority.len(), 2);
    assert_eq!(s.policy.action(ReasonCode::ValueImplausible), Action::Flag);
    assert_eq!(s.policy.action(ReasonCode::NoRead), Action::Count);
}
