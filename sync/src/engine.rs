//! The sync engine: resolves references to manifests, fetches every blob once across all
//! images (concurrently, verified while streaming), and writes the `registry:2` tree.
//!
//! Order of writes per image: manifests and blobs (each complete and verified, renamed into
//! place), then `_layers` links, revision links, and the tag last. An image that failed gets
//! no tag, so nothing half-written looks complete.

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use futures_util::future::{BoxFuture, FutureExt, join_all};
use tokio::sync::{OnceCell, Semaphore};

use kpbuild_oci::image_ref::{
    FetchLocation, ImageRef, Mirror, NameMap, check_collisions, fetch_location, stored_repository,
};
use kpbuild_oci::registry_layout::{Descriptor, Digest, Manifest, Platform, parse_manifest};

use crate::client::{ClientConfig, RegistryClient, RetryEvent, error_chain};
use crate::error::{HttpError, ImageError, ImageFailure, SyncError};
use crate::retry::retryable_error;
use crate::store::{FinishError, Store};

/// Which children of an index to keep.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PlatformSelection {
    /// Every child (`--all-platforms`).
    All,
    /// The children matching these platforms; each must be present in every index.
    Only(Vec<Platform>),
}

/// What to sync and how.
#[derive(Clone)]
pub struct SyncOptions {
    /// The storage root (what a registry mounts as `/var/lib/registry`).
    pub dest: PathBuf,
    pub platforms: PlatformSelection,
    /// Concurrent blob transfers (and, separately, concurrent manifest fetches).
    pub jobs: usize,
    pub mirrors: Vec<Mirror>,
    pub map: Option<NameMap>,
    pub client: ClientConfig,
    /// Fetch each image's config and layer blobs (`true`, the normal case), or only list
    /// them in [`SyncedImage::needs`] for a later [`fetch_blobs`]: manifests and every link
    /// are written either way.
    pub fetch_blobs: bool,
    /// Another storage root used as a cache of blobs (a BuildKit cache mount shared by the
    /// builds of one builder): a blob found there is copied (hashed while copying) instead
    /// of fetched, and a fetched blob is copied there.
    pub blob_cache: Option<PathBuf>,
}

/// Receives progress; every method has an empty default.
pub trait Progress: Send + Sync {
    /// The number of distinct images to sync.
    fn planned(&self, _images: usize) {}
    /// More bytes became known to be needed (new unique blobs).
    fn add_total(&self, _bytes: u64) {}
    /// Bytes arrived (or were found already present).
    fn bytes(&self, _n: u64) {}
    /// Bytes counted by [`Progress::bytes`] are to be fetched again.
    fn rewind(&self, _n: u64) {}
    /// A blob is stored (fetched, or found present and intact).
    fn blob_done(&self, _digest: &Digest, _size: u64, _reused: bool) {}
    fn image_done(&self, _image: &SyncedImage) {}
    fn image_failed(&self, _failure: &ImageFailure) {}
    fn retry(&self, _event: &RetryEvent) {}
}

/// A [`Progress`] that reports nothing.
pub struct NoProgress;
impl Progress for NoProgress {}

/// An image now servable from the tree.
#[derive(Debug, Clone)]
pub struct SyncedImage {
    /// The reference as given, normalized.
    pub source: String,
    /// The stored repository name.
    pub name: String,
    pub tag: Option<String>,
    /// The digest of the top manifest (the index, for a multi-platform image).
    pub digest: Digest,
    pub manifests: usize,
    pub blobs: usize,
    /// Where it was fetched from.
    pub location: FetchLocation,
    /// Its config and layer blobs (fetched, or to fetch when blobs are not fetched).
    pub needs: Vec<Descriptor>,
}

impl SyncedImage {
    /// `name:tag`, or `name@digest` when there is no tag.
    pub fn stored_ref(&self) -> String {
        match &self.tag {
            Some(t) => format!("{}:{t}", self.name),
            None => format!("{}@{}", self.name, self.digest),
        }
    }
}

/// What a run did.
#[derive(Debug)]
pub struct Summary {
    pub images: Vec<SyncedImage>,
    pub failures: Vec<ImageFailure>,
    /// Distinct config and layer blobs needed.
    pub blobs: usize,
    pub blobs_fetched: usize,
    pub blobs_reused: usize,
    pub bytes_fetched: u64,
    pub bytes_reused: u64,
    /// Distinct manifests stored (indexes and image manifests).
    pub manifests: usize,
    pub elapsed: Duration,
}

struct Planned {
    source: ImageRef,
    location: FetchLocation,
    name: String,
}

#[derive(Clone, Debug)]
struct BlobDone;

#[derive(Clone, Debug)]
struct BlobFailed {
    /// The image whose task fetched it.
    image: String,
    error: Arc<ImageError>,
}

type BlobCell = Arc<OnceCell<Result<BlobDone, BlobFailed>>>;

#[derive(Default)]
struct Stats {
    blobs: AtomicUsize,
    fetched: AtomicUsize,
    reused: AtomicUsize,
    bytes_fetched: AtomicU64,
    bytes_reused: AtomicU64,
}

struct Ctx {
    client: RegistryClient,
    store: Store,
    cache: Option<Store>,
    fetch_blobs: bool,
    platforms: PlatformSelection,
    manifest_slots: Semaphore,
    blob_slots: Semaphore,
    blobs: Mutex<HashMap<Digest, BlobCell>>,
    manifests: Mutex<HashSet<Digest>>,
    stats: Stats,
    progress: Arc<dyn Progress>,
}

/// The manifests and blobs one image needs.
#[derive(Default)]
struct Resolved {
    top: Option<Digest>,
    manifests: Vec<Digest>,
    blobs: Vec<Descriptor>,
}

impl Resolved {
    fn add_blob(&mut self, d: &Descriptor) {
        if !self.blobs.iter().any(|b| b.digest == d.digest) {
            self.blobs.push(d.clone());
        }
    }
    fn merge(&mut self, other: Resolved) {
        for m in other.manifests {
            if !self.manifests.contains(&m) {
                self.manifests.push(m);
            }
        }
        for b in &other.blobs {
            self.add_blob(b);
        }
    }
}

fn io_err(path: PathBuf) -> impl FnOnce(std::io::Error) -> ImageError {
    move |source| ImageError::Io { path, source }
}

/// Picks the children of an index to keep.
fn select_children(
    index: &Digest,
    children: &[Descriptor],
    sel: &PlatformSelection,
) -> Result<Vec<Descriptor>, ImageError> {
    match sel {
        PlatformSelection::All => Ok(children.to_vec()),
        PlatformSelection::Only(wanted) => {
            let mut out: Vec<Descriptor> = Vec::new();
            for w in wanted {
                let found = children
                    .iter()
                    .find(|c| c.platform.as_ref().is_some_and(|p| p.satisfies(w)));
                match found {
                    Some(c) => {
                        if !out.iter().any(|o| o.digest == c.digest) {
                            out.push(c.clone());
                        }
                    }
                    None => {
                        let available: Vec<String> = children
                            .iter()
                            .map(|c| {
                                c.platform
                                    .as_ref()
                                    .map(|p| p.to_string())
                                    .unwrap_or_else(|| "(no platform)".into())
                            })
                            .collect();
                        return Err(ImageError::MissingPlatform {
                            index: index.clone(),
                            wanted: w.to_string(),
                            available: available.join(", "),
                        });
                    }
                }
            }
            Ok(out)
        }
    }
}

/// The result of a spawned task; one that panicked or was cancelled is an I/O error of `what`
/// it was doing, at `path`.
fn joined<T>(
    r: Result<Result<T, ImageError>, tokio::task::JoinError>,
    path: PathBuf,
    what: &str,
) -> Result<T, ImageError> {
    r.unwrap_or_else(|e| {
        Err(ImageError::Io {
            path,
            source: std::io::Error::other(format!("{what} task failed: {e}")),
        })
    })
}

impl Ctx {
    /// Ends the writes of the store (and of the blob cache).
    fn close(&self) {
        self.store.close();
        if let Some(c) = &self.cache {
            c.close();
        }
    }

    /// Fetches one manifest (by tag or digest), verifies and stores its exact bytes, and
    /// recurses into the children an index keeps.
    fn resolve_manifest<'a>(
        &'a self,
        loc: &'a FetchLocation,
        reference: String,
        expected: Option<Digest>,
        depth: usize,
    ) -> BoxFuture<'a, Result<Resolved, ImageError>> {
        async move {
            let policy = self.client.retry_policy();
            let mut verify_attempt = 0u32;
            let (m, actual) = loop {
                let m = {
                    let _slot = self
                        .manifest_slots
                        .acquire()
                        .await
                        .expect("semaphore closed");
                    self.client
                        .get_manifest(&loc.registry, &loc.repository, &reference)
                        .await
                        .map_err(ImageError::Fetch)?
                };
                let actual = Digest::of_bytes(&m.bytes);
                let claimed = expected.clone().or_else(|| {
                    m.digest_header
                        .as_deref()
                        .and_then(|h| h.parse::<Digest>().ok())
                });
                match claimed {
                    Some(c) if c != actual => {
                        let url = m.url.clone();
                        let err = ImageError::ManifestDigestMismatch {
                            expected: c.to_string(),
                            actual,
                            url: m.url,
                        };
                        if verify_attempt >= policy.verify_retries() {
                            return Err(err);
                        }
                        let delay = policy.backoff(verify_attempt);
                        verify_attempt += 1;
                        self.client.report_retry(RetryEvent {
                            url,
                            attempt: verify_attempt,
                            delay,
                            reason: err.to_string(),
                        });
                        tokio::time::sleep(delay).await;
                    }
                    _ => break (m, actual),
                }
            };
            let parsed = parse_manifest(m.content_type.as_deref(), &m.bytes).map_err(|source| {
                ImageError::BadManifest {
                    digest: actual.clone(),
                    url: m.url.clone(),
                    source,
                }
            })?;
            let path = self.store.layout().blob_data(&actual);
            self.store
                .put_blob_bytes(&actual, &m.bytes)
                .map_err(io_err(path))?;
            self.manifests.lock().unwrap().insert(actual.clone());
            let mut out = Resolved {
                top: Some(actual.clone()),
                manifests: vec![actual.clone()],
                blobs: Vec::new(),
            };
            match &parsed {
                Manifest::Image { .. } => {
                    for b in parsed.blobs() {
                        out.add_blob(b);
                    }
                }
                Manifest::Index { manifests, .. } => {
                    if depth >= 3 {
                        return Err(ImageError::TooDeep(actual));
                    }
                    let keep = select_children(&actual, manifests, &self.platforms)?;
                    let subs = join_all(keep.iter().map(|c| {
                        self.resolve_manifest(
                            loc,
                            c.digest.to_string(),
                            Some(c.digest.clone()),
                            depth + 1,
                        )
                    }))
                    .await;
                    for s in subs {
                        out.merge(s?);
                    }
                }
            }
            Ok(out)
        }
        .boxed()
    }

    /// Makes sure a blob is stored: present and intact, or fetched now.
    async fn transfer(
        self: Arc<Self>,
        desc: Descriptor,
        loc: FetchLocation,
    ) -> Result<BlobDone, ImageError> {
        let d = desc.digest.clone();
        let size = desc.size;
        let path = self.store.layout().blob_data(&d);
        // One slot per blob, for the intact check (hashing) and the transfer alike.
        let _slot = self.blob_slots.acquire().await.expect("semaphore closed");
        let me = self.clone();
        let d2 = d.clone();
        let intact = tokio::task::spawn_blocking(move || me.store.blob_intact(&d2, Some(size)))
            .await
            .expect("hash task panicked")
            .map_err(io_err(path.clone()))?;
        let from_cache = !intact && self.cache.is_some() && {
            let me = self.clone();
            let d2 = d.clone();
            tokio::task::spawn_blocking(move || {
                let cache = me.cache.as_ref().expect("checked");
                me.store
                    .copy_blob_from(&cache.layout().blob_data(&d2), &d2, size)
            })
            .await
            .expect("copy task panicked")
            .map_err(io_err(path.clone()))?
        };
        if intact || from_cache {
            self.stats.reused.fetch_add(1, Ordering::Relaxed);
            self.stats.bytes_reused.fetch_add(size, Ordering::Relaxed);
            self.progress.bytes(size);
            self.progress.blob_done(&d, size, true);
            return Ok(BlobDone);
        }
        let policy = self.client.retry_policy();
        let mut w = self.store.blob_writer(&d).map_err(io_err(path.clone()))?;
        // Retries of this blob's body: after a dropped connection, or (at most
        // `verify_retries`) after bytes that did not verify.
        let mut attempt = 0u32;
        let mut verify_attempt = 0u32;
        let url = loop {
            let (resp, url) = self
                .client
                .get_blob(&loc.registry, &loc.repository, &d)
                .await
                .map_err(|source| ImageError::BlobFetch {
                    digest: d.clone(),
                    source,
                })?;
            let mut bad: Option<ImageError> = match resp.content_length() {
                Some(cl) if cl != size => Some(ImageError::BlobSizeMismatch {
                    digest: d.clone(),
                    url: url.clone(),
                    expected: size,
                    got: cl,
                }),
                _ => None,
            };
            let mut dropped = None;
            if bad.is_none() {
                let mut stream = resp.bytes_stream();
                while let Some(chunk) = stream.next().await {
                    match chunk {
                        Ok(c) => {
                            if w.len() + c.len() as u64 > size {
                                bad = Some(ImageError::BlobSizeMismatch {
                                    digest: d.clone(),
                                    url: url.clone(),
                                    expected: size,
                                    got: w.len() + c.len() as u64,
                                });
                                break;
                            }
                            w.write(&c).map_err(io_err(path.clone()))?;
                            self.progress.bytes(c.len() as u64);
                        }
                        Err(e) => {
                            dropped = Some(e);
                            break;
                        }
                    }
                }
            }
            if bad.is_none() && dropped.is_none() {
                if w.len() != size {
                    bad = Some(ImageError::BlobSizeMismatch {
                        digest: d.clone(),
                        url: url.clone(),
                        expected: size,
                        got: w.len(),
                    });
                } else if let Some(actual) = w.mismatch() {
                    bad = Some(ImageError::BlobDigestMismatch {
                        digest: d.clone(),
                        actual,
                        url: url.clone(),
                    });
                } else {
                    break url;
                }
            }
            let reason = match (dropped, bad) {
                (Some(e), _) if retryable_error(&e) && attempt < policy.retries => {
                    format!("connection dropped: {}", error_chain(&e))
                }
                (Some(e), _) => {
                    return Err(ImageError::BlobFetch {
                        digest: d,
                        source: HttpError::Transport {
                            url,
                            attempts: attempt + 1,
                            message: error_chain(&e),
                        },
                    });
                }
                (None, Some(err))
                    if verify_attempt < policy.verify_retries() && attempt < policy.retries =>
                {
                    verify_attempt += 1;
                    err.to_string()
                }
                (None, Some(err)) => return Err(err),
                (None, None) => unreachable!("a verified blob leaves the loop"),
            };
            let delay = policy.backoff(attempt);
            attempt += 1;
            self.client.report_retry(RetryEvent {
                url,
                attempt,
                delay,
                reason,
            });
            self.progress.rewind(w.len());
            w.reset().map_err(io_err(path.clone()))?;
            tokio::time::sleep(delay).await;
        };
        match w.finish() {
            Ok(()) => {}
            Err(FinishError::Mismatch(actual)) => {
                // Checked above; kept so that nothing unverified is ever renamed into place.
                return Err(ImageError::BlobDigestMismatch {
                    digest: d,
                    actual,
                    url,
                });
            }
            Err(FinishError::Io(e)) => return Err(io_err(path)(e)),
        }
        if self.cache.is_some() {
            // Best effort: a blob the cache could not take is fetched again next time.
            let me = self.clone();
            let d2 = d.clone();
            let src = path.clone();
            let _ = tokio::task::spawn_blocking(move || {
                me.cache.as_ref().expect("checked").put_blob_copy(&d2, &src)
            })
            .await;
        }
        self.stats.fetched.fetch_add(1, Ordering::Relaxed);
        self.stats.bytes_fetched.fetch_add(size, Ordering::Relaxed);
        self.progress.blob_done(&d, size, false);
        Ok(BlobDone)
    }

    /// The shared once-cell for a blob; `true` when this call registered it.
    fn blob_cell(&self, d: &Digest) -> (BlobCell, bool) {
        let mut map = self.blobs.lock().unwrap();
        match map.get(d) {
            Some(c) => (c.clone(), false),
            None => {
                let c: BlobCell = Arc::default();
                map.insert(d.clone(), c.clone());
                (c, true)
            }
        }
    }

    /// Syncs one image: resolve, fetch its blobs (shared with other images), write links.
    async fn sync_one(self: Arc<Self>, p: Arc<Planned>) -> Result<SyncedImage, ImageError> {
        let image = p.source.to_string();
        let r = self
            .resolve_manifest(
                &p.location,
                p.source.manifest_reference(),
                p.source.digest.clone(),
                0,
            )
            .await?;
        let top = r.top.clone().expect("resolved manifest has a digest");
        let mut new_bytes = 0;
        let mut waits = Vec::new();
        let fetched: &[Descriptor] = if self.fetch_blobs { &r.blobs } else { &[] };
        for b in fetched {
            let (cell, new) = self.blob_cell(&b.digest);
            if new {
                self.stats.blobs.fetch_add(1, Ordering::Relaxed);
                new_bytes += b.size;
            }
            let me = self.clone();
            let desc = b.clone();
            let loc = p.location.clone();
            let image = image.clone();
            waits.push(async move {
                cell.get_or_init(|| async move {
                    let d = desc.digest.clone();
                    let res = joined(
                        tokio::spawn(me.transfer(desc, loc)).await,
                        PathBuf::from(d.to_string()),
                        "transfer",
                    );
                    res.map_err(|e| BlobFailed {
                        image,
                        error: Arc::new(e),
                    })
                })
                .await
                .clone()
            });
        }
        self.progress.add_total(new_bytes);
        let results = join_all(waits).await;
        for (b, res) in fetched.iter().zip(results) {
            if let Err(f) = res {
                return Err(if f.image == image {
                    // The fetch this image started: its own error.
                    ImageError::Shared(f.error)
                } else {
                    ImageError::SharedBlobFailed {
                        digest: b.digest.clone(),
                        image: f.image,
                        message: f.error.to_string(),
                    }
                });
            }
        }
        let blob_digests: Vec<Digest> = r.blobs.iter().map(|b| b.digest.clone()).collect();
        let links = self.store.layout().image_links(
            &p.name,
            p.source.tag.as_deref(),
            &top,
            &r.manifests,
            &blob_digests,
        );
        for (path, contents) in links {
            self.store
                .write_link(&path, &contents)
                .map_err(io_err(path.clone()))?;
        }
        Ok(SyncedImage {
            source: image,
            name: p.name.clone(),
            tag: p.source.tag.clone(),
            digest: top,
            manifests: r.manifests.len(),
            blobs: r.blobs.len(),
            location: p.location.clone(),
            needs: r.blobs,
        })
    }
}

/// Syncs `refs` into the storage tree at `opts.dest`. Per-image failures are in the
/// summary; an `Err` means nothing was attempted (bad plan or unusable destination).
pub async fn sync_images(
    refs: Vec<ImageRef>,
    opts: SyncOptions,
    progress: Arc<dyn Progress>,
) -> Result<Summary, SyncError> {
    let start = Instant::now();
    let mut seen = HashSet::new();
    let planned: Vec<Arc<Planned>> = refs
        .into_iter()
        .filter(|r| seen.insert(r.to_string()))
        .map(|r| {
            Arc::new(Planned {
                name: stored_repository(&r, opts.map.as_ref()),
                location: fetch_location(&r, &opts.mirrors),
                source: r,
            })
        })
        .collect();
    check_collisions(planned.iter().map(|p| (&p.source, p.name.as_str())))?;
    for p in &planned {
        kpbuild_oci::image_ref::validate_repository(&p.name, &p.name).map_err(SyncError::Name)?;
    }
    progress.planned(planned.len());
    let ctx = context(&opts, &progress)?;

    let mut tasks = Vec::new();
    for p in &planned {
        let ctx = ctx.clone();
        let p = p.clone();
        tasks.push(tokio::spawn(async move {
            let r = ctx.clone().sync_one(p.clone()).await;
            if let Ok(img) = &r {
                ctx.progress.image_done(img);
            }
            r
        }));
    }
    let mut images = Vec::new();
    let mut failures = Vec::new();
    for (p, t) in planned.iter().zip(tasks) {
        let res = joined(t.await, opts.dest.clone(), "image");
        match res {
            Ok(img) => images.push(img),
            Err(error) => {
                let f = ImageFailure {
                    image: p.source.to_string(),
                    error,
                };
                progress.image_failed(&f);
                failures.push(f);
            }
        }
    }
    ctx.close();
    Ok(summary(&ctx, images, failures, start))
}

/// Fetches blobs into the storage tree at `opts.dest` (through `opts.blob_cache` when given),
/// each once however often it is listed, from the location listed with it: the blobs that
/// runs with `fetch_blobs: false` listed. Only `dest`, `jobs`, `client` and `blob_cache` of
/// `opts` are used. A blob that could not be stored is a failure named after the blob and
/// where it was fetched from.
pub async fn fetch_blobs(
    wanted: Vec<(Descriptor, FetchLocation)>,
    opts: SyncOptions,
    progress: Arc<dyn Progress>,
) -> Result<Summary, SyncError> {
    let start = Instant::now();
    let ctx = context(&opts, &progress)?;
    let mut seen = HashSet::new();
    let unique: Vec<(Descriptor, FetchLocation)> = wanted
        .into_iter()
        .filter(|(d, _)| seen.insert(d.digest.clone()))
        .collect();
    ctx.stats.blobs.store(unique.len(), Ordering::Relaxed);
    progress.add_total(unique.iter().map(|(d, _)| d.size).sum());
    let tasks: Vec<_> = unique
        .iter()
        .map(|(d, loc)| tokio::spawn(ctx.clone().transfer(d.clone(), loc.clone())))
        .collect();
    let mut failures = Vec::new();
    for ((d, loc), t) in unique.iter().zip(tasks) {
        let res = joined(t.await, opts.dest.clone(), "blob");
        if let Err(error) = res {
            let f = ImageFailure {
                image: format!("blob {} from {loc}", d.digest),
                error,
            };
            progress.image_failed(&f);
            failures.push(f);
        }
    }
    ctx.close();
    Ok(summary(&ctx, vec![], failures, start))
}

fn summary(
    ctx: &Ctx,
    images: Vec<SyncedImage>,
    failures: Vec<ImageFailure>,
    start: Instant,
) -> Summary {
    let s = &ctx.stats;
    Summary {
        images,
        failures,
        blobs: s.blobs.load(Ordering::Relaxed),
        blobs_fetched: s.fetched.load(Ordering::Relaxed),
        blobs_reused: s.reused.load(Ordering::Relaxed),
        bytes_fetched: s.bytes_fetched.load(Ordering::Relaxed),
        bytes_reused: s.bytes_reused.load(Ordering::Relaxed),
        manifests: ctx.manifests.lock().unwrap().len(),
        elapsed: start.elapsed(),
    }
}

/// The shared state of a run: the tree, the blob cache, the registry client.
fn context(opts: &SyncOptions, progress: &Arc<dyn Progress>) -> Result<Arc<Ctx>, SyncError> {
    let open = |path: &PathBuf| {
        Store::open(path).map_err(|error| SyncError::Dest {
            path: path.clone(),
            error,
        })
    };
    let store = open(&opts.dest)?;
    let cache = opts.blob_cache.as_ref().map(open).transpose()?;
    let mut client_cfg = opts.client.clone();
    let jobs = opts.jobs.max(1);
    client_cfg.pool_per_host = client_cfg.pool_per_host.max(2 * jobs);
    if client_cfg.on_retry.is_none() {
        let p = progress.clone();
        client_cfg.on_retry = Some(Arc::new(move |ev: &RetryEvent| p.retry(ev)));
    }
    let client = RegistryClient::new(client_cfg).map_err(SyncError::Client)?;
    Ok(Arc::new(Ctx {
        client,
        store,
        cache,
        fetch_blobs: opts.fetch_blobs,
        platforms: opts.platforms.clone(),
        manifest_slots: Semaphore::new(jobs),
        blob_slots: Semaphore::new(jobs),
        blobs: Mutex::new(HashMap::new()),
        manifests: Mutex::new(HashSet::new()),
        stats: Stats::default(),
        progress: progress.clone(),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn desc(c: char, platform: Option<&str>) -> Descriptor {
        Descriptor {
            media_type: None,
            digest: Digest::from_hex(&c.to_string().repeat(64)).unwrap(),
            size: 1,
            platform: platform.map(|p| p.parse().unwrap()),
            urls: vec![],
        }
    }

    #[test]
    fn child_selection() {
        let idx = Digest::of_bytes(b"i");
        let children = vec![
            desc('a', Some("linux/amd64")),
            desc('b', Some("linux/arm64/v8")),
            desc('c', Some("linux/ppc64le")),
            desc('d', None),
        ];
        let only =
            |ps: &[&str]| PlatformSelection::Only(ps.iter().map(|p| p.parse().unwrap()).collect());
        let pick = |sel| {
            select_children(&idx, &children, &sel)
                .unwrap()
                .iter()
                .map(|d| d.digest.hex()[..1].to_string())
                .collect::<Vec<_>>()
                .join("")
        };
        assert_eq!(pick(PlatformSelection::All), "abcd");
        assert_eq!(pick(only(&["linux/amd64"])), "a");
        assert_eq!(pick(only(&["linux/arm64"])), "b");
        assert_eq!(
            pick(only(&["linux/arm64", "linux/amd64", "linux/amd64"])),
            "ba"
        );
        let e = select_children(&idx, &children, &only(&["linux/s390x"])).unwrap_err();
        let msg = e.to_string();
        assert!(
            msg.contains("linux/s390x") && msg.contains("linux/arm64/v8"),
            "{msg}"
        );
        assert!(msg.contains(&idx.to_string()), "{msg}");
    }
}
