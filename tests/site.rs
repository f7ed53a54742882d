//! The page as a browser gets it from the relay: every file compressed in the encoding it
//! accepts and the same bytes once decoded, cached for good when trunk hashed its name and
//! revalidated otherwise, under a policy that lets the page run and nothing else; and a
//! bad path or an oversize request head answered as the client's mistake.

use std::io::Read as _;
use std::path::Path;

use anyhow::{ensure, Context, Result};
use base64::Engine as _;
use clap::Parser;
use sha2::{Digest as _, Sha256};
use signalroom_server::Config;
use support::*;

/// The inline script of the page, as trunk writes it: it imports the hashed JS.
const INLINE_SCRIPT: &str = "\nimport init from '/app-0123456789abcdef.js';\n\
    await init({ module_or_path: '/app-0123456789abcdef_bg.wasm' });\n";

/// A page as `trunk build` leaves it in dist/: index.html with its inline module script,
/// the hashed JS, WASM and CSS, plus a file too small to compress and one that does not
/// compress. Returns each file's name and bytes.
fn built_page(dir: &Path) -> Result<Vec<(&'static str, Vec<u8>)>> {
    let index = format!(
        "<!doctype html>\n<html><head><title>signalroom</title>\n\
         <link rel=\"stylesheet\" href=\"/style-fedcba9876543210.css\">\n\
         <script type=\"module\">{INLINE_SCRIPT}</script>\n</head>\n<body>{}</body></html>\n",
        "<p>a page with some text that repeats, as pages do</p>\n".repeat(20)
    );
    let js: String = (0..300)
        .map(|i| format!("export function f{i}(a) {{ return wasm.__wbg_call_{i}(a, {i}); }}\n"))
        .collect();
    // WASM-like bytes: a header, then instruction-like runs that repeat with variations.
    let mut wasm = b"\0asm\x01\0\0\0".to_vec();
    for i in 0..20_000u32 {
        wasm.extend_from_slice(&[0x20, (i % 7) as u8, 0x41, (i % 251) as u8, 0x6a, 0x21]);
    }
    let css = "body { margin: 0; font-family: system-ui, sans-serif; }\n\
               .tile { border-radius: 8px; background: #222; color: #eee; }\n"
        .repeat(20);
    // Bytes that do not repeat (xorshift): no encoding makes them smaller.
    let mut state = 0x2545_f491_4f6c_dd1d_u64;
    let noise: Vec<u8> = (0..8192)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state.to_le_bytes()[5]
        })
        .collect();
    let files = vec![
        ("index.html", index.into_bytes()),
        ("app-0123456789abcdef.js", js.into_bytes()),
        ("app-0123456789abcdef_bg.wasm", wasm),
        ("style-fedcba9876543210.css", css.into_bytes()),
        ("robots.txt", b"User-agent: *\n".to_vec()),
        ("noise-0011223344556677.bin", noise),
    ];
    for (name, content) in &files {
        std::fs::write(dir.join(name), content)?;
    }
    Ok(files)
}

/// The files of [`built_page`] large and compressible enough to be served compressed.
const COMPRESSED: [&str; 4] = [
    "index.html",
    "app-0123456789abcdef.js",
    "app-0123456789abcdef_bg.wasm",
    "style-fedcba9876543210.css",
];

fn config(dir: &Path, flags: &[&str]) -> Result<Config> {
    let dir = dir.to_str().context("a UTF-8 temp path")?;
    Ok(Config::try_parse_from(
        ["signalroom", "--static-dir", dir]
            .into_iter()
            .chain(flags.iter().copied()),
    )?)
}

fn path_of(name: &str) -> String {
    match name {
        "index.html" => "/".to_owned(),
        other => format!("/{other}"),
    }
}

fn decoded(response: &HttpResponse) -> Result<Vec<u8>> {
    let mut out = Vec::new();
    match response.header("content-encoding") {
        None => out.clone_from(&response.body),
        Some("br") => {
            brotli::Decompressor::new(&response.body[..], 4096).read_to_end(&mut out)?;
        }
        Some("gzip") => {
            flate2::read::GzDecoder::new(&response.body[..]).read_to_end(&mut out)?;
        }
        Some(other) => anyhow::bail!("an encoding not asked for: {other}"),
    }
    Ok(out)
}

#[tokio::test]
async fn every_file_comes_compressed_as_the_browser_accepts_and_decodes_to_its_bytes() -> Result<()>
{
    let dir = TempDir::new("site-encodings")?;
    let files = built_page(&dir.0)?;
    let relay = Relay::start(config(&dir.0, &[])?).await?;

    for (name, content) in &files {
        let path = path_of(name);
        for (accept, want) in [
            // What Chromium and Firefox send.
            ("gzip, deflate, br, zstd", Some("br")),
            ("gzip", Some("gzip")),
            ("br;q=0, gzip;q=1", Some("gzip")),
            ("identity", None),
            ("", None),
        ] {
            let headers: &[(&str, &str)] = if accept.is_empty() {
                &[]
            } else {
                &[("Accept-Encoding", accept)]
            };
            let response = http_request(relay.addr, &path, headers).await?;
            assert_eq!(response.status, 200, "{name} ({accept})");
            let want = if COMPRESSED.contains(name) {
                want
            } else {
                None
            };
            assert_eq!(
                response.header("content-encoding"),
                want,
                "{name} with Accept-Encoding: {accept}"
            );
            if want.is_some() {
                assert!(
                    response.body.len() < content.len() * 9 / 10,
                    "{name} in {want:?}: {} of {} bytes",
                    response.body.len(),
                    content.len()
                );
            }
            assert_eq!(&decoded(&response)?, content, "{name} ({accept})");
            let vary = response.header("vary").map(str::to_ascii_lowercase);
            if COMPRESSED.contains(name) {
                assert_eq!(vary.as_deref(), Some("accept-encoding"), "{name}");
            }
        }
    }
    for (path, content_type) in [
        ("/", "text/html; charset=utf-8"),
        ("/app-0123456789abcdef.js", "text/javascript; charset=utf-8"),
        ("/app-0123456789abcdef_bg.wasm", "application/wasm"),
        ("/style-fedcba9876543210.css", "text/css; charset=utf-8"),
    ] {
        let response = http_request(relay.addr, path, &[]).await?;
        assert_eq!(
            response.header("content-type"),
            Some(content_type),
            "{path}"
        );
    }
    Ok(())
}

#[tokio::test]
async fn hashed_files_are_cached_for_good_and_the_page_is_revalidated() -> Result<()> {
    let dir = TempDir::new("site-caching")?;
    built_page(&dir.0)?;
    let relay = Relay::start(config(&dir.0, &[])?).await?;
    let br = [("Accept-Encoding", "gzip, deflate, br")];

    for name in [
        "app-0123456789abcdef.js",
        "app-0123456789abcdef_bg.wasm",
        "style-fedcba9876543210.css",
    ] {
        let response = http_request(relay.addr, &path_of(name), &br).await?;
        assert_eq!(
            response.header("cache-control"),
            Some("public, max-age=31536000, immutable"),
            "{name}"
        );
    }

    // The page: kept, but asked about again, and its tag answered 304 without a body.
    let first = http_request(relay.addr, "/", &br).await?;
    assert_eq!(first.header("cache-control"), Some("no-cache"));
    let tag = first.header("etag").context("index.html has no ETag")?;
    let again = http_request(relay.addr, "/", &[br[0], ("If-None-Match", tag)]).await?;
    assert_eq!(again.status, 304);
    assert!(again.body.is_empty());
    assert_eq!(again.header("etag"), Some(tag));
    assert_eq!(again.header("cache-control"), Some("no-cache"));
    let by_path = http_request(relay.addr, "/index.html", &[br[0], ("If-None-Match", tag)]).await?;
    assert_eq!(by_path.status, 304);

    // The identity and the brotli bytes differ, and so do their tags; either names the
    // same file, so a cache holding one is told it is current whichever it asks with.
    let plain = http_request(relay.addr, "/", &[]).await?;
    let plain_tag = plain.header("etag").context("no ETag")?;
    assert_ne!(plain_tag, tag);
    let weak = format!("W/{tag}");
    for tags in [
        tag,
        weak.as_str(),
        "\"other\", *",
        &format!("\"other\", {plain_tag}"),
    ] {
        let response = http_request(relay.addr, "/", &[("If-None-Match", tags)]).await?;
        assert_eq!(response.status, 304, "If-None-Match: {tags}");
    }
    let stale = http_request(relay.addr, "/", &[("If-None-Match", "\"an-old-page\"")]).await?;
    assert_eq!(stale.status, 200);
    assert!(!stale.body.is_empty());
    Ok(())
}

/// The policy's directives by name.
fn directives(policy: &str) -> Vec<(String, Vec<String>)> {
    policy
        .split(';')
        .filter_map(|directive| {
            let mut words = directive.split_whitespace().map(str::to_owned);
            Some((words.next()?, words.collect()))
        })
        .collect()
}

fn directive<'a>(policy: &'a [(String, Vec<String>)], name: &str) -> Option<&'a [String]> {
    policy
        .iter()
        .find(|(n, _)| n == name)
        .map(|(_, sources)| sources.as_slice())
}

#[tokio::test]
async fn the_page_runs_under_a_policy_that_lets_nothing_else_in() -> Result<()> {
    let dir = TempDir::new("site-policy")?;
    built_page(&dir.0)?;
    let relay = Relay::start(config(
        &dir.0,
        &["--page-relay", "wss://relay.example.org/ws"],
    )?)
    .await?;
    let response = http_request(relay.addr, "/", &[]).await?;
    assert_eq!(response.header("x-content-type-options"), Some("nosniff"));
    assert_eq!(response.header("referrer-policy"), Some("no-referrer"));
    let policy = directives(
        response
            .header("content-security-policy")
            .context("no Content-Security-Policy")?,
    );
    let script_hash = format!(
        "'sha256-{}'",
        base64::engine::general_purpose::STANDARD.encode(Sha256::digest(INLINE_SCRIPT))
    );
    let host = relay.addr.to_string();
    let expected: [(&str, Vec<String>); 5] = [
        ("default-src", vec!["'self'".into()]),
        (
            "script-src",
            vec!["'self'".into(), "'wasm-unsafe-eval'".into(), script_hash],
        ),
        (
            "connect-src",
            vec![
                "'self'".into(),
                format!("ws://{host}"),
                format!("wss://{host}"),
                "wss://relay.example.org/ws".into(),
            ],
        ),
        ("frame-ancestors", vec!["'none'".into()]),
        ("object-src", vec!["'none'".into()]),
    ];
    for (name, sources) in expected {
        assert_eq!(directive(&policy, name), Some(&sources[..]), "{name}");
    }
    // The other files and the answers to bad requests are not sniffed and send no
    // referrer either; the policy, which governs documents, is the page's alone.
    for path in ["/app-0123456789abcdef.js", "/missing.js", "/%zz"] {
        let other = http_request(relay.addr, path, &[]).await?;
        assert_eq!(other.header("x-content-type-options"), Some("nosniff"));
        assert_eq!(other.header("referrer-policy"), Some("no-referrer"));
        assert_eq!(other.header("content-security-policy"), None, "{path}");
    }
    // A revalidated page gets its policy again with the 304.
    let tag = response.header("etag").context("no ETag")?;
    let revalidated = http_request(relay.addr, "/", &[("If-None-Match", tag)]).await?;
    assert_eq!(revalidated.status, 304);
    assert_eq!(
        revalidated.header("content-security-policy"),
        response.header("content-security-policy")
    );

    // An operator who embeds the page turns the policy off, or writes their own.
    let off = Relay::start(config(&dir.0, &["--csp", "off"])?).await?;
    let response = http_request(off.addr, "/", &[]).await?;
    assert_eq!(response.header("content-security-policy"), None);
    assert_eq!(response.header("x-content-type-options"), Some("nosniff"));
    let own_policy = "default-src 'self'; frame-ancestors https://portal.example.org";
    let own = Relay::start(config(&dir.0, &["--csp", own_policy])?).await?;
    let response = http_request(own.addr, "/", &[]).await?;
    assert_eq!(response.header("content-security-policy"), Some(own_policy));
    Ok(())
}

#[tokio::test]
async fn a_bad_path_is_the_clients_mistake() -> Result<()> {
    let dir = TempDir::new("site-paths")?;
    built_page(&dir.0)?;
    let relay = Relay::start(config(&dir.0, &[])?).await?;
    for (path, status) in [
        ("/index.html%00.js", 400),
        ("/%00", 400),
        ("/index.html%0d%0aX:%20y", 400),
        ("/%zz", 400),
        ("/index.html%", 400),
        ("/%ff%fe", 400),
        ("/../Cargo.toml", 400),
        ("/a/%2e%2e/index.html", 400),
        ("/./index.html", 400),
        ("/missing.js", 404),
        ("/index.html/", 404),
    ] {
        let response = http_request(relay.addr, path, &[]).await?;
        assert_eq!(response.status, status, "GET {path}");
    }
    // The relay is unharmed: the page is still there.
    assert_eq!(
        http_request(relay.addr, "/index.html", &[]).await?.status,
        200
    );
    Ok(())
}

#[tokio::test]
async fn a_request_head_past_16_kib_is_refused_with_431() -> Result<()> {
    let dir = TempDir::new("site-head")?;
    built_page(&dir.0)?;
    let relay = Relay::start(config(&dir.0, &[])?).await?;

    // A head just under the cap is served.
    let near = "a".repeat(15 * 1024);
    let response = http_request(relay.addr, "/", &[("X-Padding", &near)]).await?;
    assert_eq!(response.status, 200);

    // A 100 KB header, on the page and on the WebSocket's path alike.
    let huge = "a".repeat(100 * 1024);
    for path in ["/", "/ws"] {
        let response = http_request(relay.addr, path, &[("X-Padding", &huge)]).await?;
        assert_eq!(response.status, 431, "GET {path}");
    }
    // So are many small headers that add up past the cap.
    let mut head = String::from("GET / HTTP/1.1\r\nHost: x\r\n");
    for i in 0..90 {
        head.push_str(&format!("X-Header-{i}: {}\r\n", "b".repeat(200)));
    }
    head.push_str("\r\n");
    ensure!(head.len() > 16 * 1024);
    let response = http_exchange(relay.addr, head.as_bytes()).await?;
    assert_eq!(response.status, 431);

    // Nobody else noticed.
    assert_eq!(http_request(relay.addr, "/", &[]).await?.status, 200);
    Ok(())
}
