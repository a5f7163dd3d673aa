#!/usr/bin/env bash
# The e2e fixture's nginx and registry images, pushed to a loopback registry under upstream
# names: NAME:TAG is a manifest list of a real linux/amd64 image (Debian's nginx or
# docker-registry on debian:bookworm, hack/e2e/service-images/) and a synthetic linux/arm64
# stand-in (sync/examples/fixture-images: small layers; it cannot run: there is no arm64
# base or emulation here, and the e2e runs only the amd64 images).
#
#   hack/service-images.sh REGISTRY NGINX_REF REGISTRY_REF
#   e.g. hack/service-images.sh 127.0.0.1:5730 docker.io/library/nginx:1.27.4-alpine docker.io/library/registry:2.8.1
set -euo pipefail
cd "$(dirname "$0")/.."
REG=$1; shift
DOCKER=/usr/bin/docker
export DOCKER_BUILDKIT=1
WORK=target/service-images
mkdir -p "$WORK"
hack/base-images.sh debian:bookworm >&2
for pair in "nginx=$1" "registry=$2"; do
  kind=${pair%%=*}; ref=${pair#*=}
  repo=${ref%:*}; tag=${ref##*:}
  $DOCKER build -q -t "$REG/$repo:$tag-amd64" "hack/e2e/service-images/$kind" >/dev/null
  $DOCKER push -q "$REG/$repo:$tag-amd64" >/dev/null
  echo "$repo:$tag-arm64stub" > "$WORK/$kind.refs"
  cargo run -q --release -p kpbuild-sync --example fixture-images -- \
    --registry "$REG" --set refs --refs "$WORK/$kind.refs" --out "$WORK/$kind" >&2
  python3 - "$REG" "$repo" "$tag" <<'PY'
import json, sys, urllib.request
reg, repo, tag = sys.argv[1:]
base = f"http://{reg}/v2/{repo}/manifests/"
LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
ACCEPT = ", ".join([LIST, "application/vnd.oci.image.index.v1+json",
                    "application/vnd.docker.distribution.manifest.v2+json", "application/vnd.oci.image.manifest.v1+json"])
def get(ref):
    r = urllib.request.urlopen(urllib.request.Request(base + ref, headers={"Accept": ACCEPT}))
    return r.headers["Content-Type"], r.headers["Docker-Content-Digest"], r.read()
mt, digest, body = get(f"{tag}-amd64")
amd64 = {"mediaType": mt, "digest": digest, "size": len(body), "platform": {"architecture": "amd64", "os": "linux"}}
_, _, stub = get(f"{tag}-arm64stub")
arm64 = [m for m in json.loads(stub)["manifests"] if m["platform"]["architecture"] == "arm64"][0]
index = json.dumps({"schemaVersion": 2, "mediaType": LIST, "manifests": [amd64, arm64]}, indent=2).encode()
req = urllib.request.Request(base + tag, data=index, method="PUT", headers={"Content-Type": LIST})
d = urllib.request.urlopen(req).headers["Docker-Content-Digest"]
print(f"service image {reg}/{repo}:{tag} = {d} (amd64 {digest}, arm64 stand-in {arm64['digest']})", file=sys.stderr)
PY
done
