# shellcheck shell=bash
# The offline services: files and OS repositories on files_port (8080), images on
# registry_port (5000) — served by `kpbuild serve` (the default: one static binary, no container
# engine needed) or by the nginx and registry containers (compose).

SERVE_UNIT=kubeplay-serve
SERVE_UNIT_FILE=/etc/systemd/system/$SERVE_UNIT.service

# The kpbuild binary: bin/kpbuild in the bundle, else on PATH; fails when there is none.
kpbuild_found() {
  if [ -x "$KUBEPLAY_DIR/bin/kpbuild" ]; then echo "$KUBEPLAY_DIR/bin/kpbuild"
  elif command -v kpbuild >/dev/null 2>&1; then command -v kpbuild
  else return 1; fi
}
kpbuild_bin() {
  kpbuild_found || die "kpbuild is not in $KUBEPLAY_DIR/bin/ nor on PATH: copy the static kpbuild binary there, or set offline_services: compose in config.yaml"
}

# The command line of the server, from config.yaml (ports; serve_tls_names for a self-signed CA).
serve_cmd() {
  local bin files_port registry_port tls
  bin=$(kpbuild_bin)
  files_port=$(config_get files_port 8080)
  registry_port=$(config_get registry_port 5000)
  tls=$(config_get serve_tls_names "")
  printf '%s serve %s --listen 0.0.0.0:%s --registry-listen 0.0.0.0:%s' \
    "$bin" "$KUBEPLAY_DIR" "$files_port" "$registry_port"
  [ -z "$tls" ] || printf ' --tls-self-signed %s --tls-dir %s' "$tls" "$KUBEPLAY_DIR/config/tls"
}

has_systemd() { [ -d /run/systemd/system ] && command -v systemctl >/dev/null 2>&1; }

serve_up() {
  local cmd
  cmd=$(serve_cmd)
  # The bundle is checked (kpbuild verify --no-hash) before anything is served.
  if has_systemd; then
    cat > "$SERVE_UNIT_FILE" <<UNIT
[Unit]
Description=kubeplay offline bundle server (kpbuild serve $KUBEPLAY_DIR)
After=network-online.target
Wants=network-online.target

[Service]
ExecStart=$cmd
Restart=on-failure
RestartSec=2
NoNewPrivileges=yes
ProtectSystem=strict
ProtectHome=read-only
ReadWritePaths=$KUBEPLAY_DIR/config
PrivateTmp=yes
LimitNOFILE=65536

[Install]
WantedBy=multi-user.target
UNIT
    systemctl daemon-reload
    systemctl enable --now "$SERVE_UNIT" >/dev/null
    systemctl restart "$SERVE_UNIT"
    log "kpbuild serve started as the systemd unit $SERVE_UNIT (journalctl -u $SERVE_UNIT)"
  else
    # No systemd (a container, a minimal host): in the background, with a pid file.
    serve_down_background
    # shellcheck disable=SC2086
    nohup $cmd > "$KUBEPLAY_DIR/kpbuild-serve.log" 2>&1 < /dev/null &
    echo $! > "$KUBEPLAY_DIR/kpbuild-serve.pid"
    log "kpbuild serve started in the background (no systemd): pid $!, log $KUBEPLAY_DIR/kpbuild-serve.log"
  fi
  wait_healthy
}

wait_healthy() {
  local port i
  port=$(config_get files_port 8080)
  for i in $(seq 100); do
    curl -fsS -k -o /dev/null "$(serve_scheme)://127.0.0.1:$port/-/healthy" 2>/dev/null && return 0
    if [ -f "$KUBEPLAY_DIR/kpbuild-serve.pid" ] && ! kill -0 "$(cat "$KUBEPLAY_DIR/kpbuild-serve.pid")" 2>/dev/null; then
      tail -20 "$KUBEPLAY_DIR/kpbuild-serve.log" >&2; die "kpbuild serve exited (log above)"
    fi
    sleep 0.2
    : "$i"
  done
  die "kpbuild serve does not answer on port $port (journalctl -u $SERVE_UNIT, or $KUBEPLAY_DIR/kpbuild-serve.log)"
}

serve_scheme() { [ -n "$(config_get serve_tls_names "")" ] && echo https || echo http; }

serve_status() {
  if has_systemd && [ -f "$SERVE_UNIT_FILE" ]; then systemctl status "$SERVE_UNIT" --no-pager
  elif [ -f "$KUBEPLAY_DIR/kpbuild-serve.pid" ]; then echo "kpbuild serve: pid $(cat "$KUBEPLAY_DIR/kpbuild-serve.pid")"
  else echo "kpbuild serve: not started"; fi
}

compose_up() {
  need docker "Docker Engine on the offline node"
  load_images
  if docker compose version >/dev/null 2>&1; then
    (cd "$KUBEPLAY_DIR" && docker compose up -d)
    return
  fi
  # Without the compose plugin: the same two containers, as compose.yaml describes them.
  docker rm -f kubeplay-nginx kubeplay-registry >/dev/null 2>&1 || true
  docker run -d --name kubeplay-nginx --restart always --network host \
    -v "$KUBEPLAY_DIR/resources/nginx:/usr/share/nginx/html:ro" \
    -v "$KUBEPLAY_DIR/config/nginx.conf:/etc/nginx/nginx.conf:ro" \
    "$(compose_image nginx)" >/dev/null
  docker run -d --name kubeplay-registry --restart always --network host \
    -v "$KUBEPLAY_DIR/resources/registry:/var/lib/registry:ro" \
    -v "$KUBEPLAY_DIR/config/registry.yml:/etc/docker/registry/config.yml:ro" \
    "$(compose_image registry)" >/dev/null
}

health_check() {
  local node=${1:-127.0.0.1} ok=0 fp rp scheme=http
  fp=$(config_get files_port 8080)
  rp=$(config_get registry_port 5000)
  # The file server answers its root (nginx, autoindex) or /-/healthy (kpbuild serve, which
  # lists no directory).
  [ "$(config_get offline_services serve)" = serve ] && scheme=$(serve_scheme)
  if curl -fsS -k -o /dev/null "$scheme://$node:$fp/-/healthy" 2>/dev/null || curl -fsS -o /dev/null "http://$node:$fp/" 2>/dev/null; then
    log "file server on $node:$fp: ok"; else log "file server on $node:$fp: DOWN"; ok=1; fi
  if curl -fsS -k -o /dev/null "$scheme://$node:$rp/v2/"; then log "registry on $node:$rp: ok"; else log "registry on $node:$rp: DOWN"; ok=1; fi
  return $ok
}
