#!/usr/bin/env bash
# Prints the gzipped size of the built page (html, js, wasm, css in dist/) and checks it
# against the page's budget: 64 KiB gzipped, or SIZE_BUDGET_BYTES. Exits 1 when over it.
#
#   scripts/size.sh [DIST]          the page in DIST (default: dist/)
#   scripts/size.sh --twiggy [N]    where the WASM's bytes go: builds it keeping function
#                                   names (wasm-opt as trunk runs it, plus -g) and prints
#                                   twiggy's N largest items (default 40), sizes before gzip.
#                                   Needs `cargo install twiggy` and scripts/setup.sh's tools.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)

if [[ "${1:-}" == "--twiggy" ]]; then
    top="${2:-40}"
    command -v twiggy >/dev/null || { echo "twiggy not found: cargo install twiggy" >&2; exit 1; }
    cd "$root"
    CARGO_PROFILE_WASM_RELEASE_STRIP=false \
        cargo build -q -p signalroom-client-wasm --target wasm32-unknown-unknown --profile wasm-release
    target=$(cargo metadata --format-version 1 --no-deps |
        grep -o '"target_directory":"[^"]*"' | cut -d'"' -f4)
    out=$(mktemp -d)
    trap 'rm -rf "$out"' EXIT
    wasm-bindgen --target web --keep-debug --out-dir "$out" \
        "$target/wasm32-unknown-unknown/wasm-release/signalroom_client_wasm.wasm"
    # The same wasm-opt run as trunk's (www/index.html), keeping names but no DWARF.
    read -r -a params <<<"$(sed -n 's/.*data-wasm-opt-params="\([^"]*\)".*/\1/p' www/index.html)"
    wasm-opt -Oz "${params[@]}" -g --strip-dwarf -o "$out/named.wasm" "$out/signalroom_client_wasm_bg.wasm"
    twiggy top -n "$top" "$out/named.wasm"
    exit 0
fi

dist="${1:-$root/dist}"
budget="${SIZE_BUDGET_BYTES:-65536}"
total=0
for file in "$dist"/*.html "$dist"/*.js "$dist"/*.wasm "$dist"/*.css; do
    [[ -f "$file" ]] || continue
    raw=$(wc -c < "$file")
    gz=$(gzip -9 -c "$file" | wc -c)
    total=$((total + gz))
    printf '%-48s %8d bytes  %8d gzipped\n' "$(basename "$file")" "$raw" "$gz"
done
printf 'page total, gzipped: %d bytes (%d KiB)\n' "$total" $(((total + 1023) / 1024))
if ((total > budget)); then
    printf 'over the budget of %d bytes by %d bytes\n' "$budget" $((total - budget)) >&2
    exit 1
fi
printf 'budget %d bytes: %d to spare\n' "$budget" $((budget - total))
