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
use crate::lock::{Entry, Lock, LockError};
use crate::plan::PlanError;
use crate::sbom::SbomCx;
use crate::spec::{ListSelection, SpecError};
use crate::verify::Check;
use kpbuild_ansible::kubespray::Item;
use kpbuild_oci::image_ref::{self, FetchLocation, ImageRef, NameMap, StoredRef};
use kpbuild_oci::platform::Platform;
use kpbuild_oci::registry_layout::{self, Digest};
use kpbuild_sbom::{Component, Kind, Purl};

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
            lock.push(image_entry(
                &registry,
                &img.source.to_string(),
                &img.stored.to_string(),
            )?)?;
        }
        Ok(())
    }
}

/// An image of the bundle's registry in the manifest's `images` section.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct ImageEntry {
    pub source: String,
    /// `repository:tag` in the bundle's registry.
    pub stored: String,
    /// The digest the tag points at (an index for multi-platform images).
    pub digest: String,
    /// The manifest kept for each platform.
    pub platforms: BTreeMap<String, String>,
}

/// An image the manifest names that the registry tree does not hold as named.
#[derive(Debug, thiserror::Error)]
#[error("image {source_ref} is not in the registry tree as {stored}: {message}")]
pub struct MissingImage {
    source_ref: String,
    stored: String,
    message: String,
}

/// The digests of an image in a registry storage tree (`root` holds `docker/registry/v2`): its
/// tag's manifest and each kept child.
fn image_entry(root: &Path, source: &str, stored: &str) -> Result<ImageEntry, LockError> {
    let missing = |message: String| {
        LockError::Entry(Box::new(MissingImage {
            source_ref: source.into(),
            stored: stored.into(),
            message,
        }))
    };
    let layout = registry_layout::Layout::new(root);
    let (repo, tag) = stored
        .rsplit_once(':')
        .ok_or_else(|| missing("no tag".into()))?;
    let link = layout.tag_current_link(repo, tag);
    let text =
        std::fs::read_to_string(&link).map_err(|e| missing(format!("{}: {e}", link.display())))?;
    let digest: Digest = text
        .trim()
        .parse()
        .map_err(|e| missing(format!("{}: {e:?}", link.display())))?;
    let blob = layout.blob_data(&digest);
    let bytes = std::fs::read(&blob).map_err(|e| missing(format!("{}: {e}", blob.display())))?;
    let mut platforms = BTreeMap::new();
    match registry_layout::parse_manifest(None, &bytes) {
        Ok(registry_layout::Manifest::Index { manifests, .. }) => {
            for c in manifests {
                if layout.revision_link(repo, &c.digest).is_file() {
                    let p = c
                        .platform
                        .map(|p| p.to_string())
                        .unwrap_or_else(|| "unknown".into());
                    platforms.insert(p, c.digest.to_string());
                }
            }
        }
        Ok(registry_layout::Manifest::Image { .. }) => {
            platforms.insert("any".into(), digest.to_string());
        }
        Err(e) => return Err(missing(format!("manifest {digest}: {e}"))),
    }
    Ok(ImageEntry {
        source: source.into(),
        stored: stored.into(),
        digest: digest.to_string(),
        platforms,
    })
}

impl Entry for ImageEntry {
    const SECTION: &'static str = "images";
    const NOUN: Option<&'static str> = Some("images");
    const DETAIL: Option<&'static str> = Some("blobs");
    type SortKey = String;
    fn sort_key(&self) -> String {
        self.stored.clone()
    }

    /// The image as its tag names it (the index, or the one manifest), `pkg:oci/<name>@<tag
    /// digest>?repository_url=<registry>/<repository>&tag=<tag>`, supplied by its registry,
    /// containing one component per platform manifest the bundle keeps (its digest, `arch`
    /// in its purl); an image of one manifest is that manifest, with its platform.
    fn components(&self, _: &SbomCx<'_>) -> Vec<Component> {
        let (registry, repository, tag) = match ImageRef::parse(&self.source) {
            Ok(r) => (r.registry, r.repository, r.tag),
            Err(_) => (String::new(), self.source.clone(), None),
        };
        let repository_url = if registry.is_empty() {
            repository.clone()
        } else {
            format!("{registry}/{repository}")
        };
        let short = repository.rsplit('/').next().unwrap_or(&repository);
        let version = tag.clone().unwrap_or_else(|| self.digest.clone());
        let made = |kind: Kind, digest: &str, platform: Option<&str>| {
            let arch = platform.and_then(|p| p.split('/').nth(1));
            let mut c = Component::new(kind, repository_url.clone(), version.clone());
            c.purl = Some(
                Purl::new("oci", short)
                    .version(digest)
                    .qualifier("repository_url", repository_url.clone())
                    .qualifier("tag", tag.clone().unwrap_or_default())
                    .qualifier("arch", arch.unwrap_or_default())
                    .to_string(),
            );
            if let Some(hex) = digest.strip_prefix("sha256:") {
                c.digests = vec![kpbuild_sbom::Digest::sha256(hex)];
            }
            c.supplier = (!registry.is_empty()).then(|| registry.clone());
            c.platform = platform.map(str::to_string);
            c
        };
        let single =
            self.platforms.len() == 1 && self.platforms.values().next() == Some(&self.digest);
        let mut image = if single {
            let platform = self.platforms.keys().next().map(String::as_str);
            made(Kind::ImageIndex, self.digest.as_str(), platform)
        } else {
            made(Kind::ImageIndex, self.digest.as_str(), None)
        };
        image.description = Some(format!(
            "stored as {} in the bundle's registry ({})",
            self.stored,
            layout::REGISTRY_ROOT
        ));
        if !single {
            image.children = self
                .platforms
                .iter()
                .map(|(p, d)| {
                    let mut m = made(Kind::ImageManifest, d.as_str(), Some(p.as_str()));
                    m.description = Some(format!("the {p} manifest of {}", self.stored));
                    m
                })
                .collect();
        }
        vec![image]
    }

    /// The registry tree whole (blobs hash to their names, every link resolves), then each
    /// image's tag at its recorded digest with every recorded platform linked; the detail is
    /// the tree's blob count.
    fn verify(entries: &[Self], check: &mut Check<'_>) -> (usize, usize) {
        let registry = check.root.join(layout::REGISTRY_ROOT);
        let mut blobs = 0;
        if !entries.is_empty() {
            let ropts = kpbuild_oci::registry_verify::VerifyOptions {
                hash_blobs: check.opts.hash,
                ..Default::default()
            };
            for problem in
                kpbuild_oci::registry_verify::verify_registry_tree_with(&registry, &ropts).problems
            {
                check.fault(
                    format!("{}/{}", layout::REGISTRY_ROOT, problem.path.display()),
                    problem.kind.to_string(),
                );
            }
            blobs = crate::lock::walk_files(&registry_layout::Layout::new(&registry).blobs_dir())
                .map(|v| v.len())
                .unwrap_or(0);
        }
        for img in entries {
            match image_entry(&registry, &img.source, &img.stored) {
                Err(e) => check.fault(format!("image {}", img.stored), e.to_string()),
                Ok(found) => {
                    if found.digest != img.digest {
                        check.fault(
                            format!("image {}", img.stored),
                            format!(
                                "tag points at {}, the manifest says {}",
                                found.digest, img.digest
                            ),
                        );
                    }
                    for (p, d) in &img.platforms {
                        if found.platforms.get(p) != Some(d) {
                            check.fault(
                                format!("image {}", img.stored),
                                format!("{p}: manifest {d} is not linked"),
                            );
                        }
                    }
                }
            }
        }
        (entries.len(), blobs)
    }
}
