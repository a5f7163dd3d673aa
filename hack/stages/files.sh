#!/usr/bin/env bash
# Stage files: the files module of the e2e spec (hack/e2e/Dockerfile.bundle) through Docker
# 20.10's BuildKit, against the fixture files on nginx (hack/lib/fixtures.sh): `docker build
# --target files` for amd64 and arm64 gives every file of kubespray v2.28.1's lists at
# resources/nginx/files/<host>/<path> with the digest of its pin; an identical rebuild runs no
# op and downloads nothing; one build without --platform gives both platforms; an unreachable
# mirror, a 404, a spec error and a wrong pin fail naming the URL (bundle path, each location
# tried and what came back) or the position. Outputs under target/e2e/files/.
set -euo pipefail
# shellcheck source=hack/lib/stage.sh
. "$(dirname "$0")/../lib/stage.sh"
STAGE_OUT=$ROOT/target/e2e/files STAGE_TARGET=files
out=$STAGE_OUT ctx=$STAGE_OUT/context
rm -rf "$out" && mkdir -p "$out"
e2e_context "$out"
for arch in amd64 arm64; do
  log "docker build --target files --platform linux/$arch"
  bundle_build "$ctx" files "$arch" "$out/out-$arch"
  "$KPBUILD" plan -f "$ctx/Dockerfile.bundle" --context "$ctx" --platform "linux/$arch" --target files \
    > "$out/plan-$arch.json"
  py check_files --plan "$out/plan-$arch.json" --tree "$out/out-$arch" || fail "files $arch: see above"
done

# The same build again: no exec op runs (each download is a fetch-file op) and nothing is
# downloaded again.
log "an identical build runs no op and downloads nothing"
access=$ROOT/target/files-server-$FILES_PORT/access.log
before=$(wc -l < "$access")
bundle_build "$ctx" files amd64 "$out/again-amd64"
ran=$(vertices_run "$out/again-amd64.log" '^download ')
[ "$ran" = 0 ] || fail "an identical build ran $ran exec ops again (log: $out/again-amd64.log)"
gets=$(tail -n +"$((before + 1))" "$access" | grep -c '"GET [^"]*" 200 ' || true)
[ "$gets" = 0 ] || fail "an identical build downloaded $gets files again"
diff -r "$out/out-amd64" "$out/again-amd64" >/dev/null || fail "an identical build gave a different tree"
say "identical build: exec ops cached, 0 downloads, same tree"

# Without --platform, one build gives every platform of the spec (multi-platform result).
log "both platforms in one build"
rm -rf "$out/multi"
"$DOCKER" build --network host -f "$ctx/Dockerfile.bundle" --target files -o "type=local,dest=$out/multi" "$ctx" \
  > "$out/multi.log" 2>&1 || fail "multi-platform build (log: $out/multi.log)"
for arch in amd64 arm64; do
  diff -r "$out/out-$arch" "$out/multi/linux_$arch" >/dev/null || fail "multi-platform linux_$arch differs from the single build"
done
say "one build, linux_amd64 + linux_arm64, equal to the single-platform trees"

# An unreachable mirror fails the build naming the URL, after the retries. (A pinned file
# already in the files cache is copied from there whatever the URL, so the probe is a file
# never fetched.)
log "an unreachable mirror fails naming the URL"
expect_failure "$ctx" unreachable \
  's#^    from-kubespray: all#    from-kubespray: all\n    extra:\n      - url: https://tools.example/e2e/never-fetched-'"$RANDOM$RANDOM"'\n        sha256: '"$(printf 'e%063d' 7)"'#; s#^mirrors:#mirrors:\n  - from: https://tools.example\n    to: http://127.0.0.1:8099/tools.example#' \
  'http://127.0.0.1:8099/tools.example/e2e/never-fetched-[0-9]+ tried 6 times: .*[Cc]onnection refused'

# A file the mirror does not have (404) fails at once, naming the URL, the bundle path, the
# location and what came back.
log "a 404 fails naming the URL, bundle path and location"
expect_failure "$ctx" missing \
  's#^    from-kubespray: all#    from-kubespray: all\n    extra:\n      - url: https://dl.k8s.io/e2e/missing-'"$RANDOM$RANDOM"'\n        sha256: '"$(printf 'e%063d' 7)"'#' \
  'https://dl.k8s.io/e2e/missing-[0-9]+ \(bundle path resources/nginx/files/dl.k8s.io/e2e/missing-[0-9]+, pin sha256:e0+7\) could not be fetched; http://127.0.0.1:8081/dl.k8s.io/e2e/missing-[0-9]+ tried 1 time: HTTP 404'

# A spec error fails the build naming the position.
log "a spec error fails naming file:line:column"
expect_failure "$ctx" specerror 's#^    from-kubespray: all#    from-kubespray: all\n    exclud: []#' \
  "Dockerfile.bundle:[0-9]+:5: unknown field \`exclud\`"

# A wrong pin fails the build, naming the download: refused after the bytes were fetched three
# times (wrong bytes are not retried further), naming the URL, the bundle path, the location
# and the digest that came back.
log "a wrong pin fails the build"
bad=$out/bad-context
cp -r "$ctx" "$bad"
sed 's/"sha256:[0-9a-f]\{64\}"/"sha256:0000000000000000000000000000000000000000000000000000000000000000"/' \
  "$ctx/checksums-e2e.yml" > "$bad/checksums-e2e.yml"
if "$DOCKER" build --network host -f "$bad/Dockerfile.bundle" --target files --platform linux/amd64 \
    -o "type=local,dest=$out/bad-out" "$bad" > "$out/bad.log" 2>&1; then
  fail "a wrong pin did not fail the build"
fi
grep -Eq "https://[^ ]+ \(bundle path resources/nginx/files/[^ ]+, pin sha256:0{64}\) could not be fetched; http://127.0.0.1:8081/[^ ]+ tried 3 times: [0-9]+ bytes with sha256 [0-9a-f]{64}, not the pin" "$out/bad.log" \
  || { tail "$out/bad.log"; fail "no report of the wrong pin in $out/bad.log"; }
grep -q "download https://" "$out/bad.log" || fail "the failing download is not named"
! grep -q "digest mismatch" "$out/bad.log" || fail "a bare digest mismatch in $out/bad.log"
say "wrong pin refused: $(grep -m1 -Eo 'https://[^ ]+ \(bundle path.{0,300}' "$out/bad.log")"
shrink "$out"
