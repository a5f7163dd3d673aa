//! What the frontend asks of BuildKit, as an interface: solve a definition, read a file or a
//! directory of a result, resolve an image's digest, solve through another frontend; with what
//! BuildKit says about itself ([`BuildInfo`]) and how a call fails ([`GatewayError`]). The gRPC
//! gateway ([`crate::gateway::Gateway`]) implements it over stdio; the flow in [`crate::run`]
//! runs against it, so it is unit-tested with a fake (as BuildKit's own frontends run against
//! `BuildFunc(ctx, Client)`).

use std::collections::{BTreeMap, BTreeSet, HashMap};

use bollard_buildkit_proto::pb;

use crate::llb::Platform;

/// Errors talking to BuildKit.
#[derive(Debug, thiserror::Error)]
pub enum GatewayError {
    #[error("cannot connect to BuildKit over stdio: {0}")]
    Connect(#[from] tonic::transport::Error),
    #[error("BuildKit: {call}: {message}")]
    Call { call: &'static str, message: String },
}

impl GatewayError {
    /// The message BuildKit returned.
    pub fn message(&self) -> String {
        match self {
            GatewayError::Call { message, .. } => message.clone(),
            other => other.to_string(),
        }
    }
}

/// What BuildKit told the frontend about itself and the build (the gRPC gateway reads it from
/// the environment BuildKit starts the frontend with, [`crate::gateway`]).
#[derive(Clone, Debug, Default)]
pub struct BuildInfo {
    /// Frontend options (`filename`, `target`, `platform`, `build-arg:*`, `source`, …).
    pub opts: BTreeMap<String, String>,
    pub session_id: String,
    /// LLB capabilities the daemon supports (`mergeop`, `exec.meta.network`, …).
    pub llb_caps: BTreeSet<String>,
    /// Gateway API capabilities (`proto.refarray`, `readdir`, …).
    pub api_caps: BTreeSet<String>,
    /// The default platform of the worker (`linux/amd64`).
    pub worker_platform: Option<Platform>,
    /// BuildKit's version (`v0.32.2`), when the daemon reports it with its workers.
    pub buildkit_version: Option<String>,
}

impl BuildInfo {
    pub fn has_llb_cap(&self, cap: &str) -> bool {
        self.llb_caps.contains(cap)
    }
}

/// A solved result, as BuildKit names it.
pub type RefId = String;

/// One entry of a directory listing.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DirEntry {
    /// The entry's name (no directory part).
    pub name: String,
    pub is_dir: bool,
}

/// The frontend's view of BuildKit.
// `async fn` in a public trait cannot promise `Send` futures; the frontend runs on a
// single-threaded runtime and never needs them.
#[allow(async_fn_in_trait)]
pub trait Bridge {
    /// What BuildKit said about itself and the build (options, caps, session, worker).
    fn info(&self) -> &BuildInfo;
    /// The inputs the caller handed over (`context`, `dockerfile`), as definitions.
    async fn inputs(&mut self) -> Result<HashMap<String, pb::Definition>, GatewayError>;
    /// Solves a definition; the result's ref.
    async fn solve(&mut self, definition: pb::Definition) -> Result<RefId, GatewayError>;
    /// Solves each definition and waits for its result to be computed (Solve's `evaluate`), at
    /// most `window` at once; the first failure is the error. What is computed stays in the
    /// build: a later solve of a definition holding the same ops finds them done.
    async fn evaluate(
        &mut self,
        definitions: Vec<pb::Definition>,
        window: usize,
    ) -> Result<(), GatewayError>;
    /// Solves through another frontend (`dockerfile.v0`): the result's definition and
    /// metadata (`containerimage.config`, …).
    async fn solve_frontend(
        &mut self,
        frontend: &str,
        opts: HashMap<String, String>,
        inputs: HashMap<String, pb::Definition>,
    ) -> Result<(Option<pb::Definition>, HashMap<String, Vec<u8>>), GatewayError>;
    /// A whole file of a result.
    async fn read_file(&mut self, r: &RefId, path: &str) -> Result<Vec<u8>, GatewayError>;
    /// A directory of a result.
    async fn read_dir(&mut self, r: &RefId, path: &str) -> Result<Vec<DirEntry>, GatewayError>;
    /// An image's (root) manifest digest and the platform's config, asked of the registry.
    async fn resolve_image(
        &mut self,
        reference: &str,
        platform: &Platform,
    ) -> Result<(String, Vec<u8>), GatewayError>;
}
