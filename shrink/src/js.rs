//! The JS glue's side of a renaming: identifiers found and replaced as whole tokens, never
//! inside a longer one.

use std::collections::{BTreeSet, HashMap};

fn is_identifier(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_' || c == '$'
}

/// The text cut into identifiers and what lies between them, in order.
fn tokens(js: &str) -> impl Iterator<Item = (bool, &str)> {
    let mut rest = js;
    std::iter::from_fn(move || {
        let first = rest.chars().next()?;
        let identifier = is_identifier(first);
        let end = rest
            .find(|c: char| is_identifier(c) != identifier)
            .unwrap_or(rest.len());
        let (token, after) = rest.split_at(end);
        rest = after;
        Some((identifier, token))
    })
}

/// Every identifier-like token in `js` (property names and words inside strings too).
pub fn identifiers(js: &str) -> BTreeSet<&str> {
    tokens(js)
        .filter(|&(identifier, _)| identifier)
        .map(|(_, token)| token)
        .collect()
}

/// The identifiers that follow `object.` in `js`.
pub fn members<'a>(js: &'a str, object: &str) -> BTreeSet<&'a str> {
    let mut found = BTreeSet::new();
    let mut previous = ("", "");
    for (identifier, token) in tokens(js) {
        if identifier && previous == (object, ".") {
            found.insert(token);
        }
        previous = (previous.1, token);
    }
    found
}

/// `js` with each token in `anywhere` replaced wherever it stands, and each token in
/// `members` replaced where it follows `object.` (the glue reaches exports as `wasm.name`).
pub fn rename(
    js: &str,
    anywhere: &HashMap<String, String>,
    object: &str,
    members: &HashMap<String, String>,
) -> String {
    let mut out = String::with_capacity(js.len());
    let mut previous = ("", "");
    for (identifier, token) in tokens(js) {
        let new = if !identifier {
            None
        } else if let Some(new) = anywhere.get(token) {
            Some(new)
        } else if previous == (object, ".") {
            members.get(token)
        } else {
            None
        };
        out.push_str(new.map_or(token, String::as_str));
        previous = (previous.1, token);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs.iter().map(|&(a, b)| (a.into(), b.into())).collect()
    }

    #[test]
    fn whole_tokens_are_renamed_and_members_only_after_the_object() {
        let js = "imports = { __wbg_f_01: function(a) { wasm.g_2(a); }, __wbg_f_012: 1 };\n\
                  function g_2() { return other.g_2 + wasm.g_2x; }";
        let renamed = rename(
            js,
            &map(&[("__wbg_f_01", "a1")]),
            "wasm",
            &map(&[("g_2", "b")]),
        );
        assert_eq!(
            renamed,
            "imports = { a1: function(a) { wasm.b(a); }, __wbg_f_012: 1 };\n\
             function g_2() { return other.g_2 + wasm.g_2x; }"
        );
    }

    #[test]
    fn identifiers_are_found_whole() {
        let found = identifiers("wasm.__wbg_x_1(arg0, 'é', $y)");
        assert_eq!(
            found.into_iter().collect::<Vec<_>>(),
            ["$y", "__wbg_x_1", "arg0", "wasm"]
        );
    }

    #[test]
    fn members_are_what_follows_the_object_and_a_dot() {
        let found = members(
            "wasm.a(wasm.b_1, other.c, wasm .d, xwasm.e); wasm.a",
            "wasm",
        );
        assert_eq!(found.into_iter().collect::<Vec<_>>(), ["a", "b_1"]);
    }

    #[test]
    fn text_that_is_not_renamed_is_kept_byte_for_byte() {
        let js = "const s = \"ünïcode\";\n\twasm . x;";
        assert_eq!(rename(js, &map(&[]), "wasm", &map(&[("x", "y")])), js);
    }
}
