//! Shortens the names the page's WASM and its JS glue share, after trunk has built the page
//! (its post-build hook, Trunkfile.toml).
//!
//! wasm-bindgen names each browser function the page calls `__wbg_<name>_<16 hex digits>`,
//! once in the WASM's import section and again in the JS glue that provides it, and the
//! glue reaches the WASM's own exports by names as long. Hex digits do not compress: about
//! 180 such names were some 5.6 KB of the page's gzipped 64 KiB. [`glue`] gives each a
//! name of one or two letters on both sides; [`page`] does that to a built page and renames
//! the two files after their new content, with `index.html`'s references and its
//! subresource-integrity hashes to match.
//!
//! Code map: [`wasm`] reads and rewrites a module's import and export names; [`js`] finds
//! and replaces identifiers in the glue. Neither knows about the other; this file pairs them.

pub mod js;
pub mod wasm;

use std::collections::{BTreeSet, HashMap};
use std::fs;
use std::path::Path;

use anyhow::{ensure, Context, Result};
use base64::Engine as _;
use sha2::{Digest, Sha384};

use wasm::Name;

/// How the glue reaches the module's exports (wasm-bindgen's `--target web` output).
const EXPORTS_OBJECT: &str = "wasm";

/// The glue and the module with their shared names shortened, and how many were.
#[derive(Debug)]
pub struct Glue {
    pub js: String,
    pub wasm: Vec<u8>,
    pub imports: usize,
    pub exports: usize,
}

/// Renames wasm-bindgen's imports (`__wbg_…`, `__wbindgen_…`), the module they come from,
/// and the exports the glue reaches as `wasm.name`, in both `js` and `wasm`. Names the
/// glue does not use as wasm-bindgen does are left as they are.
pub fn glue(js: &str, wasm: &[u8]) -> Result<Glue> {
    let taken = js::identifiers(js);
    let reached = js::members(js, EXPORTS_OBJECT);
    let mut fresh = ShortNames {
        taken: &taken,
        next: 0,
    };
    let (mut modules, mut imports, mut exports) = (HashMap::new(), HashMap::new(), HashMap::new());
    for name in wasm::names(wasm)? {
        match name {
            Name::ImportModule(module) if !modules.contains_key(module) => {
                ensure!(
                    js.contains(&quoted(module)),
                    "the glue does not provide the module {module:?}: is it this WASM's glue?"
                );
                modules.insert(module.to_owned(), fresh.next());
            }
            Name::ImportField(field)
                if (field.starts_with("__wbg_") || field.starts_with("__wbindgen_"))
                    && !imports.contains_key(field) =>
            {
                ensure!(
                    taken.contains(field),
                    "the glue does not provide {field}: is it this WASM's glue?"
                );
                imports.insert(field.to_owned(), fresh.next());
            }
            Name::Export(export) if reached.contains(export) => {
                exports.insert(export.to_owned(), fresh.next());
            }
            _ => {}
        }
    }
    let wasm = wasm::rename(wasm, |name| match name {
        Name::ImportModule(module) => modules.get(module).cloned(),
        Name::ImportField(field) => imports.get(field).cloned(),
        Name::Export(export) => exports.get(export).cloned(),
    })?;
    let mut js = js::rename(js, &imports, EXPORTS_OBJECT, &exports);
    for (old, new) in &modules {
        js = js.replace(&quoted(old), &quoted(new));
    }
    Ok(Glue {
        js,
        wasm,
        imports: imports.len(),
        exports: exports.len(),
    })
}

fn quoted(text: &str) -> String {
    format!("\"{text}\"")
}

/// Names of one letter, then two, …, skipping the glue's own identifiers and JS's reserved
/// words of that length (a name may end up a function's).
struct ShortNames<'a> {
    taken: &'a BTreeSet<&'a str>,
    next: usize,
}

impl ShortNames<'_> {
    const LETTERS: &'static [u8] = b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ";
    const RESERVED: &'static [&'static str] =
        &["do", "if", "in", "for", "let", "new", "try", "var"];

    fn next(&mut self) -> String {
        loop {
            let mut n = self.next;
            self.next += 1;
            let mut name = Vec::new();
            loop {
                name.push(Self::LETTERS[n % Self::LETTERS.len()]);
                n /= Self::LETTERS.len();
                if n == 0 {
                    break;
                }
                n -= 1;
            }
            let name = String::from_utf8(name).unwrap_or_default();
            if !self.taken.contains(name.as_str()) && !Self::RESERVED.contains(&name.as_str()) {
                return name;
            }
        }
    }
}

/// What [`page`] did.
#[derive(Debug)]
pub struct Shrunk {
    pub imports: usize,
    pub exports: usize,
    /// The JS glue's and the WASM's sizes, before and after.
    pub js: (usize, usize),
    pub wasm: (usize, usize),
}

/// Shrinks the page trunk built in `dir`: its one `<stem>_bg.wasm`, the glue `<stem>.js`,
/// and `index.html`. When `<stem>` ends in trunk's 16-hex-digit hash, the files are named
/// after their new content instead, so that a name still stands for one content.
pub fn page(dir: &Path) -> Result<Shrunk> {
    let wasms: Vec<String> = fs::read_dir(dir)
        .with_context(|| format!("reading {}", dir.display()))?
        .filter_map(|entry| entry.ok()?.file_name().into_string().ok())
        .filter(|name| name.ends_with("_bg.wasm"))
        .collect();
    let [wasm_name] = wasms.as_slice() else {
        anyhow::bail!(
            "{} holds {} *_bg.wasm files, not one",
            dir.display(),
            wasms.len()
        );
    };
    let stem = wasm_name.trim_end_matches("_bg.wasm");
    let read = |name: &str| fs::read(dir.join(name)).with_context(|| format!("reading {name}"));
    let old_wasm = read(wasm_name)?;
    let old_js =
        String::from_utf8(read(&format!("{stem}.js"))?).context("the glue is not UTF-8")?;
    let html = String::from_utf8(read("index.html")?).context("index.html is not UTF-8")?;

    let new = glue(&old_js, &old_wasm)?;
    let new_stem = match trunk_hashed(stem) {
        Some(base) => {
            let digest = Sha384::new()
                .chain_update(&new.js)
                .chain_update(&new.wasm)
                .finalize();
            let hex: String = digest[..8].iter().map(|b| format!("{b:02x}")).collect();
            format!("{base}-{hex}")
        }
        _ => stem.to_owned(),
    };
    let html = html
        .replace(stem, &new_stem)
        .replace(&integrity(old_js.as_bytes()), &integrity(new.js.as_bytes()))
        .replace(&integrity(&old_wasm), &integrity(&new.wasm));

    let write = |name: &str, bytes: &[u8]| {
        fs::write(dir.join(name), bytes).with_context(|| format!("writing {name}"))
    };
    for old in [format!("{stem}.js"), wasm_name.clone()] {
        fs::remove_file(dir.join(&old)).with_context(|| format!("removing {old}"))?;
    }
    write(&format!("{new_stem}.js"), new.js.as_bytes())?;
    write(&format!("{new_stem}_bg.wasm"), &new.wasm)?;
    write("index.html", html.as_bytes())?;
    Ok(Shrunk {
        imports: new.imports,
        exports: new.exports,
        js: (old_js.len(), new.js.len()),
        wasm: (old_wasm.len(), new.wasm.len()),
    })
}

/// A subresource-integrity value, as trunk writes them.
/// The base of a name trunk hashed (`NAME-<hash>`), or `None`. Trunk writes its 64-bit hash
/// in hex without leading zeros: up to 16 digits, fewer one time in sixteen. The name
/// given in its place always has 16, as the relay expects of a name it may cache for good.
fn trunk_hashed(stem: &str) -> Option<&str> {
    let (base, hash) = stem.rsplit_once('-')?;
    let hex = (1..=16).contains(&hash.len()) && hash.bytes().all(|b| b.is_ascii_hexdigit());
    hex.then_some(base)
}

fn integrity(bytes: &[u8]) -> String {
    let digest = Sha384::digest(bytes);
    format!(
        "sha384-{}",
        base64::engine::general_purpose::STANDARD.encode(digest)
    )
}

#[cfg(test)]
mod tests {
    #[test]
    fn trunk_hashes_of_any_width_are_recognized() {
        assert_eq!(
            super::trunk_hashed("signalroom-client-wasm-80cb42e2e572e0da"),
            Some("signalroom-client-wasm")
        );
        assert_eq!(
            super::trunk_hashed("signalroom-client-wasm-649c688381543fc"),
            Some("signalroom-client-wasm"),
            "a hash with a leading zero left out"
        );
        assert_eq!(super::trunk_hashed("signalroom-client-wasm"), None);
        assert_eq!(super::trunk_hashed("app-0123456789abcdef0"), None);
    }

    use super::*;

    #[test]
    fn short_names_skip_the_glues_identifiers_and_reserved_words() {
        let taken = BTreeSet::from(["a", "c"]);
        let mut names = ShortNames {
            taken: &taken,
            next: 0,
        };
        let first: Vec<String> = (0..3).map(|_| names.next()).collect();
        assert_eq!(first, ["b", "d", "e"]);
        let all: Vec<String> = (0..200).map(|_| names.next()).collect();
        assert!(all.contains(&"aa".to_owned()) && !all.contains(&"do".to_owned()));
        assert_eq!(
            all.iter().collect::<BTreeSet<_>>().len(),
            all.len(),
            "all distinct"
        );
    }
}
