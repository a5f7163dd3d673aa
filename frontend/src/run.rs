//! The frontend's main flow: read `Dockerfile.bundle` and the inputs it names from the build
//! context, plan, resolve image tags to digests, lower to LLB, solve, return.
//!
//! Options (`docker build --target/--platform/--build-arg`, or `kpbuild build`):
//! - `filename`: the spec in the `dockerfile` local source (default `Dockerfile.bundle`);
//! - `target`: a module name, or `bundle` (default: every module merged into the bundle tree);
//! - `platform`: comma-separated platforms (default: the spec's);
//! - `build-arg:NAME=VALUE`: extra variables, like `kpbuild lists -e NAME=VALUE`;
//! - `build-arg:KPBUILD_REGISTRY_SECRET=ID`: registry credentials for the sync ops from the build
//!   secret ID, a Docker config file (`docker build --secret id=ID,src=~/.docker/config.json`).
//!   Tags are resolved by BuildKit itself, with the client's own credentials.

use std::collections::{BTreeMap, HashMap};

use sha2::Digest as _;

use kpbuild_modules::image_ref::{self, ImageRef, Mirror};
use kpbuild_modules::plan::{self, PlanOptions, Work, context_inputs};
use kpbuild_modules::source::MemSource;
use kpbuild_modules::spec::{Platform as SpecPlatform, SpecFile};

use crate::gateway::{BuildInfo, Gateway};
use crate::llb::{self, Platform};
use crate::lower::{self, LowerEnv};

/// Runs the frontend (the image's entrypoint) and exits the process: tokio's stdin reader
/// would otherwise keep it alive after `Return`.
/// The build argument naming the build secret with registry credentials.
pub const REGISTRY_SECRET_ARG: &str = "KPBUILD_REGISTRY_SECRET";

pub fn main_entry(tool_binary: &str) -> ! {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    let code = runtime.block_on(run(tool_binary));
    std::process::exit(code)
}

async fn run(tool_binary: &str) -> i32 {
    let info = BuildInfo::from_env();
    let mut gw = match Gateway::connect(info).await {
        Ok(g) => g,
        Err(e) => {
            eprintln!("kpbuild frontend: {e}");
            return 1;
        }
    };
    let outcome = build(&mut gw, tool_binary).await;
    let returned = match outcome {
        Ok(Output::Single(id)) => gw.return_ref(Some(id), HashMap::new()).await,
        Ok(Output::PerPlatform(refs)) => gw.return_refs(refs, HashMap::new()).await,
        Err(message) => gw.return_error(&message).await,
    };
    match returned {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("kpbuild frontend: {e}");
            1
        }
    }
}

enum Output {
    Single(String),
    PerPlatform(Vec<(String, String)>),
}

const DEFAULT_SPEC: &str = "Dockerfile.bundle";

async fn build(gw: &mut Gateway, tool_binary: &str) -> Result<Output, String> {
    let opts = gw.info.opts.clone();
    // `--build-arg KPBUILD_DEBUG=caps`: what this BuildKit offers, as the build's error.
    if opts.get("build-arg:KPBUILD_DEBUG").map(String::as_str) == Some("caps") {
        let inputs = gw.inputs().await.map_err(|e| e.message())?;
        return Err(format!(
            "kpbuild debug: inputs: {:?}\nLLB caps: {}\ngateway caps: {}\noptions: {:?}",
            inputs.keys().collect::<Vec<_>>(),
            gw.info
                .llb_caps
                .iter()
                .cloned()
                .collect::<Vec<_>>()
                .join(" "),
            gw.info
                .api_caps
                .iter()
                .cloned()
                .collect::<Vec<_>>()
                .join(" "),
            opts
        ));
    }
    let session = gw.info.session_id.clone();
    let filename = opts
        .get("filename")
        .cloned()
        .unwrap_or_else(|| DEFAULT_SPEC.to_string());
    let inputs = gw.inputs().await.map_err(|e| e.message())?;
    let source = ContextSource::from_opts(&opts, &session, &inputs);

    // The spec: the `dockerfile` local source, or inside the uploaded context.
    let (spec_state, spec_path) = source.spec_state(&filename);
    let def = llb::marshal(&spec_state).map_err(|e| e.to_string())?;
    let spec_ref = gw
        .solve(def.definition)
        .await
        .map_err(|e| format!("reading {filename}: {}", e.message()))?;
    let text = gw
        .read_file(&spec_ref, &spec_path)
        .await
        .map_err(|e| format!("reading {filename}: {}", e.message()))?;
    let text = String::from_utf8(text).map_err(|_| format!("{filename} is not UTF-8 text"))?;
    let spec_name = spec_path
        .rsplit('/')
        .next()
        .unwrap_or(&spec_path)
        .to_string();
    let spec = SpecFile::parse(&text, &spec_name).map_err(|e| e.to_string())?;
    let spec_sha256 = hex::encode(sha2::Sha256::digest(text.as_bytes()));

    // The inputs the plan reads, from the build context.
    let ctx = read_context(gw, &source, &context_inputs(&spec.spec)).await?;

    let platforms = match opts.get("platform").filter(|p| !p.is_empty()) {
        Some(list) => list
            .split(',')
            .map(|p| {
                SpecPlatform::parse(p.trim()).ok_or_else(|| {
                    format!("--platform {p}: kpbuild builds linux/amd64, linux/arm64, …")
                })
            })
            .collect::<Result<Vec<_>, _>>()?,
        None => vec![],
    };
    let target = opts.get("target").filter(|t| !t.is_empty()).cloned();
    // `--build-arg KPBUILD_REGISTRY_SECRET=ID`: registry credentials come from the build
    // secret ID (`--secret id=ID,src=…/config.json`); not a variable.
    let registry_secret = opts
        .get(&format!("build-arg:{REGISTRY_SECRET_ARG}"))
        .filter(|v| !v.is_empty())
        .cloned();
    // Build arguments are extra variables, but for kpbuild's own `KPBUILD_*` settings.
    let extra_vars: Vec<String> = opts
        .iter()
        .filter_map(|(k, v)| k.strip_prefix("build-arg:").map(|name| (name, v)))
        .filter(|(name, _)| !name.starts_with("KPBUILD_"))
        .map(|(name, v)| format!("{name}={v}"))
        .collect();
    let distros: Vec<String> = opts
        .get("build-arg:KPBUILD_DISTROS")
        .map(|d| {
            d.split(',')
                .map(|s| s.trim().to_string())
                .filter(|s| !s.is_empty())
                .collect()
        })
        .unwrap_or_default();
    let plan_opts = PlanOptions {
        extra_vars,
        platforms,
        targets: target.iter().cloned().collect(),
        distros,
    };
    let plan = plan::plan(&spec, &ctx, &plan_opts).map_err(|e| e.to_string())?;

    let worker = gw.info.worker_platform.clone().map(|(os, arch)| Platform {
        os,
        architecture: arch,
        variant: String::new(),
    });
    let worker = worker.unwrap_or_else(|| Platform::linux("amd64"));
    let tool_image = opts
        .get("source")
        .cloned()
        .ok_or("BuildKit did not pass the frontend image (`source` option); run through `# syntax=` or kpbuild build")?;
    let registry_mirrors: Vec<String> = spec
        .spec
        .registry_mirrors
        .iter()
        .map(|m| format!("{}={}", m.from, m.to))
        .collect();
    let mirrors: Vec<Mirror> = registry_mirrors
        .iter()
        .filter_map(|m| m.parse().ok())
        .collect();

    // Pin every image to the digest its tag has now: its op is cached until upstream moves.
    let mut digests = BTreeMap::new();
    for p in &plan.platforms {
        for m in &p.modules {
            let sources: Vec<&String> = match &m.work {
                Work::Images { images } => images.iter().map(|i| &i.source).collect(),
                Work::Compose(c) => c.archives.iter().map(|a| &a.source).collect(),
                _ => continue,
            };
            for source in sources {
                if digests.contains_key(source) {
                    continue;
                }
                let r = ImageRef::parse(source).map_err(|e| e.to_string())?;
                let digest = match &r.digest {
                    Some(d) => d.to_string(),
                    None => {
                        let at = image_ref::fetch_location(&r, &mirrors);
                        let tag = r.tag.clone().unwrap_or_else(|| "latest".into());
                        let pb_platform = Platform::linux(p.platform.arch.image_arch());
                        let (d, _) = gw
                            .resolve_image(&format!("{at}:{tag}"), &pb_platform.to_pb_platform())
                            .await
                            .map_err(|e| {
                                format!(
                                    "module `{}`: image {source} (from {at}:{tag}) for {}: {}",
                                    m.name,
                                    p.platform,
                                    e.message()
                                )
                            })?;
                        if !d.starts_with("sha256:") {
                            return Err(format!(
                                "module `{}`: image {source} (from {at}:{tag}): BuildKit resolved no manifest digest ({d:?})",
                                m.name
                            ));
                        }
                        d
                    }
                };
                digests.insert(source.clone(), digest);
            }
        }
    }

    // The build context, for modules that copy from it: only the directories they name.
    let context_dirs: Vec<String> = spec
        .spec
        .modules
        .values()
        .filter_map(|m| match m {
            kpbuild_modules::spec::Module::Compose(c) => c.installer.clone(),
            kpbuild_modules::spec::Module::Dockerfile(d) => Some(d.context.clone()),
            _ => None,
        })
        .collect();
    let context = (!context_dirs.is_empty()).then(|| source.context_state(&context_dirs));

    // Dockerfile modules: a nested solve through BuildKit's own Dockerfile frontend, per platform.
    let mut dockerfiles = BTreeMap::new();
    for p in &plan.platforms {
        for m in &p.modules {
            let Work::Dockerfile(d) = &m.work else {
                continue;
            };
            let dir = d.context.trim_matches('/').to_string();
            let ctx = llb::FileOp::on(None)
                .copy(
                    context
                        .as_ref()
                        .expect("dockerfile contexts are in context_dirs"),
                    &format!("/{dir}/"),
                    "/",
                    llb::CopyOptions {
                        contents_only: true,
                        create_parents: true,
                        ..Default::default()
                    },
                )
                .named(format!("{}: Dockerfile context {dir}", m.name))
                .result();
            let def = llb::marshal(&ctx).map_err(|e| e.to_string())?.definition;
            let mut fopts = HashMap::new();
            fopts.insert("filename".to_string(), d.dockerfile.clone());
            fopts.insert("platform".to_string(), p.platform.to_string());
            for (k, v) in &d.build_args {
                fopts.insert(format!("build-arg:{k}"), v.clone());
            }
            let mut inputs = HashMap::new();
            inputs.insert("context".to_string(), def.clone());
            inputs.insert("dockerfile".to_string(), def);
            let (result, metadata) = gw
                .solve_frontend("dockerfile.v0", fopts, inputs)
                .await
                .map_err(|e| {
                    format!(
                        "module `{}` ({}): the Dockerfile build failed: {}",
                        m.name,
                        p.platform,
                        e.message()
                    )
                })?;
            let result = result.ok_or_else(|| {
                format!("module `{}`: BuildKit returned no definition for the Dockerfile build (it needs the proto.refarray cap)", m.name)
            })?;
            let config = metadata.get("containerimage.config").cloned().unwrap_or_else(|| {
                serde_json::to_vec(&serde_json::json!({"architecture": p.platform.arch.image_arch(), "os": "linux", "config": {}})).expect("json")
            });
            dockerfiles.insert(
                (m.name.clone(), p.platform.arch.image_arch().to_string()),
                (result, config),
            );
        }
    }

    let env = LowerEnv {
        tool_image,
        tool_binary: tool_binary.to_string(),
        worker_platform: worker,
        merge_op: gw.info.has_llb_cap("mergeop"),
        digests,
        registry_mirrors,
        context,
        dockerfiles,
        registry_secret,
    };
    // BuildKit refuses host networking before any op runs, with a bare "network.host is not
    // allowed" that never reaches the frontend; say beforehand, as a vertex in the progress
    // output, why it is needed.
    let loopback: std::collections::BTreeSet<String> = plan
        .platforms
        .iter()
        .flat_map(|p| p.modules.iter())
        .filter_map(|m| {
            if let Work::Images { images } = &m.work {
                Some(images)
            } else {
                None
            }
        })
        .flatten()
        .filter_map(|i| {
            i.fetch
                .split('/')
                .next()
                .filter(|h| lower::is_loopback_registry(h))
                .map(str::to_string)
        })
        .collect();
    if !loopback.is_empty() {
        let hosts = loopback.into_iter().collect::<Vec<_>>().join(", ");
        let note = llb::FileOp::on(None)
            .mkfile("/note", 0o644, "host network")
            .named(format!(
                "note: images come from {hosts} on this machine: the sync ops use the host's network \
                 (docker build --network host, or kpbuild build)"
            ))
            .result();
        let def = llb::marshal(&note).map_err(|e| e.to_string())?;
        let id = gw.solve(def.definition).await.map_err(|e| e.message())?;
        // Solved refs are lazy: reading the file makes the vertex run and show.
        gw.read_file(&id, "/note").await.map_err(|e| e.message())?;
    }

    // What to return: one module, the manifest, or the bundle (every module and the manifest).
    let module_target = target
        .as_deref()
        .filter(|t| *t != plan::BUNDLE_TARGET && *t != plan::LOCK_TARGET);
    let lock_only = target.as_deref() == Some(plan::LOCK_TARGET);
    let lock_params = lower::LockParams {
        bundle: spec.spec.name.clone(),
        version: spec.spec.version.clone(),
        spec_file: spec_name.clone(),
        spec_sha256: spec_sha256.clone(),
    };
    let mut results = Vec::new();
    for p in &plan.platforms {
        let modules = lower::lower_platform(p, &env).map_err(|e| e.to_string())?;
        if modules.is_empty() {
            return Err(format!("nothing to build for {}", p.platform));
        }
        let state = if module_target.is_some() {
            modules
                .into_iter()
                .next()
                .map(|(_, s)| s)
                .expect("one module")
        } else {
            let lock =
                lower::lock_op(p, &modules, &lock_params, &env).map_err(|e| e.to_string())?;
            if lock_only {
                lock
            } else {
                let names: Vec<String> = modules.iter().map(|(n, _)| n.clone()).collect();
                let mut states: Vec<llb::State> = modules.into_iter().map(|(_, s)| s).collect();
                states.push(lock);
                lower::merge_trees(
                    states,
                    &format!("bundle [{}]: {} + lock", p.platform, names.join(" + ")),
                    &env,
                )
            }
        };
        let def = llb::marshal(&state).map_err(|e| e.to_string())?;
        let id = gw
            .solve(def.definition)
            .await
            .map_err(|e| explain_solve_error(&e.message()))?;
        results.push((p.platform.to_string(), id));
    }
    if results.len() == 1 {
        Ok(Output::Single(results.remove(0).1))
    } else {
        Ok(Output::PerPlatform(results))
    }
}

fn local_attrs(session: &str, name: &str, include: &[String]) -> BTreeMap<String, String> {
    let mut attrs = BTreeMap::new();
    attrs.insert("local.session".into(), session.to_string());
    attrs.insert("local.sharedkeyhint".into(), name.to_string());
    if !include.is_empty() {
        attrs.insert(
            "local.includepattern".into(),
            serde_json::to_string(include).expect("json"),
        );
    }
    attrs
}

/// Where the build context comes from.
#[derive(Clone, Debug)]
pub enum ContextSource {
    /// `docker build` / buildx: the client's session syncs the `context` and `dockerfile`
    /// local sources.
    Local { session: String },
    /// A context uploaded as a tar through the Engine API (`kpbuild build`): the daemon passes
    /// a one-shot URL of it (`context=http://build-context-…`); the spec is inside.
    Tar { url: String },
    /// States handed over as frontend inputs (the Dockerfile frontend forwarding through
    /// `# syntax=` passes the context it already loaded: the one-shot URL is spent).
    Inputs {
        context: llb::State,
        dockerfile: llb::State,
    },
}

impl ContextSource {
    pub fn from_opts(
        opts: &BTreeMap<String, String>,
        session: &str,
        inputs: &HashMap<String, bollard_buildkit_proto::pb::Definition>,
    ) -> ContextSource {
        let state = |name: &str| inputs.get(name).and_then(llb::from_definition);
        if let Some(context) = state("context") {
            let dockerfile = state("dockerfile").unwrap_or_else(|| context.clone());
            return ContextSource::Inputs {
                context,
                dockerfile,
            };
        }
        match opts.get("context") {
            Some(url) if url.starts_with("http://") || url.starts_with("https://") => {
                ContextSource::Tar { url: url.clone() }
            }
            _ => ContextSource::Local {
                session: session.to_string(),
            },
        }
    }

    /// The uploaded tar, unpacked. The URL answers once, and the Dockerfile frontend that
    /// forwarded here through `# syntax=` has fetched it already: the source op is encoded
    /// byte for byte as it encodes it, so BuildKit shares that vertex instead of fetching again.
    fn unpacked(url: &str) -> llb::State {
        let tar = llb::http_go_encoded(url, "context");
        llb::FileOp::on(None)
            .copy(
                &tar,
                "/context",
                "/",
                llb::CopyOptions {
                    unpack: true,
                    allow_wildcard: true,
                    ..Default::default()
                },
            )
            .named("unpack build context")
            .result()
    }

    /// The state holding the spec, and the spec's path in it.
    pub fn spec_state(&self, filename: &str) -> (llb::State, String) {
        match self {
            ContextSource::Local { session } => {
                let name = filename.rsplit('/').next().unwrap_or(filename).to_string();
                let state = llb::local(
                    "dockerfile",
                    local_attrs(session, "dockerfile", std::slice::from_ref(&name)),
                )
                .named(format!("load spec {name}"));
                (state, name)
            }
            ContextSource::Tar { url } => (
                Self::unpacked(url),
                filename.trim_start_matches("./").to_string(),
            ),
            ContextSource::Inputs { dockerfile, .. } => (
                dockerfile.clone(),
                filename.trim_start_matches("./").to_string(),
            ),
        }
    }

    /// The build context restricted to `include` (paths or directories; all when empty).
    pub fn context_state(&self, include: &[String]) -> llb::State {
        match self {
            ContextSource::Local { session } => {
                llb::local("context", local_attrs(session, "context", include))
                    .named("load build context")
            }
            ContextSource::Tar { url } => Self::unpacked(url),
            ContextSource::Inputs { context, .. } => context.clone(),
        }
    }
}

/// Go's `os.ModeDir` in fsutil's `Stat.mode`.
const MODE_DIR: u32 = 1 << 31;

/// Reads the named paths (files or directories, recursively) of the build context into memory.
async fn read_context(
    gw: &mut Gateway,
    source: &ContextSource,
    inputs: &[String],
) -> Result<MemSource, String> {
    let mut mem = MemSource::new("build context");
    if inputs.is_empty() {
        return Ok(mem);
    }
    let ctx = source.context_state(inputs);
    let def = llb::marshal(&ctx).map_err(|e| e.to_string())?;
    let id = gw
        .solve(def.definition)
        .await
        .map_err(|e| format!("reading the build context: {}", e.message()))?;
    let mut files = 0usize;
    for input in inputs {
        let input = input
            .trim_start_matches("./")
            .trim_end_matches('/')
            .to_string();
        // A directory lists; a file does not (then it is read); a missing path is left for the
        // plan to report with its spec position.
        let mut stack = match gw.read_dir(&id, &input).await {
            Ok(_) => vec![input.clone()],
            Err(_) => {
                if let Ok(data) = gw.read_file(&id, &input).await {
                    mem.insert(&input, String::from_utf8_lossy(&data).into_owned());
                }
                continue;
            }
        };
        while let Some(dir) = stack.pop() {
            mem.insert_dir(&dir);
            let entries = gw.read_dir(&id, &dir).await.map_err(|e| e.message())?;
            for e in entries {
                let name = e.path.rsplit('/').next().unwrap_or(&e.path).to_string();
                let path = format!("{dir}/{name}");
                if e.mode & MODE_DIR != 0 {
                    stack.push(path);
                } else {
                    files += 1;
                    if files > 10_000 {
                        return Err("the build context inputs hold more than 10000 files; point vars.kubespray at a kubespray checkout".into());
                    }
                    let data = gw
                        .read_file(&id, &path)
                        .await
                        .map_err(|e| format!("reading {path}: {}", e.message()))?;
                    mem.insert(&path, String::from_utf8_lossy(&data).into_owned());
                }
            }
        }
    }
    Ok(mem)
}

/// Turns BuildKit's terse refusals into what to do.
fn explain_solve_error(message: &str) -> String {
    if message.contains("network.host is not allowed") {
        return format!(
            "{message}\n  an image is fetched from a registry on this machine (127.0.0.1/localhost), which needs the \
             host's network: run `docker build --network host …` (or `kpbuild build`, which asks for it)"
        );
    }
    message.to_string()
}

impl Platform {
    fn to_pb_platform(&self) -> bollard_buildkit_proto::pb::Platform {
        bollard_buildkit_proto::pb::Platform {
            architecture: self.architecture.clone(),
            os: self.os.clone(),
            variant: self.variant.clone(),
            ..Default::default()
        }
    }
}
