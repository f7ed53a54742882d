//! TLS on the relay's own address (`--tls-cert`, `--tls-key`): `https://` for the page and
//! `wss://` for the WebSocket, with rustls on the *ring* crypto provider.
//!
//! A connection's TLS handshake runs in the accept loop ([`crate::http`]) under the same
//! deadline as an HTTP request head; a client that speaks plain HTTP to the TLS port gets a
//! plain-text `400` saying so and a closed connection. Once such a connection is upgraded
//! to a WebSocket, the relay takes its TCP socket and TLS session back from the HTTP
//! server as a [`TlsSocket`], which the connection's own task reads through and every task
//! that delivers to it writes through: no task, socket pair or copy of its own.
//!
//! The certificate and key are read at start and again on [`Certs::reload`] (SIGHUP):
//! each new handshake takes whichever pair is current, connections already open keep
//! theirs, and a pair that fails to load leaves the previous one in place.

use std::io::{self, Read as _, Write as _};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, RwLock};
use std::time::Duration;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls::ServerConnection;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
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

/// How long a refused plain-HTTP client is read from before its connection closes.
const LINGER: Duration = Duration::from_secs(2);

/// Ciphertext a session holds for its socket at most: one write's worth of records. A
/// write that would encrypt more takes only what fits, and the rest waits in its queue.
const SENDABLE: usize = 16 * 1024;

/// A TLS WebSocket's connection: the client's TCP socket and its TLS session, driven by the
/// tasks that read and write the connection, with no task or socket of its own.
///
/// Its calls mirror a [`TcpStream`]'s non-blocking ones, in plaintext, so that
/// [`crate::stream::Stream`] serves both alike:
///
/// - [`TlsSocket::try_read_buf`] reads ciphertext, decrypts it and appends the plaintext
///   to the caller's buffer. It returns fewer bytes than the buffer had room for (or
///   `WouldBlock`) only after the socket itself had no more (a short read, `WouldBlock`,
///   or its end), with no plaintext left in the session: the same promise a short TCP read
///   makes, which [`crate::ws`]'s readiness argument rests on. Otherwise it stops when the
///   buffer is full and leaves the socket's readiness as it was, so the reader comes back
///   for the rest.
/// - [`TlsSocket::try_write`] first writes ciphertext still waiting from an earlier call and
///   takes nothing while any remains (`WouldBlock`); then it encrypts what fits in
///   [`SENDABLE`] and writes the records in one vectored write. The plaintext it took is
///   gone from the caller's queue, so its ciphertext may still wait: [`TlsSocket::try_flush`]
///   says so (`WouldBlock`) and the caller treats the connection as having bytes waiting
///   (see [`crate::outbox`]).
/// - Reading can make the session want to send (an alert, a key update's answer). The read
///   writes it if the socket takes it, and otherwise raises [`TlsSocket::output_waiting`],
///   for the connection's task to hand to whoever writes the connection.
///
/// Readiness is cleared only by the socket's own `try_read`/`try_write` returning
/// `WouldBlock` (tokio's `try_io`), never by this type.
///
/// The session's lock guards the TLS state; it is taken after an outbox's queue lock, never
/// before, and no other lock is taken under it.
#[derive(Debug)]
pub struct TlsSocket {
    tcp: TcpStream,
    session: Mutex<ServerConnection>,
    /// Ciphertext the session produced while reading waits for the socket: raised and
    /// lowered under the session lock.
    output_waiting: AtomicBool,
}

impl TlsSocket {
    /// Takes over an upgraded connection's TLS stream, with the plaintext its session had
    /// already decrypted and nobody read (bytes the client sent right behind its upgrade
    /// request), to be read before anything else.
    pub fn new(tls: TlsStream<TcpStream>) -> io::Result<(Self, Vec<u8>)> {
        let (tcp, mut session) = tls.into_inner();
        session.set_buffer_limit(Some(SENDABLE));
        let mut early = Vec::new();
        let waiting = session
            .process_new_packets()
            .map_err(invalid)?
            .plaintext_bytes_to_read();
        if waiting > 0 {
            early.resize(waiting, 0);
            session.reader().read_exact(&mut early)?;
        }
        let socket = Self {
            tcp,
            session: Mutex::new(session),
            output_waiting: AtomicBool::new(false),
        };
        Ok((socket, early))
    }

    /// The TCP socket, for waiting on its readiness.
    pub fn tcp(&self) -> &TcpStream {
        &self.tcp
    }

    fn lock(&self) -> MutexGuard<'_, ServerConnection> {
        self.session.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Reads what the socket has, decrypted, into the spare capacity of `buf`, without
    /// waiting. `Ok(0)` once the client has closed (with or without `close_notify`: the
    /// WebSocket's own close handshake says whether it ended cleanly).
    pub fn try_read_buf(&self, buf: &mut Vec<u8>) -> io::Result<usize> {
        let mut session = self.lock();
        let mut read = 0;
        let (mut ended, mut drained) = (false, false);
        loop {
            let state = match session.process_new_packets() {
                Ok(state) => state,
                Err(error) => {
                    // The session queued an alert saying why: it goes if the socket takes it.
                    let _ = self.flush(&mut session);
                    return Err(invalid(error));
                }
            };
            let room = buf.capacity() - buf.len();
            let take = state.plaintext_bytes_to_read().min(room);
            if take > 0 {
                let at = buf.len();
                buf.resize(at + take, 0);
                session.reader().read_exact(&mut buf[at..])?;
                read += take;
            }
            if state.tls_bytes_to_write() > 0 {
                let _ = self.flush(&mut session);
            }
            if take == room || ended || state.peer_has_closed() {
                return Ok(read);
            }
            if drained {
                // The socket had no more: a short read, as from TCP (or none at all).
                return if read > 0 {
                    Ok(read)
                } else {
                    Err(io::ErrorKind::WouldBlock.into())
                };
            }
            let mut socket = Nonblocking::new(&self.tcp);
            match session.read_tls(&mut socket) {
                Ok(0) => ended = true,
                Ok(_) => drained = socket.short,
                Err(error) if error.kind() == io::ErrorKind::WouldBlock && read > 0 => {
                    return Ok(read)
                }
                Err(error) => return Err(error),
            }
        }
    }

    /// Encrypts what fits of `plain` and writes it, after any ciphertext still waiting:
    /// how many plaintext bytes it took, or `WouldBlock` (taking none) while earlier
    /// ciphertext waits.
    pub fn try_write(&self, plain: &[u8]) -> io::Result<usize> {
        let mut session = self.lock();
        self.flush(&mut session)?;
        let taken = session.writer().write(plain)?;
        match self.flush(&mut session) {
            Err(error) if error.kind() != io::ErrorKind::WouldBlock => Err(error),
            _ => Ok(taken),
        }
    }

    /// Writes the ciphertext that waits; `WouldBlock` while some still does.
    pub fn try_flush(&self) -> io::Result<()> {
        self.flush(&mut self.lock())
    }

    /// Whether reading left ciphertext that waits for a write.
    pub fn output_waiting(&self) -> bool {
        self.output_waiting.load(Ordering::Acquire)
    }

    /// Sends `close_notify`, if the socket takes it now: the last bytes before the writing
    /// half closes ([`crate::stream::Stream::shut_writes`]).
    pub fn send_close_notify(&self) {
        let mut session = self.lock();
        session.send_close_notify();
        let _ = self.flush(&mut session);
    }

    fn flush(&self, session: &mut ServerConnection) -> io::Result<()> {
        let result = (|| {
            while session.wants_write() {
                if session.write_tls(&mut Nonblocking::new(&self.tcp))? == 0 {
                    return Err(io::ErrorKind::WriteZero.into());
                }
            }
            Ok(())
        })();
        self.output_waiting
            .store(session.wants_write(), Ordering::Release);
        result
    }
}

/// The socket's non-blocking calls as `Read` and `Write`, for the session: `WouldBlock`
/// clears the readiness it was seen under.
struct Nonblocking<'a> {
    tcp: &'a TcpStream,
    /// Whether a read returned less than it had room for: the socket had no more, and
    /// asking again would only hear `WouldBlock`.
    short: bool,
}

impl<'a> Nonblocking<'a> {
    fn new(tcp: &'a TcpStream) -> Self {
        Self { tcp, short: false }
    }
}

impl io::Read for Nonblocking<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let read = self.tcp.try_read(buf)?;
        self.short = read < buf.len();
        Ok(read)
    }
}

impl io::Write for Nonblocking<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.tcp.try_write(buf)
    }

    fn write_vectored(&mut self, bufs: &[io::IoSlice<'_>]) -> io::Result<usize> {
        self.tcp.try_write_vectored(bufs)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

fn invalid(error: rustls::Error) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, error)
}

/// A TLS connection on loopback for unit tests: the relay's [`TlsSocket`] and a client
/// that reads and writes plaintext without waiting.
#[cfg(test)]
pub(crate) mod testing {
    use std::io::{self, Read as _, Write as _};
    use std::sync::Arc;

    use rustls::pki_types::ServerName;
    use tokio::net::{TcpListener, TcpStream};
    use tokio_rustls::{TlsAcceptor, TlsConnector};

    use super::TlsSocket;

    /// The client's end: its TCP socket (non-blocking) and TLS session.
    pub struct TlsClient {
        tcp: std::net::TcpStream,
        session: rustls::ClientConnection,
    }

    impl TlsClient {
        /// Appends the plaintext that has arrived, without waiting.
        pub fn read(&mut self, plain: &mut Vec<u8>) {
            while let Ok(1..) = self.session.read_tls(&mut self.tcp) {
                self.session.process_new_packets().expect("valid TLS");
                // `WouldBlock` once the session has no more plaintext.
                let _ = self.session.reader().read_to_end(plain);
            }
        }

        /// Encrypts and sends `plain`.
        pub fn write(&mut self, plain: &[u8]) {
            self.session.writer().write_all(plain).expect("taken");
            while self.session.wants_write() {
                match self.session.write_tls(&mut self.tcp) {
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => std::thread::yield_now(),
                    result => {
                        result.expect("the client writes");
                    }
                }
            }
        }
    }

    /// Completes a TLS handshake between the connection `listener` accepts and `client`.
    pub async fn pair(
        listener: TcpListener,
        client: TcpStream,
    ) -> io::Result<(TlsSocket, TlsClient)> {
        let certified = rcgen::generate_simple_self_signed(["localhost".to_owned()])
            .map_err(io::Error::other)?;
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let key = rustls::pki_types::PrivateKeyDer::try_from(certified.key_pair.serialize_der())
            .map_err(io::Error::other)?;
        let server = rustls::ServerConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(io::Error::other)?
            .with_no_client_auth()
            .with_single_cert(vec![certified.cert.der().clone()], key)
            .map_err(io::Error::other)?;
        let mut roots = rustls::RootCertStore::empty();
        roots
            .add(certified.cert.der().clone())
            .map_err(io::Error::other)?;
        let client_config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(io::Error::other)?
            .with_root_certificates(roots)
            .with_no_client_auth();
        let name = ServerName::try_from("localhost").map_err(io::Error::other)?;
        let connect = TlsConnector::from(Arc::new(client_config)).connect(name, client);
        let accept = async {
            let (tcp, _) = listener.accept().await?;
            // As the relay's accept loop does: a small write does not wait for the
            // client's delayed acknowledgement of the handshake's last flight.
            tcp.set_nodelay(true)?;
            TlsAcceptor::from(Arc::new(server)).accept(tcp).await
        };
        let (client, server) = tokio::try_join!(connect, accept)?;
        let (socket, early) = TlsSocket::new(server)?;
        assert!(early.is_empty());
        let (tcp, session) = client.into_inner();
        let tcp = tcp.into_std()?;
        tcp.set_nonblocking(true)?;
        Ok((socket, TlsClient { tcp, session }))
    }
}
