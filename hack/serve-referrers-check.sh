#!/usr/bin/env bash
# kpbuild serve's referrers API (OCI 1.1) and the distribution spec's error table, with real
# clients, over a small bundle made here (hack/py/referrers.py fixture): no Docker, no BuildKit,
# no fixture server.
#
#   hack/serve-referrers-check.sh KPBUILD PORT
#
# KPBUILD  the kpbuild binary (e.g. target/debug/kpbuild, or the build stage's)
# PORT     a free loopback port for kpbuild serve (e.g. 6420; not the fixtures' 57xx, 58xx, 80xx)
#
# oras-py (ORAS's Python client, in target/pytools: hack/setup.sh) lists the referrers of each
# subject, filtered and not, fetches every manifest listed and pulls the signature
# (hack/py/referrers.py check); skopeo reads the image, a referrer by digest, and is told
# "manifest unknown" for a missing tag and digest; curl (and, for HEAD, a raw request over
# bash's /dev/tcp, since curl never reads a HEAD's body) sends what skopeo will not (an invalid
# tag, `.INVALID_MANIFEST_NAME`, and a malformed digest): 404 MANIFEST_UNKNOWN to GET and HEAD
# (HEAD without a body), and an unknown route 404 without a JSON error body. Work files and
# the server's log are in target/serve-referrers/.
set -euo pipefail
[ $# -eq 2 ] || { sed -n '2,11p' "$0" >&2; exit 2; }
KPBUILD=$(realpath "$1") PORT=$2
# shellcheck source=hack/lib/common.sh
. "$(dirname "$0")/lib/common.sh"
PYTOOLS=${KPBUILD_PYTOOLS:-$ROOT/target/pytools}
[ -x "$KPBUILD" ] || fail "$1 is not an executable kpbuild"
case $PORT in 57??|58??|80??|8100|81[01]?) fail "port $PORT is one the fixtures or e2e stages use; take another (e.g. 6420)";; esac
"$PYTOOLS/bin/python3" -c 'import oras.client' 2>/dev/null \
  || fail "oras-py is missing from $PYTOOLS; run hack/setup.sh (it installs oras from PyPI)"
command -v skopeo >/dev/null || fail "skopeo is missing; run hack/setup.sh"
WORK=$ROOT/target/serve-referrers
rm -rf "$WORK" && mkdir -p "$WORK"
KP=$WORK/bundle
REG=127.0.0.1:$PORT

log "a bundle with an image and its referrers"
py referrers fixture "$KP"
EXPECT=$KP/expect.json
subject=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["subject"])' "$EXPECT")
sig=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["signature"]["digest"])' "$EXPECT")

log "kpbuild serve on $REG"
"$KPBUILD" serve "$KP" --listen "$REG" --log-requests > "$WORK/serve.log" 2>&1 &
SERVE_PID=$!
on_exit "kill -TERM $SERVE_PID 2>/dev/null || true"
for _ in $(seq 100); do
  curl -fsS -o /dev/null "http://$REG/-/healthy" 2>/dev/null && break
  kill -0 "$SERVE_PID" 2>/dev/null || { cat "$WORK/serve.log" >&2; fail "kpbuild serve exited"; }
  sleep 0.1
done
curl -fsS -o /dev/null "http://$REG/-/healthy" || { cat "$WORK/serve.log" >&2; fail "kpbuild serve does not answer on $REG"; }
grep -q "(5 referrers)" "$WORK/serve.log" || flunk "kpbuild serve counted 5 referrers when it started"

log "oras-py: the referrers API"
check "oras-py: referrers listed, filtered, fetched and pulled (hack/py/referrers.py check)" \
  "$PYTOOLS/bin/python3" hack/py/referrers.py check --registry "$REG" --expect "$EXPECT" --work "$WORK"

log "skopeo"
skopeo_inspect() { skopeo inspect --tls-verify=false "$@"; }
same() { [ "$1" = "$2" ] || { echo "$1, not $2" >&2; return 1; }; }
check "skopeo inspect lib/app:v1: the image's digest" \
  same "$(skopeo_inspect --format '{{.Digest}}' "docker://$REG/lib/app:v1")" "$subject"
check "skopeo inspect --raw of the signature by digest: those bytes" \
  same "sha256:$(skopeo_inspect --raw "docker://$REG/lib/app@$sig" | sha256sum | cut -d' ' -f1)" "$sig"
unknown() { # REF — skopeo fails and says why
  local out
  if out=$(skopeo_inspect --raw "docker://$REG/$1" 2>&1); then return 1; fi
  grep -qi "manifest unknown" <<< "$out" || { echo "$out" >&2; return 1; }
}
check "skopeo inspect lib/app:v2: manifest unknown" unknown lib/app:v2
check "skopeo inspect lib/app@sha256:0…: manifest unknown" unknown "lib/app@sha256:$(printf '0%.0s' {1..64})"

log "curl: what no client sends"
raw_head() { # PATH — the raw response to a HEAD over bash's /dev/tcp (the server closes after it)
  local fd
  exec {fd}<>"/dev/tcp/127.0.0.1/$PORT"
  printf 'HEAD %s HTTP/1.1\r\nHost: %s\r\nConnection: close\r\n\r\n' "$1" "$REG" >&"$fd"
  timeout 10 cat <&"$fd"
  exec {fd}>&-
}
answer() { # METHOD PATH STATUS CODE|- — the status, and the JSON error's code (- for none)
  local status
  if [ "$1" = HEAD ]; then
    raw_head "$2" > "$WORK/head"
    status=$(head -1 "$WORK/head" | cut -d' ' -f2)
    [ "$status" = "$3" ] || { echo "HEAD $2: $status, not $3" >&2; return 1; }
    grep -qi '^content-length: [1-9]' "$WORK/head" || { echo "HEAD $2: no Content-Length of the GET's body" >&2; return 1; }
    # Nothing after the blank line that ends the headers.
    [ -z "$(sed '1,/^\r\?$/d' "$WORK/head")" ] || { echo "HEAD $2: a body" >&2; return 1; }
    return 0
  fi
  status=$(curl -s -o "$WORK/body" -w '%{http_code}' -X "$1" "http://$REG$2")
  [ "$status" = "$3" ] || { echo "$1 $2: $status, not $3" >&2; return 1; }
  if [ "$4" = - ]; then
    ! grep -q '"errors"' "$WORK/body" || { echo "$1 $2: a JSON error body" >&2; return 1; }
  else
    python3 -c 'import json,sys; sys.exit(json.load(open(sys.argv[1]))["errors"][0]["code"] != sys.argv[2])' \
      "$WORK/body" "$4" || { echo "$1 $2: $(cat "$WORK/body")" >&2; return 1; }
  fi
}
for ref in .INVALID_MANIFEST_NAME -x sha256:zz; do
  for m in GET HEAD; do
    check "$m /v2/lib/app/manifests/$ref: 404 MANIFEST_UNKNOWN" answer "$m" "/v2/lib/app/manifests/$ref" 404 MANIFEST_UNKNOWN
  done
done
check "GET /v2/lib/app/blobs/sha256:zz: 400 DIGEST_INVALID" answer GET /v2/lib/app/blobs/sha256:zz 400 DIGEST_INVALID
check "PUT /v2/lib/app/manifests/v2: 405 UNSUPPORTED" answer PUT /v2/lib/app/manifests/v2 405 UNSUPPORTED
check "GET /v2/lib/app/nothing: 404, no JSON error body" answer GET /v2/lib/app/nothing 404 -

kill -TERM "$SERVE_PID"
wait "$SERVE_PID" || true
check "kpbuild serve stopped with its per-client summary" grep -q "client 127.0.0.1: [0-9]* requests" "$WORK/serve.log"
checks_done
