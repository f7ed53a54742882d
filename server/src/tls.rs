//! TLS on the relay's own address (`--tls-cert`, `--tls-key`): `https://` for the page and
//! `wss://` for the WebSocket, with rustls on the *ring* crypto provider.
//!
//! A connection's TLS handshake runs in the accept loop ([`crate::http`]) under the same
//! deadline as an HTTP request head; a client that speaks plain HTTP to the TLS port gets a
//! plain-text `400` saying so and a closed connection. Once such a connection is upgraded
//! to a WebSocket, a pump task ([`pipe`]) moves bytes between the TLS stream and one end of
//! a local socket pair, and the relay frames the WebSocket on the other end like any TCP
//! socket: the framing, the outbox and their wakeup arguments stay as they are. The cost is
//! a task, two descriptors and a copy each way per TLS WebSocket.
//!
//! The certificate and key are read at start and again on [`Certs::reload`] (SIGHUP):
//! each new handshake takes whichever pair is current, connections already open keep
//! theirs, and a pair that fails to load leaves the previous one in place.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::net::{TcpStream, UnixStream};
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;

/// Why a certificate and key could not be used. Names the flag and the file; never shows
/// key material.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A file could not be read or holds no PEM of the kind expected.
    #[error("{flag}: cannot use {path}: {problem}")]
    File {
        flag: &'static str,
        path: String,
        problem: String,
    },
    /// The key is not one the crypto provider can sign with, or does not belong to the
    /// certificate.
    #[error("--tls-key: {path} does not fit the certificate in {cert}: {problem}")]
    Key {
        path: String,
        cert: String,
        problem: String,
    },
    /// The crypto provider cannot make a server configuration (it lacks the protocol
    /// versions the relay offers).
    #[error("cannot set up TLS: {0}")]
    Setup(rustls::Error),
}

/// The relay's certificate chain and key, reloadable.
#[derive(Debug)]
pub struct Certs {
    cert_path: PathBuf,
    key_path: PathBuf,
    current: RwLock<Arc<CertifiedKey>>,
}

impl Certs {
    /// Reads the PEM certificate chain at `cert_path` and the PEM private key at
    /// `key_path`, checking that they belong together.
    pub fn load(cert_path: &Path, key_path: &Path) -> Result<Arc<Self>, TlsError> {
        let current = read_pair(cert_path, key_path)?;
        Ok(Arc::new(Self {
            cert_path: cert_path.to_owned(),
            key_path: key_path.to_owned(),
            current: RwLock::new(current),
        }))
    }

    /// Reads both files again. New handshakes use the new pair; on an error the previous
    /// pair stays.
    pub fn reload(&self) -> Result<(), TlsError> {
        let fresh = read_pair(&self.cert_path, &self.key_path)?;
        *self.current.write().unwrap_or_else(|p| p.into_inner()) = fresh;
        Ok(())
    }

    /// Accepts TLS connections with these certificates, offering HTTP/1.1.
    pub fn acceptor(self: &Arc<Self>) -> Result<TlsAcceptor, TlsError> {
        let mut config = rustls::ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(TlsError::Setup)?
            .with_no_client_auth()
            .with_cert_resolver(self.clone());
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(TlsAcceptor::from(Arc::new(config)))
    }
}

impl ResolvesServerCert for Certs {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(
            self.current
                .read()
                .unwrap_or_else(|p| p.into_inner())
                .clone(),
        )
    }
}

/// *ring*: it builds from crates.io with the C compiler Rust builds already need, where
/// aws-lc-rs (rustls's default) also wants CMake on some targets.
fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn read_pair(cert_path: &Path, key_path: &Path) -> Result<Arc<CertifiedKey>, TlsError> {
    let file_error = |flag, path: &Path, problem: String| TlsError::File {
        flag,
        path: path.display().to_string(),
        problem,
    };
    let chain = CertificateDer::pem_file_iter(cert_path)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .map_err(|e| file_error("--tls-cert", cert_path, e.to_string()))?;
    if chain.is_empty() {
        return Err(file_error(
            "--tls-cert",
            cert_path,
            "no CERTIFICATE in it".into(),
        ));
    }
    // The error of a key file is told without its contents.
    let key = PrivateKeyDer::from_pem_file(key_path).map_err(|e| {
        let problem = match e {
            rustls::pki_types::pem::Error::NoItemsFound => "no PRIVATE KEY in it".to_owned(),
            rustls::pki_types::pem::Error::Io(io) => io.to_string(),
            _ => "not a PEM private key".to_owned(),
        };
        file_error("--tls-key", key_path, problem)
    })?;
    let pair = CertifiedKey::from_der(chain, key, &provider()).map_err(|e| TlsError::Key {
        path: key_path.display().to_string(),
        cert: cert_path.display().to_string(),
        problem: e.to_string(),
    })?;
    Ok(Arc::new(pair))
}

/// The first byte of a TLS handshake record.
const HANDSHAKE_RECORD: u8 = 0x16;

/// Completes the TLS handshake on `stream`, or answers a client that spoke plain HTTP
/// with a `400` and closes. `None` when there is no TLS connection to serve.
pub async fn handshake(acceptor: &TlsAcceptor, stream: TcpStream) -> Option<TlsStream<TcpStream>> {
    let mut first = [0u8; 1];
    match stream.peek(&mut first).await {
        Ok(1) if first[0] == HANDSHAKE_RECORD => {}
        Ok(1) => {
            refuse_plain(stream).await;
            return None;
        }
        _ => return None,
    }
    match acceptor.accept(stream).await {
        Ok(tls) => Some(tls),
        Err(error) => {
            tracing::debug!(%error, "TLS handshake failed");
            None
        }
    }
}

/// Tells a plain-HTTP client that this port speaks TLS.
async fn refuse_plain(mut stream: TcpStream) {
    const BODY: &str = "this port speaks TLS: use https:// or wss://\n";
    let response = format!(
        "HTTP/1.1 400 Bad Request\r\ncontent-type: text/plain\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{BODY}",
        BODY.len()
    );
    tracing::debug!("refused plain HTTP on the TLS port");
    let _ = stream.write_all(response.as_bytes()).await;
    let _ = stream.shutdown().await;
    // Read what the client sent until it closes (briefly), so that closing with unread
    // bytes does not reset the connection before the client has read the answer.
    let _ = tokio::time::timeout(LINGER, async {
        let mut sink = [0u8; 1024];
        while matches!(stream.read(&mut sink).await, Ok(1..)) {}
    })
    .await;
}

/// How long the pump keeps reading from a client once the relay has finished with the
/// connection (the relay's own drain after its close frame is as long).
const LINGER: Duration = Duration::from_secs(2);

/// Bytes the pump moves at once, each way.
const PUMP_BUFFER: usize = 4096;

/// Hands an upgraded TLS connection to a pump task and returns the relay's end of the
/// socket pair it pumps through.
pub fn pipe<S>(tls: S) -> io::Result<UnixStream>
where
    S: AsyncRead + AsyncWrite + Send + 'static,
{
    let (relay_end, pump_end) = UnixStream::pair()?;
    tokio::spawn(pump(tls, pump_end));
    Ok(relay_end)
}

/// Copies the client's decrypted bytes to the relay and the relay's bytes to the client,
/// passing each end of stream on. `copy_buf` flushes its writer whenever its reader has
/// nothing more for now, so ciphertext the socket did not take at once never waits in the
/// TLS session for a write that may not come. Once the relay has finished (its end closed), the
/// client gets `close_notify` and [`LINGER`] to close too.
async fn pump<S>(tls: S, pipe: UnixStream)
where
    S: AsyncRead + AsyncWrite + Send + 'static,
{
    let (tls_in, mut tls_out) = tokio::io::split(tls);
    let (pipe_in, mut pipe_out) = pipe.into_split();
    // Signaling frames are small: buffers smaller than `copy`'s 8 KiB keep an idle
    // connection cheap, and a larger frame only takes more than one pass.
    let mut tls_in = BufReader::with_capacity(PUMP_BUFFER, tls_in);
    let mut pipe_in = BufReader::with_capacity(PUMP_BUFFER, pipe_in);
    let inbound = async {
        let _ = tokio::io::copy_buf(&mut tls_in, &mut pipe_out).await;
        let _ = pipe_out.shutdown().await;
    };
    let outbound = async {
        let _ = tokio::io::copy_buf(&mut pipe_in, &mut tls_out).await;
        let _ = tls_out.shutdown().await;
    };
    tokio::pin!(inbound, outbound);
    tokio::select! {
        () = &mut outbound => {
            let _ = tokio::time::timeout(LINGER, inbound).await;
        }
        () = &mut inbound => outbound.await,
    }
}
