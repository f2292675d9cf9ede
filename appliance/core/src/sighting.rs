//! Pseudonymous sightings: how the appliances of one site tell each other that a sender
//! identity sent a parcel of some category, so that the split-shipment rule counts a sender's
//! parcels on every appliance of the site.
//!
//! A sighting names the sender only by `sender_key`, the HMAC-SHA-256 of the normalised ID
//! number under the **site key** (a secret every appliance of the site shares, never the
//! store's own per-appliance key), and is authenticated as a whole by `mac`, an HMAC-SHA-256
//! under the same key over its canonical form. It never carries a name, number, phone or
//! address. During a key rotation several keys are accepted; each sighting says which one
//! made it (`key_id`, a fingerprint that reveals nothing of the key).
//!
//! Everything here is pure: the appliance reads the key files, keeps the outbox and the
//! ledger, and talks to the broker.

use crate::domain::Category;
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;
use std::time::{Duration, SystemTime};

/// The sighting payload's `schema`.
pub const SCHEMA: &str = "screenline.sighting.v1";

/// Largest sighting accepted from the broker, in bytes. A well-formed one is about 450.
pub const MAX_BYTES: usize = 1024;

/// How far ahead of our clock a peer's sighting may be (clocks of one site disagree a little).
pub const MAX_FUTURE: Duration = Duration::from_secs(120);

/// Shortest site key, in bytes.
pub const MIN_KEY_BYTES: usize = 32;

/// One site key: a secret shared by every appliance of the site.
#[derive(Clone)]
pub struct SiteKey {
    key: Vec<u8>,
    id: String,
}

impl SiteKey {
    /// A key from its raw bytes (at least [`MIN_KEY_BYTES`]).
    pub fn new(key: Vec<u8>) -> Result<SiteKey, KeyError> {
        if key.len() < MIN_KEY_BYTES {
            return Err(KeyError::TooShort(key.len()));
        }
        let id = hex::encode(&hmac(&key, &[b"screenline site key id"])[..4]);
        Ok(SiteKey { key, id })
    }

    /// A key from a key file's text: base64 of at least [`MIN_KEY_BYTES`] random bytes
    /// (`head -c 32 /dev/urandom | base64`), surrounding whitespace ignored.
    pub fn from_base64(text: &str) -> Result<SiteKey, KeyError> {
        use base64::Engine;
        let raw = base64::engine::general_purpose::STANDARD
            .decode(text.trim())
            .map_err(|_| KeyError::NotBase64)?;
        SiteKey::new(raw)
    }

    /// The key's public fingerprint (8 hex digits): names the key in a sighting without
    /// revealing anything of it.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The sender key of a normalised ID number under this key (hex).
    pub fn sender_key(&self, normalised_id: &str) -> String {
        hex::encode(hmac(&self.key, &[normalised_id.as_bytes()]))
    }

    fn mac(&self, canonical: &[u8]) -> String {
        hex::encode(hmac(&self.key, &[b"screenline sighting mac\0", canonical]))
    }

    fn sighting_id(&self, appliance_id: &str, parcel: &str) -> String {
        let h = hmac(
            &self.key,
            &[
                b"screenline sighting id\0",
                appliance_id.as_bytes(),
                b"\0",
                parcel.as_bytes(),
            ],
        );
        format!("sgt-{}", hex::encode(&h[..16]))
    }
}

impl std::fmt::Debug for SiteKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SiteKey({})", self.id)
    }
}

fn hmac(key: &[u8], parts: &[&[u8]]) -> [u8; 32] {
    let mut mac = Hmac::<Sha256>::new_from_slice(key)
        .unwrap_or_else(|_| unreachable!("HMAC takes keys of any length"));
    for p in parts {
        mac.update(p);
    }
    mac.finalize().into_bytes().into()
}

/// A site key that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    /// The key file's text is not base64.
    #[error("the key is not base64 (make one with `head -c 32 /dev/urandom | base64`)")]
    NotBase64,
    /// Too few bytes.
    #[error("the key has {0} bytes; a site key needs at least 32 (make one with `head -c 32 /dev/urandom | base64`)")]
    TooShort(usize),
}

/// The site's keys: the one this appliance signs with, and any others it accepts during a
/// rotation (README, "Split shipments across a site").
#[derive(Debug, Clone)]
pub struct SiteKeys {
    current: SiteKey,
    accepted: Vec<SiteKey>,
}

impl SiteKeys {
    /// `current` signs; it and every one of `accepted` verify.
    pub fn new(current: SiteKey, accepted: Vec<SiteKey>) -> SiteKeys {
        let accepted = accepted
            .into_iter()
            .filter(|k| k.id != current.id)
            .collect();
        SiteKeys { current, accepted }
    }

    /// The key this appliance signs its sightings with.
    pub fn current(&self) -> &SiteKey {
        &self.current
    }

    /// Every key accepted, the current one first.
    pub fn all(&self) -> impl Iterator<Item = &SiteKey> {
        std::iter::once(&self.current).chain(self.accepted.iter())
    }

    /// The sender's keys under every accepted key, the current one first: a parcel is
    /// recorded under the first and counted under all, so that peers still signing with the
    /// other key of a rotation are counted too.
    pub fn sender_keys(&self, normalised_id: &str) -> Vec<String> {
        self.all().map(|k| k.sender_key(normalised_id)).collect()
    }

    fn by_id(&self, id: &str) -> Option<&SiteKey> {
        self.all().find(|k| k.id == id)
    }
}

/// One sighting, as published on `screenline/v1/{site_id}/{appliance_id}/sightings`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Sighting {
    /// [`SCHEMA`].
    pub schema: String,
    /// Stable per parcel (a keyed hash of the appliance and the parcel): a redelivery is
    /// recognisably the same sighting.
    pub sighting_id: String,
    /// The site.
    pub site_id: String,
    /// The appliance that screened the parcel (also its topic level).
    pub appliance_id: String,
    /// The line it came down.
    pub line_id: String,
    /// When it entered the tunnel (RFC 3339).
    pub at: String,
    /// Which site key made `sender_key` and `mac` ([`SiteKey::id`]).
    pub key_id: String,
    /// The sender's pseudonym under the site key ([`SiteKey::sender_key`]).
    pub sender_key: String,
    /// The goods category key.
    pub category: String,
    /// HMAC-SHA-256 (hex) under the site key over [`Sighting::canonical`].
    pub mac: String,
}

/// What a sighting is about, before it is signed: one parcel screened here.
#[derive(Debug, Clone)]
pub struct Seen {
    /// The sender's keyed hashes, the one recorded first (see [`SiteKeys::sender_keys`]).
    pub identities: Vec<String>,
    /// The category the rule counts the parcel under.
    pub category: Category,
    /// When the parcel entered.
    pub at: SystemTime,
    /// Its line.
    pub line_id: String,
    /// A stable reference of the parcel on this appliance (its record id).
    pub parcel: String,
}

impl Sighting {
    /// The bytes the `mac` covers: every other field, in a fixed order, as a JSON array (no
    /// field can run into the next).
    pub fn canonical(&self) -> Vec<u8> {
        serde_json::to_vec(&[
            &self.schema,
            &self.sighting_id,
            &self.site_id,
            &self.appliance_id,
            &self.line_id,
            &self.at,
            &self.key_id,
            &self.sender_key,
            &self.category,
        ])
        .unwrap_or_default()
    }

    /// The signed sighting of a parcel screened by `appliance_id` of `site_id`: its sender
    /// key is `seen.identities[0]` (made with `keys`' current key).
    pub fn signed(keys: &SiteKeys, site_id: &str, appliance_id: &str, seen: &Seen) -> Sighting {
        let key = keys.current();
        let mut s = Sighting {
            schema: SCHEMA.to_owned(),
            sighting_id: key.sighting_id(appliance_id, &seen.parcel),
            site_id: site_id.to_owned(),
            appliance_id: appliance_id.to_owned(),
            line_id: seen.line_id.clone(),
            at: crate::time_fmt::format(seen.at),
            key_id: key.id.clone(),
            sender_key: seen.identities.first().cloned().unwrap_or_default(),
            category: seen.category.key().to_owned(),
            mac: String::new(),
        };
        s.mac = key.mac(&s.canonical());
        s
    }

    /// The JSON published.
    pub fn to_vec(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_default()
    }
}

/// Why a peer's sighting was refused. Each is counted (`sightings.refused.<code>`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Refusal {
    /// Larger than [`MAX_BYTES`].
    TooLarge,
    /// Not JSON of the sighting's shape, or a field out of its form.
    Malformed,
    /// Another `schema`.
    WrongSchema,
    /// Another `site_id`.
    WrongSite,
    /// `appliance_id` differs from the topic it came on.
    WrongTopic,
    /// From an appliance not on the configured peer list.
    UnknownPeer,
    /// Made with a key this appliance does not accept.
    UnknownKey,
    /// The `mac` does not verify.
    BadMac,
    /// Older than the split-shipment window.
    TooOld,
    /// Further ahead of our clock than [`MAX_FUTURE`].
    Future,
    /// The peer sent more than its rate allows.
    Rate,
    /// The ledger holds as many senders as it may.
    LedgerFull,
    /// Could not be taken in time (the ledger's queue was full).
    Busy,
}

impl Refusal {
    /// Every refusal.
    pub const ALL: [Refusal; 13] = [
        Refusal::TooLarge,
        Refusal::Malformed,
        Refusal::WrongSchema,
        Refusal::WrongSite,
        Refusal::WrongTopic,
        Refusal::UnknownPeer,
        Refusal::UnknownKey,
        Refusal::BadMac,
        Refusal::TooOld,
        Refusal::Future,
        Refusal::Rate,
        Refusal::LedgerFull,
        Refusal::Busy,
    ];

    /// Its code in counters and logs.
    pub fn code(self) -> &'static str {
        match self {
            Refusal::TooLarge => "too_large",
            Refusal::Malformed => "malformed",
            Refusal::WrongSchema => "wrong_schema",
            Refusal::WrongSite => "wrong_site",
            Refusal::WrongTopic => "wrong_topic",
            Refusal::UnknownPeer => "unknown_peer",
            Refusal::UnknownKey => "unknown_key",
            Refusal::BadMac => "bad_mac",
            Refusal::TooOld => "too_old",
            Refusal::Future => "future",
            Refusal::Rate => "rate",
            Refusal::LedgerFull => "ledger_full",
            Refusal::Busy => "busy",
        }
    }
}

/// What a sighting from the network is checked against.
#[derive(Debug, Clone)]
pub struct Checks<'a> {
    /// Our site.
    pub site_id: &'a str,
    /// Appliances whose sightings are folded.
    pub peers: &'a [String],
    /// The keys accepted.
    pub keys: &'a SiteKeys,
    /// The split-shipment window: older sightings count for nothing.
    pub window: Duration,
    /// Our clock.
    pub now: SystemTime,
}

/// A peer's sighting that passed every check, ready for the ledger.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verified {
    /// The sighting's id (idempotence).
    pub sighting_id: String,
    /// The appliance that saw the parcel.
    pub appliance_id: String,
    /// The sender's pseudonym (under the key `key_id` names).
    pub sender_key: String,
    /// The category.
    pub category: Category,
    /// When the parcel entered there.
    pub at: SystemTime,
}

fn is_hex(s: &str, len: usize) -> bool {
    s.len() == len
        && s.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

fn is_id(s: &str) -> bool {
    (1..=64).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// Checks a sighting that came on the topic of `topic_appliance`: size, shape, schema, site,
/// topic, peer list, key, mac and window, in that order (the cheap checks first, and nothing
/// is believed before the mac verifies).
pub fn check(topic_appliance: &str, bytes: &[u8], c: &Checks<'_>) -> Result<Verified, Refusal> {
    if bytes.len() > MAX_BYTES {
        return Err(Refusal::TooLarge);
    }
    let s: Sighting = serde_json::from_slice(bytes).map_err(|_| Refusal::Malformed)?;
    if s.schema != SCHEMA {
        return Err(Refusal::WrongSchema);
    }
    let category = Category::from_key(&s.category);
    let shaped = is_id(&s.appliance_id)
        && is_id(&s.line_id)
        && s.sighting_id
            .strip_prefix("sgt-")
            .is_some_and(|h| is_hex(h, 32))
        && is_hex(&s.key_id, 8)
        && is_hex(&s.sender_key, 64)
        && is_hex(&s.mac, 64);
    let (Some(category), true) = (category, shaped) else {
        return Err(Refusal::Malformed);
    };
    let at = crate::time_fmt::parse(&s.at).map_err(|_| Refusal::Malformed)?;
    if s.site_id != c.site_id {
        return Err(Refusal::WrongSite);
    }
    if s.appliance_id != topic_appliance {
        return Err(Refusal::WrongTopic);
    }
    if !c.peers.contains(&s.appliance_id) {
        return Err(Refusal::UnknownPeer);
    }
    let key = c.keys.by_id(&s.key_id).ok_or(Refusal::UnknownKey)?;
    let expected = key.mac(&s.canonical());
    // Compared in constant time: the mac is the only thing an impostor cannot make.
    let same = expected.len() == s.mac.len()
        && expected
            .bytes()
            .zip(s.mac.bytes())
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0;
    if !same {
        return Err(Refusal::BadMac);
    }
    match c.now.duration_since(at) {
        Ok(age) if age > c.window => return Err(Refusal::TooOld),
        Err(ahead) if ahead.duration() > MAX_FUTURE => return Err(Refusal::Future),
        _ => {}
    }
    Ok(Verified {
        sighting_id: s.sighting_id,
        appliance_id: s.appliance_id,
        sender_key: s.sender_key,
        category,
        at,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys(seed: u8) -> SiteKeys {
        SiteKeys::new(SiteKey::new(vec![seed; 32]).expect("key"), Vec::new())
    }

    fn seen(at: SystemTime) -> Seen {
        let k = keys(1);
        Seen {
            identities: k.sender_keys("11010519491231002X"),
            category: Category::Electronics,
            at,
            line_id: "L1".into(),
            parcel: "0001764000000000-L1-7".into(),
        }
    }

    fn checks<'a>(keys: &'a SiteKeys, peers: &'a [String], now: SystemTime) -> Checks<'a> {
        Checks {
            site_id: "S1",
            peers,
            keys,
            window: Duration::from_secs(3600),
            now,
        }
    }

    #[test]
    fn a_signed_sighting_verifies_and_carries_no_identity() {
        let now = SystemTime::now();
        let k = keys(1);
        let s = Sighting::signed(&k, "S1", "a2", &seen(now));
        let bytes = s.to_vec();
        assert!(bytes.len() < MAX_BYTES / 2, "{}", bytes.len());
        let text = String::from_utf8(bytes.clone()).expect("utf-8");
        assert!(!text.contains("1101051949"), "{text}");
        let peers = vec!["a2".to_owned()];
        let v = check("a2", &bytes, &checks(&k, &peers, now)).expect("verifies");
        assert_eq!(v.sender_key, k.current().sender_key("11010519491231002X"));
        assert_eq!(v.category, Category::Electronics);
        // The same parcel gives the same id; another parcel another.
        assert_eq!(
            Sighting::signed(&k, "S1", "a2", &seen(now)).sighting_id,
            s.sighting_id
        );
        let mut other = seen(now);
        other.parcel = "0001764000000000-L1-8".into();
        assert_ne!(
            Sighting::signed(&k, "S1", "a2", &other).sighting_id,
            s.sighting_id
        );
    }

    #[test]
    fn every_tampering_is_refused_with_its_reason() {
        let now = SystemTime::now();
        let k = keys(1);
        let peers = vec!["a2".to_owned()];
        let c = checks(&k, &peers, now);
        let good = Sighting::signed(&k, "S1", "a2", &seen(now));
        let refused = |s: &Sighting, topic: &str| check(topic, &s.to_vec(), &c).err();
        let mut s = good.clone();
        s.category = "food".into();
        assert_eq!(refused(&s, "a2"), Some(Refusal::BadMac));
        let mut s = good.clone();
        s.sender_key = "0".repeat(64);
        assert_eq!(refused(&s, "a2"), Some(Refusal::BadMac));
        assert_eq!(refused(&good, "a3"), Some(Refusal::WrongTopic));
        let mut s = good.clone();
        s.site_id = "S2".into();
        assert_eq!(refused(&s, "a2"), Some(Refusal::WrongSite));
        let mut s = good.clone();
        s.schema = "screenline.sighting.v2".into();
        assert_eq!(refused(&s, "a2"), Some(Refusal::WrongSchema));
        let stranger = Sighting::signed(&k, "S1", "a9", &seen(now));
        assert_eq!(refused(&stranger, "a9"), Some(Refusal::UnknownPeer));
        let impostor = Sighting::signed(&keys(2), "S1", "a2", &seen(now));
        assert_eq!(refused(&impostor, "a2"), Some(Refusal::UnknownKey));
        let old = Sighting::signed(&k, "S1", "a2", &seen(now - Duration::from_secs(7200)));
        assert_eq!(refused(&old, "a2"), Some(Refusal::TooOld));
        let ahead = Sighting::signed(&k, "S1", "a2", &seen(now + Duration::from_secs(600)));
        assert_eq!(refused(&ahead, "a2"), Some(Refusal::Future));
        assert_eq!(check("a2", b"{", &c).err(), Some(Refusal::Malformed));
        assert_eq!(
            check("a2", &[b' '; 2000], &c).err(),
            Some(Refusal::TooLarge)
        );
        let mut v = serde_json::to_value(&good).expect("json");
        v["name"] = "张三".into();
        assert_eq!(
            check("a2", v.to_string().as_bytes(), &c).err(),
            Some(Refusal::Malformed),
            "no field beyond the schema's"
        );
    }

    #[test]
    fn during_a_rotation_both_keys_verify() {
        let now = SystemTime::now();
        let old = SiteKey::new(vec![1; 32]).expect("key");
        let new = SiteKey::new(vec![2; 32]).expect("key");
        let rotating = SiteKeys::new(new.clone(), vec![old.clone()]);
        let peers = vec!["a2".to_owned()];
        let c = checks(&rotating, &peers, now);
        for signer in [SiteKeys::new(old, vec![]), SiteKeys::new(new, vec![])] {
            let s = Sighting::signed(&signer, "S1", "a2", &seen(now));
            assert!(check("a2", &s.to_vec(), &c).is_ok());
        }
        assert_eq!(rotating.sender_keys("X").len(), 2);
    }

    #[test]
    fn keys_are_checked() {
        assert_eq!(
            SiteKey::new(vec![0; 16]).err(),
            Some(KeyError::TooShort(16))
        );
        assert_eq!(
            SiteKey::from_base64("not base64!").err(),
            Some(KeyError::NotBase64)
        );
        let k =
            SiteKey::from_base64("AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=\n").expect("key");
        assert_eq!(k.id().len(), 8);
        assert!(!format!("{k:?}").contains("AAEC"));
    }
}
