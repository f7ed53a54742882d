//! The STUN/TURN servers handed to a peer when it enters a room: the static ones
//! (`--ice-server`) and, with TURN REST credentials on (`--turn-url` and a secret), a TURN
//! server with a credential minted for that peer alone.
//!
//! The credential is the TURN REST API's, as coturn checks it with `use-auth-secret` and
//! `static-auth-secret`: username `EXPIRY:PEER_ID`, `EXPIRY` the Unix time at which it stops
//! working, and password `base64(HMAC-SHA1(secret, username))`. The TURN server needs only
//! the shared secret to check it; nothing is stored per peer.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use hmac::{Hmac, Mac};
use sha1::Sha1;
use signalroom_protocol::{IceServer, PeerId};

use crate::secret::Secret;

/// TURN REST settings: the secret shared with the TURN server, the server's URLs, and how
/// long a minted credential works.
#[derive(Debug, Clone)]
pub struct TurnRest {
    secret: Secret,
    urls: Vec<String>,
    ttl: Duration,
}

impl TurnRest {
    /// Credentials for the TURN server at `urls` (`turn:` or `turns:`), signed with
    /// `secret` and valid for `ttl` after they are minted.
    pub fn new(secret: Secret, urls: Vec<String>, ttl: Duration) -> Self {
        Self { secret, urls, ttl }
    }

    /// The username and password for `peer`, minted at `now`.
    pub fn credential(&self, peer: PeerId, now: SystemTime) -> (String, String) {
        // A clock before 1970 counts as 1970: the credential is then simply expired.
        let now = now.duration_since(UNIX_EPOCH).unwrap_or_default().as_secs();
        let expiry = now.saturating_add(self.ttl.as_secs());
        let username = format!("{expiry}:{peer}");
        let password = sign(&self.secret, &username);
        (username, password)
    }
}

/// `base64(HMAC-SHA1(secret, username))`.
fn sign(secret: &Secret, username: &str) -> String {
    // HMAC takes a key of any length.
    let Ok(mut mac) = Hmac::<Sha1>::new_from_slice(secret.expose()) else {
        unreachable!("HMAC accepts keys of every length")
    };
    mac.update(username.as_bytes());
    base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
}

/// What every peer entering a room is told to use for ICE.
#[derive(Debug, Clone, Default)]
pub struct IceServers {
    fixed: Vec<IceServer>,
    turn: Option<TurnRest>,
}

impl IceServers {
    /// The `fixed` servers for everyone, then, with `turn`, a TURN server with a credential
    /// of each peer's own.
    pub fn new(fixed: Vec<IceServer>, turn: Option<TurnRest>) -> Self {
        Self { fixed, turn }
    }

    /// The servers for `peer` entering a room at `now`: the fixed ones, then the TURN
    /// server with a credential minted for it.
    pub fn for_peer(&self, peer: PeerId, now: SystemTime) -> Vec<IceServer> {
        let mut servers = self.fixed.clone();
        if let Some(turn) = &self.turn {
            let (username, credential) = turn.credential(peer, now);
            servers.push(IceServer {
                urls: turn.urls.clone(),
                username: Some(username),
                credential: Some(credential),
            });
        }
        servers
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peer(id: u64) -> PeerId {
        PeerId::new(id).expect("a valid id")
    }

    #[test]
    fn the_password_is_the_hmac_coturn_expects() {
        // printf '%s' '1700003600:42' | openssl dgst -sha1 -hmac 'north-wind' -binary | base64
        let turn = TurnRest::new(
            Secret::from("north-wind"),
            vec!["turn:turn.example.org:3478?transport=udp".into()],
            Duration::from_secs(3600),
        );
        let minted = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let (username, password) = turn.credential(peer(42), minted);
        assert_eq!(username, "1700003600:42");
        assert_eq!(password, "YlpCluhk1i66cE5bZO2tP7aZqpY=");
    }

    #[test]
    fn each_peer_gets_its_own_credential_beside_the_fixed_servers() {
        let stun = IceServer {
            urls: vec!["stun:stun.example.org:3478".into()],
            username: None,
            credential: None,
        };
        let ice = IceServers::new(
            vec![stun.clone()],
            Some(TurnRest::new(
                Secret::from("north-wind"),
                vec!["turn:a:3478".into(), "turns:a:443?transport=tcp".into()],
                Duration::from_secs(60),
            )),
        );
        let now = UNIX_EPOCH + Duration::from_secs(1_000);
        let one = ice.for_peer(peer(1), now);
        let two = ice.for_peer(peer(2), now);
        assert_eq!(one.len(), 2);
        assert_eq!(one[0], stun);
        assert_eq!(one[1].urls, ["turn:a:3478", "turns:a:443?transport=tcp"]);
        assert_eq!(one[1].username.as_deref(), Some("1060:1"));
        assert_eq!(two[1].username.as_deref(), Some("1060:2"));
        assert_ne!(one[1].credential, two[1].credential);
        // Later, a fresh one.
        let later = ice.for_peer(peer(1), now + Duration::from_secs(5));
        assert_eq!(later[1].username.as_deref(), Some("1065:1"));

        assert_eq!(
            IceServers::new(vec![stun.clone()], None).for_peer(peer(1), now),
            [stun]
        );
    }

    #[test]
    fn the_secret_never_shows_in_debug() {
        let ice = IceServers::new(
            Vec::new(),
            Some(TurnRest::new(
                Secret::from("north-wind"),
                vec!["turn:a:3478".into()],
                Duration::from_secs(60),
            )),
        );
        assert!(!format!("{ice:?}").contains("north-wind"));
    }
}
