//! Secrets at rest: AES-256-GCM under a master key from the environment.
//!
//! `BYOK_MASTER_KEY` is 64 hex characters (32 bytes). Every sealed secret has
//! its own random 96-bit nonce and is bound by the associated data ([`Aad`])
//! to what its row says about where and for whom it is used (the store's
//! `seal` module decides which fields), so a ciphertext copied onto another
//! row, or left on a row whose upstream was changed, does not open.
//! Each row stores the id of the key that sealed it (the first 16 hex of the
//! key's SHA-256), so a key can be rotated: set the new key as
//! `BYOK_MASTER_KEY` and the old one as `BYOK_MASTER_KEY_PREVIOUS`; rows sealed
//! with the old key still open, and are re-sealed with the new one at start
//! or by `byok-proxy reseal`.

use std::fmt;

use aes_gcm::aead::{Aead, AeadCore, KeyInit, OsRng, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

/// The environment variable holding the master key.
pub(crate) const MASTER_KEY_ENV: &str = "BYOK_MASTER_KEY";
/// The environment variable holding the previous master key, during rotation.
pub(crate) const PREVIOUS_MASTER_KEY_ENV: &str = "BYOK_MASTER_KEY_PREVIOUS";

/// Why a secret could not be sealed or opened.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CryptoError {
    /// The master key variable is unset.
    #[error(
        "{0} is not set: a database store keeps secrets encrypted under it (64 hex characters)"
    )]
    MissingKey(&'static str),
    /// The master key is not 64 hex characters.
    #[error("{0} must be 64 hex characters (32 bytes)")]
    BadKey(&'static str),
    /// A row was sealed with a key that is neither the current nor the previous one.
    #[error("a secret was sealed with master key {0}, which is neither {MASTER_KEY_ENV} nor {PREVIOUS_MASTER_KEY_ENV}")]
    UnknownKeyId(String),
    /// The ciphertext does not open: tampered with, moved to another row,
    /// its row's bound fields changed, or a wrong key.
    #[error(
        "its secret does not open: its provider, base_url, workspace or allowlists were changed outside the proxy, or the ciphertext was tampered with or copied from another row; it is not used"
    )]
    Corrupt,
}

/// Associated data made of fields, encoded so that no two lists of fields
/// give the same bytes: every field is its length (8 bytes, big-endian) and
/// its bytes; an optional field is a byte 0 (absent) or 1 and the field; a
/// list, a presence byte, its length and its entries. The first field is a
/// tag naming the layout and its version.
#[derive(Clone, PartialEq, Eq)]
pub(crate) struct Aad(Vec<u8>);

impl fmt::Debug for Aad {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Aad")
            .field("len", &self.0.len())
            .finish_non_exhaustive()
    }
}

impl Aad {
    /// Starts with `tag`, which names the layout and its version.
    pub(crate) fn new(tag: &str) -> Aad {
        let mut aad = Aad(Vec::with_capacity(256));
        aad.field(tag.as_bytes());
        aad
    }

    fn len(&mut self, n: usize) {
        self.0.extend_from_slice(&(n as u64).to_be_bytes());
    }

    /// One field.
    pub(crate) fn field(&mut self, bytes: &[u8]) -> &mut Aad {
        self.len(bytes.len());
        self.0.extend_from_slice(bytes);
        self
    }

    /// A field that may be absent (absent is not the empty field).
    pub(crate) fn optional(&mut self, bytes: Option<&[u8]>) -> &mut Aad {
        match bytes {
            None => self.0.push(0),
            Some(b) => {
                self.0.push(1);
                self.field(b);
            }
        }
        self
    }

    /// A list that may be absent (absent is not the empty list).
    pub(crate) fn list<'a, I>(&mut self, entries: Option<I>) -> &mut Aad
    where
        I: ExactSizeIterator<Item = &'a [u8]>,
    {
        match entries {
            None => self.0.push(0),
            Some(entries) => {
                self.0.push(1);
                self.len(entries.len());
                for e in entries {
                    self.field(e);
                }
            }
        }
        self
    }

    /// The encoded bytes.
    pub(crate) fn as_bytes(&self) -> &[u8] {
        &self.0
    }
}

/// A sealed secret, as stored.
#[derive(Clone, PartialEq, Eq)]
pub(crate) struct Sealed {
    /// Which master key sealed it.
    pub key_id: String,
    /// The 96-bit nonce.
    pub nonce: Vec<u8>,
    /// Ciphertext and tag.
    pub ciphertext: Vec<u8>,
}

impl fmt::Debug for Sealed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Sealed")
            .field("key_id", &self.key_id)
            .finish_non_exhaustive()
    }
}

struct MasterKey {
    id: String,
    cipher: Aes256Gcm,
}

impl MasterKey {
    fn from_hex(var: &'static str, hex: &str) -> Result<Self, CryptoError> {
        let hex = hex.trim();
        if hex.len() != 64 {
            return Err(CryptoError::BadKey(var));
        }
        let mut bytes = Zeroizing::new([0u8; 32]);
        hex::decode_to_slice(hex, &mut bytes[..]).map_err(|_| CryptoError::BadKey(var))?;
        let digest = Sha256::digest(&bytes[..]);
        let id = hex::encode(&digest[..8]);
        let cipher = Aes256Gcm::new_from_slice(&bytes[..]).map_err(|_| CryptoError::BadKey(var))?;
        Ok(MasterKey { id, cipher })
    }
}

/// The current master key, and the previous one during a rotation.
pub(crate) struct Keyring {
    current: MasterKey,
    previous: Option<MasterKey>,
}

impl fmt::Debug for Keyring {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Keyring")
            .field("current", &self.current.id)
            .field("previous", &self.previous.as_ref().map(|k| &k.id))
            .finish()
    }
}

impl Keyring {
    /// From `BYOK_MASTER_KEY` (required) and `BYOK_MASTER_KEY_PREVIOUS` (optional).
    pub(crate) fn from_env() -> Result<Keyring, CryptoError> {
        let current = Zeroizing::new(
            std::env::var(MASTER_KEY_ENV).map_err(|_| CryptoError::MissingKey(MASTER_KEY_ENV))?,
        );
        let previous = std::env::var(PREVIOUS_MASTER_KEY_ENV)
            .ok()
            .map(Zeroizing::new);
        Keyring::from_hex(&current, previous.as_deref().map(String::as_str))
    }

    /// From hex strings (64 hex characters each).
    pub(crate) fn from_hex(current: &str, previous: Option<&str>) -> Result<Keyring, CryptoError> {
        Ok(Keyring {
            current: MasterKey::from_hex(MASTER_KEY_ENV, current)?,
            previous: previous
                .map(|p| MasterKey::from_hex(PREVIOUS_MASTER_KEY_ENV, p))
                .transpose()?,
        })
    }

    /// Seals `plaintext`, bound to `aad`, with a fresh nonce.
    pub(crate) fn seal(&self, plaintext: &[u8], aad: &[u8]) -> Sealed {
        let nonce = Aes256Gcm::generate_nonce(&mut OsRng);
        // Encryption of an in-memory buffer only fails on absurd lengths
        // (beyond 64 GiB), which a secret never has.
        let ciphertext = self
            .current
            .cipher
            .encrypt(
                &nonce,
                Payload {
                    msg: plaintext,
                    aad,
                },
            )
            .unwrap_or_default();
        Sealed {
            key_id: self.current.id.clone(),
            nonce: nonce.to_vec(),
            ciphertext,
        }
    }

    /// Opens a sealed secret with whichever key sealed it.
    pub(crate) fn open(
        &self,
        sealed: &Sealed,
        aad: &[u8],
    ) -> Result<Zeroizing<Vec<u8>>, CryptoError> {
        let key = if sealed.key_id == self.current.id {
            &self.current
        } else {
            self.previous
                .as_ref()
                .filter(|k| k.id == sealed.key_id)
                .ok_or_else(|| CryptoError::UnknownKeyId(sealed.key_id.clone()))?
        };
        if sealed.nonce.len() != 12 {
            return Err(CryptoError::Corrupt);
        }
        let nonce = Nonce::from_slice(&sealed.nonce);
        key.cipher
            .decrypt(
                nonce,
                Payload {
                    msg: &sealed.ciphertext,
                    aad,
                },
            )
            .map(Zeroizing::new)
            .map_err(|_| CryptoError::Corrupt)
    }

    /// Whether a row must be re-sealed under the current key.
    pub(crate) fn is_stale(&self, sealed: &Sealed) -> bool {
        sealed.key_id != self.current.id
    }

    /// The id of the current key (never the key).
    pub(crate) fn current_id(&self) -> &str {
        &self.current.id
    }

    /// The id of the previous key, during a rotation.
    pub(crate) fn previous_id(&self) -> Option<&str> {
        self.previous.as_ref().map(|k| &*k.id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const K1: &str = "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f";
    const K2: &str = "1f1e1d1c1b1a191817161514131211100f0e0d0c0b0a09080706050403020100";

    #[test]
    fn seal_open_round_trip_with_fresh_nonces() {
        let ring = Keyring::from_hex(K1, None).unwrap();
        let a = ring.seal(b"sk-secret", b"cred-1");
        let b = ring.seal(b"sk-secret", b"cred-1");
        assert_ne!(a.nonce, b.nonce);
        assert_ne!(a.ciphertext, b.ciphertext);
        assert!(!a.ciphertext.windows(9).any(|w| w == b"sk-secret"));
        assert_eq!(&ring.open(&a, b"cred-1").unwrap()[..], b"sk-secret");
        assert!(!format!("{a:?}{ring:?}").contains(K1));
    }

    #[test]
    fn a_secret_moved_to_another_row_or_tampered_does_not_open() {
        let ring = Keyring::from_hex(K1, None).unwrap();
        let mut s = ring.seal(b"sk-secret", b"cred-1");
        assert_eq!(ring.open(&s, b"cred-2"), Err(CryptoError::Corrupt));
        s.ciphertext[0] ^= 1;
        assert_eq!(ring.open(&s, b"cred-1"), Err(CryptoError::Corrupt));
    }

    #[test]
    fn rotation_opens_old_rows_and_marks_them_stale() {
        let old = Keyring::from_hex(K1, None).unwrap();
        let sealed = old.seal(b"sk-old", b"c");
        let new_only = Keyring::from_hex(K2, None).unwrap();
        assert!(matches!(
            new_only.open(&sealed, b"c"),
            Err(CryptoError::UnknownKeyId(_))
        ));
        let rotating = Keyring::from_hex(K2, Some(K1)).unwrap();
        assert!(rotating.is_stale(&sealed));
        assert_eq!(&rotating.open(&sealed, b"c").unwrap()[..], b"sk-old");
        assert!(!rotating.is_stale(&rotating.seal(b"x", b"c")));
    }

    type Build<'a> = &'a dyn Fn(&mut Aad);

    #[test]
    fn aad_encoding_is_unambiguous() {
        let enc = |build: &dyn Fn(&mut Aad)| {
            let mut a = Aad::new("t/v1");
            build(&mut a);
            a.as_bytes().to_vec()
        };
        let pairs: [(Build<'_>, Build<'_>); 5] = [
            (
                &|a| {
                    a.field(b"ab").field(b"c");
                },
                &|a| {
                    a.field(b"a").field(b"bc");
                },
            ),
            (
                &|a| {
                    a.optional(None);
                },
                &|a| {
                    a.optional(Some(b""));
                },
            ),
            (
                &|a| {
                    a.list::<std::iter::Empty<&[u8]>>(None);
                },
                &|a| {
                    a.list(Some(std::iter::empty::<&[u8]>()));
                },
            ),
            (
                &|a| {
                    a.list(Some([&b"a,b"[..]].into_iter()));
                },
                &|a| {
                    a.list(Some([&b"a"[..], b"b"].into_iter()));
                },
            ),
            (
                &|a| {
                    a.optional(Some(b"x")).optional(None);
                },
                &|a| {
                    a.optional(None).optional(Some(b"x"));
                },
            ),
        ];
        for (i, (x, y)) in pairs.iter().enumerate() {
            assert_ne!(enc(*x), enc(*y), "pair {i}");
        }
        assert_ne!(Aad::new("t/v1"), Aad::new("t/v2"));
        assert!(!format!("{:?}", Aad::new("secret-tag")).contains("secret"));
    }

    #[test]
    fn keys_must_be_64_hex() {
        for bad in ["", "00", &K1[..63], &format!("{}zz", &K1[..62])] {
            assert!(
                matches!(Keyring::from_hex(bad, None), Err(CryptoError::BadKey(_))),
                "{bad}"
            );
        }
    }
}
