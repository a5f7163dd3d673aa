#!/usr/bin/env bash
# Benchmark (not a test): render kubespray's offline files and images lists for one
# architecture with kubespray's own generator (contrib/offline/generate_list.sh, real Ansible)
# and with `kpbuild lists`, in the same run, on the same checkout; print both and the ratio.
#
#   hack/bench-lists.sh                      # amd64, kubespray v2.28.1
#   ARCH=arm64 RUNS=5 hack/bench-lists.sh
#
# Needs a full kubespray checkout (the generator lives in contrib/offline/), given as
#   KUBESPRAY_DIR=/path/to/kubespray            or
#   KUBESPRAY_GIT=/path/to/kubespray.git (+ KUBESPRAY_REF, default v2.28.1) to export from.
# Installs ansible-core 2.16 (kubespray 2.28's `ansible==9.x`) into target/bench/venv from PyPI.
set -euo pipefail
# shellcheck source=hack/lib/common.sh
. "$(dirname "$0")/lib/common.sh"
. hack/lib/build.sh
ARCH=${ARCH:-amd64}
RUNS=${RUNS:-3}
KPB_RUNS=${KPB_RUNS:-20}
REF=${KUBESPRAY_REF:-v2.28.1}
WORK=$ROOT/target/bench
mkdir -p "$WORK"

if [ -z "${KUBESPRAY_DIR:-}" ]; then
  : "${KUBESPRAY_GIT:?set KUBESPRAY_DIR to a kubespray checkout, or KUBESPRAY_GIT to a kubespray git directory}"
  KUBESPRAY_DIR=$WORK/kubespray-$REF
  if [ ! -f "$KUBESPRAY_DIR/contrib/offline/generate_list.sh" ]; then
    rm -rf "$KUBESPRAY_DIR" && mkdir -p "$KUBESPRAY_DIR"
    git -C "$KUBESPRAY_GIT" archive "$REF" | tar -x -C "$KUBESPRAY_DIR"
  fi
fi
[ -f "$KUBESPRAY_DIR/contrib/offline/generate_list.sh" ] || { echo "no contrib/offline/generate_list.sh in $KUBESPRAY_DIR" >&2; exit 1; }

if [ ! -x "$WORK/venv/bin/ansible-playbook" ]; then
  python3 -m venv "$WORK/venv"
  "$WORK/venv/bin/pip" install -q 'ansible-core==2.16.*' jmespath netaddr
fi
build_binaries

now() { date +%s.%N; }
median() { sort -n | awk '{a[NR]=$1} END {print (NR%2) ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2}'; }

echo "kubespray: $KUBESPRAY_DIR ($REF)  arch: $ARCH  ansible: $("$WORK/venv/bin/ansible" --version | sed -n 1p)" >&2

gen_times=()
for _ in $(seq "$RUNS"); do
  rm -rf "$KUBESPRAY_DIR/contrib/offline/temp"
  t0=$(now)
  (cd "$KUBESPRAY_DIR" && PATH=$WORK/venv/bin:$PATH bash contrib/offline/generate_list.sh -e image_arch="$ARCH" >/dev/null 2>&1)
  gen_times+=("$(echo "$(now) - $t0" | bc -l)")
done
sort -u "$KUBESPRAY_DIR/contrib/offline/temp/files.list" > "$WORK/gen-files.list"
sort -u "$KUBESPRAY_DIR/contrib/offline/temp/images.list" > "$WORK/gen-images.list"

kpb_times=()
for _ in $(seq "$KPB_RUNS"); do
  t0=$(now)
  # The generator renders on an x86_64 host; give kpbuild the same fact so outputs compare.
  "$KPBUILD" lists files --kubespray "$KUBESPRAY_DIR" --arch "$ARCH" -e ansible_architecture=x86_64 > "$WORK/kpb-files.list"
  "$KPBUILD" lists images --kubespray "$KUBESPRAY_DIR" --arch "$ARCH" -e ansible_architecture=x86_64 > "$WORK/kpb-images.list"
  kpb_times+=("$(echo "$(now) - $t0" | bc -l)")
done

same=identical
for l in files images; do
  if ! diff -u "$WORK/gen-$l.list" "$WORK/kpb-$l.list" > "$WORK/$l.diff"; then
    same="DIFFERENT (see $WORK/$l.diff)"
  fi
done

gen=$(printf '%s\n' "${gen_times[@]}" | median)
kpb=$(printf '%s\n' "${kpb_times[@]}" | median)
printf '\n%-52s %12s %10s\n' "files.list + images.list, $ARCH, kubespray $REF" "median (s)" "ratio"
printf '%-52s %12.3f %10s\n' "generate_list.sh (ansible-core 2.16), $RUNS runs" "$gen" "1.0x"
printf '%-52s %12.4f %9.0fx\n' "kpbuild lists files + images, $KPB_RUNS runs" "$kpb" "$(echo "$gen / $kpb" | bc -l)"
printf '\noutputs: %s (%s files, %s images)\n' "$same" "$(wc -l < "$WORK/kpb-files.list")" "$(wc -l < "$WORK/kpb-images.list")"
[ "$same" = identical ]
