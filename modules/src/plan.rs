//! The module graph and its plan: from a spec, per platform, the exact work each module will
//! do — files with their pins and bundle paths, images with their fetch locations and stored
//! names, packages per distro — sorted and deterministic, so that the frontend only lowers it
//! to LLB and the same inputs always give the same graph.
//!
//! The graph is flat: every module is independent of the others and the bundle (the default
//! target) merges them all, per platform.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use crate::image_ref::{self, ImageRef, Mirror, NameMap};
use crate::kubespray::{Arch, Item, Kubespray, ListError, Pin};
use crate::packages::{Groups, GroupsError};
use crate::source::FileSource;
use crate::spec::{ListSelection, Module, PackageManager, Platform, SpecFile};
use crate::vars::{LoadError, Origin, Precedence, VarSet};

/// The name of the target that merges every module into the bundle tree.
pub const BUNDLE_TARGET: &str = "bundle";
/// The name of the pseudo-module that writes the bundle manifest (`kubeplay.lock.json`).
pub const LOCK_TARGET: &str = "lock";

/// Everything to build.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct Plan {
    pub name: String,
    pub version: String,
    pub platforms: Vec<PlatformPlan>,
}

/// The work for one platform.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct PlatformPlan {
    pub platform: Platform,
    pub modules: Vec<ModulePlan>,
}

/// One module's work on one platform.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct ModulePlan {
    pub name: String,
    pub work: Work,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum Work {
    Files { files: Vec<FileWork> },
    Images { images: Vec<ImageWork> },
    OsPackages { distros: Vec<DistroWork> },
    Dockerfile(DockerfileWork),
    Compose(ComposeWork),
}

/// A file to download into `resources/nginx/<path>`.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq, PartialOrd, Ord)]
pub struct FileWork {
    /// The upstream URL (what the deploy side asks for).
    pub url: String,
    /// Where the content is fetched from (a mirror, or `url`).
    pub fetch_url: String,
    /// `files/<host>/<path of the URL>`.
    pub path: String,
    /// The pin, when kubespray or the spec gives one.
    pub pin: Option<PinWork>,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq, PartialOrd, Ord)]
pub struct PinWork {
    pub algorithm: String,
    pub hex: String,
}

impl From<Pin> for PinWork {
    fn from(p: Pin) -> Self {
        PinWork {
            algorithm: p.algorithm,
            hex: p.hex,
        }
    }
}

/// An image to sync into the registry tree.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq, PartialOrd, Ord)]
pub struct ImageWork {
    /// The normalized upstream reference (`quay.io/calico/node:v3.29.5`).
    pub source: String,
    /// Where it is fetched from (`registry/repository`, a mirror or the upstream).
    pub fetch: String,
    /// The stored repository (`calico/node`) and the tag or digest it is stored under.
    pub stored: String,
    /// The platforms whose manifests are kept (`linux/amd64`).
    pub platforms: Vec<String>,
}

/// One distro's offline repository.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct DistroWork {
    pub name: String,
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

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct DockerfileWork {
    pub context: String,
    pub dockerfile: String,
    pub build_args: BTreeMap<String, String>,
    pub archive: String,
    pub image: String,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct ComposeWork {
    pub nginx_image: String,
    pub registry_image: String,
    /// The loadable archives of those images.
    pub archives: Vec<ArchiveWork>,
    pub installer: Option<String>,
}

/// An image shipped as an archive `docker load` accepts.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct ArchiveWork {
    /// The normalized reference (`docker.io/library/nginx:1.27.4-alpine`): also the name
    /// `docker load` gives it.
    pub source: String,
    /// Where it is fetched from.
    pub fetch: String,
    /// The archive's path in the bundle.
    pub path: String,
}

/// Errors planning a spec.
#[derive(Debug, thiserror::Error)]
pub enum PlanError {
    #[error("{spec}: {source}")]
    Vars { spec: String, source: LoadError },
    #[error("{spec}: module `{module}` ({platform}): {source}")]
    List {
        spec: String,
        module: String,
        platform: Platform,
        source: Box<ListError>,
    },
    #[error("{spec}: module `{module}`: image `{reference}` from {from}: {source}")]
    Image {
        spec: String,
        module: String,
        reference: String,
        from: String,
        source: Box<image_ref::RefError>,
    },
    #[error("{spec}: module `{module}`: {source}")]
    Map {
        spec: String,
        module: String,
        source: Box<image_ref::MapError>,
    },
    #[error("{spec}: module `{module}`: {source}")]
    Collision {
        spec: String,
        module: String,
        source: Box<image_ref::CollisionError>,
    },
    #[error("{spec}: registry mirror: {source}")]
    Mirror {
        spec: String,
        source: Box<image_ref::MirrorError>,
    },
    #[error("{spec}: module `{module}`: {source}")]
    Groups {
        spec: String,
        module: String,
        source: Box<GroupsError>,
    },
    #[error("{spec}: module `{module}`: cannot read {path}: {source}")]
    Read {
        spec: String,
        module: String,
        path: String,
        source: std::io::Error,
    },
    #[error("{spec}: module `{module}`: file URL `{url}`: {reason}")]
    Url {
        spec: String,
        module: String,
        url: String,
        reason: String,
    },
    #[error("{spec}: module `{module}`: files `{first}` and `{second}` both land at `{path}`")]
    PathClash {
        spec: String,
        module: String,
        path: String,
        first: String,
        second: String,
    },
    #[error("unknown target `{target}`; {spec} defines: {}", .available.join(", "))]
    UnknownTarget {
        spec: String,
        target: String,
        available: Vec<String>,
    },
    #[error("platform {platform} is not one of the spec's platforms ({})", .available.join(", "))]
    UnknownPlatform {
        platform: Platform,
        available: Vec<String>,
    },
}

/// What to plan.
#[derive(Clone, Debug, Default)]
pub struct PlanOptions {
    /// Extra `-e` variables, applied after the spec's own (`build-arg:*` in the frontend).
    pub extra_vars: Vec<String>,
    /// Only these platforms (default: all of the spec's).
    pub platforms: Vec<Platform>,
    /// Only these modules (default: every module; `bundle` means every module too).
    pub targets: Vec<String>,
    /// Only these distros of os-packages modules (default: all).
    pub distros: Vec<String>,
}

/// The file path of a URL in the bundle: `files/<host[:port]>/<path>`.
pub fn bundle_path_of_url(raw: &str) -> Result<String, String> {
    let url = url::Url::parse(raw).map_err(|e| format!("not a URL ({e})"))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(format!("scheme `{}` is not http or https", url.scheme()));
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err(
            "URLs with a query or fragment have no stable file path; use a plain URL".into(),
        );
    }
    let host = url.host_str().ok_or("no host")?;
    let host = match url.port() {
        Some(p) => format!("{host}:{p}"),
        None => host.to_string(),
    };
    // The parser resolves `..` and `.` already; what is left must be plain names.
    let segments: Vec<&str> = url.path_segments().map(|s| s.collect()).unwrap_or_default();
    if segments.is_empty()
        || segments
            .iter()
            .any(|s| s.is_empty() || *s == ".." || *s == ".")
    {
        return Err(
            "the URL path must name a file (no empty, `.` or `..` segments, no trailing `/`)"
                .into(),
        );
    }
    if raw.contains("/../") || raw.contains("/./") || raw.ends_with("/..") {
        return Err("the URL path must not contain `.` or `..` segments".into());
    }
    // The host becomes a directory too: `https://%2e%2e/x` has the host `..`.
    let path = format!("files/{host}/{}", segments.join("/"));
    match crate::safe_path::relative_path(&path, "the bundle") {
        Ok(clean) if clean == path => Ok(path),
        _ => Err(format!(
            "the URL's host `{host}` is not a host name usable as a directory"
        )),
    }
}

/// Applies the longest matching URL prefix mirror.
pub fn mirror_url(url: &str, mirrors: &[crate::spec::UrlMirror]) -> String {
    mirrors
        .iter()
        .filter(|m| {
            let from = m.from.trim_end_matches('/');
            url == from || url.starts_with(&format!("{from}/"))
        })
        .max_by_key(|m| m.from.trim_end_matches('/').len())
        .map(|m| {
            format!(
                "{}{}",
                m.to.trim_end_matches('/'),
                &url[m.from.trim_end_matches('/').len()..]
            )
        })
        .unwrap_or_else(|| url.to_string())
}

/// Plans `spec`, reading its inputs (kubespray, var files, groups and map files) from `ctx`.
pub fn plan(
    spec_file: &SpecFile,
    ctx: &dyn FileSource,
    opts: &PlanOptions,
) -> Result<Plan, PlanError> {
    let spec = &spec_file.spec;
    let spec_name = spec_file.path.display().to_string();
    // Every input must be inside the context (a symbolic link out of it is refused here with
    // its name, rather than looking like a missing file later).
    for input in context_inputs(spec) {
        ctx.check(&input).map_err(|source| PlanError::Vars {
            spec: spec_name.clone(),
            source: LoadError::Read {
                path: input.clone(),
                source,
            },
        })?;
    }
    let available: Vec<String> = spec.modules.keys().cloned().collect();
    for t in &opts.targets {
        if t != BUNDLE_TARGET && t != LOCK_TARGET && !spec.modules.contains_key(t) {
            let mut avail = available.clone();
            avail.push(LOCK_TARGET.into());
            avail.push(BUNDLE_TARGET.into());
            return Err(PlanError::UnknownTarget {
                spec: spec_name,
                target: t.clone(),
                available: avail,
            });
        }
    }
    // The manifest is made from every module: asking for it plans them all.
    let selected = |name: &str| {
        opts.targets.is_empty()
            || opts
                .targets
                .iter()
                .any(|t| t == name || t == BUNDLE_TARGET || t == LOCK_TARGET)
    };
    for p in &opts.platforms {
        if !spec.platforms.contains(p) {
            return Err(PlanError::UnknownPlatform {
                platform: *p,
                available: spec.platforms.iter().map(|p| p.to_string()).collect(),
            });
        }
    }
    let platforms: Vec<Platform> = spec
        .platforms
        .iter()
        .copied()
        .filter(|p| opts.platforms.is_empty() || opts.platforms.contains(p))
        .collect();

    let base_vars = load_vars(spec_file, ctx).map_err(|source| PlanError::Vars {
        spec: spec_name.clone(),
        source,
    })?;
    let registry_mirrors: Vec<Mirror> = spec
        .registry_mirrors
        .iter()
        .map(|m| format!("{}={}", m.from, m.to).parse().map_err(Box::new))
        .collect::<Result<_, _>>()
        .map_err(|source| PlanError::Mirror {
            spec: spec_name.clone(),
            source,
        })?;

    let mut out = Vec::new();
    for platform in platforms {
        let arch = platform.arch;
        let mut kubespray: Option<Kubespray> = None;
        let mut modules = Vec::new();
        for (name, module) in &spec.modules {
            if !selected(name) {
                continue;
            }
            if let Module::Dockerfile(d) = module
                && !d.platforms.is_empty()
                && !d.platforms.contains(&platform)
            {
                continue;
            }
            let list_err = |source: ListError| PlanError::List {
                spec: spec_name.clone(),
                module: name.clone(),
                platform,
                source: Box::new(source),
            };
            let mut kubespray_for = |sel: ListSelection| -> Result<Option<Kubespray>, PlanError> {
                if sel == ListSelection::None {
                    return Ok(None);
                }
                if kubespray.is_none() {
                    let dir = spec.vars.kubespray.clone().unwrap_or_default();
                    let k = Kubespray::from_vars(
                        &ctx.display(&dir),
                        base_vars.clone(),
                        arch,
                        &opts.extra_vars,
                    )
                    .map_err(list_err)?;
                    kubespray = Some(k);
                }
                Ok(kubespray.clone())
            };
            let work = match module {
                Module::Files(f) => {
                    let mut files: BTreeMap<String, Option<Pin>> = BTreeMap::new();
                    if let Some(k) = kubespray_for(f.from_kubespray)? {
                        match f.from_kubespray {
                            ListSelection::All => {
                                for url in k.files().map_err(list_err)? {
                                    files.entry(url).or_default();
                                }
                                for item in k.checksums().map_err(list_err)? {
                                    files.insert(item.url, item.pin);
                                }
                            }
                            ListSelection::Enabled => {
                                for (item, pin) in k.enabled_detailed().map_err(list_err)? {
                                    if let Item::File(url) = item {
                                        files.insert(url, pin);
                                    }
                                }
                            }
                            ListSelection::None => {}
                        }
                    }
                    for e in &f.extra {
                        if !e.archs.is_empty() && !e.archs.iter().any(|a| a == arch.image_arch()) {
                            continue;
                        }
                        let url = e.url.replace("{arch}", arch.image_arch());
                        let pin = match e.sha256.as_ref().map(|s| s.for_arch(arch)) {
                            Some(Some(hex)) => {
                                Some(Pin::parse(&format!("sha256:{hex}")).ok_or_else(|| {
                                    PlanError::Url {
                                        spec: spec_name.clone(),
                                        module: name.clone(),
                                        url: url.clone(),
                                        reason: format!("sha256 `{hex}` is not 64 hex digits"),
                                    }
                                })?)
                            }
                            _ => None,
                        };
                        files.insert(url, pin);
                    }
                    for x in &f.exclude {
                        files.remove(&x.replace("{arch}", arch.image_arch()));
                    }
                    let mut by_path: BTreeMap<String, String> = BTreeMap::new();
                    let mut list = Vec::new();
                    for (url, pin) in files {
                        let path = bundle_path_of_url(&url).map_err(|reason| PlanError::Url {
                            spec: spec_name.clone(),
                            module: name.clone(),
                            url: url.clone(),
                            reason,
                        })?;
                        if let Some(first) = by_path.insert(path.clone(), url.clone()) {
                            return Err(PlanError::PathClash {
                                spec: spec_name.clone(),
                                module: name.clone(),
                                path,
                                first,
                                second: url,
                            });
                        }
                        list.push(FileWork {
                            fetch_url: mirror_url(&url, &spec.mirrors),
                            url,
                            path,
                            pin: pin.map(Into::into),
                        });
                    }
                    Work::Files { files: list }
                }
                Module::Images(i) => {
                    let mut refs: BTreeMap<String, String> = BTreeMap::new();
                    if let Some(k) = kubespray_for(i.from_kubespray)? {
                        let names = match i.from_kubespray {
                            ListSelection::All => k.images().map_err(list_err)?,
                            _ => k
                                .enabled()
                                .map_err(list_err)?
                                .into_iter()
                                .filter_map(|it| {
                                    if let Item::Image(r) = it {
                                        Some(r)
                                    } else {
                                        None
                                    }
                                })
                                .collect(),
                        };
                        for r in names {
                            refs.insert(
                                r,
                                format!(
                                    "kubespray's variables ({})",
                                    ctx.display(spec.vars.kubespray.as_deref().unwrap_or(""))
                                ),
                            );
                        }
                    }
                    for r in &i.extra {
                        refs.insert(
                            r.replace("{arch}", arch.image_arch()),
                            format!("`extra` of module `{name}`"),
                        );
                    }
                    let exclude: BTreeSet<String> = i
                        .exclude
                        .iter()
                        .map(|x| {
                            let x = x.replace("{arch}", arch.image_arch());
                            ImageRef::parse(&x).map(|r| r.to_string()).unwrap_or(x)
                        })
                        .collect();
                    let map = match &i.map {
                        Some(path) => {
                            let text =
                                ctx.read_to_string(path).map_err(|source| PlanError::Read {
                                    spec: spec_name.clone(),
                                    module: name.clone(),
                                    path: ctx.display(path),
                                    source,
                                })?;
                            Some(NameMap::parse(&ctx.display(path), &text).map_err(|source| {
                                PlanError::Map {
                                    spec: spec_name.clone(),
                                    module: name.clone(),
                                    source: Box::new(source),
                                }
                            })?)
                        }
                        None => None,
                    };
                    let mut parsed = Vec::new();
                    for (raw, from) in refs {
                        let r = ImageRef::parse(&raw).map_err(|source| PlanError::Image {
                            spec: spec_name.clone(),
                            module: name.clone(),
                            reference: raw.clone(),
                            from,
                            source: Box::new(source),
                        })?;
                        if exclude.contains(&r.to_string()) || exclude.contains(&raw) {
                            continue;
                        }
                        let stored = image_ref::stored_repository(&r, map.as_ref());
                        parsed.push((r, stored));
                    }
                    image_ref::check_collisions(parsed.iter().map(|(r, s)| (r, s.as_str())))
                        .map_err(|source| PlanError::Collision {
                            spec: spec_name.clone(),
                            module: name.clone(),
                            source: Box::new(source),
                        })?;
                    let keep: Vec<String> = if i.platforms.is_empty() {
                        vec![platform.to_string()]
                    } else {
                        i.platforms.iter().map(|p| p.to_string()).collect()
                    };
                    let mut images: Vec<ImageWork> = parsed
                        .into_iter()
                        .map(|(r, stored)| {
                            let suffix = match (&r.tag, &r.digest) {
                                (Some(t), _) => format!(":{t}"),
                                (None, Some(d)) => format!("@{d}"),
                                (None, None) => ":latest".into(),
                            };
                            ImageWork {
                                fetch: image_ref::fetch_location(&r, &registry_mirrors).to_string(),
                                source: r.to_string(),
                                stored: format!("{stored}{suffix}"),
                                platforms: keep.clone(),
                            }
                        })
                        .collect();
                    images.sort();
                    images.dedup();
                    Work::Images { images }
                }
                Module::OsPackages(o) => {
                    let text =
                        ctx.read_to_string(&o.groups_file)
                            .map_err(|source| PlanError::Read {
                                spec: spec_name.clone(),
                                module: name.clone(),
                                path: ctx.display(&o.groups_file),
                                source,
                            })?;
                    let groups =
                        Groups::parse(&ctx.display(&o.groups_file), &text).map_err(|source| {
                            PlanError::Groups {
                                spec: spec_name.clone(),
                                module: name.clone(),
                                source: Box::new(source),
                            }
                        })?;
                    for want in &opts.distros {
                        if !o.distros.iter().any(|d| &d.name == want) {
                            return Err(PlanError::UnknownTarget {
                                spec: spec_name.clone(),
                                target: format!("distro {want}"),
                                available: o.distros.iter().map(|d| d.name.clone()).collect(),
                            });
                        }
                    }
                    let mut distros = Vec::new();
                    for d in o
                        .distros
                        .iter()
                        .filter(|d| opts.distros.is_empty() || opts.distros.contains(&d.name))
                    {
                        let packages = groups.select(&d.groups, &d.packages).map_err(|source| {
                            PlanError::Groups {
                                spec: spec_name.clone(),
                                module: name.clone(),
                                source: Box::new(source),
                            }
                        })?;
                        let mut optional: Vec<String> = d
                            .optional
                            .iter()
                            .filter(|p| packages.contains(p))
                            .cloned()
                            .collect();
                        optional.sort();
                        distros.push(DistroWork {
                            name: d.name.clone(),
                            image: d.image.clone(),
                            manager: d.manager,
                            packages,
                            optional,
                            repositories: d.repositories.clone(),
                            path: d.path.replace("{arch}", arch.image_arch()),
                        });
                    }
                    Work::OsPackages { distros }
                }
                Module::Dockerfile(d) => Work::Dockerfile(DockerfileWork {
                    context: d.context.clone(),
                    dockerfile: d.dockerfile.clone(),
                    build_args: d
                        .build_args
                        .iter()
                        .map(|(k, v)| (k.clone(), v.clone()))
                        .collect(),
                    archive: d.archive.replace("{version}", &spec.version),
                    image: d.image.replace("{version}", &spec.version),
                }),
                Module::Compose(c) => {
                    let mut archives = Vec::new();
                    for image in [&c.nginx_image, &c.registry_image] {
                        let r = ImageRef::parse(image).map_err(|source| PlanError::Image {
                            spec: spec_name.clone(),
                            module: name.clone(),
                            reference: image.clone(),
                            from: format!("module `{name}`"),
                            source: Box::new(source),
                        })?;
                        archives.push(ArchiveWork {
                            fetch: image_ref::fetch_location(&r, &registry_mirrors).to_string(),
                            source: r.to_string(),
                            path: crate::compose::archive_path(image),
                        });
                    }
                    Work::Compose(ComposeWork {
                        nginx_image: archives[0].source.clone(),
                        registry_image: archives[1].source.clone(),
                        archives,
                        installer: c.installer.clone(),
                    })
                }
            };
            modules.push(ModulePlan {
                name: name.clone(),
                work,
            });
        }
        out.push(PlatformPlan { platform, modules });
    }
    Ok(Plan {
        name: spec.name.clone(),
        version: spec.version.clone(),
        platforms: out,
    })
}

/// The spec's variables: kubespray's defaults and vars, then `vars.files`, then `vars.extra`.
pub fn load_vars(spec_file: &SpecFile, ctx: &dyn FileSource) -> Result<VarSet, LoadError> {
    let spec = &spec_file.spec;
    let mut vars = VarSet::new();
    if let Some(dir) = &spec.vars.kubespray {
        vars.add_kubespray(ctx, dir)?;
    }
    for f in &spec.vars.files {
        vars.load_source_file(ctx, f, Precedence::ExtraVars)?;
    }
    for (k, v) in &spec.vars.extra {
        let value = serde::Deserialize::deserialize(v.clone())
            .unwrap_or_else(|_| minijinja::Value::from(v.to_string()));
        let (line, column) = spec_file.position_of("vars", Some(k));
        let origin = Origin {
            file: spec_file.path.display().to_string().into(),
            line,
            column,
        };
        vars.set(k.clone(), value, origin, Precedence::ExtraVars);
    }
    Ok(vars)
}

/// The modules a platform's bundle holds, in spec order, and the manifest (`lock`) last.
pub fn bundle_modules(spec: &crate::spec::Spec, platform: Platform) -> Vec<String> {
    let mut out: Vec<String> = spec
        .modules
        .iter()
        .filter(|(_, m)| match m {
            Module::Dockerfile(d) => d.platforms.is_empty() || d.platforms.contains(&platform),
            _ => true,
        })
        .map(|(n, _)| n.clone())
        .collect();
    out.push(LOCK_TARGET.into());
    out
}

/// The paths of the build context that planning reads (directories and files): what the
/// frontend must fetch from the context before it can plan.
pub fn context_inputs(spec: &crate::spec::Spec) -> Vec<String> {
    let mut out = Vec::new();
    if let Some(dir) = &spec.vars.kubespray {
        for role in ["kubespray_defaults", "kubespray-defaults", "download"] {
            for kind in ["defaults", "vars"] {
                out.push(crate::source::join(dir, &format!("roles/{role}/{kind}")));
            }
        }
    }
    out.extend(spec.vars.files.iter().cloned());
    for module in spec.modules.values() {
        match module {
            Module::Images(i) => out.extend(i.map.iter().cloned()),
            Module::OsPackages(o) => out.push(o.groups_file.clone()),
            _ => {}
        }
    }
    out.sort();
    out.dedup();
    out
}

/// The architectures of a plan, in order.
pub fn archs(plan: &Plan) -> Vec<Arch> {
    plan.platforms.iter().map(|p| p.platform.arch).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::source::LocalDir;

    #[test]
    fn inputs_linked_from_outside_the_context_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let ctx = dir.path().join("ctx");
        std::fs::create_dir_all(&ctx).unwrap();
        std::fs::write(dir.path().join("outside.yml"), "a: 1\n").unwrap();
        std::os::unix::fs::symlink("../outside.yml", ctx.join("vars.yml")).unwrap();
        let spec = SpecFile::parse(
            "# syntax=x\nname: b\nversion: v1\nvars:\n  files: [vars.yml]\nmodules:\n  f:\n    kind: files\n    from-kubespray: none\n",
            "Dockerfile.bundle",
        )
        .unwrap();
        let e = plan(&spec, &LocalDir::new(&ctx), &PlanOptions::default())
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with("Dockerfile.bundle: cannot read vars.yml: path \"vars.yml\" leads outside the build context"),
            "{e}"
        );
    }

    #[test]
    fn url_paths() {
        assert_eq!(
            bundle_path_of_url("https://dl.k8s.io/release/v1.32.8/bin/linux/amd64/kubelet")
                .unwrap(),
            "files/dl.k8s.io/release/v1.32.8/bin/linux/amd64/kubelet"
        );
        assert_eq!(
            bundle_path_of_url("http://127.0.0.1:8081/a/b").unwrap(),
            "files/127.0.0.1:8081/a/b"
        );
        assert!(bundle_path_of_url("https://x.io/a/../../etc/passwd").is_err());
        assert!(bundle_path_of_url("ftp://x.io/a").is_err());
        assert!(bundle_path_of_url("https://x.io/").is_err());
        assert!(bundle_path_of_url("https://x.io/a?b=1").is_err());
        // Ways out of files/ through the host or encoded dots.
        for bad in [
            "https://%2e%2e/a",
            "https://%2E%2E/debian/amd64/bookworm/Packages",
            "https://../a",
            "https://./a",
        ] {
            let e = bundle_path_of_url(bad).unwrap_err();
            assert!(!e.is_empty(), "{bad}");
        }
        assert_eq!(
            bundle_path_of_url("https://%2e%2e/a").unwrap_err(),
            "the URL's host `..` is not a host name usable as a directory"
        );
        // Encoded dots and backslashes in the path are resolved by the URL parser, inside.
        assert_eq!(
            bundle_path_of_url("http://x.io/a/%2e%2e/%2E%2e/b").unwrap(),
            "files/x.io/b"
        );
        assert_eq!(
            bundle_path_of_url("http://x.io/a\\..\\..\\b").unwrap(),
            "files/x.io/b"
        );
    }

    #[test]
    fn mirrors_use_the_longest_prefix() {
        let m = vec![
            crate::spec::UrlMirror {
                from: "https://github.com".into(),
                to: "http://127.0.0.1:8081/gh".into(),
            },
            crate::spec::UrlMirror {
                from: "https://github.com/etcd-io".into(),
                to: "http://m/etcd".into(),
            },
        ];
        assert_eq!(
            mirror_url("https://github.com/a/b", &m),
            "http://127.0.0.1:8081/gh/a/b"
        );
        assert_eq!(
            mirror_url("https://github.com/etcd-io/x", &m),
            "http://m/etcd/x"
        );
        assert_eq!(
            mirror_url("https://github.community/x", &m),
            "https://github.community/x"
        );
    }

    fn testdata() -> std::path::PathBuf {
        std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared/testdata")
    }

    const SPEC: &str = "# syntax=kpbuild/frontend:dev
name: kubeplay
version: v0.1.0
platforms: [linux/amd64, linux/arm64]
vars:
  kubespray: kubespray/v2.28.1
  extra:
    ansible_architecture: x86_64
mirrors:
  - from: https://dl.k8s.io
    to: http://127.0.0.1:8081/dl.k8s.io
registry-mirrors:
  - from: quay.io
    to: 127.0.0.1:5000/quay.io
modules:
  files:
    kind: files
    extra:
      - url: https://example.com/tools/yq-{arch}
        sha256:
          amd64: 1a95960dddd426321354d58d2beac457717f7c49a9ec0806749a5a9e400eb45e
  images:
    kind: images
    extra: [registry:2.8.1]
  os-packages:
    kind: os-packages
    groups-file: os-packages/packages.kubeplay.yaml
    distros:
      - name: debian12
        image: debian:bookworm
        manager: apt
        groups: [common, apt, kubespray.common, kubespray.apt]
        packages: [containerd]
        optional: [python-apt, aufs-tools, netcat]
        path: debian/{arch}/bookworm
";

    #[test]
    fn plans_the_example_spec_deterministically() {
        let spec = SpecFile::parse(SPEC, "Dockerfile.bundle").unwrap();
        let ctx = LocalDir::new(testdata());
        let a = plan(&spec, &ctx, &PlanOptions::default()).unwrap();
        let b = plan(&spec, &ctx, &PlanOptions::default()).unwrap();
        assert_eq!(a, b);
        assert_eq!(a.platforms.len(), 2);
        let amd = &a.platforms[0];
        let Work::Files { files } = &amd.modules[0].work else {
            panic!()
        };
        let kubelet = files
            .iter()
            .find(|f| f.url.ends_with("/amd64/kubelet"))
            .unwrap();
        assert_eq!(
            kubelet.fetch_url,
            "http://127.0.0.1:8081/dl.k8s.io/release/v1.32.8/bin/linux/amd64/kubelet"
        );
        assert_eq!(
            kubelet.path,
            "files/dl.k8s.io/release/v1.32.8/bin/linux/amd64/kubelet"
        );
        assert_eq!(
            kubelet.pin.as_ref().unwrap().hex,
            "7dfca4da9cdf592c0f70800e09fb42553765bc0951cade3d6e0c571daf3f23ee"
        );
        assert!(
            files
                .iter()
                .any(|f| f.url == "https://example.com/tools/yq-amd64" && f.pin.is_some())
        );
        let Work::Images { images } = &amd.modules[1].work else {
            panic!()
        };
        let node = images
            .iter()
            .find(|i| i.source == "quay.io/calico/node:v3.29.5")
            .unwrap();
        assert_eq!(node.fetch, "127.0.0.1:5000/quay.io/calico/node");
        assert_eq!(node.stored, "calico/node:v3.29.5");
        assert!(images.iter().any(|i| i.stored == "library/registry:2.8.1"));
        let Work::OsPackages { distros } = &a.platforms[1].modules[2].work else {
            panic!()
        };
        assert_eq!(distros[0].path, "debian/arm64/bookworm");
        assert_eq!(distros[0].optional, ["aufs-tools", "netcat", "python-apt"]);
        // arm64's extra file has no pin for arm64 in the spec.
        let Work::Files { files } = &a.platforms[1].modules[0].work else {
            panic!()
        };
        assert!(
            files
                .iter()
                .any(|f| f.url == "https://example.com/tools/yq-arm64" && f.pin.is_none())
        );
    }

    #[test]
    fn targets_and_platforms_are_checked() {
        let spec = SpecFile::parse(SPEC, "Dockerfile.bundle").unwrap();
        let ctx = LocalDir::new(testdata());
        let opts = PlanOptions {
            targets: vec!["imagez".into()],
            ..Default::default()
        };
        let e = plan(&spec, &ctx, &opts).unwrap_err().to_string();
        assert!(
            e.contains("unknown target `imagez`")
                && e.contains("files, images, os-packages, lock, bundle"),
            "{e}"
        );
        let opts = PlanOptions {
            targets: vec!["images".into()],
            platforms: vec![Platform { arch: Arch::Arm64 }],
            ..Default::default()
        };
        let p = plan(&spec, &ctx, &opts).unwrap();
        assert_eq!(p.platforms.len(), 1);
        assert_eq!(p.platforms[0].modules.len(), 1);
    }

    #[test]
    fn bad_image_reference_names_it_and_where_it_came_from() {
        let text = SPEC.replace("extra: [registry:2.8.1]", "extra: [\"Bad Ref!\"]");
        let spec = SpecFile::parse(&text, "Dockerfile.bundle").unwrap();
        let e = plan(&spec, &LocalDir::new(testdata()), &PlanOptions::default())
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("Bad Ref!") && e.contains("`extra` of module `images`"),
            "{e}"
        );
    }
}
