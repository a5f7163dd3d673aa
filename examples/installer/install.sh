#!/usr/bin/env bash
# kubeplay: install Kubernetes from this offline bundle.
#
#   ./install.sh compose          load the images, start nginx (8080) and the registry (5000)
#   ./install.sh cluster          deploy the cluster with the bundled kubespray image
#   ./install.sh all              compose, then cluster
#   ./install.sh add-node NODE    scale the cluster to a new node of the inventory
#   ./install.sh remove-node NODE
#   ./install.sh remove-cluster   reset the cluster nodes
#   ./install.sh remove-compose   stop the offline services
#   ./install.sh remove           remove-cluster, then remove-compose
#   ./install.sh health-check     check nginx and the registry answer
#   ./install.sh debug            what this bundle holds and what runs
set -euo pipefail
KUBEPLAY_DIR=$(cd "$(dirname "$0")" && pwd)
export KUBEPLAY_DIR
# shellcheck source=/dev/null
for lib in common system remove; do . "$KUBEPLAY_DIR/library/$lib.sh"; done

kubespray_run() { # PLAYBOOK [ARGS…]
  need docker "Docker Engine on the offline node"
  local node image inventory
  node=$(config_get offline_node 127.0.0.1)
  inventory=$(config_get inventory config/kubespray/inventory/hosts.yaml)
  [ -f "$KUBEPLAY_DIR/$inventory" ] || die "no inventory at $inventory (see config-sample.yaml)"
  image=$(tar -xOf "$(ls "$KUBEPLAY_DIR"/resources/images/kubespray-*.tar | head -1)" manifest.json \
    | sed -n 's/.*"RepoTags":\["\([^"]*\)".*/\1/p')
  [ -n "$image" ] || die "no kubespray image archive in resources/images/"
  load_images
  # Everything the deploy downloads comes from the offline node: files by their upstream paths
  # under nginx, images under the registry with kubespray's offline naming.
  docker run --rm --network host \
    -v "$KUBEPLAY_DIR/config/kubespray:/kubespray/config:ro" \
    -v "$HOME/.ssh:/root/.ssh:ro" \
    "$image" ansible-playbook -i "/kubespray/${inventory#config/kubespray/}" "$@" \
      -e "files_repo=http://$node:8080/files" \
      -e "registry_host=$node:5000" \
      -e "download_url=http://$node:8080/files"
}

case ${1:-} in
  compose) compose_up; health_check ;;
  cluster) kubespray_run cluster.yml ;;
  all) compose_up; health_check; kubespray_run cluster.yml ;;
  add-node) [ -n "${2:-}" ] || die "add-node NODE"; kubespray_run scale.yml --limit "$2" ;;
  remove-node) [ -n "${2:-}" ] || die "remove-node NODE"; kubespray_run remove-node.yml -e "node=$2" ;;
  remove-cluster) kubespray_run reset.yml -e reset_confirmation=yes ;;
  remove-compose) compose_down ;;
  remove) kubespray_run reset.yml -e reset_confirmation=yes; compose_down ;;
  health-check) health_check "$(config_get offline_node 127.0.0.1)" ;;
  debug)
    log "bundle: $KUBEPLAY_DIR"
    [ -f "$KUBEPLAY_DIR/kubeplay.lock.json" ] && head -c 400 "$KUBEPLAY_DIR/kubeplay.lock.json" >&2 && echo >&2
    docker ps --filter name=kubeplay- >&2 || true ;;
  *) sed -n '2,15p' "$0" >&2; exit 2 ;;
esac
