# shellcheck shell=bash
# Tearing down what install.sh started.

compose_down() {
  if docker compose version >/dev/null 2>&1 && [ -f "$KUBEPLAY_DIR/compose.yaml" ]; then
    (cd "$KUBEPLAY_DIR" && docker compose down) || true
  fi
  docker rm -f kubeplay-nginx kubeplay-registry >/dev/null 2>&1 || true
  log "offline services removed"
}

serve_down_background() {
  local pid
  pid=$(cat "$KUBEPLAY_DIR/kpbuild-serve.pid" 2>/dev/null || true)
  # Only a kpbuild: a pid file left behind may name another process now.
  if [ -n "$pid" ] && [ "$(cat "/proc/$pid/comm" 2>/dev/null)" = kpbuild ]; then
    kill "$pid" 2>/dev/null || true
    for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  fi
  rm -f "$KUBEPLAY_DIR/kpbuild-serve.pid"
}

serve_down() {
  if has_systemd && [ -f "$SERVE_UNIT_FILE" ]; then
    systemctl disable --now "$SERVE_UNIT" >/dev/null 2>&1 || true
    rm -f "$SERVE_UNIT_FILE"
    systemctl daemon-reload
  fi
  serve_down_background
  log "kpbuild serve stopped"
}
