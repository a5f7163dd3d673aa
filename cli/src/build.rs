//! `kpbuild build`: drives BuildKit through the Docker Engine API (no docker CLI): every module
//! of the spec (and the bundle manifest, `lock`) for every platform, each into its own image
//! `<bundle>/<module>:<version>-<arch>`, with live progress per module and a summary of what
//! came from the cache.
//!
//! The context goes up as a tar (the daemon hands the frontend a one-shot URL of it); the spec's
//! `# syntax=` line selects kpbuild's frontend. Host networking is asked for only when the spec
//! fetches images from a registry on this machine.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use bollard::Docker;
use bollard::models::BuildInfoAux;
use bollard::query_parameters::{BuildImageOptions, BuilderVersion};
use futures_util::StreamExt;
use indicatif::{MultiProgress, ProgressBar, ProgressStyle};
use kpbuild_modules::layout::{self, BUNDLE_TARGET};
use kpbuild_modules::plan::{PlanOptions, bundle_modules, plan};
use kpbuild_modules::platform::Platform;
use kpbuild_modules::source::LocalDir;
use kpbuild_modules::spec::SpecFile;

#[derive(clap::Args)]
pub struct Args {
    /// The bundle spec.
    #[arg(
        short = 'f',
        long = "file",
        value_name = "FILE",
        default_value = "Dockerfile.bundle"
    )]
    spec: PathBuf,
    /// The build context (default: the spec's directory).
    #[arg(long, value_name = "DIR")]
    context: Option<PathBuf>,
    /// Platforms, comma-separated or repeated (default: the spec's).
    #[arg(long, value_delimiter = ',', value_parser = crate::plan_cmd::parse_platform)]
    platform: Vec<Platform>,
    /// Modules to build (default: every module and the manifest).
    #[arg(long)]
    target: Vec<String>,
    /// A buildkitd address instead of the Docker daemon.
    #[arg(long, value_name = "ADDR")]
    builder: Option<String>,
    /// Extra variable (passed as a build argument): NAME=VALUE.
    #[arg(short = 'e', long = "extra-vars", value_name = "NAME=VALUE")]
    extra: Vec<String>,
    /// Only these distros of the os-packages modules (comma-separated or repeated).
    #[arg(long, value_delimiter = ',')]
    distro: Vec<String>,
    /// List the ops that ran (not cached) for every build.
    #[arg(short, long)]
    verbose: bool,
    /// Builds run at the same time.
    #[arg(long, default_value_t = 3)]
    jobs: usize,
}

struct Unit {
    module: String,
    platform: Platform,
    image: String,
}

#[derive(Default)]
struct Outcome {
    vertices: BTreeMap<String, (String, bool, bool)>, // digest -> (name, cached, completed)
    /// The last lines each vertex printed.
    logs: BTreeMap<String, Vec<String>>,
    failed_vertex: Option<String>,
    error: Option<String>,
    took: Duration,
}

/// Vertices that only load or check inputs (sources), write a small file from the definition
/// (`mkfile`), or export: BuildKit reports them done, not cached, even when nothing changed.
/// They are not counted as work that ran.
fn is_source_vertex(name: &str) -> bool {
    const PREFIXES: [&str; 11] = [
        "load ",
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
    /// (ops, cached, ran): `ran` counts the ops that did work (not sources, not cached).
    fn counts(&self) -> (usize, usize, usize) {
        let total = self.vertices.len();
        let cached = self.vertices.values().filter(|v| v.1).count();
        let ran = self
            .vertices
            .values()
            .filter(|v| v.2 && !v.1 && !is_source_vertex(&v.0))
            .count();
        (total, cached, ran)
    }
}

pub fn run(args: Args) -> anyhow::Result<()> {
    if let Some(addr) = &args.builder {
        bail!(
            "--builder {addr}: driving a standalone buildkitd is not implemented yet; \
             kpbuild build uses the Docker daemon (DOCKER_HOST)"
        );
    }
    let spec = SpecFile::read(&args.spec)?;
    let context = crate::plan_cmd::context_dir(&args.spec, args.context.as_deref());
    // Plan here first: a bad spec, target or input fails before anything is sent.
    let planned = plan(
        &spec,
        &LocalDir::new(&context),
        &PlanOptions {
            extra_vars: args.extra.clone(),
            platforms: args.platform.clone(),
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
                    module: m,
                    platform: p.platform.clone(),
                })
                .collect::<Vec<_>>()
        })
        .collect();
    let modules: BTreeSet<&str> = units.iter().map(|u| u.module.as_str()).collect();

    let (tar, dockerfile) = context_tar(&context, &args.spec)?;
    eprintln!(
        "kpbuild build: {} builds ({} modules × {} platforms), context {} ({:.1} MiB){}",
        units.len(),
        modules.len(),
        planned.platforms.len(),
        context.display(),
        tar.len() as f64 / 1048576.0,
        if host_network {
            ", host network (images from a registry on this machine)"
        } else {
            ""
        }
    );
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let mut extra = args.extra.clone();
    if !args.distro.is_empty() {
        extra.push(format!("KPBUILD_DISTROS={}", args.distro.join(",")));
    }
    let outcomes = runtime.block_on(build_all(
        &units,
        tar,
        &dockerfile,
        host_network,
        &extra,
        args.jobs.max(1),
    ))?;

    let mut failed = 0;
    eprintln!();
    eprintln!(
        "{:<40} {:>6} {:>7} {:>5} {:>8}  result",
        "image", "ops", "cached", "ran", "time"
    );
    for (u, o) in units.iter().zip(&outcomes) {
        let (total, cached, ran) = o.counts();
        let result = match &o.error {
            Some(_) => {
                failed += 1;
                "FAILED".to_string()
            }
            None if ran == 0 => "cached".to_string(),
            None => "built".to_string(),
        };
        eprintln!(
            "{:<40} {:>6} {:>7} {:>5} {:>7.1}s  {result}",
            u.image,
            total,
            cached,
            ran,
            o.took.as_secs_f64()
        );
    }
    if args.verbose {
        for (u, o) in units.iter().zip(&outcomes) {
            for (name, cached, completed) in o.vertices.values() {
                if *completed && !*cached && !is_source_vertex(name) {
                    eprintln!("ran  {:<40} {name}", u.image);
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

async fn build_all(
    units: &[Unit],
    tar: bytes::Bytes,
    dockerfile: &str,
    host_network: bool,
    extra: &[String],
    jobs: usize,
) -> anyhow::Result<Vec<Outcome>> {
    let docker =
        Docker::connect_with_defaults().context("connecting to the Docker daemon (DOCKER_HOST)")?;
    docker.ping().await.context(
        "the Docker daemon does not answer (is DOCKER_HOST right? hack/dockerd.sh starts one)",
    )?;
    let multi = std::io::stderr().is_terminal().then(MultiProgress::new);
    let style =
        ProgressStyle::with_template("{spinner} {prefix:<38} {wide_msg}").expect("template");
    let buildargs: HashMap<String, String> = extra
        .iter()
        .filter_map(|e| {
            e.split_once('=')
                .map(|(k, v)| (k.to_string(), v.to_string()))
        })
        .collect();
    let futures = units.iter().map(|u| {
        let bar = multi.as_ref().map(|m| {
            let b = m.add(
                ProgressBar::new_spinner()
                    .with_style(style.clone())
                    .with_prefix(u.image.clone()),
            );
            b.enable_steady_tick(Duration::from_millis(200));
            b
        });
        let docker = docker.clone();
        let tar = tar.clone();
        let buildargs = buildargs.clone();
        async move {
            let started = Instant::now();
            let options = BuildImageOptions {
                dockerfile: dockerfile.to_string(),
                t: Some(u.image.clone()),
                target: u.module.clone(),
                platform: u.platform.to_string(),
                networkmode: host_network.then(|| "host".to_string()),
                buildargs: Some(buildargs),
                version: BuilderVersion::BuilderBuildKit,
                session: Some(session_id()),
                rm: true,
                ..Default::default()
            };
            let mut outcome = Outcome::default();
            let mut stream = docker.build_image(options, None, Some(bollard::body_full(tar)));
            while let Some(item) = stream.next().await {
                match item {
                    Ok(info) => {
                        if let Some(BuildInfoAux::BuildKit(status)) = info.aux {
                            for v in status.vertexes {
                                let e = outcome.vertices.entry(v.digest.clone()).or_insert((
                                    v.name.clone(),
                                    false,
                                    false,
                                ));
                                e.1 |= v.cached;
                                e.2 |= v.completed.is_some();
                                if !v.error.is_empty() && outcome.error.is_none() {
                                    outcome.error = Some(format!("{}: {}", v.name, v.error));
                                    outcome.failed_vertex = Some(v.digest.clone());
                                }
                            }
                            for l in status.logs {
                                let lines = outcome.logs.entry(l.vertex.clone()).or_default();
                                lines.extend(
                                    String::from_utf8_lossy(&l.msg).lines().map(str::to_string),
                                );
                                let excess = lines.len().saturating_sub(20);
                                lines.drain(..excess);
                            }
                        }
                        if let Some(detail) = info.error_detail.and_then(|d| d.message) {
                            outcome.error = Some(detail);
                        }
                    }
                    Err(e) => {
                        outcome.error = Some(match e {
                            bollard::errors::Error::DockerStreamError { error } => error,
                            other => other.to_string(),
                        });
                    }
                }
                let (total, cached, ran) = outcome.counts();
                if let Some(b) = &bar {
                    b.set_message(format!("{ran} ran, {cached} cached of {total} ops"));
                }
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
            outcome
        }
    });
    Ok(futures_util::stream::iter(futures)
        .buffered(jobs)
        .collect()
        .await)
}

fn session_id() -> String {
    let mut b = [0u8; 16];
    getrandom::fill(&mut b).expect("random bytes");
    hex::encode(b)
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
