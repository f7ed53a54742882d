//! What the page's address says: the room (`?room=`) and the relay (`?relay=`).

use web_sys::{Location, UrlSearchParams};

/// The page's settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PageConfig {
    /// The room named in the address, if any.
    pub room: Option<String>,
    /// The relay's WebSocket URL.
    pub relay: String,
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
        }
    }
}

/// `ws://host/ws`, or `wss://` for a page served over https.
pub fn same_origin_relay(https: bool, host: &str) -> String {
    let scheme = if https { "wss" } else { "ws" };
    format!("{scheme}://{host}/{}", signalroom_protocol::WS_PATH)
}
