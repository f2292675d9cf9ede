//! Simulated traffic for the demo: what each parcel is (goods, counterfeit or not), what its
//! waybill says (valid real-name data, a bare number, a forged ID), and whether the reader
//! and the X-ray machine see it. Deterministic by seed, line and parcel number.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde_json::json;

/// What happens to one simulated parcel.
#[derive(Debug, Clone, PartialEq)]
pub struct SimParcel {
    pub waybill_no: String,
    /// The reader's record, or `None` for a missed read.
    pub reader_record: Option<String>,
    /// The generator's spec and seed for the image, or `None` for a missed image.
    pub image: Option<(xraygen::ParcelSpec, u64)>,
    pub length_mm: u32,
    /// What it is meant to show.
    pub kind: Kind,
}

const SURNAMES: [&str; 12] = [
    "王", "李", "张", "刘", "陈", "杨", "黄", "赵", "吴", "周", "徐", "孙",
];
const GIVEN: [&str; 12] = [
    "伟", "芳", "娜", "敏", "静", "磊", "洋", "勇", "艳", "杰", "涛", "明",
];
const AREAS: [(&str, &str); 5] = [
    ("110105", "北京市朝阳区"),
    ("310105", "上海市长宁区"),
    ("440305", "深圳市南山区"),
    ("330106", "杭州市西湖区"),
    ("510107", "成都市武侯区"),
];

/// What a sender would write for goods of each category (zh goods, declared category).
fn declared_goods(category: usize) -> (&'static str, &'static str, f64) {
    match xraygen::CATEGORY_KEYS
        .get(category)
        .copied()
        .unwrap_or("other")
    {
        "agri_inputs" => ("化肥", "agri_inputs", 80.0),
        "food" => ("茶叶", "food", 120.0),
        "medicine" => ("感冒药", "medicine", 60.0),
        "cosmetics" => ("口红", "cosmetics", 300.0),
        "medical_devices" => ("血压计", "medical_devices", 260.0),
        "electronics" => ("蓝牙耳机", "electronics", 399.0),
        "auto_parts" => ("刹车片", "auto_parts", 220.0),
        "decoration" => ("墙纸", "decoration", 150.0),
        "explosive_precursors" => ("清洁剂", "explosive_precursors", 40.0),
        "childrens_products" => ("玩具车", "childrens_products", 90.0),
        "apparel_footwear" => ("运动鞋", "apparel_footwear", 199.0),
        "bags_leather" => ("手提包", "bags_leather", 450.0),
        "tobacco" => ("香烟", "tobacco", 500.0),
        "ppe" => ("口罩", "ppe", 30.0),
        "publications" => ("图书", "publications", 68.0),
        _ => ("日用品", "other", 50.0),
    }
}

/// A resident ID number that passes GB 11643.
pub fn resident_id(rng: &mut impl Rng, area: &str) -> String {
    let year = rng.gen_range(1955..=2004);
    let month = rng.gen_range(1..=12);
    let day = rng.gen_range(1..=28);
    let seq = rng.gen_range(0..1000);
    let body = format!("{area}{year:04}{month:02}{day:02}{seq:03}");
    // 17 digits by construction: the check character always exists.
    let check = crate::line::waybill::resident_id_check(&body).unwrap_or('0');
    format!("{body}{check}")
}

/// What a simulated parcel is meant to show.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Clean,
    Counterfeit,
    BareNumber,
    ForgedId,
    Watchlisted,
    DeclaredMismatch,
    LowValue,
    RepeatSender,
    NoRead,
    NoImage,
}

/// The traffic's mix.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mix {
    /// Every reason within the first hundred parcels of each line.
    Showcase,
    /// Rates like those of published pilots: about 0.5 % of parcels flagged.
    Realistic,
    /// A counterfeit wave: every parcel holds counterfeit goods (load and fault tests of the
    /// regulator feed).
    Wave,
}

/// In the showcase, each block of 20 parcels holds these, in a shuffled order. The repeat
/// sender comes three times a block, so that the split-shipment rule (5 parcels by default)
/// fires in the second block.
const SHOWCASE: [Kind; 11] = [
    Kind::Counterfeit,
    Kind::BareNumber,
    Kind::ForgedId,
    Kind::Watchlisted,
    Kind::DeclaredMismatch,
    Kind::LowValue,
    Kind::RepeatSender,
    Kind::RepeatSender,
    Kind::RepeatSender,
    Kind::NoRead,
    Kind::NoImage,
];

fn kind(mix: Mix, seed: u64, line: usize, n: u64, rng: &mut ChaCha8Rng) -> Kind {
    match mix {
        Mix::Showcase => {
            let block = n / 20;
            let mut order: Vec<usize> = (0..20).collect();
            let mut brng = ChaCha8Rng::seed_from_u64(seed ^ ((line as u64) << 40) ^ block);
            for i in (1..order.len()).rev() {
                order.swap(i, brng.gen_range(0..=i));
            }
            let slot = order[(n % 20) as usize];
            SHOWCASE.get(slot).copied().unwrap_or(Kind::Clean)
        }
        Mix::Wave => Kind::Counterfeit,
        Mix::Realistic => {
            // Per mille: counterfeit 2, bare 1, forged 0.5, watch-list 0.5, mismatch 1,
            // low value 3 (count only), no read 3, no image 2.
            let r: f64 = rng.gen::<f64>() * 1000.0;
            match r {
                r if r < 2.0 => Kind::Counterfeit,
                r if r < 3.0 => Kind::BareNumber,
                r if r < 3.5 => Kind::ForgedId,
                r if r < 4.0 => Kind::Watchlisted,
                r if r < 5.0 => Kind::DeclaredMismatch,
                r if r < 8.0 => Kind::LowValue,
                r if r < 11.0 => Kind::NoRead,
                r if r < 13.0 => Kind::NoImage,
                _ => Kind::Clean,
            }
        }
    }
}

/// A sender the demo's watch-list names.
pub fn watchlisted_sender(seed: u64) -> (String, String) {
    let mut rng = ChaCha8Rng::seed_from_u64(seed ^ 0x5741_5443_484C_4953);
    (resident_id(&mut rng, "440305"), "13700137000".to_owned())
}

/// The sender who ships the same goods again and again.
fn repeat_sender(seed: u64) -> String {
    let mut rng = ChaCha8Rng::seed_from_u64(seed ^ 0x5245_5045_4154);
    resident_id(&mut rng, "330106")
}

/// The demo's watch-list file content.
pub fn watchlist(seed: u64) -> serde_json::Value {
    let (id, phone) = watchlisted_sender(seed);
    json!({"version": "demo-1", "id_numbers": [id], "phones": [phone], "agreement_customers": ["C-WATCH-01"]})
}

impl SimParcel {
    /// The personal data its waybill carries — names, ID number, phones — as written.
    pub fn identities(&self) -> Vec<String> {
        /// The people on a reader record, however incomplete it is.
        #[derive(serde::Deserialize)]
        struct People {
            sender: Option<Person>,
            recipient: Option<Person>,
        }
        #[derive(serde::Deserialize)]
        struct Person {
            name: Option<String>,
            id_number: Option<String>,
            phone: Option<String>,
        }
        let Some(people) = self
            .reader_record
            .as_deref()
            .and_then(|r| serde_json::from_str::<People>(r).ok())
        else {
            return Vec::new();
        };
        [people.sender, people.recipient]
            .into_iter()
            .flatten()
            .flat_map(|p| [p.name, p.id_number, p.phone])
            .flatten()
            .collect()
    }
}

/// Every name, ID number and phone the traffic of `lines` lines writes on the waybills of
/// their first `parcels` parcels each: what a run of `screenline demo --seed` generates,
/// regenerated, so that a test can look for any of them where none may be.
pub fn identities(
    mix: Mix,
    seed: u64,
    lines: usize,
    parcels: u64,
) -> std::collections::BTreeSet<String> {
    (0..lines)
        .flat_map(|line| (0..parcels).map(move |n| parcel(mix, seed, line, n)))
        .flat_map(|p| p.identities())
        .collect()
}

/// One simulated parcel of line `line`, number `n`.
pub fn parcel(mix: Mix, seed: u64, line: usize, n: u64) -> SimParcel {
    let mut rng = ChaCha8Rng::seed_from_u64(
        seed ^ ((line as u64) << 48) ^ n.wrapping_mul(0x9E37_79B9_7F4A_7C15),
    );
    let waybill_no = format!(
        "SF{:06}{:02}{:07}",
        seed % 1_000_000,
        line % 100,
        n % 10_000_000
    );
    let kind = kind(mix, seed, line, n, &mut rng);
    // Categories with a value floor, so that a low declared value is always implausible.
    let mut category = rng.gen_range(0..xraygen::CATEGORY_KEYS.len());
    if kind == Kind::LowValue && matches!(xraygen::CATEGORY_KEYS[category], "other" | "ppe") {
        category = 5;
    }
    if kind == Kind::RepeatSender {
        category = 5;
    }
    let (area, address) = AREAS[rng.gen_range(0..AREAS.len())];
    let mut id = resident_id(&mut rng, area);
    let mut phone = format!("13{:09}", rng.gen_range(0..1_000_000_000u32));
    match kind {
        Kind::ForgedId => {
            // Break the check character, as a hand-edited ID would.
            let last = if id.ends_with('0') { '1' } else { '0' };
            id.pop();
            id.push(last);
        }
        Kind::Watchlisted => (id, phone) = watchlisted_sender(seed),
        Kind::RepeatSender => id = repeat_sender(seed),
        _ => {}
    }
    let name = format!(
        "{}{}",
        SURNAMES[rng.gen_range(0..SURNAMES.len())],
        GIVEN[rng.gen_range(0..GIVEN.len())]
    );
    let declared_as = if kind == Kind::DeclaredMismatch {
        (category + 1 + rng.gen_range(0..14)) % xraygen::CATEGORY_KEYS.len()
    } else {
        category
    };
    let (goods, declared_category, mut value) = declared_goods(declared_as);
    let counterfeit = kind == Kind::Counterfeit;
    let quantity = if counterfeit {
        rng.gen_range(6..=12)
    } else {
        1
    };
    if kind == Kind::LowValue {
        value = 1.0;
    }
    let record = if kind == Kind::BareNumber {
        waybill_no.clone()
    } else {
        json!({
            "waybill": waybill_no,
            "sender": {"name": name, "id_type": "resident_id", "id_number": id,
                       "phone": phone,
                       "address": format!("{address}某某路{}号", rng.gen_range(1..300))},
            "recipient": {"name": format!("{}{}", SURNAMES[rng.gen_range(0..SURNAMES.len())], GIVEN[rng.gen_range(0..GIVEN.len())]),
                          "phone": format!("139{:08}", rng.gen_range(0..100_000_000u32)),
                          "address": "广州市天河区某某街1号"},
            "declared": {"goods": goods, "category": declared_category, "value_cny": value, "quantity": quantity},
            "weight_g": rng.gen_range(200..5000),
            "agreement_customer": null,
        })
        .to_string()
    };
    SimParcel {
        waybill_no,
        reader_record: (kind != Kind::NoRead).then_some(record),
        image: (kind != Kind::NoImage).then(|| {
            (
                xraygen::ParcelSpec {
                    category,
                    counterfeit,
                },
                rng.gen(),
            )
        }),
        length_mm: rng.gen_range(250..600),
        kind,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::line::waybill::check_resident_id;

    #[test]
    fn generated_ids_pass_gb11643() {
        let mut rng = ChaCha8Rng::seed_from_u64(7);
        for _ in 0..200 {
            let id = resident_id(&mut rng, "110105");
            assert_eq!(check_resident_id(&id, (2026, 1, 1)), Ok(()), "{id}");
        }
    }

    #[test]
    fn the_identities_of_a_run_are_those_on_its_waybills() {
        let all = identities(Mix::Showcase, 3, 1, 40);
        let (id, phone) = watchlisted_sender(3);
        assert!(
            all.contains(&id) && all.contains(&phone),
            "the watch-listed sender"
        );
        let p = parcel(Mix::Showcase, 3, 0, 0);
        for x in p.identities() {
            assert!(all.contains(&x));
        }
        // Names, ID numbers and phones of senders and recipients.
        assert!(all.len() > 100, "{}", all.len());
    }

    #[test]
    fn traffic_is_deterministic() {
        assert_eq!(
            parcel(Mix::Showcase, 1, 0, 5),
            parcel(Mix::Showcase, 1, 0, 5)
        );
        assert_ne!(
            parcel(Mix::Showcase, 1, 0, 5),
            parcel(Mix::Showcase, 2, 0, 5)
        );
    }

    #[test]
    fn the_showcase_has_its_kinds_in_each_block_of_twenty() {
        for line in 0..3 {
            for block in 0..5u64 {
                let kinds: Vec<Kind> = (block * 20..block * 20 + 20)
                    .map(|n| parcel(Mix::Showcase, 9, line, n).kind)
                    .collect();
                for k in SHOWCASE {
                    assert_eq!(
                        kinds.iter().filter(|x| **x == k).count(),
                        SHOWCASE.iter().filter(|x| **x == k).count(),
                        "{k:?} in {kinds:?}"
                    );
                }
            }
        }
    }

    #[test]
    fn realistic_traffic_is_mostly_clean() {
        let clean = (0..20_000)
            .filter(|n| parcel(Mix::Realistic, 1, 0, *n).kind == Kind::Clean)
            .count();
        assert!((19_650..19_850).contains(&clean), "{clean}");
        // Flagged kinds: counterfeit, bare number, forged ID, watch-list, mismatch.
        let flagged = (0..100_000)
            .map(|n| parcel(Mix::Realistic, 2, 0, n).kind)
            .filter(|k| {
                matches!(
                    k,
                    Kind::Counterfeit
                        | Kind::BareNumber
                        | Kind::ForgedId
                        | Kind::Watchlisted
                        | Kind::DeclaredMismatch
                )
            })
            .count();
        assert!((400..600).contains(&flagged), "{flagged} of 100000");
    }
}
