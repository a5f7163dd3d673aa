#!/usr/bin/env bash
# Start the fixture registries on loopback and fill them with deterministic synthetic images.
# Idempotent: a running registry with the same config is kept, a filled set is not refilled.
#
#   hack/registry-fixture.sh [start|stop]
#
# Registries (Debian's docker-registry, distribution 2.8):
#   127.0.0.1:$KPBUILD_FIXTURE_PORT (5710)  read-write, set "main" (24 images, see
#        sync/examples/fixture-images.rs); list in $KPBUILD_FIXTURE_DIR/main.list
#   127.0.0.1:$((PORT+1)) (5711)  the same storage, read-only, htpasswd basic auth
#        (user kpbuild, password in $KPBUILD_FIXTURE_DIR/auth/password)
#   127.0.0.1:$((PORT+2)) (5712)  set "bad": bad/corrupt:v1 has a layer whose bytes on disk
#        do not match its digest; bad/fine:v1 is intact
# Access logs (one line per request): target/registries/registry-<name>/log.
set -euo pipefail
# shellcheck source=hack/lib/common.sh
. "$(dirname "$0")/lib/common.sh"
. hack/lib/build.sh
. hack/lib/registry.sh
FIX=${KPBUILD_FIXTURE_DIR:-$ROOT/target/fixture}
PORT=${KPBUILD_FIXTURE_PORT:-5710}
AUTH_PORT=$((PORT + 1))
BAD_PORT=$((PORT + 2))
GEN_SRC=$ROOT/sync/examples/fixture-images.rs

if [ "${1:-start}" = stop ]; then
  for n in fixture fixture-auth fixture-bad; do registry_stop "$n"; done
  exit 0
fi

mkdir -p "$FIX"
stamp=$(sha256sum "$GEN_SRC" | cut -c1-16)

filled() { [ "$(cat "$FIX/$1.stamp" 2>/dev/null)" = "$stamp" ] && [ -s "$FIX/$1.list" ]; }

fresh_storage() { # NAME SET STORAGE: a generator change means new content: start empty
  if ! filled "$2"; then
    registry_stop "$1"
    rm -rf "$3" "$FIX/$2".*
  fi
}

generate() { # SET PORT
  local set=$1 port=$2
  filled "$set" && return 0
  say "filling set $set on 127.0.0.1:$port"
  build_binaries
  "$FIXTURE_IMAGES" --registry "127.0.0.1:$port" --set "$set" --out "$FIX/$set" >&2
  echo "$stamp" > "$FIX/$set.stamp"
}

# main
fresh_storage fixture main "$FIX/storage"
registry_start fixture "$PORT" "$FIX/storage" rw
generate main "$PORT"

# basic auth over the same storage, read-only
mkdir -p "$FIX/auth"
if [ ! -s "$FIX/auth/htpasswd" ]; then
  command -v htpasswd >/dev/null || fail "htpasswd not found (apt-get install apache2-utils)"
  echo "kpbuild-fixture-password" > "$FIX/auth/password"
  htpasswd -Bbn kpbuild "$(cat "$FIX/auth/password")" > "$FIX/auth/htpasswd"
fi
registry_start fixture-auth "$AUTH_PORT" "$FIX/storage" ro "$FIX/auth/htpasswd"

# bad: push, then damage one layer on disk (same length, other bytes)
fresh_storage fixture-bad bad "$FIX/storage-bad"
registry_start fixture-bad "$BAD_PORT" "$FIX/storage-bad" rw
generate bad "$BAD_PORT"
corrupt=$(awk -F'\t' '$1=="corrupt-payload"{print $2}' "$FIX/bad.layers.tsv")
hex=${corrupt#sha256:}
data=$FIX/storage-bad/docker/registry/v2/blobs/sha256/${hex:0:2}/$hex/data
[ -f "$data" ] || fail "$data missing"
printf 'CORRUPTED-BY-KPBUILD-FIXTURE' | dd of="$data" bs=1 seek=4096 conv=notrunc status=none
echo "$corrupt" > "$FIX/bad.corrupt-digest"

say "main 127.0.0.1:$PORT ($(wc -l < "$FIX/main.list") refs, $FIX/main.list), auth 127.0.0.1:$AUTH_PORT, bad 127.0.0.1:$BAD_PORT"
