//! Module kinds: one file each (`files`, `images`, `os_packages`, `dockerfile`, `compose`),
//! owning the kind's spec (the `kind:` block of `Dockerfile.bundle`), its validation, its plan
//! (the [`Work`] of one platform), its entries in the bundle manifest, the build-context paths
//! it reads, and the answers other code asks of a module. The frontend's lowering of each kind
//! lives in `frontend/src/kinds/` under the same names.
//!
//! Every question is a method of `ModuleSpec` (asked of a spec) or [`ModuleWork`] (asked of
//! planned work) with no default, reached through the exhaustive matches of
//! `Module::kind` and [`Work::kind`]: a new kind fails to compile until it answers them all.

pub mod compose;
pub mod dockerfile;
pub mod files;
pub mod images;
pub mod os_packages;

use std::cell::RefCell;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::lock::{Artifact, Lock, LockError, Section, SectionOf};
use crate::plan::{PlanError, PlanOptions};
use crate::spec::{ListSelection, SpecError, SpecFile};
use kpbuild_ansible::kubespray::{Kubespray, ListError};
use kpbuild_ansible::vars::VarSet;
use kpbuild_oci::image_ref::{FetchLocation, ImageRef, Mirror};
use kpbuild_oci::platform::{Arch, Platform};
use kpbuild_paths::source::FileSource;

pub use compose::{ArchiveWork, ComposeModule, ComposeWork};
pub use dockerfile::{DockerfileModule, DockerfileWork};
pub use files::{ExtraFile, FileWork, FilesModule, FilesWork, PinWork};
pub use images::{ImageWork, ImagesModule, ImagesWork};
pub use os_packages::{Distro, DistroWork, OsPackagesModule, OsPackagesWork, PackageManager};

/// The sections of the bundle manifest, in the order `kubeplay.lock.json` holds them: each
/// kind's own (its entry type, beside its spec), then the artifacts any kind may add.
/// `kpbuild verify` checks them in this order; a new kind with entries of its own adds its
/// section here.
pub static SECTIONS: &[&dyn Section] = &[
    &SectionOf::<files::FileEntry>::new(),
    &SectionOf::<images::ImageEntry>::new(),
    &SectionOf::<os_packages::manifest::PackageEntry>::new(),
    &SectionOf::<os_packages::manifest::SkippedPackages>::new(),
    &SectionOf::<Artifact>::new(),
];

/// A module of the spec. `kind` selects the variant.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(tag = "kind", rename_all = "kebab-case", deny_unknown_fields)]
pub enum Module {
    Files(FilesModule),
    Images(ImagesModule),
    OsPackages(OsPackagesModule),
    Dockerfile(DockerfileModule),
    Compose(ComposeModule),
}

impl Module {
    /// The kind's answers about this module.
    pub(crate) fn kind(&self) -> &dyn ModuleSpec {
        match self {
            Module::Files(m) => m,
            Module::Images(m) => m,
            Module::OsPackages(m) => m,
            Module::Dockerfile(m) => m,
            Module::Compose(m) => m,
        }
    }

    /// Every kind as `kind:` names it, in the order of [`Module`]'s variants: read from
    /// `Module`'s own deserializer (the names it would have accepted for an unknown kind), so
    /// no second list of kinds is kept anywhere.
    pub fn kinds() -> &'static [&'static str] {
        /// A deserializer error that keeps the variant names an unknown variant was checked
        /// against.
        #[derive(Debug)]
        struct Expected(Option<&'static [&'static str]>);
        impl std::fmt::Display for Expected {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("probing the module kinds")
            }
        }
        impl std::error::Error for Expected {}
        impl serde::de::Error for Expected {
            fn custom<T: std::fmt::Display>(_: T) -> Self {
                Expected(None)
            }
            fn unknown_variant(_: &str, expected: &'static [&'static str]) -> Self {
                Expected(Some(expected))
            }
        }
        static KINDS: std::sync::OnceLock<&'static [&'static str]> = std::sync::OnceLock::new();
        KINDS.get_or_init(|| {
            let probe = serde::de::value::MapDeserializer::<_, Expected>::new(std::iter::once((
                "kind", "",
            )));
            match Module::deserialize(probe) {
                Err(Expected(Some(kinds))) => kinds,
                _ => unreachable!("an empty `kind` is no module kind"),
            }
        })
    }
}

/// One module's work on one platform.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum Work {
    Files(FilesWork),
    Images(ImagesWork),
    OsPackages(OsPackagesWork),
    Dockerfile(DockerfileWork),
    Compose(ComposeWork),
}

impl Work {
    /// The kind's answers about this work.
    pub fn kind(&self) -> &dyn ModuleWork {
        match self {
            Work::Files(w) => w,
            Work::Images(w) => w,
            Work::OsPackages(w) => w,
            Work::Dockerfile(w) => w,
            Work::Compose(w) => w,
        }
    }
}

/// What every kind answers about its spec.
pub(crate) trait ModuleSpec {
    /// Checks what the types cannot (paths inside the context, names, rules across keys);
    /// errors point at the spec's line.
    fn validate(&self, name: &str, v: &Validator<'_>) -> Result<(), SpecError>;
    /// The build-context paths (files or directories) planning reads.
    fn plan_inputs(&self) -> Vec<String>;
    /// The build-context directories the build copies from (LLB, not planning).
    fn build_inputs(&self) -> Vec<String>;
    /// Whether the bundle for `platform` holds this module.
    fn builds_for(&self, platform: &Platform) -> bool;
    /// The module's work on one platform.
    fn plan(&self, cx: &PlanCx<'_>) -> Result<Work, PlanError>;
}

/// What every kind answers about its planned work.
pub trait ModuleWork {
    /// The images whose tags are resolved to digests before lowering: `(reference, where it
    /// is fetched from)`.
    fn images_to_resolve(&self) -> Vec<(&ImageRef, &FetchLocation)>;
    /// The registries on this machine the module's ops fetch from: those ops run on the
    /// host's network ([`FetchLocation::needs_host_network`]).
    fn loopback_registries(&self) -> Vec<String>;
    /// A build through another BuildKit frontend the module needs before it can be lowered.
    fn nested_build(&self) -> Option<NestedBuild<'_>>;
    /// Adds the module's entries to the bundle manifest, reading its built tree at `tree`
    /// (laid out from the bundle root).
    fn lock(&self, tree: &Path, lock: &mut Lock) -> Result<(), LockError>;
}

/// A solve through BuildKit's Dockerfile frontend (`dockerfile.v0`), per platform.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NestedBuild<'a> {
    /// The build context: a directory of the bundle's build context.
    pub context: &'a str,
    /// The Dockerfile, relative to `context`.
    pub dockerfile: &'a str,
    pub build_args: &'a std::collections::BTreeMap<String, String>,
}

/// Spec validation helpers for the kinds: positions and context-path checks.
pub(crate) struct Validator<'a> {
    pub(crate) file: &'a SpecFile,
}

impl Validator<'_> {
    /// The spec's version (for `{version}` in paths).
    pub fn version(&self) -> &str {
        &self.file.spec.version
    }

    /// Whether `vars.kubespray` is set.
    pub(crate) fn has_kubespray(&self) -> bool {
        self.file.spec.vars.kubespray.is_some()
    }

    /// An error at the first line of `key:` under the `modules` block.
    pub fn invalid(&self, key: Option<&str>, message: String, hint: &str) -> SpecError {
        self.file.invalid("modules", key, message, hint)
    }

    /// A path into the build context: relative, without `..` (BuildKit sends only the
    /// context).
    pub(crate) fn context_path(&self, key: &str, value: &str) -> Result<(), SpecError> {
        self.file.context_path("modules", key, value)
    }

    /// Checks that `module` may take lists from kubespray with `sel`.
    pub(crate) fn kubespray_for(
        &self,
        module: &str,
        sel: ListSelection,
        what: &str,
    ) -> Result<(), SpecError> {
        if sel != ListSelection::None && !self.has_kubespray() {
            return Err(self.invalid(
                Some(module),
                format!(
                    "module `{module}` takes {what} from kubespray, but `vars.kubespray` is not set"
                ),
                "set `vars: {kubespray: <dir in the build context>}` or `from-kubespray: none`",
            ));
        }
        Ok(())
    }
}

/// What a kind plans with: the spec, the platform, the context, and kubespray's lists (read
/// once per platform, when a module asks).
pub(crate) struct PlanCx<'a> {
    pub spec_file: &'a SpecFile,
    /// The spec's name in errors.
    pub spec_name: &'a str,
    pub module: &'a str,
    pub platform: &'a Platform,
    pub arch: Arch,
    pub ctx: &'a dyn FileSource,
    pub opts: &'a PlanOptions,
    pub registry_mirrors: &'a [Mirror],
    pub(crate) base_vars: &'a VarSet,
    pub(crate) kubespray: &'a RefCell<Option<Kubespray>>,
}

impl PlanCx<'_> {
    /// kubespray's lists for this platform, or `None` when the module takes none.
    pub fn kubespray(&self, sel: ListSelection) -> Result<Option<Kubespray>, PlanError> {
        if sel == ListSelection::None {
            return Ok(None);
        }
        if self.kubespray.borrow().is_none() {
            let dir = self
                .spec_file
                .spec
                .vars
                .kubespray
                .clone()
                .unwrap_or_default();
            let k = Kubespray::from_vars(
                &self.ctx.display(&dir),
                self.base_vars.clone(),
                self.arch,
                &self.opts.extra_vars,
            )
            .map_err(|e| self.list_err(e))?;
            *self.kubespray.borrow_mut() = Some(k);
        }
        Ok(self.kubespray.borrow().clone())
    }

    /// A list error of this module and platform.
    pub(crate) fn list_err(&self, source: ListError) -> PlanError {
        PlanError::List {
            spec: self.spec_name.to_string(),
            module: self.module.to_string(),
            platform: Box::new(self.platform.clone()),
            source: Box::new(source),
        }
    }

    /// Reads a build-context file the module names.
    pub fn read(&self, path: &str) -> Result<String, PlanError> {
        self.ctx
            .read_to_string(path)
            .map_err(|source| PlanError::Read {
                spec: self.spec_name.to_string(),
                module: self.module.to_string(),
                path: self.ctx.display(path),
                source,
            })
    }

    /// Parses an image reference the module names; `from` says where it came from.
    pub fn image(&self, raw: &str, from: String) -> Result<ImageRef, PlanError> {
        ImageRef::parse(raw).map_err(|source| PlanError::Image {
            spec: self.spec_name.to_string(),
            module: self.module.to_string(),
            reference: raw.to_string(),
            from,
            source: Box::new(source),
        })
    }

    /// `{arch}` replaced by the platform's architecture.
    pub(crate) fn for_arch(&self, s: &str) -> String {
        s.replace("{arch}", self.arch.image_arch())
    }
}

/// The hosts (`host[:port]`) on this machine among `hosts`, sorted, once each.
pub(crate) fn loopback_hosts<'a>(hosts: impl IntoIterator<Item = &'a str>) -> Vec<String> {
    let mut hosts: Vec<String> = hosts
        .into_iter()
        .filter(|h| kpbuild_oci::image_ref::is_loopback_registry(h))
        .map(str::to_string)
        .collect();
    hosts.sort();
    hosts.dedup();
    hosts
}
