//! TLS: a `wss://` client and a self-signed certificate made for one test.

use std::net::SocketAddr;

use anyhow::Result;

use crate::Client;

/// A `wss://` client of the relay at `addr` that trusts `root` and nothing else.
pub async fn tls_client_at(addr: SocketAddr, root: &TestCert) -> Result<Client> {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(root.der.clone())?;
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
    let connector = tokio_tungstenite::Connector::Rustls(std::sync::Arc::new(config));
    let url = format!("wss://localhost:{}/ws", addr.port());
    let (ws, _) =
        tokio_tungstenite::connect_async_tls_with_config(url, None, true, Some(connector)).await?;
    Ok(Client { ws })
}

/// A self-signed certificate for `localhost` and 127.0.0.1, made for one test.
pub struct TestCert {
    pub cert_pem: String,
    pub key_pem: String,
    pub der: rustls::pki_types::CertificateDer<'static>,
}

impl TestCert {
    pub fn new() -> Result<Self> {
        let rcgen::CertifiedKey { cert, key_pair } =
            rcgen::generate_simple_self_signed(["localhost".to_owned(), "127.0.0.1".to_owned()])?;
        Ok(Self {
            cert_pem: cert.pem(),
            key_pem: key_pair.serialize_pem(),
            der: cert.der().clone(),
        })
    }

    /// Writes `cert.pem` and `key.pem` into `dir`; returns their paths.
    pub fn write(&self, dir: &std::path::Path) -> Result<(std::path::PathBuf, std::path::PathBuf)> {
        let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
        std::fs::write(&cert, &self.cert_pem)?;
        std::fs::write(&key, &self.key_pem)?;
        Ok((cert, key))
    }
}
