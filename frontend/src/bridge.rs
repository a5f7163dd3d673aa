//! What the frontend asks of BuildKit, as an interface: solve a definition, read a file or a
//! directory of a result, resolve an image's digest, solve through another frontend. The gRPC
//! gateway ([`crate::gateway::Gateway`]) implements it over stdio; the flow in [`crate::run`]
//! runs against it, so it is unit-tested with a fake (as BuildKit's own frontends run against
//! `BuildFunc(ctx, Client)`).

use std::collections::HashMap;

use bollard_buildkit_proto::pb;

use crate::gateway::{BuildInfo, GatewayError};
use crate::llb::Platform;

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
