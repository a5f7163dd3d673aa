#!/usr/bin/env bash
# Bundle signatures against the real client, on a copy of a bundle archive: Debian's minisign
# verifies both signatures kpbuild makes (the archive's beside it, the lock's inside), kpbuild
# verifies signatures `minisign -S` made (a lock, with a key from `minisign -G`; an archive, with
# a kpbuild key minisign reads), install.sh --key checks with minisign, with kpbuild, and refuses with neither; then each
# refusal of `kpbuild verify --key`, by its message.
#
#   hack/sign-check.sh ARCHIVE KPBUILD [WORK]
#
# ARCHIVE  a bundle tarball (.tar.zst or .tar.gz), e.g. out/kubeplay-v0.1.0-linux-amd64.tar.zst
#          (left as it is: the checks run on a copy, its unpacked trees hard-linked)
# KPBUILD  the kpbuild binary under test
# WORK     where the copy, keys and logs go (emptied first; default target/sign-check)
#
# Prints the time of `kpbuild sign` and `kpbuild verify --key` of the archive and the sizes of
# the signatures. Needs minisign (hack/setup.sh), zstd, tar and coreutils; no Docker, no network.
set -euo pipefail
[ $# -ge 2 ] || { sed -n '2,16p' "$0" >&2; exit 2; }
ARCHIVE=$(realpath "$1") KPBUILD=$(realpath "$2")
WORK=${3:+$(realpath -m "$3")}
# shellcheck source=hack/lib/common.sh
. "$(dirname "$0")/lib/common.sh"
WORK=${WORK:-$ROOT/target/sign-check}
command -v minisign >/dev/null || fail "minisign is not installed (hack/setup.sh installs it)"
if [ ! -f "$ARCHIVE" ] || [ ! -x "$KPBUILD" ]; then
  fail "usage: hack/sign-check.sh ARCHIVE KPBUILD [WORK] (an archive file and an executable)"
fi
rm -rf "$WORK"
mkdir -p "$WORK"
NAMEA=$(basename "$ARCHIVE")
A=$WORK/$NAMEA
LOCK=kubeplay.lock.json

# CMD… fails and says PATTERN (an extended regular expression); the line that says it is shown.
refused_with() { # PATTERN CMD…
  local pat=$1 out
  shift
  if out=$("$@" 2>&1); then
    printf '  accepted:\n%s\n' "$(tail -5 <<<"$out")"
    return 1
  fi
  if grep -Eq -- "$pat" <<<"$out"; then
    printf '  %s\n' "$(grep -E -m1 -- "$pat" <<<"$out")"
    return 0
  fi
  printf '  refused, but not saying /%s/:\n%s\n' "$pat" "$(tail -5 <<<"$out")"
  return 1
}

# A copy of the unpacked bundle TREE at DEST, its files hard links but those named after it
# (copied, so that changing them leaves TREE as it is).
tree_copy() { # TREE DEST [FILE…]
  local src=$1 dest=$2 f
  shift 2
  cp -al "$src" "$dest"
  for f in "$@"; do cp --remove-destination "$src/$f" "$dest/$f"; done
}

# A PATH of symbolic links to every program of /usr/bin and /usr/sbin except those named.
path_without() { # DIR NAME…
  local dir=$1 name
  shift
  mkdir -p "$dir"
  cp -s /usr/bin/* "$dir/" 2> /dev/null || true
  cp -sn /usr/sbin/* "$dir/" 2> /dev/null || true
  for name in "$@"; do rm -f "${dir:?}/$name"; done
}

log "a copy of $NAMEA; keys: kpbuild key generate (encrypted) and minisign -G (no password)"
cp "$ARCHIVE" "$A"
[ ! -f "$ARCHIVE.sha256" ] || cp "$ARCHIVE.sha256" "$A.sha256"
export KPBUILD_SIGN_PASSWORD=sign-check-password
"$KPBUILD" key generate --out "$WORK/kp" > "$WORK/kp.pub.line" 2> "$WORK/keygen.log" \
  || { cat "$WORK/keygen.log" >&2; fail "kpbuild key generate"; }
minisign -G -W -p "$WORK/mk.pub" -s "$WORK/mk.key" > "$WORK/minisign-G.log" 2>&1 \
  || { cat "$WORK/minisign-G.log" >&2; fail "minisign -G"; }
say "kpbuild's key: $(head -1 "$WORK/keygen.log"); minisign's: $(head -1 "$WORK/mk.pub")"

log "kpbuild sign $NAMEA (the lock's signature inside, the archive's beside it)"
t0=$(now)
"$KPBUILD" sign "$A" --key "$WORK/kp.key" 2> "$WORK/sign.log" \
  || { cat "$WORK/sign.log" >&2; fail "kpbuild sign"; }
SIGN_S=$(since "$t0")
cat "$WORK/sign.log" >&2

log "Debian's minisign verifies both signatures kpbuild made"
check "minisign -V: the archive's signature ($NAMEA.minisig)" \
  minisign -V -q -m "$A" -p "$WORK/kp.pub"
mkdir "$WORK/tree"
tar -xf "$A" -C "$WORK/tree"
TREE=$WORK/tree/kubeplay
check "minisign -V: the lock's signature inside ($LOCK.minisig)" \
  minisign -V -q -m "$TREE/$LOCK" -p "$WORK/kp.pub"
COMMENT=$(minisign -V -Q -m "$TREE/$LOCK" -p "$WORK/kp.pub")
LOCK_SHA=$(sha256sum "$TREE/$LOCK" | cut -d' ' -f1)
say "the lock's trusted comment: $COMMENT"
check "the trusted comment names bundle, version, platform and the lock's sha256" \
  grep -Eq "^timestamp:[0-9]+ file:$LOCK bundle:[^ ]+ version:[^ ]+ platform:linux/[^ ]+ lock-sha256:$LOCK_SHA\$" <<<"$COMMENT"
sums_match() { (cd "$WORK" && sha256sum -c --quiet "$NAMEA.sha256"); }
check "sha256sum -c: the rewritten archive's .sha256" sums_match

log "kpbuild verify --key $NAMEA"
t0=$(now)
check "kpbuild verify --key accepts the signed archive" \
  "$KPBUILD" verify "$A" --key "$WORK/kp.pub"
VERIFY_S=$(since "$t0")

log "kpbuild verifies what minisign signed"
tree_copy "$TREE" "$WORK/tree-m" "$LOCK.minisig"
minisign -S -s "$WORK/mk.key" -m "$WORK/tree-m/$LOCK" -t "$COMMENT" > /dev/null
check "kpbuild verify --key: a lock signed by minisign -S (key from minisign -G)" \
  "$KPBUILD" verify "$WORK/tree-m" --key "$WORK/mk.pub"
# minisign -S of the archive, with an unencrypted key of kpbuild's that minisign reads (minisign
# 0.11 writes a zero checksum into its own unencrypted -W keys, which the minisign crate refuses
# as corrupted: kpbuild signs with minisign's password-protected keys, not with its -W ones).
"$KPBUILD" key generate --unencrypted --out "$WORK/ku" > /dev/null 2>&1
cp "$A" "$WORK/m-$NAMEA"
M=$WORK/m-$NAMEA
"$KPBUILD" sign "$M" --key "$WORK/ku.key" 2> "$WORK/sign-m.log" \
  || { cat "$WORK/sign-m.log" >&2; fail "kpbuild sign with an unencrypted key"; }
MCOMMENT=$(minisign -V -Q -m "$M" -p "$WORK/ku.pub")
minisign -S -s "$WORK/ku.key" -m "$M" -t "$MCOMMENT" > /dev/null
check "kpbuild verify --key: an archive signed by minisign -S (with a kpbuild key minisign read)" \
  "$KPBUILD" verify "$M" --key "$WORK/ku.pub"
minisign -S -s "$WORK/mk.key" -m "$WORK/tree-m/$LOCK" > /dev/null
check "a minisign signature with minisign's default comment is refused as not kpbuild's" \
  refused_with "not kpbuild's trusted comment" "$KPBUILD" verify "$WORK/tree-m" --key "$WORK/mk.pub"

log "install.sh --key (this checkout's installer, in a re-signed copy): with minisign, with kpbuild alone, with neither"
# The installer under test is examples/installer's: copied over the bundle's, the lock's
# artifacts updated to it, the copy signed again.
INST=(install.sh library/common.sh library/system.sh library/remove.sh library/signature.sh)
tree_copy "$TREE" "$WORK/tree-i" "$LOCK"
for f in "${INST[@]}"; do
  rm -f "$WORK/tree-i/$f"
  cp "examples/installer/$f" "$WORK/tree-i/$f"
done
# (A bundle made before library/signature.sh does not list it: an extra file is no fault.)
LISTED=(install.sh library/common.sh library/system.sh library/remove.sh)
[ ! -f "$TREE/library/signature.sh" ] || LISTED+=(library/signature.sh)
py lock set-artifacts "$WORK/tree-i/$LOCK" "${LISTED[@]}"
"$KPBUILD" sign "$WORK/tree-i" --key "$WORK/kp.key" 2> /dev/null
TREE_I=$WORK/tree-i
path_without "$WORK/bin-minisign" kpbuild
path_without "$WORK/bin-kpbuild" minisign kpbuild
ln -s "$KPBUILD" "$WORK/bin-kpbuild/kpbuild"
path_without "$WORK/bin-none" minisign kpbuild
check "install.sh --key verify: minisign checks the signature" \
  env PATH="$WORK/bin-minisign" bash "$TREE_I/install.sh" --key "$WORK/kp.pub" verify
check "install.sh --key verify: kpbuild alone checks the signature and every entry" \
  env PATH="$WORK/bin-kpbuild" bash "$TREE_I/install.sh" --key "$WORK/kp.pub" verify
check "install.sh --key: neither verifier, refused naming both" \
  refused_with "neither minisign .* nor kpbuild" \
  env PATH="$WORK/bin-none" bash "$TREE_I/install.sh" --key "$WORK/kp.pub" verify
check "install.sh --key with another key: refused (minisign)" \
  refused_with "refusing: $LOCK's signature does not verify" \
  env PATH="$WORK/bin-minisign" bash "$TREE_I/install.sh" --key "$WORK/mk.pub" serve
check "install.sh --key with another key: refused (kpbuild)" \
  refused_with "signed by the key with ID" \
  env PATH="$WORK/bin-kpbuild" bash "$TREE_I/install.sh" --key "$WORK/mk.pub" compose
tree_copy "$TREE_I" "$WORK/tree-u"
rm "$WORK/tree-u/$LOCK.minisig"
check "install.sh --key of an unsigned bundle: refused" \
  refused_with "the bundle is not signed" \
  env PATH="$WORK/bin-minisign" bash "$WORK/tree-u/install.sh" --key "$WORK/kp.pub" all

log "kpbuild verify --key refuses, naming what failed"
check "another key: both key IDs named" \
  refused_with "signed by the key with ID [0-9A-F]{16}, not by the key given \(ID [0-9A-F]{16}\)" \
  "$KPBUILD" verify "$A" --key "$WORK/mk.pub"
mkdir "$WORK/cut"
head -c "$(($(stat -c %s "$A") / 2))" "$A" > "$WORK/cut/$NAMEA"
cp "$A.minisig" "$WORK/cut/"
check "a truncated archive: changed or truncated after signing" \
  refused_with "changed or truncated after it was signed" \
  "$KPBUILD" verify "$WORK/cut/$NAMEA" --key "$WORK/kp.pub"
check "a missing signature: refused when a key is given" \
  refused_with "$LOCK.minisig: missing" "$KPBUILD" verify "$WORK/tree-u" --key "$WORK/kp.pub"
tree_copy "$TREE" "$WORK/tree-l" "$LOCK"
printf 'X' | dd of="$WORK/tree-l/$LOCK" bs=1 seek="$(($(stat -c %s "$TREE/$LOCK") / 2))" \
  conv=notrunc status=none
check "one byte changed in the lock: changed after signing" \
  refused_with "$LOCK: does not match its signature" \
  "$KPBUILD" verify "$WORK/tree-l" --key "$WORK/kp.pub"
BLOB=$(cd "$TREE" && find resources -type f -size +1M | sort | head -1)
tree_copy "$TREE" "$WORK/tree-b" "$BLOB"
printf 'X' | dd of="$WORK/tree-b/$BLOB" bs=1 seek=4096 conv=notrunc status=none
check "one byte changed in a blob: the signature holds, the entry check names the blob" \
  refused_with "FAULT $BLOB" "$KPBUILD" verify "$WORK/tree-b" --key "$WORK/kp.pub"
tree_copy "$TREE" "$WORK/tree-o" "$LOCK"
sed -i '0,/"version": "[^"]*"/s//"version": "v9.9.9-other"/' "$WORK/tree-o/$LOCK"
"$KPBUILD" sign "$WORK/tree-o" --key "$WORK/kp.key" 2> /dev/null
tree_copy "$TREE" "$WORK/tree-x" "$LOCK.minisig"
cp --remove-destination "$WORK/tree-o/$LOCK.minisig" "$WORK/tree-x/"
check "another bundle's signature: named, with the version it signs" \
  refused_with "another bundle's signature: it signs [^ ]+ v9.9.9-other" \
  "$KPBUILD" verify "$WORK/tree-x" --key "$WORK/kp.pub"

say "kpbuild sign $NAMEA ($(du -m "$A" | cut -f1) MiB): ${SIGN_S} s; kpbuild verify --key: ${VERIFY_S} s"
say "signatures: $LOCK.minisig $(stat -c %s "$TREE/$LOCK.minisig") bytes, $NAMEA.minisig $(stat -c %s "$A.minisig") bytes"
checks_done
