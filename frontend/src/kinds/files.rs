//! Lowering of the `files` kind: one BuildKit HTTP source per file, pinned to its sha256 where
//! known (BuildKit verifies it and caches by it); other digests (sha512) are checked by a
//! check-file job; every file copied to `resources/nginx/<path>`.

use kpbuild_modules::jobs::{CheckFileJob, Job};
use kpbuild_modules::kinds::FilesWork;
use kpbuild_modules::layout;

use super::Lower;
use crate::llb::{self, CopyOptions, FileOp, Network, Platform, State};
use crate::lower::{LowerEnv, LowerError, job_exec};

impl Lower for FilesWork {
    fn lower(
        &self,
        module: &str,
        platform: &Platform,
        env: &LowerEnv,
    ) -> Result<State, LowerError> {
        if self.files.is_empty() {
            return Ok(FileOp::on(None)
                .mkdir(&format!("/{}", layout::nginx_path("files")), 0o755, true)
                .result());
        }
        let mut op = FileOp::on(None).named(format!(
            "{module} [{platform}]: lay out {} files",
            self.files.len()
        ));
        // Every directory first, 0755: newer BuildKit (v0.12+) gives the parents a copy creates
        // the copy's mode (0644 here), older ones 0755 — the same tree on every version.
        let dirs: std::collections::BTreeSet<String> = self
            .files
            .iter()
            .filter_map(|f| {
                let path = f.bundle_path();
                path.rsplit_once('/').map(|(dir, _)| format!("/{dir}"))
            })
            .collect();
        for d in &dirs {
            op = op.mkdir(d, 0o755, true);
        }
        for f in &self.files {
            let name = f.file_name();
            let sha256 = f
                .pin
                .as_ref()
                .filter(|p| p.algorithm == "sha256")
                .map(|p| p.hex.as_str());
            let source =
                llb::http(&f.fetch_url, sha256, Some(name)).named(format!("download {}", f.url));
            let from = match &f.pin {
                Some(p) if p.algorithm != "sha256" => {
                    // BuildKit pins HTTP sources with sha256 only: verify other digests in a job.
                    let job = Job::CheckFile(CheckFileJob {
                        algorithm: p.algorithm.clone(),
                        hex: p.hex.clone(),
                        src: format!("/in/{name}").into(),
                        dest: format!("/out/{name}").into(),
                    });
                    job_exec(&job, env)
                        .mount_readonly("/in", source, "")
                        .mount_scratch("/out")
                        .network(Network::None)
                        .named(format!("verify {} ({})", f.url, p.algorithm))
                        .run()
                        .mount("/out")
                }
                _ => source,
            };
            op = op.copy(
                &from,
                &format!("/{name}"),
                &format!("/{}", f.bundle_path()),
                CopyOptions {
                    create_parents: true,
                    mode: Some(0o644),
                    ..Default::default()
                },
            );
        }
        Ok(op.result())
    }
}
