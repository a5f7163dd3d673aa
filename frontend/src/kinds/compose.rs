//! Lowering of the `compose` kind: nginx and registry as loadable archives (one save-image job
//! each), the compose file and the services' configurations, and the installer files from the
//! build context.

use kpbuild_bundle::jobs::{Job, SaveImageJob};
use kpbuild_bundle::kinds::ComposeWork;
use kpbuild_bundle::kinds::compose::{compose_yaml, nginx_conf, registry_yml};
use kpbuild_bundle::layout;

use super::Lower;
use crate::llb::{FileOp, Platform, State};
use crate::lower::{LowerEnv, LowerError, contents, job_exec, network_for};

impl Lower for ComposeWork {
    fn lower(
        &self,
        module: &str,
        platform: &Platform,
        env: &LowerEnv,
    ) -> Result<State, LowerError> {
        let mut layout = FileOp::on(None).named(format!(
            "{module} [{platform}]: compose files and image archives"
        ));
        for a in &self.archives {
            let job = Job::SaveImage(SaveImageJob {
                reference: env.pinned(&a.source)?,
                platform: platform.clone(),
                mirrors: env.registry_mirrors.clone(),
                name: a.source.unpinned().to_string(),
                out: format!("/out/{}", a.path).into(),
            });
            let saved = job_exec(&job, env)
                .mount_tmpfs("/tmp")
                .mount_scratch("/out")
                .network(network_for(a.fetch.needs_host_network()))
                .named(format!(
                    "{module} [{platform}]: save {} as {}",
                    a.source, a.path
                ))
                .run()
                .mount("/out");
            layout = layout.copy(&saved, "/", "/", contents());
        }
        layout = layout
            .mkfile(
                &format!("/{}", layout::COMPOSE_FILE),
                0o644,
                compose_yaml(
                    &self.nginx_image.to_string(),
                    &self.registry_image.to_string(),
                ),
            )
            .mkdir(&format!("/{}", layout::CONFIG_DIR), 0o755, true)
            .mkfile(&format!("/{}", layout::NGINX_CONF), 0o644, nginx_conf())
            .mkfile(
                &format!("/{}", layout::REGISTRY_CONF),
                0o644,
                registry_yml(),
            );
        if let Some(dir) = &self.installer {
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
                contents(),
            );
        }
        Ok(layout.result())
    }
}
