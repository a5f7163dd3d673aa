//! The module graph and its plan: from a spec, per platform, the exact work each module will
//! do — files with their pins and bundle paths, images with their fetch locations and stored
//! names, packages per distro — sorted and deterministic, so that the frontend only lowers it
//! to LLB and the same inputs always give the same graph.
//!
//! The graph is flat: every module is independent of the others and the bundle (the default
//! target) merges them all, per platform.

use std::cell::RefCell;

use serde::{Deserialize, Serialize};

use crate::kinds::PlanCx;
use crate::kinds::os_packages::groups::GroupsError;
use crate::spec::{Spec, SpecFile};
use kpbuild_ansible::kubespray::ListError;
use kpbuild_ansible::vars::{LoadError, Origin, Precedence, VarSet};
use kpbuild_oci::image_ref;
use kpbuild_oci::platform::Platform;
use kpbuild_paths::source::FileSource;

pub use crate::kinds::{
    ArchiveWork, ComposeWork, DistroWork, DockerfileWork, FileWork, FilesWork, ImageWork,
    ImagesWork, OsPackagesWork, PinWork, Work,
};
pub use crate::layout::{BUNDLE_TARGET, LOCK_TARGET};

/// Everything to build.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct Plan {
    pub name: String,
    pub version: String,
    pub platforms: Vec<PlatformPlan>,
}

impl Plan {
    /// The registries on this machine that some op of the plan fetches from: the build must
    /// allow host networking (`docker build --network host`, the `network.host` entitlement).
    pub fn loopback_registries(&self) -> Vec<String> {
        let mut hosts: Vec<String> = self
            .platforms
            .iter()
            .flat_map(|p| &p.modules)
            .flat_map(|m| m.work.kind().loopback_registries())
            .collect();
        hosts.sort();
        hosts.dedup();
        hosts
    }

    /// Whether some op of the plan needs the host's network.
    pub fn needs_host_network(&self) -> bool {
        !self.loopback_registries().is_empty()
    }
}

/// The work for one platform.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct PlatformPlan {
    pub platform: Platform,
    pub modules: Vec<ModulePlan>,
}

impl PlatformPlan {
    /// The module named `name`.
    pub fn module(&self, name: &str) -> Option<&ModulePlan> {
        self.modules.iter().find(|m| m.name == name)
    }
}

/// One module's work on one platform.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct ModulePlan {
    pub name: String,
    pub work: Work,
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
        platform: Box<Platform>,
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
        platform: Box<Platform>,
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
                platform: Box::new(p.clone()),
                available: spec.platforms.iter().map(|p| p.to_string()).collect(),
            });
        }
    }
    let platforms: Vec<Platform> = spec
        .platforms
        .iter()
        .filter(|&p| opts.platforms.is_empty() || opts.platforms.contains(p))
        .cloned()
        .collect();

    let base_vars = load_vars(spec_file, ctx).map_err(|source| PlanError::Vars {
        spec: spec_name.clone(),
        source,
    })?;
    let registry_mirrors = spec
        .registry_mirrors()
        .map_err(|source| PlanError::Mirror {
            spec: spec_name.clone(),
            source: Box::new(source),
        })?;

    let mut out = Vec::new();
    for platform in platforms {
        let arch = platform.arch().ok_or_else(|| PlanError::UnknownPlatform {
            platform: Box::new(platform.clone()),
            available: spec.platforms.iter().map(|p| p.to_string()).collect(),
        })?;
        let kubespray = RefCell::new(None);
        let mut modules = Vec::new();
        for (name, module) in &spec.modules {
            let kind = module.kind();
            if !selected(name) || !kind.builds_for(&platform) {
                continue;
            }
            let cx = PlanCx {
                spec_file,
                spec_name: &spec_name,
                module: name,
                platform: &platform,
                arch,
                ctx,
                opts,
                registry_mirrors: &registry_mirrors,
                base_vars: &base_vars,
                kubespray: &kubespray,
            };
            modules.push(ModulePlan {
                name: name.clone(),
                work: kind.plan(&cx)?,
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
pub fn bundle_modules(spec: &Spec, platform: &Platform) -> Vec<String> {
    let mut out: Vec<String> = spec
        .modules
        .iter()
        .filter(|(_, m)| m.kind().builds_for(platform))
        .map(|(n, _)| n.clone())
        .collect();
    out.push(LOCK_TARGET.into());
    out
}

/// The paths of the build context that planning reads (directories and files): what the
/// frontend must fetch from the context before it can plan.
pub fn context_inputs(spec: &Spec) -> Vec<String> {
    let mut out = Vec::new();
    if let Some(dir) = &spec.vars.kubespray {
        for role in ["kubespray_defaults", "kubespray-defaults", "download"] {
            for kind in ["defaults", "vars"] {
                out.push(kpbuild_paths::source::join(
                    dir,
                    &format!("roles/{role}/{kind}"),
                ));
            }
        }
    }
    out.extend(spec.vars.files.iter().cloned());
    for module in spec.modules.values() {
        out.extend(module.kind().plan_inputs());
    }
    out.sort();
    out.dedup();
    out
}

/// A CI matrix for GitHub Actions' `strategy.matrix` (`fromJSON` of this, serialized): one job
/// per distro of the spec's os-packages modules × platform of the spec, distros in spec order,
/// each job building one bundle (`KPBUILD_DISTROS=<distro>`, `--platform <platform>`). A spec
/// without os-packages distros gives one job per platform with an empty `distro`.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct Matrix {
    pub include: Vec<MatrixJob>,
}

/// One job of a [`Matrix`].
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct MatrixJob {
    /// The distro, for `KPBUILD_DISTROS` (empty: the spec has none).
    pub distro: String,
    /// The platform, for `--platform` (`linux/arm64`).
    pub platform: String,
    /// The platform's architecture (`arm64`), for names.
    pub arch: String,
}

/// The [`Matrix`] of every distro × platform the spec defines (its `default-distros` play no
/// part: the matrix builds them all). A distro named by two os-packages modules is one job.
pub fn matrix(spec: &Spec) -> Matrix {
    let mut distros: Vec<String> = Vec::new();
    for module in spec.modules.values() {
        if let crate::kinds::Module::OsPackages(m) = module {
            for d in &m.distros {
                if !distros.contains(&d.name) {
                    distros.push(d.name.clone());
                }
            }
        }
    }
    if distros.is_empty() {
        distros.push(String::new());
    }
    let include = distros
        .iter()
        .flat_map(|distro| {
            spec.platforms.iter().map(move |p| MatrixJob {
                distro: distro.clone(),
                platform: p.to_string(),
                arch: p.architecture.clone(),
            })
        })
        .collect();
    Matrix { include }
}

/// The build-context directories the modules' builds copy from (installer files, Dockerfile
/// contexts), in spec order.
pub fn build_inputs(spec: &Spec) -> Vec<String> {
    spec.modules
        .values()
        .flat_map(|m| m.kind().build_inputs())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use kpbuild_paths::source::LocalDir;

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
        let Work::Files(FilesWork { files }) = &amd.module("files").unwrap().work else {
            panic!()
        };
        let kubelet = files
            .iter()
            .find(|f| f.url.ends_with("/amd64/kubelet"))
            .unwrap();
        assert_eq!(
            kubelet.fetch_urls,
            ["http://127.0.0.1:8081/dl.k8s.io/release/v1.32.8/bin/linux/amd64/kubelet"]
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
        let Work::Images(ImagesWork { images }) = &amd.module("images").unwrap().work else {
            panic!()
        };
        let node = images
            .iter()
            .find(|i| i.source.to_string() == "quay.io/calico/node:v3.29.5")
            .unwrap();
        assert_eq!(node.fetch.to_string(), "127.0.0.1:5000/quay.io/calico/node");
        assert_eq!(node.stored.to_string(), "calico/node:v3.29.5");
        assert!(
            images
                .iter()
                .any(|i| i.stored.to_string() == "library/registry:2.8.1")
        );
        assert!(a.needs_host_network());
        assert_eq!(
            a.loopback_registries(),
            ["127.0.0.1:5000", "127.0.0.1:8081"]
        );
        let Work::OsPackages(OsPackagesWork { distros }) =
            &a.platforms[1].module("os-packages").unwrap().work
        else {
            panic!()
        };
        assert_eq!(distros[0].path, "debian/arm64/bookworm");
        assert_eq!(distros[0].optional, ["aufs-tools", "netcat", "python-apt"]);
        // arm64's extra file has no pin for arm64 in the spec.
        let Work::Files(FilesWork { files }) = &a.platforms[1].module("files").unwrap().work else {
            panic!()
        };
        assert!(
            files
                .iter()
                .any(|f| f.url == "https://example.com/tools/yq-arm64" && f.pin.is_none())
        );
    }

    #[test]
    fn matrix_is_every_distro_times_every_platform() {
        let text = SPEC.replace(
            "        path: debian/{arch}/bookworm\n",
            "        path: debian/{arch}/bookworm\n      - name: rocky9\n        image: rockylinux:9\n        manager: dnf\n        groups: [common, yum]\n        path: rocky/9/{arch}\n    default-distros: [debian12]\n",
        );
        let spec = SpecFile::parse(&text, "Dockerfile.bundle").unwrap();
        let m = matrix(&spec.spec);
        let jobs: Vec<String> = m
            .include
            .iter()
            .map(|j| format!("{} {} {}", j.distro, j.platform, j.arch))
            .collect();
        assert_eq!(
            jobs,
            [
                "debian12 linux/amd64 amd64",
                "debian12 linux/arm64 arm64",
                "rocky9 linux/amd64 amd64",
                "rocky9 linux/arm64 arm64",
            ]
        );
        let json = serde_json::to_value(&m).unwrap();
        assert_eq!(json["include"][3]["distro"], "rocky9");
        assert_eq!(json["include"][3]["platform"], "linux/arm64");
        // Without os-packages: one job per platform.
        let none = SpecFile::parse(
            "# syntax=x\nname: b\nversion: v1\nplatforms: [linux/arm64]\nmodules:\n  f:\n    kind: files\n    from-kubespray: none\n",
            "Dockerfile.bundle",
        )
        .unwrap();
        assert_eq!(
            matrix(&none.spec).include,
            [MatrixJob {
                distro: String::new(),
                platform: "linux/arm64".into(),
                arch: "arm64".into()
            }]
        );
    }

    #[test]
    fn default_distros_are_built_unless_others_or_all_are_selected() {
        let text = SPEC.replace(
            "        path: debian/{arch}/bookworm\n",
            "        path: debian/{arch}/bookworm\n      - name: debian13\n        image: debian:trixie\n        manager: apt\n        groups: [common]\n        path: debian/{arch}/trixie\n    default-distros: [debian13]\n",
        );
        let spec = SpecFile::parse(&text, "Dockerfile.bundle").unwrap();
        let ctx = LocalDir::new(testdata());
        let names = |distros: &[&str]| {
            let opts = PlanOptions {
                targets: vec!["os-packages".into()],
                platforms: vec![Platform::linux(kpbuild_oci::platform::Arch::Amd64)],
                distros: distros.iter().map(|d| d.to_string()).collect(),
                ..Default::default()
            };
            let p = plan(&spec, &ctx, &opts).unwrap();
            let Work::OsPackages(OsPackagesWork { distros }) =
                &p.platforms[0].module("os-packages").unwrap().work
            else {
                panic!()
            };
            distros.iter().map(|d| d.name.clone()).collect::<Vec<_>>()
        };
        assert_eq!(names(&[]), ["debian13"]);
        assert_eq!(names(&["debian12"]), ["debian12"]);
        assert_eq!(names(&["all"]), ["debian12", "debian13"]);
        // A default that is not a distro is a spec error naming it.
        let bad = text.replace("default-distros: [debian13]", "default-distros: [debian14]");
        let e = SpecFile::parse(&bad, "Dockerfile.bundle")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("default distro `debian14` is not one of its distros (debian12, debian13)"),
            "{e}"
        );
        let bad = text.replace("name: debian13", "name: all");
        let e = SpecFile::parse(&bad, "Dockerfile.bundle")
            .unwrap_err()
            .to_string();
        assert!(e.contains("cannot be named `all`"), "{e}");
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
            platforms: vec![Platform::linux(kpbuild_oci::platform::Arch::Arm64)],
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
