# shellcheck shell=bash
# Tearing down what install.sh started.

compose_down() {
  if docker compose version >/dev/null 2>&1 && [ -f "$KUBEPLAY_DIR/compose.yaml" ]; then
    (cd "$KUBEPLAY_DIR" && docker compose down) || true
  fi
  docker rm -f kubeplay-nginx kubeplay-registry >/dev/null 2>&1 || true
  log "offline services removed"
}
