#!/usr/bin/env bash
# Part of the bundle stage (hack/stages/bundle.sh runs it): kpbuild serve, end to end, from an
# unpacked bundle and with real clients only.
#
#   hack/stages/bundle/serve.sh BUNDLE WORK PACKAGES
#
# BUNDLE   the kubeplay tree (kubeplay.lock.json at its root), e.g. an untarred amd64 bundle
# WORK     a directory for logs and pulls (emptied first)
# PACKAGES a file with the package names apt-get installs from the served repository
#
# Environment: KPBUILD_SERVE_UPSTREAM (host:port of the registry the bundle's images came from:
# each tag's digest must also equal upstream's there), KPBUILD_DOCKER_ROOT (the private dockerd,
# hack/dockerd.sh). kpbuild is hack/lib/build.sh's.
#
# Over plain HTTP, then over TLS with a CA made by `--tls-self-signed`: skopeo copies every image
# for amd64 and arm64 with the manifest's digests (and upstream's), `docker pull` through the
# Docker daemon, `ctr image pull` (containerd's client, every platform) through the daemon's
# containerd, curl of every file with its sha256, `apt-get install` of PACKAGES in a clean
# container whose only source is the served repository. Then bad requests, each refused while
# the server keeps serving (hack/py/serve_bad.py): traversal in every position and spelling,
# symbolic links placed in the bundle (files and registry), a huge header, a slowloris client,
# pushes; and a bundle that fails `verify --no-hash` is refused at start. The bundle is left as
# it was found.
set -euo pipefail
[ $# -eq 3 ] || { sed -n '2,11p' "$0" >&2; exit 2; }
KP=$(cd "$1" && pwd) WORK=$(realpath -m "$2") PKGS=$(realpath -m "$3")
# shellcheck source=hack/lib/common.sh
. "$(dirname "$0")/../../lib/common.sh"
NAME=bundle-serve
. hack/lib/build.sh
. hack/lib/apt.sh
build_binaries
LOCK=$KP/kubeplay.lock.json
[ -f "$LOCK" ] || fail "$KP has no kubeplay.lock.json"
if [ ! -f "$PKGS" ] || [ -z "$(tr -d '[:space:]' < "$PKGS")" ]; then
  fail "$3 is not a file of package names"
fi
rm -rf "$WORK" && mkdir -p "$WORK"
# Ports of this stage (8100-8119 and 5820-5839 are kpbuild serve's in the tests).
PORT=8101 REG_PORT=5821 TLS_PORT=8103
use_dockerd
CTR_SOCK=${KPBUILD_DOCKER_ROOT:-/var/lib/kpbuild-docker}/exec/containerd/containerd.sock
NS=kpbuild-serve-e2e
CERTS_D=/etc/docker/certs.d/127.0.0.1:$TLS_PORT
CACERT=

declare -A PIDS=()
serve_start() { # NAME URL-FOR-HEALTH ARGS…
  local name=$1 url=$2; shift 2
  "$KPBUILD" serve "$KP" "$@" > "$WORK/$name.log" 2>&1 &
  PIDS[$name]=$!
  for _ in $(seq 100); do
    curl -fsS -o /dev/null ${CACERT:+--cacert "$CACERT"} "$url/-/healthy" 2>/dev/null && return 0
    kill -0 "${PIDS[$name]}" 2>/dev/null || { cat "$WORK/$name.log" >&2; fail "kpbuild serve ($name) exited"; }
    sleep 0.2
  done
  cat "$WORK/$name.log" >&2; fail "kpbuild serve ($name) does not answer $url/-/healthy"
}
serve_stop() { # NAME — SIGTERM; the log must end with the per-client summary
  local pid=${PIDS[$1]:-}
  [ -n "$pid" ] || return 0
  kill -TERM "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
  unset "PIDS[$1]"
  grep -q "client 127.0.0.1: [0-9]* requests, [0-9]* bytes" "$WORK/$1.log" \
    || { tail -5 "$WORK/$1.log" >&2; fail "kpbuild serve ($1): no per-client summary when stopped"; }
  grep "client 127.0.0.1" "$WORK/$1.log" | sed "s/^/$1: /" >&2
}

# What the checks place in the bundle, removed again whatever happens.
PLACED=()
cleanup() {
  local n
  for n in "${!PIDS[@]}"; do kill -TERM "${PIDS[$n]}" 2>/dev/null || true; done
  for n in "${PLACED[@]}"; do rm -f "$n"; done
  [ ! -e "$WORK/moved-data" ] || mv "$WORK/moved-data" "$(cat "$WORK/moved-data.path")"
  [ ! -e "$WORK/moved-link" ] || mv "$WORK/moved-link" "$(cat "$WORK/moved-link.path")"
  rm -rf "$CERTS_D"
  ctr -a "$CTR_SOCK" -n "$NS" image ls -q 2>/dev/null | xargs -r ctr -a "$CTR_SOCK" -n "$NS" image rm --sync >/dev/null 2>&1 || true
  ctr -a "$CTR_SOCK" namespaces rm "$NS" >/dev/null 2>&1 || true
  "$DOCKER" images --format '{{.Repository}}:{{.Tag}}' 2>/dev/null | grep -E "^127\.0\.0\.1:($PORT|$TLS_PORT)/" | xargs -r "$DOCKER" rmi >/dev/null 2>&1 || true
}
on_exit cleanup

# Every image for amd64 and arm64 with skopeo (hack/py/served.py), `docker pull` and `ctr image
# pull` from PORT. SCHEME is http or https (then CACERT is the CA).
pull_all() { # SCHEME PORT
  local scheme=$1 port=$2 img digest n=0
  py served images --registry "127.0.0.1:$port" --lock "$LOCK" --arch amd64 --arch arm64 --work "$WORK/pull-$scheme" \
    ${KPBUILD_SERVE_UPSTREAM:+--upstream "$KPBUILD_SERVE_UPSTREAM"} ${CACERT:+--cacert "$CACERT"} || fail "pulls over $scheme"
  while read -r img digest; do
    "$DOCKER" pull -q "127.0.0.1:$port/$img" > "$WORK/docker-pull.log" 2>&1 || { cat "$WORK/docker-pull.log" >&2; fail "docker pull 127.0.0.1:$port/$img over $scheme"; }
    "$DOCKER" image inspect --format '{{join .RepoDigests " "}}' "127.0.0.1:$port/$img" | grep -q "@$digest" \
      || fail "docker pull 127.0.0.1:$port/$img: not $digest"
    "$DOCKER" rmi "127.0.0.1:$port/$img" >/dev/null
    # Over TLS, ctr trusts the CA through a hosts.toml (what `--tls-self-signed` prints).
    local how=(--plain-http)
    [ "$scheme" = https ] && how=(--hosts-dir "$WORK/hosts")
    ctr -a "$CTR_SOCK" -n "$NS" image pull --all-platforms "${how[@]}" "127.0.0.1:$port/$img" > "$WORK/ctr-pull.log" 2>&1 \
      || { tail -5 "$WORK/ctr-pull.log" >&2; fail "ctr image pull 127.0.0.1:$port/$img over $scheme"; }
    ctr -a "$CTR_SOCK" -n "$NS" image ls | grep -q "127.0.0.1:$port/$img .*$digest" \
      || fail "ctr image pull 127.0.0.1:$port/$img: not $digest"
    ctr -a "$CTR_SOCK" -n "$NS" image rm --sync "127.0.0.1:$port/$img" >/dev/null
    n=$((n + 1))
  done < <(py lock images "$LOCK")
  say "docker pull (amd64) and ctr image pull --all-platforms over $scheme: $n images each, with the manifest's digests"
}

files_and_apt() { # SCHEME PORT
  local scheme=$1 port=$2
  py served files --lock "$LOCK" --base-url "$scheme://127.0.0.1:$port" ${CACERT:+--cacert "$CACERT"} \
    || fail "files over $scheme"
  apt_install debian:bookworm "$scheme://127.0.0.1:$port/debian/amd64/bookworm/" "$PKGS" "" "$CACERT" \
    > "$WORK/apt-$scheme.log" 2>&1 || { cat "$WORK/apt-$scheme.log" >&2; fail "apt-get install over $scheme"; }
  say "$(tail -1 "$WORK/apt-$scheme.log")"
}

log "a bundle failing verify --no-hash is refused at start"
link=$(find "$KP/resources/registry/docker/registry/v2/repositories" -path '*/_manifests/tags/*/current/link' | sort | sed -n 1p)
echo "$link" > "$WORK/moved-link.path" && mv "$link" "$WORK/moved-link"
if "$KPBUILD" serve "$KP" --listen "127.0.0.1:$PORT" > "$WORK/refused.log" 2>&1; then fail "kpbuild serve started on a damaged bundle"; fi
if ! grep -q "verify --no-hash" "$WORK/refused.log" || ! grep -q "${link#"$KP"/}" "$WORK/refused.log"; then
  cat "$WORK/refused.log" >&2; fail "the refusal does not name the missing link"
fi
mv "$WORK/moved-link" "$link"
say "refused: $(grep -m1 FAULT "$WORK/refused.log")"

log "plain HTTP on 127.0.0.1:$PORT (registry and files) and :$REG_PORT (registry alone)"
serve_start plain "http://127.0.0.1:$PORT" --listen "127.0.0.1:$PORT" --registry-listen "127.0.0.1:$REG_PORT" \
  --header-timeout 2 --idle-timeout 5 --log-requests
head -3 "$WORK/plain.log" >&2
[ "$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$REG_PORT/repos/")" = 404 ] || fail "the registry-only address serves files"
[ "$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$REG_PORT/v2/")" = 200 ] || fail "the registry-only address does not answer /v2/"
pull_all http "$PORT"
files_and_apt http "$PORT"

log "bad requests, each refused while the server keeps serving"
read -r first_image _ < <(py lock images "$LOCK")
blob_repo=${first_image%:*}
blob=$(find "$KP/resources/registry/docker/registry/v2/repositories/$blob_repo/_layers" -name link | sort | sed -n 1p | xargs cat)
data=$KP/resources/registry/docker/registry/v2/blobs/sha256/${blob:7:2}/${blob#sha256:}/data
ln -s ../../../../kubeplay.lock.json "$KP/resources/nginx/files/leak-rel" && PLACED+=("$KP/resources/nginx/files/leak-rel")
ln -s /etc/passwd "$KP/resources/nginx/files/leak-abs" && PLACED+=("$KP/resources/nginx/files/leak-abs")
ln -s /etc "$KP/resources/nginx/leak-dir" && PLACED+=("$KP/resources/nginx/leak-dir")
ln -s debian "$KP/resources/nginx/inside" && PLACED+=("$KP/resources/nginx/inside")
echo "$data" > "$WORK/moved-data.path" && mv "$data" "$WORK/moved-data" && ln -s /etc/passwd "$data"
py serve_bad --port "$PORT" --bundle "$KP" --blob-repo "$blob_repo" --blob "$blob" || fail "bad requests (hack/py/serve_bad.py)"
rm "$data" && mv "$WORK/moved-data" "$data"
for n in "${PLACED[@]}"; do rm -f "$n"; done
PLACED=()
skopeo copy -q --src-tls-verify=false "docker://127.0.0.1:$PORT/$first_image" \
  "dir:$WORK/pushme" || fail "skopeo copy of an image to push back"
if skopeo copy -q --dest-tls-verify=false "dir:$WORK/pushme" "docker://127.0.0.1:$PORT/pushed:1" > "$WORK/push.log" 2>&1; then
  fail "skopeo pushed to kpbuild serve"
fi
say "skopeo copy to the server (a push) refused: $(grep -o 'unsupported\|UNSUPPORTED\|405[^"]*' "$WORK/push.log" | sed -n 1p)"
grep -q '"GET /v2/' "$WORK/plain.log" || fail "--log-requests wrote no request line"
serve_stop plain

log "install.sh serve / health-check / remove-serve (no systemd here: in the background)"
[ -e "$KP/config.yaml" ] && fail "$KP/config.yaml exists; this check writes its own"
PLACED+=("$KP/config.yaml" "$KP/kpbuild-serve.log")
printf 'offline_node: 127.0.0.1\nfiles_port: %s\nregistry_port: %s\noffline_services: serve\n' 8104 5824 > "$KP/config.yaml"
(cd "$KP" && PATH=$(dirname "$KPBUILD"):$PATH ./install.sh serve && ./install.sh health-check) > "$WORK/install.log" 2>&1 \
  || { cat "$WORK/install.log" "$KP/kpbuild-serve.log" >&2; (cd "$KP" && ./install.sh remove-serve) >/dev/null 2>&1; fail "install.sh serve"; }
skopeo inspect --tls-verify=false --raw "docker://127.0.0.1:5824/$first_image" > /dev/null || { (cd "$KP" && ./install.sh remove-serve) >/dev/null 2>&1; fail "install.sh serve: no registry on 5824"; }
pid=$(cat "$KP/kpbuild-serve.pid")
(cd "$KP" && ./install.sh remove-serve) >> "$WORK/install.log" 2>&1 || fail "install.sh remove-serve"
if kill -0 "$pid" 2>/dev/null; then fail "install.sh remove-serve left kpbuild serve ($pid) running"; fi
grep -E "ok$|started|stopped" "$WORK/install.log" >&2
rm -f "$KP/config.yaml" "$KP/kpbuild-serve.log"
PLACED=()

log "TLS on 127.0.0.1:$TLS_PORT with a CA made by --tls-self-signed"
mkdir -p "$WORK/tls"
CACERT=$WORK/tls/ca.pem
serve_start tls "https://127.0.0.1:$TLS_PORT" --listen "127.0.0.1:$TLS_PORT" \
  --tls-self-signed 127.0.0.1 localhost --tls-dir "$WORK/tls"
grep -q "update-ca-certificates" "$WORK/tls.log" || fail "--tls-self-signed did not say how to trust the CA"
mkdir -p "$CERTS_D" && cp "$CACERT" "$CERTS_D/ca.crt"
mkdir -p "$WORK/hosts/127.0.0.1:$TLS_PORT"
printf 'server = "https://127.0.0.1:%s"\n[host."https://127.0.0.1:%s"]\n  ca = "%s"\n  capabilities = ["pull", "resolve"]\n' \
  "$TLS_PORT" "$TLS_PORT" "$CACERT" > "$WORK/hosts/127.0.0.1:$TLS_PORT/hosts.toml"
if curl -fsS -o /dev/null "https://127.0.0.1:$TLS_PORT/-/healthy" 2>/dev/null; then fail "TLS accepted without the CA"; fi
pull_all https "$TLS_PORT"
files_and_apt https "$TLS_PORT"
serve_stop tls
say "all checks passed"
