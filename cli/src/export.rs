//! `kpbuild export`: merges the module results `kpbuild build` brought into the local store
//! (`kpbuild_store::store`) into the bundle. It needs neither a Docker daemon nor BuildKit.
//!
//! - a directory (the kubeplay tree), or `kubeplay-<version>-linux-<arch>.tar.gz` / `.tar.zst`
//!   with a `.sha256` file: each module's files are read from the store on a thread of their
//!   own, merged entry by entry in path order (no temporary copy of the bundle), normalized
//!   (`kpbuild_store::bundle_tar`) and compressed on several threads;
//! - `oci:DIR` or `oci-archive:FILE`: a multi-platform kubeplay OCI image with one layer per
//!   module (an uncompressed tar of the module's tree, normalized like the tarball), so
//!   shipping a new version moves only the layers of the modules that changed.
//!
//! Outputs are written under a temporary name (`OUT.partial`) and renamed when complete; on
//! SIGINT or SIGTERM the partial output is removed ([`crate::interrupt`]). They are
//! reproducible: the same images give byte-identical files (`SOURCE_DATE_EPOCH` sets every time
//! stamp).

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use anyhow::{Context, anyhow, bail};
use kpbuild_bundle::layout;
use kpbuild_bundle::plan::bundle_modules;
use kpbuild_oci::platform::Platform;
use kpbuild_oci::registry_layout::Digest;
use kpbuild_store::bundle_tar::{self, BUNDLE_ROOT};
use kpbuild_store::durable;
use kpbuild_store::store::{Access, Key};
use kpbuild_store::tar_merge::{self, Kind, LayerSource, Meta, Stats};

use crate::interrupt::{self, Partial};
use crate::spec_arg::SpecArg;
use crate::store_cmd::StoreArg;
use sha2::Digest as _;

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    Dir,
    #[value(name = "tar.gz")]
    TarGz,
    #[value(name = "tar.zst")]
    TarZst,
    Oci,
    #[value(name = "oci-archive")]
    OciArchive,
}

#[derive(clap::Args)]
pub struct Args {
    #[command(flatten)]
    spec: SpecArg,
    /// Output: DIR, FILE.tar.gz, FILE.tar.zst, oci:DIR or oci-archive:FILE; an existing
    /// directory with --format tar.* gets kubeplay-<version>-linux-<arch>.tar.*.
    #[arg(short = 'o', long = "output", value_name = "OUT")]
    output: String,
    /// Output format (default: from OUT).
    #[arg(long, value_enum)]
    format: Option<Format>,
    /// Compression level (zstd 1–19, gzip 1–9).
    #[arg(long)]
    level: Option<i32>,
    /// Compression threads (default: all cores).
    #[arg(long)]
    threads: Option<usize>,
    #[command(flatten)]
    store: StoreArg,
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let spec = args.spec.read()?;
    let (format, out) = output_of(&args)?;
    let platforms = args.spec.platforms_or(&spec);
    let keys_of = |p: &Platform| -> Vec<Key> {
        bundle_modules(&spec.spec, p)
            .into_iter()
            .map(|module| Key::new(&spec.spec.name, &spec.spec.version, module, p))
            .collect()
    };
    let epoch = bundle_tar::source_date_epoch().map_err(|e| anyhow!(e))?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    crate::interrupt::remove_partials_on_signal(&runtime, "kpbuild export")?;
    let store = args.store.open(Access::Shared)?;
    let started = std::time::Instant::now();
    // Every module of every platform is there before anything is written.
    let mut trees: BTreeMap<Key, Digest> = BTreeMap::new();
    for p in &platforms {
        for key in keys_of(p) {
            let r = store.require_ref(&key).with_context(|| {
                format!(
                    "exporting {}\n  hint: run `kpbuild build -f {} --platform {p}` first",
                    args.spec.spec.display(),
                    args.spec.spec.display()
                )
            })?;
            trees.insert(key, r.tree);
        }
    }
    match format {
        Format::Dir | Format::TarGz | Format::TarZst => {
            let [platform] = platforms.as_slice() else {
                bail!(
                    "a directory or tarball holds one platform; choose one with --platform (the spec has {})",
                    platforms
                        .iter()
                        .map(|p| p.to_string())
                        .collect::<Vec<_>>()
                        .join(", ")
                );
            };
            let out = match (&format, out.is_dir()) {
                (Format::TarGz | Format::TarZst, true) => out.join(layout::tarball_name(
                    &spec.spec.name,
                    &spec.spec.version,
                    platform,
                    if format == Format::TarGz {
                        "tar.gz"
                    } else {
                        "tar.zst"
                    },
                )),
                _ => out,
            };
            let sources = keys_of(platform)
                .into_iter()
                .map(|key| -> anyhow::Result<LayerSource> {
                    let tree = store.tree(&trees[&key])?;
                    Ok(store.source(&key.to_string(), tree))
                })
                .collect::<anyhow::Result<Vec<_>>>()?;
            let threads = args.threads.unwrap_or_else(|| {
                std::thread::available_parallelism()
                    .map(|n| n.get())
                    .unwrap_or(2)
            });
            let stats = match format {
                Format::Dir => write_dir(&out, sources)?,
                _ => write_tarball(&out, format, sources, epoch, args.level, threads)?,
            };
            eprintln!(
                "kpbuild export: {} ({}): {} entries, {:.1} MiB of content, in {:.1}s",
                out.display(),
                platform,
                stats.entries,
                stats.bytes as f64 / 1048576.0,
                started.elapsed().as_secs_f64()
            );
        }
        Format::Oci | Format::OciArchive => {
            let layers = crate::export_oci::write(
                &store,
                &trees,
                &out,
                format == Format::OciArchive,
                &spec.spec,
                &platforms,
                epoch,
            )?;
            eprintln!(
                "kpbuild export: {} ({}): {} platforms, {layers} layers, in {:.1}s",
                out.display(),
                if format == Format::Oci {
                    "OCI layout"
                } else {
                    "OCI archive"
                },
                platforms.len(),
                started.elapsed().as_secs_f64()
            );
        }
    }
    Ok(())
}

fn output_of(args: &Args) -> anyhow::Result<(Format, PathBuf)> {
    let o = args.output.as_str();
    let (guessed, path) = if let Some(p) = o.strip_prefix("oci-archive:") {
        (Format::OciArchive, p)
    } else if let Some(p) = o.strip_prefix("oci:") {
        (Format::Oci, p)
    } else if o.ends_with(".tar.gz") || o.ends_with(".tgz") {
        (Format::TarGz, o)
    } else if o.ends_with(".tar.zst") {
        (Format::TarZst, o)
    } else {
        (Format::Dir, o)
    };
    if path.is_empty() {
        bail!("-o {o}: no path");
    }
    Ok((args.format.unwrap_or(guessed), PathBuf::from(path)))
}

/// A writer that hashes what passes through.
struct HashingWriter<W: Write> {
    inner: W,
    hash: Arc<Mutex<sha2::Sha256>>,
}

impl<W: Write> Write for HashingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hash.lock().expect("hash lock").update(&buf[..n]);
        Ok(n)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

/// The size of the writes into a compressor.
const FEED: usize = 1 << 20;

fn partial_path(out: &Path) -> PathBuf {
    let mut name = out.file_name().unwrap_or_default().to_os_string();
    name.push(".partial");
    out.with_file_name(name)
}

/// The normalized header of an entry; hard link targets get `root/` in front (the bundle root
/// of a tarball; none in an OCI layer).
fn tar_header(meta: &Meta, epoch: u64, root: Option<&str>) -> anyhow::Result<tar::Header> {
    let mut h = tar::Header::new_gnu();
    h.set_mtime(epoch);
    h.set_uid(0);
    h.set_gid(0);
    h.set_mode(bundle_tar::normalized_mode(
        meta.kind == Kind::Dir,
        meta.mode,
    ));
    match &meta.kind {
        Kind::Dir => {
            h.set_entry_type(tar::EntryType::Directory);
            h.set_size(0);
        }
        Kind::File => {
            h.set_entry_type(tar::EntryType::Regular);
            h.set_size(meta.size);
        }
        Kind::Symlink(t) => {
            h.set_entry_type(tar::EntryType::Symlink);
            h.set_size(0);
            h.set_link_name(t)?;
        }
        Kind::Hardlink(t) => {
            h.set_entry_type(tar::EntryType::Link);
            h.set_size(0);
            match root {
                Some(r) => h.set_link_name(format!("{r}/{t}"))?,
                None => h.set_link_name(t)?,
            }
        }
    }
    Ok(h)
}

fn write_tarball(
    out: &Path,
    format: Format,
    sources: Vec<LayerSource>,
    epoch: u64,
    level: Option<i32>,
    threads: usize,
) -> anyhow::Result<Stats> {
    // A stale `.partial` (a run killed with SIGKILL) is truncated.
    let partial = Partial::new(partial_path(out));
    let file = interrupt::fs(|| std::fs::File::create(partial.path()))
        .with_context(|| format!("creating {}", partial.path().display()))?;
    let hash = Arc::new(Mutex::new(sha2::Sha256::new()));
    let hashed = HashingWriter {
        inner: std::io::BufWriter::with_capacity(1 << 20, file),
        hash: hash.clone(),
    };
    let result = (|| -> anyhow::Result<Stats> {
        let stats;
        match format {
            Format::TarZst => {
                let mut enc = zstd::stream::write::Encoder::new(hashed, level.unwrap_or(3))?;
                enc.multithread(threads as u32)?;
                enc.include_checksum(true)?;
                // Large writes into the compressor: the tar writer copies entry data into this
                // buffer directly (no small intermediate copies).
                let mut builder = tar::Builder::new(std::io::BufWriter::with_capacity(FEED, enc));
                stats = write_entries(&mut builder, sources, epoch, Some(BUNDLE_ROOT))?;
                let enc = builder
                    .into_inner()?
                    .into_inner()
                    .map_err(|e| e.into_error())?;
                let mut w = enc.finish()?;
                w.flush()?;
            }
            _ => {
                use gzp::ZWriter;
                let lvl = level.unwrap_or(6).clamp(1, 9) as u32;
                let enc: gzp::par::compress::ParCompress<gzp::deflate::Gzip, _> =
                    gzp::par::compress::ParCompressBuilder::new()
                        .num_threads(threads.max(1))
                        .map_err(|e| anyhow!("gzip threads: {e}"))?
                        .compression_level(gzp::Compression::new(lvl))
                        .from_writer(hashed);
                let mut builder = tar::Builder::new(std::io::BufWriter::with_capacity(FEED, enc));
                stats = write_entries(&mut builder, sources, epoch, Some(BUNDLE_ROOT))?;
                let mut enc = builder
                    .into_inner()?
                    .into_inner()
                    .map_err(|e| e.into_error())?;
                enc.finish().map_err(|e| anyhow!("gzip: {e}"))?;
            }
        }
        Ok(stats)
    })();
    let stats = match result {
        Ok(s) => s,
        Err(e) => {
            partial.discard();
            return Err(e);
        }
    };
    let digest = hex::encode(hash.lock().expect("hash lock").clone().finalize());
    let name = out
        .file_name()
        .unwrap_or_default()
        .to_string_lossy()
        .into_owned();
    let sum = PathBuf::from(format!("{}.sha256", out.display()));
    let sum_partial = partial_path(&sum);
    // The checksum file is written and both renamed in one step an interruption cannot split.
    partial
        .complete(|p| {
            // Data on disk before the names, names on disk after (kpbuild_store::durable).
            let done = std::fs::write(&sum_partial, format!("{digest}  {name}\n"))
                .and_then(|()| durable::sync_path(&sum_partial))
                .and_then(|()| durable::rename(p, out))
                .and_then(|()| durable::rename(&sum_partial, &sum));
            if done.is_err() {
                let _ = std::fs::remove_file(p);
                let _ = std::fs::remove_file(&sum_partial);
            }
            done
        })
        .with_context(|| format!("writing {} and {}", out.display(), sum.display()))?;
    Ok(stats)
}

/// Writes the merged entries of `sources` as a tar with normalized headers: under `root/` (a
/// bundle tarball, which also gets an entry for `root/` itself) or from the top (an OCI layer).
pub(crate) fn write_entries<W: Write>(
    builder: &mut tar::Builder<W>,
    sources: Vec<LayerSource>,
    epoch: u64,
    root: Option<&str>,
) -> anyhow::Result<Stats> {
    if let Some(root) = root {
        let dir = Meta {
            path: String::new(),
            kind: Kind::Dir,
            mode: 0o755,
            size: 0,
        };
        builder.append_data(
            &mut tar_header(&dir, epoch, None)?,
            format!("{root}/"),
            std::io::empty(),
        )?;
    }
    let stats = tar_merge::merge(sources, |meta, data| -> anyhow::Result<()> {
        let mut h = tar_header(meta, epoch, root)?;
        let name = match root {
            Some(r) => format!("{r}/{}", meta.path),
            None => meta.path.clone(),
        };
        match data {
            Some(r) => builder.append_data(&mut h, &name, r)?,
            None => builder.append_data(&mut h, &name, std::io::empty())?,
        }
        Ok(())
    })?;
    builder.finish()?;
    Ok(stats)
}

fn write_dir(out: &Path, sources: Vec<LayerSource>) -> anyhow::Result<Stats> {
    if out.exists() {
        bail!(
            "{} exists; kpbuild export writes a new directory (remove it first)",
            out.display()
        );
    }
    let partial = Partial::new(partial_path(out));
    let root = partial.path().to_path_buf();
    // A stale `.partial` (a run killed with SIGKILL) is replaced.
    interrupt::fs(|| {
        interrupt::remove(&root)?;
        std::fs::create_dir_all(&root)
    })
    .with_context(|| format!("creating {}", root.display()))?;
    let result = tar_merge::merge(sources, |meta, data| -> anyhow::Result<()> {
        let p = root.join(&meta.path);
        match (&meta.kind, data) {
            (Kind::Dir, _) => interrupt::fs(|| std::fs::create_dir_all(&p))?,
            (Kind::File, Some(r)) => {
                let mut f = interrupt::fs(|| std::fs::File::create(&p))?;
                std::io::copy(r, &mut f)?;
                use std::os::unix::fs::PermissionsExt;
                f.set_permissions(std::fs::Permissions::from_mode(
                    bundle_tar::normalized_mode(false, meta.mode),
                ))?;
            }
            (Kind::Symlink(t), _) => interrupt::fs(|| std::os::unix::fs::symlink(t, &p))?,
            (Kind::Hardlink(t), _) => interrupt::fs(|| std::fs::hard_link(root.join(t), &p))?,
            (Kind::File, None) => bail!("internal: file without data"),
        }
        Ok(())
    });
    match result {
        Ok(stats) => {
            partial.complete(|p| durable::rename_tree(p, out))?;
            Ok(stats)
        }
        Err(e) => {
            partial.discard();
            Err(e)
        }
    }
}
