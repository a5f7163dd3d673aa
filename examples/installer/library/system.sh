# shellcheck shell=bash
# The offline services (nginx: files and OS repositories on 8080; registry: images on 5000).

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
  local node=${1:-127.0.0.1} ok=0
  if curl -fsS -o /dev/null "http://$node:8080/"; then log "nginx on $node:8080: ok"; else log "nginx on $node:8080: DOWN"; ok=1; fi
  if curl -fsS -o /dev/null "http://$node:5000/v2/"; then log "registry on $node:5000: ok"; else log "registry on $node:5000: DOWN"; ok=1; fi
  return $ok
}
