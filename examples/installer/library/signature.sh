# shellcheck shell=bash
# The bundle's signature, checked with the public key the operator was given (--key FILE or
# KUBEPLAY_PUBLIC_KEY=FILE) before anything is installed or served. The verifier is Debian's
# minisign when it is installed (the lock's signature, and its trusted comment naming this very
# lock by sha256), else kpbuild (bin/kpbuild or on PATH: `kpbuild verify --key`, the signature
# then every entry hashed). A missing signature, one that does not verify, or no verifier at
# all: nothing goes on, and the reason is said. With minisign and kpbuild both there, kpbuild
# checks every entry after minisign checked the signature; with minisign alone, the entries are
# checked by what serves them (kpbuild serve's start-up check, the registry's and apt's digests).

SIGNED_LOCK=kubeplay.lock.json

check_signature() { # KEY COMMAND… (KEY empty: no key given, nothing checked)
  local key=$1 lock sig comment sha bin
  shift
  lock=$KUBEPLAY_DIR/$SIGNED_LOCK
  sig=$lock.minisig
  if [ -z "$key" ]; then
    log "no --key given: the bundle's signature is not checked (./install.sh --key kubeplay.pub $*)"
    return 0
  fi
  [ -f "$key" ] || die "refusing: the public key $key does not exist"
  [ -f "$sig" ] || die "refusing: a key was given but the bundle is not signed ($SIGNED_LOCK.minisig is missing)"
  if command -v minisign >/dev/null 2>&1; then
    comment=$(minisign -V -Q -m "$lock" -x "$sig" -p "$key" 2>&1) \
      || die "refusing: $SIGNED_LOCK's signature does not verify with $key (minisign: $(echo "$comment" | tr '\n' ' '))"
    sha=$(sha256sum "$lock" | cut -d' ' -f1)
    case " $comment " in
      *" file:$SIGNED_LOCK "*" lock-sha256:$sha "*) ;;
      *) die "refusing: the signature verifies but its trusted comment does not name this $SIGNED_LOCK (sha256 $sha): $comment" ;;
    esac
    log "signature OK (minisign, $key): $comment"
    if bin=$(kpbuild_found); then
      "$bin" verify --key "$key" "$KUBEPLAY_DIR" >&2 || die "refusing: kpbuild verify found faults in the bundle (above)"
    else
      log "entries not hashed here (no kpbuild): kpbuild serve checks them at start, the registry and apt by digest"
    fi
  elif bin=$(kpbuild_found); then
    "$bin" verify --key "$key" "$KUBEPLAY_DIR" >&2 || die "refusing: kpbuild verify --key $key refused the bundle (above)"
  else
    die "refusing: cannot check the signature with $key: neither minisign (Debian's package minisign) nor kpbuild (in $KUBEPLAY_DIR/bin/ or on PATH) is installed"
  fi
}

# `install.sh verify`: the signature when a key is given, else the entries (kpbuild needed).
verify_bundle() { # KEY
  if [ -n "$1" ]; then check_signature "$1"; return; fi
  local bin
  bin=$(kpbuild_found) || die "verify: give --key FILE (minisign or kpbuild checks the signature), or install kpbuild to check the entries"
  "$bin" verify "$KUBEPLAY_DIR" >&2
}
