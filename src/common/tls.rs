//! The TLS client settings every outbound connection uses.

use std::sync::Arc;

use rustls::pki_types::CertificateDer;

/// The proxy's TLS client settings (rustls with ring): certificates verified
/// against the webpki (Mozilla) roots plus `extra_roots`. Upstreams and the
/// Postgres store alike.
pub(crate) fn client_tls(
    extra_roots: &[CertificateDer<'static>],
) -> Result<rustls::ClientConfig, rustls::Error> {
    let mut roots = rustls::RootCertStore::empty();
    roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    for cert in extra_roots {
        roots.add(cert.clone())?;
    }
    Ok(rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()?
    .with_root_certificates(roots)
    .with_no_client_auth())
}
