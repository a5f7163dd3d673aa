//! `kpbuild build`: every module of the spec (and the bundle manifest, `lock`) for every
//! platform, each on the builder of its platform (`crate::builder`: BuildKit's control API, a
//! Docker daemon's BuildKit or a standalone buildkitd), with live progress per module and a
//! summary of what came from the cache and what the store gained.
//! The manifest builds once the modules are done (it holds their graphs, so every op of theirs
//! is then cached), and not at all for a platform whose module failed.
//!
//! Each module result comes back through BuildKit's `tar` exporter (over the build's session)
//! into the store, which reads it as it arrives (no temporary copy); files the store has
//! already cost nothing but the transfer. With a Docker daemon as builder, each module is first
//! built into its image `<bundle>/<module>:<version>-<arch>` (cheap when cached): the image ID
//! names the result by its content, so an unchanged module whose result the store already has
//! is not transferred again. Nothing reads the images back: `kpbuild export` reads only the
//! store.
//!
//! The context goes up as a tar through the session; the spec's `# syntax=` line (or
//! `--frontend`) names kpbuild's frontend. Host networking is asked for only when the spec
//! fetches images or files from a server on this machine.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use futures_util::StreamExt;
use indicatif::{MultiProgress, ProgressBar, ProgressStyle};
use kpbuild_bundle::layout::{self, BUNDLE_TARGET, LOCK_TARGET};
use kpbuild_bundle::plan::{PlanOptions, bundle_modules, plan};
use kpbuild_oci::platform::Platform;
use kpbuild_paths::source::LocalDir;
use kpbuild_store::bundle_tar;
use kpbuild_store::store::{Access, Ingested, Key, Store};

use crate::builder::{Builder, Builders, Export, Solve, Tls};
use crate::spec_arg::{ContextArg, SpecArg};
use crate::store_cmd::StoreArg;

#[derive(clap::Args)]
pub struct Args {
    #[command(flatten)]
    spec: SpecArg,
    #[command(flatten)]
    context: ContextArg,
    /// Modules to build (default: every module and the manifest).
    #[arg(long)]
    target: Vec<String>,
    /// The BuildKit to build on: `unix:///PATH` or `tcp://HOST:PORT` (a buildkitd), `docker`
    /// or `docker://unix:///PATH` (a Docker daemon's BuildKit). `PLATFORM=ADDR` sends that
    /// platform's builds to their own builder (repeat per platform; the builds run in
    /// parallel). Default: $BUILDKIT_HOST, else the Docker daemon of $DOCKER_HOST.
    #[arg(long, value_name = "[PLATFORM=]ADDR")]
    builder: Vec<String>,
    /// The frontend image (default: the spec's `# syntax=` line). A standalone buildkitd pulls
    /// it from a registry.
    #[arg(long, value_name = "IMAGE")]
    frontend: Option<String>,
    /// CA certificate that signs a `tcp://` builder's certificate.
    #[arg(long, value_name = "FILE")]
    tls_ca: Option<PathBuf>,
    /// Client certificate for `tcp://` builders (with --tls-key).
    #[arg(long, value_name = "FILE")]
    tls_cert: Option<PathBuf>,
    /// The client certificate's key.
    #[arg(long, value_name = "FILE")]
    tls_key: Option<PathBuf>,
    /// Extra variable (passed as a build argument): NAME=VALUE.
    #[arg(short = 'e', long = "extra-vars", value_name = "NAME=VALUE")]
    extra: Vec<String>,
    /// Only these distros of the os-packages modules (comma-separated or repeated).
    #[arg(long, value_delimiter = ',')]
    distro: Vec<String>,
    /// List the ops that ran (not cached), and those taken from the cache, for every build.
    #[arg(short, long)]
    verbose: bool,
    /// Builds run at the same time.
    #[arg(long, default_value_t = 3)]
    jobs: usize,
    /// Run every op again, ignoring BuildKit's cache (a cold build; the cache is refreshed).
    /// The results go to the store only (no module images: the next build makes them).
    #[arg(long)]
    no_cache: bool,
    /// Do not make the module images in the Docker daemon (`<bundle>/<module>:<version>-<arch>`).
    /// Without them every build sends its whole result to the store again, also when it is
    /// unchanged (the image ID is how kpbuild knows the store has it).
    #[arg(long)]
    no_load: bool,
    #[command(flatten)]
    store: StoreArg,
}

struct Unit {
    module: String,
    platform: Platform,
    /// `<bundle>/<module>:<version>-<arch>`: how progress names the build.
    image: String,
    key: Key,
}

#[derive(Default)]
struct Outcome {
    vertices: BTreeMap<String, (String, bool, bool)>, // digest -> (name, cached, completed)
    /// The last lines each vertex printed.
    logs: BTreeMap<String, Vec<String>>,
    failed_vertex: Option<String>,
    error: Option<String>,
    /// The error of a first attempt that failed on BuildKit's own ([`is_builder_transient`]):
    /// this outcome is the second attempt's.
    retried: Option<String>,
    took: Duration,
    /// What the store got from the build.
    stored: Option<Ingested>,
}

impl Outcome {
    /// The summary's word for the build, given the ops that ran: `FAILED`, `cached` or
    /// `built`, and `(second try)` after a failure of BuildKit's own.
    fn result(&self, ran: usize) -> String {
        let word = match &self.error {
            Some(_) => "FAILED",
            None if ran == 0 => "cached",
            None => "built",
        };
        match &self.retried {
            Some(_) => format!("{word} (second try)"),
            None => word.to_string(),
        }
    }
}

/// Vertices that only load or check inputs (sources), write a small file from the definition
/// (`mkfile`), or export: BuildKit reports them done, not cached, even when nothing changed.
/// They are not counted as work that ran.
fn is_source_vertex(name: &str) -> bool {
    const PREFIXES: [&str; 12] = [
        "load ",
        // The context, uploaded through the session.
        "http://buildkit-session/",
        "resolve ",
        "download ",
        "[internal]",
        "docker-image://",
        "note: ",
        "unpack build context",
        "local://",
        "mkfile ",
        "exporting to image",
        "exporting to client",
    ];
    PREFIXES.iter().any(|p| name.starts_with(p))
        || (name.starts_with('[') && name.contains("] FROM "))
}

impl Outcome {
    /// (ops, cached, ran): `ran` counts the ops that did work, `cached` those taken from
    /// BuildKit's cache; neither counts sources (downloads pinned by checksum, images, the
    /// context), which BuildKit reports cached whenever it holds them, `--no-cache` or not.
    fn counts(&self) -> (usize, usize, usize) {
        let total = self.vertices.len();
        let cached = self
            .vertices
            .values()
            .filter(|v| v.1 && !is_source_vertex(&v.0))
            .count();
        let ran = self
            .vertices
            .values()
            .filter(|v| v.2 && !v.1 && !is_source_vertex(&v.0))
            .count();
        (total, cached, ran)
    }
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let wanted = crate::builder::Wanted::parse(
        &args.builder,
        std::env::var("BUILDKIT_HOST").ok().as_deref(),
        std::env::var("DOCKER_HOST").ok().as_deref(),
    )?;
    let spec = args.spec.read()?;
    let context = args.context.dir(&args.spec.spec);
    // Plan here first: a bad spec, target or input fails before anything is sent.
    let planned = plan(
        &spec,
        &LocalDir::new(&context),
        &PlanOptions {
            extra_vars: args.extra.clone(),
            platforms: args.spec.platform.clone(),
            targets: args.target.clone(),
            distros: args.distro.clone(),
        },
    )?;
    // The plan's own answer: every op that fetches from a registry on this machine.
    let host_network = planned.needs_host_network();
    let units: Vec<Unit> = planned
        .platforms
        .iter()
        .flat_map(|p| {
            let all = bundle_modules(&spec.spec, &p.platform);
            let wanted: Vec<String> =
                if args.target.is_empty() || args.target.iter().any(|t| t == BUNDLE_TARGET) {
                    all
                } else {
                    all.into_iter()
                        .filter(|m| args.target.contains(m))
                        .collect()
                };
            wanted
                .into_iter()
                .map(|m| Unit {
                    image: layout::module_image(
                        &spec.spec.name,
                        &m,
                        &spec.spec.version,
                        &p.platform,
                    ),
                    key: Key::new(&spec.spec.name, &spec.spec.version, &m, &p.platform),
                    module: m,
                    platform: p.platform.clone(),
                })
                .collect::<Vec<_>>()
        })
        .collect();
    let modules: BTreeSet<&str> = units.iter().map(|u| u.module.as_str()).collect();

    let store = Arc::new(args.store.open(Access::Shared)?);
    let (tar, dockerfile) = context_tar(&context, &args.spec.spec)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let tls = Tls {
        ca: args.tls_ca.clone(),
        cert: args.tls_cert.clone(),
        key: args.tls_key.clone(),
    };
    let platforms: Vec<Platform> = planned
        .platforms
        .iter()
        .map(|p| p.platform.clone())
        .collect();
    let builders = runtime.block_on(wanted.connect(&tls, &platforms))?;
    eprintln!(
        "kpbuild build: {} builds ({} modules × {} platforms), context {} ({:.1} MiB){}",
        units.len(),
        modules.len(),
        planned.platforms.len(),
        context.display(),
        tar.len() as f64 / 1048576.0,
        if host_network {
            ", host network (images or files from a server on this machine)"
        } else {
            ""
        }
    );
    let mut extra = args.extra.clone();
    if !args.distro.is_empty() {
        extra.push(format!("KPBUILD_DISTROS={}", args.distro.join(",")));
    }
    // As buildx does: the environment's SOURCE_DATE_EPOCH reaches the frontend (the creation
    // time of the bundle's SBOMs), unless `-e SOURCE_DATE_EPOCH=…` says otherwise.
    if let Ok(v) = std::env::var("SOURCE_DATE_EPOCH")
        && !extra.iter().any(|e| e.starts_with("SOURCE_DATE_EPOCH="))
    {
        extra.push(format!("SOURCE_DATE_EPOCH={v}"));
    }
    let frontend = args
        .frontend
        .clone()
        .unwrap_or_else(|| spec.frontend.clone());
    let outcomes = runtime.block_on(build_all(
        &units,
        &builders,
        &store,
        tar,
        &Settings {
            frontend: &frontend,
            dockerfile: &dockerfile,
            host_network,
            extra: &extra,
            jobs: args.jobs.max(1),
            load: !args.no_load,
            no_cache: args.no_cache,
        },
    ))?;

    let mut failed = 0;
    eprintln!();
    eprintln!(
        "{:<40} {:>6} {:>7} {:>5} {:>8} {:>10}  result",
        "module", "ops", "cached", "ran", "time", "added MiB"
    );
    for (u, o) in units.iter().zip(&outcomes) {
        let (total, cached, ran) = o.counts();
        failed += usize::from(o.error.is_some());
        let result = o.result(ran);
        eprintln!(
            "{:<40} {:>6} {:>7} {:>5} {:>7.1}s {:>10.1}  {result}",
            u.image,
            total,
            cached,
            ran,
            o.took.as_secs_f64(),
            o.stored
                .as_ref()
                .map_or(0.0, |s| s.new_bytes as f64 / 1048576.0)
        );
    }
    let (files, added, total) = outcomes
        .iter()
        .filter_map(|o| o.stored.as_ref())
        .fold((0, 0, 0), |(f, a, t), s| {
            (f + s.new_files, a + s.new_bytes, t + s.bytes)
        });
    eprintln!(
        "store {}: {added} bytes added ({files} new files; {:.1} of {:.1} MiB of module content was new)",
        store.root().display(),
        added as f64 / 1048576.0,
        total as f64 / 1048576.0
    );
    let retried: Vec<(&Unit, &str)> = units
        .iter()
        .zip(&outcomes)
        .filter_map(|(u, o)| o.retried.as_deref().map(|e| (u, e)))
        .collect();
    if !retried.is_empty() {
        eprintln!(
            "{} of {} builds failed on BuildKit's own and were built once more (what had \
             completed came from BuildKit's cache):",
            retried.len(),
            units.len()
        );
        for (u, first) in retried {
            eprintln!("  {}: {first}", u.image);
        }
    }
    if args.verbose {
        for (u, o) in units.iter().zip(&outcomes) {
            for (name, cached, completed) in o.vertices.values() {
                if *completed && !*cached && !is_source_vertex(name) {
                    eprintln!("ran     {:<40} {name}", u.image);
                } else if *cached {
                    eprintln!("cached  {:<40} {name}", u.image);
                }
            }
        }
    }
    for (u, o) in units.iter().zip(&outcomes) {
        if let Some(e) = &o.error {
            eprintln!("\nerror: {} ({}): {e}", u.module, u.platform);
            if let Some(lines) = o.failed_vertex.as_ref().and_then(|v| o.logs.get(v)) {
                for l in lines {
                    eprintln!("  | {l}");
                }
            }
        }
    }
    if failed > 0 {
        bail!("{failed} of {} builds failed", units.len());
    }
    Ok(())
}

/// How every build of a run is made.
struct Settings<'a> {
    /// The frontend image (`# syntax=` of the spec, or `--frontend`).
    frontend: &'a str,
    /// The spec's path in the context.
    dockerfile: &'a str,
    host_network: bool,
    /// NAME=VALUE build arguments.
    extra: &'a [String],
    /// Builds at the same time.
    jobs: usize,
    /// Make the module images in the daemon (their IDs spare unchanged results a transfer).
    load: bool,
    /// Ignore BuildKit's cache (and make no module image).
    no_cache: bool,
}

impl Settings<'_> {
    /// The frontend options of the build of `u`.
    fn attrs(&self, u: &Unit) -> HashMap<String, String> {
        let mut attrs: HashMap<String, String> = self
            .extra
            .iter()
            .filter_map(|e| {
                e.split_once('=')
                    .map(|(k, v)| (format!("build-arg:{k}"), v.to_string()))
            })
            .collect();
        attrs.insert("filename".into(), self.dockerfile.to_string());
        attrs.insert("target".into(), u.module.clone());
        attrs.insert("platform".into(), u.platform.to_string());
        if self.no_cache {
            attrs.insert("no-cache".into(), String::new());
        }
        attrs
    }

    fn solve(&self, u: &Unit, context: &bytes::Bytes, export: Export) -> Solve {
        Solve {
            frontend: self.frontend.to_string(),
            attrs: self.attrs(u),
            context: context.clone(),
            export,
            entitlements: if self.host_network {
                vec!["network.host".into()]
            } else {
                Vec::new()
            },
        }
    }
}

async fn build_all(
    units: &[Unit],
    builders: &Builders,
    store: &Arc<Store>,
    tar: bytes::Bytes,
    settings: &Settings<'_>,
) -> anyhow::Result<Vec<Outcome>> {
    let multi = std::io::stderr().is_terminal().then(MultiProgress::new);
    let style =
        ProgressStyle::with_template("{spinner} {prefix:<38} {wide_msg}").expect("template");
    let build = |i: usize| {
        let u = &units[i];
        let bar = multi.as_ref().map(|m| {
            let b = m.add(
                ProgressBar::new_spinner()
                    .with_style(style.clone())
                    .with_prefix(u.image.clone()),
            );
            b.enable_steady_tick(Duration::from_millis(200));
            b
        });
        let builder = builders.for_platform(&u.platform).clone();
        let (tar, store) = (tar.clone(), store.clone());
        async move {
            let started = Instant::now();
            let mut outcome = build_unit(u, &builder, &store, &tar, settings, bar.as_ref()).await;
            // A failure of BuildKit's own, not of the build: an op cancelled because a
            // parallel build that shared it ended first (v0.8 does), or v0.8's flightcontrol
            // retry timeout. Once more.
            if let Some(e) = outcome.error.as_deref().filter(|e| is_builder_transient(e)) {
                let line = format!("{e}: a transient BuildKit failure; building it once more");
                match &bar {
                    Some(b) => b.println(format!("{}: {line}", u.image)),
                    None => eprintln!("{}: {line}", u.image),
                }
                let first = outcome.error.take();
                outcome = build_unit(u, &builder, &store, &tar, settings, bar.as_ref()).await;
                outcome.retried = first;
            }
            outcome.took = started.elapsed();
            let (total, cached, ran) = outcome.counts();
            let line = match &outcome.error {
                Some(_) => format!("FAILED after {:.1}s", outcome.took.as_secs_f64()),
                None => format!(
                    "done in {:.1}s: {ran} ran, {cached} cached of {total} ops",
                    outcome.took.as_secs_f64()
                ),
            };
            match &bar {
                Some(b) => b.finish_with_message(line),
                None => eprintln!("{}: {line}", u.image),
            }
            (i, outcome)
        }
    };
    // The manifest (`lock`) holds every module's graph: built beside them it would run their
    // ops at the same moment, sharing them between solves. It goes after them, and finds
    // every op of theirs in the cache.
    let (modules, locks): (Vec<usize>, Vec<usize>) =
        (0..units.len()).partition(|&i| units[i].module != LOCK_TARGET);
    let mut done: BTreeMap<usize, Outcome> =
        futures_util::stream::iter(modules.into_iter().map(build))
            .buffered(settings.jobs)
            .collect()
            .await;
    // A manifest whose platform has a failed module would fail the same way: not built.
    let failed: BTreeSet<&Platform> = done
        .iter()
        .filter(|(_, o)| o.error.is_some())
        .map(|(i, _)| &units[*i].platform)
        .collect();
    let (skipped, locks): (Vec<usize>, Vec<usize>) = locks
        .into_iter()
        .partition(|i| failed.contains(&units[*i].platform));
    for i in skipped {
        let line = "not built: a module of its platform failed".to_string();
        if multi.is_none() {
            eprintln!("{}: {line}", units[i].image);
        }
        let outcome = Outcome {
            error: Some(line),
            ..Default::default()
        };
        done.insert(i, outcome);
    }
    let built: Vec<(usize, Outcome)> = futures_util::stream::iter(locks.into_iter().map(build))
        .buffered(settings.jobs)
        .collect()
        .await;
    done.extend(built);
    Ok(done.into_values().collect())
}

/// Whether a build's error is BuildKit's own and passing (the build was not at fault):
/// BuildKit cancelling a shared op nobody asked to cancel, or BuildKit v0.8's flightcontrol
/// giving up when many ops wait on one key under load (moby/buildkit#1822; v0.9 waits 15 s
/// instead of 3 s and reuses finished results).
fn is_builder_transient(error: &str) -> bool {
    error.contains("context canceled") || error.contains("flightcontrol: exceeded retry timeout")
}

/// One module's build (and, with a Docker daemon, its image first): what it did and what the
/// store got.
async fn build_unit(
    u: &Unit,
    builder: &Builder,
    store: &Arc<Store>,
    tar: &bytes::Bytes,
    settings: &Settings<'_>,
    bar: Option<&ProgressBar>,
) -> Outcome {
    let mut outcome = Outcome::default();
    // 1. With a Docker daemon as builder, the build makes the module image first: when
    //    the store already has the result of that image ID, nothing is transferred.
    //    (Not with --no-cache: the export would find nothing of it in the cache and
    //    run every op a second time.)
    let known = if builder.addr.is_docker() && settings.load && !settings.no_cache {
        let built = run_build(
            builder,
            settings.solve(u, tar, Export::DockerImage(u.image.clone())),
            &mut outcome,
            bar,
        )
        .await;
        match (&outcome.error, built.image_id) {
            (None, Some(id)) => {
                let rid = format!("docker-image-{}", id.trim_start_matches("sha256:"));
                let known = store.result(&rid).ok().flatten();
                Some((rid, known))
            }
            _ => None,
        }
    } else {
        None
    };
    let got = match known {
        Some((_, Some(known))) => Some(known),
        _ if outcome.error.is_some() => None,
        // 2. The result's files, through the tar exporter, into the store.
        rid => {
            let got = export_to_store(builder, store, u, settings, tar, &mut outcome, bar).await;
            // The image ID names this tree only when the export ran nothing: all of
            // it came from the cache the image build left (an op that ran again may
            // have made other bytes).
            if let (Some((g, 0)), Some((rid, _))) = (&got, rid)
                && let Err(e) = store.set_result(&rid, &g.tree)
            {
                outcome.error = Some(format!("storing the result: {e}"));
            }
            got.map(|(g, _)| g)
        }
    };
    if let Some(got) = got
        && outcome.error.is_none()
    {
        match store.set_ref(&u.key, &got) {
            Ok(_) => outcome.stored = Some(got),
            Err(e) => outcome.error = Some(format!("storing the result: {e}")),
        }
    }
    outcome
}

/// What one build of a module did.
struct Built {
    /// The image ID the daemon reports (builds that make an image).
    image_id: Option<String>,
    /// Ops this build ran (not cached, not sources).
    ran: usize,
}

/// Runs one build, folding its progress into `outcome` (a vertex an earlier build of the
/// module reported keeps that report: a second build finds the first's work in the cache).
async fn run_build(
    builder: &Builder,
    solve: Solve,
    outcome: &mut Outcome,
    bar: Option<&ProgressBar>,
) -> Built {
    let earlier: BTreeSet<String> = outcome.vertices.keys().cloned().collect();
    let mut this = Outcome::default();
    let mut failed_op: Option<(String, String)> = None;
    let solved = builder
        .solve(solve, |status| {
            for v in status.vertexes {
                let t =
                    this.vertices
                        .entry(v.digest.clone())
                        .or_insert((v.name.clone(), false, false));
                t.1 |= v.cached;
                t.2 |= v.completed.is_some();
                if !earlier.contains(&v.digest) {
                    outcome.vertices.insert(v.digest.clone(), t.clone());
                }
                // An op's error is the build's only if the build fails: BuildKit also marks
                // an op cancelled that a parallel build shared and gave up on.
                if !v.error.is_empty() && failed_op.is_none() {
                    failed_op = Some((format!("{}: {}", v.name, v.error), v.digest.clone()));
                }
            }
            for l in status.logs {
                let lines = outcome.logs.entry(l.vertex.clone()).or_default();
                lines.extend(String::from_utf8_lossy(&l.msg).lines().map(str::to_string));
                let excess = lines.len().saturating_sub(20);
                lines.drain(..excess);
            }
            let (total, cached, ran) = outcome.counts();
            if let Some(b) = bar {
                b.set_message(format!("{ran} ran, {cached} cached of {total} ops"));
            }
        })
        .await;
    let image_id = match solved {
        Ok(s) => s.image_id,
        Err(e) => {
            // The failed op's own message says more than the solve's summary of it.
            if outcome.error.is_none() {
                outcome.error = Some(match failed_op {
                    Some((message, digest)) => {
                        outcome.failed_vertex = Some(digest);
                        message
                    }
                    None => format!("{e:#}"),
                });
            }
            None
        }
    };
    Built {
        image_id,
        ran: this.counts().2,
    }
}

/// Builds `u` with BuildKit's tar exporter, whose stream the store ingests as it arrives;
/// returns what the store got and how many ops the build ran (`None` with `outcome.error`
/// set when the build or the ingest failed).
async fn export_to_store(
    builder: &Builder,
    store: &Arc<Store>,
    u: &Unit,
    settings: &Settings<'_>,
    tar: &bytes::Bytes,
    outcome: &mut Outcome,
    bar: Option<&ProgressBar>,
) -> Option<(Ingested, usize)> {
    // A few MiB in flight: the session's receiver waits for the store, not the other way.
    let (tx, rx) = tokio::sync::mpsc::channel(16);
    let received = Arc::new(AtomicU64::new(0));
    let reader = ChannelReader {
        rx,
        pending: bytes::Bytes::new(),
        count: received.clone(),
    };
    let (what, ingest_store) = (u.key.to_string(), store.clone());
    let ingest = tokio::task::spawn_blocking(move || {
        ingest_store
            .ingest(std::io::BufReader::with_capacity(1 << 20, reader))
            .with_context(|| what)
    });
    // The session holds the only sender: it is gone when the build is, ending the input.
    let built = run_build(
        builder,
        settings.solve(u, tar, Export::Tar(tx)),
        outcome,
        bar,
    )
    .await;
    let ingested = ingest.await.unwrap_or_else(|e| Err(anyhow::anyhow!("{e}")));
    if outcome.error.is_some() {
        return None;
    }
    match (ingested, received.load(Ordering::Relaxed)) {
        (_, 0) => {
            outcome.error = Some(format!(
                "the builder {} sent no result through the tar exporter (kpbuild needs \
                 BuildKit's tar exporter: BuildKit v0.8 or newer)",
                builder.addr
            ));
            None
        }
        (Ok(got), _) => {
            // The OCI layer digest of a new tree, while its files are in the page cache: the
            // first OCI export then has nothing to compute.
            let (store, name, tree) = (store.clone(), u.key.to_string(), got.tree.clone());
            let digested = tokio::task::spawn_blocking(move || {
                let epoch = bundle_tar::source_date_epoch().map_err(|e| anyhow::anyhow!(e))?;
                crate::export_oci::layer_digest(&store, &name, &tree, epoch)
            })
            .await;
            match digested {
                Ok(Ok(_)) => Some((got, built.ran)),
                Ok(Err(e)) => {
                    outcome.error = Some(format!("the OCI layer digest of the result: {e:#}"));
                    None
                }
                Err(e) => {
                    outcome.error = Some(format!("the OCI layer digest of the result: {e}"));
                    None
                }
            }
        }
        (Err(e), _) => {
            outcome.error = Some(format!("bringing the result into the store: {e:#}"));
            None
        }
    }
}

/// The tar exporter's stream as the store's ingest reads it (on a blocking thread), counting
/// the bytes.
struct ChannelReader {
    rx: tokio::sync::mpsc::Receiver<bytes::Bytes>,
    pending: bytes::Bytes,
    count: Arc<AtomicU64>,
}

impl std::io::Read for ChannelReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        while self.pending.is_empty() {
            match self.rx.blocking_recv() {
                Some(b) => self.pending = b,
                None => return Ok(0),
            }
        }
        let n = buf.len().min(self.pending.len());
        buf[..n].copy_from_slice(&self.pending.split_to(n));
        self.count.fetch_add(n as u64, Ordering::Relaxed);
        Ok(n)
    }
}

/// The build context as a tar (sorted, `.git` left out), and the spec's path inside it.
///
/// `.dockerignore` is not applied yet. The `ignore` crate reads ignore files with gitignore's
/// rules, where a pattern without a slash matches at any depth; `.dockerignore` patterns are
/// anchored at the context root (Go's `filepath.Match` per path, as BuildKit's fsutil does), so
/// using it would silently leave out files a user meant to send.
fn context_tar(context: &Path, spec: &Path) -> anyhow::Result<(bytes::Bytes, String)> {
    let mut builder = tar::Builder::new(Vec::new());
    builder.follow_symlinks(false);
    let mut files = Vec::new();
    let walk = walkdir::WalkDir::new(context)
        .min_depth(1)
        .into_iter()
        .filter_entry(|e| e.file_name() != ".git");
    for e in walk {
        let e = e.with_context(|| format!("reading the build context {}", context.display()))?;
        files.push(e.into_path());
    }
    files.sort();
    for f in &files {
        let rel = f.strip_prefix(context).expect("under the context");
        builder
            .append_path_with_name(f, rel)
            .with_context(|| format!("adding {} to the context", f.display()))?;
    }
    let spec_abs = std::fs::canonicalize(spec).with_context(|| format!("{}", spec.display()))?;
    let ctx_abs = std::fs::canonicalize(context)?;
    let dockerfile = match spec_abs.strip_prefix(&ctx_abs) {
        Ok(rel) => rel.to_string_lossy().into_owned(),
        Err(_) => {
            // A spec outside the context travels inside it, under a name of its own.
            let name = ".kpbuild/Dockerfile.bundle".to_string();
            let data = std::fs::read(spec)?;
            let mut h = tar::Header::new_gnu();
            h.set_size(data.len() as u64);
            h.set_mode(0o644);
            h.set_cksum();
            builder.append_data(&mut h, &name, data.as_slice())?;
            name
        }
    };
    Ok((bytes::Bytes::from(builder.into_inner()?), dockerfile))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sources_are_neither_cached_nor_ran_ops() {
        let mut o = Outcome::default();
        for (d, name, cached) in [
            ("a", "download https://x.io/f", true),
            (
                "b",
                "docker-image://127.0.0.1:5800/kpbuild/frontend:dev@sha256:1",
                true,
            ),
            ("c", "http://buildkit-session/1", true),
            ("d", "files [linux/amd64]: lay out 1 files", false),
            ("e", "images [linux/amd64]: registry tree", true),
        ] {
            o.vertices
                .insert(d.to_string(), (name.to_string(), cached, true));
        }
        assert_eq!(o.counts(), (5, 1, 1));
    }

    #[test]
    fn the_summary_says_which_builds_took_a_second_try() {
        let mut o = Outcome::default();
        assert_eq!(o.result(0), "cached");
        assert_eq!(o.result(3), "built");
        o.retried = Some("flightcontrol: exceeded retry timeout".into());
        assert_eq!(o.result(3), "built (second try)");
        o.error = Some("flightcontrol: exceeded retry timeout".into());
        assert_eq!(o.result(0), "FAILED (second try)");
    }

    #[test]
    fn only_a_transient_builder_failure_is_built_again() {
        assert!(is_builder_transient(
            "download https://x.io/f: context canceled: context canceled"
        ));
        assert!(is_builder_transient(
            "failed to solve: failed to compute cache key: flightcontrol: exceeded retry timeout"
        ));
        assert!(!is_builder_transient(
            "download https://x.io/f: exit code: 1"
        ));
        assert!(!is_builder_transient(
            "download https://x.io/f: sha256 mismatch after 3 fetches"
        ));
    }
}
