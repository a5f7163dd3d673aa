//! A load client for `hack/bench-serve.sh`: N concurrent clients pull every given image (the
//! tag's manifest, every platform's manifest, every config and layer blob, bodies read to the
//! end and discarded) again and again from a registry for a fixed time, then print one JSON
//! line: bytes, requests, errors, seconds.
//!
//!   cargo run --release --example serve_load -- URL CLIENTS SECONDS REPO:TAG…

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use kpbuild_oci::media_type::MANIFEST_ACCEPT;
use kpbuild_oci::registry_layout::{Manifest, parse_manifest};

#[derive(Default)]
struct Totals {
    bytes: AtomicU64,
    requests: AtomicU64,
    errors: AtomicU64,
}

async fn fetch(
    client: &reqwest::Client,
    url: &str,
    t: &Totals,
) -> Option<(Option<String>, Vec<u8>)> {
    t.requests.fetch_add(1, Ordering::Relaxed);
    let resp = match client
        .get(url)
        .header("Accept", MANIFEST_ACCEPT)
        .send()
        .await
    {
        Ok(r) if r.status().is_success() => r,
        Ok(r) => {
            eprintln!("{url}: {}", r.status());
            t.errors.fetch_add(1, Ordering::Relaxed);
            return None;
        }
        Err(e) => {
            eprintln!("{url}: {e}");
            t.errors.fetch_add(1, Ordering::Relaxed);
            return None;
        }
    };
    let ct = resp
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let want = resp.content_length();
    let keep = url.contains("/manifests/");
    let mut body = Vec::new();
    let mut n = 0u64;
    let mut stream = resp.bytes_stream();
    while let Some(chunk) = stream.next().await {
        match chunk {
            Ok(c) => {
                n += c.len() as u64;
                if keep {
                    body.extend_from_slice(&c);
                }
            }
            Err(e) => {
                eprintln!("{url}: {e}");
                t.errors.fetch_add(1, Ordering::Relaxed);
                return None;
            }
        }
    }
    t.bytes.fetch_add(n, Ordering::Relaxed);
    if want.is_some_and(|w| w != n) {
        eprintln!("{url}: {n} bytes, Content-Length said {want:?}");
        t.errors.fetch_add(1, Ordering::Relaxed);
        return None;
    }
    Some((ct, body))
}

async fn pull(client: &reqwest::Client, base: &str, image: &str, t: &Totals, deadline: Instant) {
    let (repo, tag) = image.rsplit_once(':').unwrap_or((image, "latest"));
    let mut manifests = vec![format!("{base}/v2/{repo}/manifests/{tag}")];
    while let Some(url) = manifests.pop() {
        if Instant::now() >= deadline {
            return;
        }
        let Some((ct, body)) = fetch(client, &url, t).await else {
            return;
        };
        match parse_manifest(ct.as_deref(), &body) {
            Ok(Manifest::Index { manifests: m, .. }) => manifests.extend(
                m.iter()
                    .map(|d| format!("{base}/v2/{repo}/manifests/{}", d.digest)),
            ),
            Ok(m @ Manifest::Image { .. }) => {
                for d in m.blobs() {
                    if Instant::now() >= deadline {
                        return;
                    }
                    fetch(client, &format!("{base}/v2/{repo}/blobs/{}", d.digest), t).await;
                }
            }
            Err(e) => {
                eprintln!("{url}: {e}");
                t.errors.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.len() < 4 {
        eprintln!("usage: serve_load URL CLIENTS SECONDS REPO:TAG…");
        std::process::exit(2);
    }
    // reqwest is built without a default TLS provider (plain HTTP here, but it asks).
    let _ = rustls::crypto::ring::default_provider().install_default();
    let base = args[0].trim_end_matches('/').to_string();
    let clients: usize = args[1].parse().expect("CLIENTS");
    let seconds: u64 = args[2].parse().expect("SECONDS");
    let images: Arc<Vec<String>> = Arc::new(args[3..].to_vec());
    let totals = Arc::new(Totals::default());
    let start = Instant::now();
    let deadline = start + Duration::from_secs(seconds);
    let mut tasks = Vec::new();
    for i in 0..clients {
        let (base, images, totals) = (base.clone(), images.clone(), totals.clone());
        tasks.push(tokio::spawn(async move {
            // One connection pool per client, as separate pulling nodes would have.
            let client = reqwest::Client::builder()
                .pool_max_idle_per_host(1)
                .build()
                .expect("HTTP client");
            let mut k = i;
            while Instant::now() < deadline {
                pull(&client, &base, &images[k % images.len()], &totals, deadline).await;
                k += 1;
            }
        }));
    }
    for t in tasks {
        if t.await.is_err() {
            totals.errors.fetch_add(1, Ordering::Relaxed);
        }
    }
    let secs = start.elapsed().as_secs_f64();
    println!(
        "{{\"bytes\": {}, \"requests\": {}, \"errors\": {}, \"seconds\": {secs:.2}}}",
        totals.bytes.load(Ordering::Relaxed),
        totals.requests.load(Ordering::Relaxed),
        totals.errors.load(Ordering::Relaxed)
    );
}
