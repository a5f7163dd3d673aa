//! The file fetcher (`kpbuild_sync::download`) against a small scripted HTTP server on
//! 127.0.0.1 in this process: `Retry-After`, a transfer cut mid-body and resumed with a range
//! request, a stall cut by the read timeout, wrong bytes, a mirror list tried in order, the
//! cache by pin, and the report of a file no location gave. The proof through BuildKit is
//! `hack/stages/faults.sh files`.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::{Reply, Stall, reply, serve};

use kpbuild_sync::RetryPolicy;
use kpbuild_sync::download::{FetchConfig, FetchError, Fetched, FileRequest, Pin, fetch_file};
use sha2::Digest as _;

fn content() -> Vec<u8> {
    (0..200_000u32).map(|i| (i * 7 % 251) as u8).collect()
}

fn pin(bytes: &[u8]) -> Pin {
    Pin {
        algorithm: "sha256".into(),
        hex: hex::encode(sha2::Sha256::digest(bytes)),
    }
}

fn config(read_timeout: Duration) -> FetchConfig {
    FetchConfig {
        retry: RetryPolicy {
            retries: 3,
            base: Duration::from_millis(10),
            max: Duration::from_millis(50),
            max_retry_after: Duration::from_millis(100),
        },
        read_timeout,
        on_retry: None,
    }
}

/// A range reply: 206 with the rest from `start`, or 200 with everything.
fn ranged(body: &[u8], start: Option<u64>) -> Reply {
    match start {
        Some(s) => reply(206, &body[s as usize..]).header(
            "Content-Range",
            &format!("bytes {s}-{}/{}", body.len() - 1, body.len()),
        ),
        None => reply(200, body),
    }
}

/// The request; how it retries is the test's `config`.
fn request(dir: &std::path::Path, sources: Vec<String>, pin: Option<Pin>) -> FileRequest {
    FileRequest {
        url: "https://files.example/f.bin".into(),
        path: "resources/nginx/files/files.example/f.bin".into(),
        sources,
        pin,
        dest: dir.join("f.bin"),
        cache: Some(dir.join("cache")),
    }
}

#[tokio::test]
async fn retries_honour_retry_after_and_resume_a_cut_transfer() {
    let body = content();
    let b = body.clone();
    let server = serve(Arc::new(move |req, n| match n {
        0 => reply(503, b"busy").header("Retry-After", "0"),
        1 => Reply {
            cut_at: Some(70_000),
            ..reply(200, &b)
        },
        _ => ranged(&b, req.range_start),
    }))
    .await;
    let base = server.base();
    let dir = tempfile::tempdir().unwrap();
    let http = kpbuild_sync::download::http_client(&config(Duration::from_secs(10))).unwrap();
    let req = request(dir.path(), vec![format!("{base}/f.bin")], Some(pin(&body)));
    let got = fetch_file(&http, &config(Duration::from_secs(10)), &req)
        .await
        .unwrap();
    let Fetched::Downloaded {
        retries, resumed, ..
    } = got
    else {
        panic!("{got:?}")
    };
    assert_eq!(retries, 2);
    assert!(resumed >= 65_536, "{resumed}");
    assert_eq!(std::fs::read(&req.dest).unwrap(), body);
    let log = server.log();
    assert_eq!(log.len(), 3);
    assert_eq!(
        log[2].1,
        resumed.into(),
        "the third request asks for the rest"
    );
    // Nothing else is left beside the file and the cache.
    let names: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert_eq!(names.len(), 2, "{names:?}");

    // Fetched once, copied from the cache after: the server is not asked.
    std::fs::remove_file(&req.dest).unwrap();
    let again = fetch_file(&http, &config(Duration::from_secs(10)), &req)
        .await
        .unwrap();
    assert_eq!(
        again,
        Fetched::Cached {
            bytes: body.len() as u64
        }
    );
    assert_eq!(server.log().len(), 3);
    assert_eq!(std::fs::read(&req.dest).unwrap(), body);
}

#[tokio::test]
async fn a_stall_is_cut_by_the_read_timeout_and_retried() {
    let body = content();
    let b = body.clone();
    let base = serve(Arc::new(move |_, n| Reply {
        stall: (n == 0).then_some(Stall::BeforeBody(Duration::from_secs(5))),
        ..reply(200, &b)
    }))
    .await
    .base();
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(Duration::from_millis(300));
    let http = kpbuild_sync::download::http_client(&cfg).unwrap();
    let req = request(dir.path(), vec![format!("{base}/f.bin")], Some(pin(&body)));
    let got = fetch_file(&http, &cfg, &req).await.unwrap();
    assert!(
        matches!(got, Fetched::Downloaded { retries: 1, .. }),
        "{got:?}"
    );
    assert_eq!(std::fs::read(&req.dest).unwrap(), body);
}

#[tokio::test]
async fn mirrors_are_tried_in_order_and_failures_name_each() {
    let body = content();
    let b = body.clone();
    let base = serve(Arc::new(move |req, _| {
        let path = &req.path;
        if path.starts_with("/gone/") {
            reply(404, b"not here")
        } else if path.starts_with("/wrong/") {
            let mut w = b.clone();
            w[10] ^= 1;
            reply(200, &w)
        } else if path.starts_with("/busy/") {
            reply(503, b"busy")
        } else {
            reply(200, &b)
        }
    }))
    .await
    .base();
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(Duration::from_secs(10));
    let http = kpbuild_sync::download::http_client(&cfg).unwrap();
    let src = |p: &str| format!("{base}/{p}/f.bin");
    let req = request(
        dir.path(),
        vec![src("gone"), src("busy"), src("wrong"), src("good")],
        Some(pin(&body)),
    );
    let got = fetch_file(&http, &cfg, &req).await.unwrap();
    assert!(
        matches!(&got, Fetched::Downloaded { from, .. } if *from == src("good")),
        "{got:?}"
    );
    assert_eq!(std::fs::read(&req.dest).unwrap(), body);

    // No location has it: the report names the file, its bundle path, every location and
    // what came back; nothing is left in place.
    let dir = tempfile::tempdir().unwrap();
    let req = request(
        dir.path(),
        vec![src("gone"), src("busy"), src("wrong")],
        Some(pin(&body)),
    );
    let err = fetch_file(&http, &cfg, &req).await.unwrap_err();
    let FetchError::Failed(f) = &err else {
        panic!("{err}")
    };
    assert_eq!(f.tried.len(), 3);
    let msg = err.to_string();
    for want in [
        "https://files.example/f.bin (bundle path resources/nginx/files/files.example/f.bin, pin sha256:",
        &format!("{} tried 1 time: HTTP 404 (8 bytes)", src("gone")),
        &format!("{} tried 4 times: HTTP 503 (4 bytes)", src("busy")),
        "3 retries used up",
        &format!("{} tried 3 times: 200000 bytes with sha256 ", src("wrong")),
        "wrong bytes 3 times",
    ] {
        assert!(msg.contains(want), "{want}\nnot in\n{msg}");
    }
    assert!(std::fs::read_dir(dir.path()).unwrap().next().is_none());
}

#[tokio::test]
async fn an_unpinned_file_is_fetched_and_not_cached() {
    let base = serve(Arc::new(|_, _| reply(200, b"hello"))).await.base();
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(Duration::from_secs(10));
    let http = kpbuild_sync::download::http_client(&cfg).unwrap();
    let req = request(dir.path(), vec![format!("{base}/f.bin")], None);
    fetch_file(&http, &cfg, &req).await.unwrap();
    assert_eq!(std::fs::read(&req.dest).unwrap(), b"hello");
    assert!(!dir.path().join("cache").exists());
}
