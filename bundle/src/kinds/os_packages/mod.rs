//! The `os-packages` kind: per distro, an offline package repository (apt `Packages`/`Release`,
//! or yum/dnf `repodata/`) holding the whole dependency closure of the selected package groups,
//! resolved by the distro's own tools on its own base image ([`script`]), plus the client
//! source files under `resources/nginx/repos/`. The package groups file is read by [`groups`].
//! Lowered in `frontend/src/kinds/os_packages.rs`.

pub mod groups;
pub mod manifest;
pub mod script;

use std::path::Path;

use serde::{Deserialize, Serialize};

use super::{ModuleSpec, ModuleWork, NestedBuild, PlanCx, Validator, Work};
use crate::layout;
use crate::lock::{Lock, LockError};
use crate::plan::PlanError;
use crate::spec::{SpecError, is_relative_clean};
use groups::Groups;
use kpbuild_oci::image_ref::{FetchLocation, ImageRef};
use kpbuild_oci::platform::Platform;
use manifest::{SkippedPackages, read_packages_index};

/// The `os-packages` block of a spec.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct OsPackagesModule {
    /// The package groups file in the build context (kubeplay's `packages.yaml` format).
    pub groups_file: String,
    pub distros: Vec<Distro>,
    /// The distros built when none is selected (`KPBUILD_DISTROS`, `--distro`); default: all.
    /// A spec can define distros that only some builders reach (a CI matrix builds each one)
    /// and still build here without arguments.
    #[serde(default)]
    pub default_distros: Vec<String>,
}

/// The distro selection that means every distro of the module, whatever its `default-distros`.
pub(crate) const ALL_DISTROS: &str = "all";

#[derive(Clone, Copy, Debug, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum PackageManager {
    Apt,
    Dnf,
    Yum,
}

/// One distro of an `os-packages` module.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Distro {
    /// Short name, e.g. `debian12`.
    pub name: String,
    /// Base image, e.g. `debian:bookworm`.
    pub image: String,
    pub manager: PackageManager,
    /// Groups of the groups file, dotted for nested ones (`kubespray.common`).
    pub groups: Vec<String>,
    /// Packages beside the groups.
    #[serde(default)]
    pub packages: Vec<String>,
    /// Packages that may be missing on this distro: skipped and recorded, not fatal.
    #[serde(default)]
    pub optional: Vec<String>,
    /// Extra repositories (apt source lines or yum `.repo` URLs).
    #[serde(default)]
    pub repositories: Vec<String>,
    /// Path in the bundle under `resources/nginx/`, e.g. `debian/{arch}/bookworm`.
    pub path: String,
}

/// The repositories of one platform.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct OsPackagesWork {
    pub distros: Vec<DistroWork>,
}

/// One distro's offline repository.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct DistroWork {
    pub name: String,
    /// The base image as the spec names it (the repository record keeps this text).
    pub image: String,
    pub manager: PackageManager,
    /// Packages to resolve with their whole dependency closure, sorted.
    pub packages: Vec<String>,
    /// Packages that may be missing: skipped and recorded.
    pub optional: Vec<String>,
    pub repositories: Vec<String>,
    /// Path under `resources/nginx/`.
    pub path: String,
}

impl DistroWork {
    /// The base image, fully qualified (`docker.io/library/debian:bookworm`): what BuildKit
    /// takes.
    pub fn base_image(&self) -> Result<ImageRef, script::ScriptError> {
        ImageRef::parse(&self.image).map_err(|_| script::ScriptError::BadImage {
            distro: self.name.clone(),
            image: self.image.clone(),
        })
    }

    /// The repository's path from the bundle root.
    pub fn bundle_path(&self) -> String {
        layout::nginx_path(&self.path)
    }
}

impl ModuleSpec for OsPackagesModule {
    fn validate(&self, name: &str, v: &Validator<'_>) -> Result<(), SpecError> {
        v.context_path("groups-file", &self.groups_file)?;
        let mut names = std::collections::BTreeSet::new();
        for d in &self.distros {
            if d.name == ALL_DISTROS {
                return Err(v.invalid(
                    Some(&d.name),
                    format!("module `{name}`: a distro cannot be named `{ALL_DISTROS}`"),
                    "`KPBUILD_DISTROS=all` selects every distro; give this one another name",
                ));
            }
            if !names.insert(&d.name) {
                return Err(v.invalid(
                    Some(&d.name),
                    format!("distro `{}` is listed twice in module `{name}`", d.name),
                    "give each distro a unique name",
                ));
            }
            if d.groups.is_empty() && d.packages.is_empty() {
                return Err(v.invalid(
                    Some(&d.name),
                    format!("distro `{}` selects no groups and no packages", d.name),
                    "add `groups: [common, apt]` or `packages: [...]`",
                ));
            }
            if !is_relative_clean(&d.path.replace("{arch}", "amd64")) {
                return Err(v.invalid(
                    Some("path"),
                    format!(
                        "distro `{}`: path `{}` must be relative without `..`",
                        d.name, d.path
                    ),
                    "e.g. `debian/{arch}/bookworm`",
                ));
            }
        }
        for want in &self.default_distros {
            if !names.contains(want) {
                return Err(v.invalid(
                    Some("default-distros"),
                    format!(
                        "module `{name}`: default distro `{want}` is not one of its distros ({})",
                        self.distros
                            .iter()
                            .map(|d| d.name.as_str())
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                    "name a distro listed under `distros:`, or remove it",
                ));
            }
        }
        Ok(())
    }

    fn plan_inputs(&self) -> Vec<String> {
        vec![self.groups_file.clone()]
    }

    fn build_inputs(&self) -> Vec<String> {
        vec![]
    }

    fn builds_for(&self, _platform: &Platform) -> bool {
        true
    }

    fn plan(&self, cx: &PlanCx<'_>) -> Result<Work, PlanError> {
        let groups_err = |source| PlanError::Groups {
            spec: cx.spec_name.to_string(),
            module: cx.module.to_string(),
            source: Box::new(source),
        };
        let text = cx.read(&self.groups_file)?;
        let groups =
            Groups::parse(&cx.ctx.display(&self.groups_file), &text).map_err(groups_err)?;
        let selection: &[String] = match cx.opts.distros.as_slice() {
            [] => &self.default_distros,
            [all] if all == ALL_DISTROS => &[],
            some => some,
        };
        for want in selection {
            if !self.distros.iter().any(|d| &d.name == want) {
                return Err(PlanError::UnknownTarget {
                    spec: cx.spec_name.to_string(),
                    target: format!("distro {want}"),
                    available: self.distros.iter().map(|d| d.name.clone()).collect(),
                });
            }
        }
        let mut distros = Vec::new();
        for d in self
            .distros
            .iter()
            .filter(|d| selection.is_empty() || selection.contains(&d.name))
        {
            let packages = groups.select(&d.groups, &d.packages).map_err(groups_err)?;
            let mut optional: Vec<String> = d
                .optional
                .iter()
                .filter(|p| packages.contains(p))
                .cloned()
                .collect();
            optional.sort();
            let work = DistroWork {
                name: d.name.clone(),
                image: d.image.clone(),
                manager: d.manager,
                packages,
                optional,
                repositories: d.repositories.clone(),
                path: cx.for_arch(&d.path),
            };
            cx.image(&d.image, format!("distro `{}`", d.name))?;
            distros.push(work);
        }
        Ok(Work::OsPackages(OsPackagesWork { distros }))
    }
}

impl ModuleWork for OsPackagesWork {
    fn images_to_resolve(&self) -> Vec<(&ImageRef, &FetchLocation)> {
        // Base images are resolved by BuildKit itself (image sources).
        vec![]
    }

    /// The distro's mirrors are reached on the default network.
    fn loopback_registries(&self) -> Vec<String> {
        vec![]
    }

    fn nested_build(&self) -> Option<NestedBuild<'_>> {
        None
    }

    /// Every package of every repository, from its index; skipped optional packages from
    /// the repository's record.
    fn lock(&self, tree: &Path, lock: &mut Lock) -> Result<(), LockError> {
        for d in &self.distros {
            let repo = d.bundle_path();
            let dir = tree.join(&repo);
            for p in read_packages_index(&dir, &d.name, &repo)? {
                lock.push(p)?;
            }
            let record = dir.join(script::RECORD_FILE);
            if record.is_file() {
                let text = std::fs::read_to_string(&record).map_err(|source| LockError::Io {
                    path: record.display().to_string(),
                    source,
                })?;
                let rec =
                    script::RepoRecord::parse(&text).map_err(|message| LockError::Invalid {
                        path: record.display().to_string(),
                        message,
                    })?;
                if !rec.skipped.is_empty() {
                    lock.push(SkippedPackages {
                        distro: d.name.clone(),
                        names: rec.skipped,
                    })?;
                }
            }
        }
        Ok(())
    }
}
