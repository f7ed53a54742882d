//! JSON text the relay forwards without parsing it: checked once, on the way in.
//!
//! A message's `data` is copied into the frames its recipients get, so it must be one
//! valid JSON value; nothing more is asked of it. [`split_value`] checks that in one pass
//! with no allocation, scanning string contents thirty-two bytes at a time. That was a
//! quarter of the relay's own work per message when serde_json's deserializer did it.

use serde::{Deserialize, Deserializer};
use serde_json::value::RawValue;

/// One JSON value as it came in, whitespace around it removed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RawJson<'a>(&'a str);

impl<'a> RawJson<'a> {
    /// The value `text` starts with, and the text after it; see [`split_value`].
    pub fn split_first(text: &'a str) -> Option<(Self, &'a str)> {
        split_value(text).map(|(value, rest)| (Self(value), rest))
    }

    /// `text` if it is one JSON value, whitespace around it allowed.
    pub fn checked(text: &'a str) -> Option<Self> {
        let (value, rest) = Self::split_first(text)?;
        trim_start(rest).is_empty().then_some(value)
    }

    /// The JSON text.
    pub fn get(self) -> &'a str {
        self.0
    }
}

impl<'de> Deserialize<'de> for RawJson<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        <&RawValue>::deserialize(deserializer).map(|raw| Self(raw.get()))
    }
}

/// Containers nested deeper than this are left to serde_json, whose own limit decides.
const MAX_DEPTH: u32 = 100;

/// The JSON value `text` starts with (after optional whitespace), and the text after it.
/// `None` unless serde_json would accept that value; also `None` for values nested deeper
/// than [`MAX_DEPTH`], so a caller that gets `None` asks serde_json for the verdict and
/// its words.
pub fn split_value(text: &str) -> Option<(&str, &str)> {
    let start = skip_whitespace(text.as_bytes(), 0);
    let end = value_end(text.as_bytes(), start)?;
    Some((text.get(start..end)?, text.get(end..)?))
}

/// Given the first byte of a value at `i`: the index past the value.
fn value_end(b: &[u8], mut i: usize) -> Option<usize> {
    // Bit d of `objects` tells whether the container at depth d is an object.
    let mut objects: u128 = 0;
    let mut depth = 0;
    loop {
        // A value starts at `i`.
        match b.get(i) {
            Some(&open @ (b'{' | b'[')) => {
                if depth == MAX_DEPTH {
                    return None;
                }
                let close = if open == b'{' { b'}' } else { b']' };
                i = skip_whitespace(b, i + 1);
                if b.get(i) == Some(&close) {
                    i += 1;
                } else {
                    if open == b'{' {
                        objects |= 1u128 << depth;
                        i = after_key(b, i)?;
                    } else {
                        objects &= !(1u128 << depth);
                    }
                    depth += 1;
                    continue;
                }
            }
            Some(b'"') => i = string_end(b, i + 1)?,
            Some(b'-' | b'0'..=b'9') => i = number_end(b, i)?,
            Some(b't') if b[i..].starts_with(b"true") => i += 4,
            Some(b'f') if b[i..].starts_with(b"false") => i += 5,
            Some(b'n') if b[i..].starts_with(b"null") => i += 4,
            _ => return None,
        }
        // A value ended: close containers until one goes on, or the outermost ends.
        loop {
            if depth == 0 {
                return Some(i);
            }
            i = skip_whitespace(b, i);
            let in_object = (objects >> (depth - 1)) & 1 == 1;
            match b.get(i) {
                Some(b',') => {
                    i = skip_whitespace(b, i + 1);
                    if in_object {
                        i = after_key(b, i)?;
                    }
                    break;
                }
                Some(b'}') if in_object => {
                    depth -= 1;
                    i += 1;
                }
                Some(b']') if !in_object => {
                    depth -= 1;
                    i += 1;
                }
                _ => return None,
            }
        }
    }
}

/// `text` without the JSON whitespace it starts with.
pub fn trim_start(text: &str) -> &str {
    text.get(skip_whitespace(text.as_bytes(), 0)..)
        .unwrap_or_default()
}

fn is_whitespace(c: u8) -> bool {
    matches!(c, b' ' | b'\t' | b'\n' | b'\r')
}

fn skip_whitespace(b: &[u8], mut i: usize) -> usize {
    while b.get(i).copied().is_some_and(is_whitespace) {
        i += 1;
    }
    i
}

/// Given a key's opening quote at `i`: past the key, the colon and the whitespace around
/// it, where the value starts.
fn after_key(b: &[u8], i: usize) -> Option<usize> {
    if b.get(i) != Some(&b'"') {
        return None;
    }
    let colon = skip_whitespace(b, string_end(b, i + 1)?);
    (b.get(colon) == Some(&b':')).then(|| skip_whitespace(b, colon + 1))
}

/// Given the first byte inside a string at `i`: the index past its closing quote.
fn string_end(b: &[u8], mut i: usize) -> Option<usize> {
    loop {
        i = plain_run_end(b, i);
        match b.get(i)? {
            b'"' => return Some(i + 1),
            b'\\' => match b.get(i + 1)? {
                b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't' => i += 2,
                b'u' if b.get(i + 2..i + 6)?.iter().all(u8::is_ascii_hexdigit) => i += 6,
                _ => return None,
            },
            // A control character, which JSON strings may not hold raw.
            _ => return None,
        }
    }
}

/// The index of the first quote, backslash or control character at or after `i`, or the
/// end. The text is UTF-8 already, so other bytes need no look.
fn plain_run_end(b: &[u8], mut i: usize) -> usize {
    const LANES: usize = 32;
    // A fixed-size block with no early exit: the compiler checks it in a few vector steps.
    while let Some(block) = b.get(i..i + LANES) {
        let Ok(block) = <&[u8; LANES]>::try_from(block) else {
            break;
        };
        if block.iter().fold(false, |any, &c| any | is_special(c)) {
            break;
        }
        i += LANES;
    }
    while b.get(i).is_some_and(|&c| !is_special(c)) {
        i += 1;
    }
    i
}

/// Written without short-circuits, so that a block of them compiles to vector compares.
fn is_special(c: u8) -> bool {
    (c == b'"') | (c == b'\\') | (c < 0x20)
}

/// Given a number's first byte at `i`: the index past it.
fn number_end(b: &[u8], mut i: usize) -> Option<usize> {
    if b.get(i) == Some(&b'-') {
        i += 1;
    }
    match b.get(i)? {
        // A leading zero stands alone; a digit after it ends the check as not a value.
        b'0' => i += 1,
        b'1'..=b'9' => i = digits_end(b, i + 1),
        _ => return None,
    }
    if b.get(i) == Some(&b'.') {
        i = some_digits_end(b, i + 1)?;
    }
    if matches!(b.get(i), Some(b'e' | b'E')) {
        i += 1;
        if matches!(b.get(i), Some(b'+' | b'-')) {
            i += 1;
        }
        i = some_digits_end(b, i)?;
    }
    Some(i)
}

fn digits_end(b: &[u8], mut i: usize) -> usize {
    while b.get(i).is_some_and(u8::is_ascii_digit) {
        i += 1;
    }
    i
}

/// Like [`digits_end`], but at least one digit must be there.
fn some_digits_end(b: &[u8], i: usize) -> Option<usize> {
    let end = digits_end(b, i);
    (end > i).then_some(end)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn is_one_value(text: &str) -> bool {
        RawJson::checked(text).is_some()
    }

    fn serde_accepts(text: &str) -> bool {
        serde_json::from_str::<&RawValue>(text).is_ok()
    }

    #[test]
    fn accepts_what_serde_json_accepts() {
        for text in [
            r#""x""#,
            r#" {"kind":"description","sdp":"v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\n"} "#,
            r#"{"a":[1,-0,0.5,-1.25e+10,2E-3,true,false,null,{},[]],"b":{"c":"\u00e9\/"}}"#,
            "\"caf\u{e9} \u{1F600}\"",
            "[ 1 , [ 2 ] , { \"k\" : \"v\" } ]\n",
            "0",
            "\"a string longer than sixteen bytes, with \\\"quotes\\\" inside\"",
        ] {
            assert!(is_one_value(text), "{text}");
            assert!(serde_accepts(text), "{text}");
        }
    }

    #[test]
    fn refuses_what_serde_json_refuses() {
        for text in [
            "",
            " ",
            "01",
            "1.",
            ".5",
            "-",
            "1e",
            "+1",
            "tru",
            "nul",
            "[1,]",
            "{\"a\":1,}",
            "{\"a\" 1}",
            "{1:2}",
            "[1 2]",
            "[1}",
            "{\"a\":1]",
            "\"open",
            "\"bad \\x escape\"",
            "\"\\u12g4\"",
            "\"raw \u{1} control\"",
            "\"a long run of plain characters, then a raw tab\there\"",
            "1 2",
            "{} {}",
        ] {
            assert!(!is_one_value(text), "{text}");
            assert!(!serde_accepts(text), "{text}");
        }
    }

    #[test]
    fn leaves_deep_nesting_to_serde_json() {
        let nested = |depth: usize| format!("{}{}", "[".repeat(depth), "]".repeat(depth));
        assert!(is_one_value(&nested(MAX_DEPTH as usize)));
        assert!(!is_one_value(&nested(MAX_DEPTH as usize + 1)));
        assert!(serde_accepts(&nested(MAX_DEPTH as usize + 1)));
    }

    #[test]
    fn finds_where_a_value_ends() {
        assert_eq!(
            split_value(r#" {"a":"}"} ,"to":2}"#),
            Some((r#"{"a":"}"}"#, r#" ,"to":2}"#))
        );
        assert_eq!(split_value("12}"), Some(("12", "}")));
        assert_eq!(split_value("[1,2]]"), Some(("[1,2]", "]")));
        assert_eq!(split_value("01"), Some(("0", "1")));
        assert_eq!(split_value("{\"a\":1"), None);
    }

    #[test]
    fn keeps_the_value_without_the_whitespace_around_it() {
        let raw = RawJson::checked(" \n{\"a\": [1]}\t").expect("a value");
        assert_eq!(raw.get(), "{\"a\": [1]}");
        let from_serde: RawJson = serde_json::from_str(" \n{\"a\": [1]}\t").expect("a value");
        assert_eq!(raw, from_serde);
    }
}
