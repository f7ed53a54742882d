//! Where the relay is and how to open a WebSocket to it: the URL, the room token, the
//! `Origin`, and TLS for `wss://`.

use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateDer;
use rustls::{ClientConfig, RootCertStore};
use signalroom_protocol::{RESUME_PARAM, WS_PATH};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::{Connector, MaybeTlsStream, WebSocketStream};
use url::Url;

use crate::Error;

/// A WebSocket to the relay.
pub(crate) type Socket = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// How long the client waits for a silent relay before it counts the connection as lost:
/// three of the relay's heartbeats at its default idle timeout (it pings every 10 s).
pub const SILENCE: Duration = Duration::from_secs(30);

/// How to reach a relay and what to ask of it.
///
/// ```
/// use signalroom_client::Options;
///
/// let options = Options::new("wss://relay.example.com")?
///     .token("eyJhbGciOi...")
///     .origin("https://app.example.com");
/// # Ok::<(), signalroom_client::Error>(())
/// ```
#[derive(Clone)]
pub struct Options {
    url: Url,
    token: Option<String>,
    origin: Option<String>,
    roots: Option<RootCertStore>,
    pub(crate) resumable: bool,
    pub(crate) reconnect: bool,
    pub(crate) silence: Duration,
}

impl std::fmt::Debug for Options {
    /// Never shows the token.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Options")
            .field("url", &self.url.as_str())
            .field("token", &self.token.as_ref().map(|_| "…"))
            .field("origin", &self.origin)
            .field("custom_ca", &self.roots.is_some())
            .field("resumable", &self.resumable)
            .field("reconnect", &self.reconnect)
            .field("silence", &self.silence)
            .finish()
    }
}

impl Options {
    /// A relay at `relay`: `ws://host:port` or `wss://host`, with or without the `/ws`
    /// path. Sessions are resumable and lost connections are opened again, as the page
    /// does; see [`Options::resumable`] and [`Options::reconnect`].
    pub fn new(relay: &str) -> Result<Self, Error> {
        let invalid = |why: &str| Error::InvalidUrl {
            url: relay.to_owned(),
            why: why.to_owned(),
        };
        let mut url = Url::parse(relay).map_err(|e| invalid(&e.to_string()))?;
        if !matches!(url.scheme(), "ws" | "wss") {
            return Err(invalid("the scheme must be ws or wss"));
        }
        if url.host().is_none() {
            return Err(invalid("it names no host"));
        }
        if matches!(url.path(), "" | "/") {
            url.set_path(&format!("/{WS_PATH}"));
        }
        Ok(Self {
            url,
            token: None,
            origin: None,
            roots: None,
            resumable: true,
            reconnect: true,
            silence: SILENCE,
        })
    }

    /// A room token (a JWT from the relay's operator), for a relay that requires one.
    pub fn token(mut self, token: impl Into<String>) -> Self {
        self.token = Some(token.into());
        self
    }

    /// The `Origin` header to send, for a relay that only admits some origins.
    pub fn origin(mut self, origin: impl Into<String>) -> Self {
        self.origin = Some(origin.into());
        self
    }

    /// Trusts the certificate authorities in `pem` for `wss://`, instead of the system's.
    pub fn ca_pem(mut self, pem: &[u8]) -> Result<Self, Error> {
        let mut roots = RootCertStore::empty();
        for cert in CertificateDer::pem_slice_iter(pem) {
            let cert = cert.map_err(|e| Error::InvalidCa(e.to_string()))?;
            roots
                .add(cert)
                .map_err(|e| Error::InvalidCa(e.to_string()))?;
        }
        if roots.is_empty() {
            return Err(Error::InvalidCa("no certificate in the PEM".into()));
        }
        self.roots = Some(roots);
        Ok(self)
    }

    /// Whether to ask for a resumable session (`/ws?resume`; on by default): a dropped
    /// connection then comes back as the same peer in the same seat, nothing lost.
    pub fn resumable(mut self, resumable: bool) -> Self {
        self.resumable = resumable;
        self
    }

    /// Whether to open a lost connection again, with backoff (on by default). Off, a
    /// lost connection ends the client.
    pub fn reconnect(mut self, reconnect: bool) -> Self {
        self.reconnect = reconnect;
        self
    }

    /// How long a silent relay may stay silent before the connection counts as lost
    /// (default [`SILENCE`]); the relay pings a third of its idle timeout apart.
    pub fn silence(mut self, silence: Duration) -> Self {
        self.silence = silence;
        self
    }

    /// The URL opened: the relay's, with `resume` and the token. Holds the token: never
    /// log it.
    fn url(&self) -> Url {
        let mut url = self.url.clone();
        {
            let mut query = url.query_pairs_mut();
            if self.resumable {
                query.append_key_only(RESUME_PARAM);
            }
            if let Some(token) = &self.token {
                query.append_pair("token", token);
            }
        }
        if url.query() == Some("") {
            url.set_query(None);
        }
        url
    }

    /// The relay's URL without the token, to show.
    pub fn relay(&self) -> &str {
        self.url.as_str()
    }

    /// Opens a WebSocket to the relay.
    pub(crate) async fn open(&self) -> Result<Socket, Error> {
        let mut request = self.url().as_str().into_client_request()?;
        if let Some(origin) = &self.origin {
            let value = HeaderValue::from_str(origin).map_err(|_| Error::InvalidUrl {
                url: origin.clone(),
                why: "not a valid Origin header".into(),
            })?;
            request.headers_mut().insert("origin", value);
        }
        let connector = match self.url.scheme() {
            "wss" => Some(Connector::Rustls(self.tls()?)),
            _ => None,
        };
        let (socket, _) =
            tokio_tungstenite::connect_async_tls_with_config(request, None, true, connector)
                .await?;
        Ok(socket)
    }

    fn tls(&self) -> Result<Arc<ClientConfig>, Error> {
        let roots = match &self.roots {
            Some(roots) => roots.clone(),
            None => {
                let found = rustls_native_certs::load_native_certs();
                let mut roots = RootCertStore::empty();
                let (added, _) = roots.add_parsable_certificates(found.certs);
                if added == 0 {
                    return Err(Error::InvalidCa(
                        "the system has no certificate authorities".into(),
                    ));
                }
                roots
            }
        };
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| Error::InvalidCa(e.to_string()))?
            .with_root_certificates(roots)
            .with_no_client_auth();
        Ok(Arc::new(config))
    }
}
