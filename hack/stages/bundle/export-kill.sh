# shellcheck shell=bash
# Part of the bundle stage (hack/stages/bundle.sh sources it):
# export_interrupted KPR CTX OUT: `kpbuild export` interrupted, then rerun.
#
#   KPR  the kpbuild binary
#   CTX  the build context holding Dockerfile.bundle, whose module results are in the store
#   OUT  the bundle stage's output directory, holding its reference export
#        kubeplay-v0.1.0-linux-amd64.tar.gz
#
# Exports the amd64 .tar.gz into OUT/kill/ three times: killed with SIGKILL after a seeded
# delay of 1 to 5 s (neither the final name nor its .sha256 may exist; the .partial may stay),
# interrupted with SIGINT likewise (exit status 130, no .partial left, no final name), then to
# completion (equal, byte for byte, to the reference export). Prints one summary line; returns
# non-zero, saying why, when a check fails. KPBUILD_FAULT_SEED (default 7) seeds the delays.
# The exports run with this shell's environment: SOURCE_DATE_EPOCH must be the reference's.

export_interrupted() {
  local kpr=${1:?usage: export_interrupted KPR CTX OUT} ctx=${2:?usage: export_interrupted KPR CTX OUT}
  local out=${3:?usage: export_interrupted KPR CTX OUT}
  local seed=${KPBUILD_FAULT_SEED:-7}
  local name=kubeplay-v0.1.0-linux-amd64.tar.gz
  local dir=$out/kill ref=$out/kubeplay-v0.1.0-linux-amd64.tar.gz
  local -a cmd=("$kpr" export -f "$ctx/Dockerfile.bundle" --platform linux/amd64 -o "$dir/" --format tar.gz)
  local -a problems=()
  local pid rc ms delay f left kill_delay int_delay partial_after_kill="no .partial" started elapsed

  if [ ! -f "$ref" ]; then
    echo "export_interrupted: no reference export $ref (the bundle stage makes it; KPBUILD_E2E_KEEP=1 keeps it)" >&2
    return 1
  fi
  if [ ! -f "$ctx/Dockerfile.bundle" ]; then
    echo "export_interrupted: no $ctx/Dockerfile.bundle" >&2
    return 1
  fi
  rm -rf "$dir"
  mkdir -p "$dir" || return 1
  RANDOM=$seed

  # 1. SIGKILL: nothing that looks complete may be left.
  ms=$((1000 + RANDOM % 4001))
  delay=$(printf '%d.%03d' $((ms / 1000)) $((ms % 1000)))
  kill_delay=$delay
  echo "export_interrupted: seed $seed: SIGKILL after ${delay}s" >&2
  "${cmd[@]}" >"$dir/kill.log" 2>&1 &
  pid=$!
  sleep "$delay"
  if kill -0 "$pid" 2>/dev/null; then
    kill -KILL "$pid"
  else
    problems+=("the export ended within ${delay}s, before its SIGKILL (see $dir/kill.log)")
  fi
  rc=0
  wait "$pid" || rc=$?
  if [ "$rc" != 137 ]; then
    problems+=("SIGKILL: exit status $rc, not 137 (128 + 9)")
  fi
  for f in "$dir"/kubeplay-*-linux-amd64.tar.gz "$dir"/kubeplay-*-linux-amd64.tar.gz.sha256; do
    if [ -e "$f" ]; then
      problems+=("after SIGKILL, $f exists (a final name before the export completed)")
    fi
  done
  if [ -e "$dir/$name.partial" ]; then
    partial_after_kill="$name.partial of $(stat -c %s "$dir/$name.partial") bytes"
  fi
  echo "export_interrupted: after SIGKILL: left $partial_after_kill" >&2

  # 2. SIGINT: the (stale, then new) .partial removed, exit status 130.
  ms=$((1000 + RANDOM % 4001))
  delay=$(printf '%d.%03d' $((ms / 1000)) $((ms % 1000)))
  int_delay=$delay
  echo "export_interrupted: seed $seed: SIGINT after ${delay}s" >&2
  "${cmd[@]}" >"$dir/int.log" 2>&1 &
  pid=$!
  sleep "$delay"
  if kill -0 "$pid" 2>/dev/null; then
    kill -INT "$pid"
  else
    problems+=("the export ended within ${delay}s, before its SIGINT (see $dir/int.log)")
  fi
  rc=0
  wait "$pid" || rc=$?
  if [ "$rc" != 130 ]; then
    problems+=("SIGINT: exit status $rc, not 130 ($(tail -1 "$dir/int.log"))")
  fi
  if ! grep -q 'interrupted by SIGINT' "$dir/int.log"; then
    problems+=("SIGINT: no 'interrupted by SIGINT' message in $dir/int.log")
  fi
  for f in "$dir"/*.partial "$dir"/kubeplay-*-linux-amd64.tar.gz "$dir"/kubeplay-*-linux-amd64.tar.gz.sha256; do
    if [ -e "$f" ]; then
      problems+=("after SIGINT, $f exists")
    fi
  done

  # 3. The rerun completes, equal to the reference.
  started=$(date +%s)
  if "${cmd[@]}" >"$dir/rerun.log" 2>&1; then
    elapsed=$(($(date +%s) - started))
    if ! cmp -s "$ref" "$dir/$name"; then
      problems+=("the rerun's $dir/$name differs from the reference $ref")
    fi
    if [ -f "$dir/$name.sha256" ]; then
      if ! (cd "$dir" && sha256sum -c --quiet "$name.sha256") >/dev/null 2>&1; then
        problems+=("the rerun's $name.sha256 does not match $name")
      fi
    else
      problems+=("the rerun wrote no $name.sha256")
    fi
    left=$(find "$dir" -maxdepth 1 -name '*.partial' | wc -l)
    if [ "$left" != 0 ]; then
      problems+=("after the rerun, $left .partial files are left in $dir")
    fi
  else
    elapsed=$(($(date +%s) - started))
    problems+=("the rerun failed: $(tail -1 "$dir/rerun.log")")
  fi

  if [ ${#problems[@]} -gt 0 ]; then
    for f in "${problems[@]}"; do
      echo "export_interrupted: FAILED: $f" >&2
    done
    echo "export_interrupted: ${#problems[@]} checks failed (seed $seed: SIGKILL after ${kill_delay}s, SIGINT after ${int_delay}s)" >&2
    return 1
  fi
  echo "export_interrupted: seed $seed: SIGKILL after ${kill_delay}s left no final name, $partial_after_kill; SIGINT after ${int_delay}s exited 130 leaving no .partial; the rerun (${elapsed}s) equals the reference byte for byte"
}
