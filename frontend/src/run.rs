//! The frontend's flow: read `Dockerfile.bundle` and the inputs it names from the build
//! context, plan, resolve image tags to digests, run the nested Dockerfile builds, lower to
//! LLB, solve, return. It runs against [`Bridge`] (the gateway in production, a fake in the
//! tests below); options are parsed once ([`FrontendOptions`]).

use std::collections::{BTreeMap, HashMap};

use serde::Serialize;
use sha2::Digest as _;

use kpbuild_bundle::layout::LOCK_TARGET;
use kpbuild_bundle::plan::{self, Plan, PlanError, build_inputs, context_inputs};
use kpbuild_bundle::spec::{SpecError, SpecFile};
use kpbuild_oci::document::{self, ContainerConfig, ImageConfig, PlatformObject, RootFs};
use kpbuild_oci::image_ref::MirrorError;
use kpbuild_oci::platform::{Arch, Platform};
use kpbuild_oci::registry_layout::Digest;

use crate::bridge::{Bridge, BuildInfo, GatewayError, RefId};
use crate::caps::{self, CapsError};
use crate::context::{ContextSource, read_context};
use crate::gateway::Gateway;
use crate::llb::{self, MarshalError};
use crate::lower::{self, LockParams, LowerEnv, LowerError};
use crate::options::{FrontendOptions, OptionsError, Target};
use crate::pace;

/// Why a build failed: what the user reads.
#[derive(Debug, thiserror::Error)]
pub enum FrontendError {
    #[error(transparent)]
    Options(#[from] OptionsError),
    #[error(transparent)]
    Caps(#[from] CapsError),
    #[error("reading {file}: {message}")]
    ReadSpec { file: String, message: String },
    #[error("{0} is not UTF-8 text")]
    SpecNotUtf8(String),
    #[error(transparent)]
    Spec(#[from] SpecError),
    #[error("{0}")]
    Context(String),
    #[error(transparent)]
    Plan(#[from] PlanError),
    #[error("{spec}: registry mirror: {source}")]
    Mirror { spec: String, source: MirrorError },
    #[error(
        "BuildKit did not pass the frontend image (`source` option); run through `# syntax=` or kpbuild build"
    )]
    NoSource,
    #[error("module `{module}`: image {image} (from {at}) for {platform}: {message}")]
    Resolve {
        module: String,
        image: String,
        at: String,
        platform: Box<Platform>,
        message: String,
    },
    #[error(
        "module `{module}`: image {image} (from {at}): BuildKit resolved no manifest digest ({digest:?})"
    )]
    NoDigest {
        module: String,
        image: String,
        at: String,
        digest: String,
    },
    #[error("module `{module}` ({platform}): the Dockerfile build failed: {message}")]
    Dockerfile {
        module: String,
        platform: Platform,
        message: String,
    },
    #[error(
        "module `{0}`: BuildKit returned no definition for the Dockerfile build (it needs the proto.refarray cap)"
    )]
    DockerfileNoResult(String),
    #[error(transparent)]
    Lower(#[from] LowerError),
    #[error("nothing to build for {0}")]
    Nothing(Platform),
    #[error("{0}")]
    Solve(String),
    #[error(transparent)]
    Marshal(#[from] MarshalError),
    #[error("{0}")]
    Gateway(String),
    #[error("{0}")]
    Debug(String),
}

impl From<GatewayError> for FrontendError {
    fn from(e: GatewayError) -> Self {
        FrontendError::Gateway(e.message())
    }
}

/// What the build returns: one tree, or one per platform.
#[derive(Debug, PartialEq, Eq)]
pub enum Output {
    Single(RefId),
    /// `(platform, ref)` for each platform.
    PerPlatform(Vec<(Platform, RefId)>),
}

/// Runs the frontend (the image's entrypoint) and exits the process: tokio's stdin reader
/// would otherwise keep it alive after `Return`.
pub fn main_entry(tool_binary: &str) -> ! {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    let code = runtime.block_on(run(tool_binary));
    std::process::exit(code)
}

async fn run(tool_binary: &str) -> i32 {
    let mut gw = match Gateway::connect(BuildInfo::from_env()).await {
        Ok(g) => g,
        Err(e) => {
            eprintln!("kpbuild frontend: {e}");
            return 1;
        }
    };
    let returned = match build(&mut gw, tool_binary).await {
        Ok(Output::Single(id)) => gw.return_ref(Some(id), HashMap::new()).await,
        Ok(Output::PerPlatform(refs)) => {
            let result = per_platform_result(&refs);
            gw.return_refs(result.refs, result.metadata).await
        }
        Err(e) => gw.return_error(&e.to_string()).await,
    };
    match returned {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("kpbuild frontend: {e}");
            1
        }
    }
}

/// The whole build against `gw`; `tool_binary` is the kpbuild binary's path in the frontend
/// image.
pub async fn build<B: Bridge>(gw: &mut B, tool_binary: &str) -> Result<Output, FrontendError> {
    let opts = FrontendOptions::parse(&gw.info().opts)?;
    if opts.debug_caps {
        return Err(debug_caps(gw).await);
    }
    let features = caps::decide(gw.info())?;
    let inputs = gw.inputs().await?;
    let source = ContextSource::from_opts(&gw.info().opts, &gw.info().session_id, &inputs);
    let (spec, spec_sha256) = read_spec(gw, &source, &opts.filename).await?;
    let ctx = read_context(gw, &source, &context_inputs(&spec.spec))
        .await
        .map_err(FrontendError::Context)?;
    let plan = plan::plan(&spec, &ctx, &opts.plan_options())?;

    let tool_image = opts.source.clone().ok_or(FrontendError::NoSource)?;
    let registry_mirrors =
        spec.spec
            .registry_mirrors()
            .map_err(|source| FrontendError::Mirror {
                spec: spec.path.display().to_string(),
                source,
            })?;
    let digests = resolve_digests(gw, &plan).await?;
    // The build context, for modules that copy from it: only the directories they name.
    let dirs = build_inputs(&spec.spec);
    let context = (!dirs.is_empty()).then(|| source.context_state(&dirs));
    let dockerfiles = nested_builds(gw, &plan, context.as_ref(), opts.no_cache).await?;
    let env = LowerEnv {
        tool_image,
        tool_binary: tool_binary.to_string(),
        worker_platform: gw
            .info()
            .worker_platform
            .clone()
            .unwrap_or_else(|| Platform::linux(Arch::Amd64)),
        merge_op: features.merge_op,
        old_flightcontrol: features.old_flightcontrol,
        digests,
        registry_mirrors,
        context,
        dockerfiles,
        registry_secret: opts.registry_secret.clone(),
        read_timeout_secs: opts
            .read_timeout_secs
            .unwrap_or(lower::DEFAULT_READ_TIMEOUT_SECS),
    };
    announce_host_network(gw, &plan).await?;
    let lock = LockParams {
        bundle: spec.spec.name.clone(),
        version: spec.spec.version.clone(),
        spec_file: spec.path.display().to_string(),
        spec_sha256,
        kubespray: spec.spec.vars.kubespray.clone(),
        source_date_epoch: opts.source_date_epoch.or(spec.spec.source_date_epoch),
    };
    solve_targets(gw, &plan, &opts, &env, &lock).await
}

/// `--build-arg KPBUILD_DEBUG=caps`: what this BuildKit offers, as the build's error.
async fn debug_caps<B: Bridge>(gw: &mut B) -> FrontendError {
    let inputs = match gw.inputs().await {
        Ok(i) => i,
        Err(e) => return e.into(),
    };
    let info = gw.info();
    let join = |caps: &std::collections::BTreeSet<String>| {
        caps.iter().cloned().collect::<Vec<_>>().join(" ")
    };
    FrontendError::Debug(format!(
        "kpbuild debug: inputs: {:?}\nLLB caps: {}\ngateway caps: {}\noptions: {:?}\ndaemon: {}",
        inputs.keys().collect::<Vec<_>>(),
        join(&info.llb_caps),
        join(&info.api_caps),
        info.opts,
        caps::daemon_name(info)
    ))
}

/// The spec (from the `dockerfile` local source, or inside the uploaded context) and the
/// sha256 of its text.
async fn read_spec<B: Bridge>(
    gw: &mut B,
    source: &ContextSource,
    filename: &str,
) -> Result<(SpecFile, String), FrontendError> {
    let read_err = |e: GatewayError| FrontendError::ReadSpec {
        file: filename.to_string(),
        message: e.message(),
    };
    let (state, path) = source.spec_state(filename);
    let spec_ref = gw
        .solve(llb::marshal(&state)?.definition)
        .await
        .map_err(read_err)?;
    let bytes = gw.read_file(&spec_ref, &path).await.map_err(read_err)?;
    let text =
        String::from_utf8(bytes).map_err(|_| FrontendError::SpecNotUtf8(filename.to_string()))?;
    let name = path.rsplit('/').next().unwrap_or(&path);
    let spec = SpecFile::parse(&text, name)?;
    Ok((spec, hex::encode(sha2::Sha256::digest(text.as_bytes()))))
}

/// Pins every image to the digest its tag has now: its op is cached until upstream moves.
async fn resolve_digests<B: Bridge>(
    gw: &mut B,
    plan: &Plan,
) -> Result<BTreeMap<kpbuild_oci::image_ref::ImageRef, Digest>, FrontendError> {
    let mut digests = BTreeMap::new();
    for p in &plan.platforms {
        for m in &p.modules {
            for (image, fetch) in m.work.kind().images_to_resolve() {
                if digests.contains_key(image) {
                    continue;
                }
                let digest = match &image.digest {
                    Some(d) => d.clone(),
                    None => {
                        let at = format!(
                            "{fetch}:{}",
                            image.tag.clone().unwrap_or_else(|| "latest".into())
                        );
                        let (d, _) = gw.resolve_image(&at, &p.platform).await.map_err(|e| {
                            FrontendError::Resolve {
                                module: m.name.clone(),
                                image: image.to_string(),
                                at: at.clone(),
                                platform: Box::new(p.platform.clone()),
                                message: e.message(),
                            }
                        })?;
                        d.parse().map_err(|_| FrontendError::NoDigest {
                            module: m.name.clone(),
                            image: image.to_string(),
                            at,
                            digest: d,
                        })?
                    }
                };
                digests.insert(image.clone(), digest);
            }
        }
    }
    Ok(digests)
}

/// The builds modules need through BuildKit's own Dockerfile frontend, per platform: the
/// result's definition and image config by (module, architecture).
/// The options of a nested build through BuildKit's Dockerfile frontend. With `no_cache`
/// (`kpbuild build --no-cache`) the Dockerfile's own steps run again too: its `no-cache`
/// option (empty: every stage), as `docker build --no-cache` gives it.
fn nested_frontend_opts(
    nested: &kpbuild_bundle::kinds::NestedBuild<'_>,
    platform: &Platform,
    no_cache: bool,
) -> HashMap<String, String> {
    let mut fopts = HashMap::new();
    fopts.insert("filename".to_string(), nested.dockerfile.to_string());
    fopts.insert("platform".to_string(), platform.to_string());
    for (k, v) in nested.build_args {
        fopts.insert(format!("build-arg:{k}"), v.clone());
    }
    if no_cache {
        fopts.insert("no-cache".to_string(), String::new());
    }
    fopts
}

async fn nested_builds<B: Bridge>(
    gw: &mut B,
    plan: &Plan,
    context: Option<&llb::State>,
    no_cache: bool,
) -> Result<lower::NestedResults, FrontendError> {
    let mut out = BTreeMap::new();
    for p in &plan.platforms {
        let arch = lower::target_arch(&p.platform)?;
        for m in &p.modules {
            let Some(nested) = m.work.kind().nested_build() else {
                continue;
            };
            let Some(context) = context else {
                return Err(LowerError::Unsupported {
                    module: m.name.clone(),
                    kind: "dockerfile (no build context)",
                }
                .into());
            };
            let dir = nested.context.trim_matches('/').to_string();
            let ctx = llb::FileOp::on(None)
                .copy(context, &format!("/{dir}/"), "/", lower::contents())
                .named(format!("{}: Dockerfile context {dir}", m.name))
                .result();
            let mut def = llb::marshal(&ctx)?.definition;
            if no_cache {
                llb::ignore_cache(&mut def);
            }
            let fopts = nested_frontend_opts(&nested, &p.platform, no_cache);
            let inputs = HashMap::from([
                ("context".to_string(), def.clone()),
                ("dockerfile".to_string(), def),
            ]);
            let (result, metadata) = gw
                .solve_frontend("dockerfile.v0", fopts, inputs)
                .await
                .map_err(|e| FrontendError::Dockerfile {
                    module: m.name.clone(),
                    platform: p.platform.clone(),
                    message: e.message(),
                })?;
            let result = result.ok_or_else(|| FrontendError::DockerfileNoResult(m.name.clone()))?;
            let config = metadata
                .get("containerimage.config")
                .cloned()
                .unwrap_or_else(|| fallback_config(arch));
            out.insert((m.name.clone(), arch), (result, config));
        }
    }
    Ok(out)
}

/// The image config of a nested Dockerfile build whose result carries none: the platform and
/// nothing else ([`bare_config`]; the image-archive job writes its rootfs and history).
fn fallback_config(arch: Arch) -> Vec<u8> {
    bare_config(&Platform::linux(arch))
}

/// An image config naming `platform` and nothing else: an empty `config` object, no layers.
fn bare_config(platform: &Platform) -> Vec<u8> {
    document::to_bytes(
        &ImageConfig::new(platform, RootFs::layers(vec![])).with_config(ContainerConfig::default()),
    )
}

/// BuildKit refuses host networking before any op runs, with a bare "network.host is not
/// allowed" that never reaches the frontend; say beforehand, as a vertex in the progress
/// output, why it is needed.
async fn announce_host_network<B: Bridge>(gw: &mut B, plan: &Plan) -> Result<(), FrontendError> {
    let hosts = plan.loopback_registries();
    if hosts.is_empty() {
        return Ok(());
    }
    let note = llb::FileOp::on(None)
        .mkfile("/note", 0o644, "host network")
        .named(format!(
            "note: images or files come from {} on this machine: the ops fetching them use the \
             host's network (docker build --network host, or kpbuild build)",
            hosts.join(", ")
        ))
        .result();
    let id = gw.solve(llb::marshal(&note)?.definition).await?;
    // Solved refs are lazy: reading the file makes the vertex run and show.
    gw.read_file(&id, "/note").await?;
    Ok(())
}

/// Solves what the target asks for on every platform: one module, the manifest, or the
/// bundle (every module and the manifest, merged).
async fn solve_targets<B: Bridge>(
    gw: &mut B,
    plan: &Plan,
    opts: &FrontendOptions,
    env: &LowerEnv,
    lock: &LockParams,
) -> Result<Output, FrontendError> {
    let target = &opts.target;
    let mut results = Vec::new();
    for p in &plan.platforms {
        let modules = lower::lower_platform(p, env)?;
        if modules.is_empty() {
            return Err(FrontendError::Nothing(p.platform.clone()));
        }
        let state = match target {
            Target::Module(_) => modules.into_iter().next().map(|(_, s)| s).expect("one"),
            Target::Lock => lower::lock_op(p, &modules, lock, env),
            Target::Bundle => {
                let lock_state = lower::lock_op(p, &modules, lock, env);
                let names: Vec<&str> = modules.iter().map(|(n, _)| n.as_str()).collect();
                let name = format!(
                    "bundle [{}]: {} + {LOCK_TARGET}",
                    p.platform,
                    names.join(" + ")
                );
                let mut states: Vec<llb::State> = modules.iter().map(|(_, s)| s.clone()).collect();
                states.push(lock_state);
                lower::merge_trees(states, &name, env)
            }
        };
        let mut def = llb::marshal(&state)?.definition;
        if opts.no_cache {
            llb::ignore_cache(&mut def);
        }
        let missing = caps::missing_llb_caps(&def, &gw.info().llb_caps);
        if !missing.is_empty() {
            return Err(CapsError {
                daemon: caps::daemon_name(gw.info()),
                missing: missing.iter().map(|c| format!("LLB cap {c}")).collect(),
            }
            .into());
        }
        // BuildKit v0.8: every exec op computed first, a few at once (`pace`); the solve
        // below then finds them done.
        let solve_error = |e: GatewayError| FrontendError::Solve(explain_solve_error(&e.message()));
        let window = opts.exec_window.unwrap_or(pace::WINDOW);
        if env.old_flightcontrol && window > 0 {
            gw.evaluate(pace::exec_closures(&def), window)
                .await
                .map_err(solve_error)?;
        }
        let id = gw.solve(def).await.map_err(solve_error)?;
        results.push((p.platform.clone(), id));
    }
    if results.len() == 1 {
        Ok(Output::Single(results.remove(0).1))
    } else {
        Ok(Output::PerPlatform(results))
    }
}

/// The refs map of a multi-platform result and its metadata, as BuildKit's exporters and buildx
/// read them: `refs.platforms` (BuildKit's `exptypes.Platforms`) lists each platform with the
/// `ID` that is its key in the refs map and its OCI platform object, and each platform gets an
/// image config naming it (`containerimage.config/<ID>`), so an image exporter writes an index
/// whose entries and configs agree.
pub fn per_platform_result(refs: &[(Platform, RefId)]) -> PerPlatformResult {
    let mut metadata = HashMap::new();
    let mut platforms = Vec::new();
    for (p, _) in refs {
        let id = p.to_string();
        metadata.insert(format!("containerimage.config/{id}"), bare_config(p));
        platforms.push(PlatformEntry {
            id,
            platform: p.into(),
        });
    }
    metadata.insert(
        "refs.platforms".to_string(),
        document::to_bytes(&Platforms { platforms }),
    );
    let refs = refs
        .iter()
        .map(|(p, r)| (p.to_string(), r.clone()))
        .collect();
    PerPlatformResult { refs, metadata }
}

/// BuildKit's `exptypes.Platforms`, the `refs.platforms` metadata of a multi-platform result:
/// `{"Platforms":[{"ID":…,"Platform":{…}}]}`.
#[derive(Serialize)]
struct Platforms {
    #[serde(rename = "Platforms")]
    platforms: Vec<PlatformEntry>,
}

/// One platform of [`Platforms`]: its key in the refs map and its OCI platform object.
#[derive(Serialize)]
struct PlatformEntry {
    #[serde(rename = "ID")]
    id: String,
    #[serde(rename = "Platform")]
    platform: PlatformObject,
}

/// A multi-platform result as returned to BuildKit ([`per_platform_result`]).
#[derive(Debug)]
pub struct PerPlatformResult {
    /// `(key, ref)`: each key is a platform's `ID` in the `refs.platforms` metadata.
    pub refs: Vec<(String, RefId)>,
    pub metadata: HashMap<String, Vec<u8>>,
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bridge::DirEntry;
    use crate::kinds::tests::{execs, jobs};
    use bollard_buildkit_proto::pb;
    use kpbuild_bundle::jobs::Job;

    /// A BuildKit that holds a build context in memory and records what it was asked.
    struct Fake {
        info: BuildInfo,
        files: BTreeMap<String, Vec<u8>>,
        solved: Vec<pb::Definition>,
        /// What `evaluate` was given: the window and the definitions, per call.
        evaluated: Vec<(usize, Vec<pb::Definition>)>,
        resolved: Vec<String>,
        missing_images: Vec<String>,
        solve_error: Option<String>,
    }

    const SPEC: &str = "# syntax=kpbuild/frontend:dev
name: b
version: v1
platforms: [linux/amd64, linux/arm64]
vars:
  files: [vars/extra.yml]
registry-mirrors:
  - from: docker.io
    to: 127.0.0.1:5000/docker.io
modules:
  files:
    kind: files
    from-kubespray: none
    extra:
      - url: https://get.helm.sh/helm-{arch}.tar.gz
  images:
    kind: images
    from-kubespray: none
    extra: [docker.io/library/registry:2.8.1, quay.io/x/y:1]
  compose:
    kind: compose
    nginx-image: docker.io/library/nginx:1.27
    registry-image: docker.io/library/registry:2.8.1
";

    fn fake(opts: &[(&str, &str)]) -> Fake {
        let mut all = BTreeMap::from([("source".to_string(), "kpbuild/frontend:dev".to_string())]);
        for (k, v) in opts {
            all.insert(k.to_string(), v.to_string());
        }
        Fake {
            info: BuildInfo {
                opts: all,
                session_id: "s".into(),
                worker_platform: Some(Platform::linux(Arch::Amd64)),
                ..crate::caps::tests::v08_info()
            },
            files: BTreeMap::from([
                ("Dockerfile.bundle".to_string(), SPEC.as_bytes().to_vec()),
                ("vars/extra.yml".to_string(), b"a: 1\n".to_vec()),
            ]),
            solved: vec![],
            evaluated: vec![],
            resolved: vec![],
            missing_images: vec![],
            solve_error: None,
        }
    }

    fn call_err(call: &'static str, message: &str) -> GatewayError {
        GatewayError::Call {
            call,
            message: message.to_string(),
        }
    }

    impl Bridge for Fake {
        fn info(&self) -> &BuildInfo {
            &self.info
        }
        async fn inputs(&mut self) -> Result<HashMap<String, pb::Definition>, GatewayError> {
            Ok(HashMap::new())
        }
        async fn solve(&mut self, definition: pb::Definition) -> Result<RefId, GatewayError> {
            let has_exec = llb::decode(&definition)
                .iter()
                .any(|(_, o)| matches!(o.op, Some(pb::op::Op::Exec(_))));
            if has_exec && let Some(e) = &self.solve_error {
                return Err(call_err("Solve", e));
            }
            self.solved.push(definition);
            Ok(format!("ref{}", self.solved.len()))
        }
        async fn evaluate(
            &mut self,
            definitions: Vec<pb::Definition>,
            window: usize,
        ) -> Result<(), GatewayError> {
            if let Some(e) = &self.solve_error {
                return Err(call_err("Solve", e));
            }
            self.evaluated.push((window, definitions));
            Ok(())
        }
        async fn solve_frontend(
            &mut self,
            _frontend: &str,
            _opts: HashMap<String, String>,
            _inputs: HashMap<String, pb::Definition>,
        ) -> Result<(Option<pb::Definition>, HashMap<String, Vec<u8>>), GatewayError> {
            Err(call_err("Solve", "no Dockerfile frontend here"))
        }
        async fn read_file(&mut self, _r: &RefId, path: &str) -> Result<Vec<u8>, GatewayError> {
            if path == "/note" {
                return Ok(b"host network".to_vec());
            }
            self.files
                .get(path)
                .cloned()
                .ok_or_else(|| call_err("ReadFile", "no such file"))
        }
        async fn read_dir(
            &mut self,
            _r: &RefId,
            path: &str,
        ) -> Result<Vec<DirEntry>, GatewayError> {
            let prefix = format!("{path}/");
            let mut out: Vec<DirEntry> = self
                .files
                .keys()
                .filter_map(|k| k.strip_prefix(&prefix))
                .map(|rest| match rest.split_once('/') {
                    Some((dir, _)) => DirEntry {
                        name: dir.into(),
                        is_dir: true,
                    },
                    None => DirEntry {
                        name: rest.into(),
                        is_dir: false,
                    },
                })
                .collect();
            out.dedup();
            if out.is_empty() {
                return Err(call_err("ReadDir", "not a directory"));
            }
            Ok(out)
        }
        async fn resolve_image(
            &mut self,
            reference: &str,
            _platform: &Platform,
        ) -> Result<(String, Vec<u8>), GatewayError> {
            self.resolved.push(reference.to_string());
            if self.missing_images.iter().any(|m| m == reference) {
                return Err(call_err("ResolveImageConfig", "not found"));
            }
            Ok((format!("sha256:{}", "1".repeat(64)), vec![]))
        }
    }

    fn run_build(f: &mut Fake) -> Result<Output, FrontendError> {
        tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap()
            .block_on(build(f, "/kpbuild"))
    }

    fn ops_of(def: &pb::Definition) -> Vec<pb::Op> {
        llb::decode(def).into_iter().map(|(_, o)| o).collect()
    }

    fn notes(f: &Fake) -> usize {
        f.solved
            .iter()
            .filter(|d| {
                d.metadata.values().any(|m| {
                    m.description.get("llb.customname").is_some_and(|n| {
                        n.starts_with("note: images or files come from 127.0.0.1:5000")
                    })
                })
            })
            .count()
    }

    #[test]
    fn no_cache_reaches_the_nested_dockerfile_build() {
        let args = BTreeMap::from([("V".to_string(), "1".to_string())]);
        let nested = kpbuild_bundle::kinds::NestedBuild {
            context: "examples/img",
            dockerfile: "Dockerfile",
            build_args: &args,
        };
        let platform = Platform::linux(Arch::Arm64);
        let cached = nested_frontend_opts(&nested, &platform, false);
        assert_eq!(
            cached.get("platform").map(String::as_str),
            Some("linux/arm64")
        );
        assert_eq!(cached.get("build-arg:V").map(String::as_str), Some("1"));
        assert!(!cached.contains_key("no-cache"));
        let fresh = nested_frontend_opts(&nested, &platform, true);
        assert_eq!(fresh.get("no-cache").map(String::as_str), Some(""));
    }

    #[test]
    fn on_buildkit_v08_every_exec_op_is_computed_first_a_few_at_once() {
        let exec_count = |def: &pb::Definition| {
            ops_of(def)
                .iter()
                .filter(|o| matches!(o.op, Some(pb::op::Op::Exec(_))))
                .count()
        };
        let mut f = fake(&[]);
        run_build(&mut f).unwrap();
        // One evaluate per platform, before that platform's solve, every exec op of the
        // definition once, each with its own hostname.
        assert_eq!(f.evaluated.len(), 2);
        let bundle: Vec<&pb::Definition> = f.solved.iter().filter(|d| exec_count(d) > 0).collect();
        assert_eq!(bundle.len(), 2);
        for ((window, defs), full) in f.evaluated.iter().zip(&bundle) {
            assert_eq!(*window, pace::WINDOW);
            assert_eq!(defs.len(), exec_count(full));
            for e in execs(&ops_of(full)) {
                assert_eq!(e.meta.unwrap().hostname, crate::lower::OWN_HOSTNAME);
            }
        }
        // The window is the build argument's; 0 paces nothing.
        let mut wide = fake(&[("build-arg:KPBUILD_EXEC_WINDOW", "9")]);
        run_build(&mut wide).unwrap();
        assert!(wide.evaluated.iter().all(|(w, _)| *w == 9));
        let mut unpaced = fake(&[("build-arg:KPBUILD_EXEC_WINDOW", "0")]);
        run_build(&mut unpaced).unwrap();
        assert!(unpaced.evaluated.is_empty());
        // A builder with v0.9's fix: the same definitions, solved as they are.
        let mut fixed = fake(&[]);
        fixed.info.llb_caps.insert(caps::SINCE_V09_LLB_CAP.into());
        run_build(&mut fixed).unwrap();
        assert!(fixed.evaluated.is_empty());
        let last = fixed.solved.last().unwrap();
        assert!(
            execs(&ops_of(last))
                .iter()
                .all(|e| e.meta.clone().unwrap().hostname.is_empty())
        );
    }

    #[test]
    fn the_bundle_for_every_platform_with_the_manifest() {
        let mut f = fake(&[]);
        let out = run_build(&mut f).unwrap();
        let Output::PerPlatform(refs) = out else {
            panic!("{out:?}")
        };
        let platforms: Vec<String> = refs.iter().map(|(p, _)| p.to_string()).collect();
        assert_eq!(platforms, ["linux/amd64", "linux/arm64"]);
        // Tags were resolved once each, through the mirror.
        assert!(
            f.resolved
                .contains(&"127.0.0.1:5000/docker.io/library/registry:2.8.1".into())
        );
        assert!(f.resolved.contains(&"quay.io/x/y:1".into()));
        assert_eq!(notes(&f), 1, "the host network is announced once");
        let last = ops_of(f.solved.last().unwrap());
        let kinds: Vec<&'static str> = jobs(&last).iter().map(Job::name).collect();
        for want in ["sync-image", "save-image", "bundle-manifest"] {
            assert!(kinds.contains(&want), "{kinds:?}");
        }
        let Some(Job::BundleManifest(lock)) = jobs(&last)
            .into_iter()
            .find(|j| matches!(j, Job::BundleManifest(_)))
        else {
            panic!()
        };
        assert_eq!(lock.plan.platform.to_string(), "linux/arm64");
        assert_eq!(lock.trees.len(), 3);
        assert_eq!(lock.spec_sha256, hex::encode(sha2::Sha256::digest(SPEC)));
        assert_eq!((lock.kubespray, lock.source_date_epoch), (None, None));
    }

    /// The manifest job carries the SBOMs' creation time: the build's SOURCE_DATE_EPOCH,
    /// which is no variable.
    #[test]
    fn source_date_epoch_reaches_the_manifest_job() {
        let mut f = fake(&[
            ("target", "lock"),
            ("platform", "linux/amd64"),
            ("build-arg:SOURCE_DATE_EPOCH", "1700000000"),
        ]);
        run_build(&mut f).unwrap();
        let last = ops_of(f.solved.last().unwrap());
        let Some(Job::BundleManifest(lock)) = jobs(&last)
            .into_iter()
            .find(|j| matches!(j, Job::BundleManifest(_)))
        else {
            panic!()
        };
        assert_eq!(lock.source_date_epoch, Some(1_700_000_000));
    }

    #[test]
    fn one_module_for_one_platform() {
        let mut f = fake(&[("target", "files"), ("platform", "linux/arm64")]);
        let out = run_build(&mut f).unwrap();
        assert_eq!(out, Output::Single(format!("ref{}", f.solved.len())));
        assert_eq!(notes(&f), 0, "files need no host network");
        assert!(f.resolved.is_empty());
        let ops = ops_of(f.solved.last().unwrap());
        assert!(jobs(&ops).iter().any(|j| matches!(j,
            Job::FetchFile(f) if f.sources == ["https://get.helm.sh/helm-arm64.tar.gz"])));
    }

    #[test]
    fn compose_alone_asks_for_the_host_network_it_needs() {
        let mut f = fake(&[("target", "compose"), ("platform", "linux/amd64")]);
        run_build(&mut f).unwrap();
        assert_eq!(notes(&f), 1);
        let ops = ops_of(f.solved.last().unwrap());
        assert!(
            execs(&ops)
                .iter()
                .all(|e| e.network == pb::NetMode::Host as i32),
            "both images come from the loopback mirror"
        );
    }

    #[test]
    fn errors_say_what_and_where() {
        let err = |f: &mut Fake| run_build(f).unwrap_err().to_string();
        let e = err(&mut fake(&[("target", "imagez")]));
        assert!(
            e.contains("unknown target `imagez`")
                && e.contains("files, images, compose, lock, bundle"),
            "{e}"
        );
        let e = err(&mut fake(&[("platform", "linux/s390x")]));
        assert!(e.starts_with("--platform linux/s390x:"), "{e}");
        let mut f = fake(&[]);
        f.info.opts.remove("source");
        assert!(matches!(run_build(&mut f), Err(FrontendError::NoSource)));
        let mut f = fake(&[("platform", "linux/amd64")]);
        f.missing_images = vec!["quay.io/x/y:1".into()];
        assert_eq!(
            err(&mut f),
            "module `images`: image quay.io/x/y:1 (from quay.io/x/y:1) for linux/amd64: not found"
        );
        let mut f = fake(&[]);
        f.solve_error = Some("network.host is not allowed".into());
        let e = err(&mut f);
        assert!(e.contains("docker build --network host"), "{e}");
        let mut f = fake(&[]);
        f.files.insert(
            "Dockerfile.bundle".into(),
            SPEC.replace("kind: images", "kind: imagez").into_bytes(),
        );
        let e = err(&mut f);
        assert!(e.starts_with("Dockerfile.bundle:17:"), "{e}");
        let mut f = fake(&[]);
        f.files.remove("Dockerfile.bundle");
        assert_eq!(err(&mut f), "reading Dockerfile.bundle: no such file");
        let mut f = fake(&[]);
        f.files.remove("vars/extra.yml");
        let e = err(&mut f);
        assert!(e.contains("vars/extra.yml"), "{e}");
    }

    #[test]
    fn debug_caps_is_an_error_listing_the_caps() {
        let mut f = fake(&[("build-arg:KPBUILD_DEBUG", "caps")]);
        f.info.llb_caps.insert("mergeop".into());
        let e = run_build(&mut f).unwrap_err().to_string();
        assert!(
            e.starts_with("kpbuild debug: inputs: []\nLLB caps: "),
            "{e}"
        );
        let llb = e.lines().nth(1).unwrap();
        assert!(llb.split(' ').any(|c| c == "mergeop"), "{e}");
        f.info.buildkit_version = Some("v0.32.2".into());
        let e = run_build(&mut f).unwrap_err().to_string();
        assert!(e.ends_with("\ndaemon: BuildKit v0.32.2"), "{e}");
    }

    #[test]
    fn multi_platform_metadata_names_each_ref_with_its_platform() {
        let mut f = fake(&[("target", "files")]);
        let Output::PerPlatform(refs) = run_build(&mut f).unwrap() else {
            panic!("two platforms")
        };
        let PerPlatformResult {
            refs: map,
            metadata: meta,
        } = per_platform_result(&refs);
        let keys: Vec<&str> = map.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(keys, ["linux/amd64", "linux/arm64"]);
        assert_eq!(map[1].1, refs[1].1, "each key keeps its own ref");
        let platforms: serde_json::Value = serde_json::from_slice(&meta["refs.platforms"]).unwrap();
        assert_eq!(
            platforms,
            serde_json::json!({"Platforms": [
                {"ID": "linux/amd64", "Platform": {"architecture": "amd64", "os": "linux"}},
                {"ID": "linux/arm64", "Platform": {"architecture": "arm64", "os": "linux"}},
            ]})
        );
        for (id, arch) in [("linux/amd64", "amd64"), ("linux/arm64", "arm64")] {
            let config: serde_json::Value =
                serde_json::from_slice(&meta[&format!("containerimage.config/{id}")]).unwrap();
            assert_eq!(
                (config["os"].as_str(), config["architecture"].as_str()),
                (Some("linux"), Some(arch))
            );
        }
    }

    /// The metadata's bytes, pinned: BuildKit's image exporter reads them. The configs are
    /// `document::ImageConfig`'s (`config` before `rootfs`, the order of `kpbuild export`'s
    /// configs); the exporter re-marshals a config with its keys sorted, so this order does not
    /// reach an exported image.
    #[test]
    fn multi_platform_metadata_bytes() {
        let refs: Vec<(Platform, RefId)> = ["linux/amd64", "linux/arm/v7"]
            .iter()
            .map(|p| (p.parse().unwrap(), format!("ref-{p}")))
            .collect();
        let meta = per_platform_result(&refs).metadata;
        let text = |k: &str| String::from_utf8(meta[k].clone()).unwrap();
        assert_eq!(meta.len(), 3);
        assert_eq!(
            text("refs.platforms"),
            r#"{"Platforms":[{"ID":"linux/amd64","Platform":{"architecture":"amd64","os":"linux"}},{"ID":"linux/arm/v7","Platform":{"architecture":"arm","os":"linux","variant":"v7"}}]}"#
        );
        assert_eq!(
            text("containerimage.config/linux/amd64"),
            r#"{"architecture":"amd64","os":"linux","config":{},"rootfs":{"type":"layers","diff_ids":[]}}"#
        );
        assert_eq!(
            text("containerimage.config/linux/arm/v7"),
            r#"{"architecture":"arm","os":"linux","variant":"v7","config":{},"rootfs":{"type":"layers","diff_ids":[]}}"#
        );
        assert_eq!(
            String::from_utf8(fallback_config(Arch::Arm64)).unwrap(),
            r#"{"architecture":"arm64","os":"linux","config":{},"rootfs":{"type":"layers","diff_ids":[]}}"#
        );
    }

    fn merges(f: &Fake) -> usize {
        ops_of(f.solved.last().unwrap())
            .iter()
            .filter(|o| matches!(o.op, Some(pb::op::Op::Merge(_))))
            .count()
    }

    #[test]
    fn the_daemon_caps_decide_mergeop() {
        let mut f = fake(&[("platform", "linux/amd64")]);
        run_build(&mut f).unwrap();
        assert_eq!(merges(&f), 0, "BuildKit v0.8 has no mergeop: copies");
        let mut f = fake(&[("platform", "linux/amd64")]);
        f.info.llb_caps.insert("mergeop".into());
        run_build(&mut f).unwrap();
        assert_eq!(
            merges(&f),
            1,
            "the bundle is one MergeOp where the daemon has it"
        );
    }

    #[test]
    fn a_daemon_without_what_kpbuild_needs_is_refused() {
        let mut f = fake(&[]);
        f.info.api_caps.remove("returnmap");
        f.info.buildkit_version = Some("v0.6.4".into());
        let e = run_build(&mut f).unwrap_err().to_string();
        assert!(
            e.starts_with("BuildKit v0.6.4 lacks what kpbuild needs: gateway cap returnmap;"),
            "{e}"
        );
        assert!(f.solved.is_empty(), "refused before anything is solved");
    }
}
