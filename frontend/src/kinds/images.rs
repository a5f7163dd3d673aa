//! Lowering of the `images` kind: one sync-image job per image, pinned to the digest its tag
//! had while planning, each writing a registry-tree fragment under `resources/registry`; the
//! fragments merged into one tree (blobs shared between images are the same files, stored once).

use kpbuild_modules::jobs::{Job, SyncImageJob};
use kpbuild_modules::kinds::ImagesWork;
use kpbuild_modules::layout;

use super::Lower;
use crate::llb::{FileOp, Platform, State};
use crate::lower::{LowerEnv, LowerError, REGISTRY_SECRET_DIR, job_exec, merge_trees, network_for};

impl Lower for ImagesWork {
    fn lower(
        &self,
        module: &str,
        platform: &Platform,
        env: &LowerEnv,
    ) -> Result<State, LowerError> {
        let mut fragments = Vec::new();
        for img in &self.images {
            let job = Job::SyncImage(SyncImageJob {
                dest: format!("/out/{}", layout::REGISTRY_ROOT).into(),
                reference: env.pinned(&img.source)?,
                stored: img.stored.clone(),
                platforms: img.platforms.clone(),
                mirrors: env.registry_mirrors.clone(),
            });
            let mut exec = job_exec(&job, env);
            if let Some(id) = &env.registry_secret {
                exec = exec
                    .mount_secret(&format!("{REGISTRY_SECRET_DIR}/config.json"), id, false)
                    .env("DOCKER_CONFIG", REGISTRY_SECRET_DIR);
            }
            let fragment = exec
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
        if fragments.is_empty() {
            return Ok(FileOp::on(None)
                .mkdir(&format!("/{}", layout::registry_v2()), 0o755, true)
                .result());
        }
        Ok(merge_trees(
            fragments,
            &format!(
                "{module} [{platform}]: merge {} registry trees",
                self.images.len()
            ),
            env,
        ))
    }
}
