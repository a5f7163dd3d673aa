#!/usr/bin/env bash
# Stage sync: `kpbuild sync-images` against real registries on loopback (Debian's
# docker-registry, distribution 2.8; the fixture of hack/registry-fixture.sh) and a real client
# (skopeo): every image for linux/amd64, linux/arm64 and all platforms served read-only with
# upstream's digests and pulled; shared layers fetched once; a rerun fetches nothing, a damaged
# blob again; basic auth from a Docker config; bad input (unknown image, bad references, name
# collisions, wrong bytes) refused clearly; mirrors and name maps. Outputs under
# target/e2e/sync/; each check prints `ok:` or `FAIL:`, and the stage fails unless all passed.
set -uo pipefail
# shellcheck source=hack/lib/stage.sh
. "$(dirname "$0")/../lib/stage.sh"
FIX=${KPBUILD_FIXTURE_DIR:-$ROOT/target/fixture}
PORT=${KPBUILD_FIXTURE_PORT:-5710}
UP=127.0.0.1:$PORT
AUTH=127.0.0.1:$((PORT + 1))
BAD=127.0.0.1:$((PORT + 2))
SERVE_PORT=$((PORT + 10))
SERVE=127.0.0.1:$SERVE_PORT
OUT=$ROOT/target/e2e/sync
FIXLOG=$(registry_log fixture)

set -e
# Stop the fixture at the end only if this run started it.
[ "$(registry_ping "$PORT")" != 000 ] || [ -n "${KPBUILD_KEEP_FIXTURE:-}" ] || on_exit "hack/registry-fixture.sh stop"
on_exit "registry_stop e2e-serve"
hack/registry-fixture.sh
set +e
rm -rf "$OUT"
mkdir -p "$OUT"

kp() { # NAME ARGS... : run kpbuild sync-images, stdout/stderr to $OUT/NAME.{out,err}
  local name=$1; shift
  "$KPBUILD" sync-images "$@" >"$OUT/$name.out" 2>"$OUT/$name.err"
}
err_has() { grep -qF -- "$2" "$OUT/$1.err"; }
log_mark() { wc -l < "$FIXLOG"; }
log_settle() { # the access log line is written just after the response: wait until quiet
  local a b
  b=$(stat -c %s "$FIXLOG")
  while :; do sleep 0.3; a=$b; b=$(stat -c %s "$FIXLOG"); [ "$a" = "$b" ] && break; done
}
blob_gets_since() { # MARK DIGEST : GET requests for that blob in the fixture's access log since MARK
  tail -n +"$(($1 + 1))" "$FIXLOG" | grep -c "\"GET /v2/[^ ]*/blobs/$2 HTTP" || true
}
stored_tag_ref() { # fixture list line -> name:tag as stored by default
  local r=${1%@*}; echo "${r#*/}"
}
expect_tree() { # PLATFORM TREE: sync_expect.py's independent check of a tree against upstream
  py sync_expect --upstream "$UP" --list "$FIX/main.list" --platform "$1" --tree "$2"
}

# ---------------------------------------------------------------------------------------
# 1. Every image for linux/amd64, linux/arm64 and all platforms: served read-only by
#    docker-registry, pulled by skopeo, digests equal upstream's, layout checked.
for plat in linux/amd64 linux/arm64 all; do
  tag=${plat//\//-}
  tree=$OUT/tree-$tag
  if [ "$plat" = all ]; then popt=(--all-platforms); else popt=(--platform "$plat"); fi
  check "[$plat] sync-images exits 0" kp "sync-$tag" --dest "$tree" "${popt[@]}" --list "$FIX/main.list"
  check "[$plat] layout, links, blob hashes and bytes on disk match upstream (sync_expect.py)" \
    expect_tree "$plat" "$tree"
  registry_start e2e-serve "$SERVE_PORT" "$tree" ro || { flunk "[$plat] serve the tree"; continue; }
  bad_digest=0; bad_pull=0; n=0
  while read -r line; do
    [ -n "$line" ] || continue
    n=$((n + 1))
    stored=$(stored_tag_ref "$line")
    want=$(skopeo inspect --tls-verify=false --raw "docker://${line%@*}" | sha256sum | cut -d' ' -f1)
    got=$(skopeo inspect --tls-verify=false --raw "docker://$SERVE/$stored" | sha256sum | cut -d' ' -f1)
    if [ "$want" != "$got" ]; then bad_digest=$((bad_digest + 1)); echo "  digest differs for $stored: $got != $want"; fi
    rm -rf "$OUT/pull"
    if [ "$plat" = all ]; then copt=(--all); else copt=(--override-os linux --override-arch "${plat#linux/}"); fi
    if ! skopeo copy -q --src-tls-verify=false "${copt[@]}" "docker://$SERVE/$stored" "dir:$OUT/pull" 2>"$OUT/pull.err"; then
      bad_pull=$((bad_pull + 1)); echo "  skopeo copy failed for $stored: $(tail -1 "$OUT/pull.err")"
    fi
  done < "$FIX/main.list"
  check "[$plat] every tag's manifest digest equals upstream's ($n refs)" [ "$bad_digest" = 0 ]
  check "[$plat] skopeo pulls every image from the produced tree ($n refs)" [ "$bad_pull" = 0 ]
  if [ "$plat" != all ]; then
    other=arm64; [ "$plat" = linux/arm64 ] && other=amd64
    check "[$plat] the $other child of calico/node is not served (platform subset)" \
      bash -c "! skopeo copy -q --src-tls-verify=false --override-arch $other docker://$SERVE/calico/node:v3.27.3 dir:$OUT/pull-other 2>/dev/null"
  fi
  registry_stop e2e-serve
done

# The checker itself must be able to fail: a link with a newline, an extra blob.
cp -a "$OUT/tree-linux-amd64" "$OUT/tree-damaged"
link=$(find "$OUT/tree-damaged" -path '*_manifests/tags/*/current/link' | sed -n 1p)
printf '%s\n' "$(cat "$link")" > "$link.new" && mv "$link.new" "$link"
check "checker catches a link file with a newline" \
  bash -c "! python3 hack/py/sync_expect.py --upstream $UP --list $FIX/main.list --platform linux/amd64 --tree $OUT/tree-damaged >/dev/null"
rm -rf "$OUT/tree-damaged"

# ---------------------------------------------------------------------------------------
# 2. Two images sharing layers: each shared layer fetched once (fixture access log), stored once.
nginx_bin=$(awk -F'\t' '$1=="nginx-bin"{print $2}' "$FIX/main.layers.tsv" | sed -n 1p)
debian=$(awk -F'\t' '$1=="debian-amd64"{print $2}' "$FIX/main.layers.tsv" | sed -n 1p)
mark=$(log_mark)
check "shared: sync library/nginx:1.25 and a/b/c:v1" \
  kp shared --dest "$OUT/tree-shared" --platform linux/amd64 "$UP/library/nginx:1.25" "$UP/a/b/c:v1"
log_settle
for d in "$nginx_bin" "$debian"; do
  c=$(blob_gets_since "$mark" "$d")
  check "shared: layer $d fetched once (fixture saw $c GETs)" [ "$c" = 1 ]
  hex=${d#sha256:}
  check "shared: layer $d stored once and linked in both repositories" bash -c "
    [ \$(find '$OUT/tree-shared/docker/registry/v2/blobs' -path '*/$hex/data' | wc -l) = 1 ] &&
    [ -f '$OUT/tree-shared/docker/registry/v2/repositories/library/nginx/_layers/sha256/$hex/link' ] &&
    [ -f '$OUT/tree-shared/docker/registry/v2/repositories/a/b/c/_layers/sha256/$hex/link' ]"
done
# The count is real: without dedup (two runs into two trees) the fixture sees two GETs.
mark=$(log_mark)
kp shared-a --dest "$OUT/tree-shared-a" --platform linux/amd64 "$UP/library/nginx:1.25"
kp shared-b --dest "$OUT/tree-shared-b" --platform linux/amd64 "$UP/a/b/c:v1"
log_settle
c=$(blob_gets_since "$mark" "$nginx_bin")
check "shared: the access-log count sees 2 GETs for two separate runs (count can fail)" [ "$c" = 2 ]

# ---------------------------------------------------------------------------------------
# 3. Rerun: blobs present and intact are not fetched again; a damaged blob is.
tree=$OUT/tree-linux-amd64
mark=$(log_mark)
check "rerun: sync-images exits 0" kp rerun --dest "$tree" --platform linux/amd64 --list "$FIX/main.list"
log_settle
c=$(tail -n +"$((mark + 1))" "$FIXLOG" | grep -c '"GET /v2/[^ ]*/blobs/' || true)
check "rerun: no blob fetched (fixture saw $c blob GETs)" [ "$c" = 0 ]
check "rerun: summary says 0 fetched" err_has rerun "(0 fetched,"
victim=$(find "$tree/docker/registry/v2/blobs" -name data -size +1M | sed -n 1p)
printf 'XXXX' | dd of="$victim" bs=1 seek=100 conv=notrunc status=none
check "rerun after damage: sync-images exits 0" kp rerun2 --dest "$tree" --platform linux/amd64 --list "$FIX/main.list"
check "rerun after damage: exactly the damaged blob fetched again" err_has rerun2 "(1 fetched,"
check "rerun after damage: tree valid again" expect_tree linux/amd64 "$tree"

# ---------------------------------------------------------------------------------------
# 4. Basic auth (htpasswd): credentials from a Docker config file; clear failure without.
mkdir -p "$OUT/docker-good" "$OUT/docker-none" "$OUT/docker-wrong"
pw=$(cat "$FIX/auth/password")
printf '{"auths":{"%s":{"auth":"%s"}}}\n' "$AUTH" "$(printf 'kpbuild:%s' "$pw" | base64 -w0)" > "$OUT/docker-good/config.json"
printf '{"auths":{"%s":{"auth":"%s"}}}\n' "$AUTH" "$(printf 'kpbuild:wrong' | base64 -w0)" > "$OUT/docker-wrong/config.json"
check "auth: works with credentials from DOCKER_CONFIG" \
  env DOCKER_CONFIG="$OUT/docker-good" "$KPBUILD" sync-images --dest "$OUT/tree-auth" --platform linux/amd64 \
  "$AUTH/library/busybox:1.36" "$AUTH/calico/node:v3.27.3" >"$OUT/auth.out" 2>"$OUT/auth.err"
check "auth: synced digest equals upstream's" bash -c "
  [ \"\$(cat '$OUT/tree-auth/docker/registry/v2/repositories/calico/node/_manifests/tags/v3.27.3/current/link')\" = \
    \"sha256:\$(skopeo inspect --tls-verify=false --raw docker://$UP/calico/node:v3.27.3 | sha256sum | cut -d' ' -f1)\" ]"
DOCKER_CONFIG="$OUT/docker-none" "$KPBUILD" sync-images --dest "$OUT/tree-noauth" --platform linux/amd64 \
  "$AUTH/library/busybox:1.36" >"$OUT/noauth.out" 2>"$OUT/noauth.err"
check "auth: fails without credentials" [ $? != 0 ]
check "auth: the error names the registry and says to log in" \
  bash -c "grep -q 'registry $AUTH requires authentication' '$OUT/noauth.err' && grep -q 'docker login $AUTH' '$OUT/noauth.err' && grep -q '$AUTH/library/busybox:1.36' '$OUT/noauth.err'"
check "auth: nothing looks complete without credentials" \
  bash -c "! find '$OUT/tree-noauth' -path '*/_manifests/tags/*' 2>/dev/null | grep -q ."
DOCKER_CONFIG="$OUT/docker-wrong" "$KPBUILD" sync-images --dest "$OUT/tree-wrongauth" --platform linux/amd64 \
  "$AUTH/library/busybox:1.36" >"$OUT/wrongauth.out" 2>"$OUT/wrongauth.err"
check "auth: wrong password fails, saying the credentials were refused" \
  bash -c "[ $? != 0 ] && grep -q 'refused the credentials' '$OUT/wrongauth.err'"

# ---------------------------------------------------------------------------------------
# 5. Bad input: each a clear error naming it; nothing half-written looking complete.
kp unknown --dest "$OUT/tree-unknown" --platform linux/amd64 "$UP/does/not-exist:v1" "$UP/library/busybox:1.36"
check "unknown image: exit non-zero" [ $? != 0 ]
check "unknown image: error names it and says not found" \
  bash -c "grep -q 'image $UP/does/not-exist:v1: manifest: .*not found' '$OUT/unknown.err'"
check "unknown image: no trace of it in the tree; the other image is complete" \
  bash -c "[ ! -e '$OUT/tree-unknown/docker/registry/v2/repositories/does' ] &&
           [ -f '$OUT/tree-unknown/docker/registry/v2/repositories/library/busybox/_manifests/tags/1.36/current/link' ]"

kp badref --dest "$OUT/tree-badref" "$UP/Bad//ref::x"
check "bad reference: exit non-zero" [ $? != 0 ]
check "bad reference: error names it" err_has badref "invalid image reference \"$UP/Bad//ref::x\""
check "bad reference: nothing written" [ ! -e "$OUT/tree-badref" ]
printf '%s\n' "$UP/library/nginx:1.25" "$UP/Bad Ref" > "$OUT/badref.list"
kp badlist --dest "$OUT/tree-badlist" --list "$OUT/badref.list"
check "bad reference in a list: error gives file and line" err_has badlist "badref.list:2: invalid image reference \"$UP/Bad Ref\""

cat > "$OUT/collide.yaml" <<YAML
- src: $UP/calico/node
  dest: library/calico
- src: $UP/quay.io/calico/typha
  dest: library/calico
YAML
kp collide --dest "$OUT/tree-collide" --map "$OUT/collide.yaml" "$UP/calico/node:v3.27.3"
check "map collision: exit non-zero" [ $? != 0 ]
check "map collision: error names both sources and the name" \
  bash -c "grep -q '$UP/calico/node' '$OUT/collide.err' && grep -q '$UP/quay.io/calico/typha' '$OUT/collide.err' && grep -q 'library/calico' '$OUT/collide.err'"
check "map collision: nothing written" [ ! -e "$OUT/tree-collide" ]
printf -- '- src: %s\n  dest: library/nginx\n' "$UP/library/redis" > "$OUT/collide2.yaml"
kp collide2 --dest "$OUT/tree-collide2" --map "$OUT/collide2.yaml" "$UP/library/nginx:1.25" "$UP/library/redis:7.2"
check "map collision with a default name: error names both sources" \
  bash -c "grep -q 'name collision: $UP/library/nginx and $UP/library/redis would both be stored as \"library/nginx\"' '$OUT/collide2.err'"

corrupt=$(cat "$FIX/bad.corrupt-digest")
kp corrupt --dest "$OUT/tree-corrupt" --platform linux/amd64 "$BAD/bad/corrupt:v1" "$BAD/bad/fine:v1"
check "wrong bytes: exit non-zero" [ $? != 0 ]
check "wrong bytes: error names the image and the digest" \
  bash -c "grep -q 'image $BAD/bad/corrupt:v1: blob $corrupt: the bytes from .* have sha256 ' '$OUT/corrupt.err'"
check "wrong bytes: no blob file for it, no tag, no temp files" \
  bash -c "[ ! -e '$OUT/tree-corrupt/docker/registry/v2/blobs/sha256/${corrupt:7:2}/${corrupt#sha256:}' ] &&
           [ ! -e '$OUT/tree-corrupt/docker/registry/v2/repositories/bad/corrupt/_manifests/tags' ] &&
           [ ! -e '$OUT/tree-corrupt/.kpbuild-tmp' ]"
check "wrong bytes: the intact image beside it is complete" \
  test -f "$OUT/tree-corrupt/docker/registry/v2/repositories/bad/fine/_manifests/tags/v1/current/link"

# ---------------------------------------------------------------------------------------
# 6. Mirror and map: fetch elsewhere, store under the upstream or mapped name; pullable.
check "mirror: quay.io=$UP/quay.io" \
  kp mirror --dest "$OUT/tree-names" --platform linux/amd64 --mirror "quay.io=$UP/quay.io" quay.io/calico/typha:v3.27.3
printf -- '- src: %s\n  dest: library/calico-node\n' "$UP/calico/node" > "$OUT/map.yaml"
check "map: $UP/calico/node -> library/calico-node" \
  kp map --dest "$OUT/tree-names" --platform linux/amd64 --map "$OUT/map.yaml" "$UP/calico/node:v3.27.3"
registry_start e2e-serve "$SERVE_PORT" "$OUT/tree-names" ro
for pair in "calico/typha:v3.27.3 $UP/quay.io/calico/typha:v3.27.3" "library/calico-node:v3.27.3 $UP/calico/node:v3.27.3"; do
  read -r stored src <<<"$pair"
  want=$(skopeo inspect --tls-verify=false --raw "docker://$src" | sha256sum | cut -d' ' -f1)
  got=$(skopeo inspect --tls-verify=false --raw "docker://$SERVE/$stored" | sha256sum | cut -d' ' -f1)
  check "names: $stored served with upstream digest" [ "$want" = "$got" ]
  check "names: skopeo pulls $stored" skopeo copy -q --src-tls-verify=false --override-arch amd64 "docker://$SERVE/$stored" "dir:$OUT/pull-$RANDOM"
done
registry_stop e2e-serve

checks_done || exit 1
shrink "$OUT"
