//! TLS for `/tls/ws` (`/wss`) listeners, from PEM files.
//!
//! Pages served over https can open only `wss://` WebSockets to other hosts, so a public relay
//! needs a certificate. Keys and certificates are checked here, so a bad file is a clear error
//! at start rather than a panic inside the transport.

use std::path::Path;

use anyhow::{bail, Context};
use libp2p::websocket::tls;
use rustls_pki_types::{pem::PemObject, CertificateDer, PrivateKeyDer};

/// Largest PEM file we read.
const MAX_PEM_BYTES: u64 = 1024 * 1024;

fn read_pem(path: &Path) -> anyhow::Result<Vec<u8>> {
    let len = std::fs::metadata(path)
        .with_context(|| format!("reading {}", path.display()))?
        .len();
    if len > MAX_PEM_BYTES {
        bail!(
            "{} is {len} bytes; a PEM file over {MAX_PEM_BYTES} is not accepted",
            path.display()
        );
    }
    Ok(std::fs::read(path)?)
}

/// Loads a certificate chain and its private key (PKCS#8, PKCS#1 or SEC1) from PEM files.
pub fn load(cert: &Path, key: &Path) -> anyhow::Result<tls::Config> {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&read_pem(cert)?)
        .collect::<Result<_, _>>()
        .with_context(|| format!("{}: not a PEM certificate chain", cert.display()))?;
    if certs.is_empty() {
        bail!("{}: no certificate found", cert.display());
    }
    let key_der = PrivateKeyDer::from_pem_slice(&read_pem(key)?)
        .with_context(|| format!("{}: not a PEM private key", key.display()))?;
    let key_bytes = key_der.secret_der().to_vec();
    // `tls::PrivateKey::new` panics on an unknown format; check it the same way first.
    PrivateKeyDer::try_from(key_bytes.clone())
        .map_err(|e| anyhow::anyhow!("{}: unsupported key format: {e}", key.display()))?;
    tls::Config::new(
        tls::PrivateKey::new(key_bytes),
        certs.into_iter().map(|c| tls::Certificate::new(c.to_vec())),
    )
    .map_err(|e| anyhow::anyhow!("certificate and key do not make a TLS config: {e}"))
}

/// Whether a listen address asks for TLS (`/wss` or `/tls/ws`).
pub fn wants_tls(addr: &libp2p::Multiaddr) -> bool {
    use libp2p::multiaddr::Protocol;
    addr.iter()
        .any(|p| matches!(p, Protocol::Wss(_) | Protocol::Tls))
}
