#!/usr/bin/env bash
# kpbuild serve, end to end, from an unpacked bundle and with real clients only.
#
#   hack/e2e-serve.sh BUNDLE WORK PACKAGES
#
# BUNDLE   the kubeplay tree (kubeplay.lock.json at its root), e.g. an untarred amd64 bundle
# WORK     a directory for logs and pulls (emptied first)
# PACKAGES a file with the package names apt-get installs from the served repository
#
# Environment: KPB (the kpbuild binary; default hack/kpbuild-static.sh's), KPBUILD_SERVE_UPSTREAM
# (host:port of the registry the bundle's images came from: each tag's digest must also equal
# upstream's there), KPBUILD_DOCKER_ROOT (the private dockerd, hack/dockerd.sh).
#
# Over plain HTTP, then over TLS with a CA made by `--tls-self-signed`: skopeo copies every image
# for amd64 and arm64 with the manifest's digests (and upstream's), `docker pull` through the
# Docker daemon, `ctr image pull` (containerd's client, every platform) through the daemon's
# containerd, curl of every file with its sha256, `apt-get install` of PACKAGES in a clean
# container whose only source is the served repository. Then bad requests, each refused while
# the server keeps serving: traversal in every position and spelling, symbolic links placed in
# the bundle (files and registry), a huge header, a slowloris client, pushes; and a bundle that
# fails `verify --no-hash` is refused at start. The bundle is left as it was found.
set -euo pipefail
[ $# -eq 3 ] || { sed -n '2,9p' "$0" >&2; exit 2; }
KP=$(cd "$1" && pwd) WORK=$(realpath -m "$2") PKGS=$(realpath -m "$3")
cd "$(dirname "$0")/.."
KPB=$(realpath "${KPB:-$(hack/kpbuild-static.sh)}")
[ -f "$KP/kubeplay.lock.json" ] || { echo "e2e-serve: $KP has no kubeplay.lock.json" >&2; exit 1; }
if [ ! -f "$PKGS" ] || [ -z "$(tr -d '[:space:]' < "$PKGS")" ]; then
  echo "e2e-serve: $3 is not a file of package names" >&2; exit 1
fi
rm -rf "$WORK" && mkdir -p "$WORK"
# Ports of this stage (8100-8119 and 5820-5839 are kpbuild serve's in the tests).
PORT=8101 REG_PORT=5821 TLS_PORT=8103
DOCKER=$PWD/hack/docker.sh   # /usr/bin/docker; a build v0.8 fails with its flightcontrol timeout runs once more
DOCKER_HOST=$(hack/dockerd.sh)
export DOCKER_HOST
CTR_SOCK=${KPBUILD_DOCKER_ROOT:-/var/lib/kpbuild-docker}/exec/containerd/containerd.sock
NS=kpbuild-serve-e2e
CERTS_D=/etc/docker/certs.d/127.0.0.1:$TLS_PORT
export KP WORK PORT REG_PORT TLS_PORT

fail() { printf 'e2e-serve FAILED: %s\n' "$*" >&2; exit 1; }
log() { printf '\n== e2e serve: %s\n' "$*" >&2; }

declare -A PIDS=()
serve_start() { # NAME URL-FOR-HEALTH ARGS…
  local name=$1 url=$2; shift 2
  "$KPB" serve "$KP" "$@" > "$WORK/$name.log" 2>&1 &
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
  [ -e "$WORK/moved-data" ] && mv "$WORK/moved-data" "$(cat "$WORK/moved-data.path")"
  [ -e "$WORK/moved-link" ] && mv "$WORK/moved-link" "$(cat "$WORK/moved-link.path")"
  rm -rf "$CERTS_D"
  ctr -a "$CTR_SOCK" -n "$NS" image ls -q 2>/dev/null | xargs -r ctr -a "$CTR_SOCK" -n "$NS" image rm --sync >/dev/null 2>&1 || true
  ctr -a "$CTR_SOCK" namespaces rm "$NS" >/dev/null 2>&1 || true
  $DOCKER images --format '{{.Repository}}:{{.Tag}}' 2>/dev/null | grep -E "^127\.0\.0\.1:($PORT|$TLS_PORT)/" | xargs -r $DOCKER rmi >/dev/null 2>&1 || true
}
trap cleanup EXIT

# Every image for amd64 and arm64 with skopeo, `docker pull` and `ctr image pull` from PORT.
# SCHEME is http or https (then CACERT is the CA).
pull_all() { # SCHEME PORT
  local scheme=$1 port=$2
  python3 - "$scheme" "$port" <<'PY' || fail "pulls over $1"
import hashlib, json, os, subprocess, sys
scheme, port = sys.argv[1], sys.argv[2]
kp, work = os.environ["KP"], os.environ["WORK"]
cacert, upstream = os.environ.get("CACERT"), os.environ.get("KPBUILD_SERVE_UPSTREAM")
lock = json.load(open(f"{kp}/kubeplay.lock.json"))
certdir = f"{work}/certdir"
if cacert:
    os.makedirs(certdir, exist_ok=True)
    subprocess.run(["cp", cacert, f"{certdir}/ca.crt"], check=True)
tls = [f"--cert-dir={certdir}"] if cacert else ["--tls-verify=false"]
srctls = [f"--src-cert-dir={certdir}"] if cacert else ["--src-tls-verify=false"]
def run(args):
    r = subprocess.run(args, capture_output=True)
    if r.returncode:
        raise RuntimeError(f"{' '.join(args)}: {r.stderr.decode().strip()[-400:]}")
    return r.stdout
def sha(b): return "sha256:" + hashlib.sha256(b).hexdigest()
bad, copies = [], 0
host = f"127.0.0.1:{port}"
for img in lock["images"]:
    ref = f"{host}/{img['stored']}"
    try:
        served = sha(run(["skopeo", "inspect", *tls, "--raw", f"docker://{ref}"]))
        if served != img["digest"]:
            bad.append(f"{ref}: served {served}, the manifest says {img['digest']}")
        if upstream:
            h, _, path = img["source"].partition("/")
            up = sha(run(["skopeo", "inspect", "--tls-verify=false", "--raw", f"docker://{upstream}/{h}/{path.split('@')[0]}"]))
            if up != served:
                bad.append(f"{ref}: served {served}, upstream {up}")
        for arch in ("amd64", "arm64"):
            want = [d for p, d in img["platforms"].items() if p.split("/")[1] == arch or p == "any"]
            dest = f"{work}/pull-{scheme}-{copies}"
            copies += 1
            run(["skopeo", "copy", "-q", *srctls, "--override-os", "linux", "--override-arch", arch, f"docker://{ref}", f"dir:{dest}"])
            got = sha(open(f"{dest}/manifest.json", "rb").read())
            if want and got not in want and img["digest"] not in (got,):
                bad.append(f"{ref} linux/{arch}: copied manifest {got}, the manifest says {want}")
            for f in os.listdir(dest):
                if len(f) == 64:
                    if hashlib.sha256(open(f"{dest}/{f}", "rb").read()).hexdigest() != f:
                        bad.append(f"{ref} linux/{arch}: blob {f} does not hash to its name")
            subprocess.run(["rm", "-rf", dest])
    except RuntimeError as e:
        bad.append(str(e))
print(f"skopeo over {scheme}: {len(lock['images'])} images, {copies} copies (amd64, arm64), "
      f"digests = bundle manifest{' = upstream' if upstream else ''}; {len(bad)} problems", file=sys.stderr)
for b in bad: print("  " + b, file=sys.stderr)
sys.exit(1 if bad else 0)
PY
  local img digest n=0
  while read -r img digest; do
    $DOCKER pull -q "127.0.0.1:$port/$img" > "$WORK/docker-pull.log" 2>&1 || { cat "$WORK/docker-pull.log" >&2; fail "docker pull 127.0.0.1:$port/$img over $scheme"; }
    $DOCKER image inspect --format '{{join .RepoDigests " "}}' "127.0.0.1:$port/$img" | grep -q "@$digest" \
      || fail "docker pull 127.0.0.1:$port/$img: not $digest"
    $DOCKER rmi "127.0.0.1:$port/$img" >/dev/null
    # Over TLS, ctr trusts the CA through a hosts.toml (what `--tls-self-signed` prints).
    local how=(--plain-http)
    [ "$scheme" = https ] && how=(--hosts-dir "$WORK/hosts")
    ctr -a "$CTR_SOCK" -n "$NS" image pull --all-platforms "${how[@]}" "127.0.0.1:$port/$img" > "$WORK/ctr-pull.log" 2>&1 \
      || { tail -5 "$WORK/ctr-pull.log" >&2; fail "ctr image pull 127.0.0.1:$port/$img over $scheme"; }
    ctr -a "$CTR_SOCK" -n "$NS" image ls | grep -q "127.0.0.1:$port/$img .*$digest" \
      || fail "ctr image pull 127.0.0.1:$port/$img: not $digest"
    ctr -a "$CTR_SOCK" -n "$NS" image rm --sync "127.0.0.1:$port/$img" >/dev/null
    n=$((n + 1))
  done < <(python3 -c 'import json,sys; [print(i["stored"], i["digest"]) for i in json.load(open(sys.argv[1]))["images"]]' "$KP/kubeplay.lock.json")
  echo "docker pull (amd64) and ctr image pull --all-platforms over $scheme: $n images each, with the manifest's digests" >&2
}

files_and_apt() { # SCHEME PORT
  local scheme=$1 port=$2
  python3 - "$scheme" "$port" <<'PY' || fail "files over $1"
import hashlib, json, os, subprocess, sys
scheme, port = sys.argv[1], sys.argv[2]
lock = json.load(open(os.environ["KP"] + "/kubeplay.lock.json"))
cacert = os.environ.get("CACERT")
bad = []
for f in lock["files"]:
    url = f"{scheme}://127.0.0.1:{port}/" + f["path"].removeprefix("resources/nginx/")
    r = subprocess.run(["curl", "-fsS", *(["--cacert", cacert] if cacert else []), url], capture_output=True)
    if r.returncode or hashlib.sha256(r.stdout).hexdigest() != f["sha256"]:
        bad.append(f"{url}: {r.stderr.decode().strip() or 'sha256 differs'}")
print(f"curl over {scheme}: {len(lock['files'])} files with their sha256; {len(bad)} problems", file=sys.stderr)
for b in bad: print("  " + b, file=sys.stderr)
sys.exit(1 if bad else 0)
PY
  # shellcheck disable=SC2016
  $DOCKER run --rm --network host -v "$PKGS:/list:ro" ${CACERT:+-v "$CACERT:/ca.pem:ro"} \
    -e URL="$scheme://127.0.0.1:$port/debian/amd64/bookworm/" debian:bookworm sh -euc '
    rm -f /etc/apt/sources.list /etc/apt/sources.list.d/*
    echo "deb [trusted=yes] $URL ./" > /etc/apt/sources.list.d/kubeplay.list
    [ -f /ca.pem ] && echo "Acquire::https::CaInfo \"/ca.pem\";" > /etc/apt/apt.conf.d/99kubeplay-ca
    apt-get update -q >/dev/null
    [ -f /list ] && [ -s /list ] || { echo "no package list"; exit 1; }
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q $(cat /list) > /tmp/install.log 2>&1 || { tail -20 /tmp/install.log; exit 1; }
    for p in $(cat /list); do dpkg -s "$p" >/dev/null 2>&1 || { echo "$p is not installed"; exit 1; }; done
    echo "apt-get install from $URL alone: $(wc -w < /list) packages installed ($(grep -c "^Setting up" /tmp/install.log) set up)"
  ' > "$WORK/apt-$scheme.log" 2>&1 || { cat "$WORK/apt-$scheme.log" >&2; fail "apt-get install over $scheme"; }
  cat "$WORK/apt-$scheme.log" >&2
}

log "a bundle failing verify --no-hash is refused at start"
link=$(find "$KP/resources/registry/docker/registry/v2/repositories" -path '*/_manifests/tags/*/current/link' | sort | sed -n 1p)
echo "$link" > "$WORK/moved-link.path" && mv "$link" "$WORK/moved-link"
if "$KPB" serve "$KP" --listen "127.0.0.1:$PORT" > "$WORK/refused.log" 2>&1; then fail "kpbuild serve started on a damaged bundle"; fi
if ! grep -q "verify --no-hash" "$WORK/refused.log" || ! grep -q "${link#"$KP"/}" "$WORK/refused.log"; then
  cat "$WORK/refused.log" >&2; fail "the refusal does not name the missing link"
fi
mv "$WORK/moved-link" "$link"
echo "refused: $(grep -m1 FAULT "$WORK/refused.log")" >&2

log "plain HTTP on 127.0.0.1:$PORT (registry and files) and :$REG_PORT (registry alone)"
serve_start plain "http://127.0.0.1:$PORT" --listen "127.0.0.1:$PORT" --registry-listen "127.0.0.1:$REG_PORT" \
  --header-timeout 2 --idle-timeout 5 --log-requests
head -3 "$WORK/plain.log" >&2
[ "$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$REG_PORT/repos/")" = 404 ] || fail "the registry-only address serves files"
[ "$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$REG_PORT/v2/")" = 200 ] || fail "the registry-only address does not answer /v2/"
pull_all http "$PORT"
files_and_apt http "$PORT"

log "bad requests, each refused while the server keeps serving"
blob_repo=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["images"][0]["stored"].split(":")[0])' "$KP/kubeplay.lock.json")
blob=$(find "$KP/resources/registry/docker/registry/v2/repositories/$blob_repo/_layers" -name link | sort | sed -n 1p | xargs cat)
data=$KP/resources/registry/docker/registry/v2/blobs/sha256/${blob:7:2}/${blob#sha256:}/data
ln -s ../../../../kubeplay.lock.json "$KP/resources/nginx/files/leak-rel" && PLACED+=("$KP/resources/nginx/files/leak-rel")
ln -s /etc/passwd "$KP/resources/nginx/files/leak-abs" && PLACED+=("$KP/resources/nginx/files/leak-abs")
ln -s /etc "$KP/resources/nginx/leak-dir" && PLACED+=("$KP/resources/nginx/leak-dir")
ln -s debian "$KP/resources/nginx/inside" && PLACED+=("$KP/resources/nginx/inside")
echo "$data" > "$WORK/moved-data.path" && mv "$data" "$WORK/moved-data" && ln -s /etc/passwd "$data"
BLOB_REPO=$blob_repo BLOB=$blob python3 hack/e2e-serve-bad.py "$PORT" || fail "bad requests (hack/e2e-serve-bad.py)"
rm "$data" && mv "$WORK/moved-data" "$data"
for n in "${PLACED[@]}"; do rm -f "$n"; done
PLACED=()
skopeo copy -q --src-tls-verify=false "docker://127.0.0.1:$PORT/${blob_repo}:$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["images"][0]["stored"].split(":")[1])' "$KP/kubeplay.lock.json")" \
  "dir:$WORK/pushme" || fail "skopeo copy of an image to push back"
if skopeo copy -q --dest-tls-verify=false "dir:$WORK/pushme" "docker://127.0.0.1:$PORT/pushed:1" > "$WORK/push.log" 2>&1; then
  fail "skopeo pushed to kpbuild serve"
fi
echo "skopeo copy to the server (a push) refused: $(grep -o 'unsupported\|UNSUPPORTED\|405[^"]*' "$WORK/push.log" | sed -n 1p)" >&2
grep -q '"GET /v2/' "$WORK/plain.log" || fail "--log-requests wrote no request line"
serve_stop plain

log "install.sh serve / health-check / remove-serve (no systemd here: in the background)"
[ -e "$KP/config.yaml" ] && fail "$KP/config.yaml exists; this check writes its own"
PLACED+=("$KP/config.yaml" "$KP/kpbuild-serve.log")
printf 'offline_node: 127.0.0.1\nfiles_port: %s\nregistry_port: %s\noffline_services: serve\n' 8104 5824 > "$KP/config.yaml"
(cd "$KP" && PATH=$(dirname "$KPB"):$PATH ./install.sh serve && ./install.sh health-check) > "$WORK/install.log" 2>&1 \
  || { cat "$WORK/install.log" "$KP/kpbuild-serve.log" >&2; (cd "$KP" && ./install.sh remove-serve) >/dev/null 2>&1; fail "install.sh serve"; }
img=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["images"][0]["stored"])' "$KP/kubeplay.lock.json")
skopeo inspect --tls-verify=false --raw "docker://127.0.0.1:5824/$img" > /dev/null || { (cd "$KP" && ./install.sh remove-serve) >/dev/null 2>&1; fail "install.sh serve: no registry on 5824"; }
pid=$(cat "$KP/kpbuild-serve.pid")
(cd "$KP" && ./install.sh remove-serve) >> "$WORK/install.log" 2>&1 || fail "install.sh remove-serve"
if kill -0 "$pid" 2>/dev/null; then fail "install.sh remove-serve left kpbuild serve ($pid) running"; fi
grep -E "ok$|started|stopped" "$WORK/install.log" >&2
rm -f "$KP/config.yaml" "$KP/kpbuild-serve.log"
PLACED=()

log "TLS on 127.0.0.1:$TLS_PORT with a CA made by --tls-self-signed"
mkdir -p "$WORK/tls"
CACERT=$WORK/tls/ca.pem
export CACERT
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
echo "e2e-serve: all checks passed" >&2
