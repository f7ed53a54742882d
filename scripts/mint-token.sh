#!/usr/bin/env bash
# Mints a room token with openssl alone: scripts/mint-token.sh SECRET_FILE [ROOM] [SECONDS]
# Prints an HS256 JWT signed with the secret in SECRET_FILE (the relay's --auth-secret-file),
# valid for SECONDS (default 3600), admitting ROOM, or any room when ROOM is empty or not
# given. ROOM goes into JSON as it is: a name with " or \ needs escaping first.
set -euo pipefail
secret_file=$1 room=${2:-} ttl=${3:-3600}
b64url() { openssl base64 -A | tr '+/' '-_' | tr -d '='; }
claims="{\"exp\":$(( $(date +%s) + ttl ))${room:+,\"room\":\"$room\"}}"
header=$(printf '%s' '{"alg":"HS256","typ":"JWT"}' | b64url)
payload=$(printf '%s' "$claims" | b64url)
signature=$(printf '%s.%s' "$header" "$payload" | openssl dgst -sha256 -hmac "$(cat "$secret_file")" -binary | b64url)
echo "$header.$payload.$signature"
