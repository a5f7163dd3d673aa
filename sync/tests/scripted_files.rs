//! The file fetcher (`kpbuild_sync::download`) against a small scripted HTTP server on
//! 127.0.0.1 in this process: `Retry-After`, a transfer cut mid-body and resumed with a range
//! request, a stall cut by the read timeout, wrong bytes, a mirror list tried in order, the
//! cache by pin, and the report of a file no location gave. The proof through BuildKit is
//! `hack/e2e-faults.sh files`.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use kpbuild_modules::kinds::PinWork;
use kpbuild_sync::RetryPolicy;
use kpbuild_sync::download::{FetchConfig, FetchError, Fetched, FileRequest, fetch_file};
use sha2::Digest as _;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

struct Reply {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
    /// Send only this many body bytes, then close (Content-Length still says the full size).
    cut_at: Option<usize>,
    /// Send nothing of the body for this long first.
    stall: Option<Duration>,
}

fn reply(status: u16, body: &[u8]) -> Reply {
    Reply {
        status,
        headers: vec![],
        body: body.to_vec(),
        cut_at: None,
        stall: None,
    }
}

/// `(path, first byte of a Range request, n)` where n counts earlier requests for the path.
type Handler = dyn Fn(&str, Option<u64>, usize) -> Reply + Send + Sync;
type Log = Arc<Mutex<Vec<(String, Option<u64>)>>>;

async fn serve(handler: Arc<Handler>) -> (String, Log) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let log: Log = Arc::default();
    let log2 = log.clone();
    let hits: Arc<Mutex<HashMap<String, usize>>> = Arc::default();
    tokio::spawn(async move {
        loop {
            let Ok((mut sock, _)) = listener.accept().await else {
                return;
            };
            let (handler, log, hits) = (handler.clone(), log2.clone(), hits.clone());
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut tmp = [0u8; 4096];
                while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
                    match sock.read(&mut tmp).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => buf.extend_from_slice(&tmp[..n]),
                    }
                }
                let text = String::from_utf8_lossy(&buf).to_string();
                let mut lines = text.split("\r\n");
                let path = lines
                    .next()
                    .and_then(|l| l.split(' ').nth(1))
                    .unwrap_or("")
                    .to_string();
                let range = lines
                    .filter_map(|l| l.split_once(':'))
                    .find(|(k, _)| k.eq_ignore_ascii_case("range"))
                    .and_then(|(_, v)| {
                        v.trim()
                            .strip_prefix("bytes=")?
                            .strip_suffix('-')?
                            .parse()
                            .ok()
                    });
                log.lock().unwrap().push((path.clone(), range));
                let n = {
                    let mut h = hits.lock().unwrap();
                    let c = h.entry(path.clone()).or_default();
                    *c += 1;
                    *c - 1
                };
                let r = handler(&path, range, n);
                let mut head = format!(
                    "HTTP/1.1 {} X\r\nContent-Length: {}\r\nConnection: close\r\n",
                    r.status,
                    r.body.len()
                );
                for (k, v) in &r.headers {
                    head.push_str(&format!("{k}: {v}\r\n"));
                }
                head.push_str("\r\n");
                let _ = sock.write_all(head.as_bytes()).await;
                if let Some(pause) = r.stall {
                    tokio::time::sleep(pause).await;
                }
                let body = &r.body[..r.cut_at.unwrap_or(r.body.len())];
                let _ = sock.write_all(body).await;
                let _ = sock.shutdown().await;
            });
        }
    });
    (base, log)
}

fn content() -> Vec<u8> {
    (0..200_000u32).map(|i| (i * 7 % 251) as u8).collect()
}

fn pin(bytes: &[u8]) -> PinWork {
    PinWork {
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
        Some(s) => {
            let mut r = reply(206, &body[s as usize..]);
            r.headers.push((
                "Content-Range".into(),
                format!("bytes {s}-{}/{}", body.len() - 1, body.len()),
            ));
            r
        }
        None => reply(200, body),
    }
}

fn request(dir: &std::path::Path, sources: Vec<String>, pin: Option<PinWork>) -> FileRequest {
    FileRequest {
        url: "https://files.example/f.bin".into(),
        bundle_path: "resources/nginx/files/files.example/f.bin".into(),
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
    let (base, log) = serve(Arc::new(move |_, range, n| match n {
        0 => {
            let mut r = reply(503, b"busy");
            r.headers.push(("Retry-After".into(), "0".into()));
            r
        }
        1 => Reply {
            cut_at: Some(70_000),
            ..reply(200, &b)
        },
        _ => ranged(&b, range),
    }))
    .await;
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
    let log = log.lock().unwrap().clone();
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
    assert_eq!(log.len(), 3);
    assert_eq!(std::fs::read(&req.dest).unwrap(), body);
}

#[tokio::test]
async fn a_stall_is_cut_by_the_read_timeout_and_retried() {
    let body = content();
    let b = body.clone();
    let (base, _) = serve(Arc::new(move |_, _, n| Reply {
        stall: (n == 0).then_some(Duration::from_secs(5)),
        ..reply(200, &b)
    }))
    .await;
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
    let (base, _) = serve(Arc::new(move |path, _, _| {
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
    .await;
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
    let (base, _) = serve(Arc::new(|_, _, _| reply(200, b"hello"))).await;
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(Duration::from_secs(10));
    let http = kpbuild_sync::download::http_client(&cfg).unwrap();
    let req = request(dir.path(), vec![format!("{base}/f.bin")], None);
    fetch_file(&http, &cfg, &req).await.unwrap();
    assert_eq!(std::fs::read(&req.dest).unwrap(), b"hello");
    assert!(!dir.path().join("cache").exists());
}
