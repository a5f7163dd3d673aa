//! Lowering of the `files` kind: one fetch-file op per file running kpbuild's own fetcher
//! (`kpbuild_sync::download`: each location in order, retried with backoff and `Retry-After`,
//! resumed, verified against the pin before it is written), then every file copied to
//! `resources/nginx/<path>`.
//!
//! Caching stays by pin: the op's cache key is its job (URL, locations, pin), and verified
//! files are also kept in a builder cache mount by pin ([`FILES_CACHE_ID`]), so an op that
//! runs again because its locations changed copies the file from there instead of fetching
//! it, and a file fetched before a failed build is not fetched again. A changed pin is a new
//! op and a new cache entry. An unpinned file is fetched once per op (keyed by its URL) and
//! never kept in the cache mount.

use kpbuild_bundle::jobs::{FetchFileJob, Job};
use kpbuild_bundle::kinds::FilesWork;
use kpbuild_bundle::layout;

use super::Lower;
use crate::llb::{CopyOptions, FileOp, Platform, State};
use crate::lower::{LowerEnv, LowerError, job_exec, network_for};

/// The id of the builder's cache mount holding verified files by pin across builds.
pub const FILES_CACHE_ID: &str = "kpbuild-files";
/// Where the files cache is mounted in fetch-file ops.
const FILES_CACHE_DIR: &str = "/kpbuild-files-cache";
/// Retries per location after a transient failure (5xx, 429, 408, a broken connection).
pub const FETCH_RETRIES: u32 = 5;

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
            let job = Job::FetchFile(FetchFileJob {
                url: f.url.clone(),
                bundle_path: f.bundle_path(),
                sources: f.fetch_urls.clone(),
                pin: f.pin.clone(),
                dest: format!("/out/{name}").into(),
                cache: f.pin.as_ref().map(|_| FILES_CACHE_DIR.into()),
                retries: FETCH_RETRIES,
                read_timeout_secs: env.read_timeout_secs,
            });
            let mut exec = job_exec(&job, env);
            if f.pin.is_some() {
                exec = exec.mount_cache(FILES_CACHE_DIR, FILES_CACHE_ID);
            }
            // Named without the platform: the same file for two platforms is one op.
            let from = exec
                .mount_scratch("/out")
                .network(network_for(f.needs_host_network()))
                .named(format!("download {}", f.url))
                .run()
                .mount("/out");
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
