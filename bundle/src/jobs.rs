//! The contract between an LLB exec op and the `kpbuild worker` job it runs: one serde type
//! per job, written by the frontend's lowering as a JSON file mounted into the op at
//! [`JOB_PATH`], read back by `kpbuild worker` in the same binary. Nothing else crosses that
//! boundary: no argv is built by hand on one side and parsed on the other.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::kinds::PinWork;
use crate::plan::PlatformPlan;
use kpbuild_oci::image_ref::{ImageRef, Mirror, StoredRef};
use kpbuild_oci::platform::Platform;

/// Where the job file is mounted in the op (a read-only mount of its own).
pub const JOB_DIR: &str = "/kpbuild-job";
/// The job file's name in [`JOB_DIR`].
pub const JOB_FILE: &str = "job.json";
/// The job file's path in the op.
pub const JOB_PATH: &str = "/kpbuild-job/job.json";

/// A job an exec op runs.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "job", rename_all = "kebab-case")]
pub enum Job {
    /// Sync one image into a registry-tree fragment.
    SyncImage(SyncImageJob),
    /// Write a registry tree from the fragments of sync-image jobs that listed their blobs:
    /// every listed blob fetched once (or copied from a blob cache), the fragments' manifests
    /// and links copied.
    RegistryTree(RegistryTreeJob),
    /// Fetch one file of the files module from its locations in order, with retries, and
    /// write it only once it matches its pin (through a cache of verified files by pin).
    FetchFile(FetchFileJob),
    /// Fetch one image for one platform and write an archive `docker load` accepts.
    SaveImage(SaveImageJob),
    /// Write a root filesystem and its config as a one-layer archive `docker load` accepts.
    ImageArchive(ImageArchiveJob),
    /// Write the bundle manifest from the module trees of one platform.
    BundleManifest(BundleManifestJob),
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SyncImageJob {
    /// The storage root to write (what a registry mounts as `/var/lib/registry`).
    pub dest: PathBuf,
    /// The reference pinned to the digest resolved while planning (`repo:tag@digest`).
    pub reference: ImageRef,
    /// The name it is stored under.
    pub stored: StoredRef,
    /// The platforms whose manifests are kept.
    pub platforms: Vec<Platform>,
    pub mirrors: Vec<Mirror>,
    /// Fetch only the manifests (and write every link), listing the config and layer blobs
    /// in this file ([`BlobList`]) for a [`RegistryTreeJob`] to fetch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub blob_list: Option<PathBuf>,
}

/// The config and layer blobs a sync-image job with a `blob_list` left to fetch, and where
/// from.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BlobList {
    pub blobs: Vec<ListedBlob>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListedBlob {
    pub digest: kpbuild_oci::registry_layout::Digest,
    pub size: u64,
    /// The registry host and repository to fetch it from.
    pub registry: String,
    pub repository: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegistryTreeJob {
    /// The fragments, in order: each a storage root and its blob list.
    pub fragments: Vec<TreeFragment>,
    /// The storage root to write.
    pub dest: PathBuf,
    /// A storage root used as a blob cache (a cache mount shared across builds).
    pub blob_cache: Option<PathBuf>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TreeFragment {
    pub root: PathBuf,
    pub blob_list: PathBuf,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FetchFileJob {
    /// The upstream URL (what errors name; the bundle lays the file out by it).
    pub url: String,
    /// The file's path in the bundle (what errors name).
    pub bundle_path: String,
    /// Where the content is fetched from, tried in order.
    pub sources: Vec<String>,
    /// The pin; an unpinned file is fetched without a check and never cached by content.
    pub pin: Option<PinWork>,
    /// Where to write the file (renamed into place once verified).
    pub dest: PathBuf,
    /// A directory of verified files by pin (`<algorithm>/<hex>`), shared across builds:
    /// a file found there is copied (verified again), not fetched.
    pub cache: Option<PathBuf>,
    /// Retries per location after a transient failure (5xx, 429, 408, a broken connection).
    pub retries: u32,
    /// A response that sends nothing for this many seconds is cut and retried.
    pub read_timeout_secs: u64,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SaveImageJob {
    /// The reference pinned to the digest resolved while planning.
    pub reference: ImageRef,
    /// The platform to keep.
    pub platform: Platform,
    pub mirrors: Vec<Mirror>,
    /// The name `docker load` gives the image (the reference without its digest).
    pub name: String,
    /// The archive to write.
    pub out: PathBuf,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ImageArchiveJob {
    pub rootfs: PathBuf,
    /// The image config (JSON), as BuildKit's Dockerfile frontend made it.
    pub config: PathBuf,
    /// The name `docker load` gives the image.
    pub tag: String,
    pub out: PathBuf,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BundleManifestJob {
    /// The platform's plan, as the frontend planned it.
    pub plan: PlatformPlan,
    pub bundle: String,
    pub version: String,
    pub spec_file: String,
    pub spec_sha256: String,
    /// The spec's `vars.kubespray` (the SBOMs' source), if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kubespray: Option<String>,
    /// The SBOMs' creation time: the build's `SOURCE_DATE_EPOCH`, else the spec's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_date_epoch: Option<u64>,
    /// Each module's tree, laid out from the bundle root.
    pub trees: Vec<ModuleTree>,
    /// Where to write the manifest; the SBOMs go beside it.
    pub out: PathBuf,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModuleTree {
    pub module: String,
    pub dir: PathBuf,
}

/// A job file that cannot be read.
#[derive(Debug, thiserror::Error)]
#[error(
    "job file {path}: {message} (it is written by kpbuild's frontend; are the frontend image and the worker the same kpbuild?)"
)]
pub struct JobError {
    pub path: String,
    pub message: String,
}

impl Job {
    /// The job file's bytes (deterministic: part of the op's cache key).
    pub fn to_json(&self) -> Vec<u8> {
        let mut out = serde_json::to_vec_pretty(self).expect("jobs serialize");
        out.push(b'\n');
        out
    }

    /// Reads a job file's bytes; `path` names it in errors.
    pub fn from_json(path: &str, bytes: &[u8]) -> Result<Job, JobError> {
        serde_json::from_slice(bytes).map_err(|e| JobError {
            path: path.to_string(),
            message: e.to_string(),
        })
    }

    /// The command an op runs: the kpbuild binary's `worker` reading the mounted job file.
    pub fn argv(binary: &str) -> Vec<String> {
        vec![binary.to_string(), "worker".into(), JOB_PATH.into()]
    }

    /// What the job is, for logs.
    pub fn name(&self) -> &'static str {
        match self {
            Job::SyncImage(_) => "sync-image",
            Job::RegistryTree(_) => "registry-tree",
            Job::FetchFile(_) => "fetch-file",
            Job::SaveImage(_) => "save-image",
            Job::ImageArchive(_) => "image-archive",
            Job::BundleManifest(_) => "bundle-manifest",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kinds::{FileWork, FilesWork, PinWork, Work};
    use crate::plan::ModulePlan;
    use kpbuild_oci::platform::Arch;

    fn digest() -> kpbuild_oci::registry_layout::Digest {
        format!("sha256:{}", "c".repeat(64)).parse().unwrap()
    }

    fn round_trip(job: Job) {
        let bytes = job.to_json();
        assert_eq!(Job::from_json("job.json", &bytes).unwrap(), job);
        assert_eq!(job.to_json(), bytes, "deterministic");
    }

    #[test]
    fn every_job_round_trips() {
        let reference = ImageRef::parse("127.0.0.1:5000/app:1")
            .unwrap()
            .pinned(&digest());
        let mirrors: Vec<Mirror> = vec!["quay.io=127.0.0.1:5000/quay.io".parse().unwrap()];
        round_trip(Job::SyncImage(SyncImageJob {
            dest: "/out/resources/registry".into(),
            stored: StoredRef::new(&reference, "library/app".into()),
            reference: reference.clone(),
            platforms: vec![
                Platform::linux(Arch::Amd64),
                "linux/arm/v7".parse().unwrap(),
            ],
            mirrors: mirrors.clone(),
            blob_list: Some("/out/blobs.json".into()),
        }));
        round_trip(Job::RegistryTree(RegistryTreeJob {
            fragments: vec![TreeFragment {
                root: "/in/0/registry".into(),
                blob_list: "/in/0/blobs.json".into(),
            }],
            dest: "/out/resources/registry".into(),
            blob_cache: Some("/blob-cache".into()),
        }));
        round_trip(Job::FetchFile(FetchFileJob {
            url: "https://x.io/runsc".into(),
            bundle_path: "resources/nginx/files/x.io/runsc".into(),
            sources: vec!["http://m/x.io/runsc".into(), "https://x.io/runsc".into()],
            pin: Some(PinWork {
                algorithm: "sha512".into(),
                hex: "b".repeat(128),
            }),
            dest: "/out/runsc".into(),
            cache: Some("/cache".into()),
            retries: 5,
            read_timeout_secs: 120,
        }));
        round_trip(Job::SaveImage(SaveImageJob {
            reference: reference.clone(),
            platform: Platform::linux(Arch::Arm64),
            mirrors,
            name: reference.unpinned().to_string(),
            out: "/out/resources/images/app-1.tar".into(),
        }));
        round_trip(Job::ImageArchive(ImageArchiveJob {
            rootfs: "/rootfs".into(),
            config: "/cfg/config.json".into(),
            tag: "kubespray:v2.28.1".into(),
            out: "/out/resources/images/kubespray-v2.28.1.tar".into(),
        }));
        round_trip(Job::BundleManifest(BundleManifestJob {
            plan: PlatformPlan {
                platform: Platform::linux(Arch::Amd64),
                modules: vec![ModulePlan {
                    name: "files".into(),
                    work: Work::Files(FilesWork {
                        files: vec![FileWork {
                            url: "https://dl.k8s.io/a/kubelet".into(),
                            fetch_urls: vec!["http://127.0.0.1:8081/dl.k8s.io/a/kubelet".into()],
                            path: "files/dl.k8s.io/a/kubelet".into(),
                            pin: Some(PinWork {
                                algorithm: "sha256".into(),
                                hex: "a".repeat(64),
                            }),
                        }],
                    }),
                }],
            },
            bundle: "kubeplay".into(),
            version: "v0.1.0".into(),
            spec_file: "Dockerfile.bundle".into(),
            spec_sha256: "d".repeat(64),
            kubespray: Some("kubespray/v2.28.1".into()),
            source_date_epoch: Some(1_700_000_000),
            trees: vec![ModuleTree {
                module: "files".into(),
                dir: "/in/files".into(),
            }],
            out: "/out/kubeplay.lock.json".into(),
        }));
    }

    #[test]
    fn parsed_values_survive_the_trip() {
        // A registry port is not a tag, and the stored name keeps its tag.
        let r = ImageRef::parse("host:5000/app:1")
            .unwrap()
            .pinned(&digest());
        let job = Job::SyncImage(SyncImageJob {
            dest: "/out".into(),
            stored: StoredRef::new(&r, r.repository.clone()),
            reference: r,
            platforms: vec![],
            mirrors: vec![],
            blob_list: None,
        });
        let Job::SyncImage(back) = Job::from_json("j", &job.to_json()).unwrap() else {
            panic!()
        };
        assert_eq!(back.reference.registry, "host:5000");
        assert_eq!(back.reference.tag.as_deref(), Some("1"));
        assert_eq!(back.stored.to_string(), "app:1");
    }

    #[test]
    fn bad_job_files_are_explained() {
        let e = Job::from_json("/kpbuild-job/job.json", br#"{"job":"nope"}"#)
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with("job file /kpbuild-job/job.json: unknown variant"),
            "{e}"
        );
        let e = Job::from_json(
            "j",
            br#"{"job":"fetch-file","url":"u","bundle_path":"p","sources":[],"pin":null,"dest":"/b","cache":null,"retries":1,"read_timeout_secs":1,"x":1}"#,
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("unknown field `x`"), "{e}");
        assert_eq!(
            Job::argv("/kpbuild"),
            ["/kpbuild", "worker", "/kpbuild-job/job.json"]
        );
    }
}
