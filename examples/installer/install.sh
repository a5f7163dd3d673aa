#!/usr/bin/env bash
# kubeplay: install Kubernetes from this offline bundle.
#
#   ./install.sh serve            serve the bundle with `kpbuild serve` (a systemd unit): files and
#                                 package repositories on 8080, the registry on 5000 (and 8080)
#   ./install.sh compose          the same with containers instead: load the images, start nginx
#                                 (8080) and the registry (5000) with compose
#   ./install.sh services         serve or compose, as config.yaml's offline_services says (serve)
#   ./install.sh cluster          deploy the cluster with the bundled kubespray image
#   ./install.sh all              services, then cluster
#   ./install.sh add-node NODE    scale the cluster to a new node of the inventory
#   ./install.sh remove-node NODE
#   ./install.sh remove-cluster   reset the cluster nodes
#   ./install.sh remove-serve     stop kpbuild serve (and remove its unit)
#   ./install.sh remove-compose   stop the offline containers
#   ./install.sh remove           remove-cluster, then the offline services
#   ./install.sh health-check     check the file server and the registry answer
#   ./install.sh debug            what this bundle holds and what runs
#   ./install.sh verify           check the bundle: its signature (with --key), its entries
#
#   --key FILE (before the command; or KUBEPLAY_PUBLIC_KEY=FILE): the public key the bundle must
#   be signed with (minisign's format). serve, compose, services, cluster, all, add-node and
#   verify then check the signature first (Debian's minisign, else kpbuild) and refuse to go on,
#   saying why, when it is missing or does not verify or when neither verifier is installed.
set -euo pipefail
KUBEPLAY_DIR=$(cd "$(dirname "$0")" && pwd)
export KUBEPLAY_DIR
# shellcheck source=/dev/null
for lib in common system remove signature; do . "$KUBEPLAY_DIR/library/$lib.sh"; done

KEY=${KUBEPLAY_PUBLIC_KEY:-}
while [ $# -gt 0 ]; do
  case $1 in
    --key) [ -n "${2:-}" ] || die "--key FILE: the public key"; KEY=$2; shift 2 ;;
    --key=*) KEY=${1#--key=}; shift ;;
    *) break ;;
  esac
done
case ${1:-} in
  serve|compose|services|cluster|all|add-node) check_signature "$KEY" "$@" ;;
esac

kubespray_run() { # PLAYBOOK [ARGS…]
  need docker "Docker Engine on the offline node"
  local node image inventory files_port registry_port scheme
  node=$(config_get offline_node 127.0.0.1)
  files_port=$(config_get files_port 8080)
  registry_port=$(config_get registry_port 5000)
  scheme=http
  [ "$(config_get offline_services serve)" = serve ] && scheme=$(serve_scheme)
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
      -e "files_repo=$scheme://$node:$files_port/files" \
      -e "registry_host=$node:$registry_port" \
      -e "download_url=$scheme://$node:$files_port/files"
}

services_up() {
  case $(config_get offline_services serve) in
    serve) serve_up; health_check ;;
    compose) compose_up; health_check ;;
    *) die "offline_services in config.yaml is serve or compose" ;;
  esac
}
services_down() { serve_down; compose_down; }

case ${1:-} in
  serve) serve_up; health_check ;;
  compose) compose_up; health_check ;;
  services) services_up ;;
  cluster) kubespray_run cluster.yml ;;
  all) services_up; kubespray_run cluster.yml ;;
  add-node) [ -n "${2:-}" ] || die "add-node NODE"; kubespray_run scale.yml --limit "$2" ;;
  remove-node) [ -n "${2:-}" ] || die "remove-node NODE"; kubespray_run remove-node.yml -e "node=$2" ;;
  remove-cluster) kubespray_run reset.yml -e reset_confirmation=yes ;;
  remove-serve) serve_down ;;
  remove-compose) compose_down ;;
  remove) kubespray_run reset.yml -e reset_confirmation=yes; services_down ;;
  health-check) health_check "$(config_get offline_node 127.0.0.1)" ;;
  verify) verify_bundle "$KEY" ;;
  debug)
    log "bundle: $KUBEPLAY_DIR"
    [ -f "$KUBEPLAY_DIR/kubeplay.lock.json" ] && head -c 400 "$KUBEPLAY_DIR/kubeplay.lock.json" >&2 && echo >&2
    serve_status >&2 || true
    docker ps --filter name=kubeplay- >&2 2>/dev/null || true ;;
  *) sed -n '2,26p' "$0" >&2; exit 2 ;;
esac
