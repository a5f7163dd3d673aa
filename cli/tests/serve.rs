//! `kpbuild serve` over a real socket, against a small bundle made here: manifests with their
//! bytes, media type and digest, blobs whole, by range and with HEAD, files, refusals (a bad
//! path, a push), a blob whose bytes changed on disk cut short and then refused, the per-client
//! summary on SIGTERM, and a bundle failing `verify --no-hash` refused at start; the referrers
//! API (with `artifactType` filtering) and the spec's error table, GET and HEAD.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Command, Stdio};

use kpbuild_oci::media_type::OCI_MANIFEST;
use kpbuild_oci::registry_layout::{Digest, Layout};

fn put(p: &Path, bytes: &[u8]) {
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    std::fs::write(p, bytes).unwrap();
}

struct Bundle {
    dir: tempfile::TempDir,
    manifest: Vec<u8>,
    md: Digest,
    good: (Digest, Vec<u8>),
    bad: (Digest, Vec<u8>),
}

/// One image `lib/app:v1` with a config and two layers of 600 000 bytes, one file.
fn bundle() -> Bundle {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let l = Layout::new(root.join("resources/registry"));
    let config = br#"{"architecture":"amd64","os":"linux"}"#.to_vec();
    let good: Vec<u8> = (0..600_000u32).map(|i| (i % 251) as u8).collect();
    let bad: Vec<u8> = (0..600_000u32).map(|i| (i % 241) as u8).collect();
    let (cd, gd, bd) = (
        Digest::of_bytes(&config),
        Digest::of_bytes(&good),
        Digest::of_bytes(&bad),
    );
    let desc = |mt: &str, d: &Digest, n: usize| serde_json::json!({"mediaType": mt, "digest": d.to_string(), "size": n});
    let manifest = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2, "mediaType": OCI_MANIFEST,
        "config": desc("application/vnd.oci.image.config.v1+json", &cd, config.len()),
        "layers": [desc("application/vnd.oci.image.layer.v1.tar", &gd, good.len()),
                   desc("application/vnd.oci.image.layer.v1.tar", &bd, bad.len())],
    }))
    .unwrap();
    let md = Digest::of_bytes(&manifest);
    for (d, b) in [(&cd, &config), (&gd, &good), (&bd, &bad), (&md, &manifest)] {
        put(&l.blob_data(d), b);
    }
    put(&l.revision_link("lib/app", &md), md.to_string().as_bytes());
    put(
        &l.tag_current_link("lib/app", "v1"),
        md.to_string().as_bytes(),
    );
    for d in [&cd, &gd, &bd] {
        put(&l.layer_link("lib/app", d), d.to_string().as_bytes());
    }
    let file = b"kubelet bytes".to_vec();
    put(&root.join("resources/nginx/files/dl.k8s.io/kubelet"), &file);
    let lock = serde_json::json!({
        "format": "kpbuild.lock/v1", "kpbuild": "test",
        "bundle": {"name": "kubeplay", "version": "v0", "platform": "linux/amd64", "modules": []},
        "spec": {"file": "Dockerfile.bundle", "sha256": "00"},
        "files": [{"path": "resources/nginx/files/dl.k8s.io/kubelet", "url": "https://dl.k8s.io/kubelet",
                   "sha256": hex::encode(<sha2::Sha256 as sha2::Digest>::digest(&file)), "size": file.len(), "pin": null}],
        "images": [{"source": "example.io/lib/app:v1", "stored": "lib/app:v1", "digest": md.to_string(),
                    "platforms": {"any": md.to_string()}}],
        "packages": [], "skipped_packages": [], "artifacts": [],
    });
    put(
        &root.join("kubeplay.lock.json"),
        lock.to_string().as_bytes(),
    );
    Bundle {
        dir,
        manifest,
        md,
        good: (gd, good),
        bad: (bd, bad),
    }
}

struct Server {
    child: Child,
    addr: String,
    stderr: BufReader<std::process::ChildStderr>,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start(dir: &Path) -> Server {
    let mut child = Command::new(env!("CARGO_BIN_EXE_kpbuild"))
        .args(["serve", dir.to_str().unwrap(), "--listen", "127.0.0.1:0"])
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = BufReader::new(child.stderr.take().unwrap());
    // Owned by a Server from here: a failed assertion kills and reaps it.
    let mut srv = Server {
        child,
        addr: String::new(),
        stderr,
    };
    let mut line = String::new();
    loop {
        line.clear();
        assert!(
            srv.stderr.read_line(&mut line).unwrap() > 0,
            "kpbuild serve exited"
        );
        if let Some(rest) = line.strip_prefix("kpbuild serve: http://") {
            srv.addr = rest.split_whitespace().next().unwrap().to_string();
            return srv;
        }
    }
}

/// Status, headers (lower-case names) and the body bytes that arrived before the server closed.
fn request(
    addr: &str,
    method: &str,
    path: &str,
    headers: &str,
) -> (u16, Vec<(String, String)>, Vec<u8>) {
    let mut s = TcpStream::connect(addr).unwrap();
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n{headers}\r\n"
    )
    .unwrap();
    let mut raw = Vec::new();
    let _ = s.read_to_end(&mut raw); // a reset after a cut body still leaves what arrived
    let end = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("no response head")
        + 4;
    let head = String::from_utf8_lossy(&raw[..end]).into_owned();
    let mut lines = head.lines();
    let status = lines.next().unwrap()[9..12].parse().unwrap();
    let hs = lines
        .filter_map(|l| l.split_once(": "))
        .map(|(k, v)| (k.to_ascii_lowercase(), v.to_string()))
        .collect();
    (status, hs, raw[end..].to_vec())
}

fn header<'a>(hs: &'a [(String, String)], name: &str) -> Option<&'a str> {
    hs.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
}

#[test]
fn serves_a_bundle_read_only_and_cuts_a_blob_that_changed_on_disk() {
    let b = bundle();
    let mut srv = start(b.dir.path());
    let a = srv.addr.clone();

    let (st, hs, body) = request(&a, "GET", "/v2/lib/app/manifests/v1", "");
    assert_eq!(st, 200);
    assert_eq!(body, b.manifest);
    assert_eq!(header(&hs, "content-type"), Some(OCI_MANIFEST));
    assert_eq!(
        header(&hs, "docker-content-digest"),
        Some(b.md.to_string().as_str())
    );
    let (st, _, body) = request(&a, "GET", &format!("/v2/lib/app/manifests/{}", b.md), "");
    assert_eq!((st, body), (200, b.manifest.clone()));

    let blob = format!("/v2/lib/app/blobs/{}", b.good.0);
    let (st, hs, body) = request(&a, "HEAD", &blob, "");
    assert_eq!((st, body.len()), (200, 0));
    assert_eq!(header(&hs, "content-length"), Some("600000"));
    let (st, _, body) = request(&a, "GET", &blob, "");
    assert_eq!((st, Digest::of_bytes(&body)), (200, b.good.0.clone()));
    let (st, hs, body) = request(&a, "GET", &blob, "Range: bytes=300000-300009\r\n");
    assert_eq!((st, &body[..]), (206, &b.good.1[300000..300010]));
    assert_eq!(
        header(&hs, "content-range"),
        Some("bytes 300000-300009/600000")
    );
    let (st, _, _) = request(&a, "GET", &blob, "Range: bytes=600000-\r\n");
    assert_eq!(st, 416);

    let (st, _, body) = request(&a, "GET", "/files/dl.k8s.io/kubelet", "");
    assert_eq!((st, &body[..]), (200, &b"kubelet bytes"[..]));
    let (st, _, body) = request(&a, "GET", "/files/%2e%2e/%2e%2e/kubeplay.lock.json", "");
    assert_eq!(st, 400, "{}", String::from_utf8_lossy(&body));
    let (st, _, body) = request(
        &a,
        "POST",
        "/v2/lib/app/blobs/uploads/",
        "Content-Length: 0\r\n",
    );
    assert_eq!(st, 405);
    assert!(String::from_utf8_lossy(&body).contains("UNSUPPORTED"));
    let (st, _, body) = request(&a, "GET", "/v2/lib/app/manifests/v2", "");
    assert_eq!(st, 404);
    assert!(String::from_utf8_lossy(&body).contains("MANIFEST_UNKNOWN"));

    // The same size, other bytes: verify --no-hash passed at start; serving finds it out.
    let path = Layout::new(b.dir.path().join("resources/registry")).blob_data(&b.bad.0);
    let mut changed = b.bad.1.clone();
    changed[599_999] ^= 0xff;
    std::fs::write(&path, &changed).unwrap();
    let bad = format!("/v2/lib/app/blobs/{}", b.bad.0);
    let (st, _, body) = request(&a, "GET", &bad, "");
    assert_eq!(st, 200);
    assert!(body.len() < 600_000, "a changed blob was sent whole");
    let (st, _, body) = request(&a, "GET", &bad, "");
    assert_eq!(st, 500, "{}", String::from_utf8_lossy(&body));
    // The good blob is still served (from now on without hashing).
    let (st, _, body) = request(&a, "GET", &blob, "");
    assert_eq!((st, Digest::of_bytes(&body)), (200, b.good.0.clone()));

    unsafe { libc::kill(srv.child.id() as i32, libc::SIGTERM) };
    let mut rest = String::new();
    srv.stderr.read_to_string(&mut rest).unwrap();
    assert!(srv.child.wait().unwrap().success());
    assert!(rest.contains(&b.bad.0.to_string()), "{rest}");
    assert!(rest.contains("client 127.0.0.1: 13 requests"), "{rest}");
}

/// Two referrers of `lib/app:v1` in the bundle's tree, as an OCI 1.1 client pushes them: a
/// signature (`artifactType`, an empty config, one layer, annotations) and an SBOM whose type is
/// its config's media type. Their digests.
fn add_referrers(b: &Bundle) -> (Digest, Digest) {
    let l = Layout::new(b.dir.path().join("resources/registry"));
    let empty = b"{}".to_vec();
    let payload = b"signature payload".to_vec();
    let (ed, pd) = (Digest::of_bytes(&empty), Digest::of_bytes(&payload));
    let subject = serde_json::json!({"mediaType": OCI_MANIFEST, "digest": b.md.to_string(), "size": b.manifest.len()});
    let layer = serde_json::json!([{"mediaType": "application/vnd.example.sig.v1", "digest": pd.to_string(), "size": payload.len()}]);
    let mut out = vec![];
    for doc in [
        serde_json::json!({"schemaVersion": 2, "mediaType": OCI_MANIFEST,
            "artifactType": "application/vnd.example.sig.v1",
            "config": {"mediaType": "application/vnd.oci.empty.v1+json", "digest": ed.to_string(), "size": 2},
            "layers": layer, "subject": subject,
            "annotations": {"org.opencontainers.image.created": "2026-01-01T00:00:00Z"}}),
        serde_json::json!({"schemaVersion": 2, "mediaType": OCI_MANIFEST,
            "config": {"mediaType": "application/vnd.example.sbom.v1", "digest": ed.to_string(), "size": 2},
            "layers": layer, "subject": subject}),
    ] {
        let bytes = serde_json::to_vec(&doc).unwrap();
        let d = Digest::of_bytes(&bytes);
        put(&l.blob_data(&d), &bytes);
        put(&l.revision_link("lib/app", &d), d.to_string().as_bytes());
        out.push(d);
    }
    for (d, bytes) in [(&ed, &empty), (&pd, &payload)] {
        put(&l.blob_data(d), bytes);
        put(&l.layer_link("lib/app", d), d.to_string().as_bytes());
    }
    (out[0].clone(), out[1].clone())
}

#[test]
fn answers_the_referrers_api_and_the_spec_error_table() {
    let b = bundle();
    let (sig, sbom) = add_referrers(&b);
    let srv = start(b.dir.path());
    let a = srv.addr.clone();
    let index = |body: &[u8]| -> Vec<(String, Option<String>)> {
        let v: serde_json::Value = serde_json::from_slice(body).unwrap();
        assert_eq!(v["schemaVersion"], 2);
        assert_eq!(v["mediaType"], "application/vnd.oci.image.index.v1+json");
        v["manifests"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| {
                (
                    m["digest"].as_str().unwrap().to_string(),
                    m["artifactType"].as_str().map(String::from),
                )
            })
            .collect()
    };

    let path = format!("/v2/lib/app/referrers/{}", b.md);
    let (st, hs, body) = request(&a, "GET", &path, "");
    assert_eq!(st, 200, "{}", String::from_utf8_lossy(&body));
    assert_eq!(
        header(&hs, "content-type"),
        Some("application/vnd.oci.image.index.v1+json")
    );
    assert_eq!(header(&hs, "oci-filters-applied"), None);
    let mut want = vec![
        (
            sig.to_string(),
            Some("application/vnd.example.sig.v1".into()),
        ),
        (
            sbom.to_string(),
            Some("application/vnd.example.sbom.v1".into()),
        ),
    ];
    want.sort();
    assert_eq!(index(&body), want);
    let filtered = format!("{path}?artifactType=application%2Fvnd.example.sig.v1");
    let (st, hs, body) = request(&a, "GET", &filtered, "");
    assert_eq!(st, 200);
    assert_eq!(header(&hs, "oci-filters-applied"), Some("artifactType"));
    assert_eq!(
        index(&body),
        [want
            .iter()
            .find(|w| w.0 == sig.to_string())
            .unwrap()
            .clone()]
    );
    // A digest nothing refers to: an empty index; a bad one 400, an unknown repository 404.
    let (st, _, body) = request(&a, "GET", &format!("/v2/lib/app/referrers/{sig}"), "");
    assert_eq!((st, index(&body)), (200, vec![]));
    for (target, status, code) in [
        (
            "/v2/lib/app/referrers/sha256:zz".to_string(),
            400,
            "DIGEST_INVALID",
        ),
        (
            format!("/v2/lib/none/referrers/{}", b.md),
            404,
            "NAME_UNKNOWN",
        ),
        (
            "/v2/lib/app/manifests/.INVALID_MANIFEST_NAME".into(),
            404,
            "MANIFEST_UNKNOWN",
        ),
        (
            "/v2/lib/app/manifests/sha256:zz".into(),
            404,
            "MANIFEST_UNKNOWN",
        ),
        ("/v2/lib/app/blobs/sha256:zz".into(), 400, "DIGEST_INVALID"),
    ] {
        let (st, hs, body) = request(&a, "GET", &target, "");
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(
            (st, v["errors"][0]["code"].as_str()),
            (status, Some(code)),
            "{target}"
        );
        assert_eq!(header(&hs, "content-type"), Some("application/json"));
        let (st, hs, body) = request(&a, "HEAD", &target, "");
        assert_eq!((st, body.len()), (status, 0), "HEAD {target}");
        assert_eq!(
            header(&hs, "content-length").map(|n| n.parse::<usize>().unwrap() > 0),
            Some(true)
        );
    }
    // A route that is not the spec's: 404 without the JSON error body.
    let (st, hs, _) = request(&a, "GET", "/v2/lib/app/nothing", "");
    assert_eq!(st, 404);
    assert_eq!(
        header(&hs, "content-type"),
        Some("text/plain; charset=utf-8")
    );
    // The referrers themselves are manifests of the repository.
    let (st, hs, _) = request(&a, "GET", &format!("/v2/lib/app/manifests/{sig}"), "");
    assert_eq!(st, 200);
    assert_eq!(
        header(&hs, "docker-content-digest"),
        Some(sig.to_string().as_str())
    );
}

#[test]
fn a_bundle_failing_verify_no_hash_is_not_served() {
    let b = bundle();
    std::fs::remove_file(Layout::new(b.dir.path().join("resources/registry")).blob_data(&b.good.0))
        .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_kpbuild"))
        .args([
            "serve",
            b.dir.path().to_str().unwrap(),
            "--listen",
            "127.0.0.1:0",
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("verify --no-hash") && err.contains(b.good.0.hex()),
        "{err}"
    );
    let out = Command::new(env!("CARGO_BIN_EXE_kpbuild"))
        .args(["serve", "/nonexistent-bundle"])
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&out.stderr).contains("kubeplay.lock.json"));
}
