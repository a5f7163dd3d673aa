//! Lowering of the `os-packages` kind: per distro, an exec op on the distro's own base image,
//! natively on the worker (no emulation), running the script that resolves and downloads the
//! complete closure for the target architecture and writes the repository index
//! (`kpbuild_bundle::kinds::os_packages::script`); the repositories and the client source
//! files laid out under `resources/nginx/`.

use kpbuild_bundle::kinds::OsPackagesWork;
use kpbuild_bundle::kinds::os_packages::script::{self, ScriptError, ScriptOptions};
use kpbuild_bundle::layout;

use super::{KindError, Lower};
use crate::llb::{self, FileOp, Platform, State};
use crate::lower::{LowerEnv, LowerError, contents, target_arch};

/// A distro's script (or its base image, or its client file) could not be made.
#[derive(Debug, thiserror::Error)]
#[error("module `{module}`: {source}")]
pub struct ScriptFailed {
    pub module: String,
    pub source: ScriptError,
}

impl Lower for OsPackagesWork {
    fn lower(
        &self,
        module: &str,
        platform: &Platform,
        env: &LowerEnv,
    ) -> Result<State, LowerError> {
        let host = env
            .worker_platform
            .arch()
            .ok_or_else(|| LowerError::WorkerArch(env.worker_platform.to_string()))?;
        let arch = target_arch(platform)?;
        let script_err = |source| {
            LowerError::from(KindError::from(ScriptFailed {
                module: module.to_string(),
                source,
            }))
        };
        let mut layout = FileOp::on(None)
            .named(format!(
                "{module} [{platform}]: lay out {} repositories",
                self.distros.len()
            ))
            .mkdir(&format!("/{}", layout::REPOS_DIR), 0o755, true);
        for d in &self.distros {
            let opts = ScriptOptions {
                arch,
                host,
                recommends: false,
                out_root: "/out".into(),
            };
            let text = script::script(d, &opts).map_err(script_err)?;
            // The script goes in as a file: a failing op then names a short command, and its
            // own message (which package, which distro) is what the user reads above it.
            let script_name = format!("{}-{arch}.sh", d.name);
            let script_state = FileOp::on(None)
                .mkfile(&format!("/{script_name}"), 0o755, text)
                .result();
            // BuildKit takes fully qualified references only (`docker.io/library/debian:…`).
            let image = d.base_image().map_err(script_err)?;
            let repo = env
                .exec(
                    llb::image(&image.to_string(), &env.worker_platform),
                    ["/bin/sh".to_string(), format!("/kpbuild/{script_name}")],
                )
                .platform(&env.worker_platform)
                .mount_readonly("/kpbuild", script_state, "")
                .mount_scratch("/out")
                .named(format!(
                    "{module} [{platform}]: {} ({}, {}): {} packages and their closure",
                    d.name,
                    d.image,
                    format!("{:?}", d.manager).to_lowercase(),
                    d.packages.len()
                ))
                .run()
                .mount("/out");
            layout = layout.copy(&repo, "/", &format!("/{}/", layout::NGINX_ROOT), contents());
            let client = script::client_file(d, arch).map_err(script_err)?;
            layout = layout.mkfile(&format!("/{}", client.path), 0o644, client.content);
        }
        Ok(layout.result())
    }
}
