//! Rules about the sources that a program can check, read as text (after rust-analyzer's
//! `tidy.rs`). Each violation is reported with its file and line.
//!
//! - `redis`: the Redis client crate is named only in `server/src/rooms/redis/`, the one
//!   place that knows rooms are shared through Redis.
//! - `frames`: WebSocket frame headers are parsed and built by `signalroom-wsframe` only.
//!   Outside its tests, the relay, the benchmark and the fuzz targets define no codec of
//!   their own (`struct Header`, `enum OpCode`, `fn apply_mask`, ...), mask no frame bits
//!   out of a byte (a one-byte hex literal beside `&`, `|` or `^`) and read or write no
//!   length or close code in network byte order. The exceptions are the independent
//!   oracles: `tests/conformance.rs` (not walked) and the header fuzz target, which check
//!   the codec against bits they read themselves.
//! - `panics`: no `.unwrap()` or `.expect(` in the relay (`server/src`) outside
//!   `#[cfg(test)]` code, where a panic could be a client's doing. A line that states an
//!   invariant keeps it with the reason in a `// tidy: ...` comment on the line or in the
//!   comment just above; [`PANICS_ALLOWED`] lists the lines in files that cannot carry one.
//!
//! The rules read code only: comments and the contents of string and character literals
//! are blanked first. The tests at the end make each rule fail on a small text, so a rule
//! that stopped matching anything would show.

use std::fmt;
use std::path::{Path, PathBuf};

/// The directories walked, from the workspace's root.
const ROOTS: &[&str] = &["server/src", "bench/src", "fuzz/fuzz_targets"];

/// Where the Redis client crate may be named.
const REDIS_HOME: &str = "server/src/rooms/redis/";

/// Files the `frames` rule skips, with why.
const FRAMES_EXEMPT: &[(&str, &str)] = &[(
    "fuzz/fuzz_targets/header.rs",
    "the codec's fuzz target: its oracle reads the header bits itself",
)];

/// Lines the `panics` rule accepts though they carry no `// tidy:` comment: (file, the
/// line, trimmed, why it cannot panic).
const PANICS_ALLOWED: &[(&str, &str, &str)] = &[];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Rule {
    Redis,
    Frames,
    Panics,
}

#[derive(Debug)]
struct Violation {
    path: String,
    line: usize,
    rule: Rule,
    message: &'static str,
    text: String,
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let rule = format!("{:?}", self.rule).to_lowercase();
        write!(
            f,
            "{}:{}: [{rule}] {}\n    {}",
            self.path,
            self.line,
            self.message,
            self.text.trim()
        )
    }
}

#[test]
fn sources_follow_the_rules() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the tests crate is in the workspace");
    let mut files = Vec::new();
    for dir in ROOTS {
        rust_files(&root.join(dir), &mut files);
    }
    let paths: Vec<String> = files
        .iter()
        .map(|file| {
            let relative = file.strip_prefix(root).expect("walked under the root");
            relative.to_string_lossy().replace('\\', "/")
        })
        .collect();
    for expected in [
        "server/src/lib.rs",
        "server/src/ws.rs",
        "server/src/rooms/redis/link.rs",
        "bench/src/wire.rs",
        "fuzz/fuzz_targets/session.rs",
    ] {
        assert!(
            paths.iter().any(|path| path == expected),
            "{expected} not walked"
        );
    }

    let mut violations = Vec::new();
    let mut allowed_used = vec![0; PANICS_ALLOWED.len()];
    for (file, path) in files.iter().zip(&paths) {
        let text = std::fs::read_to_string(file).expect("a readable source file");
        for violation in check(path, &text) {
            let line = violation.text.trim();
            let allowed = PANICS_ALLOWED
                .iter()
                .position(|&(file, code, _)| file == path && code == line);
            match (violation.rule, allowed) {
                (Rule::Panics, Some(at)) => allowed_used[at] += 1,
                _ => violations.push(violation),
            }
        }
    }
    for (&(file, code, _), used) in PANICS_ALLOWED.iter().zip(allowed_used) {
        assert_eq!(
            used, 1,
            "PANICS_ALLOWED: {file}: `{code}` matched {used} lines"
        );
    }
    let report: Vec<String> = violations.iter().map(ToString::to_string).collect();
    assert!(report.is_empty(), "\n{}\n", report.join("\n"));
}

/// The `.rs` files under `dir`, in a stable order.
fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap_or_else(|error| panic!("cannot list {}: {error}", dir.display()))
        .map(|entry| entry.expect("a directory entry").path())
        .collect();
    entries.sort();
    for path in entries {
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|ext| ext == "rs") {
            out.push(path);
        }
    }
}

/// The violations in `text`, the file at `path` (from the workspace's root, with `/`).
fn check(path: &str, text: &str) -> Vec<Violation> {
    let code = code_only(text);
    let raw: Vec<&str> = text.lines().collect();
    let code: Vec<&str> = code.lines().collect();
    let tests = test_lines(&code);
    let redis = path.starts_with("server/src/") && !path.starts_with(REDIS_HOME);
    let frames = ROOTS.iter().any(|root| path.starts_with(root))
        && !FRAMES_EXEMPT.iter().any(|&(exempt, _)| exempt == path);
    let panics = path.starts_with("server/src/");

    let mut violations = Vec::new();
    let mut report = |line: usize, rule, message| {
        violations.push(Violation {
            path: path.to_owned(),
            line: line + 1,
            rule,
            message,
            text: raw.get(line).copied().unwrap_or("").to_owned(),
        })
    };
    for (n, line) in code.iter().enumerate() {
        if redis && names_redis_crate(line) {
            report(
                n,
                Rule::Redis,
                "the Redis client crate outside server/src/rooms/redis/",
            );
        }
        if frames && !tests[n] {
            if let Some(message) = frames_by_hand(line) {
                report(n, Rule::Frames, message);
            }
        }
        if panics && !tests[n] {
            let justified = justification(&raw, n);
            match (may_panic(line), justified) {
                (true, false) => report(
                    n,
                    Rule::Panics,
                    "`.unwrap()` or `.expect(` outside tests, without a `// tidy:` reason",
                ),
                (false, true) if trailing_reason(raw[n]) => report(
                    n,
                    Rule::Panics,
                    "a `// tidy:` reason on a line that cannot panic",
                ),
                _ => {}
            }
            if raw[n].trim_start().starts_with("// tidy:") && !justifies_next(&raw, &code, n) {
                report(
                    n,
                    Rule::Panics,
                    "a `// tidy:` reason above no `.unwrap()` or `.expect(`",
                );
            }
        }
    }
    violations
}

/// Whether `line` (code only) names the Redis crate: `redis::` at the start of a path, or
/// `use redis` / `extern crate redis`. `self::redis::`, `rooms::redis::` and the like are
/// the relay's own module.
fn names_redis_crate(line: &str) -> bool {
    words(line).any(|(start, word)| {
        if word != "redis" {
            return false;
        }
        let before = line[..start].trim_end();
        let after = &line[start + word.len()..];
        if after.starts_with("::") {
            match before.strip_suffix("::") {
                // A child of some module of the crate's, or `::redis` (the crate).
                Some(parent) => !parent.ends_with(is_ident_char),
                None => true,
            }
        } else {
            let previous = words(before).last().map(|(_, word)| word);
            matches!(previous, Some("use" | "crate"))
        }
    })
}

/// Why `line` (code only) looks like a frame header parsed or built by hand, if it does.
fn frames_by_hand(line: &str) -> Option<&'static str> {
    const CODEC: &[&str] = &[
        "Header",
        "OpCode",
        "CloseCode",
        "apply_mask",
        "parse_close",
        "close_payload",
        "frame_len",
    ];
    let words: Vec<(usize, &str)> = words(line).collect();
    for pair in words.windows(2) {
        if matches!(pair[0].1, "struct" | "enum" | "fn") && CODEC.contains(&pair[1].1) {
            return Some("a frame codec of its own: use signalroom-wsframe's");
        }
    }
    for &(start, word) in &words {
        let digits = word
            .strip_prefix("0x")
            .map(|hex| hex.trim_end_matches("u8"));
        if digits.is_some_and(|hex| (1..=2).contains(&hex.len())) {
            let before = line[..start].trim_end().chars().last();
            let after = line[start + word.len()..].trim_start().chars().next();
            let bitwise = |c: Option<char>| matches!(c, Some('&' | '|' | '^'));
            if bitwise(before) || bitwise(after) {
                return Some(
                    "frame bits masked out of a byte: signalroom-wsframe's Header has them",
                );
            }
        }
    }
    let byte_order = ["u16::from_be_bytes", "u64::from_be_bytes", ".to_be_bytes()"];
    if byte_order.iter().any(|pattern| line.contains(pattern)) {
        return Some("a length or close code in network byte order: signalroom-wsframe's job");
    }
    None
}

/// Whether `line` (code only) unwraps.
fn may_panic(line: &str) -> bool {
    line.contains(".unwrap()") || line.contains(".expect(")
}

/// Whether line `n` is justified: a `// tidy: reason` on it, or in the comment lines just
/// above it.
fn justification(raw: &[&str], n: usize) -> bool {
    let reason = |line: &str| {
        line.split_once("// tidy:")
            .is_some_and(|(_, reason)| !reason.trim().is_empty())
    };
    reason(raw[n])
        || raw[..n]
            .iter()
            .rev()
            .take_while(|line| line.trim_start().starts_with("//"))
            .any(|line| reason(line))
}

/// Whether `line` ends with a `// tidy:` comment after some code.
fn trailing_reason(line: &str) -> bool {
    line.contains("// tidy:") && !line.trim_start().starts_with("//")
}

/// Whether the comment starting at line `n` stands above code that may panic.
fn justifies_next(raw: &[&str], code: &[&str], n: usize) -> bool {
    (n + 1..raw.len())
        .find(|&next| !raw[next].trim_start().starts_with("//"))
        .is_some_and(|next| may_panic(code[next]))
}

/// For each line of `code`, whether it belongs to `#[cfg(test)]` code: the attribute and
/// the item it applies to (to the `}` that closes the item's first `{`, or to its `;`).
fn test_lines(code: &[&str]) -> Vec<bool> {
    let mut depth = 0usize;
    // The depth the test item starts at, and whether its body has opened.
    let mut test: Option<(usize, bool)> = None;
    let mut whole_file = false;
    let mut lines = Vec::with_capacity(code.len());
    for line in code {
        let trimmed = line.trim_start();
        whole_file |= trimmed.starts_with("#![cfg(test)]");
        if test.is_none()
            && (trimmed.starts_with("#[cfg(test)]") || trimmed.starts_with("#[cfg(all(test"))
        {
            test = Some((depth, false));
        }
        lines.push(whole_file || test.is_some());
        for c in line.chars() {
            match (c, test) {
                ('{', _) => {
                    depth += 1;
                    if let Some((start, _)) = test {
                        test = Some((start, true));
                    }
                }
                ('}', _) => {
                    depth = depth.saturating_sub(1);
                    if test == Some((depth, true)) {
                        test = None;
                    }
                }
                (';', Some((start, false))) if start == depth => test = None,
                _ => {}
            }
        }
    }
    lines
}

/// `text` with comments and the contents of string and character literals replaced by
/// spaces, line breaks kept: what is left is code.
fn code_only(text: &str) -> String {
    let chars: Vec<char> = text.chars().collect();
    let mut out = String::with_capacity(text.len());
    let blank = |out: &mut String, c: char| out.push(if c == '\n' { '\n' } else { ' ' });
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        let next = chars.get(i + 1).copied();
        let ident_before = |at: usize| at > 0 && is_ident_char(chars[at - 1]);
        if c == '/' && next == Some('/') {
            while i < chars.len() && chars[i] != '\n' {
                blank(&mut out, chars[i]);
                i += 1;
            }
        } else if c == '/' && next == Some('*') {
            let mut depth = 0;
            while i < chars.len() {
                let pair = (chars[i], chars.get(i + 1).copied());
                if pair == ('/', Some('*')) || pair == ('*', Some('/')) {
                    depth += if pair.0 == '/' { 1 } else { -1 };
                    out.push_str("  ");
                    i += 2;
                    if depth == 0 {
                        break;
                    }
                } else {
                    blank(&mut out, chars[i]);
                    i += 1;
                }
            }
        } else if c == '"' {
            out.push('"');
            i += 1;
            while i < chars.len() && chars[i] != '"' {
                if chars[i] == '\\' && i + 1 < chars.len() {
                    blank(&mut out, chars[i]);
                    i += 1;
                }
                blank(&mut out, chars[i]);
                i += 1;
            }
            if i < chars.len() {
                out.push('"');
                i += 1;
            }
        } else if c == 'r'
            && matches!(next, Some('"' | '#'))
            && (!ident_before(i) || (chars[i - 1] == 'b' && !ident_before(i - 1)))
        {
            let hashes = chars[i + 1..].iter().take_while(|&&c| c == '#').count();
            if chars.get(i + 1 + hashes) != Some(&'"') {
                out.push(c);
                i += 1;
                continue;
            }
            out.extend(&chars[i..i + 2 + hashes]);
            i += 2 + hashes;
            let closes = |at: usize| {
                chars[at] == '"'
                    && chars.len() > at + hashes
                    && chars[at + 1..=at + hashes].iter().all(|&c| c == '#')
            };
            while i < chars.len() && !closes(i) {
                blank(&mut out, chars[i]);
                i += 1;
            }
            let end = (i + 1 + hashes).min(chars.len());
            out.extend(&chars[i..end]);
            i = end;
        } else if c == '\'' && next == Some('\\') {
            // An escaped character: '\n', '\'', '\u{..}'.
            out.push('\'');
            i += 1;
            blank(&mut out, chars[i]);
            i += 1;
            if i < chars.len() {
                blank(&mut out, chars[i]);
                i += 1;
            }
            while i < chars.len() && chars[i] != '\'' && chars[i] != '\n' {
                blank(&mut out, chars[i]);
                i += 1;
            }
            if i < chars.len() && chars[i] == '\'' {
                out.push('\'');
                i += 1;
            }
        } else if c == '\'' && chars.get(i + 2) == Some(&'\'') {
            out.push('\'');
            blank(&mut out, chars[i + 1]);
            out.push('\'');
            i += 3;
        } else {
            // Code, or a lifetime's quote.
            out.push(c);
            i += 1;
        }
    }
    out
}

fn is_ident_char(c: char) -> bool {
    c.is_alphanumeric() || c == '_'
}

/// The identifiers and number literals of `line`, with where each starts.
fn words(line: &str) -> impl Iterator<Item = (usize, &str)> {
    let mut at = 0;
    std::iter::from_fn(move || {
        let start = at + line[at..].find(is_ident_char)?;
        let len = line[start..]
            .find(|c: char| !is_ident_char(c))
            .unwrap_or(line.len() - start);
        at = start + len;
        Some((start, &line[start..at]))
    })
}

/// The rules' verdicts on small texts: (line, rule) of each violation.
fn verdicts(path: &str, text: &str) -> Vec<(usize, Rule)> {
    check(path, text)
        .into_iter()
        .map(|violation| (violation.line, violation.rule))
        .collect()
}

#[test]
fn the_redis_rule_fails_on_the_crate_outside_its_module() {
    let text = "use redis::Client;\n\
                fn f() -> ::redis::RedisResult<()> { Ok(()) }\n\
                extern crate redis;\n\
                use {redis, std::fmt};\n\
                pub use self::redis::RedisRooms;\n\
                use crate::rooms::redis::Link;\n\
                // redis::Client in a comment\n\
                const URL: &str = \"redis://localhost\";\n\
                let redis_url = config.redis_url;\n";
    let expected: Vec<_> = (1..=4).map(|line| (line, Rule::Redis)).collect();
    assert_eq!(verdicts("server/src/lib.rs", text), expected);
    assert_eq!(verdicts("server/src/rooms/redis/link.rs", text), []);
    assert_eq!(verdicts("bench/src/main.rs", text), []);
}

#[test]
fn the_frames_rule_fails_on_a_codec_by_hand() {
    let text = "pub struct Header { fin: bool }\n\
                fn apply_mask(bytes: &mut [u8]) {}\n\
                let fin = bytes[0] & 0x80 != 0;\n\
                frame.push(0x80 | len as u8);\n\
                let len = u16::from_be_bytes([bytes[2], bytes[3]]);\n\
                out.extend_from_slice(&code.to_be_bytes());\n\
                let (header, size) = Header::parse(&buf)?;\n\
                const MASK: [u8; 4] = [0x5a, 0x17, 0xc3, 0x8e];\n\
                let hash = (x ^ n).wrapping_mul(0x9e37_79b9_7f4a_7c15);\n\
                let control = c < 0x20;\n\
                // frame.push(0x80 | len as u8);\n\
                #[cfg(test)]\n\
                mod tests {\n\
                    fn client() { frame.push(0x80 | 126); }\n\
                }\n";
    let expected: Vec<_> = (1..=6).map(|line| (line, Rule::Frames)).collect();
    assert_eq!(verdicts("bench/src/wire.rs", text), expected);
    assert_eq!(verdicts("server/src/ws.rs", text), expected);
    assert_eq!(verdicts("fuzz/fuzz_targets/header.rs", text), []);
    assert_eq!(verdicts("wsframe/src/lib.rs", text), []);
}

#[test]
fn the_panics_rule_fails_on_an_unjustified_unwrap() {
    let text = r#"fn read(frame: &str) -> u8 {
    let first = frame.parse::<u8>().unwrap();
    let second = frame
        .parse::<u8>()
        .expect("a number");
    // tidy: a constant; a unit test parses it.
    let third: u8 = "3".parse().expect("3 parses");
    let fourth: u8 = "4".parse().expect("4 parses"); // tidy: a constant.
    let fifth = frame.parse::<u8>().unwrap_or(0); // tidy: stale
    // tidy: stale, above nothing that panics
    let text = "not code: .unwrap() .expect(";
    let c = '"'; let d = frame.parse::<u8>().unwrap();
    /* .unwrap() */ first + second + third + fourth + fifth
}

#[cfg(test)]
mod tests {
    #[test]
    fn reads() {
        assert_eq!(super::read("1").checked_add(1).unwrap(), 2);
    }
}
"#;
    let expected: Vec<_> = [2, 5, 9, 10, 12]
        .into_iter()
        .map(|line| (line, Rule::Panics))
        .collect();
    assert_eq!(verdicts("server/src/codec.rs", text), expected);
    assert_eq!(verdicts("bench/src/load.rs", text), []);
}

#[test]
fn code_only_blanks_comments_and_literals() {
    let text = "let a = \"x // y\"; // .unwrap()\n\
                let b = r#\"\"quoted\" .expect(\"#; let c: &'static str = \"\";\n\
                let d = '\\''; let e = b'\"'; /* a /* nested */ comment */ f.unwrap();\n";
    let code = code_only(text);
    let lines: Vec<&str> = code.lines().collect();
    let blanks = |n| " ".repeat(n);
    assert_eq!(lines[0].trim_end(), format!("let a = \"{}\";", blanks(6)));
    assert_eq!(
        lines[1].trim_end(),
        format!("let b = r#\"{}\"#; let c: &'static str = \"\";", blanks(17))
    );
    assert_eq!(
        lines[2].trim_end(),
        format!("let d = '  '; let e = b' ';{}f.unwrap();", blanks(30))
    );
}
