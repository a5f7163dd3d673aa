//! The frontend's options, parsed once into a typed struct (as BuildKit's `dockerui.Config`
//! does for the Dockerfile frontend). They come from `docker build --target/--platform/
//! --build-arg`, `buildctl --opt`, or `kpbuild build`:
//! - `filename`: the spec in the `dockerfile` local source (default `Dockerfile.bundle`);
//! - `target`: a module name, `lock`, or `bundle` (default: every module merged into the bundle);
//! - `platform`: comma-separated platforms (default: the spec's);
//! - `build-arg:NAME=VALUE`: extra variables, like `kpbuild lists -e NAME=VALUE`, except
//!   kpbuild's own `KPBUILD_*` settings:
//!   - `KPBUILD_DISTROS=a,b`: only these distros of the os-packages modules (default: their
//!     `default-distros`, else all; `all`: every distro);
//!   - `KPBUILD_REGISTRY_SECRET=ID`: registry credentials for the sync ops from the build
//!     secret ID, a Docker config file (`--secret id=ID,src=~/.docker/config.json`);
//!   - `KPBUILD_READ_TIMEOUT=SECONDS`: the files module's downloads cut (and retry) a
//!     response that sends nothing for this long (default 120);
//!   - `KPBUILD_EXEC_WINDOW=N`: on BuildKit v0.8, how many exec ops are computed at once
//!     (default [`crate::pace::WINDOW`]; `0`: no pacing, every op at once as on newer
//!     BuildKit);
//!   - `KPBUILD_DEBUG=caps`: fail with what this BuildKit offers;
//!   - `SOURCE_DATE_EPOCH=SECONDS` (what buildx passes from its environment): the creation
//!     time of the bundle's SBOMs (not a variable);
//! - `no-cache` (`docker build --no-cache`): no exec or file op is taken from BuildKit's cache
//!   (sources still are; cache mounts keep their content);
//! - `source`: the frontend image itself (BuildKit passes it).

use std::collections::BTreeMap;

use kpbuild_bundle::layout::{BUNDLE_TARGET, LOCK_TARGET};
use kpbuild_bundle::plan::PlanOptions;
use kpbuild_oci::platform::Platform;

/// The spec's default file name.
pub const DEFAULT_SPEC: &str = "Dockerfile.bundle";
/// The build argument naming the build secret with registry credentials.
pub const REGISTRY_SECRET_ARG: &str = "KPBUILD_REGISTRY_SECRET";
/// The build argument selecting distros.
pub const DISTROS_ARG: &str = "KPBUILD_DISTROS";
/// The build argument setting the downloads' read timeout, in seconds.
pub const READ_TIMEOUT_ARG: &str = "KPBUILD_READ_TIMEOUT";
/// The build argument setting how many exec ops BuildKit v0.8 computes at once.
pub const EXEC_WINDOW_ARG: &str = "KPBUILD_EXEC_WINDOW";
/// The build argument asking for debug output.
pub const DEBUG_ARG: &str = "KPBUILD_DEBUG";
/// The build argument setting the SBOMs' creation time (seconds since the epoch).
pub const SOURCE_DATE_EPOCH_ARG: &str = "SOURCE_DATE_EPOCH";

/// What the build returns.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Target {
    /// Every module and the manifest, merged into the bundle tree.
    Bundle,
    /// The manifest alone.
    Lock,
    /// One module's tree.
    Module(String),
}

/// The frontend's options.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FrontendOptions {
    pub filename: String,
    pub target: Target,
    /// Only these platforms (empty: the spec's).
    pub platforms: Vec<Platform>,
    /// `NAME=VALUE` extra variables.
    pub extra_vars: Vec<String>,
    pub distros: Vec<String>,
    pub registry_secret: Option<String>,
    /// `KPBUILD_READ_TIMEOUT`, in seconds.
    pub read_timeout_secs: Option<u64>,
    /// `KPBUILD_EXEC_WINDOW`: exec ops computed at once on BuildKit v0.8 (0: unpaced).
    pub exec_window: Option<usize>,
    /// `KPBUILD_DEBUG=caps`.
    pub debug_caps: bool,
    /// `SOURCE_DATE_EPOCH`, in seconds.
    pub source_date_epoch: Option<u64>,
    /// The frontend image (exec ops run its kpbuild binary).
    pub source: Option<String>,
    /// `no-cache`: run every exec and file op again.
    pub no_cache: bool,
}

/// An option that cannot be used.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum OptionsError {
    #[error("--platform {0}: kpbuild builds linux/amd64, linux/arm64, linux/arm and linux/ppc64le")]
    Platform(String),
    #[error("--build-arg {READ_TIMEOUT_ARG}={0}: give a whole number of seconds, at least 1")]
    ReadTimeout(String),
    #[error(
        "--build-arg {EXEC_WINDOW_ARG}={0}: give a whole number of exec ops (0 runs them all at once)"
    )]
    ExecWindow(String),
    #[error(
        "--build-arg {SOURCE_DATE_EPOCH_ARG}={0}: give a whole number of seconds since the epoch"
    )]
    SourceDateEpoch(String),
}

impl FrontendOptions {
    /// Parses the options BuildKit passed.
    pub fn parse(opts: &BTreeMap<String, String>) -> Result<FrontendOptions, OptionsError> {
        let get = |k: &str| opts.get(k).filter(|v| !v.is_empty()).cloned();
        let arg = |name: &str| get(&format!("build-arg:{name}"));
        let platforms = match get("platform") {
            Some(list) => list
                .split(',')
                .map(|p| {
                    Platform::parse_bundle(p.trim())
                        .map_err(|_| OptionsError::Platform(p.trim().to_string()))
                })
                .collect::<Result<Vec<_>, _>>()?,
            None => vec![],
        };
        let target = match get("target").as_deref() {
            None | Some(BUNDLE_TARGET) => Target::Bundle,
            Some(LOCK_TARGET) => Target::Lock,
            Some(m) => Target::Module(m.to_string()),
        };
        let extra_vars = opts
            .iter()
            .filter_map(|(k, v)| k.strip_prefix("build-arg:").map(|name| (name, v)))
            .filter(|(name, _)| !name.starts_with("KPBUILD_") && *name != SOURCE_DATE_EPOCH_ARG)
            .map(|(name, v)| format!("{name}={v}"))
            .collect();
        let distros = arg(DISTROS_ARG)
            .map(|d| {
                d.split(',')
                    .map(|s| s.trim().to_string())
                    .filter(|s| !s.is_empty())
                    .collect()
            })
            .unwrap_or_default();
        Ok(FrontendOptions {
            filename: get("filename").unwrap_or_else(|| DEFAULT_SPEC.to_string()),
            target,
            platforms,
            extra_vars,
            distros,
            registry_secret: arg(REGISTRY_SECRET_ARG),
            read_timeout_secs: arg(READ_TIMEOUT_ARG)
                .map(|v| match v.trim().parse::<u64>() {
                    Ok(n) if n > 0 => Ok(n),
                    _ => Err(OptionsError::ReadTimeout(v.clone())),
                })
                .transpose()?,
            exec_window: arg(EXEC_WINDOW_ARG)
                .map(|v| {
                    v.trim()
                        .parse::<usize>()
                        .map_err(|_| OptionsError::ExecWindow(v.clone()))
                })
                .transpose()?,
            debug_caps: arg(DEBUG_ARG).as_deref() == Some("caps"),
            source_date_epoch: arg(SOURCE_DATE_EPOCH_ARG)
                .map(|v| {
                    v.trim()
                        .parse::<u64>()
                        .map_err(|_| OptionsError::SourceDateEpoch(v.clone()))
                })
                .transpose()?,
            source: get("source"),
            no_cache: opts.contains_key("no-cache"),
        })
    }

    /// What to plan.
    pub fn plan_options(&self) -> PlanOptions {
        PlanOptions {
            extra_vars: self.extra_vars.clone(),
            platforms: self.platforms.clone(),
            targets: match &self.target {
                Target::Bundle => vec![],
                Target::Lock => vec![LOCK_TARGET.into()],
                Target::Module(m) => vec![m.clone()],
            },
            distros: self.distros.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn defaults() {
        let o = FrontendOptions::parse(&opts(&[("target", "")])).unwrap();
        assert_eq!(o.filename, "Dockerfile.bundle");
        assert_eq!(o.target, Target::Bundle);
        assert!(o.platforms.is_empty() && o.extra_vars.is_empty() && !o.debug_caps);
        assert_eq!(o.plan_options().targets, Vec::<String>::new());
    }

    #[test]
    fn build_args_targets_and_platforms() {
        let o = FrontendOptions::parse(&opts(&[
            ("filename", "x/Dockerfile.bundle"),
            ("target", "images"),
            ("platform", "linux/amd64, linux/arm64/v8"),
            ("build-arg:kube_version", "1.32.8"),
            ("build-arg:KPBUILD_DISTROS", "debian12, ,debian11"),
            ("build-arg:KPBUILD_REGISTRY_SECRET", "auth"),
            ("build-arg:KPBUILD_DEBUG", "caps"),
            ("build-arg:KPBUILD_READ_TIMEOUT", "5"),
            ("build-arg:SOURCE_DATE_EPOCH", "1700000000"),
            ("source", "kpbuild/frontend:dev"),
        ]))
        .unwrap();
        assert_eq!(o.read_timeout_secs, Some(5));
        assert_eq!(o.source_date_epoch, Some(1_700_000_000));
        assert_eq!(
            FrontendOptions::parse(&opts(&[("build-arg:SOURCE_DATE_EPOCH", "yesterday")])),
            Err(OptionsError::SourceDateEpoch("yesterday".into()))
        );
        assert_eq!(o.exec_window, None);
        let w = |v: &str| {
            FrontendOptions::parse(&opts(&[("build-arg:KPBUILD_EXEC_WINDOW", v)]))
                .map(|o| o.exec_window)
        };
        assert_eq!(w("8"), Ok(Some(8)));
        assert_eq!(w("0"), Ok(Some(0)));
        assert_eq!(w("four"), Err(OptionsError::ExecWindow("four".into())));
        assert_eq!(
            FrontendOptions::parse(&opts(&[("build-arg:KPBUILD_READ_TIMEOUT", "0")])),
            Err(OptionsError::ReadTimeout("0".into()))
        );
        assert_eq!(o.target, Target::Module("images".into()));
        assert_eq!(
            o.platforms
                .iter()
                .map(|p| p.to_string())
                .collect::<Vec<_>>(),
            ["linux/amd64", "linux/arm64"]
        );
        assert_eq!(o.extra_vars, ["kube_version=1.32.8"]);
        assert_eq!(o.distros, ["debian12", "debian11"]);
        assert_eq!(o.registry_secret.as_deref(), Some("auth"));
        assert!(o.debug_caps);
        assert_eq!(o.source.as_deref(), Some("kpbuild/frontend:dev"));
        assert_eq!(o.plan_options().targets, ["images"]);
        let lock = FrontendOptions::parse(&opts(&[("target", "lock")])).unwrap();
        assert_eq!(lock.target, Target::Lock);
    }

    #[test]
    fn bad_platform_is_named() {
        assert_eq!(
            FrontendOptions::parse(&opts(&[("platform", "linux/amd64,linux/s390x")])),
            Err(OptionsError::Platform("linux/s390x".into()))
        );
    }
}
