//! [`KeyHash`]: the SHA-256 of a gateway or management key, the only form in
//! which the proxy keeps a key.

use std::fmt;

use sha2::{Digest, Sha256};

/// The SHA-256 digest of a gateway API key: the registry's map key.
///
/// Comparing fixed-size digests through a hash map, rather than raw key strings,
/// keeps raw keys out of memory beyond the request that carried them.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct KeyHash(pub [u8; 32]);

impl KeyHash {
    /// Hashes raw key bytes.
    pub fn of(raw: &[u8]) -> Self {
        KeyHash(Sha256::digest(raw).into())
    }

    /// Parses 64 lowercase hex characters; anything else is `None`.
    pub fn from_hex(text: &str) -> Option<Self> {
        if !text.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
            return None;
        }
        let mut out = [0u8; 32];
        hex::decode_to_slice(text, &mut out).ok()?;
        Some(KeyHash(out))
    }

    /// The lowercase hex form, as written in configs.
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }

    /// The first 8 hex characters: enough to tell keys apart in logs.
    pub fn short(&self) -> String {
        hex::encode(&self.0[..4])
    }
}

impl fmt::Debug for KeyHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "KeyHash({}…)", self.short())
    }
}

impl fmt::Display for KeyHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hash_is_sha256_lowercase_hex() {
        // echo -n "abc" | sha256sum
        assert_eq!(
            KeyHash::of(b"abc").to_hex(),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        let h = KeyHash::of(b"abc");
        assert_eq!(KeyHash::from_hex(&h.to_hex()), Some(h));
        assert_eq!(h.short(), "ba7816bf");
        assert!(!format!("{h:?}").contains(&h.to_hex()));
    }

    #[test]
    fn from_hex_rejects_anything_but_64_lowercase_hex() {
        let good = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad";
        for bad in [
            "",
            &good[..63],
            &format!("{good}0"),
            &good.to_uppercase(),
            &good.replace('b', "g"),
            &format!(" {}", &good[1..]),
        ] {
            assert_eq!(KeyHash::from_hex(bad), None, "{bad:?}");
        }
    }
}
