//! A fault-injecting HTTP/1.1 proxy for kpbuild's reliability tests. It sits on loopback in
//! front of one upstream (a fixture registry, the nginx file server) and, per a seeded
//! [`schedule::Schedule`], answers 500/502/503/429 (with `Retry-After`), resets connections
//! mid-body, truncates bodies, changes a byte of a body, or stalls — and forwards everything
//! else untouched. It keeps a request log (one JSON object a line) and a stats file (JSON).
//!
//! Each client connection carries one request: the proxy asks upstream with
//! `Connection: close` and relays the response until upstream closes or `Content-Length` is
//! reached, so where a body fault strikes is exact. Test tool only: no TLS, no chunked
//! request bodies, loopback use.

pub mod proxy;
pub mod schedule;

pub use proxy::{Config, Proxy, Stats};
pub use schedule::{AlwaysRule, Fault, FaultKind, Schedule};
