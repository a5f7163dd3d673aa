//! Lowering of the `images` kind, in two steps so that a blob shared by several images is
//! fetched once per build and the merged tree is written once, without `MergeOp`:
//!
//! 1. one sync-image op per image, pinned to the digest its tag had while planning, fetching
//!    only the image's manifests: its fragment holds them and every link of the image
//!    (a few KiB), and lists the config and layer blobs it needs. BuildKit caches each op on
//!    its own, so adding an image to the spec runs one such op.
//! 2. one registry-tree op reading every fragment (read-only mounts) that fetches each listed
//!    blob once, straight into the tree it writes, and copies the fragments' files in. Blobs
//!    go through a cache mount shared by the builder's builds ([`BLOB_CACHE_ID`]): when the
//!    spec changes, the blobs fetched before are copied from there (verified) instead of
//!    fetched again.

use kpbuild_bundle::jobs::{Job, RegistryTreeJob, SyncImageJob, TreeFragment};
use kpbuild_bundle::kinds::ImagesWork;
use kpbuild_bundle::layout;

use super::Lower;
use crate::llb::{Exec, FileOp, Platform, State};
use crate::lower::{LowerEnv, LowerError, REGISTRY_SECRET_DIR, job_exec, network_for};

/// The id of the builder's cache mount holding blobs (a registry storage tree) across builds.
pub const BLOB_CACHE_ID: &str = "kpbuild-registry-blobs";
/// Where the blob cache is mounted in the registry-tree op.
const BLOB_CACHE_DIR: &str = "/blob-cache";

/// Mounts the registry credentials secret, when the build has one.
fn with_registry_secret(exec: Exec, env: &LowerEnv) -> Exec {
    match &env.registry_secret {
        Some(id) => exec
            .mount_secret(&format!("{REGISTRY_SECRET_DIR}/config.json"), id, false)
            .env("DOCKER_CONFIG", REGISTRY_SECRET_DIR),
        None => exec,
    }
}

impl Lower for ImagesWork {
    fn lower(
        &self,
        module: &str,
        platform: &Platform,
        env: &LowerEnv,
    ) -> Result<State, LowerError> {
        if self.images.is_empty() {
            return Ok(FileOp::on(None)
                .mkdir(&format!("/{}", layout::registry_v2()), 0o755, true)
                .result());
        }
        let mut fragments = Vec::new();
        for img in &self.images {
            let job = Job::SyncImage(SyncImageJob {
                dest: "/out/registry".into(),
                reference: env.pinned(&img.source)?,
                stored: img.stored.clone(),
                platforms: img.platforms.clone(),
                mirrors: env.registry_mirrors.clone(),
                blob_list: Some("/out/blobs.json".into()),
            });
            let fragment = with_registry_secret(job_exec(&job, env), env)
                .mount_scratch("/out")
                .network(network_for(img.fetch.needs_host_network()))
                .named(format!(
                    "{module} [{platform}]: sync {} as {}",
                    img.source, img.stored
                ))
                .run()
                .mount("/out");
            fragments.push(fragment);
        }
        let dirs: Vec<String> = (0..fragments.len()).map(|i| format!("/in/{i}")).collect();
        let job = Job::RegistryTree(RegistryTreeJob {
            fragments: dirs
                .iter()
                .map(|d| TreeFragment {
                    root: format!("{d}/registry").into(),
                    blob_list: format!("{d}/blobs.json").into(),
                })
                .collect(),
            dest: format!("/out/{}", layout::REGISTRY_ROOT).into(),
            blob_cache: Some(BLOB_CACHE_DIR.into()),
        });
        let mut exec = with_registry_secret(job_exec(&job, env), env);
        for (dir, fragment) in dirs.iter().zip(fragments) {
            exec = exec.mount_readonly(dir, fragment, "");
        }
        let host = self.images.iter().any(|i| i.fetch.needs_host_network());
        Ok(exec
            .mount_cache(BLOB_CACHE_DIR, BLOB_CACHE_ID)
            .mount_scratch("/out")
            .network(network_for(host))
            .named(format!(
                "{module} [{platform}]: registry tree of {} images (each blob fetched once)",
                self.images.len()
            ))
            .run()
            .mount("/out"))
    }
}
