//! `kpbuild sync-images`: fetch images into a `registry:2` storage tree.
//!
//! Stdout gets one line per synced image, `<stored ref>\t<digest>\t<source ref>`; everything
//! else (progress, retries, the summary, errors) goes to stderr.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use clap::Args;
use indicatif::{HumanBytes, ProgressBar, ProgressDrawTarget, ProgressStyle};

use kpbuild_oci::image_ref::FetchLocation;
use kpbuild_oci::image_ref::{ImageRef, Mirror, NameMap, parse_list};
use kpbuild_oci::registry_layout::Descriptor;
use kpbuild_oci::registry_layout::{Digest, Platform};
use kpbuild_sync::engine::fetch_blobs;
use kpbuild_sync::{
    ClientConfig, ImageFailure, PlatformSelection, Progress, RetryEvent, RetryPolicy, Summary,
    SyncError, SyncOptions, SyncedImage, sync_images,
};

#[derive(Args, Debug)]
#[command(
    after_help = "Stored names drop the registry host (quay.io/calico/node:v3 -> calico/node:v3) unless --map says otherwise.\n\
Credentials come from the Docker config file ($DOCKER_CONFIG/config.json or ~/.docker/config.json).\n\
Loopback registries are reached over plain http, as Docker does; use --insecure for others."
)]
pub struct SyncImagesArgs {
    /// Storage root to write: what a registry:2 mounts as /var/lib/registry
    #[arg(long, value_name = "DIR")]
    dest: PathBuf,

    /// Platform to keep from multi-platform images (repeatable); default: this machine's
    #[arg(long = "platform", value_name = "OS/ARCH[/VARIANT]")]
    platforms: Vec<Platform>,

    /// Keep every platform of multi-platform images
    #[arg(long, conflicts_with = "platforms")]
    all_platforms: bool,

    /// Concurrent blob transfers
    #[arg(long, value_name = "N", default_value_t = 8, value_parser = clap::value_parser!(u16).range(1..=256))]
    jobs: u16,

    /// Fetch SRC's images from DST instead, e.g. quay.io=127.0.0.1:5000/quay.io (repeatable)
    #[arg(long = "mirror", value_name = "SRC=DST")]
    mirrors: Vec<Mirror>,

    /// Stored names from a kubeplay images_origin.yaml (- src: quay.io/calico/node / dest: library/calico-node)
    #[arg(long, value_name = "FILE")]
    map: Option<PathBuf>,

    /// Registry host reached without TLS verification or over plain http (repeatable)
    #[arg(long = "insecure", value_name = "HOST")]
    insecure: Vec<String>,

    /// Read references from FILE, one a line ('#' comments)
    #[arg(long, value_name = "FILE", conflicts_with = "refs")]
    list: Option<PathBuf>,

    /// Retries per request on 5xx, 429 and dropped connections
    #[arg(long, value_name = "N", default_value_t = 5)]
    retries: u32,

    /// Give up on (and retry) a response that sends nothing for this long
    #[arg(long, value_name = "SECONDS", default_value_t = 120, value_parser = clap::value_parser!(u64).range(1..))]
    read_timeout: u64,

    /// Image references (tag or digest)
    #[arg(value_name = "REF", required_unless_present = "list")]
    refs: Vec<String>,
}

/// Progress on stderr: an indicatif bar on a terminal, plain lines otherwise.
struct CliProgress {
    bar: Option<ProgressBar>,
    images: AtomicUsize,
    done: AtomicUsize,
}

impl CliProgress {
    fn new() -> CliProgress {
        let bar = std::io::stderr().is_terminal().then(|| {
            let b = ProgressBar::with_draw_target(Some(0), ProgressDrawTarget::stderr());
            b.set_style(
                ProgressStyle::with_template(
                    "{spinner} [{elapsed_precise}] {wide_bar} {bytes}/{total_bytes} {bytes_per_sec} {msg}",
                )
                .expect("valid template"),
            );
            b.enable_steady_tick(Duration::from_millis(120));
            b
        });
        CliProgress {
            bar,
            images: AtomicUsize::new(0),
            done: AtomicUsize::new(0),
        }
    }

    fn line(&self, s: String) {
        match &self.bar {
            Some(b) => b.println(s),
            None => eprintln!("{s}"),
        }
    }

    fn update_msg(&self) {
        if let Some(b) = &self.bar {
            b.set_message(format!(
                "images {}/{}",
                self.done.load(Ordering::Relaxed),
                self.images.load(Ordering::Relaxed)
            ));
        }
    }

    fn finish(&self) {
        if let Some(b) = &self.bar {
            b.finish_and_clear();
        }
    }
}

impl Progress for CliProgress {
    fn planned(&self, images: usize) {
        self.images.store(images, Ordering::Relaxed);
        self.update_msg();
        if self.bar.is_none() {
            eprintln!("sync-images: {images} images");
        }
    }
    fn add_total(&self, bytes: u64) {
        if let Some(b) = &self.bar {
            b.inc_length(bytes);
        }
    }
    fn bytes(&self, n: u64) {
        if let Some(b) = &self.bar {
            b.inc(n);
        }
    }
    fn rewind(&self, n: u64) {
        if let Some(b) = &self.bar {
            b.set_position(b.position().saturating_sub(n));
        }
    }
    fn blob_done(&self, _digest: &Digest, _size: u64, _reused: bool) {}
    fn image_done(&self, img: &SyncedImage) {
        let n = self.done.fetch_add(1, Ordering::Relaxed) + 1;
        self.update_msg();
        self.line(format!(
            "[{n}/{}] {} -> {} ({} manifests, {} blobs)",
            self.images.load(Ordering::Relaxed),
            img.source,
            img.stored_ref(),
            img.manifests,
            img.blobs
        ));
    }
    fn image_failed(&self, f: &ImageFailure) {
        self.line(format!("failed: {f}"));
    }
    fn retry(&self, ev: &RetryEvent) {
        self.line(format!(
            "retry {} in {:.1}s: {}: {}",
            ev.attempt,
            ev.delay.as_secs_f64(),
            ev.url,
            ev.reason
        ));
    }
}

fn read_refs(args: &SyncImagesArgs) -> Result<Vec<ImageRef>> {
    if let Some(list) = &args.list {
        let text = std::fs::read_to_string(list)
            .with_context(|| format!("cannot read the image list {}", list.display()))?;
        let refs = parse_list(&text)
            .map_err(|(line, e)| anyhow::anyhow!("{}:{line}: {e}", list.display()))?;
        if refs.is_empty() {
            bail!("the image list {} names no image", list.display());
        }
        return Ok(refs);
    }
    let mut refs = Vec::new();
    let mut errors = Vec::new();
    for r in &args.refs {
        match ImageRef::parse(r) {
            Ok(r) => refs.push(r),
            Err(e) => errors.push(e.to_string()),
        }
    }
    if !errors.is_empty() {
        bail!("{}", errors.join("\n"));
    }
    Ok(refs)
}

fn summary_line(s: &Summary) -> String {
    format!(
        "sync-images: {} images ({} failed), {} blobs ({} fetched, {} reused), {} bytes fetched ({}), {} bytes reused, {} manifests, {:.2}s",
        s.images.len() + s.failures.len(),
        s.failures.len(),
        s.blobs,
        s.blobs_fetched,
        s.blobs_reused,
        s.bytes_fetched,
        HumanBytes(s.bytes_fetched),
        s.bytes_reused,
        s.manifests,
        s.elapsed.as_secs_f64()
    )
}

/// Runs `kpbuild sync-images`.
pub fn run(args: SyncImagesArgs) -> Result<()> {
    let refs = read_refs(&args)?;
    let map = match &args.map {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("cannot read the name map {}", path.display()))?;
            Some(NameMap::parse(&path.display().to_string(), &text)?)
        }
        None => None,
    };
    let platforms = if args.all_platforms {
        PlatformSelection::All
    } else if args.platforms.is_empty() {
        PlatformSelection::Only(vec![Platform::host()])
    } else {
        PlatformSelection::Only(args.platforms.clone())
    };
    let opts = SyncOptions {
        dest: args.dest.clone(),
        platforms,
        jobs: args.jobs as usize,
        mirrors: args.mirrors.clone(),
        map,
        client: ClientConfig {
            insecure: args.insecure.clone(),
            retry: RetryPolicy {
                retries: args.retries,
                ..RetryPolicy::default()
            },
            read_timeout: Duration::from_secs(args.read_timeout),
            ..ClientConfig::default()
        },
        fetch_blobs: true,
        blob_cache: None,
    };
    sync_with_progress(refs, opts).map(drop)
}

/// Syncs `refs` into `opts.dest` with progress and a summary on stderr and one line per image
/// on stdout; SIGINT/SIGTERM stop it keeping what is complete. `kpbuild sync-images` and the
/// sync-image worker job both run this.
pub(crate) fn sync_with_progress(refs: Vec<ImageRef>, opts: SyncOptions) -> Result<Summary> {
    let dest = opts.dest.clone();
    let summary = with_progress(&dest, |progress| sync_images(refs, opts, progress))?;
    for img in &summary.images {
        println!("{}\t{}\t{}", img.stored_ref(), img.digest, img.source);
    }
    report(summary, "images", &dest)
}

/// Fetches listed blobs into `opts.dest` ([`kpbuild_sync::engine::fetch_blobs`]) with
/// progress and a summary on stderr, as [`sync_with_progress`] does for images.
pub(crate) fn fetch_blobs_with_progress(
    blobs: Vec<(Descriptor, FetchLocation)>,
    opts: SyncOptions,
) -> Result<Summary> {
    let dest = opts.dest.clone();
    let summary = with_progress(&dest, |progress| fetch_blobs(blobs, opts, progress))?;
    report(summary, "blobs", &dest)
}

/// Runs the engine's `work` on a runtime of its own, with CLI progress; SIGINT/SIGTERM stop
/// it keeping what is complete.
fn with_progress<F, Fut>(dest: &std::path::Path, work: F) -> Result<Summary>
where
    F: FnOnce(Arc<dyn Progress>) -> Fut,
    Fut: std::future::Future<Output = Result<Summary, SyncError>>,
{
    let progress = Arc::new(CliProgress::new());
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let result = rt.block_on(async {
        use tokio::signal::unix::{SignalKind, signal};
        let mut int = signal(SignalKind::interrupt()).context("cannot handle SIGINT")?;
        let mut term = signal(SignalKind::terminate()).context("cannot handle SIGTERM")?;
        Ok::<_, anyhow::Error>(tokio::select! {
            r = work(progress.clone()) => Ok(r),
            _ = int.recv() => Err(("SIGINT", 130)),
            _ = term.recv() => Err(("SIGTERM", 143)),
        })
    })?;
    progress.finish();
    match result {
        Ok(r) => Ok(r?),
        Err((signal, code)) => {
            // Cancel every transfer: dropping them removes the files being written, and the
            // store's run directory with them. What is stored is complete and verified.
            rt.shutdown_timeout(Duration::from_secs(10));
            eprintln!(
                "sync-images: interrupted by {signal}; blobs and images completed so far are kept in {}, nothing partial is; rerun the same command to continue",
                dest.display()
            );
            std::process::exit(code);
        }
    }
}

/// The failures and the summary line on stderr; an error when anything failed.
fn report(summary: Summary, what: &str, dest: &std::path::Path) -> Result<Summary> {
    for f in &summary.failures {
        eprintln!("error: {f}");
    }
    eprintln!("{}", summary_line(&summary));
    if !summary.failures.is_empty() {
        bail!(
            "{} of {} {what} failed; {} (rerun to retry: blobs already stored are kept)",
            summary.failures.len(),
            summary.failures.len() + summary.images.len().max(summary.blobs),
            if what == "images" {
                format!("they have no tag in {}", dest.display())
            } else {
                format!("they are not in {}", dest.display())
            }
        );
    }
    Ok(summary)
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct T {
        #[command(flatten)]
        a: SyncImagesArgs,
    }

    #[test]
    fn args_parse() {
        let t = T::try_parse_from([
            "x",
            "--dest",
            "/d",
            "--platform",
            "linux/amd64",
            "--platform",
            "linux/arm64",
            "--mirror",
            "quay.io=127.0.0.1:5000/quay.io",
            "--jobs",
            "4",
            "nginx",
            "quay.io/a/b:v1",
        ])
        .unwrap();
        assert_eq!(t.a.platforms.len(), 2);
        assert_eq!(t.a.mirrors[0].prefix, "quay.io");
        assert_eq!(read_refs(&t.a).unwrap().len(), 2);
        // --all-platforms excludes --platform; a ref or --list is needed; bad values refused.
        assert!(
            T::try_parse_from([
                "x",
                "--dest",
                "/d",
                "--all-platforms",
                "--platform",
                "linux/amd64",
                "a"
            ])
            .is_err()
        );
        assert!(T::try_parse_from(["x", "--dest", "/d"]).is_err());
        assert!(T::try_parse_from(["x", "--dest", "/d", "--platform", "amd64", "a"]).is_err());
        assert!(T::try_parse_from(["x", "--dest", "/d", "--mirror", "nonsense", "a"]).is_err());
        assert!(T::try_parse_from(["x", "--dest", "/d", "--jobs", "0", "a"]).is_err());
        assert!(T::try_parse_from(["x", "--dest", "/d", "--list", "f", "a"]).is_err());
        let t = T::try_parse_from(["x", "--dest", "/d", "Bad//ref", "nginx", "UP"]).unwrap();
        let e = read_refs(&t.a).unwrap_err().to_string();
        assert!(
            e.contains("Bad//ref") && e.contains("UP") && !e.contains("nginx"),
            "{e}"
        );
    }
}
