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
    const WEIGHTS: [u32; 17] = [7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2];
    let sum: u32 = body
        .bytes()
        .zip(WEIGHTS)
        .map(|(d, w)| u32::from(d - b'0') * w)
        .sum();
    let check = b"10X98765432"[(sum % 11) as usize] as char;
    format!("{body}{check}")
}

/// The showcase mix: every kind of finding appears within the first hundred parcels.
pub fn parcel(seed: u64, line: usize, n: u64) -> SimParcel {
    let mut rng = ChaCha8Rng::seed_from_u64(
        seed ^ ((line as u64) << 48) ^ n.wrapping_mul(0x9E37_79B9_7F4A_7C15),
    );
    let waybill_no = format!(
        "SF{:06}{:02}{:07}",
        seed % 1_000_000,
        line % 100,
        n % 10_000_000
    );
    let category = rng.gen_range(0..xraygen::CATEGORY_KEYS.len());
    let roll: f64 = rng.gen();
    // Cumulative shares: counterfeit 15 %, bare number 8 %, forged ID 7 %, missed read 5 %,
    // missed image 5 %, the rest clean.
    let counterfeit = roll < 0.15;
    let bare = (0.15..0.23).contains(&roll);
    let forged = (0.23..0.30).contains(&roll);
    let no_read = (0.30..0.35).contains(&roll);
    let no_image = (0.35..0.40).contains(&roll);

    let (area, address) = AREAS[rng.gen_range(0..AREAS.len())];
    let mut id = resident_id(&mut rng, area);
    if forged {
        // Break the check character, as a hand-edited ID would.
        let last = if id.ends_with('0') { '1' } else { '0' };
        id.pop();
        id.push(last);
    }
    let name = format!(
        "{}{}",
        SURNAMES[rng.gen_range(0..SURNAMES.len())],
        GIVEN[rng.gen_range(0..GIVEN.len())]
    );
    let (goods, declared_category, value) = declared_goods(category);
    let quantity = if counterfeit {
        rng.gen_range(6..=12)
    } else {
        1
    };
    let record = if bare {
        waybill_no.clone()
    } else {
        json!({
            "waybill": waybill_no,
            "sender": {"name": name, "id_type": "resident_id", "id_number": id,
                       "phone": format!("13{:09}", rng.gen_range(0..1_000_000_000u32)),
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
        reader_record: (!no_read).then_some(record),
        image: (!no_image).then(|| {
            (
                xraygen::ParcelSpec {
                    category,
                    counterfeit,
                },
                rng.gen(),
            )
        }),
        length_mm: rng.gen_range(250..600),
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
    fn traffic_is_deterministic_and_mixed() {
        assert_eq!(parcel(1, 0, 5), parcel(1, 0, 5));
        let ps: Vec<_> = (0..100).map(|n| parcel(1, 0, n)).collect();
        assert!(ps.iter().any(|p| p.reader_record.is_none()));
        assert!(ps.iter().any(|p| p.image.is_none()));
        assert!(ps
            .iter()
            .any(|p| p.image.is_some_and(|(s, _)| s.counterfeit)));
        assert!(ps.iter().any(|p| p
            .reader_record
            .as_deref()
            .is_some_and(|r| !r.starts_with('{'))));
    }
}
