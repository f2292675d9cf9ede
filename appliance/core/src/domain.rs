//! The domain types that flow through every stage: a waybill with its real-name data, a
//! parcel joined from the line's three sources, and the decision with its reasons.
//!
//! These are plain data; the stages own the behaviour. Identity fields are only ever shown
//! through [`mask`] outside the store.

use serde::{Deserialize, Serialize};
use std::fmt;
use std::path::PathBuf;
use std::time::SystemTime;

/// The regulator's priority categories, in the order the models' labels use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, PartialOrd, Ord)]
#[serde(rename_all = "snake_case")]
pub enum Category {
    /// `agri_inputs`, 农资: seeds, fertilisers, pesticides.
    AgriInputs,
    /// `food`, 食品: food, tea, milk powder and infant formula, health supplements.
    Food,
    /// `medicine`, 药品: medicines, Western and traditional.
    Medicine,
    /// `cosmetics`, 化妆品: make-up, skincare, perfume.
    Cosmetics,
    /// `medical_devices`, 医疗器械: blood-pressure monitors, thermometers, glucose meters.
    MedicalDevices,
    /// `electronics`, 电子产品: phones, earphones, chargers.
    Electronics,
    /// `auto_parts`, 汽车配件: brake pads, spark plugs, filters.
    AutoParts,
    /// `decoration`, 装饰装修材料: wallpaper, tiles, paint.
    Decoration,
    /// `explosive_precursors`, 易制爆化学品: chemicals that can be made into explosives.
    ExplosivePrecursors,
    /// `childrens_products`, 儿童用品: toys, children's clothing, strollers.
    ChildrensProducts,
    /// `apparel_footwear`, 服装鞋帽: clothing, shoes, hats.
    ApparelFootwear,
    /// `bags_leather`, 箱包皮具: bags, luggage, wallets, leather goods.
    BagsLeather,
    /// `tobacco`, 烟草制品: cigarettes, cigars, e-cigarettes.
    Tobacco,
    /// `ppe`, 防护用品: masks, protective clothing, gloves.
    Ppe,
    /// `publications`, 出版物: books, magazines, discs.
    Publications,
    /// `other`, 其他: goods in none of the categories above (daily necessities, sundries).
    Other,
}

impl Category {
    /// Every category, in label order.
    pub const ALL: [Category; 16] = [
        Category::AgriInputs,
        Category::Food,
        Category::Medicine,
        Category::Cosmetics,
        Category::MedicalDevices,
        Category::Electronics,
        Category::AutoParts,
        Category::Decoration,
        Category::ExplosivePrecursors,
        Category::ChildrensProducts,
        Category::ApparelFootwear,
        Category::BagsLeather,
        Category::Tobacco,
        Category::Ppe,
        Category::Publications,
        Category::Other,
    ];

    /// The key used in manifests, reports and datasets.
    pub fn key(self) -> &'static str {
        match self {
            Category::AgriInputs => "agri_inputs",
            Category::Food => "food",
            Category::Medicine => "medicine",
            Category::Cosmetics => "cosmetics",
            Category::MedicalDevices => "medical_devices",
            Category::Electronics => "electronics",
            Category::AutoParts => "auto_parts",
            Category::Decoration => "decoration",
            Category::ExplosivePrecursors => "explosive_precursors",
            Category::ChildrensProducts => "childrens_products",
            Category::ApparelFootwear => "apparel_footwear",
            Category::BagsLeather => "bags_leather",
            Category::Tobacco => "tobacco",
            Category::Ppe => "ppe",
            Category::Publications => "publications",
            Category::Other => "other",
        }
    }

    /// Parses a category key.
    pub fn from_key(key: &str) -> Option<Category> {
        Category::ALL.into_iter().find(|c| c.key() == key)
    }

    /// The category's name for people.
    pub fn label(self, lang: Lang) -> &'static str {
        let (zh, en) = match self {
            Category::AgriInputs => ("农资", "agricultural inputs"),
            Category::Food => ("食品", "food"),
            Category::Medicine => ("药品", "medicine"),
            Category::Cosmetics => ("化妆品", "cosmetics"),
            Category::MedicalDevices => ("医疗器械", "medical devices"),
            Category::Electronics => ("电子产品", "electronics"),
            Category::AutoParts => ("汽车配件", "auto parts"),
            Category::Decoration => ("装饰装修材料", "decoration materials"),
            Category::ExplosivePrecursors => ("易制爆化学品", "explosive precursors"),
            Category::ChildrensProducts => ("儿童用品", "children's products"),
            Category::ApparelFootwear => ("服装鞋帽", "apparel and footwear"),
            Category::BagsLeather => ("箱包皮具", "bags and leather goods"),
            Category::Tobacco => ("烟草制品", "tobacco"),
            Category::Ppe => ("防护用品", "protective equipment"),
            Category::Publications => ("出版物", "publications"),
            Category::Other => ("其他", "other"),
        };
        match lang {
            Lang::Zh => zh,
            Lang::En => en,
        }
    }
}

impl fmt::Display for Category {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.key())
    }
}

/// The two languages every user-facing text comes in; Chinese is the default.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Lang {
    /// Simplified Chinese (`zh-CN`).
    #[serde(rename = "zh-CN")]
    Zh,
    /// English (`en`).
    #[serde(rename = "en")]
    En,
}

impl Lang {
    /// From a language tag (a cookie's, a setting's): Chinese unless English is asked for.
    pub fn from_tag(tag: Option<&str>) -> Lang {
        match tag {
            Some("en") => Lang::En,
            _ => Lang::Zh,
        }
    }

    /// The language tag (`zh-CN`, `en`), as HTML's `lang` attribute takes it.
    pub fn tag(self) -> &'static str {
        match self {
            Lang::Zh => "zh-CN",
            Lang::En => "en",
        }
    }

    /// The other language (for a switch between the two).
    pub fn other(self) -> Lang {
        match self {
            Lang::Zh => Lang::En,
            Lang::En => Lang::Zh,
        }
    }
}

/// A waybill number: 8 to 32 characters of `A-Z 0-9`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize, PartialOrd, Ord)]
#[serde(try_from = "String", into = "String")]
pub struct WaybillNo(String);

impl WaybillNo {
    /// Validates a waybill number.
    pub fn parse(s: &str) -> Result<WaybillNo, String> {
        let ok_len = (8..=32).contains(&s.len());
        let ok_chars = s
            .bytes()
            .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit());
        if ok_len && ok_chars {
            Ok(WaybillNo(s.to_owned()))
        } else {
            Err(format!(
                "a waybill number is 8 to 32 characters of A-Z and 0-9, got {} characters",
                s.chars().count()
            ))
        }
    }

    /// The number as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for WaybillNo {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        WaybillNo::parse(&s)
    }
}

impl From<WaybillNo> for String {
    fn from(w: WaybillNo) -> String {
        w.0
    }
}

impl fmt::Display for WaybillNo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The identity document types the real-name rules accept.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum IdType {
    /// `resident_id`, 居民身份证: 18 characters checked against GB 11643 (a real birth date,
    /// the ISO 7064 MOD 11-2 check character).
    ResidentId,
    /// `passport`, 护照: 1–2 letters and 7–8 digits.
    Passport,
    /// `hk_macao_permit`, 港澳居民来往内地通行证: H or M and 8 or 10 digits.
    HkMacaoPermit,
    /// `taiwan_permit`, 台湾居民来往大陆通行证: 8 digits, or 10 digits and letters (old card).
    TaiwanPermit,
    /// `foreign_permanent_resident`, 外国人永久居留身份证: 3 letters and 12 digits (old card),
    /// or 18 characters starting with 9.
    ForeignPermanentResident,
    /// `other`: any other document; its number need only be present. Also what a sender
    /// without an `id_type` is read as, with a `real_name_invalid` finding.
    Other,
}

/// The sender's real-name data as read from the waybill.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Sender {
    /// The sender's name as written; empty when the waybill omitted it (a
    /// `real_name_invalid` finding says so).
    pub name: String,
    /// The identity document the number belongs to; decides which check the number gets.
    pub id_type: IdType,
    /// The document's number as written, not normalised (matching and hashing use
    /// [`normalise_id`](crate::waybill::normalise_id)); empty when omitted, with a finding.
    pub id_number: String,
    /// A mainland mobile or landline number as written; may be empty, and is checked
    /// ([`is_mainland_phone`](crate::waybill::is_mainland_phone)) only when present.
    pub phone: String,
    /// The sender's address, free text, not checked; empty when omitted.
    pub address: String,
}

impl Sender {
    /// Name and ID number, masked ([`mask`]): how a sender is shown to people.
    pub fn masked(&self) -> String {
        format!("{} {}", mask(&self.name), mask(&self.id_number))
    }
}

/// The recipient as read from the waybill.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Recipient {
    /// The recipient's name as written, not checked.
    pub name: String,
    /// A mainland mobile or landline number as written; checked only when not empty (a
    /// malformed one is a `real_name_invalid` finding on `recipient.phone`).
    pub phone: String,
    /// The delivery address, free text, not checked.
    pub address: String,
}

/// What the sender declared the parcel holds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Declared {
    /// The goods in the sender's words (e.g. `运动鞋`); blank is a finding. The goods
    /// dictionary reads a category from it when `category` names none.
    pub goods: String,
    /// The declared category as written: a category key, or words the goods dictionary maps
    /// to one (e.g. `apparel`); compared with what the X-ray image shows.
    pub category: String,
    /// The declared value of the whole parcel in CNY (元); more than 0 and at most
    /// [`MAX_DECLARED_CNY`](crate::waybill::MAX_DECLARED_CNY), else a finding. Below the
    /// category's floor × `quantity` it is `value_implausible`.
    pub value_cny: f64,
    /// How many items; 1 to [`MAX_QUANTITY`](crate::waybill::MAX_QUANTITY), else a finding.
    pub quantity: u32,
}

/// One waybill as the reader delivered it, parsed but not yet judged.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Waybill {
    /// The waybill number: what the join matches an X-ray scan's waybill against, and part
    /// of a report's id.
    pub waybill: WaybillNo,
    /// The sender's real-name data; `None` when the code carries none (a bare number, or
    /// JSON without `sender`), which is `real_name_missing` unless a well-formed agreement
    /// customer code stands in for it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sender: Option<Sender>,
    /// The recipient, when the code carries one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recipient: Option<Recipient>,
    /// What the sender declared, when the code carries it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub declared: Option<Declared>,
    /// The parcel's weight in grams, as the waybill states it; no rule reads it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub weight_g: Option<u32>,
    /// The code of a contract customer (协议客户), whose parcels may carry no individual
    /// sender, as written; a malformed one is kept, with a `real_name_invalid` finding
    /// ([`is_agreement_code`](crate::waybill::is_agreement_code)).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agreement_customer: Option<String>,
}

/// An X-ray scan taken from the drop folder, complete on disk.
#[derive(Debug, Clone, PartialEq)]
pub struct XrayScan {
    /// The scan id: the file name without its extension.
    pub scan_id: String,
    /// The image file: one pseudo-colour RGB image, or the high-energy half of a pair.
    pub path: PathBuf,
    /// When the file was complete in the drop folder: where decision latency starts.
    pub completed: std::time::Instant,
    /// For a dual-energy pair, the low-energy half (16-bit grey, like `path`).
    pub low_energy: Option<PathBuf>,
    /// The waybill the X-ray machine knew, from the sidecar or the file name.
    pub waybill: Option<WaybillNo>,
    /// When the machine captured it (sidecar), else when the file was complete.
    pub captured_at: SystemTime,
}

/// A parcel joined from the line's sources, ready to be screened.
#[derive(Debug, Clone)]
pub struct Parcel {
    /// The configured id of the line the parcel came down.
    pub line_id: String,
    /// The line controller's sequence number: the handle the decision is sent back with.
    pub seq: u32,
    /// The controller epoch the parcel entered under, which the decision must name; `None`
    /// when it entered before the controller had one (it diverts such a parcel itself, and
    /// no decision can name it) or did not come from a controller.
    pub epoch: Option<screenline_protocol::Epoch>,
    /// When the appliance heard the controller's parcel-entered message (its own clock):
    /// the parcel's time in its record, its report id without a read, and the split-shipment
    /// ledger, and where the decision deadline is counted from.
    pub entered_at: SystemTime,
    /// The waybill read joined to the parcel; `None` is `no_read`.
    pub waybill: Option<Waybill>,
    /// Real-name findings made while reading the waybill.
    pub findings: Vec<Reason>,
    /// The X-ray scan joined to the parcel; `None` is `no_image`.
    pub scan: Option<XrayScan>,
}

/// What the appliance decided for a parcel.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, PartialOrd, Ord)]
#[serde(rename_all = "snake_case")]
pub enum Decision {
    /// Let it pass.
    Clear,
    /// Divert and report to the regulator.
    Flag,
    /// Divert for manual inspection (the appliance could not judge it).
    Manual,
}

impl Decision {
    /// What the line controller does with the parcel.
    pub fn verdict(self) -> screenline_protocol::Verdict {
        match self {
            Decision::Clear => screenline_protocol::Verdict::Pass,
            Decision::Flag | Decision::Manual => screenline_protocol::Verdict::Divert,
        }
    }

    /// The decision's key.
    pub fn key(self) -> &'static str {
        match self {
            Decision::Clear => "clear",
            Decision::Flag => "flag",
            Decision::Manual => "manual",
        }
    }

    /// Every decision.
    pub const ALL: [Decision; 3] = [Decision::Clear, Decision::Flag, Decision::Manual];
}

/// What the operator found after opening a flagged or manual parcel.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, PartialOrd, Ord)]
#[serde(rename_all = "snake_case")]
pub enum Finding {
    /// The suspicion holds (e.g. counterfeit goods found).
    Confirmed,
    /// Nothing wrong: the parcel goes on.
    Cleared,
}

impl Finding {
    /// Every finding.
    pub const ALL: [Finding; 2] = [Finding::Confirmed, Finding::Cleared];

    /// The key used in counters, the API and stats.
    pub fn key(self) -> &'static str {
        match self {
            Finding::Confirmed => "confirmed",
            Finding::Cleared => "cleared",
        }
    }
}

/// A reason code. Every flag and every manual inspection carries at least one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, PartialOrd, Ord)]
#[serde(rename_all = "snake_case")]
pub enum ReasonCode {
    /// The waybill carries no sender real-name data and names no agreement customer.
    RealNameMissing,
    /// A waybill field fails its check: the sender's name, ID type or number (GB 11643 or
    /// the document's shape), a phone, the declared goods, value or quantity, or the
    /// agreement-customer code. The words name the field, never its value.
    RealNameInvalid,
    /// The sender's ID number or phone, or the agreement customer, is on the regulator's
    /// watch-list.
    WatchlistedSender,
    /// The model, at least `mismatch_confidence` sure, sees a category other than the
    /// declared one.
    DeclaredMismatch,
    /// The counterfeit score reaches the threshold of the category the model sees, and
    /// that category is a priority one.
    CounterfeitSuspected,
    /// One sender identity sent `split_min_parcels` or more parcels of one category within
    /// the window (蚂蚁搬家).
    SplitShipment,
    /// The declared value is below the category's floor × quantity (count-only by default).
    ValueImplausible,
    /// No waybill read was joined to the parcel within the window.
    NoRead,
    /// No X-ray image was joined to the parcel.
    NoImage,
    /// An image was joined but could not be decoded (corrupt, truncated, oversized).
    ImageUnreadable,
    /// The classifier failed, gave no result, or screening the parcel panicked.
    ScreeningFailed,
    /// The decision came after the parcel's decision point: the controller had already
    /// diverted it, so a clear becomes manual.
    DecisionLate,
    /// The record could not be stored, so no pass was sent (`sink.rs`).
    StoreFailed,
}

impl ReasonCode {
    /// Every code.
    pub const ALL: [ReasonCode; 13] = [
        ReasonCode::RealNameMissing,
        ReasonCode::RealNameInvalid,
        ReasonCode::WatchlistedSender,
        ReasonCode::DeclaredMismatch,
        ReasonCode::CounterfeitSuspected,
        ReasonCode::SplitShipment,
        ReasonCode::ValueImplausible,
        ReasonCode::NoRead,
        ReasonCode::NoImage,
        ReasonCode::ImageUnreadable,
        ReasonCode::ScreeningFailed,
        ReasonCode::DecisionLate,
        ReasonCode::StoreFailed,
    ];

    /// The code as it appears on the wire.
    pub fn key(self) -> &'static str {
        match self {
            ReasonCode::RealNameMissing => "real_name_missing",
            ReasonCode::RealNameInvalid => "real_name_invalid",
            ReasonCode::WatchlistedSender => "watchlisted_sender",
            ReasonCode::DeclaredMismatch => "declared_mismatch",
            ReasonCode::CounterfeitSuspected => "counterfeit_suspected",
            ReasonCode::SplitShipment => "split_shipment",
            ReasonCode::ValueImplausible => "value_implausible",
            ReasonCode::NoRead => "no_read",
            ReasonCode::NoImage => "no_image",
            ReasonCode::ImageUnreadable => "image_unreadable",
            ReasonCode::ScreeningFailed => "screening_failed",
            ReasonCode::DecisionLate => "decision_late",
            ReasonCode::StoreFailed => "store_failed",
        }
    }
}

/// A reason with its plain words in both languages.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Reason {
    /// What was found; the policy maps it to an action.
    pub code: ReasonCode,
    /// The plain words in Simplified Chinese, for the operator's screen and the reports.
    pub zh: String,
    /// The plain words in English.
    pub en: String,
    /// For a reason that rests on one item a detector model found: its index in the
    /// scores' (and the report evidence's) detections.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detection: Option<usize>,
}

impl Reason {
    /// A reason from its code and words.
    pub fn new(code: ReasonCode, zh: impl Into<String>, en: impl Into<String>) -> Reason {
        Reason {
            code,
            zh: zh.into(),
            en: en.into(),
            detection: None,
        }
    }

    /// The same reason, resting on detection `index` (its words name the box, counted from 1).
    pub fn on_detection(mut self, index: Option<usize>) -> Reason {
        if let Some(i) = index {
            self.zh.push_str(&format!("（检测框 {}）", i + 1));
            self.en.push_str(&format!(" (box {})", i + 1));
        }
        self.detection = index;
        self
    }
}

/// Name, version and hash, as every decision and report carries them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelInfo {
    /// The model's name, from its manifest.
    pub name: String,
    /// The model's version, from its manifest.
    pub version: String,
    /// SHA-256 of the `.onnx` file, lower-case hex, verified against the manifest on load.
    pub sha256: String,
}

/// An axis-aligned box in pixels of the original scan (not of the model input): `x0, y0` is
/// the top-left corner, `x1, y1` the bottom-right one, as exclusive edges — the box covers
/// `x0 <= x < x1`, `y0 <= y < y1`, so its width is `x1 - x0` and two boxes that only touch
/// do not overlap.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BBox {
    /// Left edge (inclusive).
    pub x0: f32,
    /// Top edge (inclusive).
    pub y0: f32,
    /// Right edge (exclusive).
    pub x1: f32,
    /// Bottom edge (exclusive).
    pub y1: f32,
}

impl BBox {
    /// A box from its edges (not checked; see [`BBox::is_valid`]).
    pub fn new(x0: f32, y0: f32, x1: f32, y1: f32) -> BBox {
        BBox { x0, y0, x1, y1 }
    }

    /// Every edge is finite and the box has a positive width and height (`x1 > x0`,
    /// `y1 > y0`).
    pub fn is_valid(&self) -> bool {
        [self.x0, self.y0, self.x1, self.y1]
            .iter()
            .all(|v| v.is_finite())
            && self.x1 > self.x0
            && self.y1 > self.y0
    }

    /// Width × height in square pixels; 0 for a box that is not [valid](BBox::is_valid).
    pub fn area(&self) -> f32 {
        if self.is_valid() {
            (self.x1 - self.x0) * (self.y1 - self.y0)
        } else {
            0.0
        }
    }

    /// Intersection over union, in `0..=1`: the area both boxes cover over the area either
    /// covers. 0 when the boxes do not overlap (touching edges do not) or when either is not
    /// [valid](BBox::is_valid); never NaN. Computed in `f64`, so huge or tiny boxes neither
    /// overflow nor underflow.
    pub fn iou(&self, other: &BBox) -> f32 {
        if !self.is_valid() || !other.is_valid() {
            return 0.0;
        }
        let (a, b) = (self.edges(), other.edges());
        let w = (a[2].min(b[2]) - a[0].max(b[0])).max(0.0);
        let h = (a[3].min(b[3]) - a[1].max(b[1])).max(0.0);
        let inter = w * h;
        let area = |e: [f64; 4]| (e[2] - e[0]) * (e[3] - e[1]);
        let union = area(a) + area(b) - inter;
        if inter <= 0.0 || union <= 0.0 {
            return 0.0;
        }
        (inter / union).clamp(0.0, 1.0) as f32
    }

    fn edges(&self) -> [f64; 4] {
        [self.x0, self.y0, self.x1, self.y1].map(f64::from)
    }
}

/// One item the detector found on a scan.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Detection {
    /// The item's category (the heatmap channel its peak is in).
    pub category: Category,
    /// The heatmap's value at the peak: how sure the detector is that an item of this
    /// category is centred there, 0..1.
    pub score: f32,
    /// `item_counterfeit` at the peak: the probability that the item is counterfeit, 0..1.
    pub counterfeit: f32,
    /// Where the item is, in pixels of the original scan.
    pub bbox: BBox,
}

/// The model's view of one image.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Scores {
    /// Probability per category key, in label order (an object keyed by category key in JSON).
    #[serde(with = "category_map")]
    pub category: Vec<(Category, f32)>,
    /// Counterfeit suspicion in 0..=1.
    pub counterfeit: f32,
    /// The items a detector model found, best first (none from a classifier-only model,
    /// and then absent from the JSON, as records kept before detectors were).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub detections: Vec<Detection>,
}

/// `[(Category, p)]` as a JSON object `{key: p}`.
mod category_map {
    use super::Category;
    use serde::de::{Deserializer, Error, MapAccess, Visitor};
    use serde::ser::{SerializeMap, Serializer};

    pub fn serialize<S: Serializer>(v: &[(Category, f32)], s: S) -> Result<S::Ok, S::Error> {
        let mut m = s.serialize_map(Some(v.len()))?;
        for (c, p) in v {
            m.serialize_entry(c.key(), p)?;
        }
        m.end()
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<(Category, f32)>, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Vec<(Category, f32)>;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("an object of category key to probability")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut a: A) -> Result<Self::Value, A::Error> {
                let mut out = Vec::new();
                while let Some((k, p)) = a.next_entry::<String, f32>()? {
                    let c = Category::from_key(&k)
                        .ok_or_else(|| A::Error::custom(format!("unknown category {k:?}")))?;
                    out.push((c, p));
                }
                Ok(out)
            }
        }
        d.deserialize_map(V)
    }
}

impl Scores {
    /// The most probable category.
    pub fn top(&self) -> Option<(Category, f32)> {
        self.category
            .iter()
            .copied()
            .max_by(|a, b| a.1.total_cmp(&b.1))
    }

    /// The detection most likely counterfeit (its index), if the model found any.
    pub fn most_suspicious(&self) -> Option<usize> {
        (0..self.detections.len()).max_by(|&a, &b| {
            self.detections[a]
                .counterfeit
                .total_cmp(&self.detections[b].counterfeit)
        })
    }

    /// The surest detection of category `c` (its index), if any.
    pub fn best_of(&self, c: Category) -> Option<usize> {
        (0..self.detections.len())
            .filter(|&i| self.detections[i].category == c)
            .max_by(|&a, &b| {
                self.detections[a]
                    .score
                    .total_cmp(&self.detections[b].score)
            })
    }
}

/// The most characters [`mask`] ever shows of a value.
pub const MASK_SHOWN_MAX: usize = 4;

/// Masks personal data — ID numbers of every type, phones, names — for anything but the
/// store: the one masking the appliance has. It shows at most [`MASK_SHOWN_MAX`] characters
/// and never more than half of the value (rounded down), split between its start and its
/// end (the start gets the odd one, so a two-character name keeps its surname).
pub fn mask(value: &str) -> String {
    let chars: Vec<char> = value.chars().collect();
    let n = chars.len();
    let shown = (n / 2).min(MASK_SHOWN_MAX);
    let head = shown.div_ceil(2);
    let tail = shown - head;
    let mut out: String = chars[..head].iter().collect();
    out.extend(std::iter::repeat_n('*', n - shown));
    out.extend(&chars[n - tail..]);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scores_are_an_object_of_category_keys_in_json() {
        let s = Scores {
            category: vec![(Category::Food, 0.25), (Category::Tobacco, 0.75)],
            counterfeit: 0.5,
            detections: Vec::new(),
        };
        let v = serde_json::to_value(&s).expect("serialize");
        assert_eq!(
            v,
            serde_json::json!({"category": {"food": 0.25, "tobacco": 0.75}, "counterfeit": 0.5})
        );
        assert_eq!(serde_json::from_value::<Scores>(v).expect("back"), s);
        let bad = serde_json::json!({"category": {"shoes": 1.0}, "counterfeit": 0.0});
        assert!(serde_json::from_value::<Scores>(bad).is_err());
    }

    #[test]
    fn a_reason_on_a_detection_names_its_box_counted_from_one() {
        let r = Reason::new(ReasonCode::CounterfeitSuspected, "可疑", "suspect");
        let on = r.clone().on_detection(Some(1));
        assert_eq!(
            (on.detection, on.zh.as_str(), on.en.as_str()),
            (Some(1), "可疑（检测框 2）", "suspect (box 2)")
        );
        assert_eq!(r.clone().on_detection(None), r);
        // Absent from the JSON without a detection: records and reports stay as they were.
        let v = serde_json::to_value(&r).expect("json");
        assert!(v.get("detection").is_none(), "{v}");
        assert_eq!(serde_json::to_value(&on).expect("json")["detection"], 1);
    }

    #[test]
    fn category_keys_round_trip() {
        for c in Category::ALL {
            assert_eq!(Category::from_key(c.key()), Some(c));
        }
    }

    #[test]
    fn waybill_numbers_are_validated() {
        assert!(WaybillNo::parse("SF1234567890123").is_ok());
        assert!(WaybillNo::parse("SF12").is_err());
        assert!(WaybillNo::parse("sf1234567890").is_err());
        assert!(WaybillNo::parse(&"A".repeat(33)).is_err());
    }

    #[test]
    fn masking_shows_at_most_four_characters_and_never_half() {
        // The examples the contract was broken with, and every ID type's shape.
        assert_eq!(mask("11010519491231002X"), "11**************2X");
        assert_eq!(mask("12345678"), "12****78");
        assert_eq!(mask("E12345678"), "E1*****78");
        assert_eq!(mask("H12345678"), "H1*****78");
        assert_eq!(mask("USA123456789012"), "US***********12");
        assert_eq!(mask("13800138000"), "13*******00");
        assert_eq!(mask("张三"), "张*");
        assert_eq!(mask("欧阳娜娜"), "欧**娜");
        assert_eq!(mask("X"), "*");
        assert_eq!(mask(""), "");
        for n in 0..40 {
            let v: String = (0..n).map(|i| char::from(b'a' + (i % 26) as u8)).collect();
            let m = mask(&v);
            let shown = m.chars().filter(|c| *c != '*').count();
            assert_eq!(m.chars().count(), n, "{m}");
            assert!(shown <= MASK_SHOWN_MAX && shown * 2 <= n, "{v} -> {m}");
        }
    }
}
