//! Fetching one file over HTTP(S) into place, for the files module's fetch-file ops: each
//! location in order, each retried with the registry client's policy (exponential backoff
//! with jitter, `Retry-After` honoured, [`RetryPolicy`]), a response that sends nothing for
//! the read timeout cut and retried, a broken transfer resumed with a range request where the
//! server answers one, and the file renamed into place only once its digest matches the pin.
//! Verified files are kept in a cache directory by pin, so a file fetched once is copied
//! (and checked again), never fetched again. What a response means, and the report of a file
//! no location gave, are [`decide`]'s (pure, unit-tested without a socket).
//!
//! The fetcher knows no bundle and no module kind: a caller (the files module's worker job)
//! hands it a [`FileRequest`].

pub mod decide;

use std::fs::{self, File};
use std::io::{self, Read, Seek, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use futures_util::StreamExt;
use reqwest::header::{CONTENT_RANGE, RANGE, RETRY_AFTER};
use sha2::Digest as _;

use kpbuild_store::durable::rename as rename_durably;

pub use decide::{FetchFailure, Outcome, Tried};
use decide::{Reply, classify, range_header};

use crate::client::{RetryEvent, RetryHook, error_chain};
use crate::retry::{RetryPolicy, parse_retry_after};

/// A content pin: the digest algorithm (`sha256` or `sha512`) and the hex digest.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Pin {
    pub algorithm: String,
    pub hex: String,
}

/// One file to fetch.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FileRequest {
    /// The upstream URL (what errors name).
    pub url: String,
    /// The file's path in what is being built (what errors name).
    pub path: String,
    /// Where the content is fetched from, tried in order.
    pub sources: Vec<String>,
    /// The pin; an unpinned file is fetched without a check and never cached by content.
    pub pin: Option<Pin>,
    /// Where to write the file (renamed into place once verified).
    pub dest: PathBuf,
    /// A directory of verified files by pin (`<algorithm>/<hex>`): a file found there is
    /// copied (verified again), not fetched.
    pub cache: Option<PathBuf>,
}

/// How the fetcher behaves.
#[derive(Clone)]
pub struct FetchConfig {
    pub retry: RetryPolicy,
    /// A response that sends nothing for this long is cut (and retried).
    pub read_timeout: Duration,
    pub on_retry: Option<RetryHook>,
}

impl FetchConfig {
    /// `retries` per location after a transient failure and a read timeout of
    /// `read_timeout_secs` (at least 1), the registry client's backoff otherwise.
    pub fn new(retries: u32, read_timeout_secs: u64, on_retry: Option<RetryHook>) -> FetchConfig {
        FetchConfig {
            retry: RetryPolicy {
                retries,
                ..Default::default()
            },
            read_timeout: Duration::from_secs(read_timeout_secs.max(1)),
            on_retry,
        }
    }
}

/// How a file got into place.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Fetched {
    /// Copied from the cache (and verified).
    Cached { bytes: u64 },
    /// Fetched from `from` after `tries` requests there and on earlier locations; `resumed`
    /// bytes were not sent twice thanks to range requests.
    Downloaded {
        from: String,
        bytes: u64,
        tries: u32,
        retries: u32,
        resumed: u64,
    },
}

/// Why a file is not in place.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    #[error("{0}")]
    Failed(#[from] FetchFailure),
    #[error("{path}: {source}")]
    Io { path: String, source: io::Error },
    #[error("HTTP client: {0}")]
    Client(String),
}

fn io_at(path: &Path) -> impl Fn(io::Error) -> FetchError + '_ {
    move |source| FetchError::Io {
        path: path.display().to_string(),
        source,
    }
}

/// The digest of a file's pin, computed as bytes arrive.
#[derive(Clone)]
enum Hasher {
    Sha256(sha2::Sha256),
    Sha512(sha2::Sha512),
}

impl Hasher {
    fn new(algorithm: &str) -> Hasher {
        match algorithm {
            "sha512" => Hasher::Sha512(sha2::Sha512::new()),
            _ => Hasher::Sha256(sha2::Sha256::new()),
        }
    }
    fn update(&mut self, b: &[u8]) {
        match self {
            Hasher::Sha256(h) => h.update(b),
            Hasher::Sha512(h) => h.update(b),
        }
    }
    fn hex(self) -> String {
        match self {
            Hasher::Sha256(h) => hex::encode(h.finalize()),
            Hasher::Sha512(h) => hex::encode(h.finalize()),
        }
    }
}

/// The HTTP client for files: rustls, the read timeout, redirects followed.
pub fn http_client(cfg: &FetchConfig) -> Result<reqwest::Client, FetchError> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::builder()
        .user_agent(concat!("kpbuild/", env!("CARGO_PKG_VERSION")))
        .connect_timeout(Duration::from_secs(30))
        .read_timeout(cfg.read_timeout)
        .build()
        .map_err(|e| FetchError::Client(error_chain(&e)))
}

/// The partial file next to `dest`.
fn partial_of(dest: &Path) -> PathBuf {
    let name = dest
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    dest.with_file_name(format!(".{name}.partial"))
}

/// Copies `src` to `tmp` while hashing it; the digest and the size.
fn copy_hashing(src: &Path, tmp: &Path, algorithm: &str) -> io::Result<(String, u64)> {
    let mut from = File::open(src)?;
    let mut to = File::create(tmp)?;
    let mut h = Hasher::new(algorithm);
    let mut buf = vec![0u8; 1 << 20];
    let mut n = 0u64;
    loop {
        let r = from.read(&mut buf)?;
        if r == 0 {
            break;
        }
        h.update(&buf[..r]);
        to.write_all(&buf[..r])?;
        n += r as u64;
    }
    Ok((h.hex(), n))
}

/// The file from the cache, when it is there with the pin's digest (a damaged copy is
/// removed from the cache).
fn from_cache(req: &FileRequest, pin: &Pin, cache: &Path) -> Result<Option<u64>, FetchError> {
    let cached = cache.join(&pin.algorithm).join(&pin.hex);
    if !cached.is_file() {
        return Ok(None);
    }
    let tmp = partial_of(&req.dest);
    let (got, n) = copy_hashing(&cached, &tmp, &pin.algorithm).map_err(io_at(&cached))?;
    if !got.eq_ignore_ascii_case(&pin.hex) {
        let _ = fs::remove_file(&tmp);
        let _ = fs::remove_file(&cached);
        return Ok(None);
    }
    rename_durably(&tmp, &req.dest).map_err(io_at(&req.dest))?;
    Ok(Some(n))
}

/// Keeps a verified file in the cache (best effort: a full disk only costs a later fetch).
fn to_cache(file: &Path, pin: &Pin, cache: &Path) -> io::Result<()> {
    let dir = cache.join(&pin.algorithm);
    fs::create_dir_all(&dir)?;
    let dest = dir.join(&pin.hex);
    if dest.is_file() {
        return Ok(());
    }
    let tmp = tempfile::Builder::new()
        .prefix(&format!(".{}.", pin.hex))
        .tempfile_in(&dir)?;
    let (tmp_file, tmp_path) = tmp.keep().map_err(|e| e.error)?;
    drop(tmp_file);
    let copied = fs::copy(file, &tmp_path).and_then(|_| rename_durably(&tmp_path, &dest));
    if copied.is_err() {
        let _ = fs::remove_file(&tmp_path);
    }
    copied
}

/// The partial file and the digest of what it holds.
struct Partial {
    file: File,
    held: u64,
    hasher: Hasher,
    algorithm: String,
}

impl Partial {
    fn create(path: PathBuf, algorithm: &str) -> io::Result<Partial> {
        let file = File::create(&path)?;
        Ok(Partial {
            file,
            held: 0,
            hasher: Hasher::new(algorithm),
            algorithm: algorithm.to_string(),
        })
    }
    fn restart(&mut self) -> io::Result<()> {
        self.file.set_len(0)?;
        self.file.rewind()?;
        self.held = 0;
        self.hasher = Hasher::new(&self.algorithm);
        Ok(())
    }
    fn write(&mut self, b: &[u8]) -> io::Result<()> {
        self.file.write_all(b)?;
        self.hasher.update(b);
        self.held += b.len() as u64;
        Ok(())
    }
}

/// Fetches `req` into place (or copies it from the cache), or says why not; retried and
/// timed out as `cfg` says ([`FetchConfig::new`]).
pub async fn fetch_file(
    http: &reqwest::Client,
    cfg: &FetchConfig,
    req: &FileRequest,
) -> Result<Fetched, FetchError> {
    if let (Some(pin), Some(cache)) = (&req.pin, &req.cache)
        && let Some(bytes) = from_cache(req, pin, cache)?
    {
        return Ok(Fetched::Cached { bytes });
    }
    let algorithm = req
        .pin
        .as_ref()
        .map(|p| p.algorithm.as_str())
        .unwrap_or("sha256");
    let part_path = partial_of(&req.dest);
    let mut part = Partial::create(part_path.clone(), algorithm).map_err(io_at(&part_path))?;
    let mut tried_all = Vec::new();
    let (mut tries, mut retries, mut resumed) = (0u32, 0u32, 0u64);
    for src in &req.sources {
        part.restart().map_err(io_at(&part_path))?;
        let mut tried = Tried {
            url: src.clone(),
            ..Default::default()
        };
        match fetch_from(http, cfg, req, src, &mut part, &mut tried, &mut resumed).await? {
            true => {
                // Every outcome recorded here was followed by another try.
                tries += tried.outcomes.len() as u32 + 1;
                retries += tried.outcomes.len() as u32;
                drop(part);
                rename_durably(&part_path, &req.dest).map_err(io_at(&req.dest))?;
                if let (Some(pin), Some(cache)) = (&req.pin, &req.cache)
                    && let Err(e) = to_cache(&req.dest, pin, cache)
                {
                    eprintln!("note: {} not kept in the cache: {e}", req.url);
                }
                let bytes = fs::metadata(&req.dest).map_err(io_at(&req.dest))?.len();
                return Ok(Fetched::Downloaded {
                    from: src.clone(),
                    bytes,
                    tries,
                    retries,
                    resumed,
                });
            }
            false => {
                // The last outcome gave the location up; the others were retried.
                tries += tried.outcomes.len() as u32;
                retries += (tried.outcomes.len() as u32).saturating_sub(1);
                tried_all.push(tried);
            }
        }
    }
    drop(part);
    let _ = fs::remove_file(&part_path);
    Err(FetchError::Failed(FetchFailure {
        url: req.url.clone(),
        path: req.path.clone(),
        pin: req
            .pin
            .as_ref()
            .map(|p| format!("{}:{}", p.algorithm, p.hex)),
        tried: tried_all,
    }))
}

/// Tries one location until the file is complete and verified (`true`) or the location is
/// given up (`false`, with `tried` saying why).
async fn fetch_from(
    http: &reqwest::Client,
    cfg: &FetchConfig,
    req: &FileRequest,
    src: &str,
    part: &mut Partial,
    tried: &mut Tried,
    resumed: &mut u64,
) -> Result<bool, FetchError> {
    let policy = cfg.retry;
    let (mut transient, mut wrong) = (0u32, 0u32);
    let io_part = |e: io::Error| FetchError::Io {
        path: part_display(&req.dest),
        source: e,
    };
    loop {
        // What to wait before the next try, or None to give the location up.
        let mut retry_after = None;
        let held = part.held;
        let mut rb = http.get(src);
        if let Some(r) = range_header(held) {
            rb = rb.header(RANGE, r);
        }
        let outcome = match rb.send().await {
            Err(e) => Outcome::Transport {
                message: transport_message(&e, cfg),
                bytes: 0,
            },
            Ok(resp) => {
                let status = resp.status().as_u16();
                let range = resp
                    .headers()
                    .get(CONTENT_RANGE)
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_string);
                match classify(status, held, range.as_deref()) {
                    reply @ (Reply::Whole | Reply::Rest) => {
                        if reply == Reply::Whole {
                            part.restart().map_err(io_part)?;
                        } else {
                            *resumed += held;
                        }
                        let mut body = resp.bytes_stream();
                        let mut got = 0u64;
                        let mut broken = None;
                        while let Some(chunk) = body.next().await {
                            match chunk {
                                Ok(b) => {
                                    part.write(&b).map_err(io_part)?;
                                    got += b.len() as u64;
                                }
                                Err(e) => {
                                    broken = Some(transport_message(&e, cfg));
                                    break;
                                }
                            }
                        }
                        match broken {
                            Some(message) => Outcome::Transport {
                                message,
                                bytes: got,
                            },
                            None => {
                                part.file.flush().map_err(io_part)?;
                                let got_hex = part.hasher.clone().hex();
                                match &req.pin {
                                    Some(pin) if !got_hex.eq_ignore_ascii_case(&pin.hex) => {
                                        let bytes = part.held;
                                        part.restart().map_err(io_part)?;
                                        Outcome::Mismatch {
                                            algorithm: pin.algorithm.clone(),
                                            got: got_hex,
                                            bytes,
                                        }
                                    }
                                    _ => return Ok(true),
                                }
                            }
                        }
                    }
                    Reply::Restart => {
                        part.restart().map_err(io_part)?;
                        Outcome::Status { status, bytes: 0 }
                    }
                    reply @ (Reply::Retry | Reply::NextLocation) => {
                        retry_after = resp
                            .headers()
                            .get(RETRY_AFTER)
                            .and_then(|v| v.to_str().ok())
                            .and_then(|v| parse_retry_after(v, SystemTime::now()));
                        let bytes = resp.bytes().await.map(|b| b.len() as u64).unwrap_or(0);
                        let o = Outcome::Status { status, bytes };
                        if reply == Reply::NextLocation {
                            tried.outcomes.push(o);
                            tried.verdict = format!("HTTP {status} will not change");
                            return Ok(false);
                        }
                        o
                    }
                }
            }
        };
        let reason = outcome.to_string();
        let mismatch = matches!(outcome, Outcome::Mismatch { .. });
        tried.outcomes.push(outcome);
        let delay = if mismatch {
            if wrong >= policy.verify_retries() {
                tried.verdict = format!("wrong bytes {} times", wrong + 1);
                return Ok(false);
            }
            wrong += 1;
            policy.backoff(wrong - 1)
        } else {
            if transient >= policy.retries {
                tried.verdict = format!("{} retries used up", policy.retries);
                return Ok(false);
            }
            transient += 1;
            policy.delay(transient - 1, retry_after)
        };
        if let Some(hook) = &cfg.on_retry {
            hook(&RetryEvent {
                url: src.to_string(),
                attempt: transient + wrong,
                delay,
                reason: if part.held > 0 {
                    format!("{reason}; resuming at byte {}", part.held)
                } else {
                    reason
                },
            });
        }
        tokio::time::sleep(delay).await;
    }
}

fn part_display(dest: &Path) -> String {
    partial_of(dest).display().to_string()
}

/// A transport error on one line; a read timeout says so.
fn transport_message(e: &reqwest::Error, cfg: &FetchConfig) -> String {
    if e.is_timeout() {
        format!(
            "nothing received for {}s (read timeout)",
            cfg.read_timeout.as_secs()
        )
    } else {
        error_chain(e)
    }
}
