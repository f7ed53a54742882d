#!/usr/bin/env bash
# Prints the gzipped size of the built page (html, js, wasm, css in dist/).
set -euo pipefail
dist="${1:-$(dirname "$0")/../dist}"
total=0
for file in "$dist"/*.html "$dist"/*.js "$dist"/*.wasm "$dist"/*.css; do
    [[ -f "$file" ]] || continue
    raw=$(wc -c < "$file")
    gz=$(gzip -9 -c "$file" | wc -c)
    total=$((total + gz))
    printf '%-48s %8d bytes  %8d gzipped\n' "$(basename "$file")" "$raw" "$gz"
done
printf 'page total, gzipped: %d bytes (%d KiB)\n' "$total" $(((total + 1023) / 1024))
