#!/usr/bin/env bash
# A loopback file server (Debian's nginx) for the files module's fixtures: serves ROOT on
# 127.0.0.1:PORT as http://127.0.0.1:PORT/<host>/<path>. Idempotent; `stop` stops it.
#
#   hack/files-server.sh ROOT [PORT]     (default port 8081)
#   hack/files-server.sh stop [PORT]
set -euo pipefail
cd "$(dirname "$0")/.."
PORT=${2:-8081}
DIR=$PWD/target/files-server-$PORT
if [ "${1:-}" = stop ]; then
  [ ! -f "$DIR/nginx.pid" ] || kill "$(cat "$DIR/nginx.pid")" 2>/dev/null || true
  exit 0
fi
ROOT=$(cd "${1:?usage: files-server.sh ROOT [PORT]}" && pwd)
command -v nginx >/dev/null || { echo "files-server: nginx not found (hack/setup.sh installs it)" >&2; exit 1; }
mkdir -p "$DIR"
cat > "$DIR/nginx.conf" <<CONF
daemon on;
worker_processes 2;
pid $DIR/nginx.pid;
error_log $DIR/error.log;
user root;
events { worker_connections 256; }
http {
  access_log $DIR/access.log;
  client_body_temp_path $DIR/tmp;
  proxy_temp_path $DIR/tmp;
  fastcgi_temp_path $DIR/tmp;
  uwsgi_temp_path $DIR/tmp;
  scgi_temp_path $DIR/tmp;
  types { application/octet-stream bin; }
  default_type application/octet-stream;
  sendfile on;
  server {
    listen 127.0.0.1:$PORT;
    root $ROOT;
  }
}
CONF
mkdir -p "$DIR/tmp"
if [ -f "$DIR/nginx.pid" ] && kill -0 "$(cat "$DIR/nginx.pid")" 2>/dev/null; then
  nginx -c "$DIR/nginx.conf" -s reload
else
  nginx -c "$DIR/nginx.conf"
fi
for _ in $(seq 50); do
  if curl -s -o /dev/null "http://127.0.0.1:$PORT/"; then echo "http://127.0.0.1:$PORT"; exit 0; fi
  sleep 0.1
done
echo "files-server: nginx did not answer on 127.0.0.1:$PORT; see $DIR/error.log" >&2
exit 1
