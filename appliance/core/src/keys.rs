//! Keyed hashing of personal data: what must be matched later (split shipments,
//! watch-lists) is kept only as an HMAC under a secret key, never as the plain value.

use hmac::{Hmac, Mac};
use sha2::Sha256;

/// HMAC-SHA-256 under a secret key (the store's): personal data that must be matched later
/// (split shipments, watch-lists) without being kept.
#[derive(Clone)]
pub struct KeyedHasher {
    key: Vec<u8>,
}

impl KeyedHasher {
    /// A hasher with this key.
    pub fn new(key: Vec<u8>) -> KeyedHasher {
        KeyedHasher { key }
    }

    /// A hasher with a fresh random key (offline screening).
    pub fn random() -> KeyedHasher {
        KeyedHasher::new(rand::random::<[u8; 32]>().to_vec())
    }

    /// The keyed hash of `value`, hex.
    pub fn hash(&self, value: &str) -> String {
        let mut mac = Hmac::<Sha256>::new_from_slice(&self.key)
            .unwrap_or_else(|_| unreachable!("HMAC takes keys of any length"));
        mac.update(value.as_bytes());
        hex::encode(mac.finalize().into_bytes())
    }
}

impl std::fmt::Debug for KeyedHasher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("KeyedHasher(…)")
    }
}
