//! Lowering a module plan into LLB: one state per module and platform, laid out as in the
//! bundle (`resources/nginx/files/…`, `resources/registry/docker/registry/v2/…`), and the bundle
//! state that merges them.

use std::collections::BTreeMap;

use kpbuild_modules::image_ref::ImageRef;
use kpbuild_modules::kubespray::Arch;
use kpbuild_modules::ospkg::{self, ScriptOptions};
use kpbuild_modules::plan::{
    ComposeWork, DistroWork, DockerfileWork, FileWork, ImageWork, PlatformPlan, Work,
};

use crate::llb::{self, CopyOptions, Exec, FileOp, Network, Platform, State};

/// Where the files module puts downloads, in the bundle.
pub const NGINX_ROOT: &str = "resources/nginx";
/// Where the images module puts the registry storage tree, in the bundle.
pub const REGISTRY_ROOT: &str = "resources/registry";

/// What lowering needs beyond the plan.
#[derive(Clone, Debug)]
pub struct LowerEnv {
    /// The frontend image (the `source` option): exec ops run the kpbuild binary from it.
    pub tool_image: String,
    /// Path of the kpbuild binary inside `tool_image`.
    pub tool_binary: String,
    /// The worker's own platform: exec ops run the (native) kpbuild binary on it, whatever the
    /// bundle's target platform.
    pub worker_platform: Platform,
    /// `MergeOp` is available (BuildKit ≥ 0.10); otherwise trees are merged with copies.
    pub merge_op: bool,
    /// Resolved manifest digests by image source reference: pins each sync op to what the tag
    /// pointed at while planning.
    pub digests: BTreeMap<String, String>,
    /// Registry mirrors as `SRC=DST` (passed to the sync engine).
    pub registry_mirrors: Vec<String>,
    /// The build context, for modules that take files from it (installer, Dockerfile contexts).
    pub context: Option<State>,
    /// Results of the nested Dockerfile builds, by (module, architecture): the result's
    /// definition and its image config.
    pub dockerfiles: BTreeMap<(String, String), (bollard_buildkit_proto::pb::Definition, Vec<u8>)>,
    /// The id of a build secret holding a Docker config file (`docker build --secret
    /// id=ID,src=~/.docker/config.json`): mounted into every sync op as its `DOCKER_CONFIG`.
    /// Only the id is in the LLB and the cache keys.
    pub registry_secret: Option<String>,
}

/// Where the registry credentials secret is mounted in sync ops (`DOCKER_CONFIG` is its
/// directory).
pub const REGISTRY_SECRET_DIR: &str = "/run/kpbuild-registry-auth";

/// Errors lowering a plan.
#[derive(Debug, thiserror::Error)]
pub enum LowerError {
    #[error("image {0} has no resolved digest (internal: resolve images before lowering)")]
    Unresolved(String),
    #[error("module `{module}` ({kind}) is not supported by this frontend yet")]
    Unsupported { module: String, kind: &'static str },
    #[error("module `{module}`: {source}")]
    Script {
        module: String,
        source: ospkg::ScriptError,
    },
    #[error("the worker's platform {0} is not one kpbuild can run its tools on")]
    WorkerArch(String),
}

/// The state of each module of one platform's plan, in plan order.
pub fn lower_platform(
    plan: &PlatformPlan,
    env: &LowerEnv,
) -> Result<Vec<(String, State)>, LowerError> {
    let arch = plan.platform.arch.image_arch();
    let mut out = Vec::new();
    for m in &plan.modules {
        let state = match &m.work {
            Work::Files { files } => files_module(&m.name, arch, files, env),
            Work::Images { images } => images_module(&m.name, arch, images, env)?,
            Work::OsPackages { distros } => {
                os_packages_module(&m.name, plan.platform.arch, distros, env)?
            }
            Work::Dockerfile(d) => dockerfile_module(&m.name, arch, d, env)?,
            Work::Compose(c) => compose_module(&m.name, arch, c, env)?,
        };
        out.push((m.name.clone(), state));
    }
    Ok(out)
}

/// One directory tree from several: a `MergeOp` where available, else copies in order.
pub fn merge_trees(states: Vec<State>, name: &str, env: &LowerEnv) -> State {
    if states.len() == 1 {
        return states.into_iter().next().expect("one state");
    }
    if env.merge_op {
        return llb::merge(states).named(name);
    }
    let mut op = FileOp::on(None).named(name);
    for s in &states {
        op = op.copy(
            s,
            "/",
            "/",
            CopyOptions {
                contents_only: true,
                create_parents: true,
                ..Default::default()
            },
        );
    }
    op.result()
}

fn file_name(work: &FileWork) -> String {
    work.path.rsplit('/').next().unwrap_or("file").to_string()
}

/// One HTTP source per file, pinned to its sha256 where known; laid out by URL.
fn files_module(module: &str, arch: &str, files: &[FileWork], env: &LowerEnv) -> State {
    let mut op = FileOp::on(None).named(format!(
        "{module} [linux/{arch}]: lay out {} files",
        files.len()
    ));
    if files.is_empty() {
        return FileOp::on(None)
            .mkdir(&format!("/{NGINX_ROOT}/files"), 0o755, true)
            .result();
    }
    for f in files {
        let name = file_name(f);
        let dest = format!("/{NGINX_ROOT}/{}", f.path);
        let sha256 = f
            .pin
            .as_ref()
            .filter(|p| p.algorithm == "sha256")
            .map(|p| p.hex.as_str());
        let source =
            llb::http(&f.fetch_url, sha256, Some(&name)).named(format!("download {}", f.url));
        let (from, src) = match &f.pin {
            Some(p) if p.algorithm != "sha256" => {
                // BuildKit pins HTTP sources with sha256 only: verify other digests in an op.
                let checked = Exec::new(
                    llb::image(&env.tool_image, &env.worker_platform),
                    [
                        env.tool_binary.as_str(),
                        "worker",
                        "check-file",
                        "--algorithm",
                        p.algorithm.as_str(),
                        "--hex",
                        p.hex.as_str(),
                        &format!("/in/{name}"),
                        &format!("/out/{name}"),
                    ],
                )
                .readonly_root()
                .platform(&env.worker_platform)
                .mount_readonly("/in", source, "")
                .mount_scratch("/out")
                .network(Network::None)
                .named(format!("verify {} ({})", f.url, p.algorithm))
                .run();
                (checked.mount("/out"), format!("/{name}"))
            }
            _ => (source, format!("/{name}")),
        };
        op = op.copy(
            &from,
            &src,
            &dest,
            CopyOptions {
                create_parents: true,
                mode: Some(0o644),
                ..Default::default()
            },
        );
    }
    op.result()
}

/// Per distro, an exec op on the distro's own base image, natively on the worker (no
/// emulation), that resolves and downloads the complete closure for the target architecture and
/// writes the repository index (the script of [`ospkg::script`]); then the repositories and the
/// client source files laid out under `resources/nginx/`.
fn os_packages_module(
    module: &str,
    arch: Arch,
    distros: &[DistroWork],
    env: &LowerEnv,
) -> Result<State, LowerError> {
    let host = Arch::parse(&env.worker_platform.architecture)
        .ok_or_else(|| LowerError::WorkerArch(env.worker_platform.to_string()))?;
    let script_err = |source| LowerError::Script {
        module: module.to_string(),
        source,
    };
    let mut layout = FileOp::on(None)
        .named(format!(
            "{module} [linux/{arch}]: lay out {} repositories",
            distros.len()
        ))
        .mkdir(&format!("/{}", ospkg::CLIENT_DIR), 0o755, true);
    for d in distros {
        let opts = ScriptOptions {
            arch,
            host,
            recommends: false,
            out_root: "/out".into(),
        };
        let script = ospkg::script(d, &opts).map_err(script_err)?;
        // The script goes in as a file: a failing op then names a short command, and its own
        // message (which package, which distro) is what the user reads above it.
        let script_name = format!("{}-{arch}.sh", d.name);
        let script_state = FileOp::on(None)
            .mkfile(&format!("/{script_name}"), 0o755, script)
            .result();
        // BuildKit takes fully qualified references only (`docker.io/library/debian:bookworm`).
        let image = ImageRef::parse(&d.image)
            .map(|r| r.to_string())
            .map_err(|_| {
                script_err(ospkg::ScriptError::BadImage {
                    distro: d.name.clone(),
                    image: d.image.clone(),
                })
            })?;
        let repo = Exec::new(
            llb::image(&image, &env.worker_platform),
            ["/bin/sh".to_string(), format!("/kpbuild/{script_name}")],
        )
        .platform(&env.worker_platform)
        .mount_readonly("/kpbuild", script_state, "")
        .mount_scratch("/out")
        .named(format!(
            "{module} [linux/{arch}]: {} ({}, {}): {} packages and their closure",
            d.name,
            d.image,
            format!("{:?}", d.manager).to_lowercase(),
            d.packages.len()
        ))
        .run()
        .mount("/out");
        layout = layout.copy(
            &repo,
            "/",
            &format!("/{NGINX_ROOT}/"),
            CopyOptions {
                contents_only: true,
                create_parents: true,
                ..Default::default()
            },
        );
        let client = ospkg::client_file(d, arch).map_err(script_err)?;
        layout = layout.mkfile(&format!("/{}", client.path), 0o644, client.content);
    }
    Ok(layout.result())
}

/// The digest-pinned reference an op fetches: a spec's own digest is kept, a tag gets the
/// digest it had while planning.
fn pinned(source: &str, env: &LowerEnv) -> Result<String, LowerError> {
    let digest = env
        .digests
        .get(source)
        .ok_or_else(|| LowerError::Unresolved(source.to_string()))?;
    let unpinned = source.split('@').next().unwrap_or(source);
    Ok(format!("{unpinned}@{digest}"))
}

/// nginx and registry as loadable archives (one `kpbuild worker save-image` op each), the
/// compose file and the services' configurations, and the installer files from the context.
fn compose_module(
    module: &str,
    arch: &str,
    c: &ComposeWork,
    env: &LowerEnv,
) -> Result<State, LowerError> {
    let tool = llb::image(&env.tool_image, &env.worker_platform);
    let mut layout = FileOp::on(None).named(format!(
        "{module} [linux/{arch}]: compose files and image archives"
    ));
    for a in &c.archives {
        let mut args: Vec<String> = vec![
            env.tool_binary.clone(),
            "worker".into(),
            "save-image".into(),
            "--platform".into(),
            format!("linux/{arch}"),
            "--tag".into(),
            a.source.split('@').next().unwrap_or(&a.source).to_string(),
            "--out".into(),
            format!("/out/{}", a.path),
        ];
        for m in &env.registry_mirrors {
            args.push("--mirror".into());
            args.push(m.clone());
        }
        args.push(pinned(&a.source, env)?);
        let host = is_loopback_registry(a.fetch.split('/').next().unwrap_or(""));
        let saved = Exec::new(tool.clone(), args)
            .readonly_root()
            .platform(&env.worker_platform)
            .mount_tmpfs("/tmp")
            .mount_scratch("/out")
            .network(if host {
                Network::Host
            } else {
                Network::Default
            })
            .named(format!(
                "{module} [linux/{arch}]: save {} as {}",
                a.source, a.path
            ))
            .run()
            .mount("/out");
        layout = layout.copy(
            &saved,
            "/",
            "/",
            CopyOptions {
                contents_only: true,
                create_parents: true,
                ..Default::default()
            },
        );
    }
    layout = layout
        .mkfile(
            "/compose.yaml",
            0o644,
            kpbuild_modules::compose::compose_yaml(&c.nginx_image, &c.registry_image),
        )
        .mkdir("/config", 0o755, true)
        .mkfile(
            "/config/nginx.conf",
            0o644,
            kpbuild_modules::compose::nginx_conf(),
        )
        .mkfile(
            "/config/registry.yml",
            0o644,
            kpbuild_modules::compose::registry_yml(),
        );
    if let Some(dir) = &c.installer {
        let ctx = env
            .context
            .as_ref()
            .ok_or_else(|| LowerError::Unsupported {
                module: module.into(),
                kind: "compose (no build context)",
            })?;
        layout = layout.copy(
            ctx,
            &format!("/{}/", dir.trim_matches('/')),
            "/",
            CopyOptions {
                contents_only: true,
                create_parents: true,
                ..Default::default()
            },
        );
    }
    Ok(layout.result())
}

/// The image a nested solve through BuildKit's Dockerfile frontend built (see `run.rs`), as an
/// archive `docker load` accepts: a `kpbuild worker image-archive` op over its root filesystem.
fn dockerfile_module(
    module: &str,
    arch: &str,
    d: &DockerfileWork,
    env: &LowerEnv,
) -> Result<State, LowerError> {
    let (def, config) = env
        .dockerfiles
        .get(&(module.to_string(), arch.to_string()))
        .ok_or_else(|| LowerError::Unsupported {
            module: module.into(),
            kind: "dockerfile (not built)",
        })?;
    let rootfs = llb::from_definition(def).ok_or_else(|| LowerError::Unsupported {
        module: module.into(),
        kind: "dockerfile (empty result)",
    })?;
    let cfg = FileOp::on(None)
        .mkfile("/config.json", 0o644, config.clone())
        .result();
    Ok(Exec::new(
        llb::image(&env.tool_image, &env.worker_platform),
        [
            env.tool_binary.clone(),
            "worker".into(),
            "image-archive".into(),
            "--rootfs".into(),
            "/rootfs".into(),
            "--config".into(),
            "/cfg/config.json".into(),
            "--tag".into(),
            d.image.clone(),
            "--out".into(),
            format!("/out/{}", d.archive),
        ],
    )
    .readonly_root()
    .platform(&env.worker_platform)
    .mount_readonly("/rootfs", rootfs, "")
    .mount_readonly("/cfg", cfg, "")
    .mount_tmpfs("/tmp")
    .mount_scratch("/out")
    .network(Network::None)
    .named(format!(
        "{module} [linux/{arch}]: archive {} as {}",
        d.image, d.archive
    ))
    .run()
    .mount("/out"))
}

/// What the manifest op records besides the module trees.
#[derive(Clone, Debug)]
pub struct LockParams {
    pub bundle: String,
    pub version: String,
    pub spec_file: String,
    pub spec_sha256: String,
}

/// The bundle manifest (`kubeplay.lock.json`): a `kpbuild worker bundle-manifest` op that reads
/// every module's tree (mounted read-only, not merged) and the platform's plan, checks every file
/// against its pin, and records files, images, packages and artifacts.
pub fn lock_op(
    plan: &PlatformPlan,
    modules: &[(String, State)],
    params: &LockParams,
    env: &LowerEnv,
) -> Result<State, LowerError> {
    let plan_json = serde_json::to_vec_pretty(plan).expect("plans serialize");
    let plan_state = FileOp::on(None)
        .mkfile("/plan.json", 0o644, plan_json)
        .result();
    let mut args: Vec<String> = vec![
        env.tool_binary.clone(),
        "worker".into(),
        "bundle-manifest".into(),
        "--plan".into(),
        "/plan/plan.json".into(),
        "--bundle".into(),
        params.bundle.clone(),
        "--version".into(),
        params.version.clone(),
        "--spec-file".into(),
        params.spec_file.clone(),
        "--spec-sha256".into(),
        params.spec_sha256.clone(),
        "--out".into(),
        format!("/out/{}", kpbuild_modules::lock::LOCK_FILE),
    ];
    for (name, _) in modules {
        args.push("--tree".into());
        args.push(format!("{name}=/in/{name}"));
    }
    let mut exec = Exec::new(llb::image(&env.tool_image, &env.worker_platform), args)
        .readonly_root()
        .platform(&env.worker_platform)
        .mount_readonly("/plan", plan_state, "");
    for (name, state) in modules {
        exec = exec.mount_readonly(&format!("/in/{name}"), state.clone(), "");
    }
    Ok(exec
        .mount_scratch("/out")
        .network(Network::None)
        .named(format!(
            "lock [{}]: write {}",
            plan.platform,
            kpbuild_modules::lock::LOCK_FILE
        ))
        .run()
        .mount("/out"))
}

/// Whether a registry host is on this machine (then the op needs the host's network).
pub fn is_loopback_registry(host: &str) -> bool {
    let h = host
        .rsplit_once(':')
        .map(|(h, p)| {
            if p.chars().all(|c| c.is_ascii_digit()) {
                h
            } else {
                host
            }
        })
        .unwrap_or(host);
    let h = h.trim_start_matches('[').trim_end_matches(']');
    h == "localhost" || h == "::1" || h.starts_with("127.")
}

/// One exec op per image running the sync engine into a registry-tree fragment; the fragments
/// merged into one tree (blobs shared between images are the same files, stored once).
fn images_module(
    module: &str,
    arch: &str,
    images: &[ImageWork],
    env: &LowerEnv,
) -> Result<State, LowerError> {
    let tool = llb::image(&env.tool_image, &env.worker_platform);
    let mut fragments = Vec::new();
    for img in images {
        let digest = env
            .digests
            .get(&img.source)
            .ok_or_else(|| LowerError::Unresolved(img.source.clone()))?;
        // A reference pinned in the spec keeps its digest; a tag gets the one resolved now.
        let unpinned = img.source.split('@').next().unwrap_or(&img.source);
        let pinned = format!("{unpinned}@{digest}");
        let mut args: Vec<String> = vec![
            env.tool_binary.clone(),
            "sync-images".into(),
            "--dest".into(),
            format!("/out/{REGISTRY_ROOT}"),
        ];
        for p in &img.platforms {
            args.push("--platform".into());
            args.push(p.clone());
        }
        for m in &env.registry_mirrors {
            args.push("--mirror".into());
            args.push(m.clone());
        }
        let default_stored = ImageRef::parse(&img.source)
            .map(|r| r.repository)
            .unwrap_or_default();
        let stored_repo = img
            .stored
            .split([':', '@'])
            .next()
            .unwrap_or(&img.stored)
            .to_string();
        let map = (stored_repo != default_stored).then(|| {
            let src = img.source.split([':', '@']).next().unwrap_or(&img.source);
            FileOp::on(None)
                .mkfile(
                    "/map.yaml",
                    0o644,
                    format!("- src: {src}\n  dest: {stored_repo}\n"),
                )
                .result()
        });
        if map.is_some() {
            args.push("--map".into());
            args.push("/map/map.yaml".into());
        }
        args.push(pinned);
        let fetch_host = img.fetch.split('/').next().unwrap_or("");
        let network = if is_loopback_registry(fetch_host) {
            Network::Host
        } else {
            Network::Default
        };
        let mut exec = Exec::new(tool.clone(), args)
            .readonly_root()
            .platform(&env.worker_platform);
        if let Some(m) = map {
            exec = exec.mount_readonly("/map", m, "");
        }
        if let Some(id) = &env.registry_secret {
            exec = exec
                .mount_secret(&format!("{REGISTRY_SECRET_DIR}/config.json"), id, false)
                .env("DOCKER_CONFIG", REGISTRY_SECRET_DIR);
        }
        let r = exec
            .mount_scratch("/out")
            .network(network)
            .named(format!(
                "{module} [linux/{arch}]: sync {} as {}",
                img.source, img.stored
            ))
            .run();
        fragments.push(r.mount("/out"));
    }
    if fragments.is_empty() {
        return Ok(FileOp::on(None)
            .mkdir(&format!("/{REGISTRY_ROOT}/docker/registry/v2"), 0o755, true)
            .result());
    }
    Ok(merge_trees(
        fragments,
        &format!(
            "{module} [linux/{arch}]: merge {} registry trees",
            images.len()
        ),
        env,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use bollard_buildkit_proto::pb;
    use kpbuild_modules::kubespray::Arch;
    use kpbuild_modules::plan::{ModulePlan, PinWork};
    use kpbuild_modules::spec::Platform as SpecPlatform;

    fn env() -> LowerEnv {
        let mut digests = BTreeMap::new();
        digests.insert(
            "quay.io/calico/node:v3".to_string(),
            format!("sha256:{}", "c".repeat(64)),
        );
        LowerEnv {
            tool_image: "kpbuild/frontend:dev".into(),
            tool_binary: "/kpbuild".into(),
            worker_platform: Platform::linux("amd64"),
            merge_op: false,
            digests,
            registry_mirrors: vec!["quay.io=127.0.0.1:5000/quay.io".into()],
            context: None,
            dockerfiles: BTreeMap::new(),
            registry_secret: None,
        }
    }

    fn plan() -> PlatformPlan {
        PlatformPlan {
            platform: SpecPlatform { arch: Arch::Arm64 },
            modules: vec![
                ModulePlan {
                    name: "files".into(),
                    work: Work::Files {
                        files: vec![
                            FileWork {
                                url: "https://dl.k8s.io/a/kubelet".into(),
                                fetch_url: "http://127.0.0.1:8081/dl.k8s.io/a/kubelet".into(),
                                path: "files/dl.k8s.io/a/kubelet".into(),
                                pin: Some(PinWork {
                                    algorithm: "sha256".into(),
                                    hex: "a".repeat(64),
                                }),
                            },
                            FileWork {
                                url: "https://x.io/runsc".into(),
                                fetch_url: "https://x.io/runsc".into(),
                                path: "files/x.io/runsc".into(),
                                pin: Some(PinWork {
                                    algorithm: "sha512".into(),
                                    hex: "b".repeat(128),
                                }),
                            },
                        ],
                    },
                },
                ModulePlan {
                    name: "images".into(),
                    work: Work::Images {
                        images: vec![ImageWork {
                            source: "quay.io/calico/node:v3".into(),
                            fetch: "127.0.0.1:5000/quay.io/calico/node".into(),
                            stored: "calico/node:v3".into(),
                            platforms: vec!["linux/arm64".into()],
                        }],
                    },
                },
            ],
        }
    }

    fn ops(state: &State) -> Vec<pb::Op> {
        llb::decode(&llb::marshal(state).unwrap().definition)
            .into_iter()
            .map(|(_, op)| op)
            .collect()
    }

    #[test]
    fn files_are_pinned_http_sources_laid_out_by_url() {
        let modules = lower_platform(&plan(), &env()).unwrap();
        let ops = ops(&modules[0].1);
        let http: Vec<&pb::SourceOp> = ops
            .iter()
            .filter_map(|o| {
                if let Some(pb::op::Op::Source(s)) = &o.op {
                    Some(s)
                } else {
                    None
                }
            })
            .collect();
        let kubelet = http
            .iter()
            .find(|s| s.identifier.ends_with("/kubelet"))
            .unwrap();
        assert_eq!(
            kubelet.identifier,
            "http://127.0.0.1:8081/dl.k8s.io/a/kubelet"
        );
        assert_eq!(
            kubelet.attrs["http.checksum"],
            format!("sha256:{}", "a".repeat(64))
        );
        let runsc = http
            .iter()
            .find(|s| s.identifier.ends_with("/runsc"))
            .unwrap();
        assert!(
            !runsc.attrs.contains_key("http.checksum"),
            "sha512 is verified by an op instead"
        );
        let exec = ops
            .iter()
            .find_map(|o| {
                if let Some(pb::op::Op::Exec(e)) = &o.op {
                    Some(e)
                } else {
                    None
                }
            })
            .unwrap();
        let args = &exec.meta.as_ref().unwrap().args;
        assert_eq!(
            &args[1..5],
            ["worker", "check-file", "--algorithm", "sha512"]
        );
        let file = ops
            .iter()
            .find_map(|o| {
                if let Some(pb::op::Op::File(f)) = &o.op {
                    Some(f)
                } else {
                    None
                }
            })
            .unwrap();
        let dests: Vec<String> = file
            .actions
            .iter()
            .filter_map(|a| {
                if let Some(pb::file_action::Action::Copy(c)) = &a.action {
                    Some(c.dest.clone())
                } else {
                    None
                }
            })
            .collect();
        assert_eq!(
            dests,
            [
                "/resources/nginx/files/dl.k8s.io/a/kubelet",
                "/resources/nginx/files/x.io/runsc"
            ]
        );
    }

    #[test]
    fn images_run_the_engine_pinned_to_the_resolved_digest() {
        let modules = lower_platform(&plan(), &env()).unwrap();
        let ops = ops(&modules[1].1);
        let exec = ops
            .iter()
            .find_map(|o| {
                if let Some(pb::op::Op::Exec(e)) = &o.op {
                    Some(e.clone())
                } else {
                    None
                }
            })
            .unwrap();
        let args = exec.meta.unwrap().args;
        assert_eq!(args[0], "/kpbuild");
        assert!(args.windows(2).any(|w| w == ["--platform", "linux/arm64"]));
        assert!(
            args.windows(2)
                .any(|w| w == ["--mirror", "quay.io=127.0.0.1:5000/quay.io"])
        );
        assert_eq!(
            args.last().unwrap(),
            &format!("quay.io/calico/node:v3@sha256:{}", "c".repeat(64))
        );
        assert_eq!(
            exec.network,
            pb::NetMode::Host as i32,
            "the fetch registry is on loopback"
        );
        let platform = ops
            .iter()
            .find(|o| matches!(o.op, Some(pb::op::Op::Exec(_))))
            .unwrap()
            .platform
            .clone()
            .unwrap();
        assert_eq!(
            platform.architecture, "amd64",
            "the engine runs natively on the worker"
        );
    }

    #[test]
    fn pinned_references_keep_one_digest() {
        let mut e = env();
        let d = format!("sha256:{}", "d".repeat(64));
        let mut p = plan();
        let Work::Images { images } = &mut p.modules[1].work else {
            panic!()
        };
        images[0].source = format!("quay.io/calico/node:v3@{d}");
        e.digests.insert(images[0].source.clone(), d.clone());
        let modules = lower_platform(&p, &e).unwrap();
        let ops = ops(&modules[1].1);
        let exec = ops
            .iter()
            .find_map(|o| {
                if let Some(pb::op::Op::Exec(x)) = &o.op {
                    Some(x.clone())
                } else {
                    None
                }
            })
            .unwrap();
        assert_eq!(
            exec.meta.unwrap().args.last().unwrap(),
            &format!("quay.io/calico/node:v3@{d}")
        );
    }

    #[test]
    fn registry_credentials_come_from_a_secret_when_asked() {
        let exec_of = |e: &LowerEnv| {
            let modules = lower_platform(&plan(), e).unwrap();
            ops(&modules[1].1)
                .iter()
                .find_map(|o| match &o.op {
                    Some(pb::op::Op::Exec(x)) => Some(x.clone()),
                    _ => None,
                })
                .unwrap()
        };
        let plain = exec_of(&env());
        assert!(
            plain
                .mounts
                .iter()
                .all(|m| m.mount_type != pb::MountType::Secret as i32)
        );
        assert!(
            !plain
                .meta
                .unwrap()
                .env
                .iter()
                .any(|v| v.starts_with("DOCKER_CONFIG="))
        );
        let mut e = env();
        e.registry_secret = Some("registry-auth".into());
        let exec = exec_of(&e);
        let secret = exec
            .mounts
            .iter()
            .find(|m| m.mount_type == pb::MountType::Secret as i32)
            .unwrap();
        assert_eq!(secret.dest, format!("{REGISTRY_SECRET_DIR}/config.json"));
        assert_eq!(secret.secret_opt.as_ref().unwrap().id, "registry-auth");
        assert!(
            exec.meta
                .unwrap()
                .env
                .contains(&format!("DOCKER_CONFIG={REGISTRY_SECRET_DIR}"))
        );
    }

    #[test]
    fn unresolved_images_are_refused() {
        let mut e = env();
        e.digests.clear();
        assert!(matches!(
            lower_platform(&plan(), &e),
            Err(LowerError::Unresolved(_))
        ));
    }

    #[test]
    fn loopback_hosts() {
        assert!(is_loopback_registry("127.0.0.1:5000"));
        assert!(is_loopback_registry("localhost"));
        assert!(is_loopback_registry("[::1]:5000"));
        assert!(!is_loopback_registry("quay.io"));
        assert!(!is_loopback_registry("registry.local:5000"));
    }
}
