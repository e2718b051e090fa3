//! `[server.tls]` and `[admin.tls]`: the certificate a listener serves,
//! read from PEM files and checked to be usable before anything is served.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::sign::CertifiedKey;
use serde::Deserialize;

/// A listener's certificate files, and what they held when last read.
#[derive(Clone)]
pub struct TlsConfig {
    /// The certificate chain (PEM), leaf first.
    pub cert_file: PathBuf,
    /// The private key (PEM: PKCS#8, PKCS#1 or SEC1).
    pub key_file: PathBuf,
    /// The chain and key as read at load time.
    pub certified: Arc<CertifiedKey>,
}

impl PartialEq for TlsConfig {
    /// The same files: their content is followed while serving.
    fn eq(&self, other: &Self) -> bool {
        self.cert_file == other.cert_file && self.key_file == other.key_file
    }
}

impl Eq for TlsConfig {}

impl fmt::Debug for TlsConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TlsConfig")
            .field("cert_file", &self.cert_file)
            .field("key_file", &self.key_file)
            .finish_non_exhaustive()
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawTls {
    cert_file: PathBuf,
    key_file: PathBuf,
}

impl RawTls {
    /// The files, read and checked; `Err((field, message))` names the
    /// field (relative to the table) that is wrong.
    pub(super) fn validate(&self) -> Result<TlsConfig, (&'static str, String)> {
        let certified = load(&self.cert_file, &self.key_file)?;
        Ok(TlsConfig {
            cert_file: self.cert_file.clone(),
            key_file: self.key_file.clone(),
            certified: Arc::new(certified),
        })
    }
}

/// Reads a certificate chain and its private key. Errors name the file and
/// never quote its content.
pub(crate) fn load(cert: &Path, key: &Path) -> Result<CertifiedKey, (&'static str, String)> {
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .and_then(|certs| certs.collect::<Result<_, _>>())
        .map_err(|e| ("cert_file", pem_error(cert, &e, "certificate")))?;
    if chain.is_empty() {
        return Err((
            "cert_file",
            format!("{} holds no PEM certificate", cert.display()),
        ));
    }
    let der = PrivateKeyDer::from_pem_file(key)
        .map_err(|e| ("key_file", pem_error(key, &e, "private key")))?;
    let signer = rustls::crypto::ring::sign::any_supported_type(&der).map_err(|_| {
        (
            "key_file",
            format!(
                "{} holds a private key of a kind rustls cannot sign with (use RSA, ECDSA P-256/P-384 or Ed25519)",
                key.display()
            ),
        )
    })?;
    let certified = CertifiedKey::new(chain, signer);
    certified.keys_match().map_err(|_| {
        (
            "key_file",
            format!(
                "{} is not the key of the first certificate in {}",
                key.display(),
                cert.display()
            ),
        )
    })?;
    Ok(certified)
}

/// A PEM reading error in words that never include the file's bytes.
fn pem_error(path: &Path, e: &rustls::pki_types::pem::Error, what: &str) -> String {
    use rustls::pki_types::pem::Error;
    match e {
        Error::Io(io) => format!("cannot read {}: {io}", path.display()),
        Error::NoItemsFound => format!("{} holds no PEM {what}", path.display()),
        _ => format!("{} is not a valid PEM {what} file", path.display()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture(name: &str) -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures")
            .join(name)
    }

    #[test]
    fn the_fixture_pair_loads() {
        let c = load(&fixture("upstream.pem"), &fixture("upstream.key"));
        assert!(c.is_ok());
    }

    #[test]
    fn each_bad_file_names_its_field_and_never_its_content() {
        let dir = tempfile::tempdir().unwrap();
        let write = |name: &str, text: &str| {
            let p = dir.path().join(name);
            std::fs::write(&p, text).unwrap();
            p
        };
        let garbage = write(
            "garbage.pem",
            "-----BEGIN PRIVATE KEY-----\nc2VjcmV0LWtleS1ieXRlcw==!!\n-----END PRIVATE KEY-----\n",
        );
        let empty = write("empty.pem", "");
        let other_key = write(
            "other.key",
            &std::fs::read_to_string(fixture("second.key")).unwrap(),
        );
        let cert = fixture("upstream.pem");
        let key = fixture("upstream.key");
        let missing = dir.path().join("missing.pem");
        for (c, k, field, says) in [
            (&missing, &key, "cert_file", "cannot read"),
            (&empty, &key, "cert_file", "holds no PEM certificate"),
            (&cert, &missing, "key_file", "cannot read"),
            (&cert, &empty, "key_file", "holds no PEM private key"),
            (&cert, &garbage, "key_file", "not a valid PEM private key"),
            (&cert, &cert, "key_file", "holds no PEM private key"),
            (
                &cert,
                &other_key,
                "key_file",
                "is not the key of the first certificate",
            ),
        ] {
            let Err((f, msg)) = load(c, k) else {
                panic!("{c:?} {k:?} loaded")
            };
            assert_eq!(f, field, "{msg}");
            assert!(msg.contains(says), "{msg}");
            assert!(!msg.contains("c2VjcmV0"), "{msg}");
        }
    }
}
