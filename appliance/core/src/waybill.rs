//! The waybill reader's wire format: framing (CR/LF lines or STX…ETX frames), the payload
//! (a bare waybill number or a JSON object) and the real-name checks.
//!
//! The framer checks for a complete record in its buffer before anything is parsed, keeps
//! partial bytes for the next read, and drops an oversized or non-UTF-8 record with an error
//! while resynchronising on the next delimiter. Real-name problems are not errors of the
//! appliance: they become findings that go with the parcel.

use crate::domain::{mask, Declared, IdType, Reason, ReasonCode, Waybill, WaybillNo};
use serde::{Deserialize, Serialize};
use thiserror::Error;

/// The longest record the reader may send.
pub const MAX_RECORD: usize = 4096;

const STX: u8 = 0x02;
const ETX: u8 = 0x03;

/// How the reader delimits records.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Framing {
    /// One record per line, ended by CR, LF or CRLF.
    Line,
    /// One record per STX (0x02) … ETX (0x03) frame.
    StxEtx,
}

/// Why a record was dropped before its payload could be read.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum FramingError {
    /// More than [`MAX_RECORD`] bytes without a delimiter.
    #[error("record longer than {MAX_RECORD} bytes; dropped up to the next delimiter")]
    TooLong,
    /// The record's bytes are not UTF-8.
    #[error("record is not UTF-8 (at byte {0})")]
    NotUtf8(usize),
    /// Bytes outside an STX…ETX frame.
    #[error("{0} bytes outside an STX…ETX frame")]
    OutsideFrame(usize),
    /// A frame whose ETX never came: cut off by the next STX, or by the end of a capture.
    #[error("frame of {0} bytes without its ETX; dropped")]
    Unterminated(usize),
}

/// Why a record's payload is not a waybill.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum PayloadError {
    /// Neither a bare number nor a JSON object.
    #[error("not a waybill number or a JSON object: {0}")]
    Unrecognised(String),
    /// A JSON object that does not match the waybill schema.
    #[error("waybill JSON rejected: {0}")]
    Json(String),
}

/// One item out of the framer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Framed {
    /// A complete record's text.
    Record(String),
    /// Bytes dropped, and why.
    Dropped(FramingError),
}

/// Splits the reader's byte stream into records.
#[derive(Debug)]
pub struct Framer {
    framing: Framing,
    buf: Vec<u8>,
    /// True while skipping an oversized record up to its delimiter.
    discarding: bool,
    /// STX seen and not yet closed.
    in_frame: bool,
    stray: usize,
}

impl Framer {
    /// A framer for one reader.
    pub fn new(framing: Framing) -> Framer {
        Framer {
            framing,
            buf: Vec::new(),
            discarding: false,
            in_frame: false,
            stray: 0,
        }
    }

    /// Feeds bytes from the port; returns every record they complete.
    pub fn push(&mut self, bytes: &[u8]) -> Vec<Framed> {
        let mut out = Vec::new();
        for &b in bytes {
            match self.framing {
                Framing::Line => self.push_line_byte(b, &mut out),
                Framing::StxEtx => self.push_frame_byte(b, &mut out),
            }
        }
        out
    }

    fn push_line_byte(&mut self, b: u8, out: &mut Vec<Framed>) {
        if b == b'\r' || b == b'\n' {
            // CRLF yields an empty record between CR and LF, which is skipped.
            self.finish(out);
        } else {
            self.keep(b, out);
        }
    }

    fn push_frame_byte(&mut self, b: u8, out: &mut Vec<Framed>) {
        match b {
            STX => {
                self.flush_stray(out);
                // An STX inside a frame means the ETX was lost: start over on the new frame.
                self.drop_open_frame(out);
                self.discarding = false;
                self.in_frame = true;
            }
            ETX if self.in_frame => {
                self.in_frame = false;
                self.finish(out);
            }
            _ if self.in_frame => self.keep(b, out),
            // Line noise between frames, commonly CR/LF the reader appends; only other bytes count.
            b'\r' | b'\n' => {}
            _ => self.stray += 1,
        }
    }

    fn keep(&mut self, b: u8, out: &mut Vec<Framed>) {
        if self.discarding {
            return;
        }
        if self.buf.len() == MAX_RECORD {
            self.buf.clear();
            self.discarding = true;
            out.push(Framed::Dropped(FramingError::TooLong));
            return;
        }
        self.buf.push(b);
    }

    fn finish(&mut self, out: &mut Vec<Framed>) {
        if self.discarding {
            self.discarding = false;
            return;
        }
        if self.buf.is_empty() {
            return;
        }
        let bytes = std::mem::take(&mut self.buf);
        match String::from_utf8(bytes) {
            Ok(s) => out.push(Framed::Record(s)),
            Err(e) => out.push(Framed::Dropped(FramingError::NotUtf8(
                e.utf8_error().valid_up_to(),
            ))),
        }
    }

    /// Ends the input (a capture's last byte): a line without its final delimiter is still a
    /// record; an STX frame without its ETX, or bytes after the last frame, are dropped and
    /// said so.
    pub fn finish_input(&mut self) -> Vec<Framed> {
        let mut out = Vec::new();
        match self.framing {
            Framing::Line => self.finish(&mut out),
            Framing::StxEtx => {
                self.flush_stray(&mut out);
                self.drop_open_frame(&mut out);
                self.in_frame = false;
            }
        }
        out
    }

    fn drop_open_frame(&mut self, out: &mut Vec<Framed>) {
        if self.in_frame && !self.discarding && !self.buf.is_empty() {
            out.push(Framed::Dropped(FramingError::Unterminated(self.buf.len())));
        }
        self.buf.clear();
    }

    fn flush_stray(&mut self, out: &mut Vec<Framed>) {
        if self.stray > 0 {
            out.push(Framed::Dropped(FramingError::OutsideFrame(self.stray)));
            self.stray = 0;
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawWaybill {
    waybill: String,
    #[serde(default)]
    sender: Option<RawSender>,
    #[serde(default)]
    recipient: Option<crate::domain::Recipient>,
    #[serde(default)]
    declared: Option<crate::domain::Declared>,
    #[serde(default)]
    weight_g: Option<u32>,
    #[serde(default)]
    agreement_customer: Option<String>,
}

// The sender is parsed leniently (every field optional) so that a missing field becomes a
// real-name finding on the parcel rather than a lost record.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSender {
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    id_type: Option<IdType>,
    #[serde(default)]
    id_number: Option<String>,
    #[serde(default)]
    phone: Option<String>,
    #[serde(default)]
    address: Option<String>,
}

/// A parsed record: the waybill and the real-name findings it carries.
#[derive(Debug, Clone, PartialEq)]
pub struct ReadRecord {
    /// The waybill, its fields as written (a field that fails its check is kept).
    pub waybill: Waybill,
    /// `real_name_missing` and `real_name_invalid` findings, one per field that fails.
    pub findings: Vec<Reason>,
}

/// Parses one record's payload and checks every field: the sender's identity, both phone
/// numbers, the declared value and quantity, and the agreement-customer code.
pub fn parse_record(text: &str, today: (u32, u32, u32)) -> Result<ReadRecord, PayloadError> {
    let text = text.trim();
    if text.starts_with('{') {
        let raw: RawWaybill =
            serde_json::from_str(text).map_err(|e| PayloadError::Json(redact(&e.to_string())))?;
        let waybill = WaybillNo::parse(&raw.waybill).map_err(PayloadError::Json)?;
        let mut findings = Vec::new();
        let sender = match raw.sender {
            Some(s) => check_sender(s, today, &mut findings),
            None => None,
        };
        if let Some(r) = &raw.recipient {
            check_recipient(r, &mut findings);
        }
        if let Some(d) = &raw.declared {
            check_declared(d, &mut findings);
        }
        let has_customer = match raw.agreement_customer.as_deref().map(str::trim) {
            None | Some("") => false,
            Some(code) if is_agreement_code(code) => true,
            Some(_) => {
                findings.push(invalid(
                    "agreement_customer",
                    "协议客户代码格式错误（应为4–32位大写字母、数字或-）",
                    "agreement-customer code is malformed (4–32 of A-Z, 0-9, -)",
                ));
                false
            }
        };
        if sender.is_none() && !has_customer && findings.is_empty() {
            findings.push(missing());
        }
        Ok(ReadRecord {
            waybill: Waybill {
                waybill,
                sender,
                recipient: raw.recipient,
                declared: raw.declared,
                weight_g: raw.weight_g,
                agreement_customer: raw.agreement_customer,
            },
            findings,
        })
    } else {
        let waybill = WaybillNo::parse(text)
            .map_err(|e| PayloadError::Unrecognised(format!("{e} ({} bytes)", text.len())))?;
        Ok(ReadRecord {
            waybill: Waybill {
                waybill,
                sender: None,
                recipient: None,
                declared: None,
                weight_g: None,
                agreement_customer: None,
            },
            findings: vec![missing()],
        })
    }
}

/// Error messages may quote the offending value; keep identity data out of logs by hiding
/// digit runs and non-ASCII text (names, addresses).
fn redact(msg: &str) -> String {
    let mut out = String::with_capacity(msg.len());
    let mut digits = String::new();
    for c in msg.chars().chain(std::iter::once(' ')) {
        if c.is_ascii_digit() {
            digits.push(c);
            continue;
        }
        if !digits.is_empty() {
            out.push_str(if digits.len() >= 4 { "…" } else { &digits });
            digits.clear();
        }
        out.push(if c.is_ascii() { c } else { '*' });
    }
    out.pop();
    out
}

fn missing() -> Reason {
    Reason::new(
        ReasonCode::RealNameMissing,
        "面单无寄件人实名信息",
        "the waybill carries no sender real-name data",
    )
}

/// A `real_name_invalid` finding naming the field (e.g. `sender.phone`) in both languages.
/// `zh`/`en` say what is wrong and never quote the value.
fn invalid(field: &str, zh: &str, en: &str) -> Reason {
    let (zh_party, en_party) = match field.split_once('.').map(|(p, _)| p) {
        Some("recipient") => ("收件人", "recipient"),
        Some("declared") => ("申报", "declared"),
        None if field == "agreement_customer" => ("", ""),
        _ => ("寄件人", "sender"),
    };
    let en_sep = if en_party.is_empty() { "" } else { " " };
    Reason::new(
        ReasonCode::RealNameInvalid,
        format!("{zh_party}{zh}（{field}）"),
        format!("{en_party}{en_sep}{en} ({field})"),
    )
}

fn check_sender(
    s: RawSender,
    today: (u32, u32, u32),
    findings: &mut Vec<Reason>,
) -> Option<crate::domain::Sender> {
    let name = s.name.unwrap_or_default();
    let id_number = s.id_number.unwrap_or_default();
    let phone = s.phone.unwrap_or_default();
    if name.trim().is_empty() {
        findings.push(invalid("sender.name", "姓名缺失", "name is missing"));
    }
    let id_type = match s.id_type {
        Some(t) => t,
        None => {
            findings.push(invalid(
                "sender.id_type",
                "证件类型缺失",
                "ID type is missing",
            ));
            IdType::Other
        }
    };
    if id_number.trim().is_empty() {
        findings.push(invalid(
            "sender.id_number",
            "证件号码缺失",
            "ID number is missing",
        ));
    } else if id_type == IdType::ResidentId {
        if let Err(why) = check_resident_id(&id_number, today) {
            findings.push(invalid(
                "sender.id_number",
                &format!("居民身份证号码无效：{}", why.zh()),
                &format!("resident ID number is invalid: {}", why.en()),
            ));
        }
    } else if let Err((zh, en)) = check_other_id(id_type, &id_number) {
        findings.push(invalid("sender.id_number", zh, en));
    }
    if !phone.trim().is_empty() && !is_mainland_phone(&phone) {
        findings.push(invalid(
            "sender.phone",
            "电话号码格式错误（应为手机号或带区号的固定电话）",
            "phone number is malformed (a mainland mobile or a landline with area code)",
        ));
    }
    Some(crate::domain::Sender {
        name,
        id_type,
        id_number,
        phone,
        address: s.address.unwrap_or_default(),
    })
}

fn check_recipient(r: &crate::domain::Recipient, findings: &mut Vec<Reason>) {
    if !r.phone.trim().is_empty() && !is_mainland_phone(&r.phone) {
        findings.push(invalid(
            "recipient.phone",
            "电话号码格式错误（应为手机号或带区号的固定电话）",
            "phone number is malformed (a mainland mobile or a landline with area code)",
        ));
    }
}

/// The largest declared value accepted, in CNY.
pub const MAX_DECLARED_CNY: f64 = 1_000_000.0;
/// The largest declared quantity accepted.
pub const MAX_QUANTITY: u32 = 10_000;

fn check_declared(d: &crate::domain::Declared, findings: &mut Vec<Reason>) {
    if !(d.value_cny.is_finite() && d.value_cny > 0.0 && d.value_cny <= MAX_DECLARED_CNY) {
        findings.push(invalid(
            "declared.value_cny",
            "价值超出范围（应大于0且不超过1,000,000元）",
            "value out of range (more than 0, at most 1,000,000 CNY)",
        ));
    }
    if !(1..=MAX_QUANTITY).contains(&d.quantity) {
        findings.push(invalid(
            "declared.quantity",
            "数量超出范围（应为1–10,000）",
            "quantity out of range (1 to 10,000)",
        ));
    }
    if d.goods.trim().is_empty() {
        findings.push(invalid(
            "declared.goods",
            "物品名称缺失",
            "goods are missing",
        ));
    }
}

/// An agreement-customer (协议客户) code: 4 to 32 of `A-Z 0-9 -`.
pub fn is_agreement_code(code: &str) -> bool {
    (4..=32).contains(&code.len())
        && code
            .bytes()
            .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'-')
}

fn all_digits(s: &[u8]) -> bool {
    s.iter().all(u8::is_ascii_digit)
}

/// Checks the shape of an identity number other than a resident ID; `Err` gives (zh, en).
pub fn check_other_id(id_type: IdType, id: &str) -> Result<(), (&'static str, &'static str)> {
    let b = id.trim().as_bytes();
    let ok = match id_type {
        // Chinese passports: E/G/D/S/P + 7–8 digits, or EA12345678-style; foreign ones vary
        // but keep to 1–2 letters and 7–8 digits.
        IdType::Passport => {
            let letters = b.iter().take_while(|c| c.is_ascii_uppercase()).count();
            (1..=2).contains(&letters)
                && (7..=8).contains(&(b.len() - letters))
                && all_digits(&b[letters..])
        }
        // 港澳居民来往内地通行证: H or M + 8 digits (10 digits on the old card).
        IdType::HkMacaoPermit => {
            matches!(b.first(), Some(b'H' | b'M'))
                && matches!(b.len() - 1, 8 | 10)
                && all_digits(&b[1..])
        }
        // 台湾居民来往大陆通行证: 8 digits; the old card had 10 digits and a letter suffix.
        IdType::TaiwanPermit => {
            (b.len() == 8 && all_digits(b))
                || ((11..=13).contains(&b.len())
                    && all_digits(&b[..10])
                    && b[10..].iter().all(u8::is_ascii_uppercase))
        }
        // 外国人永久居留身份证: old 15 characters (3 letters + 12 digits), new 18 starting with 9.
        IdType::ForeignPermanentResident => {
            (b.len() == 15 && b[..3].iter().all(u8::is_ascii_uppercase) && all_digits(&b[3..]))
                || (b.len() == 18
                    && b[0] == b'9'
                    && all_digits(&b[..17])
                    && (b[17].is_ascii_digit() || b[17] == b'X'))
        }
        IdType::Other => !b.is_empty(),
        IdType::ResidentId => true,
    };
    if ok {
        return Ok(());
    }
    Err(match id_type {
        IdType::Passport => (
            "护照号码格式错误（应为1–2位字母加7–8位数字）",
            "passport number is malformed (1–2 letters and 7–8 digits)",
        ),
        IdType::HkMacaoPermit => (
            "港澳通行证号码格式错误（应为H或M加8位或10位数字）",
            "Hong Kong/Macao permit number is malformed (H or M and 8 or 10 digits)",
        ),
        IdType::TaiwanPermit => (
            "台湾通行证号码格式错误（应为8位数字，旧证10位数字加字母）",
            "Taiwan permit number is malformed (8 digits, or 10 digits and letters on the old card)",
        ),
        IdType::ForeignPermanentResident => (
            "外国人永久居留证号码格式错误（旧证3位字母加12位数字，新证18位以9开头）",
            "foreign permanent-resident ID is malformed (3 letters and 12 digits, or 18 characters starting with 9)",
        ),
        IdType::Other | IdType::ResidentId => ("证件号码缺失", "ID number is missing"),
    })
}

/// A mainland mobile number (11 digits, 1[3-9]…, optionally +86/0086) or a landline with its
/// area code (010 and 02x take 3 digits, others 4), a 7–8 digit number not starting with 0 or
/// 1, and an optional extension; spaces and hyphens between groups are allowed.
pub fn is_mainland_phone(p: &str) -> bool {
    read_phone(p).valid
}

/// The one canonical form of a phone number, which watch-lists and split-shipment keys hash:
/// digits only (full-width digits folded, separators dropped); a mainland mobile number
/// reduced to its 11 digits (no +86, 0086 or 86); a landline with its area code and trunk 0
/// (`+86 10 6234 5678` and `010-6234-5678` are both `01062345678`), an extension after `#`.
/// Anything else keeps its digits, so two spellings of one number still meet.
pub fn normalise_phone(p: &str) -> String {
    read_phone(p).canonical
}

/// An identity number as watch-lists and split-shipment keys hash it: full-width characters
/// folded, spaces and hyphens dropped, letters upper-cased (`11010519491231002x` is the same
/// person as `110105 19491231 002X`).
pub fn normalise_id(id: &str) -> String {
    fold_width(id)
        .chars()
        .filter(|c| !c.is_whitespace() && *c != '-')
        .map(|c| c.to_ascii_uppercase())
        .collect()
}

/// Full-width ASCII (as Chinese input methods type it) as plain ASCII.
fn fold_width(s: &str) -> String {
    s.chars()
        .map(|c| match c {
            '\u{FF01}'..='\u{FF5E}' => char::from_u32(c as u32 - 0xFEE0).unwrap_or(c),
            '\u{3000}' => ' ',
            _ => c,
        })
        .collect()
}

struct PhoneRead {
    /// Whether it is a mainland phone in one of the accepted spellings.
    valid: bool,
    canonical: String,
}

fn read_phone(p: &str) -> PhoneRead {
    let folded = fold_width(p);
    let p = folded.trim();
    let (main, ext) = match p.split_once(['#', '转']) {
        Some((m, e)) => (m.trim(), Some(e.trim())),
        None => (p, None),
    };
    let ext_ok = ext.is_none_or(|e| (1..=6).contains(&e.len()) && all_digits(e.as_bytes()));
    let (international, main) = match main
        .strip_prefix("+86")
        .or_else(|| main.strip_prefix("0086"))
    {
        Some(rest) => (true, rest),
        None => (false, main),
    };
    let mut digits: Vec<u8> = Vec::with_capacity(16);
    // Only spaces and hyphens are accepted spellings; brackets and dots are still read
    // through, so that the canonical form is the same.
    let mut plain = true;
    for c in main.chars() {
        match c {
            '0'..='9' => digits.push(c as u8),
            ' ' | '-' => {}
            _ => plain = false,
        }
    }
    let ext_digits: String = ext
        .unwrap_or("")
        .chars()
        .filter(char::is_ascii_digit)
        .collect();
    let mobile = |d: &[u8]| d.len() == 11 && d[0] == b'1' && (b'3'..=b'9').contains(&d[1]);
    let text = |d: &[u8]| String::from_utf8_lossy(d).into_owned();
    if mobile(&digits) {
        return PhoneRead {
            valid: plain && ext.is_none(),
            canonical: text(&digits),
        };
    }
    // `86 138…` without its plus: still the mobile number.
    if !international && digits.starts_with(b"86") && mobile(&digits[2..]) {
        return PhoneRead {
            valid: false,
            canonical: text(&digits[2..]),
        };
    }
    let valid = plain
        && ext_ok
        && !international
        && digits.first() == Some(&b'0')
        && digits.len() >= 3
        && {
            let area = if matches!(digits[1], b'1' | b'2') {
                3
            } else {
                4
            };
            let rest = &digits[area.min(digits.len())..];
            (7..=8).contains(&rest.len()) && !matches!(rest.first(), Some(b'0' | b'1'))
        };
    // A landline dialled from abroad drops its trunk 0; put it back.
    if international && !digits.is_empty() && digits[0] != b'0' {
        digits.insert(0, b'0');
    }
    let mut canonical = text(&digits);
    if !ext_digits.is_empty() {
        canonical.push('#');
        canonical.push_str(&ext_digits);
    }
    PhoneRead { valid, canonical }
}

/// Why a resident ID number fails GB 11643.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResidentIdError {
    /// Not 17 digits followed by a digit or X.
    Shape,
    /// The area code cannot exist.
    Area,
    /// The birth date is not a real date, or in the future.
    BirthDate,
    /// The ISO 7064 MOD 11-2 check character is wrong.
    Checksum,
}

impl ResidentIdError {
    fn zh(self) -> &'static str {
        match self {
            ResidentIdError::Shape => "应为17位数字加1位数字或X",
            ResidentIdError::Area => "地区码不存在",
            ResidentIdError::BirthDate => "出生日期无效",
            ResidentIdError::Checksum => "校验码错误",
        }
    }
    fn en(self) -> &'static str {
        match self {
            ResidentIdError::Shape => "must be 17 digits and a digit or X",
            ResidentIdError::Area => "the area code does not exist",
            ResidentIdError::BirthDate => "the birth date is not a real past date",
            ResidentIdError::Checksum => "the check character is wrong",
        }
    }
}

/// Checks an 18-character resident ID number against GB 11643 as of `today` (y, m, d).
pub fn check_resident_id(id: &str, today: (u32, u32, u32)) -> Result<(), ResidentIdError> {
    let b = id.as_bytes();
    if b.len() != 18
        || !b[..17].iter().all(u8::is_ascii_digit)
        || !(b[17].is_ascii_digit() || b[17] == b'X')
    {
        return Err(ResidentIdError::Shape);
    }
    let num = |r: std::ops::Range<usize>| -> u32 {
        b[r].iter().fold(0, |acc, d| acc * 10 + u32::from(d - b'0'))
    };
    // The province level of GB/T 2260: the mainland's provinces, Taiwan 71, Hong Kong 81,
    // Macao 82, and 83 for residence permits of Taiwan residents. Anything else is no area.
    let province = num(0..2);
    if !matches!(
        province,
        11..=15 | 21..=23 | 31..=37 | 41..=46 | 50..=54 | 61..=65 | 71 | 81..=83
    ) {
        return Err(ResidentIdError::Area);
    }
    let (y, m, d) = (num(6..10), num(10..12), num(12..14));
    if y < 1900 || !(1..=12).contains(&m) || d == 0 || d > days_in_month(y, m) || (y, m, d) > today
    {
        return Err(ResidentIdError::BirthDate);
    }
    if resident_id_check(&id[..17]) != Some(char::from(b[17])) {
        return Err(ResidentIdError::Checksum);
    }
    Ok(())
}

/// The GB 11643 check character (`0`–`9` or `X`) of a resident ID number's first 17
/// characters; `None` unless they are 17 ASCII digits.
pub fn resident_id_check(first17: &str) -> Option<char> {
    const WEIGHTS: [u32; 17] = [7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2];
    const CHECK: &[u8; 11] = b"10X98765432";
    let b = first17.as_bytes();
    if b.len() != 17 || !b.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let sum: u32 = b
        .iter()
        .zip(WEIGHTS)
        .map(|(d, w)| u32::from(d - b'0') * w)
        .sum();
    Some(char::from(CHECK[(sum % 11) as usize]))
}

fn days_in_month(y: u32, m: u32) -> u32 {
    match m {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        _ if (y % 4 == 0 && y % 100 != 0) || y % 400 == 0 => 29,
        _ => 28,
    }
}

/// Today's date (UTC) as (year, month, day).
pub fn today() -> (u32, u32, u32) {
    let d = time::OffsetDateTime::now_utc().date();
    (
        d.year().max(0) as u32,
        u8::from(d.month()).into(),
        d.day().into(),
    )
}

/// One record of `screenline waybill check`: what the reader's bytes gave, identity masked.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(untagged)]
pub enum Checked {
    /// The framing or the payload was refused.
    Refused {
        /// Its number in the input, from 1.
        record: usize,
        /// Why.
        error: String,
    },
    /// A waybill, with what the real-name checks found.
    Read {
        /// Its number in the input, from 1.
        record: usize,
        /// What it holds.
        #[serde(flatten)]
        read: Box<CheckedWaybill>,
    },
}

/// A waybill as `screenline waybill check` shows it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CheckedWaybill {
    /// The waybill number.
    pub waybill: WaybillNo,
    /// The sender, masked; `None` when the record names none.
    pub sender: Option<MaskedSender>,
    /// The recipient, masked.
    pub recipient: Option<MaskedRecipient>,
    /// What the sender declared, as written.
    pub declared: Option<Declared>,
    /// The weight on the waybill, in grams.
    pub weight_g: Option<u32>,
    /// The agreement customer's code, as written.
    pub agreement_customer: Option<String>,
    /// What the real-name checks found (none: the waybill passes them).
    pub findings: Vec<Reason>,
}

/// A sender as a person may see it: every identifying value masked.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct MaskedSender {
    /// The name, masked ([`mask`]).
    pub name: String,
    /// The identity document's type (not personal: shown as is).
    pub id_type: IdType,
    /// The document's number, masked.
    pub id_number: String,
    /// The phone number, masked.
    pub phone: String,
}

/// A recipient as a person may see it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct MaskedRecipient {
    /// The name, masked.
    pub name: String,
    /// The phone number, masked.
    pub phone: String,
}

/// Frames `bytes` as the reader would and parses every record, as of `today`.
pub fn check(bytes: &[u8], framing: Framing, today: (u32, u32, u32)) -> Vec<Checked> {
    let mut framer = Framer::new(framing);
    let mut items = framer.push(bytes);
    items.extend(framer.finish_input());
    items
        .into_iter()
        .enumerate()
        .map(|(n, item)| {
            let record = n + 1;
            let text = match item {
                Framed::Dropped(e) => {
                    return Checked::Refused {
                        record,
                        error: e.to_string(),
                    }
                }
                Framed::Record(text) => text,
            };
            match parse_record(&text, today) {
                Err(e) => Checked::Refused {
                    record,
                    error: e.to_string(),
                },
                Ok(r) => {
                    let w = r.waybill;
                    Checked::Read {
                        record,
                        read: Box::new(CheckedWaybill {
                            waybill: w.waybill,
                            sender: w.sender.map(|s| MaskedSender {
                                name: mask(&s.name),
                                id_type: s.id_type,
                                id_number: mask(&s.id_number),
                                phone: mask(&s.phone),
                            }),
                            recipient: w.recipient.map(|r| MaskedRecipient {
                                name: mask(&r.name),
                                phone: mask(&r.phone),
                            }),
                            declared: w.declared,
                            weight_g: w.weight_g,
                            agreement_customer: w.agreement_customer,
                            findings: r.findings,
                        }),
                    }
                }
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const TODAY: (u32, u32, u32) = (2026, 11, 22);

    #[test]
    fn line_framing_accepts_cr_lf_and_crlf_and_keeps_partial_bytes() {
        let mut f = Framer::new(Framing::Line);
        assert!(f.push(b"SF1234").is_empty());
        let out = f.push(b"5678\r\nYT87654321\rZT11112222\n");
        assert_eq!(
            out,
            vec![
                Framed::Record("SF12345678".into()),
                Framed::Record("YT87654321".into()),
                Framed::Record("ZT11112222".into()),
            ]
        );
    }

    #[test]
    fn stx_etx_framing_resynchronises_and_counts_stray_bytes() {
        let mut f = Framer::new(Framing::StxEtx);
        let out = f.push(b"junk\x02SF12345678\x03\r\n\x02half\x02YT87654321\x03");
        assert_eq!(
            out,
            vec![
                Framed::Dropped(FramingError::OutsideFrame(4)),
                Framed::Record("SF12345678".into()),
                Framed::Dropped(FramingError::Unterminated(4)),
                Framed::Record("YT87654321".into()),
            ]
        );
    }

    #[test]
    fn the_end_of_a_capture_finishes_a_line_and_reports_an_open_frame() {
        let mut f = Framer::new(Framing::Line);
        assert_eq!(
            f.push(b"SF12345678\nYT876"),
            vec![Framed::Record("SF12345678".into())]
        );
        assert_eq!(f.finish_input(), vec![Framed::Record("YT876".into())]);
        let mut f = Framer::new(Framing::StxEtx);
        assert_eq!(
            f.push(b"\x02SF12345678\x03\x02YT876"),
            vec![Framed::Record("SF12345678".into())]
        );
        assert_eq!(
            f.finish_input(),
            vec![Framed::Dropped(FramingError::Unterminated(5))]
        );
        assert_eq!(f.finish_input(), vec![]);
    }

    #[test]
    fn oversized_and_non_utf8_records_are_dropped_and_the_next_one_survives() {
        let mut f = Framer::new(Framing::Line);
        let mut big = vec![b'A'; MAX_RECORD + 10];
        big.extend_from_slice(b"\n\xff\xfe\nSF12345678\n");
        let out = f.push(&big);
        assert_eq!(
            out,
            vec![
                Framed::Dropped(FramingError::TooLong),
                Framed::Dropped(FramingError::NotUtf8(0)),
                Framed::Record("SF12345678".into()),
            ]
        );
    }

    #[test]
    fn gb11643_accepts_the_standard_example_and_rejects_each_fault() {
        assert_eq!(check_resident_id("11010519491231002X", TODAY), Ok(()));
        assert_eq!(
            check_resident_id("110105194912310021", TODAY),
            Err(ResidentIdError::Checksum)
        );
        assert_eq!(
            check_resident_id("11010519491331002X", TODAY),
            Err(ResidentIdError::BirthDate)
        );
        assert_eq!(
            check_resident_id("110105203001010010", TODAY),
            Err(ResidentIdError::BirthDate)
        );
        // Outside the province list, and a gap inside its range (no province 24 or 70).
        for id in [
            "99010519491231002X",
            "24010519491231002X",
            "70010519491231002X",
        ] {
            assert_eq!(
                check_resident_id(id, TODAY),
                Err(ResidentIdError::Area),
                "{id}"
            );
        }
        assert_eq!(
            check_resident_id("1101051949123100", TODAY),
            Err(ResidentIdError::Shape)
        );
    }

    #[test]
    fn bare_number_is_real_name_missing() {
        let r = parse_record("SF1234567890123", TODAY).expect("parses");
        assert_eq!(r.findings[0].code, ReasonCode::RealNameMissing);
    }

    #[test]
    fn json_waybill_with_valid_identity_has_no_findings() {
        let r = parse_record(
            r#"{"waybill":"SF1234567890123","sender":{"name":"张三","id_type":"resident_id",
            "id_number":"11010519491231002X","phone":"13800138000","address":"北京市朝阳区"},
            "declared":{"goods":"运动鞋","category":"apparel","value_cny":199.0,"quantity":1},
            "weight_g":850,"agreement_customer":null}"#,
            TODAY,
        )
        .expect("parses");
        assert!(r.findings.is_empty(), "{:?}", r.findings);
        assert_eq!(r.waybill.weight_g, Some(850));
    }

    #[test]
    fn invalid_id_and_missing_identity_are_findings_not_errors() {
        let r = parse_record(
            r#"{"waybill":"SF1234567890123","sender":{"name":"张三","id_type":"resident_id","id_number":"110105194912310021","phone":"13800138000","address":"x"}}"#,
            TODAY,
        )
        .expect("parses");
        assert_eq!(r.findings.len(), 1);
        assert_eq!(r.findings[0].code, ReasonCode::RealNameInvalid);
        assert!(r.findings[0].en.contains("id_number"));

        let r = parse_record(r#"{"waybill":"SF1234567890123"}"#, TODAY).expect("parses");
        assert_eq!(r.findings[0].code, ReasonCode::RealNameMissing);

        let r = parse_record(
            r#"{"waybill":"SF1234567890123","agreement_customer":"C0042"}"#,
            TODAY,
        )
        .expect("parses");
        assert!(r.findings.is_empty());
    }

    #[test]
    fn json_errors_do_not_leak_identity() {
        let e = parse_record(
            r#"{"waybill":"SF1234567890","sender":{"name":"张三","id_type":"resident_id","id_number":11010519491231002}}"#,
            TODAY,
        )
        .expect_err("id_number must be a string")
        .to_string();
        assert!(!e.contains("1101051949") && !e.contains('张'), "{e}");
    }

    #[test]
    fn malformed_payloads_are_errors() {
        assert!(matches!(
            parse_record("hello there", TODAY),
            Err(PayloadError::Unrecognised(_))
        ));
        assert!(matches!(
            parse_record("{\"waybill\": 5}", TODAY),
            Err(PayloadError::Json(_))
        ));
        assert!(matches!(
            parse_record("{\"waybill\":\"SF12345678\",\"x\":1}", TODAY),
            Err(PayloadError::Json(_))
        ));
    }

    fn with_sender(id_type: &str, id: &str, phone: &str) -> String {
        serde_json::json!({"waybill": "SF1234567890123",
            "sender": {"name": "张三", "id_type": id_type, "id_number": id, "phone": phone, "address": "x"}})
        .to_string()
    }

    fn fields(text: &str) -> Vec<String> {
        parse_record(text, TODAY)
            .expect("parses")
            .findings
            .iter()
            .map(|f| {
                assert_eq!(f.code, ReasonCode::RealNameInvalid, "{f:?}");
                let field = f.en.rsplit_once('(').map_or("", |(_, x)| x);
                assert!(f.zh.contains(field.trim_end_matches(')')), "{f:?}");
                field.trim_end_matches(')').to_owned()
            })
            .collect()
    }

    #[test]
    fn phones_and_ids_have_one_canonical_form() {
        for spelling in [
            "13800138000",
            "+86 138-0013-8000",
            "138 0013 8000",
            "+8613800138000",
            "0086 138 0013 8000",
            "86 13800138000",
            "(+86) 138.0013.8000",
            "１３８００１３８０００",
        ] {
            assert_eq!(normalise_phone(spelling), "13800138000", "{spelling}");
        }
        for spelling in [
            "010-62345678",
            "010 6234 5678",
            "+86 10 62345678",
            "(010)62345678",
        ] {
            assert_eq!(normalise_phone(spelling), "01062345678", "{spelling}");
        }
        assert_eq!(normalise_phone("0571-88886666转123"), "057188886666#123");
        assert_ne!(
            normalise_phone("13800138001"),
            normalise_phone("13800138000")
        );
        assert_eq!(normalise_id(" 11010519491231002x "), "11010519491231002X");
        assert_eq!(normalise_id("110105 19491231 002X"), "11010519491231002X");
        assert_eq!(normalise_id("ｅ１２３４５６７８"), "E12345678");
    }

    #[test]
    fn passport_numbers() {
        for ok in ["E12345678", "G1234567", "EA1234567", "PE12345678"] {
            assert_eq!(check_other_id(IdType::Passport, ok), Ok(()), "{ok}");
        }
        for bad in [
            "12345678",
            "E123456",
            "E123456789",
            "ABC1234567",
            "e12345678",
            "",
        ] {
            assert!(check_other_id(IdType::Passport, bad).is_err(), "{bad}");
        }
        assert_eq!(
            fields(&with_sender("passport", "E1234", "13800138000")),
            ["sender.id_number"]
        );
        assert!(fields(&with_sender("passport", "E12345678", "13800138000")).is_empty());
    }

    #[test]
    fn hk_macao_and_taiwan_permits() {
        for ok in ["H12345678", "M87654321", "H1234567890"] {
            assert_eq!(check_other_id(IdType::HkMacaoPermit, ok), Ok(()), "{ok}");
        }
        for bad in ["H1234567", "X12345678", "H123456789", "12345678"] {
            assert!(check_other_id(IdType::HkMacaoPermit, bad).is_err(), "{bad}");
        }
        for ok in ["12345678", "1234567890B", "1234567890AB"] {
            assert_eq!(check_other_id(IdType::TaiwanPermit, ok), Ok(()), "{ok}");
        }
        for bad in ["1234567", "T1234567", "1234567890", "123456789012"] {
            assert!(check_other_id(IdType::TaiwanPermit, bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn foreign_permanent_resident_ids_and_other() {
        for ok in [
            "USA110012345678",
            "911000199001010013",
            "91100019900101001X",
        ] {
            assert_eq!(
                check_other_id(IdType::ForeignPermanentResident, ok),
                Ok(()),
                "{ok}"
            );
        }
        for bad in ["US1100123456789", "811000199001010013", "USA11001234567"] {
            assert!(
                check_other_id(IdType::ForeignPermanentResident, bad).is_err(),
                "{bad}"
            );
        }
        assert_eq!(check_other_id(IdType::Other, "anything 1"), Ok(()));
        assert!(check_other_id(IdType::Other, "  ").is_err());
    }

    #[test]
    fn mainland_phone_numbers() {
        for ok in [
            "13800138000",
            "+86 138 0013 8000",
            "0086-13800138000",
            "010-82345678",
            "02087654321",
            "0755-2345678",
            "0571 8765 4321",
            "010-62345678转123",
            "010-62345678#8",
        ] {
            assert!(is_mainland_phone(ok), "{ok}");
        }
        for bad in [
            "12800138000",
            "1380013800",
            "138001380001",
            "+86 010-82345678",
            "010-12345678",
            "010-0234567",
            "0755-23456",
            "phone",
            "13800138000-12",
            "010-62345678-1234567",
        ] {
            assert!(!is_mainland_phone(bad), "{bad}");
        }
        assert_eq!(
            fields(&with_sender("resident_id", "11010519491231002X", "12345")),
            ["sender.phone"]
        );
        let r = serde_json::json!({"waybill": "SF1234567890123", "agreement_customer": "C0042",
            "recipient": {"name": "李四", "phone": "139001390", "address": "y"}})
        .to_string();
        assert_eq!(fields(&r), ["recipient.phone"]);
    }

    #[test]
    fn declared_value_and_quantity_ranges() {
        let rec = |value: f64, qty: u32| {
            serde_json::json!({"waybill": "SF1234567890123", "agreement_customer": "C0042",
                "declared": {"goods": "鞋", "category": "apparel", "value_cny": value, "quantity": qty}})
            .to_string()
        };
        assert!(fields(&rec(0.01, 1)).is_empty());
        assert!(fields(&rec(1_000_000.0, 10_000)).is_empty());
        assert_eq!(fields(&rec(0.0, 1)), ["declared.value_cny"]);
        assert_eq!(fields(&rec(-5.0, 1)), ["declared.value_cny"]);
        assert_eq!(fields(&rec(1_000_000.01, 1)), ["declared.value_cny"]);
        assert_eq!(fields(&rec(10.0, 0)), ["declared.quantity"]);
        assert_eq!(fields(&rec(10.0, 10_001)), ["declared.quantity"]);
        let mut d = crate::domain::Declared {
            goods: "x".into(),
            category: "other".into(),
            value_cny: f64::NAN,
            quantity: 1,
        };
        let mut f = Vec::new();
        check_declared(&d, &mut f);
        d.value_cny = f64::INFINITY;
        check_declared(&d, &mut f);
        assert_eq!(f.len(), 2);
        // A number too large for f64 is a JSON error, not a panic.
        assert!(parse_record(
            r#"{"waybill":"SF1234567890123","declared":{"goods":"x","category":"c","value_cny":1e999,"quantity":1}}"#,
            TODAY
        )
        .is_err());
    }

    #[test]
    fn agreement_customer_codes() {
        for ok in ["C004", "ACME-2026-0001", &"A".repeat(32)] {
            assert!(is_agreement_code(ok), "{ok}");
        }
        for bad in ["C04", "acme-1", "ACME_1", &"A".repeat(33), "客户0001"] {
            assert!(!is_agreement_code(bad), "{bad}");
        }
        let r = r#"{"waybill":"SF1234567890123","agreement_customer":"c1"}"#;
        assert_eq!(fields(r), ["agreement_customer"]);
    }
}
