//! Each fault kind, seen by a raw client through the proxy in front of a small upstream on
//! 127.0.0.1 in this process.

use std::sync::Arc;
use std::time::Duration;

use kpbuild_faultproxy::{AlwaysRule, Config, FaultKind, Proxy, Schedule};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

fn body() -> Vec<u8> {
    (0..200_000u32).map(|i| (i * 13 % 251) as u8).collect()
}

/// An upstream answering every GET with `body()` (and `/small` with 5 bytes, HEAD without
/// a body).
async fn upstream() -> String {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap().to_string();
    tokio::spawn(async move {
        loop {
            let (mut s, _) = l.accept().await.unwrap();
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut tmp = [0u8; 1024];
                while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
                    let n = s.read(&mut tmp).await.unwrap();
                    if n == 0 {
                        return;
                    }
                    buf.extend_from_slice(&tmp[..n]);
                }
                let text = String::from_utf8_lossy(&buf).to_string();
                assert!(text.contains("Connection: close\r\n"), "{text}");
                let b = if text.contains(" /small ") {
                    b"small".to_vec()
                } else {
                    body()
                };
                let head = format!(
                    "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nContent-Type: application/octet-stream\r\n\r\n",
                    b.len()
                );
                s.write_all(head.as_bytes()).await.unwrap();
                if !text.starts_with("HEAD ") {
                    let _ = s.write_all(&b).await;
                }
                let _ = s.shutdown().await;
            });
        }
    });
    addr
}

async fn proxy(always: &[&str], stall: Duration) -> (String, Arc<Proxy>, tempfile::TempDir) {
    let up = upstream().await;
    let dir = tempfile::tempdir().unwrap();
    let p = Proxy::new(Config {
        upstream: up,
        schedule: Schedule {
            always: always
                .iter()
                .map(|r| r.parse::<AlwaysRule>().unwrap())
                .collect(),
            ..Schedule::none()
        },
        retry_after: 3,
        stall,
        stats_path: Some(dir.path().join("stats.json")),
        log_path: Some(dir.path().join("log.jsonl")),
    })
    .unwrap();
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap().to_string();
    tokio::spawn(p.clone().serve(l));
    (addr, p, dir)
}

/// What a raw client got: the head, the body bytes, and how the stream ended.
struct Got {
    head: String,
    body: Vec<u8>,
    end: Result<(), std::io::ErrorKind>,
}

async fn get(addr: &str, method: &str, path: &str) -> Got {
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(
        format!("{method} {path} HTTP/1.1\r\nHost: x\r\nConnection: keep-alive\r\n\r\n").as_bytes(),
    )
    .await
    .unwrap();
    let mut all = Vec::new();
    let mut tmp = [0u8; 65536];
    let end = loop {
        match s.read(&mut tmp).await {
            Ok(0) => break Ok(()),
            Ok(n) => all.extend_from_slice(&tmp[..n]),
            Err(e) => break Err(e.kind()),
        }
    };
    let split = all
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map(|i| i + 4)
        .unwrap_or(all.len());
    Got {
        head: String::from_utf8_lossy(&all[..split]).to_string(),
        body: all[split..].to_vec(),
        end,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_fault_kind_does_what_it_says() {
    let (addr, p, dir) = proxy(
        &[
            "/s500=500",
            "/s502=502",
            "/s503=503",
            "/s429=429",
            "/reset=reset",
            "/truncate=truncate",
            "/wrong=wrong",
            "/stall=stall",
            "/small=truncate",
        ],
        Duration::from_millis(200),
    )
    .await;
    let good = body();

    let g = get(&addr, "GET", "/pass").await;
    assert!(g.head.starts_with("HTTP/1.1 200 "), "{}", g.head);
    assert_eq!(g.body, good, "an unfaulted request passes untouched");

    for s in [500, 502, 503, 429] {
        let g = get(&addr, "GET", &format!("/s{s}")).await;
        assert!(g.head.starts_with(&format!("HTTP/1.1 {s} ")), "{}", g.head);
        assert!(String::from_utf8_lossy(&g.body).contains("injected"));
        assert_eq!(
            g.head.contains("Retry-After: 3\r\n"),
            s == 429,
            "{}",
            g.head
        );
    }

    let g = get(&addr, "GET", "/reset").await;
    assert!(g.head.contains(&format!("Content-Length: {}", good.len())));
    assert!(g.body.len() < good.len(), "{}", g.body.len());
    assert_eq!(g.body[..], good[..g.body.len()], "what came is a prefix");
    assert_eq!(g.end, Err(std::io::ErrorKind::ConnectionReset));

    let g = get(&addr, "GET", "/truncate").await;
    assert!(g.body.len() < good.len());
    assert_eq!(g.body[..], good[..g.body.len()]);
    assert_eq!(g.end, Ok(()), "a clean close, short of Content-Length");

    let g = get(&addr, "GET", "/wrong").await;
    assert_eq!(g.body.len(), good.len(), "same length");
    let diffs = g.body.iter().zip(&good).filter(|(a, b)| a != b).count();
    assert_eq!(diffs, 1, "exactly one byte changed");

    let g = get(&addr, "GET", "/stall").await;
    assert_eq!(
        g.body, good,
        "a stall the client waits out delivers everything"
    );

    // A body fault on a response without a body does not apply; a HEAD is passed through.
    let g = get(&addr, "HEAD", "/small").await;
    assert!(g.head.starts_with("HTTP/1.1 200 ") && g.body.is_empty());
    let g = get(&addr, "GET", "/small").await;
    assert!(!g.body.is_empty() && g.body.len() < 5, "{:?}", g.body);

    // Not HTTP: counted, closed.
    let mut s = TcpStream::connect(&addr).await.unwrap();
    s.write_all(&[
        0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0x01, 0xfc, 0x03, 0x03,
    ])
    .await
    .unwrap();
    let mut sink = Vec::new();
    let _ = s.read_to_end(&mut sink).await;
    assert!(sink.is_empty());
    // The stats are written after the request; give the task a moment to record it.
    for _ in 0..100 {
        if p.stats().not_http == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }

    let st = p.stats();
    assert_eq!(st.requests, 11, "{st:?}");
    assert_eq!(st.not_http, 1);
    assert_eq!(st.not_applicable, 1, "the HEAD's truncate");
    assert_eq!(st.faults_injected, 9, "{st:?}");
    for k in FaultKind::ALL {
        let want = if k == FaultKind::Truncate { 2 } else { 1 };
        assert_eq!(st.faults.get(k.name()), Some(&want), "{k}: {st:?}");
    }
    p.write_stats();
    let written: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.path().join("stats.json")).unwrap()).unwrap();
    assert_eq!(written["faults_injected"], 9);
    let log = std::fs::read_to_string(dir.path().join("log.jsonl")).unwrap();
    assert_eq!(log.lines().count(), 11);
    let reset_line: serde_json::Value = log
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .find(|v| v["target"] == "/reset")
        .unwrap();
    assert_eq!(reset_line["outcome"], "reset");
    assert_eq!(reset_line["fault"], "reset");
    assert_eq!(reset_line["forced"], true);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_gives_up_during_a_stall_is_noticed() {
    let (addr, p, _dir) = proxy(&["/stall=stall"], Duration::from_secs(3600)).await;
    let mut s = TcpStream::connect(&addr).await.unwrap();
    s.write_all(b"GET /stall HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    // Hang up only once every byte before the stall arrived: the proxy is then in the stall
    // (hanging up earlier races with its body writes, a plain write error).
    let stall_at = Schedule {
        always: vec!["/stall=stall".parse::<AlwaysRule>().unwrap()],
        ..Schedule::none()
    }
    .decide("GET", "/stall", 0)
    .unwrap()
    .offset(body().len() as u64) as usize;
    let mut got = Vec::new();
    let mut tmp = [0u8; 64 * 1024];
    let before_stall = |got: &[u8]| {
        got.windows(4)
            .position(|w| w == b"\r\n\r\n")
            .is_some_and(|end| got.len() >= end + 4 + stall_at)
    };
    while !before_stall(&got) {
        let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut tmp))
            .await
            .expect("the head and the body up to the stall come before it")
            .unwrap();
        assert!(n > 0, "closed before the stall");
        got.extend_from_slice(&tmp[..n]);
    }
    drop(s);
    for _ in 0..500 {
        if p.stats().clients_gave_up_in_stall == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(p.stats().clients_gave_up_in_stall, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_upstream_is_a_502_not_a_fault() {
    // A port that was free a moment ago.
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let dead = l.local_addr().unwrap().to_string();
    drop(l);
    let p = Proxy::new(Config {
        upstream: dead,
        schedule: Schedule::none(),
        retry_after: 1,
        stall: Duration::from_secs(1),
        stats_path: None,
        log_path: None,
    })
    .unwrap();
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap().to_string();
    tokio::spawn(p.clone().serve(l));
    let g = get(&addr, "GET", "/x").await;
    assert!(g.head.starts_with("HTTP/1.1 502 "), "{}", g.head);
    let st = p.stats();
    assert_eq!((st.upstream_errors, st.faults_injected), (1, 0));
}
