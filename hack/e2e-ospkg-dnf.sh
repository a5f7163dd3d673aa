#!/usr/bin/env bash
# Proof of the os-packages dnf script (bundle/src/kinds/os_packages/script.rs) with a real dnf,
# run by hand in containers of the private daemon as hack/e2e-ospkg-script.sh does for apt.
# No RPM distribution is reachable here, so the distro is a stand-in: Debian 12's own dnf 4.14
# (`dnf`, `dnf-plugins-core`, `createrepo-c`, `rpm` installed into the debootstrapped
# debian:bookworm, committed as kpbuild/debian-dnf:bookworm), whose rpmdb is empty, resolving
# against a fixture RPM repository built here with rpmbuild and createrepo_c:
#
#   kpb-app (x86_64 and aarch64 builds) requires kpb-lib and kpb-virtual
#   kpb-lib (noarch) requires kpb-base (noarch)         a dependency chain
#   kpb-provider (noarch) provides kpb-virtual           a virtual provide
#   kpb-unrelated (noarch)                               in the repository, wanted by nothing
#   kpb-missing                                          not in the repository, on purpose
#
# The spec asks for kpb-app, kpb-virtual (by its provide) and kpb-missing (optional). For amd64
# and arm64 (dnf --forcearch, natively on this amd64 host), the script generated from the spec
# through the plan runs with the fixture repository as its extra repository (file://), then:
#   1. the repository holds exactly the closure (kpb-app of the target architecture, kpb-lib,
#      kpb-base, kpb-provider; not kpb-unrelated, not the other architecture's kpb-app), its
#      repodata lists exactly those files, the record says kpb-missing was skipped;
#   2. in a fresh container with no network, dnf installs the list from that repository alone
#      into an empty installroot (empty rpmdb), and the rpmdb then holds exactly the closure;
#   3. kpb-missing, not optional, fails the script naming it and the distro;
#   4. control: the same install fails on a copy of the repository without kpb-base.
# Outputs under target/e2e/os-packages-dnf/. Exits non-zero on any failed check.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
OUT=$ROOT/target/e2e/os-packages-dnf
TARGET=${CARGO_TARGET_DIR:-$ROOT/target}
DOCKER=$PWD/hack/docker.sh   # /usr/bin/docker; a build v0.8 fails with its flightcontrol timeout runs once more
BASE=debian:bookworm
IMAGE=kpbuild/debian-dnf:bookworm
DISTRO=rpmfixture

log() { printf '\n== e2e-ospkg-dnf: %s\n' "$*" >&2; }
fail() { printf 'e2e-ospkg-dnf FAILED: %s\n' "$*" >&2; exit 1; }
for t in rpmbuild createrepo_c; do
  command -v "$t" >/dev/null || fail "$t is missing; run hack/setup.sh (packages rpm, createrepo-c)"
done
DOCKER_HOST=$(hack/dockerd.sh)
export DOCKER_HOST
# Any debian:bookworm will do as the base (hack/base-images.sh makes one when there is none).
$DOCKER image inspect "$BASE" >/dev/null 2>&1 || hack/base-images.sh "$BASE"
cargo build -q -p kpbuild-bundle --example ospkg_script
GEN=$TARGET/debug/examples/ospkg_script

# The dnf image: Debian's dnf on the debootstrapped base, remade when the base or this recipe changes.
DNF_TOOLS="dnf dnf-plugins-core createrepo-c rpm"
input=$(printf '%s\n' "$($DOCKER image inspect -f '{{.Id}}' "$BASE")" "$DNF_TOOLS" | sha256sum | cut -c1-16)
if [ "$($DOCKER image inspect -f '{{index .Config.Labels "kpbuild.input"}}' "$IMAGE" 2>/dev/null || true)" != "$input" ]; then
  log "image $IMAGE: $DNF_TOOLS from Debian's mirror on $BASE"
  $DOCKER rm -f kpbuild-dnf-image >/dev/null 2>&1 || true
  # shellcheck disable=SC2016
  $DOCKER run --name kpbuild-dnf-image "$BASE" sh -euc '
    apt-get update -q > /dev/null
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends '"$DNF_TOOLS"' > /tmp/install.log 2>&1 \
      || { tail -20 /tmp/install.log; exit 1; }
    apt-get clean; rm -rf /var/lib/apt/lists/* /tmp/install.log
    mkdir -p /etc/yum.repos.d' >&2 || { $DOCKER rm -f kpbuild-dnf-image >/dev/null; fail "installing $DNF_TOOLS on $BASE"; }
  $DOCKER commit --change "LABEL kpbuild.input=$input" --change 'CMD ["bash"]' kpbuild-dnf-image "$IMAGE" >/dev/null
  $DOCKER rm kpbuild-dnf-image >/dev/null
fi
echo "image $IMAGE: $($DOCKER run --rm "$IMAGE" dnf --version | head -1) (Debian's), rpmdb: $($DOCKER run --rm "$IMAGE" rpm -qa | wc -l) packages" >&2

# Repositories are written by root in containers; clear them through a container too.
[ ! -d "$OUT" ] || $DOCKER run --rm -v "$OUT:/o" "$BASE" sh -c 'rm -rf /o/* /o/.[!.]*' >/dev/null
mkdir -p "$OUT/ctx" "$OUT/gen"

log "fixture RPM repository (rpmbuild, createrepo_c)"
top=$OUT/rpmbuild
fixture_spec() { # NAME BUILDARCH REQUIRES PROVIDES
  mkdir -p "$top/SPECS"
  {
    printf 'Name: %s\nVersion: 1.0\nRelease: 1\nSummary: kpbuild fixture package %s\nLicense: Apache-2.0\n' "$1" "$1"
    [ -z "$2" ] || printf 'BuildArch: %s\n' "$2"
    [ -z "$3" ] || printf 'Requires: %s\n' "$3"
    [ -z "$4" ] || printf 'Provides: %s\n' "$4"
    printf '%%description\nkpbuild fixture (hack/e2e-ospkg-dnf.sh).\n'
    printf '%%install\nmkdir -p %%{buildroot}/usr/share/kpbuild-fixture\necho %s > %%{buildroot}/usr/share/kpbuild-fixture/%s\n' "$1" "$1"
    printf '%%files\n/usr/share/kpbuild-fixture/%s\n' "$1"
  } > "$top/SPECS/$1.spec"
}
fixture_spec kpb-base noarch "" ""
fixture_spec kpb-lib noarch "kpb-base" ""
fixture_spec kpb-provider noarch "" "kpb-virtual"
fixture_spec kpb-unrelated noarch "" ""
fixture_spec kpb-app "" "kpb-lib, kpb-virtual" ""
for s in "$top"/SPECS/*.spec; do
  targets=(noarch); case $s in */kpb-app.spec) targets=(x86_64 aarch64) ;; esac
  for t in "${targets[@]}"; do
    rpmbuild -bb --quiet --define "_topdir $top" --target "$t" "$s" > "$OUT/rpmbuild.log" 2>&1 \
      || { cat "$OUT/rpmbuild.log" >&2; fail "rpmbuild $s --target $t"; }
  done
done
mkdir -p "$OUT/fixture-repo"
find "$top/RPMS" -name '*.rpm' -exec cp {} "$OUT/fixture-repo/" \;
createrepo_c -q "$OUT/fixture-repo" || fail "createrepo_c of the fixture repository"
echo "fixture repository: $(cd "$OUT/fixture-repo" && echo *.rpm)" >&2

printf 'fixture:\n  - kpb-app\n  - kpb-virtual\n  - kpb-missing\n' > "$OUT/ctx/groups.yaml"
write_spec() { # OPTIONAL
  cat > "$OUT/ctx/Dockerfile.bundle" <<EOS
# syntax=kpbuild/frontend:dev
name: e2e-ospkg-dnf
version: v0
platforms: [linux/amd64, linux/arm64]
modules:
  os-packages:
    kind: os-packages
    groups-file: groups.yaml
    distros:
      - name: $DISTRO
        image: $IMAGE
        manager: dnf
        groups: [fixture]
        optional: $1
        repositories: [file:///srv/rpm-fixture]
        path: rpm-fixture/{arch}
EOS
}
run_script() { # ARCH OUTDIR LOG
  "$GEN" "$OUT/ctx/Dockerfile.bundle" "$OUT/ctx" "$1" "$OUT/gen" >/dev/null
  mkdir -p "$2"
  $DOCKER run --rm -v "$OUT/fixture-repo:/srv/rpm-fixture:ro" -v "$OUT/gen:/gen:ro" -v "$2:/out" \
    "$IMAGE" sh "/gen/$DISTRO-$1.sh" > "$3" 2>&1
}
# dnf with only REPO as its source, into an empty installroot; prints the installroot's rpmdb.
install_from() { # REPO RPMARCH LOG
  # shellcheck disable=SC2016
  $DOCKER run --rm --network none -v "$1:/repo:ro" "$IMAGE" sh -euc '
    dnf -q -y --installroot=/r --releasever=1 --forcearch="$0" --setopt=reposdir=/nonexistent \
      --repofrompath=kpb,file:///repo --repo=kpb --nogpgcheck install kpb-app kpb-virtual >&2
    rpm --root /r -qa --qf "%{NAME}.%{ARCH}\n" | sort' "$2" 2> "$3"
}

write_spec "[kpb-missing]"
for pair in amd64:x86_64 arm64:aarch64; do
  arch=${pair%%:*} rarch=${pair##*:}
  log "$arch: the os-packages dnf script against the fixture repository"
  repo=$OUT/out-$arch/rpm-fixture/$arch
  run_script "$arch" "$OUT/out-$arch" "$OUT/script-$arch.log" || { tail -20 "$OUT/script-$arch.log" >&2; fail "$arch: the script failed"; }
  python3 - "$repo" "$rarch" <<'PY' || fail "$arch: the repository"
import gzip, json, os, re, sys, glob
repo, arch = sys.argv[1], sys.argv[2]
want = sorted([f"kpb-app-1.0-1.{arch}.rpm", "kpb-base-1.0-1.noarch.rpm", "kpb-lib-1.0-1.noarch.rpm", "kpb-provider-1.0-1.noarch.rpm"])
files = sorted(f for f in os.listdir(repo) if f.endswith(".rpm"))
assert files == want, f"repository files {files}, want the closure {want}"
primary = glob.glob(f"{repo}/repodata/*primary.xml*")
assert len(primary) == 1, primary
data = open(primary[0], "rb").read()
if primary[0].endswith(".gz"): data = gzip.decompress(data)
elif primary[0].endswith(".zst"):
    import subprocess; data = subprocess.run(["zstd", "-dc", primary[0]], capture_output=True, check=True).stdout
hrefs = sorted(re.findall(rb'<location href="([^"]+)"', data))
assert [h.decode() for h in hrefs] == want, f"repodata lists {hrefs}"
rec = json.load(open(f"{repo}/kpbuild-os-packages.json"))
assert rec["packages"] == ["kpb-app", "kpb-virtual"] and rec["skipped"] == ["kpb-missing"] and rec["files"] == 4, rec
print(f"repository {arch}: {', '.join(files)}; repodata consistent; kpb-missing skipped and recorded", file=sys.stderr)
PY
  log "$arch: dnf install from that repository alone, empty rpmdb, no network"
  got=$(install_from "$repo" "$rarch" "$OUT/install-$arch.log") || { cat "$OUT/install-$arch.log" >&2; fail "$arch: dnf install from the produced repository"; }
  want=$(printf '%s\n' "kpb-app.$rarch" kpb-base.noarch kpb-lib.noarch kpb-provider.noarch)
  [ "$got" = "$want" ] || fail "$arch: the installroot's rpmdb holds $(echo $got), want $(echo $want)"
  echo "dnf install ($rarch): rpmdb of the empty installroot now holds $(echo $got)" >&2

  log "$arch: control: without kpb-base the same install fails"
  ctl=$OUT/control-$arch
  mkdir -p "$ctl" && cp "$repo"/*.rpm "$ctl/" && rm "$ctl/kpb-base-1.0-1.noarch.rpm"
  createrepo_c -q "$ctl"
  if install_from "$ctl" "$rarch" "$OUT/control-$arch.log" >/dev/null; then fail "$arch: the install succeeded without kpb-base"; fi
  grep -q "kpb-base" "$OUT/control-$arch.log" || { cat "$OUT/control-$arch.log" >&2; fail "$arch: control failed without naming kpb-base"; }
  echo "control ($rarch): refused, naming kpb-base" >&2
done

log "kpb-missing, not optional, fails the script naming it and the distro"
write_spec "[]"
if run_script amd64 "$OUT/out-missing" "$OUT/script-missing.log"; then fail "the script succeeded with kpb-missing not optional"; fi
msg="package(s) not available on distro $DISTRO ($IMAGE, linux/amd64): kpb-missing"
grep -qF "$msg" "$OUT/script-missing.log" || { tail -5 "$OUT/script-missing.log" >&2; fail "no '$msg' in $OUT/script-missing.log"; }
echo "refused: $(grep -F "$msg" "$OUT/script-missing.log")" >&2
echo "e2e-ospkg-dnf: all checks passed" >&2
