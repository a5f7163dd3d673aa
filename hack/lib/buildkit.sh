# shellcheck shell=bash
# shellcheck disable=SC2034 # BUILDKITD_ADDR is set here for the scripts that source this file
# Builds through BuildKit for the stages (sourced after common.sh, with DOCKER_HOST set and
# STAGE_OUT, the stage's output directory).
#
#   bundle_build CONTEXT TARGET ARCH OUT
#       `docker build` (Docker 20.10, BuildKit v0.8) of CONTEXT's Dockerfile.bundle for TARGET
#       and linux/ARCH into OUT (type=local); plain progress in OUT.log; fails the stage
#       showing the log's end when the build fails
#   vertices_run LOG REGEX
#       how many vertices of a plain-progress LOG whose name matches REGEX ran (not cached)
#   expect_failure CONTEXT NAME SED MESSAGE_RE
#       copies CONTEXT, edits its Dockerfile.bundle with SED, builds the stage's own target
#       (STAGE_TARGET) for linux/amd64 and expects a failure whose output matches MESSAGE_RE
#       (extended regex)
#   standalone_buildkitd VERSION [ARG…]
#       BUILDKITD_ADDR: the address of a standalone buildkitd (hack/buildkitd.sh VERSION ARG…),
#       started if it was not running; one this script started is stopped at its exit
#   prune_buildkitd VERSION
#       a standalone daemon's state grows with every run: its build cache dropped past 2 GiB

bundle_build() { # CONTEXT TARGET ARCH OUT
  rm -rf "$4"
  "$DOCKER" build --network host --progress plain -f "$1/Dockerfile.bundle" --target "$2" \
    --platform "linux/$3" -o "type=local,dest=$4" "$1" > "$4.log" 2>&1 \
    || { tail -30 "$4.log" >&2; fail "docker build --target $2 --platform linux/$3 (log: $4.log)"; }
}

vertices_run() { # LOG REGEX
  py progress ran "$1" "$2"
}

expect_failure() { # CONTEXT NAME SED MESSAGE_RE
  local dir=$STAGE_OUT/$2-context
  rm -rf "$dir" && cp -r "$1" "$dir"
  sed -i -E "$3" "$dir/Dockerfile.bundle"
  if "$DOCKER" build --network host -f "$dir/Dockerfile.bundle" --target "$STAGE_TARGET" --platform linux/amd64 \
      -o "type=local,dest=$STAGE_OUT/$2-out" "$dir" > "$STAGE_OUT/$2.log" 2>&1; then
    fail "$2: the build succeeded"
  fi
  grep -Eq "$4" "$STAGE_OUT/$2.log" || { tail -15 "$STAGE_OUT/$2.log" >&2; fail "$2: no /$4/ in $STAGE_OUT/$2.log"; }
  say "$2: refused: $(grep -Eo "$4.{0,60}" "$STAGE_OUT/$2.log" | sed -n 1p)"
}

standalone_buildkitd() { # VERSION [ARG…]
  hack/buildkitd.sh "$@" running || on_exit "hack/buildkitd.sh $* stop"
  BUILDKITD_ADDR=$(hack/buildkitd.sh "$@") || fail "buildkitd $* (hack/buildkitd.sh)"
}

prune_buildkitd() { # VERSION
  local root=/var/lib/kpbuild-buildkitd-$1 mib
  mib=$(du -sm "$root" 2>/dev/null | cut -f1)
  if [ "${mib:-0}" -gt 2048 ]; then
    hack/buildkitd.sh "$1" prune && say "buildkitd $1 state was $mib MiB: cache pruned"
  fi
}
