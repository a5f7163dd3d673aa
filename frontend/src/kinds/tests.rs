//! Lowering of every kind, read back from the marshalled LLB: sources, exec ops, the job each
//! op runs (its mounted job file), networks and layout.

use std::collections::BTreeMap;

use bollard_buildkit_proto::pb;
use kpbuild_bundle::jobs::{JOB_PATH, Job};
use kpbuild_bundle::kinds::{
    ArchiveWork, ComposeWork, DistroWork, FileWork, FilesWork, ImageWork, ImagesWork,
    OsPackagesWork, PackageManager, PinWork, Work,
};
use kpbuild_bundle::plan::{ModulePlan, PlatformPlan};
use kpbuild_oci::image_ref::{ImageRef, StoredRef};
use kpbuild_oci::platform::{Arch, Platform};
use kpbuild_oci::registry_layout::Digest;

use crate::llb::{self, State};
use crate::lower::{LowerEnv, LowerError, REGISTRY_SECRET_DIR, lower_platform};

fn digest(c: char) -> Digest {
    format!("sha256:{}", c.to_string().repeat(64))
        .parse()
        .unwrap()
}

fn node() -> ImageRef {
    ImageRef::parse("quay.io/calico/node:v3").unwrap()
}

fn env() -> LowerEnv {
    LowerEnv {
        tool_image: "kpbuild/frontend:dev".into(),
        tool_binary: "/kpbuild".into(),
        worker_platform: Platform::linux(Arch::Amd64),
        merge_op: false,
        old_flightcontrol: false,
        digests: BTreeMap::from([(node(), digest('c'))]),
        registry_mirrors: vec!["quay.io=127.0.0.1:5000/quay.io".parse().unwrap()],
        context: None,
        dockerfiles: BTreeMap::new(),
        registry_secret: None,
        read_timeout_secs: 120,
    }
}

fn image_work(source: ImageRef, fetch: &str) -> ImageWork {
    ImageWork {
        stored: StoredRef::new(&source, source.repository.clone()),
        source,
        fetch: fetch.parse().unwrap(),
        platforms: vec![Platform::linux(Arch::Arm64)],
    }
}

fn plan() -> PlatformPlan {
    PlatformPlan {
        platform: Platform::linux(Arch::Arm64),
        modules: vec![
            ModulePlan {
                name: "files".into(),
                work: Work::Files(FilesWork {
                    files: vec![
                        FileWork {
                            url: "https://dl.k8s.io/a/kubelet".into(),
                            fetch_urls: vec!["http://127.0.0.1:8081/dl.k8s.io/a/kubelet".into()],
                            path: "files/dl.k8s.io/a/kubelet".into(),
                            pin: Some(PinWork {
                                algorithm: "sha256".into(),
                                hex: "a".repeat(64),
                            }),
                        },
                        FileWork {
                            url: "https://x.io/runsc".into(),
                            fetch_urls: vec!["https://x.io/runsc".into()],
                            path: "files/x.io/runsc".into(),
                            pin: Some(PinWork {
                                algorithm: "sha512".into(),
                                hex: "b".repeat(128),
                            }),
                        },
                    ],
                }),
            },
            ModulePlan {
                name: "images".into(),
                work: Work::Images(ImagesWork {
                    images: vec![image_work(node(), "127.0.0.1:5000/quay.io/calico/node")],
                }),
            },
        ],
    }
}

pub(crate) fn ops(state: &State) -> Vec<pb::Op> {
    llb::decode(&llb::marshal(state).unwrap().definition)
        .into_iter()
        .map(|(_, op)| op)
        .collect()
}

pub(crate) fn execs(ops: &[pb::Op]) -> Vec<pb::ExecOp> {
    ops.iter()
        .filter_map(|o| match &o.op {
            Some(pb::op::Op::Exec(e)) => Some(e.clone()),
            _ => None,
        })
        .collect()
}

/// The jobs the ops of `ops` run: the job files written for them, in order.
pub(crate) fn jobs(ops: &[pb::Op]) -> Vec<Job> {
    ops.iter()
        .filter_map(|o| match &o.op {
            Some(pb::op::Op::File(f)) => Some(f.actions.clone()),
            _ => None,
        })
        .flatten()
        .filter_map(|a| match a.action {
            Some(pb::file_action::Action::Mkfile(m)) if m.path == "/job.json" => {
                Some(Job::from_json("job.json", &m.data).unwrap())
            }
            _ => None,
        })
        .collect()
}

fn sources(ops: &[pb::Op]) -> Vec<pb::SourceOp> {
    ops.iter()
        .filter_map(|o| match &o.op {
            Some(pb::op::Op::Source(s)) => Some(s.clone()),
            _ => None,
        })
        .collect()
}

#[test]
fn files_are_fetch_file_ops_laid_out_by_url() {
    let modules = lower_platform(&plan(), &env()).unwrap();
    let ops = ops(&modules[0].1);
    assert!(
        sources(&ops)
            .iter()
            .all(|s| !s.identifier.starts_with("http"))
    );
    let jobs: Vec<_> = jobs(&ops)
        .into_iter()
        .filter_map(|j| match j {
            Job::FetchFile(f) => Some(f),
            _ => None,
        })
        .collect();
    assert_eq!(jobs.len(), 2);
    let kubelet = jobs.iter().find(|j| j.url.ends_with("/kubelet")).unwrap();
    assert_eq!(
        kubelet.sources,
        ["http://127.0.0.1:8081/dl.k8s.io/a/kubelet"]
    );
    assert_eq!(
        kubelet.bundle_path,
        "resources/nginx/files/dl.k8s.io/a/kubelet"
    );
    assert_eq!(kubelet.pin.as_ref().unwrap().hex, "a".repeat(64));
    assert_eq!(kubelet.read_timeout_secs, 120);
    let runsc = jobs.iter().find(|j| j.url.ends_with("/runsc")).unwrap();
    assert_eq!(runsc.pin.as_ref().unwrap().algorithm, "sha512");
    assert!(runsc.cache.is_some() && kubelet.cache.is_some());
    let execs = execs(&ops);
    assert_eq!(execs.len(), 2);
    for exec in &execs {
        assert_eq!(
            exec.meta.as_ref().unwrap().args,
            ["/kpbuild", "worker", JOB_PATH]
        );
        assert!(
            exec.mounts.iter().any(|m| m
                .cache_opt
                .as_ref()
                .is_some_and(|c| c.id == super::files::FILES_CACHE_ID)),
            "verified files are kept by pin in a cache mount"
        );
    }
    let mut nets: Vec<i32> = execs.iter().map(|e| e.network).collect();
    nets.sort();
    assert_eq!(
        nets,
        [pb::NetMode::Unset as i32, pb::NetMode::Host as i32],
        "the loopback mirror needs the host's network, x.io does not"
    );
    let dests: Vec<String> = ops
        .iter()
        .filter_map(|o| match &o.op {
            Some(pb::op::Op::File(f)) => Some(f.actions.clone()),
            _ => None,
        })
        .flatten()
        .filter_map(|a| match a.action {
            Some(pb::file_action::Action::Copy(c)) => Some(c.dest),
            _ => None,
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
fn images_run_the_sync_job_pinned_to_the_resolved_digest() {
    let modules = lower_platform(&plan(), &env()).unwrap();
    let ops = ops(&modules[1].1);
    let exec = &execs(&ops)[0];
    assert_eq!(
        exec.network,
        pb::NetMode::Host as i32,
        "the fetch registry is on loopback"
    );
    let platform = ops
        .iter()
        .find(|o| matches!(o.op, Some(pb::op::Op::Exec(_))))
        .and_then(|o| o.platform.clone())
        .unwrap();
    assert_eq!(
        platform.architecture, "amd64",
        "the engine runs natively on the worker"
    );
    let jobs = jobs(&ops);
    let Some(Job::SyncImage(job)) = jobs.iter().find(|j| matches!(j, Job::SyncImage(_))) else {
        panic!("a sync-image job")
    };
    let Some(Job::RegistryTree(tree)) = jobs.iter().find(|j| matches!(j, Job::RegistryTree(_)))
    else {
        panic!("a registry-tree job")
    };
    assert_eq!(
        job.reference.to_string(),
        format!("quay.io/calico/node:v3@{}", digest('c'))
    );
    assert_eq!(job.stored.to_string(), "calico/node:v3");
    // The sync op writes a fragment (manifests, links, the blob list); the registry-tree op
    // fetches the listed blobs into the module's tree, through the builder's blob cache.
    assert_eq!(job.dest.to_str(), Some("/out/registry"));
    assert_eq!(
        job.blob_list.as_deref().and_then(|p| p.to_str()),
        Some("/out/blobs.json")
    );
    assert_eq!(tree.dest.to_str(), Some("/out/resources/registry"));
    assert_eq!(tree.fragments.len(), 1);
    assert_eq!(tree.fragments[0].root.to_str(), Some("/in/0/registry"));
    let tree_exec = execs(&ops).pop().unwrap();
    assert_eq!(tree_exec.network, pb::NetMode::Host as i32);
    let fragment = tree_exec.mounts.iter().find(|m| m.dest == "/in/0").unwrap();
    assert!(fragment.readonly && fragment.output == -1);
    let cache = tree_exec
        .mounts
        .iter()
        .find(|m| m.mount_type == pb::MountType::Cache as i32)
        .unwrap();
    assert_eq!(
        cache.cache_opt.as_ref().map(|c| c.id.as_str()),
        Some(super::images::BLOB_CACHE_ID)
    );
    assert_eq!(job.platforms, [Platform::linux(Arch::Arm64)]);
    assert_eq!(job.mirrors[0].to_string(), "quay.io=127.0.0.1:5000/quay.io");
}

#[test]
fn pinned_references_keep_one_digest_and_ports_are_not_tags() {
    let mut e = env();
    let pinned = ImageRef::parse(&format!("host:5000/app:1@{}", digest('d'))).unwrap();
    e.digests.insert(pinned.clone(), digest('d'));
    let mut p = plan();
    p.modules[1].work = Work::Images(ImagesWork {
        images: vec![image_work(pinned, "host:5000/app")],
    });
    let modules = lower_platform(&p, &e).unwrap();
    let ops = ops(&modules[1].1);
    let jobs = jobs(&ops);
    let Some(Job::SyncImage(job)) = jobs.iter().find(|j| matches!(j, Job::SyncImage(_))) else {
        panic!()
    };
    assert!(jobs.iter().any(|j| matches!(j, Job::RegistryTree(_))));
    assert_eq!(
        job.reference.to_string(),
        format!("host:5000/app:1@{}", digest('d'))
    );
    assert_eq!(job.stored.repository, "app");
    assert!(
        execs(&ops)
            .iter()
            .all(|e| e.network == pb::NetMode::Unset as i32)
    );
}

#[test]
fn registry_credentials_come_from_a_secret_when_asked() {
    let exec_of = |e: &LowerEnv| {
        let modules = lower_platform(&plan(), e).unwrap();
        execs(&ops(&modules[1].1))[0].clone()
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

fn compose(nginx: &str, nginx_fetch: &str) -> PlatformPlan {
    let nginx = ImageRef::parse(nginx).unwrap();
    let registry = ImageRef::parse("docker.io/library/registry:2.8.1").unwrap();
    PlatformPlan {
        platform: Platform::linux(Arch::Amd64),
        modules: vec![ModulePlan {
            name: "compose".into(),
            work: Work::Compose(ComposeWork {
                nginx_image: nginx.clone(),
                registry_image: registry.clone(),
                archives: vec![
                    ArchiveWork {
                        source: nginx,
                        fetch: nginx_fetch.parse().unwrap(),
                        path: "resources/images/nginx-1.27.tar".into(),
                    },
                    ArchiveWork {
                        source: registry,
                        fetch: "registry-1.docker.io/library/registry".parse().unwrap(),
                        path: "resources/images/registry-2.8.1.tar".into(),
                    },
                ],
                installer: None,
            }),
        }],
    }
}

#[test]
fn compose_alone_gets_host_network_only_where_it_fetches_from_loopback() {
    let mut e = env();
    for r in [
        "127.0.0.1:5000/library/nginx:1.27",
        "docker.io/library/nginx:1.27",
        "docker.io/library/registry:2.8.1",
    ] {
        e.digests.insert(ImageRef::parse(r).unwrap(), digest('e'));
    }
    // nginx from a registry on this machine: its save job (and only it) on the host network.
    let p = compose(
        "127.0.0.1:5000/library/nginx:1.27",
        "127.0.0.1:5000/library/nginx",
    );
    let modules = lower_platform(&p, &e).unwrap();
    let compose_ops = ops(&modules[0].1);
    let networks: Vec<i32> = execs(&compose_ops).iter().map(|x| x.network).collect();
    assert_eq!(
        networks,
        [pb::NetMode::Host as i32, pb::NetMode::Unset as i32]
    );
    let names: Vec<String> = jobs(&compose_ops)
        .iter()
        .map(|j| match j {
            Job::SaveImage(s) => s.name.clone(),
            other => panic!("{other:?}"),
        })
        .collect();
    assert_eq!(
        names,
        [
            "127.0.0.1:5000/library/nginx:1.27",
            "docker.io/library/registry:2.8.1"
        ]
    );
    // The plan asks the same question of the same work: `kpbuild build --target compose` asks
    // for host networking.
    let plan = kpbuild_bundle::plan::Plan {
        name: "b".into(),
        version: "v1".into(),
        platforms: vec![p],
    };
    assert_eq!(plan.loopback_registries(), ["127.0.0.1:5000"]);
    // From upstream only: no host network anywhere.
    let p = compose(
        "docker.io/library/nginx:1.27",
        "registry-1.docker.io/library/nginx",
    );
    let modules = lower_platform(&p, &e).unwrap();
    assert!(
        execs(&ops(&modules[0].1))
            .iter()
            .all(|x| x.network != pb::NetMode::Host as i32)
    );
    let plan = kpbuild_bundle::plan::Plan {
        name: "b".into(),
        version: "v1".into(),
        platforms: vec![p],
    };
    assert!(!plan.needs_host_network());
}

#[test]
fn exec_ops_get_their_own_hostname_only_where_the_builder_needs_it() {
    let hostnames = |env: &LowerEnv| -> Vec<String> {
        lower_platform(&plan(), env)
            .unwrap()
            .iter()
            .flat_map(|(_, state)| execs(&ops(state)))
            .map(|e| e.meta.unwrap().hostname)
            .collect()
    };
    // A fixed builder (v0.9+): BuildKit's default, the same ops as before.
    let fixed = hostnames(&env());
    assert!(!fixed.is_empty());
    assert!(fixed.iter().all(String::is_empty), "{fixed:?}");
    // BuildKit v0.8: every exec op, of every kind, has its own.
    let v08 = hostnames(&LowerEnv {
        old_flightcontrol: true,
        ..env()
    });
    assert_eq!(v08.len(), fixed.len());
    assert!(
        v08.iter().all(|h| h == crate::lower::OWN_HOSTNAME),
        "{v08:?}"
    );
}

#[test]
fn a_script_that_cannot_be_made_names_the_module_and_stays_the_kinds_error() {
    let distro = DistroWork {
        name: "debian12".into(),
        image: "debian:bookworm".into(),
        manager: PackageManager::Apt,
        packages: vec!["curl".into(), "bad name".into()],
        optional: vec![],
        repositories: vec![],
        path: "debian/arm64/bookworm".into(),
    };
    let p = PlatformPlan {
        platform: Platform::linux(Arch::Arm64),
        modules: vec![ModulePlan {
            name: "os-packages".into(),
            work: Work::OsPackages(OsPackagesWork {
                distros: vec![distro],
            }),
        }],
    };
    let e = lower_platform(&p, &env()).unwrap_err();
    assert!(
        matches!(e, LowerError::Kind(crate::kinds::KindError::OsPackages(_))),
        "{e:?}"
    );
    let msg = e.to_string();
    assert!(
        msg.starts_with(
            "module `os-packages`: distro `debian12`: package `bad name` is not a package name"
        ),
        "{msg}"
    );
    let source = std::error::Error::source(&e).expect("the script's error");
    assert!(
        source.to_string().starts_with("distro `debian12`"),
        "{source}"
    );
}
