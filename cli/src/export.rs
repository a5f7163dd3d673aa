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
//! stamp), signatures aside.
//!
//! `--sign KEY` (a directory or a tarball): the lock is read from the store first and signed
//! (`crate::sign`), its signature `kubeplay.lock.json.minisig` goes into the merged stream in
//! its place, and a tarball is signed as it is written (`OUT.minisig`, [`crate::archive`]): one
//! pass, as without signing.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{Context, anyhow, bail};
use kpbuild_bundle::layout;
use kpbuild_bundle::plan::bundle_modules;
use kpbuild_oci::platform::Platform;
use kpbuild_oci::registry_layout::Digest;
use kpbuild_sign::{SecretKey, TrustedComment};
use kpbuild_store::bundle_tar::{self, BUNDLE_ROOT};
use kpbuild_store::durable;
use kpbuild_store::store::{self, Access, Key, Store};
use kpbuild_store::tar_merge::{self, Kind, LayerSource, Meta, Stats};

use crate::archive::{self, Compression, Extra, Extras};
use crate::interrupt::{self, Partial};
use crate::sign::LockFacts;
use crate::spec_arg::SpecArg;
use crate::store_cmd::StoreArg;

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
    /// Sign with this secret key (minisign's format, `kpbuild key generate`): the lock inside
    /// (kubeplay.lock.json.minisig) and a tarball beside it (OUT.minisig). An encrypted key's
    /// password comes from KPBUILD_SIGN_PASSWORD, else from the terminal.
    #[arg(long, value_name = "KEY")]
    sign: Option<PathBuf>,
    #[command(flatten)]
    store: StoreArg,
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let spec = args.spec.read()?;
    let (format, out) = output_of(&args)?;
    if args.sign.is_some() && matches!(format, Format::Oci | Format::OciArchive) {
        bail!(
            "--sign signs a directory or a tarball (its lock and the tarball); export to one of \
             them to sign it"
        );
    }
    // The key (and its password) before any work.
    let secret_key = args
        .sign
        .as_deref()
        .map(crate::sign::read_secret_key)
        .transpose()?;
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
            let mut sources = Vec::new();
            let mut lock = None;
            for k in keys_of(platform) {
                let tree = store.tree(&trees[&k])?;
                if secret_key.is_some() && lock.is_none() {
                    lock = lock_in(&store, &tree)?;
                }
                sources.push(store.source(&k.to_string(), tree));
            }
            let signing = match &secret_key {
                None => None,
                Some(key) => {
                    let lock = lock.ok_or_else(|| {
                        anyhow!(
                            "the store's trees of {platform} hold no {}",
                            layout::LOCK_FILE
                        )
                    })?;
                    Some(Signing::new(key, &lock, &out)?)
                }
            };
            let extras = Extras::new(signing.iter().map(|s| s.lock_signature.clone()).collect());
            let settings = archive::Settings::new(args.level, args.threads);
            let stats = match format {
                Format::Dir => write_dir(&out, sources, extras)?,
                _ => {
                    let compression = if format == Format::TarGz {
                        Compression::Gzip
                    } else {
                        Compression::Zstd
                    };
                    let sign = signing.as_ref().map(|s| (s.key, s.archive_comment.clone()));
                    archive::write(&out, compression, settings, sign, |b| {
                        write_entries(b, sources, epoch, Some(BUNDLE_ROOT), extras)
                    })?
                    .value
                }
            };
            eprintln!(
                "kpbuild export: {} ({}): {} entries, {:.1} MiB of content, in {:.1}s",
                out.display(),
                platform,
                stats.entries,
                stats.bytes as f64 / 1048576.0,
                started.elapsed().as_secs_f64()
            );
            if let Some(s) = &signing {
                eprintln!(
                    "kpbuild export: signed with key ID {}: {} inside{}",
                    s.key.id(),
                    s.lock_signature.path,
                    if format == Format::Dir {
                        String::new()
                    } else {
                        format!(
                            ", {} beside it",
                            archive::sibling(&out, kpbuild_sign::SUFFIX).display()
                        )
                    }
                );
            }
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

/// The normalized header of an entry; hard link targets get `root/` in front (the bundle root
/// of a tarball; none in an OCI layer).
pub(crate) fn tar_header(
    meta: &Meta,
    epoch: u64,
    root: Option<&str>,
) -> anyhow::Result<tar::Header> {
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

/// Writes the merged entries of `sources` and the `extras` in their places as a tar with
/// normalized headers: under `root/` (a bundle tarball, which also gets an entry for `root/`
/// itself) or from the top (an OCI layer).
pub(crate) fn write_entries<W: Write>(
    builder: &mut tar::Builder<W>,
    sources: Vec<LayerSource>,
    epoch: u64,
    root: Option<&str>,
    mut extras: Extras,
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
    let name_of = |path: &str| match root {
        Some(r) => format!("{r}/{path}"),
        None => path.to_string(),
    };
    let mut stats = tar_merge::merge(sources, |meta, data| -> anyhow::Result<()> {
        if extras.holds(&meta.path) {
            bail!("the store's trees already hold {}", meta.path);
        }
        for extra in extras.before(&meta.path) {
            append_extra(builder, extra, epoch, &name_of(&extra.path))?;
        }
        let mut h = tar_header(meta, epoch, root)?;
        let name = name_of(&meta.path);
        match data {
            Some(r) => builder.append_data(&mut h, &name, r)?,
            None => builder.append_data(&mut h, &name, std::io::empty())?,
        }
        Ok(())
    })?;
    for extra in extras.rest() {
        append_extra(builder, extra, epoch, &name_of(&extra.path))?;
        stats.entries += 1;
        stats.bytes += extra.data.len() as u64;
    }
    builder.finish()?;
    Ok(stats)
}

/// A file of [`Extras`] as a tar entry (mode 0644, the bundle's time stamp).
pub(crate) fn append_extra<W: Write>(
    builder: &mut tar::Builder<W>,
    extra: &Extra,
    epoch: u64,
    name: &str,
) -> anyhow::Result<()> {
    let meta = Meta {
        path: extra.path.clone(),
        kind: Kind::File,
        mode: 0o644,
        size: extra.data.len() as u64,
    };
    let mut h = tar_header(&meta, epoch, None)?;
    builder.append_data(&mut h, name, &extra.data[..])?;
    Ok(())
}

fn write_dir(out: &Path, sources: Vec<LayerSource>, mut extras: Extras) -> anyhow::Result<Stats> {
    if out.exists() {
        bail!(
            "{} exists; kpbuild export writes a new directory (remove it first)",
            out.display()
        );
    }
    let partial = Partial::new(archive::partial_path(out));
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
    let result = result.and_then(|mut stats| {
        for extra in extras.rest() {
            let p = root.join(&extra.path);
            if p.exists() {
                bail!("the store's trees already hold {}", extra.path);
            }
            interrupt::fs(|| std::fs::write(&p, &extra.data))
                .with_context(|| format!("writing {}", p.display()))?;
            stats.entries += 1;
            stats.bytes += extra.data.len() as u64;
        }
        Ok(stats)
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

/// The lock in a module's tree, if it holds it, read from the store and checked against its
/// digest.
fn lock_in(store: &Store, tree: &store::Tree) -> anyhow::Result<Option<Vec<u8>>> {
    for e in &tree.entries {
        if let store::Entry::File { path, digest, .. } = e
            && path == layout::LOCK_FILE
        {
            let p = store.blob_path(digest);
            let data = std::fs::read(&p).with_context(|| format!("reading {}", p.display()))?;
            if Digest::of_bytes(&data) != *digest {
                bail!(
                    "{} in the store does not match its digest {digest}",
                    p.display()
                );
            }
            return Ok(Some(data));
        }
    }
    Ok(None)
}

/// What signing an export adds: the lock's signature, and the archive's trusted comment.
struct Signing<'a> {
    key: &'a SecretKey,
    lock_signature: Extra,
    archive_comment: TrustedComment,
}

impl<'a> Signing<'a> {
    fn new(key: &'a SecretKey, lock: &[u8], out: &Path) -> anyhow::Result<Signing<'a>> {
        let subject = LockFacts::of(lock).subject()?;
        let now = crate::sign::now();
        let name = out.file_name().unwrap_or_default().to_string_lossy();
        Ok(Signing {
            key,
            lock_signature: crate::sign::lock_signature(key, lock, &subject, now)?,
            archive_comment: TrustedComment::new(now, name, subject)?,
        })
    }
}
