//! `signalroom-shrink [DIR]`: shortens the names the page's WASM and JS glue share, in the
//! page trunk built in DIR (default: trunk's `TRUNK_STAGING_DIR`). Trunkfile.toml runs it
//! after every build; see the library's documentation for what it does and why.

use std::path::PathBuf;

use anyhow::Context;

fn main() -> anyhow::Result<()> {
    let dir = std::env::args_os()
        .nth(1)
        .or_else(|| std::env::var_os("TRUNK_STAGING_DIR"))
        .map(PathBuf::from)
        .context("usage: signalroom-shrink DIR (or run by trunk, with TRUNK_STAGING_DIR set)")?;
    let shrunk = signalroom_shrink::page(&dir)?;
    println!(
        "signalroom-shrink: {} imports and {} exports renamed; glue {} -> {} bytes, WASM {} -> {} bytes",
        shrunk.imports, shrunk.exports, shrunk.js.0, shrunk.js.1, shrunk.wasm.0, shrunk.wasm.1
    );
    Ok(())
}
