//! The lowering of each module kind, one file each, named as in `kpbuild_bundle::kinds` (the
//! kind's spec, plan and lock live there). [`lower_work`] is the one exhaustive dispatch: a new
//! kind fails to compile here until it has a lowering. A kind's own lowering errors are
//! variants of [`KindError`], so the shared [`LowerError`] names no kind.

mod compose;
mod dockerfile;
mod files;
mod images;
mod os_packages;

use kpbuild_bundle::kinds::Work;

use crate::llb::{Platform, State};
use crate::lower::{LowerEnv, LowerError};

/// How a kind's work becomes LLB.
pub trait Lower {
    /// The module's tree on `platform`, laid out from the bundle root.
    fn lower(&self, module: &str, platform: &Platform, env: &LowerEnv)
    -> Result<State, LowerError>;
}

/// What one kind's lowering alone can fail with (the shared failures are [`LowerError`]'s).
#[derive(Debug, thiserror::Error)]
pub enum KindError {
    #[error(transparent)]
    OsPackages(#[from] os_packages::ScriptFailed),
}

/// Lowers one module's work.
pub fn lower_work(
    work: &Work,
    module: &str,
    platform: &Platform,
    env: &LowerEnv,
) -> Result<State, LowerError> {
    let kind: &dyn Lower = match work {
        Work::Files(w) => w,
        Work::Images(w) => w,
        Work::OsPackages(w) => w,
        Work::Dockerfile(w) => w,
        Work::Compose(w) => w,
    };
    kind.lower(module, platform, env)
}

#[cfg(test)]
pub(crate) mod tests;
