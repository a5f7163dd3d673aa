//! The `dockerfile` kind (the kubespray deploy image): an image built from a Dockerfile in the
//! build context through BuildKit's own Dockerfile frontend (a nested solve), shipped as an
//! archive `docker load` accepts at `archive`. Lowered in `frontend/src/kinds/dockerfile.rs`.

use std::collections::BTreeMap;
use std::path::Path;

use indexmap::IndexMap;
use serde::{Deserialize, Serialize};

use super::{ModuleSpec, ModuleWork, NestedBuild, PlanCx, Validator, Work};
use crate::lock::{Lock, LockError, artifacts};
use crate::plan::PlanError;
use crate::spec::{SpecError, is_relative_clean};
use kpbuild_oci::image_ref::{FetchLocation, ImageRef};
use kpbuild_oci::platform::Platform;

/// The `dockerfile` block of a spec.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct DockerfileModule {
    /// Build context directory inside the bundle's build context.
    pub context: String,
    #[serde(default = "default_dockerfile")]
    pub dockerfile: String,
    #[serde(default)]
    pub build_args: IndexMap<String, String>,
    /// Where the image archive goes in the bundle; `{version}` allowed.
    pub archive: String,
    /// Name and tag of the image inside the archive.
    pub image: String,
    /// Only for these platforms (default: all of the bundle's). Building a platform other than
    /// the worker's runs the Dockerfile's commands under emulation, which needs QEMU.
    #[serde(
        default,
        deserialize_with = "kpbuild_oci::platform::deserialize_bundle_platforms"
    )]
    pub platforms: Vec<Platform>,
}

fn default_dockerfile() -> String {
    "Dockerfile".into()
}

/// The image build of one platform.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct DockerfileWork {
    pub context: String,
    pub dockerfile: String,
    pub build_args: BTreeMap<String, String>,
    /// The archive's path from the bundle root.
    pub archive: String,
    /// The name `docker load` gives the image.
    pub image: String,
}

impl ModuleSpec for DockerfileModule {
    fn validate(&self, name: &str, v: &Validator<'_>) -> Result<(), SpecError> {
        v.context_path("context", &self.context)?;
        v.context_path("dockerfile", &self.dockerfile)?;
        if !is_relative_clean(&self.archive.replace("{version}", v.version())) {
            return Err(v.invalid(
                Some("archive"),
                format!(
                    "module `{name}`: archive `{}` must be a relative path without `..`",
                    self.archive
                ),
                "e.g. `resources/images/kubespray-{version}.tar`",
            ));
        }
        Ok(())
    }

    fn plan_inputs(&self) -> Vec<String> {
        vec![]
    }

    fn build_inputs(&self) -> Vec<String> {
        vec![self.context.clone()]
    }

    fn builds_for(&self, platform: &Platform) -> bool {
        self.platforms.is_empty() || self.platforms.contains(platform)
    }

    fn plan(&self, cx: &PlanCx<'_>) -> Result<Work, PlanError> {
        let version = &cx.spec_file.spec.version;
        Ok(Work::Dockerfile(DockerfileWork {
            context: self.context.clone(),
            dockerfile: self.dockerfile.clone(),
            build_args: self
                .build_args
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
            archive: self.archive.replace("{version}", version),
            image: self.image.replace("{version}", version),
        }))
    }
}

impl ModuleWork for DockerfileWork {
    fn images_to_resolve(&self) -> Vec<(&ImageRef, &FetchLocation)> {
        // The Dockerfile's own `FROM`s are resolved by the Dockerfile frontend.
        vec![]
    }

    /// Its `RUN` steps use BuildKit's default network.
    fn loopback_registries(&self) -> Vec<String> {
        vec![]
    }

    fn nested_build(&self) -> Option<NestedBuild<'_>> {
        Some(NestedBuild {
            context: &self.context,
            dockerfile: &self.dockerfile,
            build_args: &self.build_args,
        })
    }

    /// The archive, as an artifact.
    fn lock(&self, tree: &Path, lock: &mut Lock) -> Result<(), LockError> {
        for a in artifacts(tree)? {
            lock.push(a)?;
        }
        Ok(())
    }
}
