//! `kpbuild worker JOB_FILE`: the jobs BuildKit exec ops run with the kpbuild binary from the
//! frontend image (which has nothing else: it is `FROM scratch`). The job file is the typed
//! contract of `kpbuild_bundle::jobs`, written by the frontend's lowering; this file runs each
//! job.

use std::path::{Path, PathBuf};

use anyhow::{Context, bail};

use kpbuild_bundle::jobs::{
    BlobList, BundleManifestJob, FetchFileJob, ImageArchiveJob, Job, ListedBlob, RegistryTreeJob,
    SaveImageJob, SyncImageJob,
};
use kpbuild_oci::image_ref::NameMap;
use kpbuild_sync::engine::{NoProgress, PlatformSelection, SyncOptions, sync_images};

#[derive(clap::Args)]
pub struct Args {
    /// The job file (JSON) the frontend mounted into the op.
    job: PathBuf,
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let bytes =
        std::fs::read(&args.job).with_context(|| format!("reading {}", args.job.display()))?;
    match Job::from_json(&args.job.display().to_string(), &bytes)? {
        Job::SyncImage(j) => sync_image(j),
        Job::RegistryTree(j) => registry_tree(j),
        Job::FetchFile(j) => fetch_file(j),
        Job::SaveImage(j) => save_image(j),
        Job::ImageArchive(j) => image_archive(j),
        Job::BundleManifest(j) => bundle_manifest(j),
    }
}

/// One image into a registry-tree fragment, with the sync engine's own progress and summary;
/// with a blob list, only its manifests and links, its other blobs listed.
fn sync_image(j: SyncImageJob) -> anyhow::Result<()> {
    let map = (j.stored.repository != j.reference.repository)
        .then(|| NameMap::single(&j.reference.source_repository(), &j.stored.repository));
    let opts = SyncOptions {
        dest: j.dest.clone(),
        platforms: PlatformSelection::Only(j.platforms),
        jobs: 8,
        mirrors: j.mirrors,
        map,
        client: Default::default(),
        fetch_blobs: j.blob_list.is_none(),
        blob_cache: None,
    };
    let summary = crate::sync_images::sync_with_progress(vec![j.reference], opts)?;
    if let Some(list) = &j.blob_list {
        let blobs = summary
            .images
            .iter()
            .flat_map(|img| {
                img.needs.iter().map(|d| ListedBlob {
                    digest: d.digest.clone(),
                    size: d.size,
                    registry: img.location.registry.clone(),
                    repository: img.location.repository.clone(),
                })
            })
            .collect();
        let mut bytes = serde_json::to_vec_pretty(&BlobList { blobs })?;
        bytes.push(b'\n');
        write_then_rename(list, &bytes)?;
    }
    Ok(())
}

/// A registry tree from sync-image fragments: their manifests and links copied, the blobs
/// they list fetched once each (through the blob cache), the tree checked complete.
fn registry_tree(j: RegistryTreeJob) -> anyhow::Result<()> {
    let mut wanted = Vec::new();
    for f in &j.fragments {
        let bytes = std::fs::read(&f.blob_list)
            .with_context(|| format!("reading {}", f.blob_list.display()))?;
        let list: BlobList = serde_json::from_slice(&bytes)
            .with_context(|| format!("reading {}", f.blob_list.display()))?;
        for b in list.blobs {
            wanted.push((
                kpbuild_oci::registry_layout::Descriptor {
                    media_type: None,
                    digest: b.digest,
                    size: b.size,
                    platform: None,
                    urls: vec![],
                },
                kpbuild_oci::image_ref::FetchLocation {
                    registry: b.registry,
                    repository: b.repository,
                },
            ));
        }
    }
    let mut copied = 0usize;
    for f in &j.fragments {
        copied += copy_new_files(&f.root, &j.dest)
            .with_context(|| format!("copying {} into {}", f.root.display(), j.dest.display()))?;
    }
    eprintln!(
        "registry-tree: {} fragments, {copied} manifest and link files; {} blobs listed",
        j.fragments.len(),
        wanted.len()
    );
    let opts = SyncOptions {
        dest: j.dest.clone(),
        platforms: PlatformSelection::All,
        jobs: 8,
        mirrors: vec![],
        map: None,
        client: Default::default(),
        fetch_blobs: true,
        blob_cache: j.blob_cache.clone(),
    };
    crate::sync_images::fetch_blobs_with_progress(wanted, opts)?;
    Ok(())
}

/// Copies the files under `src` that `dest` lacks (same relative paths), creating
/// directories; the engine's temporary directories are skipped. Returns how many were copied.
fn copy_new_files(src: &Path, dest: &Path) -> anyhow::Result<usize> {
    let mut n = 0;
    let entries = walkdir::WalkDir::new(src)
        .min_depth(1)
        .into_iter()
        .filter_entry(|e| e.file_name() != kpbuild_sync::store::TMP_DIR);
    for entry in entries {
        let entry = entry?;
        let to = dest.join(entry.path().strip_prefix(src)?);
        if entry.file_type().is_dir() {
            std::fs::create_dir_all(&to)?;
        } else if std::fs::symlink_metadata(&to).is_err() {
            std::fs::copy(entry.path(), &to)?;
            n += 1;
        }
    }
    Ok(n)
}

/// One file of the files module: fetched from its locations in order (retried, resumed),
/// or copied from the cache of verified files; written only once it matches its pin. A
/// failure is one line naming the file, its bundle path, every location and what came back.
fn fetch_file(j: FetchFileJob) -> anyhow::Result<()> {
    use kpbuild_sync::download::{FetchConfig, Fetched, FileRequest, Pin, fetch_file, http_client};
    let cfg = FetchConfig::new(
        j.retries,
        j.read_timeout_secs,
        Some(std::sync::Arc::new(|ev: &kpbuild_sync::RetryEvent| {
            say(format!(
                "retry {} in {:.1}s: {}: {}",
                ev.attempt,
                ev.delay.as_secs_f64(),
                ev.url,
                ev.reason
            ))
        })),
    );
    if let Some(dir) = j.dest.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    if let Some(cache) = &j.cache {
        std::fs::create_dir_all(cache).with_context(|| format!("creating {}", cache.display()))?;
    }
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let http = http_client(&cfg)?;
    let req = FileRequest {
        url: j.url.clone(),
        path: j.bundle_path,
        sources: j.sources,
        pin: j.pin.map(|p| Pin {
            algorithm: p.algorithm,
            hex: p.hex,
        }),
        dest: j.dest,
        cache: j.cache,
    };
    match rt.block_on(fetch_file(&http, &cfg, &req))? {
        Fetched::Cached { bytes } => {
            eprintln!(
                "fetch-file: {}: {bytes} bytes from the cache (verified)",
                j.url
            )
        }
        Fetched::Downloaded {
            from,
            bytes,
            tries,
            retries,
            resumed,
        } => say(format!(
            "fetch-file: {}: {bytes} bytes from {from} ({tries} requests, {retries} retries, {resumed} bytes not sent twice), verified",
            j.url
        )),
    }
    Ok(())
}

/// A line on stderr in one write (so BuildKit's progress never splits it).
fn say(mut line: String) {
    use std::io::Write;
    line.push('\n');
    let _ = std::io::stderr().lock().write_all(line.as_bytes());
}

/// A work directory under `/tmp` (the op mounts a tmpfs there).
fn work_dir(prefix: &str) -> anyhow::Result<tempfile::TempDir> {
    tempfile::Builder::new()
        .prefix(prefix)
        .tempdir()
        .context("a temporary directory (mount one at /tmp)")
}

/// One image for one platform, as an archive `docker load` accepts.
fn save_image(j: SaveImageJob) -> anyhow::Result<()> {
    let work = work_dir("kpbuild-save-")?;
    let opts = SyncOptions {
        dest: work.path().to_path_buf(),
        platforms: PlatformSelection::Only(vec![j.platform.clone()]),
        jobs: 8,
        mirrors: j.mirrors,
        map: None,
        client: Default::default(),
        fetch_blobs: true,
        blob_cache: None,
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let summary = rt.block_on(sync_images(
        vec![j.reference.clone()],
        opts,
        std::sync::Arc::new(NoProgress),
    ))?;
    if let Some(f) = summary.failures.first() {
        bail!("{f}");
    }
    let synced = summary
        .images
        .first()
        .ok_or_else(|| anyhow::anyhow!("{}: nothing was fetched", j.reference))?;
    let stored_tag = synced.tag.clone().unwrap_or_else(|| "latest".into());
    let digest = kpbuild_oci::image_archive::write_docker_archive(
        work.path(),
        &j.reference.repository,
        &stored_tag,
        &j.platform,
        &j.name,
        &j.out,
    )?;
    eprintln!(
        "save-image: {} ({}, manifest {digest}) -> {}",
        j.name,
        j.platform,
        j.out.display()
    );
    Ok(())
}

/// A root filesystem and its config as a one-layer archive.
fn image_archive(j: ImageArchiveJob) -> anyhow::Result<()> {
    let config =
        std::fs::read(&j.config).with_context(|| format!("reading {}", j.config.display()))?;
    let work = work_dir("kpbuild-archive-")?;
    let layer = kpbuild_oci::image_archive::write_rootfs_archive(
        &j.rootfs,
        &config,
        &j.tag,
        &j.out,
        work.path(),
    )?;
    eprintln!(
        "image-archive: {} (layer {layer}) -> {}",
        j.tag,
        j.out.display()
    );
    Ok(())
}

/// The bundle manifest of one platform, from its module trees.
fn bundle_manifest(j: BundleManifestJob) -> anyhow::Result<()> {
    let lock = kpbuild_bundle::lock::build(&kpbuild_bundle::lock::LockInput {
        plan: &j.plan,
        bundle: &j.bundle,
        version: &j.version,
        spec_file: &j.spec_file,
        spec_sha256: &j.spec_sha256,
        kubespray: j.kubespray.as_deref(),
        source_date_epoch: j.source_date_epoch,
        trees: j
            .trees
            .iter()
            .map(|t| (t.module.clone(), t.dir.clone()))
            .collect(),
    })?;
    let bytes = serde_json::to_string_pretty(&lock)? + "\n";
    // The SBOMs first: a manifest on disk always has its SBOMs beside it.
    let dir = j.out.parent().unwrap_or(Path::new("."));
    for (file, sbom) in kpbuild_bundle::sbom::files(&lock, bytes.as_bytes())? {
        write_then_rename(&dir.join(file), &sbom)?;
    }
    write_then_rename(&j.out, bytes.as_bytes())?;
    eprintln!(
        "bundle manifest: {}; SBOMs {} and {}",
        lock.summary(),
        kpbuild_bundle::sbom::SPDX_FILE,
        kpbuild_bundle::sbom::CYCLONEDX_FILE
    );
    Ok(())
}

fn write_then_rename(out: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    let tmp = out.with_extension("partial");
    std::fs::write(&tmp, bytes).with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, out)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn copy_new_files_adds_what_is_missing_and_skips_the_engines_temporary_files() {
        let tmp = kpbuild_sync::store::TMP_DIR;
        let (src, dest) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let put = |root: &Path, rel: &str, text: &str| {
            let p = root.join(rel);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, text).unwrap();
        };
        put(
            src.path(),
            "docker/registry/v2/repositories/a/_manifests/link",
            "new",
        );
        put(src.path(), "docker/registry/v2/repositories/b/link", "src");
        put(src.path(), &format!("{tmp}/part"), "partial");
        put(src.path(), &format!("docker/{tmp}/part"), "partial");
        put(
            dest.path(),
            "docker/registry/v2/repositories/b/link",
            "dest",
        );
        assert_eq!(copy_new_files(src.path(), dest.path()).unwrap(), 1);
        let read = |rel: &str| std::fs::read_to_string(dest.path().join(rel)).unwrap();
        assert_eq!(
            read("docker/registry/v2/repositories/a/_manifests/link"),
            "new"
        );
        assert_eq!(read("docker/registry/v2/repositories/b/link"), "dest");
        assert!(!dest.path().join(tmp).exists());
        assert!(!dest.path().join("docker").join(tmp).exists());
    }
}
