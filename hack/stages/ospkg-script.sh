#!/usr/bin/env bash
# Stage ospkg-script: the os-packages apt script (what the os-packages module runs), generated
# from a spec through the plan by the ospkg_script example (hack/lib/build.sh) and run by hand in
# containers of the private daemon, not through BuildKit (that is the os-packages stage).
#
#   hack/stages/ospkg-script.sh [ARCH…]        # default: amd64 arm64
#
# For Debian 12 (debian:bookworm made by hack/base-images.sh) and each ARCH, with the groups
# kubespray.common, kubespray.apt, common and apt of ../shared/testdata/os-packages/
# packages.kubeplay.yaml plus containerd (python-apt, aufs-tools and netcat marked optional):
#   1. the script is generated from a spec through the plan (twice: the bytes must be equal), and
#      run in a container of debian:bookworm on this amd64 host (arm64 without QEMU);
#   2. the repository is checked (hack/py/apt_repo.py): record (skipped = exactly the three),
#      every listed package present, Packages/Packages.gz/Release consistent with the files,
#      architectures, order, and what the base image has is in it too;
#   3. completeness: in a clean container with no network, apt with an EMPTY dpkg status and the
#      repository as its only source resolves `apt-get -s install` of the whole list
#      (APT::Architecture=ARCH);
#   4. amd64: in a fresh container with no network and only the repository as source,
#      `apt-get install` of the whole list succeeds; arm64: the same container resolves and
#      downloads (copy: source) the whole list with an empty status and APT::Architecture=arm64,
#      every file of the repository; a probe (recorded, not a check) tries it next to the amd64
#      base's own status with `dpkg --add-architecture arm64` (see the comment there);
#   5. each of python-apt, aufs-tools and netcat, when not optional, fails the script with a
#      message naming the package and the distro;
#   6. control: the completeness check fails on the same repository without libc6.
# Outputs under target/e2e/os-packages-script/ (summary.txt, logs, the repositories; once every
# check passed, the large files (.deb, ~260 MB) are removed unless KPBUILD_E2E_KEEP=1). Exits
# non-zero on any failed check.
set -euo pipefail
ARCHS=("$@")
# shellcheck source=hack/lib/stage.sh
. "$(dirname "$0")/../lib/stage.sh"
OUT=$ROOT/target/e2e/os-packages-script
GROUPS_FILE=$TESTDATA/os-packages/packages.kubeplay.yaml
IMAGE=debian:bookworm
GONE=(aufs-tools netcat python-apt)
[ ${#ARCHS[@]} -gt 0 ] || ARCHS=(amd64 arm64)

[ -f "$GROUPS_FILE" ] || fail "$GROUPS_FILE is missing (../shared/testdata)"
log "base image $IMAGE"
hack/base-images.sh "$IMAGE"

# The repositories are written by root in containers; clear them through a container too.
if [ -d "$OUT" ]; then
  "$DOCKER" run --rm -v "$OUT:/o" "$IMAGE" sh -c 'rm -rf /o/* /o/.[!.]*' >/dev/null
fi
mkdir -p "$OUT"

# A spec with only the os-packages module; OPTIONAL is a YAML list.
write_context() { # DIR OPTIONAL
  mkdir -p "$1"
  cp "$GROUPS_FILE" "$1/packages.kubeplay.yaml"
  cat > "$1/Dockerfile.bundle" <<EOF
# syntax=kpbuild/frontend:dev
name: e2e-ospkg
version: v0
platforms: [linux/amd64, linux/arm64]
modules:
  os-packages:
    kind: os-packages
    groups-file: packages.kubeplay.yaml
    distros:
      - name: debian12
        image: $IMAGE
        manager: apt
        groups: [kubespray.common, kubespray.apt, common, apt]
        packages: [containerd]
        optional: $2
        path: debian/{arch}/bookworm
EOF
}

# Runs the generated script of CONTEXT for ARCH into REPO; LOG gets its output.
run_script() { # CONTEXT ARCH SCRIPTS REPO LOG
  rm -rf "$3" && mkdir -p "$3" "$4"
  "$OSPKG_SCRIPT" "$1/Dockerfile.bundle" "$1" "$2" "$3" > /dev/null
  "$OSPKG_SCRIPT" "$1/Dockerfile.bundle" "$1" "$2" "$3/again" > /dev/null
  cmp -s "$3/debian12-$2.sh" "$3/again/debian12-$2.sh" || fail "the script for $2 is not deterministic"
  "$DOCKER" run --rm -v "$3:/scripts:ro" -v "$4:/out" "$IMAGE" sh /scripts/"debian12-$2.sh" > "$5" 2>&1
}

CTX=$OUT/context
write_context "$CTX" "[$(IFS=,; echo "${GONE[*]}")]"
SUMMARY=$OUT/summary.txt
: > "$SUMMARY"

for arch in "${ARCHS[@]}"; do
  log "$arch: generate and run the script (debian12, on the amd64 host)"
  "$KPBUILD" plan -f "$CTX/Dockerfile.bundle" --context "$CTX" --platform "linux/$arch" > "$OUT/plan-$arch.json"
  repo_root=$OUT/repo-$arch
  t0=$(now)
  run_script "$CTX" "$arch" "$OUT/scripts-$arch" "$repo_root" "$OUT/script-$arch.log" \
    || { tail -30 "$OUT/script-$arch.log" >&2; fail "the script failed for $arch (log: $OUT/script-$arch.log)"; }
  took=$(since "$t0")
  repo=$repo_root/debian/$arch/bookworm
  [ -f "$repo/Packages" ] || fail "$arch: no Packages in $repo"

  log "$arch: check the repository"
  py apt_repo check --plan "$OUT/plan-$arch.json" --distro debian12 --arch "$arch" --repo "$repo" \
    --skipped "${GONE[@]}" --require libc6 libgcc-s1 zlib1g libssl3 debconf \
    --list-out "$OUT/list-$arch.txt" --qualified-out "$OUT/qualified-$arch.txt" \
    || fail "$arch: repository check (see above)"
  files=$(grep -c '^Package: ' "$repo/Packages")
  size=$(du -sh "$repo" | cut -f1)
  listed=$(wc -w < "$OUT/list-$arch.txt")

  log "$arch: completeness: empty dpkg status, the repository as the only source, no network"
  simulated=$(apt_closure "$IMAGE" "$repo" "$arch" "$OUT/list-$arch.txt" 2> "$OUT/complete-$arch.log") \
    || { tail -30 "$OUT/complete-$arch.log" >&2; fail "$arch: completeness (log: $OUT/complete-$arch.log)"; }
  echo "$arch: simulated install from an empty status: $simulated packages" >&2

  installed=$ROOT/target/e2e/os-packages/keep/debian12-amd64.installed
  if [ "$arch" = amd64 ] && [ "$(cat "$installed" 2>/dev/null)" = "$(apt_install_digest "$IMAGE" "$repo" "$OUT/list-$arch.txt")" ]; then
    # The os-packages stage installed this very repository (the same index, so the same .debs,
    # the same list, the same image) the same way: proven, not repeated.
    say "amd64: the same install (repository index, list, image) passed in the os-packages stage ($installed): not repeated"
    extra="installed in a fresh amd64 container offline: yes (the os-packages stage, from a byte-identical index)"
  elif [ "$arch" = amd64 ]; then
    log "amd64: apt-get install of the whole list in a fresh container, no network, only the repository"
    apt_install "$IMAGE" "$repo" "$OUT/list-$arch.txt" > "$OUT/install-$arch.log" 2>&1 \
      || { tail -30 "$OUT/install-$arch.log" >&2; fail "amd64: install from the repository (log: $OUT/install-$arch.log)"; }
    say "amd64: $(tail -1 "$OUT/install-$arch.log")"
    extra="installed in a fresh amd64 container offline: yes"
  else
    log "$arch: resolve and download (copy:) the whole list: empty dpkg status, APT::Architecture=$arch, only the repository, no network"
    # shellcheck disable=SC2016 # the script runs in the container's shell, its variables are its own
    "$DOCKER" run --rm --network none -v "$repo:/repo:ro" -v "$OUT/list-$arch.txt:/list:ro" -e ARCH="$arch" "$IMAGE" sh -euc '
      rm -f /etc/apt/sources.list /etc/apt/sources.list.d/*
      echo "deb [trusted=yes] copy:/repo ./" > /etc/apt/sources.list.d/offline.list
      : > /tmp/status
      mkdir -p /tmp/archives/partial
      cat > /tmp/apt.conf <<EOF
#clear APT::Architectures;
APT::Architecture "$ARCH";
APT::Architectures { "$ARCH"; };
Dir::State::status "/tmp/status";
Dir::State::extended_states "/tmp/extended_states";
Dir::Cache::archives "/tmp/archives/";
APT::Sandbox::User "root";
EOF
      apt-get -c /tmp/apt.conf update -q
      apt-get -c /tmp/apt.conf install --download-only -y -q $(cat /list) > /tmp/dl.log 2>&1 || { tail -20 /tmp/dl.log >&2; exit 1; }
      n=$(ls /tmp/archives/*.deb | wc -l)
      total=$(ls /repo/*.deb | wc -l)
      [ "$n" = "$total" ] || { echo "downloaded $n .deb files, the repository has $total" >&2; exit 1; }
      echo "downloaded: $n .deb files (all of the repository, hashes checked by apt) for $(wc -w < /list) listed packages"
    ' > "$OUT/download-$arch.log" 2>&1 \
      || { tail -30 "$OUT/download-$arch.log" >&2; fail "$arch: resolve and download (log: $OUT/download-$arch.log)"; }
    echo "$arch: $(tail -1 "$OUT/download-$arch.log")" >&2
    extra="$(tail -1 "$OUT/download-$arch.log")"

    # Probe, not a check: the same install next to the amd64 base's own dpkg status
    # (dpkg --add-architecture, :ARCH names). It cannot succeed for lists that hold packages the
    # base has installed for amd64 (a cross-grade: e2fsprogs:arm64 conflicts with e2fsprogs) or
    # arch-all packages (dpkg-dev) whose dependencies then resolve for amd64, which an ARCH
    # repository does not carry. Its outcome is recorded in the summary.
    log "$arch: probe (not a check): download-only of the :$arch names next to the amd64 base's dpkg status"
    # shellcheck disable=SC2016 # the script runs in the container's shell, its variables are its own
    if "$DOCKER" run --rm --network none -v "$repo:/repo:ro" -v "$OUT/qualified-$arch.txt:/list:ro" -e ARCH="$arch" "$IMAGE" sh -euc '
      rm -f /etc/apt/sources.list /etc/apt/sources.list.d/*
      echo "deb [trusted=yes] file:/repo ./" > /etc/apt/sources.list.d/offline.list
      dpkg --add-architecture "$ARCH"
      apt-get update -q
      apt-get install --download-only -y -q $(cat /list)
    ' > "$OUT/probe-foreign-$arch.log" 2>&1; then
      probe="probe dpkg --add-architecture $arch on the amd64 base: resolved"
    else
      probe="probe dpkg --add-architecture $arch on the amd64 base: not resolvable ($(grep -c ' : ' "$OUT/probe-foreign-$arch.log") unmet-dependency lines, e.g. '$(grep -m1 ' : ' "$OUT/probe-foreign-$arch.log" | sed 's/^ *//')'; log probe-foreign-$arch.log)"
    fi
    echo "$arch: $probe" >&2
    extra="$extra; $probe"
  fi
  printf '%s: %s listed packages present (skipped: %s), %s .deb files, %s, script %s s; empty-status simulation: %s packages; %s\n' \
    "$arch" "$listed" "${GONE[*]}" "$files" "$size" "$took" "$simulated" "$extra" >> "$SUMMARY"
done

# Each gone package, when not optional, fails the script naming it and the distro.
for gone in "${GONE[@]}"; do
  log "a non-optional $gone fails, naming it and the distro"
  others=()
  for g in "${GONE[@]}"; do [ "$g" = "$gone" ] || others+=("$g"); done
  ctx=$OUT/fail-$gone/context
  write_context "$ctx" "[$(IFS=,; echo "${others[*]}")]"
  if run_script "$ctx" amd64 "$OUT/fail-$gone/scripts" "$OUT/fail-$gone/repo" "$OUT/fail-$gone/script.log"; then
    fail "a non-optional $gone did not fail the script"
  fi
  msg=$(grep 'kpbuild: error:' "$OUT/fail-$gone/script.log" || true)
  echo "$msg" >&2
  case $msg in
    *"not available on distro debian12 ($IMAGE, linux/amd64): $gone") ;;
    *) fail "the failure for $gone does not name it and the distro exactly: '$msg' (log: $OUT/fail-$gone/script.log)" ;;
  esac
  [ -z "$(ls -A "$OUT/fail-$gone/repo")" ] || fail "the failed script for $gone left output"
  echo "non-optional $gone: $msg" >> "$SUMMARY"
done

# The completeness check can fail: the same repository without libc6 (indexes rewritten) must
# not resolve.
control_arch=${ARCHS[0]}
log "control: the $control_arch repository without libc6 fails the completeness check"
broken=$OUT/control-no-libc6
rm -rf "$broken" && mkdir -p "$broken"
# shellcheck disable=SC2016 # the script runs in the container's shell, its variables are its own
"$DOCKER" run --rm -v "$OUT/repo-$control_arch/debian/$control_arch/bookworm:/repo:ro" -v "$broken:/broken" "$IMAGE" sh -euc '
  apt-get update -qq && apt-get install -y -qq --no-install-recommends apt-utils > /dev/null
  cp /repo/*.deb /broken/ && rm /broken/libc6_*.deb
  cd /broken && apt-ftparchive packages . > Packages && gzip -9n < Packages > Packages.gz
  apt-ftparchive release . > /tmp/Release && mv /tmp/Release Release
' > "$OUT/control-no-libc6.log" 2>&1 || { tail "$OUT/control-no-libc6.log" >&2; fail "control: cannot write the broken repository"; }
if apt_closure "$IMAGE" "$broken" "$control_arch" "$OUT/list-$control_arch.txt" >> "$OUT/control-no-libc6.log" 2>&1; then
  fail "control: a repository without libc6 passed the completeness check (log: $OUT/control-no-libc6.log)"
fi
grep -q "libc6" "$OUT/control-no-libc6.log" || fail "control: apt's refusal does not name libc6 (log: $OUT/control-no-libc6.log)"
echo "control: without libc6, apt refuses: $(grep -m1 'libc6' "$OUT/control-no-libc6.log" | sed 's/^ *//')" | tee -a "$SUMMARY" >&2

log "summary ($SUMMARY)"
cat "$SUMMARY" >&2
say "${ARCHS[*]}: all checks passed"
shrink "$OUT"
