//! Lowering a module plan into LLB, the parts every kind shares: what lowering needs
//! ([`LowerEnv`]), its errors, the dispatch to each kind's lowering (`kinds/`), worker-job ops
//! ([`job_exec`]), merging trees, and the bundle manifest op. Each module's state is laid out
//! from the bundle root ([`kpbuild_bundle::layout`]).

use std::collections::BTreeMap;

use kpbuild_bundle::jobs::{BundleManifestJob, JOB_DIR, JOB_FILE, Job, ModuleTree};
use kpbuild_bundle::layout;
use kpbuild_bundle::plan::PlatformPlan;
use kpbuild_oci::image_ref::{ImageRef, Mirror};
use kpbuild_oci::platform::Arch;
use kpbuild_oci::registry_layout::Digest;

use crate::kinds::{KindError, lower_work};
use crate::llb::{self, CopyOptions, Exec, FileOp, Network, Platform, State};

/// What lowering needs beyond the plan.
#[derive(Clone, Debug)]
pub struct LowerEnv {
    /// The frontend image (the `source` option): exec ops run the kpbuild binary from it.
    pub tool_image: String,
    /// Path of the kpbuild binary inside `tool_image`.
    pub tool_binary: String,
    /// The worker's own platform: exec ops run the (native) kpbuild binary on it, whatever the
    /// bundle's target platform.
    pub worker_platform: Platform,
    /// `MergeOp` is available (BuildKit ≥ 0.10); otherwise trees are merged with copies.
    pub merge_op: bool,
    /// BuildKit v0.8 ([`crate::caps::Features::old_flightcontrol`]): exec ops run with
    /// [`OWN_HOSTNAME`] (and the flow paces them, [`crate::pace`]); otherwise with BuildKit's
    /// default hostname.
    pub old_flightcontrol: bool,
    /// Resolved manifest digests by image reference: pins each op to what the tag pointed at
    /// while planning.
    pub digests: BTreeMap<ImageRef, Digest>,
    /// Registry mirrors (passed to the sync engine).
    pub registry_mirrors: Vec<Mirror>,
    /// The build context, for modules that take files from it (installer, Dockerfile contexts).
    pub context: Option<State>,
    /// Results of the nested Dockerfile builds.
    pub dockerfiles: NestedResults,
    /// The id of a build secret holding a Docker config file (`docker build --secret
    /// id=ID,src=~/.docker/config.json`): mounted into every sync op as its `DOCKER_CONFIG`.
    /// Only the id is in the LLB and the cache keys.
    pub registry_secret: Option<String>,
    /// Fetch-file ops cut a response that sends nothing for this many seconds (and retry).
    pub read_timeout_secs: u64,
}

/// The hostname of exec ops on BuildKit v0.8 ([`LowerEnv::old_flightcontrol`]). There each
/// exec op writes its resolv.conf and then, for BuildKit's default hostname, its hosts file
/// under one flightcontrol key shared by every exec op of the daemon; the op's second call
/// finds its own first one just finished and is told to retry, and dozens of ops at once feed
/// each other such retries until some give up. With a hostname of its own the op's hosts file
/// is written for it alone, outside that key. Outputs do not depend on it.
pub const OWN_HOSTNAME: &str = "kpbuild";

/// The default of [`LowerEnv::read_timeout_secs`] (`KPBUILD_READ_TIMEOUT` changes it).
pub const DEFAULT_READ_TIMEOUT_SECS: u64 = 120;

/// Results of the nested Dockerfile builds, by (module, architecture): the result's definition
/// and its image config.
pub type NestedResults =
    BTreeMap<(String, Arch), (bollard_buildkit_proto::pb::Definition, Vec<u8>)>;

/// Where the registry credentials secret is mounted in sync ops (`DOCKER_CONFIG` is its
/// directory).
pub const REGISTRY_SECRET_DIR: &str = "/run/kpbuild-registry-auth";

/// Errors lowering a plan.
#[derive(Debug, thiserror::Error)]
pub enum LowerError {
    #[error("image {0} has no resolved digest (internal: resolve images before lowering)")]
    Unresolved(String),
    #[error("module `{module}` ({kind}) is not supported by this frontend yet")]
    Unsupported { module: String, kind: &'static str },
    /// What only one kind's lowering can fail with ([`KindError`]).
    #[error(transparent)]
    Kind(#[from] KindError),
    #[error("the worker's platform {0} is not one kpbuild can run its tools on")]
    WorkerArch(String),
    #[error("platform {0} is not one kpbuild builds bundles for")]
    Platform(String),
}

/// The architecture of a bundle platform (the plan only holds such platforms).
pub fn target_arch(platform: &Platform) -> Result<Arch, LowerError> {
    platform
        .arch()
        .ok_or_else(|| LowerError::Platform(platform.to_string()))
}

impl LowerEnv {
    /// `source` pinned to the digest it had while planning (a spec's own digest is kept).
    pub fn pinned(&self, source: &ImageRef) -> Result<ImageRef, LowerError> {
        let digest = self
            .digests
            .get(source)
            .ok_or_else(|| LowerError::Unresolved(source.to_string()))?;
        Ok(source.pinned(digest))
    }

    /// The kpbuild image on the worker's platform: the root of every job op.
    pub fn tool(&self) -> State {
        llb::image(&self.tool_image, &self.worker_platform)
    }

    /// An exec op of `args` on `root`, as every exec op of a build starts: with its own
    /// hostname where the builder needs it ([`LowerEnv::old_flightcontrol`]).
    pub fn exec<I, S>(&self, root: State, args: I) -> Exec
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        let exec = Exec::new(root, args);
        if self.old_flightcontrol {
            exec.hostname(OWN_HOSTNAME)
        } else {
            exec
        }
    }
}

/// The state of each module of one platform's plan, in plan order.
pub fn lower_platform(
    plan: &PlatformPlan,
    env: &LowerEnv,
) -> Result<Vec<(String, State)>, LowerError> {
    plan.modules
        .iter()
        .map(|m| {
            Ok((
                m.name.clone(),
                lower_work(&m.work, &m.name, &plan.platform, env)?,
            ))
        })
        .collect()
}

/// An exec op running `kpbuild worker` on `job`: the frontend image's binary, natively on the
/// worker, with a read-only root and the job file mounted at [`JOB_DIR`]. Callers add their
/// mounts, network and name.
pub fn job_exec(job: &Job, env: &LowerEnv) -> Exec {
    let file = FileOp::on(None)
        .mkfile(&format!("/{JOB_FILE}"), 0o644, job.to_json())
        .result();
    env.exec(env.tool(), Job::argv(&env.tool_binary))
        .readonly_root()
        .platform(&env.worker_platform)
        .mount_readonly(JOB_DIR, file, "")
}

/// The network an op fetching from a registry needs.
pub fn network_for(host_network: bool) -> Network {
    if host_network {
        Network::Host
    } else {
        Network::Default
    }
}

/// One directory tree from several: a `MergeOp` where available, else copies in order.
pub fn merge_trees(states: Vec<State>, name: &str, env: &LowerEnv) -> State {
    if states.len() == 1 {
        return states.into_iter().next().expect("one state");
    }
    if env.merge_op {
        return llb::merge(states).named(name);
    }
    let mut op = FileOp::on(None).named(name);
    for s in &states {
        op = op.copy(s, "/", "/", contents());
    }
    op.result()
}

/// Copy options for a directory's contents into place, creating parents.
pub fn contents() -> CopyOptions {
    CopyOptions {
        contents_only: true,
        create_parents: true,
        ..Default::default()
    }
}

/// What the manifest op records besides the module trees.
#[derive(Clone, Debug)]
pub struct LockParams {
    pub bundle: String,
    pub version: String,
    pub spec_file: String,
    pub spec_sha256: String,
    /// The spec's `vars.kubespray`.
    pub kubespray: Option<String>,
    /// The SBOMs' creation time (`SOURCE_DATE_EPOCH`, else the spec's).
    pub source_date_epoch: Option<u64>,
}

/// The bundle manifest (`kubeplay.lock.json`): a bundle-manifest job that reads every module's
/// tree (mounted read-only, not merged) and the platform's plan, checks every file against its
/// pin, and records files, images, packages and artifacts; the bundle's SBOMs, made from the
/// manifest, are written beside it (so every export carries them).
pub fn lock_op(
    plan: &PlatformPlan,
    modules: &[(String, State)],
    params: &LockParams,
    env: &LowerEnv,
) -> State {
    let tree_dir = |name: &str| format!("/in/{name}");
    let job = Job::BundleManifest(BundleManifestJob {
        plan: plan.clone(),
        bundle: params.bundle.clone(),
        version: params.version.clone(),
        spec_file: params.spec_file.clone(),
        spec_sha256: params.spec_sha256.clone(),
        kubespray: params.kubespray.clone(),
        source_date_epoch: params.source_date_epoch,
        trees: modules
            .iter()
            .map(|(name, _)| ModuleTree {
                module: name.clone(),
                dir: tree_dir(name).into(),
            })
            .collect(),
        out: format!("/out/{}", layout::LOCK_FILE).into(),
    });
    let mut exec = job_exec(&job, env);
    for (name, state) in modules {
        exec = exec.mount_readonly(&tree_dir(name), state.clone(), "");
    }
    exec.mount_scratch("/out")
        .network(Network::None)
        .named(format!(
            "{} [{}]: write {}",
            layout::LOCK_TARGET,
            plan.platform,
            layout::LOCK_FILE
        ))
        .run()
        .mount("/out")
}
