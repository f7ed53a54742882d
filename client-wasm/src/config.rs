//! What the page's address says: the room (`?room=`), the relay (`?relay=`) and the room
//! token to hand the relay (`?token=`).

use web_sys::{Location, UrlSearchParams};

/// The page's settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PageConfig {
    /// The room named in the address, if any.
    pub room: Option<String>,
    /// The relay's WebSocket URL, without the token.
    pub relay: String,
    /// The room token the relay may require, if the address has one.
    pub token: Option<String>,
}

impl PageConfig {
    /// Reads the settings from the page's location. Without `?relay=`, the relay is the
    /// page's own origin, which is how the relay serves the page.
    pub fn from_location(location: &Location) -> Self {
        let search = location.search().unwrap_or_default();
        let params = UrlSearchParams::new_with_str(&search).ok();
        let param = |name: &str| {
            params
                .as_ref()
                .and_then(|p| p.get(name))
                .filter(|v| !v.trim().is_empty())
        };
        let https = location.protocol().ok().as_deref() == Some("https:");
        let host = location.host().unwrap_or_default();
        Self {
            room: param("room"),
            relay: param("relay").unwrap_or_else(|| same_origin_relay(https, &host)),
            token: param("token"),
        }
    }

    /// The URL to open: the relay's, asking for a resumable session (`resume`), with the
    /// token as its `token` parameter (browsers cannot set headers on a WebSocket). Not for
    /// showing: it holds the token.
    pub fn relay_url(&self) -> String {
        let separator = if self.relay.contains('?') { "&" } else { "?" };
        let resumable = [&self.relay, separator, signalroom_protocol::RESUME_PARAM].concat();
        match &self.token {
            Some(token) => with_token(&resumable, token),
            None => resumable,
        }
    }
}

/// `relay` with `token=` (URL-encoded) added to its query.
pub fn with_token(relay: &str, token: &str) -> String {
    let separator = if relay.contains('?') {
        "&token="
    } else {
        "?token="
    };
    let token = String::from(js_sys::encode_uri_component(token));
    [relay, separator, &token].concat()
}

/// `ws://host/ws`, or `wss://` for a page served over https.
pub fn same_origin_relay(https: bool, host: &str) -> String {
    let scheme = if https { "wss://" } else { "ws://" };
    [scheme, host, "/", signalroom_protocol::WS_PATH].concat()
}

#[cfg(all(test, target_arch = "wasm32"))]
mod tests {
    use wasm_bindgen_test::wasm_bindgen_test;

    use super::*;

    #[wasm_bindgen_test]
    fn the_same_origin_relay_follows_the_page_scheme() {
        assert_eq!(same_origin_relay(false, "h:8080"), "ws://h:8080/ws");
        assert_eq!(same_origin_relay(true, "h"), "wss://h/ws");
        assert_eq!(with_token("wss://h/ws", "é"), "wss://h/ws?token=%C3%A9");
    }
}
