//! Room tokens (`--auth-secret-file`): JWTs signed with HS256 that an application server
//! hands its users, checked before a WebSocket is accepted.
//!
//! A token must carry `exp`; `nbf` is honoured when present; both get [`LEEWAY`] of clock
//! skew. A `room` claim names the one room the token admits; without it the token admits
//! any room. The token comes in the query string (`/ws?token=...`), since browsers cannot
//! set headers on a WebSocket: no error here, and no log line anywhere, holds the token.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::{Deserialize, Deserializer};
use serde_json::Value;
use signalroom_protocol::RoomName;
use warp::http::{header, HeaderValue, Response, StatusCode};

use crate::secret::Secret;

/// Clock skew allowed between the application server that mints tokens and the relay: a
/// token is still taken this long after its `exp`, and already this long before its `nbf`.
pub const LEEWAY: Duration = Duration::from_secs(30);

/// The longest token the relay reads; a longer one is refused unread.
pub const MAX_TOKEN_BYTES: usize = 4096;

/// The query parameter that carries the token.
pub const TOKEN_PARAM: &str = "token";

/// Checks room tokens against the relay's secret.
#[derive(Clone)]
pub struct RoomTokens {
    /// `None` for an empty secret, which signs nothing: every token is refused.
    key: Option<DecodingKey>,
    validation: Validation,
}

impl std::fmt::Debug for RoomTokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RoomTokens([redacted])")
    }
}

/// The rooms a connection may enter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Admits {
    /// Any room: the relay takes no tokens, or the token names no room.
    AnyRoom,
    /// This room alone.
    Room(RoomName),
}

impl Admits {
    /// Whether `room` is one of them.
    pub fn admits(&self, room: &RoomName) -> bool {
        match self {
            Self::AnyRoom => true,
            Self::Room(only) => only == room,
        }
    }
}

/// Why a token admits nobody. No message includes the token.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    /// The request has no `token` parameter, or an empty one.
    #[error("a room token is required")]
    Missing,
    /// The token is longer than [`MAX_TOKEN_BYTES`].
    #[error("token too long")]
    TooLong,
    /// Not a JWT, or one whose claims the relay cannot read (no numeric `exp`, a `room`
    /// that is not a room name).
    #[error("malformed token")]
    Malformed,
    /// Not signed with the relay's secret, or not with HS256.
    #[error("bad token signature")]
    BadSignature,
    /// Past its `exp`.
    #[error("token expired")]
    Expired,
    /// Before its `nbf`.
    #[error("token not yet valid")]
    NotYetValid,
}

impl TokenError {
    /// `401 Unauthorized` with a `WWW-Authenticate: Bearer` challenge (RFC 6750) and the
    /// reason in the body.
    pub fn response(self) -> Response<String> {
        let mut response = Response::new(format!("{self}\n"));
        *response.status_mut() = StatusCode::UNAUTHORIZED;
        let challenge = match self {
            Self::Missing => HeaderValue::from_static("Bearer"),
            _ => HeaderValue::from_static("Bearer error=\"invalid_token\""),
        };
        response
            .headers_mut()
            .insert(header::WWW_AUTHENTICATE, challenge);
        response
    }
}

/// The claims the relay reads; others are ignored.
#[derive(Deserialize)]
struct Claims {
    /// Seconds since the epoch (a JWT NumericDate may have a fraction).
    exp: f64,
    nbf: Option<f64>,
    /// Absent: any room. Present, it must be a room name (`null` is no name).
    #[serde(default, deserialize_with = "present")]
    room: Option<Value>,
}

/// Tells a `room` that is there, even as `null`, from one that is not.
fn present<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<Value>, D::Error> {
    Value::deserialize(deserializer).map(Some)
}

impl RoomTokens {
    /// Tokens signed with `secret`. An empty secret (which `secret::load` never
    /// gives) admits no token at all.
    pub fn new(secret: &Secret) -> Self {
        let mut validation = Validation::new(Algorithm::HS256);
        validation.set_required_spec_claims(&["exp"]);
        // Times are checked in `check`, against the clock it is given.
        validation.validate_exp = false;
        validation.validate_nbf = false;
        // The relay is no audience of its own; an `aud` the minter set does not bar it.
        validation.validate_aud = false;
        Self {
            key: DecodingKey::from_secret(secret.expose()).ok(),
            validation,
        }
    }

    /// What `token` admits at `now`.
    pub fn check(&self, token: &str, now: SystemTime) -> Result<Admits, TokenError> {
        if token.is_empty() {
            return Err(TokenError::Missing);
        }
        if token.len() > MAX_TOKEN_BYTES {
            return Err(TokenError::TooLong);
        }
        let key = self.key.as_ref().ok_or(TokenError::BadSignature)?;
        let claims = jsonwebtoken::decode::<Claims>(token, key, &self.validation)
            .map_err(|error| match error.kind() {
                ErrorKind::InvalidSignature | ErrorKind::InvalidAlgorithm => {
                    TokenError::BadSignature
                }
                _ => TokenError::Malformed,
            })?
            .claims;
        let now = now
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs_f64();
        let leeway = LEEWAY.as_secs_f64();
        if !claims.exp.is_finite() || !claims.nbf.is_none_or(f64::is_finite) {
            return Err(TokenError::Malformed);
        }
        if claims.exp + leeway <= now {
            return Err(TokenError::Expired);
        }
        if claims.nbf.is_some_and(|nbf| nbf - leeway > now) {
            return Err(TokenError::NotYetValid);
        }
        match claims.room {
            None => Ok(Admits::AnyRoom),
            Some(Value::String(name)) => RoomName::new(name)
                .map(Admits::Room)
                .map_err(|_| TokenError::Malformed),
            Some(_) => Err(TokenError::Malformed),
        }
    }
}

/// The `token` parameter of a query string, percent-decoded; `None` when there is none.
/// The first one counts if there are several.
pub fn token_param(query: &str) -> Option<String> {
    form_urlencoded::parse(query.as_bytes())
        .find(|(name, _)| name == TOKEN_PARAM)
        .map(|(_, value)| value.into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;
    use jsonwebtoken::{encode, EncodingKey, Header};
    use serde_json::json;

    const SECRET: &str = "test-secret-0123456789";

    fn at(secs: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(secs)
    }

    fn mint(claims: Value, secret: &str) -> String {
        encode(
            &Header::new(Algorithm::HS256),
            &claims,
            &EncodingKey::from_secret(secret.as_bytes()).expect("a key"),
        )
        .expect("a token")
    }

    fn tokens() -> RoomTokens {
        RoomTokens::new(&Secret::from(SECRET))
    }

    #[test]
    fn a_token_admits_its_room_or_any() {
        let room = mint(json!({"exp": 2000, "room": "a"}), SECRET);
        let a = RoomName::new("a").expect("a name");
        let b = RoomName::new("b").expect("a name");
        let admits = tokens().check(&room, at(1000)).expect("valid");
        assert_eq!(admits, Admits::Room(a.clone()));
        assert!(admits.admits(&a) && !admits.admits(&b));
        let any = mint(json!({"exp": 2000, "sub": "alice"}), SECRET);
        assert_eq!(tokens().check(&any, at(1000)), Ok(Admits::AnyRoom));
    }

    #[test]
    fn times_are_checked_with_the_leeway() {
        let leeway = LEEWAY.as_secs();
        let token = mint(json!({"exp": 2000, "nbf": 1000}), SECRET);
        let check = |now| tokens().check(&token, at(now));
        assert_eq!(check(1000 - leeway - 1), Err(TokenError::NotYetValid));
        assert_eq!(check(1000 - leeway), Ok(Admits::AnyRoom));
        assert_eq!(check(2000 + leeway - 1), Ok(Admits::AnyRoom));
        assert_eq!(check(2000 + leeway), Err(TokenError::Expired));
    }

    #[test]
    fn bad_tokens_are_told_apart() {
        let check = |token: &str| tokens().check(token, at(1000));
        assert_eq!(check(""), Err(TokenError::Missing));
        assert_eq!(check("not a jwt"), Err(TokenError::Malformed));
        assert_eq!(check(&"x".repeat(5000)), Err(TokenError::TooLong));
        let other_secret = mint(json!({"exp": 2000}), "another secret");
        assert_eq!(check(&other_secret), Err(TokenError::BadSignature));
        let no_exp = mint(json!({"room": "a"}), SECRET);
        assert_eq!(check(&no_exp), Err(TokenError::Malformed));
        let text_exp = mint(json!({"exp": "2000"}), SECRET);
        assert_eq!(check(&text_exp), Err(TokenError::Malformed));
        for room in [json!(null), json!(""), json!(7), json!(["a"])] {
            let token = mint(json!({"exp": 2000, "room": room}), SECRET);
            assert_eq!(check(&token), Err(TokenError::Malformed), "{room}");
        }
        let hs512 = encode(
            &Header::new(Algorithm::HS512),
            &json!({"exp": 2000}),
            &EncodingKey::from_secret(SECRET.as_bytes()).expect("a key"),
        )
        .expect("a token");
        assert_eq!(check(&hs512), Err(TokenError::BadSignature));
        // An unsigned token ("alg":"none") is no token.
        let unsigned = format!(
            "eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0.{}.",
            other_secret.split('.').nth(1).expect("claims")
        );
        assert!(check(&unsigned).is_err());
    }

    #[test]
    fn errors_and_debug_never_show_the_token_or_secret() {
        let token = mint(json!({"exp": 1}), SECRET);
        let error = tokens().check(&token, at(1000)).expect_err("expired");
        assert!(!error.to_string().contains(&token));
        assert!(!error.response().body().contains(&token));
        assert!(!format!("{:?}", tokens()).contains(SECRET));
        let empty = RoomTokens::new(&Secret::from(""));
        assert_eq!(empty.check(&token, at(0)), Err(TokenError::BadSignature));
    }

    #[test]
    fn the_token_parameter_is_found_and_decoded() {
        assert_eq!(token_param("token=a.b.c").as_deref(), Some("a.b.c"));
        assert_eq!(token_param("x=1&token=a%2Eb+c").as_deref(), Some("a.b c"));
        assert_eq!(token_param("token=1&token=2").as_deref(), Some("1"));
        assert_eq!(token_param("tokens=1"), None);
        assert_eq!(token_param(""), None);
    }
}
