#!/usr/bin/env bash
# Assembles the build context of the root Dockerfile.bundle in DIR: the spec, kubespray's
# variables and the package groups (../shared/testdata), this repository's examples/, and
# fixture-pins.yml. With --fixture-files SRV (default: DIR/../srv), writes the synthetic
# downloads kubespray's lists name under SRV/<host>/<path> and re-pins kubespray's checksum
# dictionaries to them (the files_fixture example, hack/lib/build.sh); with --real-pins, an empty
# fixture-pins.yml keeps kubespray's own pins.
#
#   hack/bundle-context.sh DIR [--fixture-files SRV | --real-pins]
set -euo pipefail
DIR=${1:?usage: bundle-context.sh DIR [--fixture-files SRV | --real-pins]}
MODE=${2:---fixture-files}
SRV=${3:-$DIR/../srv}
# shellcheck source=hack/lib/common.sh
. "$(dirname "$0")/lib/common.sh"
rm -rf "$DIR" && mkdir -p "$DIR/testdata/kubespray"
cp Dockerfile.bundle "$DIR/"
cp -r "$TESTDATA/kubespray/v2.28.1" "$DIR/testdata/kubespray/"
cp -r "$TESTDATA/os-packages" "$DIR/testdata/"
cp -r examples "$DIR/"
case $MODE in
  --real-pins) echo '{}' > "$DIR/fixture-pins.yml" ;;
  --fixture-files)
    . hack/lib/build.sh
    build_binaries
    "$FILES_FIXTURE" "$DIR/testdata/kubespray/v2.28.1" "$SRV" "$DIR/fixture-pins.yml" amd64 arm64 ;;
  *) fail "unknown option $MODE" ;;
esac
