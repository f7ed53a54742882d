//! The page: the files of `--static-dir`, read once when the relay starts, compressed once
//! (brotli and gzip, each at its best level), and served from memory like a production
//! static site: the encoding the browser accepts (`Vary: Accept-Encoding`), cached for a
//! year when trunk hashed the name, revalidated (`no-cache`, `ETag`, 304) otherwise, and
//! locked down (`Content-Security-Policy`, `X-Content-Type-Options`, `Referrer-Policy`).
//!
//! A path that is not one of the files is the client's mistake, never the relay's: a bad
//! percent-encoding, a NUL or other control character, or a `.` or `..` segment answers
//! 400; a path that names no file, 404.

use std::collections::HashMap;
use std::io::Write as _;
use std::path::{Path, PathBuf};

use base64::Engine as _;
use bytes::Bytes;
use sha2::{Digest as _, Sha256};
use warp::http::header::{self, HeaderMap, HeaderValue};
use warp::http::{Response, StatusCode};

/// Below this size a file is sent as it is: compressing it saves less than a packet.
const MIN_COMPRESS_BYTES: usize = 512;
/// brotli's best quality, and its largest window (4 MiB) short of the large-window variant
/// browsers do not speak.
const BROTLI_QUALITY: u32 = 11;
const BROTLI_WINDOW_LOG: u32 = 22;
/// Hashed file names (what trunk writes) never change their content: a year, the longest
/// `max-age` caches are told to honor.
const IMMUTABLE: &str = "public, max-age=31536000, immutable";
/// Every other file (`index.html`): kept, but asked about again before each use.
const REVALIDATE: &str = "no-cache";

/// What the page's `Content-Security-Policy` is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Csp {
    /// Computed when the relay starts from the page that it serves (see [`Site::load`]).
    Computed {
        /// Relays the page may connect to besides its own origin (`?relay=`).
        relays: Vec<String>,
    },
    /// This policy, as the operator wrote it.
    Replaced(String),
    /// No policy (a page embedded in a site with a policy of its own).
    Off,
}

/// Why the page could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum SiteError {
    /// A file or folder of `--static-dir` could not be read.
    #[error("--static-dir: cannot read {}: {source}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The operator's policy (`--csp`) cannot be a header value.
    #[error("--csp: the policy is not a valid header value")]
    BadPolicy,
}

/// The files served at `/`, each with its encodings, and the headers every answer carries.
#[derive(Debug)]
pub struct Site {
    files: HashMap<String, File>,
    /// `Content-Security-Policy` up to its `connect-src` (which names the request's host),
    /// or the operator's, or none.
    csp: Policy,
}

#[derive(Debug)]
enum Policy {
    /// The computed policy: `before` ends in `connect-src 'self'`, then the request's own
    /// `ws:` and `wss:` origin, then `after` (the listed relays and the other directives).
    Computed {
        before: String,
        after: String,
    },
    Fixed(HeaderValue),
    Off,
}

/// One file: its encodings, the smallest first.
#[derive(Debug)]
struct File {
    content_type: HeaderValue,
    /// An HTML document, which gets the policy.
    html: bool,
    cache_control: HeaderValue,
    /// brotli, then gzip, when they are worth it (see [`compressed`]).
    encoded: Vec<Encoded>,
    identity: Variant,
}

#[derive(Debug)]
struct Encoded {
    coding: Coding,
    variant: Variant,
}

/// One representation of a file: its bytes and their entity tag.
#[derive(Debug)]
struct Variant {
    body: Bytes,
    etag: HeaderValue,
}

/// The content codings the relay offers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Coding {
    Brotli,
    Gzip,
}

impl Coding {
    fn token(self) -> &'static str {
        match self {
            Coding::Brotli => "br",
            Coding::Gzip => "gzip",
        }
    }
}

/// Why a request's path names no file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum BadPath {
    #[error("a bad percent-encoding")]
    Encoding,
    #[error("not UTF-8")]
    NotUtf8,
    #[error("a control character")]
    Control,
    #[error("a . or .. segment")]
    DotSegment,
}

impl Site {
    /// Reads every file under `dir` (names starting with `.` excepted), compresses each, and
    /// computes the page's policy from what it serves: the SHA-256 of each inline script of
    /// its HTML files, and `csp`'s relays. A `dir` that does not exist serves nothing (the
    /// relay runs without its page, as with `trunk serve` in front).
    pub fn load(dir: &Path, csp: &Csp) -> Result<Self, SiteError> {
        let mut raw = Vec::new();
        match std::fs::metadata(dir) {
            Ok(_) => read_dir(dir, "", &mut raw)?,
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
                tracing::debug!(dir = %dir.display(), "--static-dir does not exist: no page at /");
            }
            Err(source) => {
                return Err(SiteError::Read {
                    path: dir.to_owned(),
                    source,
                })
            }
        }
        let mut inline_scripts = Vec::new();
        let mut files = HashMap::with_capacity(raw.len());
        for (name, content) in raw {
            if name.ends_with(".html") {
                inline_scripts.extend(inline_script_hashes(&content));
            }
            files.insert(name.clone(), File::new(&name, content));
        }
        let csp = match csp {
            Csp::Computed { relays } => computed_policy(&inline_scripts, relays),
            Csp::Replaced(policy) => {
                Policy::Fixed(HeaderValue::from_str(policy).map_err(|_| SiteError::BadPolicy)?)
            }
            Csp::Off => Policy::Off,
        };
        let site = Self { files, csp };
        tracing::info!(
            files = site.files.len(),
            bytes = site
                .files
                .values()
                .map(|f| f.identity.body.len())
                .sum::<usize>(),
            compressed = site
                .files
                .values()
                .map(|f| f
                    .encoded
                    .first()
                    .map_or(&f.identity, |e| &e.variant)
                    .body
                    .len())
                .sum::<usize>(),
            "page loaded"
        );
        Ok(site)
    }

    /// The answer to a GET or HEAD of `raw_path` (as the request line has it, without the
    /// query) with these request headers. The relay's host is the request's `Host`, which
    /// the policy names for `connect-src`.
    pub fn respond(&self, raw_path: &str, headers: &HeaderMap) -> Response<Bytes> {
        let name = match file_name(raw_path) {
            Ok(name) => name,
            Err(bad) => {
                tracing::debug!(%bad, "refused a bad path");
                return self.plain(StatusCode::BAD_REQUEST, "bad path\n", headers);
            }
        };
        let Some(file) = self.files.get(&name) else {
            return self.plain(StatusCode::NOT_FOUND, "not found\n", headers);
        };
        let accepted = accepted_coding(headers, &file.encoded);
        let variant = accepted.map_or(&file.identity, |e| &e.variant);
        let mut response = if not_modified(headers, file) {
            let mut response = Response::new(Bytes::new());
            *response.status_mut() = StatusCode::NOT_MODIFIED;
            response
        } else {
            let mut response = Response::new(variant.body.clone());
            response
                .headers_mut()
                .insert(header::CONTENT_TYPE, file.content_type.clone());
            if let Some(encoded) = accepted {
                response.headers_mut().insert(
                    header::CONTENT_ENCODING,
                    HeaderValue::from_static(encoded.coding.token()),
                );
            }
            response
        };
        let out = response.headers_mut();
        out.insert(header::ETAG, variant.etag.clone());
        out.insert(header::CACHE_CONTROL, file.cache_control.clone());
        if !file.encoded.is_empty() {
            out.insert(header::VARY, HeaderValue::from_static("accept-encoding"));
        }
        self.lock_down(out, headers, file.html);
        response
    }

    /// A short text answer (400, 404), with the same security headers.
    fn plain(
        &self,
        status: StatusCode,
        text: &'static str,
        headers: &HeaderMap,
    ) -> Response<Bytes> {
        let mut response = Response::new(Bytes::from_static(text.as_bytes()));
        *response.status_mut() = status;
        let out = response.headers_mut();
        out.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; charset=utf-8"),
        );
        out.insert(header::CACHE_CONTROL, HeaderValue::from_static(REVALIDATE));
        self.lock_down(out, headers, false);
        response
    }

    /// The headers every answer of the page carries, and an HTML document's policy (the
    /// policy governs documents only: sent with the other files, it would only cost bytes).
    fn lock_down(&self, out: &mut HeaderMap, request: &HeaderMap, html: bool) {
        out.insert(
            header::X_CONTENT_TYPE_OPTIONS,
            HeaderValue::from_static("nosniff"),
        );
        out.insert(
            header::REFERRER_POLICY,
            HeaderValue::from_static("no-referrer"),
        );
        if !html {
            return;
        }
        let csp = match &self.csp {
            Policy::Computed { before, after } => {
                let host = request
                    .get(header::HOST)
                    .and_then(|h| h.to_str().ok())
                    .filter(|h| is_authority(h));
                let policy = match host {
                    Some(host) => format!("{before} ws://{host} wss://{host}{after}"),
                    None => format!("{before}{after}"),
                };
                HeaderValue::from_str(&policy).ok()
            }
            Policy::Fixed(value) => Some(value.clone()),
            Policy::Off => None,
        };
        if let Some(csp) = csp {
            out.insert(header::CONTENT_SECURITY_POLICY, csp);
        }
    }
}

impl File {
    fn new(name: &str, content: Vec<u8>) -> Self {
        let kind = mime_guess::from_path(name).first_or_octet_stream();
        let content_type = match (kind.type_(), kind.subtype().as_str()) {
            (mime_guess::mime::TEXT, _) | (_, "javascript" | "json" | "xml" | "svg") => {
                format!("{}; charset=utf-8", kind.essence_str())
            }
            _ => kind.essence_str().to_owned(),
        };
        let cache_control = if is_hashed(name) {
            IMMUTABLE
        } else {
            REVALIDATE
        };
        let tag = entity_tag(&content);
        let encoded = compressed(&content)
            .into_iter()
            .map(|(coding, body)| Encoded {
                coding,
                variant: Variant {
                    body: body.into(),
                    etag: etag(&format!("{tag}-{}", coding.token())),
                },
            })
            .collect();
        Self {
            html: kind.essence_str() == "text/html",
            content_type: HeaderValue::from_str(&content_type)
                .unwrap_or(HeaderValue::from_static("application/octet-stream")),
            cache_control: HeaderValue::from_static(cache_control),
            encoded,
            identity: Variant {
                body: content.into(),
                etag: etag(&tag),
            },
        }
    }

    /// Whether `tag` (an entity tag from `If-None-Match`, quotes included) is one of this
    /// file's: the same content, whichever encoding it was sent in.
    fn has_tag(&self, tag: &str) -> bool {
        std::iter::once(&self.identity)
            .chain(self.encoded.iter().map(|e| &e.variant))
            .any(|v| v.etag.as_bytes() == tag.as_bytes())
    }
}

/// Reads the files under `dir` into `out`, named by their path below the static folder
/// (`prefix`), with `/` between folders. Names starting with `.` are skipped.
fn read_dir(dir: &Path, prefix: &str, out: &mut Vec<(String, Vec<u8>)>) -> Result<(), SiteError> {
    let read = |path: &Path, source| SiteError::Read {
        path: path.to_owned(),
        source,
    };
    let entries = std::fs::read_dir(dir).map_err(|e| read(dir, e))?;
    for entry in entries {
        let entry = entry.map_err(|e| read(dir, e))?;
        let path = entry.path();
        let Some(name) = entry.file_name().to_str().map(str::to_owned) else {
            tracing::warn!(path = %path.display(), "not served: the name is not UTF-8");
            continue;
        };
        if name.starts_with('.') {
            continue;
        }
        let name = format!("{prefix}{name}");
        let kind = std::fs::metadata(&path).map_err(|e| read(&path, e))?;
        if kind.is_dir() {
            read_dir(&path, &format!("{name}/"), out)?;
        } else if kind.is_file() {
            out.push((name, std::fs::read(&path).map_err(|e| read(&path, e))?));
        }
    }
    Ok(())
}

/// brotli and gzip of `content` at their best levels, each only if it saves at least a
/// tenth; none for a file under [`MIN_COMPRESS_BYTES`]. The smaller first.
fn compressed(content: &[u8]) -> Vec<(Coding, Vec<u8>)> {
    if content.len() < MIN_COMPRESS_BYTES {
        return Vec::new();
    }
    let mut encoded = Vec::with_capacity(2);
    let mut brotli =
        brotli::CompressorWriter::new(Vec::new(), 4096, BROTLI_QUALITY, BROTLI_WINDOW_LOG);
    // Writing into a Vec cannot fail.
    if brotli.write_all(content).is_ok() {
        encoded.push((Coding::Brotli, brotli.into_inner()));
    }
    let mut gzip = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    if let Ok(body) = gzip.write_all(content).and_then(|()| gzip.finish()) {
        encoded.push((Coding::Gzip, body));
    }
    encoded.retain(|(_, body)| body.len() <= content.len() - content.len() / 10);
    encoded.sort_by_key(|(_, body)| body.len());
    encoded
}

/// Whether trunk hashed the file's name: `NAME-<hex digits>.EXT`, or `..._bg.wasm`.
///
/// Trunk writes its 64-bit hash in hex without leading zeros, so one name in 16 has 15
/// digits, one in 256 has 14, and so on. Names with 12 to 16 take all but one build in
/// 65,536; a shorter one is served as not hashed (revalidated, never stale), which keeps a
/// hand-named file such as `logo-2.png` from being cached for good.
fn is_hashed(name: &str) -> bool {
    let file = name.rsplit('/').next().unwrap_or(name);
    let Some((stem, _ext)) = file.rsplit_once('.') else {
        return false;
    };
    let stem = stem.strip_suffix("_bg").unwrap_or(stem);
    stem.rsplit_once('-').is_some_and(|(before, hash)| {
        !before.is_empty()
            && (12..=16).contains(&hash.len())
            && hash.bytes().all(|b| b.is_ascii_hexdigit())
    })
}

/// The entity tag of `content` (without quotes): the start of its SHA-256, in base64url.
fn entity_tag(content: &[u8]) -> String {
    let digest = Sha256::digest(content);
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(&digest[..18])
}

fn etag(tag: &str) -> HeaderValue {
    // base64url and a coding token: always a valid header value.
    HeaderValue::from_str(&format!("\"{tag}\"")).unwrap_or(HeaderValue::from_static("\"\""))
}

/// The `'sha256-...'` source of each inline `<script>` (one without `src`) of an HTML page,
/// hashed as browsers do: the exact text between the tags.
fn inline_script_hashes(html: &[u8]) -> Vec<String> {
    let Ok(html) = std::str::from_utf8(html) else {
        return Vec::new();
    };
    let lower = html.to_ascii_lowercase();
    let mut hashes = Vec::new();
    let mut at = 0;
    while let Some(start) = lower[at..].find("<script").map(|i| i + at) {
        let Some(open_end) = lower[start..].find('>').map(|i| i + start + 1) else {
            break;
        };
        let Some(close) = lower[open_end..].find("</script").map(|i| i + open_end) else {
            break;
        };
        let tag = &lower[start..open_end];
        if !has_attribute(tag, "src") {
            let digest = Sha256::digest(&html.as_bytes()[open_end..close]);
            hashes.push(format!(
                "'sha256-{}'",
                base64::engine::general_purpose::STANDARD.encode(digest)
            ));
        }
        at = close;
    }
    hashes
}

/// Whether the (lowercased) opening tag `tag` has the attribute `name`.
fn has_attribute(tag: &str, name: &str) -> bool {
    tag.split(|c: char| c.is_ascii_whitespace() || c == '<' || c == '>' || c == '/')
        .any(|word| word == name || word.starts_with(&format!("{name}=")))
}

/// The page's own policy: everything from its own origin only, its inline scripts by
/// hash and WebAssembly compiled, WebSockets to its own origin and `relays`, the icon
/// `data:`, and no framing, plugins, `<base>` or forms sent elsewhere.
fn computed_policy(inline_scripts: &[String], relays: &[String]) -> Policy {
    let mut scripts = String::from("'self' 'wasm-unsafe-eval'");
    for hash in inline_scripts {
        scripts.push(' ');
        scripts.push_str(hash);
    }
    let before = format!("default-src 'self'; script-src {scripts}; connect-src 'self'");
    let mut after = String::new();
    for relay in relays {
        after.push(' ');
        after.push_str(relay);
    }
    after.push_str(
        "; img-src 'self' data:; object-src 'none'; base-uri 'none'; form-action 'self'; \
         frame-ancestors 'none'",
    );
    Policy::Computed { before, after }
}

/// Whether `host` (a `Host` header) is a plain authority, safe to name in the policy:
/// letters, digits, `.`, `-`, `:` and an IPv6 literal's brackets.
fn is_authority(host: &str) -> bool {
    !host.is_empty()
        && host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b':' | b'[' | b']'))
}

/// The file a request's path names: percent-decoded, `index.html` for a folder.
fn file_name(raw_path: &str) -> Result<String, BadPath> {
    let bytes = raw_path.as_bytes();
    let mut decoded = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = bytes.get(i + 1..i + 3).ok_or(BadPath::Encoding)?;
            let hex = std::str::from_utf8(hex).map_err(|_| BadPath::Encoding)?;
            if !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(BadPath::Encoding);
            }
            decoded.push(u8::from_str_radix(hex, 16).map_err(|_| BadPath::Encoding)?);
            i += 3;
        } else {
            decoded.push(bytes[i]);
            i += 1;
        }
    }
    let path = String::from_utf8(decoded).map_err(|_| BadPath::NotUtf8)?;
    if path.chars().any(char::is_control) {
        return Err(BadPath::Control);
    }
    let path = path.strip_prefix('/').unwrap_or(&path);
    if path
        .split('/')
        .any(|segment| segment == "." || segment == "..")
    {
        return Err(BadPath::DotSegment);
    }
    Ok(if path.is_empty() || path.ends_with('/') {
        format!("{path}index.html")
    } else {
        path.to_owned()
    })
}

/// The encoding to send: the one the request accepts with the highest weight (brotli on a
/// tie), among those the file has; `None` for the file as it is.
fn accepted_coding<'a>(headers: &HeaderMap, encoded: &'a [Encoded]) -> Option<&'a Encoded> {
    let mut weights: Vec<(String, f32)> = Vec::new();
    for value in headers.get_all(header::ACCEPT_ENCODING) {
        let Ok(value) = value.to_str() else { continue };
        for item in value.split(',') {
            let mut parts = item.split(';');
            let coding = parts.next().unwrap_or_default().trim().to_ascii_lowercase();
            if coding.is_empty() {
                continue;
            }
            let mut weight = 1.0;
            for parameter in parts {
                if let Some((key, value)) = parameter.split_once('=') {
                    if key.trim().eq_ignore_ascii_case("q") {
                        weight = value.trim().parse().unwrap_or(0.0);
                    }
                }
            }
            weights.push((coding, weight));
        }
    }
    let weight_of = |coding: Coding| {
        let named = weights
            .iter()
            .find(|(c, _)| c == coding.token() || (coding == Coding::Gzip && c == "x-gzip"));
        named
            .or_else(|| weights.iter().find(|(c, _)| c == "*"))
            .map_or(0.0, |(_, w)| *w)
    };
    let mut best: Option<(&Encoded, f32)> = None;
    for candidate in [Coding::Brotli, Coding::Gzip] {
        let Some(encoded) = encoded.iter().find(|e| e.coding == candidate) else {
            continue;
        };
        let weight = weight_of(candidate);
        if weight > 0.0 && best.is_none_or(|(_, w)| weight > w) {
            best = Some((encoded, weight));
        }
    }
    best.map(|(encoded, _)| encoded)
}

/// Whether `If-None-Match` names one of the file's entity tags (or `*`), compared weakly as
/// RFC 9110 has it.
fn not_modified(headers: &HeaderMap, file: &File) -> bool {
    headers
        .get_all(header::IF_NONE_MATCH)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .map(str::trim)
        .any(|tag| tag == "*" || file.has_tag(tag.strip_prefix("W/").unwrap_or(tag)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_name_files_or_are_refused() {
        assert_eq!(file_name("/"), Ok("index.html".to_owned()));
        assert_eq!(file_name("/a%20b.js"), Ok("a b.js".to_owned()));
        assert_eq!(
            file_name("/snippets/x/"),
            Ok("snippets/x/index.html".to_owned())
        );
        assert_eq!(file_name("/index.html%00.js"), Err(BadPath::Control));
        assert_eq!(file_name("/%0a"), Err(BadPath::Control));
        assert_eq!(file_name("/%zz"), Err(BadPath::Encoding));
        assert_eq!(file_name("/%4"), Err(BadPath::Encoding));
        assert_eq!(file_name("/%+1"), Err(BadPath::Encoding));
        assert_eq!(file_name("/%ff"), Err(BadPath::NotUtf8));
        assert_eq!(file_name("/../secret"), Err(BadPath::DotSegment));
        assert_eq!(file_name("/a/%2e%2e/b"), Err(BadPath::DotSegment));
        assert_eq!(file_name("/./index.html"), Err(BadPath::DotSegment));
        assert_eq!(file_name("/..."), Ok("...".to_owned()));
    }

    #[test]
    fn trunk_hashed_names_are_recognized() {
        assert!(is_hashed("signalroom-client-wasm-8429d5ce850accf5.js"));
        assert!(is_hashed("signalroom-client-wasm-8429d5ce850accf5_bg.wasm"));
        assert!(is_hashed("style-2399d7a7ee6a753f.css"));
        assert!(!is_hashed("index.html"));
        assert!(!is_hashed("style.css"));
        assert!(!is_hashed("-2399d7a7ee6a753f.css"));
        // Trunk's hash without its leading zeros.
        assert!(is_hashed("style-399d7a7ee6a753f.css"));
        assert!(is_hashed("style-d7a7ee6a753f.css"));
        assert!(!is_hashed("logo-2.png"));
        assert!(!is_hashed("style-7ee6a753f.css"));
        assert!(!is_hashed("style-2399d7a7ee6a753ff.css"));
        assert!(!is_hashed("style-2399d7a7ee6a753g.css"));
    }

    #[test]
    fn inline_scripts_are_hashed_and_linked_ones_are_not() {
        let html = b"<head><script type=\"module\">alert(1)</script>\
            <script src=\"/a.js\"></script><SCRIPT>x</SCRIPT></head>";
        let hash = |text: &str| {
            format!(
                "'sha256-{}'",
                base64::engine::general_purpose::STANDARD.encode(Sha256::digest(text))
            )
        };
        assert_eq!(
            inline_script_hashes(html),
            vec![hash("alert(1)"), hash("x")]
        );
        assert!(inline_script_hashes(b"<p>no scripts</p>").is_empty());
    }

    #[test]
    fn the_accepted_coding_is_chosen_by_weight() {
        let encoded = [Coding::Brotli, Coding::Gzip].map(|coding| Encoded {
            coding,
            variant: Variant {
                body: Bytes::new(),
                etag: etag("t"),
            },
        });
        let chosen = |accept: &str| {
            let mut headers = HeaderMap::new();
            headers.insert(
                header::ACCEPT_ENCODING,
                HeaderValue::from_str(accept).expect("a header value"),
            );
            accepted_coding(&headers, &encoded).map(|e| e.coding)
        };
        assert_eq!(chosen("gzip, deflate, br, zstd"), Some(Coding::Brotli));
        assert_eq!(chosen("gzip"), Some(Coding::Gzip));
        assert_eq!(chosen("br;q=0, gzip"), Some(Coding::Gzip));
        assert_eq!(chosen("br;q=0.5, gzip;q=0.8"), Some(Coding::Gzip));
        assert_eq!(chosen("*"), Some(Coding::Brotli));
        assert_eq!(chosen("*;q=0"), None);
        assert_eq!(chosen("identity"), None);
        assert_eq!(chosen("deflate"), None);
        assert_eq!(
            accepted_coding(&HeaderMap::new(), &encoded).map(|e| e.coding),
            None
        );
        assert_eq!(chosen("gzip"), Some(Coding::Gzip));
        assert!(accepted_coding(&HeaderMap::new(), &encoded[..0]).is_none());
    }

    #[test]
    fn small_and_incompressible_files_are_kept_as_they_are() {
        assert!(compressed(b"tiny").is_empty());
        // Bytes that do not repeat: no coding saves a tenth.
        let mut state = 0x9e37_79b9_7f4a_7c15_u64;
        let noise: Vec<u8> = (0..4096)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                state.to_le_bytes()[3]
            })
            .collect();
        assert!(compressed(&noise).is_empty());
        let text = "the same line again\n".repeat(100);
        let codings: Vec<Coding> = compressed(text.as_bytes())
            .into_iter()
            .map(|(c, _)| c)
            .collect();
        assert_eq!(codings.len(), 2);
    }
}
