//! The `images` kind: every container image the deploy pulls, in the storage layout of a
//! `registry:2` under `resources/registry` (see `registry_layout`), stored under upstream's
//! repository names (or a kubeplay `images_origin.yaml` map), fetched through the spec's
//! registry mirrors, each tag pinned to the digest it had while planning. Lowered in
//! `frontend/src/kinds/images.rs` (one sync job per image).

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use serde::{Deserialize, Serialize};

use super::{ModuleSpec, ModuleWork, NestedBuild, PlanCx, Validator, Work, loopback_hosts};
use crate::layout;
use crate::lock::{Lock, LockError, image_entry};
use crate::plan::PlanError;
use crate::spec::{ListSelection, SpecError};
use kpbuild_ansible::kubespray::Item;
use kpbuild_oci::image_ref::{self, FetchLocation, ImageRef, NameMap, StoredRef};
use kpbuild_oci::platform::Platform;

/// The `images` block of a spec.
#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct ImagesModule {
    #[serde(default)]
    pub from_kubespray: ListSelection,
    /// Image references beside the generated ones (`{arch}` allowed).
    #[serde(default)]
    pub extra: Vec<String>,
    /// Image references to leave out.
    #[serde(default)]
    pub exclude: Vec<String>,
    /// Stored-name mapping file in kubeplay's `images_origin.yaml` form (build context path).
    pub map: Option<String>,
    /// Platforms whose manifests every bundle keeps (default: the bundle's own platform), e.g.
    /// both `linux/amd64` and `linux/arm64` for clusters that mix them.
    #[serde(
        default,
        deserialize_with = "kpbuild_oci::platform::deserialize_bundle_platforms"
    )]
    pub platforms: Vec<Platform>,
}

/// The images of one platform, sorted by source.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct ImagesWork {
    pub images: Vec<ImageWork>,
}

/// An image to sync into the registry tree.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct ImageWork {
    /// The normalized upstream reference (`quay.io/calico/node:v3.29.5`).
    pub source: ImageRef,
    /// Where it is fetched from (a mirror, or the upstream).
    pub fetch: FetchLocation,
    /// The stored repository (`calico/node`) and the tag or digest it is stored under.
    pub stored: StoredRef,
    /// The platforms whose manifests are kept.
    pub platforms: Vec<Platform>,
}

impl ModuleSpec for ImagesModule {
    fn validate(&self, name: &str, v: &Validator<'_>) -> Result<(), SpecError> {
        if let Some(m) = &self.map {
            v.context_path("map", m)?;
        }
        v.kubespray_for(name, self.from_kubespray, "images")
    }

    fn plan_inputs(&self) -> Vec<String> {
        self.map.iter().cloned().collect()
    }

    fn build_inputs(&self) -> Vec<String> {
        vec![]
    }

    fn builds_for(&self, _platform: &Platform) -> bool {
        true
    }

    fn plan(&self, cx: &PlanCx<'_>) -> Result<Work, PlanError> {
        let spec = &cx.spec_file.spec;
        let mut refs: BTreeMap<String, String> = BTreeMap::new();
        if let Some(k) = cx.kubespray(self.from_kubespray)? {
            let names = match self.from_kubespray {
                ListSelection::All => k.images().map_err(|e| cx.list_err(e))?,
                _ => k
                    .enabled()
                    .map_err(|e| cx.list_err(e))?
                    .into_iter()
                    .filter_map(|it| match it {
                        Item::Image(r) => Some(r),
                        Item::File(_) => None,
                    })
                    .collect(),
            };
            let from = format!(
                "kubespray's variables ({})",
                cx.ctx.display(spec.vars.kubespray.as_deref().unwrap_or(""))
            );
            for r in names {
                refs.insert(r, from.clone());
            }
        }
        for r in &self.extra {
            refs.insert(cx.for_arch(r), format!("`extra` of module `{}`", cx.module));
        }
        let exclude: BTreeSet<String> = self
            .exclude
            .iter()
            .map(|x| {
                let x = cx.for_arch(x);
                ImageRef::parse(&x).map(|r| r.to_string()).unwrap_or(x)
            })
            .collect();
        let map = match &self.map {
            Some(path) => {
                let text = cx.read(path)?;
                Some(
                    NameMap::parse(&cx.ctx.display(path), &text).map_err(|source| {
                        PlanError::Map {
                            spec: cx.spec_name.to_string(),
                            module: cx.module.to_string(),
                            source: Box::new(source),
                        }
                    })?,
                )
            }
            None => None,
        };
        let mut parsed = Vec::new();
        for (raw, from) in refs {
            let r = cx.image(&raw, from)?;
            if exclude.contains(&r.to_string()) || exclude.contains(&raw) {
                continue;
            }
            let stored = image_ref::stored_repository(&r, map.as_ref());
            parsed.push((r, stored));
        }
        image_ref::check_collisions(parsed.iter().map(|(r, s)| (r, s.as_str()))).map_err(
            |source| PlanError::Collision {
                spec: cx.spec_name.to_string(),
                module: cx.module.to_string(),
                source: Box::new(source),
            },
        )?;
        let keep: Vec<Platform> = if self.platforms.is_empty() {
            vec![cx.platform.clone()]
        } else {
            self.platforms.clone()
        };
        let mut images: Vec<ImageWork> = parsed
            .into_iter()
            .map(|(r, stored)| ImageWork {
                fetch: image_ref::fetch_location(&r, cx.registry_mirrors),
                stored: StoredRef::new(&r, stored),
                source: r,
                platforms: keep.clone(),
            })
            .collect();
        images.sort_by_key(|i| (i.source.to_string(), i.stored.to_string()));
        images.dedup();
        Ok(Work::Images(ImagesWork { images }))
    }
}

impl ModuleWork for ImagesWork {
    fn images_to_resolve(&self) -> Vec<(&ImageRef, &FetchLocation)> {
        self.images.iter().map(|i| (&i.source, &i.fetch)).collect()
    }

    fn loopback_registries(&self) -> Vec<String> {
        loopback_hosts(self.images.iter().map(|i| i.fetch.registry.as_str()))
    }

    fn nested_build(&self) -> Option<NestedBuild<'_>> {
        None
    }

    /// Every image with the digest its tag points at and the manifest kept per platform.
    fn lock(&self, tree: &Path, lock: &mut Lock) -> Result<(), LockError> {
        let registry = tree.join(layout::REGISTRY_ROOT);
        for img in &self.images {
            lock.images.push(image_entry(
                &registry,
                &img.source.to_string(),
                &img.stored.to_string(),
            )?);
        }
        Ok(())
    }
}
