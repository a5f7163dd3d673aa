//! `kpbuild worker …`: small jobs that BuildKit exec ops run with the kpbuild binary from the
//! frontend image (which has nothing else: it is `FROM scratch`).

use std::io::Read;
use std::path::PathBuf;

use anyhow::{Context, bail};
use sha2::Digest as _;

#[derive(clap::Subcommand)]
pub enum Worker {
    /// Copy a file after checking its digest (BuildKit pins HTTP sources with sha256 only).
    CheckFile {
        /// sha256 or sha512.
        #[arg(long)]
        algorithm: String,
        /// The expected digest, hex.
        #[arg(long)]
        hex: String,
        src: PathBuf,
        dest: PathBuf,
    },
    /// Fetch one image for one platform and write it as an archive `docker load` accepts.
    SaveImage {
        /// The platform to keep (linux/amd64, …).
        #[arg(long)]
        platform: String,
        /// Fetch SRC's images from DST instead (repeatable).
        #[arg(long = "mirror", value_name = "SRC=DST")]
        mirrors: Vec<String>,
        /// The name `docker load` gives the image (default: the reference without digest).
        #[arg(long)]
        tag: Option<String>,
        /// The archive to write.
        #[arg(long)]
        out: PathBuf,
        /// The image (tag, digest, or both).
        reference: String,
    },
    /// Write a root filesystem and its image config as a one-layer archive `docker load` accepts.
    ImageArchive {
        #[arg(long)]
        rootfs: PathBuf,
        /// The image config (JSON), as BuildKit's Dockerfile frontend made it.
        #[arg(long)]
        config: PathBuf,
        /// The name `docker load` gives the image.
        #[arg(long)]
        tag: String,
        #[arg(long)]
        out: PathBuf,
    },
    /// Write the bundle manifest (kubeplay.lock.json) from the module trees of one platform.
    BundleManifest {
        /// The platform's plan (JSON), as the frontend planned it.
        #[arg(long)]
        plan: PathBuf,
        #[arg(long)]
        bundle: String,
        #[arg(long)]
        version: String,
        #[arg(long)]
        spec_file: String,
        #[arg(long)]
        spec_sha256: String,
        /// A module's tree: NAME=DIR (repeated).
        #[arg(long = "tree", value_name = "NAME=DIR")]
        trees: Vec<String>,
        /// Where to write the manifest.
        #[arg(long)]
        out: PathBuf,
    },
}

pub fn run(w: Worker) -> anyhow::Result<()> {
    match w {
        Worker::SaveImage {
            platform,
            mirrors,
            tag,
            out,
            reference,
        } => save_image(&platform, &mirrors, tag, &out, &reference),
        Worker::ImageArchive {
            rootfs,
            config,
            tag,
            out,
        } => {
            let config =
                std::fs::read(&config).with_context(|| format!("reading {}", config.display()))?;
            let work = tempfile::Builder::new()
                .prefix("kpbuild-archive-")
                .tempdir()
                .context("a temporary directory (mount one at /tmp)")?;
            let layer = kpbuild_modules::image_archive::write_rootfs_archive(
                &rootfs,
                &config,
                &tag,
                &out,
                work.path(),
            )?;
            eprintln!("image-archive: {tag} (layer {layer}) -> {}", out.display());
            Ok(())
        }
        Worker::BundleManifest {
            plan,
            bundle,
            version,
            spec_file,
            spec_sha256,
            trees,
            out,
        } => {
            let text = std::fs::read_to_string(&plan)
                .with_context(|| format!("reading {}", plan.display()))?;
            let plan: kpbuild_modules::plan::PlatformPlan = serde_json::from_str(&text)?;
            let trees = trees
                .iter()
                .map(|t| {
                    t.split_once('=')
                        .map(|(n, d)| (n.to_string(), PathBuf::from(d)))
                        .ok_or_else(|| anyhow::anyhow!("--tree {t}: expected NAME=DIR"))
                })
                .collect::<anyhow::Result<Vec<_>>>()?;
            let lock = kpbuild_modules::lock::build(&kpbuild_modules::lock::LockInput {
                plan: &plan,
                bundle: &bundle,
                version: &version,
                spec_file: &spec_file,
                spec_sha256: &spec_sha256,
                trees,
            })?;
            let tmp = out.with_extension("partial");
            std::fs::write(&tmp, serde_json::to_string_pretty(&lock)? + "\n")?;
            std::fs::rename(&tmp, &out)?;
            eprintln!(
                "bundle manifest: {} files, {} images, {} packages, {} artifacts",
                lock.files.len(),
                lock.images.len(),
                lock.packages.len(),
                lock.artifacts.len()
            );
            Ok(())
        }
        Worker::CheckFile {
            algorithm,
            hex,
            src,
            dest,
        } => {
            let mut f =
                std::fs::File::open(&src).with_context(|| format!("opening {}", src.display()))?;
            let mut buf = vec![0u8; 1 << 20];
            let mut sha256 = sha2::Sha256::new();
            let mut sha512 = sha2::Sha512::new();
            loop {
                let n = f.read(&mut buf)?;
                if n == 0 {
                    break;
                }
                match algorithm.as_str() {
                    "sha256" => sha256.update(&buf[..n]),
                    "sha512" => sha512.update(&buf[..n]),
                    other => bail!("unsupported digest algorithm `{other}` (sha256, sha512)"),
                }
            }
            let got = match algorithm.as_str() {
                "sha256" => hex::encode(sha256.finalize()),
                _ => hex::encode(sha512.finalize()),
            };
            if !got.eq_ignore_ascii_case(&hex) {
                bail!(
                    "{}: {algorithm} is {got}, but the pin says {hex}; the download is not what was pinned",
                    src.display()
                );
            }
            let tmp = dest.with_extension("partial");
            std::fs::copy(&src, &tmp).with_context(|| format!("writing {}", tmp.display()))?;
            std::fs::rename(&tmp, &dest)?;
            Ok(())
        }
    }
}

fn save_image(
    platform: &str,
    mirrors: &[String],
    tag: Option<String>,
    out: &std::path::Path,
    reference: &str,
) -> anyhow::Result<()> {
    use kpbuild_modules::image_ref::{ImageRef, Mirror, stored_repository};
    use kpbuild_modules::registry_layout::Platform;
    use kpbuild_sync::engine::{NoProgress, PlatformSelection, SyncOptions, sync_images};
    let r = ImageRef::parse(reference)?;
    let platform: Platform = platform.parse()?;
    let mirrors = mirrors
        .iter()
        .map(|m| m.parse::<Mirror>())
        .collect::<Result<Vec<_>, _>>()?;
    let work = tempfile::Builder::new()
        .prefix("kpbuild-save-")
        .tempdir()
        .context("a temporary directory (mount one at /tmp)")?;
    let opts = SyncOptions {
        dest: work.path().to_path_buf(),
        platforms: PlatformSelection::Only(vec![platform.clone()]),
        jobs: 8,
        mirrors,
        map: None,
        client: Default::default(),
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let summary = rt.block_on(sync_images(
        vec![r.clone()],
        opts,
        std::sync::Arc::new(NoProgress),
    ))?;
    if let Some(f) = summary.failures.first() {
        bail!("{f}");
    }
    let synced = summary
        .images
        .first()
        .ok_or_else(|| anyhow::anyhow!("{reference}: nothing was fetched"))?;
    let repo = stored_repository(&r, None);
    let stored_tag = synced.tag.clone().unwrap_or_else(|| "latest".into());
    let name = tag.unwrap_or_else(|| {
        let s = r.to_string();
        s.split('@').next().unwrap_or(&s).to_string()
    });
    let digest = kpbuild_modules::image_archive::write_docker_archive(
        work.path(),
        &repo,
        &stored_tag,
        &platform,
        &name,
        out,
    )?;
    eprintln!(
        "save-image: {name} ({platform}, manifest {digest}) -> {}",
        out.display()
    );
    Ok(())
}
