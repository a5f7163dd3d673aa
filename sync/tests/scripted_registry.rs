//! The client's protocol paths that the fixture registry cannot produce on demand — bearer
//! token dance, 503 and 429 with `Retry-After`, a connection dropped mid-blob, wrong bytes —
//! against a small scripted HTTP server on 127.0.0.1 in this process. The real-registry proof
//! is hack/stages/sync.sh.

mod common;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{Handler, Req, Stall, reply, serve};
use kpbuild_oci::image_ref::ImageRef;
use kpbuild_oci::media_type::OCI_MANIFEST;
use kpbuild_oci::registry_layout::{Digest, Layout};
use kpbuild_sync::{
    ClientConfig, ImageError, PlatformSelection, Progress, RetryEvent, RetryPolicy, SyncOptions,
    sync_images,
};

#[derive(Default)]
struct Events {
    retries: Mutex<Vec<RetryEvent>>,
}
impl Progress for Events {
    fn retry(&self, e: &RetryEvent) {
        self.retries.lock().unwrap().push(e.clone());
    }
}

struct Image {
    manifest: Vec<u8>,
    config: Vec<u8>,
    layer: Vec<u8>,
}

fn image() -> Image {
    let config =
        br#"{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]}}"#
            .to_vec();
    let layer: Vec<u8> = (0..300_000u32).map(|i| (i * 7 % 251) as u8).collect();
    let manifest = format!(
        r#"{{"schemaVersion":2,"mediaType":"{OCI_MANIFEST}","config":{{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"{}","size":{}}},"layers":[{{"mediaType":"application/vnd.oci.image.layer.v1.tar","digest":"{}","size":{}}}]}}"#,
        Digest::of_bytes(&config),
        config.len(),
        Digest::of_bytes(&layer),
        layer.len()
    )
    .into_bytes();
    Image {
        manifest,
        config,
        layer,
    }
}

fn options(dest: &std::path::Path) -> SyncOptions {
    SyncOptions {
        dest: dest.to_path_buf(),
        platforms: PlatformSelection::Only(vec!["linux/amd64".parse().unwrap()]),
        jobs: 4,
        mirrors: vec![],
        map: None,
        client: ClientConfig {
            retry: RetryPolicy {
                retries: 3,
                base: Duration::from_millis(5),
                max: Duration::from_millis(20),
                max_retry_after: Duration::from_secs(2),
            },
            ..ClientConfig::default()
        },
        fetch_blobs: true,
        blob_cache: None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bearer_retries_retry_after_and_dropped_connection() {
    let img = Arc::new(image());
    let cfg_d = Digest::of_bytes(&img.config).to_string();
    let layer_d = Digest::of_bytes(&img.layer).to_string();
    let addr_cell: Arc<Mutex<String>> = Arc::default();
    let addr_for_handler = addr_cell.clone();
    let i2 = img.clone();
    let (cfg_d2, layer_d2) = (cfg_d.clone(), layer_d.clone());
    let handler: Arc<Handler> = Arc::new(move |req: &Req, n: usize| {
        let (cfg_d, layer_d) = (&cfg_d2, &layer_d2);
        let addr = addr_for_handler.lock().unwrap().clone();
        let challenge = format!(r#"Bearer realm="http://{addr}/token",service="scripted""#);
        if req.path.starts_with("/token?") {
            assert!(
                req.path.contains("scope=repository%3Aapp%3Apull"),
                "{}",
                req.path
            );
            return reply(200, br#"{"token":"T1"}"#);
        }
        if req.authorization.as_deref() != Some("Bearer T1") {
            return reply(401, b"{}").header("WWW-Authenticate", &challenge);
        }
        let p = req.path.as_str();
        if p == "/v2/app/manifests/v1" {
            return match n {
                0 => reply(503, b"busy"),
                1 => reply(429, b"slow down").header("Retry-After", "1"),
                _ => reply(200, &i2.manifest).header("Content-Type", OCI_MANIFEST),
            };
        }
        if p == format!("/v2/app/blobs/{cfg_d}") {
            return reply(200, &i2.config);
        }
        if p == format!("/v2/app/blobs/{layer_d}") {
            let mut r = reply(200, &i2.layer);
            if n == 0 {
                r.cut_at = Some(1000);
            }
            return r;
        }
        reply(404, br#"{"errors":[{"code":"NOT_FOUND","message":"no"}]}"#)
    });
    let server = serve(handler).await;
    let addr = server.addr.clone();
    *addr_cell.lock().unwrap() = addr.clone();

    let dir = tempfile::tempdir().unwrap();
    let events = Arc::new(Events::default());
    let r = ImageRef::parse(&format!("{addr}/app:v1")).unwrap();
    let summary = sync_images(vec![r], options(dir.path()), events.clone())
        .await
        .unwrap();
    assert!(summary.failures.is_empty(), "{:?}", summary.failures);
    assert_eq!(summary.images.len(), 1);
    assert_eq!(summary.images[0].digest, Digest::of_bytes(&img.manifest));

    let hits = server.hits();
    assert_eq!(
        hits.get("/token"),
        Some(&1),
        "one token for one scope: {hits:?}"
    );
    assert_eq!(
        hits.get("/v2/app/manifests/v1"),
        Some(&3),
        "503, 429, 200: {hits:?}"
    );
    assert_eq!(
        hits.get(&format!("/v2/app/blobs/{layer_d}")),
        Some(&2),
        "dropped, then whole"
    );
    assert_eq!(hits.get(&format!("/v2/app/blobs/{cfg_d}")), Some(&1));

    let retries = events.retries.lock().unwrap().clone();
    let reasons: Vec<&str> = retries.iter().map(|e| e.reason.as_str()).collect();
    assert_eq!(retries.len(), 3, "{reasons:?}");
    assert!(
        reasons[0].contains("503") && reasons[1].contains("429"),
        "{reasons:?}"
    );
    // The 429's Retry-After (1 s) is the delay used, not the 5 ms backoff.
    assert_eq!(retries[1].delay, Duration::from_secs(1));
    assert!(
        retries[2].reason.contains("connection dropped"),
        "{reasons:?}"
    );

    let layout = Layout::new(dir.path());
    let layer_digest: Digest = layer_d.parse().unwrap();
    assert_eq!(
        std::fs::read(layout.blob_data(&layer_digest)).unwrap(),
        img.layer
    );
    assert_eq!(
        std::fs::read_to_string(layout.tag_current_link("app", "v1")).unwrap(),
        Digest::of_bytes(&img.manifest).to_string()
    );
    assert!(!dir.path().join(".kpbuild-tmp").exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_bytes_are_never_stored_and_errors_name_the_digest() {
    let img = Arc::new(image());
    let layer_d = Digest::of_bytes(&img.layer);
    let cfg_d = Digest::of_bytes(&img.config);
    let i2 = img.clone();
    let (ld, cd) = (layer_d.to_string(), cfg_d.to_string());
    let handler: Arc<Handler> = Arc::new(move |req: &Req, _n: usize| {
        let p = req.path.as_str();
        if p == "/v2/" {
            return reply(200, b"{}");
        }
        if p == "/v2/app/manifests/v1" {
            return reply(200, &i2.manifest).header("Content-Type", OCI_MANIFEST);
        }
        if p == format!("/v2/app/blobs/{cd}") {
            return reply(200, &i2.config);
        }
        if p == format!("/v2/app/blobs/{ld}") {
            let mut bad = i2.layer.clone();
            bad[5000] ^= 0xff; // same length, other bytes
            return reply(200, &bad);
        }
        if p == "/v2/app/manifests/pinned" {
            // A tag whose Docker-Content-Digest does not match the bytes.
            return reply(200, &i2.manifest)
                .header("Content-Type", OCI_MANIFEST)
                .header("Docker-Content-Digest", &cd);
        }
        reply(
            404,
            br#"{"errors":[{"code":"MANIFEST_UNKNOWN","message":"manifest unknown"}]}"#,
        )
    });
    let addr = serve(handler).await.addr;
    let dir = tempfile::tempdir().unwrap();
    let refs = ["app:v1", "app:missing", "app:pinned"]
        .iter()
        .map(|r| ImageRef::parse(&format!("{addr}/{r}")).unwrap())
        .collect();
    let summary = sync_images(refs, options(dir.path()), Arc::new(Events::default()))
        .await
        .unwrap();
    assert!(summary.images.is_empty());
    assert_eq!(summary.failures.len(), 3);
    let by_image: HashMap<String, String> = summary
        .failures
        .iter()
        .map(|f| (f.image.clone(), f.to_string()))
        .collect();

    let bad = &by_image[&format!("{addr}/app:v1")];
    assert!(bad.contains(&format!("blob {layer_d}")), "{bad}");
    assert!(bad.contains("nothing was stored"), "{bad}");
    assert!(matches!(
        &summary.failures.iter().find(|f| f.image.ends_with("app:v1")).unwrap().error,
        ImageError::Shared(e) if matches!(**e, ImageError::BlobDigestMismatch { .. })
    ));
    let missing = &by_image[&format!("{addr}/app:missing")];
    assert!(
        missing.contains("not found") && missing.contains("MANIFEST_UNKNOWN"),
        "{missing}"
    );
    let pinned = &by_image[&format!("{addr}/app:pinned")];
    assert!(
        pinned.contains("manifest ") && pinned.contains(&cfg_d.to_string()),
        "{pinned}"
    );

    let layout = Layout::new(dir.path());
    assert!(!layout.blob_data(&layer_d).exists(), "wrong bytes stored");
    assert!(
        !layout.repository("app").join("_manifests/tags").exists(),
        "tag written"
    );
    assert!(!dir.path().join(".kpbuild-tmp").exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_bytes_and_stalls_are_retried_and_a_permanent_fault_gives_up() {
    let img = Arc::new(image());
    let layer_d = Digest::of_bytes(&img.layer);
    let cfg_d = Digest::of_bytes(&img.config);
    let manifest_d = Digest::of_bytes(&img.manifest);
    let i2 = img.clone();
    let (ld, cd, md) = (
        layer_d.to_string(),
        cfg_d.to_string(),
        manifest_d.to_string(),
    );
    let (ld2, md2) = (ld.clone(), md.clone());
    let handler: Arc<Handler> = Arc::new(move |req: &Req, n: usize| {
        let (ld, md) = (&ld2, &md2);
        let p = req.path.as_str();
        if p == "/v2/" {
            return reply(200, b"{}");
        }
        if p == "/v2/app/manifests/v1" || p == "/v2/always-wrong/manifests/v1" {
            // First answer: a byte changed, the digest header intact.
            let mut bytes = i2.manifest.clone();
            if n == 0 {
                bytes[10] ^= 0xff;
            }
            return reply(200, &bytes)
                .header("Content-Type", OCI_MANIFEST)
                .header("Docker-Content-Digest", md);
        }
        if p.ends_with(&format!("/blobs/{cd}")) {
            // Stalls longer than the client's read timeout, once.
            let mut r = reply(200, &i2.config);
            if n == 0 {
                r.stall = Some(Stall::Midway(Duration::from_secs(5)));
            }
            return r;
        }
        if p == format!("/v2/app/blobs/{ld}") {
            let mut bytes = i2.layer.clone();
            if n == 0 {
                bytes[1234] ^= 0xff;
            }
            return reply(200, &bytes);
        }
        if p == format!("/v2/always-wrong/blobs/{ld}") {
            let mut bytes = i2.layer.clone();
            bytes[1234] ^= 0xff;
            return reply(200, &bytes);
        }
        reply(404, b"{}")
    });
    let server = serve(handler).await;
    let addr = server.addr.clone();
    let dir = tempfile::tempdir().unwrap();
    let mut opts = options(dir.path());
    opts.client.read_timeout = Duration::from_millis(500);
    let events = Arc::new(Events::default());
    let app = ImageRef::parse(&format!("{addr}/app:v1")).unwrap();
    let summary = sync_images(vec![app], opts.clone(), events.clone())
        .await
        .unwrap();

    // app: the wrong manifest, the wrong layer and the stalled config were each fetched again.
    assert_eq!(summary.images.len(), 1, "{:?}", summary.failures);
    let hits = server.hits();
    assert_eq!(hits[&"/v2/app/manifests/v1".to_string()], 2, "{hits:?}");
    assert_eq!(hits[&format!("/v2/app/blobs/{ld}")], 2, "{hits:?}");
    let layout = Layout::new(dir.path());
    assert_eq!(
        std::fs::read(layout.blob_data(&layer_d)).unwrap(),
        img.layer
    );
    assert_eq!(std::fs::read(layout.blob_data(&cfg_d)).unwrap(), img.config);
    let reasons: Vec<String> = events
        .retries
        .lock()
        .unwrap()
        .iter()
        .map(|e| e.reason.clone())
        .collect();
    assert!(
        reasons
            .iter()
            .any(|r| r.contains(&format!("manifest {md}")) && r.contains("have sha256")),
        "{reasons:?}"
    );
    assert!(
        reasons
            .iter()
            .any(|r| r.contains(&format!("blob {ld}")) && r.contains("have sha256")),
        "{reasons:?}"
    );
    assert!(
        reasons
            .iter()
            .any(|r| r.contains("connection dropped") && r.contains("timed out")),
        "a stall beyond the read timeout is retried: {reasons:?}"
    );

    // always-wrong (the same image, its layer always wrong): 1 try + 2 retries, then the
    // error names it.
    let dir = tempfile::tempdir().unwrap();
    opts.dest = dir.path().to_path_buf();
    let bad = ImageRef::parse(&format!("{addr}/always-wrong:v1")).unwrap();
    let summary = sync_images(vec![bad], opts, events.clone()).await.unwrap();
    let hits = server.hits();
    let layout = Layout::new(dir.path());
    assert_eq!(summary.failures.len(), 1);
    let f = summary.failures[0].to_string();
    assert!(
        f.contains("always-wrong:v1")
            && f.contains(&format!("blob {ld}"))
            && f.contains("nothing was stored"),
        "{f}"
    );
    assert_eq!(hits[&format!("/v2/always-wrong/blobs/{ld}")], 3, "{hits:?}");
    assert!(
        !layout
            .repository("always-wrong")
            .join("_manifests/tags")
            .exists()
    );
    assert!(!dir.path().join(".kpbuild-tmp").exists());
}
