"""Bad requests against `kpbuild serve` on 127.0.0.1:PORT (hack/stages/bundle/serve.sh): each
must be refused, and the server must still answer a good request after each.

   serve_bad.py --port PORT --bundle KP --blob-repo REPO --blob DIGEST
       KP: the bundle served; REPO, DIGEST: a blob whose data serve.sh replaced by a symbolic
       link to /etc/passwd

Traversal in every position and spelling (`..`, `%2e%2e`, mixed case, `%2f`, backslashes,
absolute paths and absolute-form targets, NUL), symbolic links placed in the bundle (to a file
outside, to a directory outside, to a directory inside, a registry blob), a huge header, a
slowloris client (the server was started with --header-timeout 2), pushes and deletes.
"""

import argparse
import json
import socket
import sys

_ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
_ap.add_argument("--port", type=int, required=True)
_ap.add_argument("--bundle", required=True)
_ap.add_argument("--blob-repo", required=True)
_ap.add_argument("--blob", required=True)
ARGS = _ap.parse_args()
PORT = ARGS.port
KP = ARGS.bundle
with open(f"{KP}/kubeplay.lock.json", "rb") as _f:
    LOCK = _f.read()
SECRETS = [b"root:x:0:0", b'"format"', LOCK[:40]]
failures = []


def request(raw: bytes, timeout=30.0):
    """Sends raw bytes, returns (status or None, headers+body bytes)."""
    s = socket.create_connection(("127.0.0.1", PORT), timeout=timeout)
    try:
        s.sendall(raw)
        data = b""
        while True:
            try:
                chunk = s.recv(65536)
            except (TimeoutError, ConnectionResetError):
                break
            if not chunk:
                break
            data += chunk
    finally:
        s.close()
    status = None
    if data.startswith(b"HTTP/1.1 "):
        status = int(data[9:12])
    return status, data


def get(target: str, method="GET", extra=b""):
    return request(f"{method} {target} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n".encode() + extra + b"\r\n")


def still_serving(after: str):
    status, _ = get("/-/healthy")
    if status != 200:
        failures.append(f"after {after}: /-/healthy answered {status}")
    img = json.loads(LOCK)["images"][0]["stored"].split(":")
    status, _ = get(
        f"/v2/{img[0]}/manifests/{img[1]}",
        extra=b"Accept: application/vnd.oci.image.index.v1+json, application/vnd.docker.distribution.manifest.list.v2+json\r\n",
    )
    if status != 200:
        failures.append(f"after {after}: a manifest answered {status}")


def refused(target: str, why: str, method="GET", want=(400, 404), extra=b""):
    status, data = get(target, method, extra)
    leaked = [s for s in SECRETS if s in data]
    if status not in want or leaked:
        failures.append(f"{why}: {method} {target} answered {status}{' and leaked ' + str(leaked) if leaked else ''}")
    else:
        print(f"  refused {status}: {why}: {method} {target}", file=sys.stderr)
    still_serving(f"{method} {target}")


traversals = [
    ("/../kubeplay.lock.json", "`..` first"),
    ("/../../../../../etc/passwd", "`..` repeated"),
    ("/files/../../kubeplay.lock.json", "`..` in the middle"),
    ("/debian/amd64/bookworm/..", "`..` last"),
    ("/%2e%2e/kubeplay.lock.json", "encoded `..` first"),
    ("/%2E%2e/%2e%2E/etc/passwd", "encoded `..`, mixed case"),
    ("/files/%2e%2e/%2e%2e/kubeplay.lock.json", "encoded `..` in the middle"),
    ("/files/.%2e/.%2E/kubeplay.lock.json", "half-encoded `..`"),
    ("/debian/amd64/..%2f..%2f..%2fkubeplay.lock.json", "encoded slashes"),
    ("/debian/amd64/bookworm/%2e%2e", "encoded `..` last"),
    ("//etc/passwd", "absolute path"),
    ("/%2fetc/passwd", "encoded absolute path"),
    ("/files/..\\..\\kubeplay.lock.json", "backslashes"),
    ("/files/%5c..%5c..%5ckubeplay.lock.json", "encoded backslashes"),
    ("/files/a%00/../../kubeplay.lock.json", "NUL"),
    ("/%c0%ae%c0%ae/kubeplay.lock.json", "overlong UTF-8 dots"),
    ("/v2/../../kubeplay.lock.json", "`..` after /v2/"),
    ("/v2/%2e%2e/%2e%2e/kubeplay.lock.json/manifests/x", "encoded `..` as a repository name"),
    ("/v2/../../../etc/passwd/blobs/sha256:" + "0" * 64, "`..` as a blob's repository"),
    ("http://127.0.0.1/../kubeplay.lock.json", "absolute-form target with `..`"),
    ("/files/leak-rel", "symbolic link placed in the bundle, to a file outside the files"),
    ("/files/leak-abs", "symbolic link placed in the bundle, to /etc/passwd"),
    ("/leak-dir/passwd", "symbolic link placed in the bundle, to /etc"),
    ("/inside/amd64/bookworm/Packages", "symbolic link placed in the bundle, to a directory inside"),
]
print("traversal:", file=sys.stderr)
for target, why in traversals:
    refused(target, why)
refused(f"/v2/{ARGS.blob_repo}/blobs/{ARGS.blob}", "a registry blob replaced by a symbolic link to /etc/passwd")
refused("/files/", "a directory listing (not asked for)", want=(403,))

print("pushes and deletes:", file=sys.stderr)
for method, target in [
    ("POST", "/v2/pushed/blobs/uploads/"),
    ("PUT", "/v2/pushed/manifests/v1"),
    ("PATCH", "/v2/pushed/blobs/uploads/x"),
    ("DELETE", f"/v2/{ARGS.blob_repo}/blobs/{ARGS.blob}"),
    ("PUT", "/files/new"),
]:
    status, data = get(target, method, b"Content-Length: 0\r\n")
    if status != 405 or (target.startswith("/v2/") and b"UNSUPPORTED" not in data):
        failures.append(f"push: {method} {target} answered {status}: {data[-200:]!r}")
    else:
        print(f"  refused 405: {method} {target}", file=sys.stderr)
    still_serving(f"{method} {target}")

print("huge header:", file=sys.stderr)
status, _ = get("/-/healthy", extra=b"X-Big: " + b"a" * 65536 + b"\r\n")
if status == 200:
    failures.append("a 64 KiB header was accepted")
else:
    print(f"  refused {status}: a 64 KiB header", file=sys.stderr)
status, _ = get("/-/healthy", extra=b"".join(b"X-H%d: 1\r\n" % i for i in range(500)))
if status == 200:
    failures.append("500 header fields were accepted")
else:
    print(f"  refused {status}: 500 header fields", file=sys.stderr)
still_serving("huge headers")

print("slowloris:", file=sys.stderr)
s = socket.create_connection(("127.0.0.1", PORT), timeout=5)
s.sendall(b"GET /-/healthy HTTP/1.1\r\nHost: x\r\n")
closed, sent = False, 0
for _ in range(60):  # one byte a second for at most a minute
    still_serving("a slow client's byte")
    try:
        s.sendall(b"X")
        sent += 1
        s.settimeout(1.0)
        data = s.recv(1024)
        if data == b"" or data.startswith(b"HTTP/1.1 408"):
            closed = True
            break
    except TimeoutError:
        continue
    except (BrokenPipeError, ConnectionResetError):
        closed = True
        break
s.close()
if not closed:
    failures.append("a client sending one header byte a second was not cut off")
else:
    print(f"  cut off after {sent} bytes of a header, one a second; served others meanwhile", file=sys.stderr)
# An idle connection that never sends anything is closed too.
s = socket.create_connection(("127.0.0.1", PORT), timeout=60)
try:
    idle_closed = s.recv(1) == b""
except (TimeoutError, ConnectionResetError):
    idle_closed = False
s.close()
if not idle_closed:
    failures.append("a connection that sends nothing was not closed")
else:
    print("  a connection that sends nothing: closed by the server", file=sys.stderr)
still_serving("slowloris")

for f in failures:
    print("FAIL " + f, file=sys.stderr)
print(f"bad requests: {len(traversals) + 15} kinds, {len(failures)} not refused", file=sys.stderr)
sys.exit(1 if failures else 0)
