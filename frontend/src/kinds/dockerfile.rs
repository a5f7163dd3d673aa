//! Lowering of the `dockerfile` kind: the image a nested solve through BuildKit's Dockerfile
//! frontend built (`run.rs` asks for it before lowering), as an archive `docker load` accepts:
//! an image-archive job over its root filesystem.

use kpbuild_bundle::jobs::{ImageArchiveJob, Job};
use kpbuild_bundle::kinds::DockerfileWork;

use super::Lower;
use crate::llb::{self, FileOp, Network, Platform, State};
use crate::lower::{LowerEnv, LowerError, job_exec, target_arch};

impl Lower for DockerfileWork {
    fn lower(
        &self,
        module: &str,
        platform: &Platform,
        env: &LowerEnv,
    ) -> Result<State, LowerError> {
        let (def, config) = env
            .dockerfiles
            .get(&(module.to_string(), target_arch(platform)?))
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
        let job = Job::ImageArchive(ImageArchiveJob {
            rootfs: "/rootfs".into(),
            config: "/cfg/config.json".into(),
            tag: self.image.clone(),
            out: format!("/out/{}", self.archive).into(),
        });
        Ok(job_exec(&job, env)
            .mount_readonly("/rootfs", rootfs, "")
            .mount_readonly("/cfg", cfg, "")
            .mount_tmpfs("/tmp")
            .mount_scratch("/out")
            .network(Network::None)
            .named(format!(
                "{module} [{platform}]: archive {} as {}",
                self.image, self.archive
            ))
            .run()
            .mount("/out"))
    }
}
