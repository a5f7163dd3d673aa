# shellcheck shell=bash
# Shared helpers of install.sh.
log() { printf '%s kubeplay: %s\n' "$(date -u +%H:%M:%S)" "$*" >&2; }
die() { log "error: $*"; exit 1; }
need() { command -v "$1" >/dev/null 2>&1 || die "$1 is required ($2)"; }

# Reads KEY from config.yaml (flat `key: value` lines), or the default.
config_get() { # KEY DEFAULT
  local v=""
  [ -f "$KUBEPLAY_DIR/config.yaml" ] && v=$(sed -n "s/^$1:[[:space:]]*//p" "$KUBEPLAY_DIR/config.yaml" | head -1)
  printf '%s' "${v:-$2}"
}

# The bundle's image archives, loaded into the local container runtime.
load_images() {
  local a
  for a in "$KUBEPLAY_DIR"/resources/images/*.tar; do
    [ -f "$a" ] || continue
    log "loading $(basename "$a")"
    if command -v docker >/dev/null 2>&1; then docker load -q -i "$a" >/dev/null
    elif command -v nerdctl >/dev/null 2>&1; then nerdctl load -i "$a" >/dev/null
    else die "docker or nerdctl is required to load $a"; fi
  done
}

# The `image:` of a service in compose.yaml.
compose_image() { # SERVICE
  awk -v s="  $1:" '$0==s {f=1; next} f && /image:/ {print $2; exit}' "$KUBEPLAY_DIR/compose.yaml"
}
