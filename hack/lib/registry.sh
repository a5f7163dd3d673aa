# shellcheck shell=bash
# Debian's docker-registry (distribution 2.8, the registry:2 server) on loopback with a config
# of our own, idempotently (sourced after common.sh).
#
#   registry_start NAME PORT ROOTDIR [ro|rw] [HTPASSWD_FILE]
#   registry_stop NAME
#   registry_log NAME            path of its log (access log lines included)
#
# State lives in $KPBUILD_RUN_DIR/registry-NAME/ (config.yml, pid, log).

: "${KPBUILD_RUN_DIR:=$ROOT/target/registries}"
REGISTRY_BIN=${REGISTRY_BIN:-/usr/bin/docker-registry}

registry_dir() { echo "$KPBUILD_RUN_DIR/registry-$1"; }
registry_log() { echo "$(registry_dir "$1")/log"; }

# HTTP status of GET /v2/ (000 when nothing answers).
registry_ping() {
  curl -s -o /dev/null -w '%{http_code}' --max-time 2 "http://127.0.0.1:$1/v2/" || true
}

registry_stop() {
  local dir pid
  dir=$(registry_dir "$1")
  [ -f "$dir/pid" ] || return 0
  pid=$(cat "$dir/pid")
  if kill -0 "$pid" 2>/dev/null; then
    kill "$pid" 2>/dev/null || true
    for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  fi
  rm -f "$dir/pid"
}

registry_start() {
  local name=$1 port=$2 root=$3 mode=${4:-rw} htpasswd=${5:-}
  local dir ro config
  [ -x "$REGISTRY_BIN" ] || { echo "registry_start: $REGISTRY_BIN not found (apt-get install docker-registry)" >&2; return 1; }
  dir=$(registry_dir "$name")
  mkdir -p "$dir" "$root"
  ro=false; [ "$mode" = ro ] && ro=true
  config=$(cat <<YAML
version: 0.1
log:
  level: info
  formatter: text
  accesslog:
    disabled: false
storage:
  filesystem:
    rootdirectory: $root
  delete:
    enabled: false
  maintenance:
    uploadpurging:
      enabled: false
    readonly:
      enabled: $ro
http:
  addr: 127.0.0.1:$port
  secret: kpbuild-fixture-not-a-secret
YAML
)
  if [ -n "$htpasswd" ]; then
    config+=$'\n'"auth:"$'\n'"  htpasswd:"$'\n'"    realm: kpbuild-$name"$'\n'"    path: $htpasswd"
  fi
  # Already running with the same config: nothing to do.
  if [ -f "$dir/pid" ] && kill -0 "$(cat "$dir/pid")" 2>/dev/null \
      && [ "$(cat "$dir/config.yml" 2>/dev/null)" = "$config" ] \
      && [[ $(registry_ping "$port") =~ ^(200|401)$ ]]; then
    return 0
  fi
  registry_stop "$name"
  if [[ $(registry_ping "$port") != 000 ]]; then
    echo "registry_start: something else already answers on 127.0.0.1:$port" >&2
    return 1
  fi
  printf '%s\n' "$config" > "$dir/config.yml"
  setsid "$REGISTRY_BIN" serve "$dir/config.yml" >>"$dir/log" 2>&1 < /dev/null &
  echo $! > "$dir/pid"
  for _ in $(seq 1 100); do
    if [[ $(registry_ping "$port") =~ ^(200|401)$ ]]; then return 0; fi
    kill -0 "$(cat "$dir/pid")" 2>/dev/null || break
    sleep 0.1
  done
  echo "registry_start: registry $name on 127.0.0.1:$port did not come up; log:" >&2
  tail -20 "$dir/log" >&2
  return 1
}
