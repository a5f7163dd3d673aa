//! The OCI forms of `kpbuild export`: `oci:DIR` (an OCI image layout) and `oci-archive:FILE`
//! (the same layout as one tar). One manifest per platform with one layer per module: an
//! uncompressed tar of the module's tree from the store, with the bundle tarball's normalized
//! headers (`SOURCE_DATE_EPOCH`), so a module that did not change keeps its layer digest from
//! one bundle version to the next. A layer's digest is computed once per tree and epoch (a
//! hashing pass, which `kpbuild build` makes when a result arrives) and kept in the store;
//! every layer written is checked against it. The layout
//! (or archive) is written under `OUT.partial`, renamed when complete, and removed on SIGINT or
//! SIGTERM.
//!
//! The JSON documents are `kpbuild_oci::document`'s typed structs, whose field order fixes the
//! key order, rather than `oci-spec`'s types: their bytes are digests, and an export must stay
//! byte-identical across kpbuild versions for the same module layers. `oci-spec` decides key
//! order and omitted fields itself (and may change them between releases). The bytes are pinned
//! by the unit tests of `document` and by `tests/export_interrupt.rs`, and checked by the e2e
//! (`skopeo inspect`, two exports compared byte for byte).

use std::collections::{BTreeMap, BTreeSet};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use anyhow::{Context, anyhow, bail};
use kpbuild_bundle::spec::Spec;
use kpbuild_oci::document::{
    Annotations, Blob, ContainerConfig, Descriptor, ImageConfig, ImageIndex, ImageManifest, RootFs,
};
use kpbuild_oci::media_type::OCI_LAYER_TAR;
use kpbuild_oci::platform::Platform;
use kpbuild_oci::registry_layout::Digest;
use kpbuild_store::store::{Key, Store};

use crate::interrupt::{self, Partial};
use sha2::Digest as _;

/// Where blobs and files of the layout go.
trait Sink {
    /// Writes a blob of `size` bytes from `r` under the name `digest` (the caller checks that
    /// the bytes hash to it).
    fn blob_stream(&mut self, digest: &Digest, size: u64, r: &mut dyn Read) -> anyhow::Result<()>;
    fn file(&mut self, name: &str, data: &[u8]) -> anyhow::Result<()>;
    /// Flushes what is written; the caller renames the partial output.
    fn finish(self: Box<Self>) -> anyhow::Result<()>;
}

struct DirSink {
    partial: PathBuf,
}

impl Sink for DirSink {
    fn blob_stream(&mut self, digest: &Digest, _size: u64, r: &mut dyn Read) -> anyhow::Result<()> {
        let hex = digest.hex();
        let dir = self.partial.join("blobs/sha256");
        let tmp = dir.join(format!("{hex}.partial"));
        let f = interrupt::fs(|| {
            std::fs::create_dir_all(&dir)?;
            std::fs::File::create(&tmp)
        })?;
        let mut w = std::io::BufWriter::with_capacity(1 << 20, f);
        std::io::copy(r, &mut w)?;
        let f = w.into_inner().map_err(|e| e.into_error())?;
        f.sync_all()?;
        interrupt::fs(|| std::fs::rename(&tmp, dir.join(hex)))?;
        Ok(())
    }
    fn file(&mut self, name: &str, data: &[u8]) -> anyhow::Result<()> {
        let p = self.partial.join(name);
        interrupt::fs(|| {
            std::fs::create_dir_all(p.parent().expect("in the layout"))?;
            std::fs::write(&p, data)
        })?;
        Ok(())
    }
    fn finish(self: Box<Self>) -> anyhow::Result<()> {
        Ok(())
    }
}

struct TarSink {
    builder: tar::Builder<std::io::BufWriter<std::fs::File>>,
    epoch: u64,
}

impl TarSink {
    fn header(&self, size: u64) -> tar::Header {
        let mut h = tar::Header::new_gnu();
        h.set_size(size);
        h.set_mode(0o644);
        h.set_mtime(self.epoch);
        h.set_uid(0);
        h.set_gid(0);
        h.set_entry_type(tar::EntryType::Regular);
        h
    }
}

impl Sink for TarSink {
    fn blob_stream(&mut self, digest: &Digest, size: u64, r: &mut dyn Read) -> anyhow::Result<()> {
        let mut h = self.header(size);
        self.builder
            .append_data(&mut h, format!("blobs/sha256/{}", digest.hex()), r)?;
        Ok(())
    }
    fn file(&mut self, name: &str, data: &[u8]) -> anyhow::Result<()> {
        let mut h = self.header(data.len() as u64);
        self.builder.append_data(&mut h, name, data)?;
        Ok(())
    }
    fn finish(self: Box<Self>) -> anyhow::Result<()> {
        let mut w = self.builder.into_inner()?;
        w.flush()?;
        w.get_ref().sync_all()?;
        Ok(())
    }
}

fn partial(out: &Path) -> PathBuf {
    let mut n = out.file_name().unwrap_or_default().to_os_string();
    n.push(".partial");
    out.with_file_name(n)
}

/// Writes the OCI layout (or archive) of every platform; returns the number of layers.
pub fn write(
    store: &Store,
    trees: &BTreeMap<Key, Digest>,
    out: &Path,
    archive: bool,
    spec: &Spec,
    platforms: &[Platform],
    epoch: u64,
) -> anyhow::Result<usize> {
    if out.exists() {
        bail!(
            "{} exists; kpbuild export writes a new one (remove it first)",
            out.display()
        );
    }
    let part = Partial::new(partial(out));
    // A stale `.partial` (a run killed with SIGKILL) is replaced.
    let mut sink: Box<dyn Sink> = interrupt::fs(|| -> std::io::Result<Box<dyn Sink>> {
        interrupt::remove(part.path())?;
        Ok(if archive {
            let f = std::fs::File::create(part.path())?;
            Box::new(TarSink {
                builder: tar::Builder::new(std::io::BufWriter::with_capacity(1 << 20, f)),
                epoch,
            })
        } else {
            std::fs::create_dir_all(part.path())?;
            Box::new(DirSink {
                partial: part.path().to_path_buf(),
            })
        })
    })
    .with_context(|| format!("creating {}", part.path().display()))?;
    let result = (|| -> anyhow::Result<usize> {
        let mut written: BTreeSet<Digest> = BTreeSet::new();
        let mut manifests = Vec::new();
        let mut n_layers = 0;
        sink.file("oci-layout", br#"{"imageLayoutVersion":"1.0.0"}"#)?;
        for p in platforms {
            let mut layers = Vec::new();
            // The layers in the spec's module order (the manifest module last).
            for module in kpbuild_bundle::plan::bundle_modules(spec, p) {
                let key = Key::new(&spec.name, &spec.version, module, p);
                let tree_digest = trees
                    .get(&key)
                    .ok_or_else(|| anyhow!("internal: no tree for {key}"))?;
                let (digest, size) = layer_digest(store, &key.to_string(), tree_digest, epoch)?;
                if written.insert(digest.clone()) {
                    let tree = store.tree(tree_digest)?;
                    // The layer is made (and hashed) on a thread, into a pipe the sink reads.
                    let (mut reader, writer) = std::io::pipe()?;
                    widen_pipe(&writer);
                    let name = key.to_string();
                    std::thread::scope(|scope| {
                        let producer = scope.spawn(move || {
                            let mut tee = Hashing {
                                inner: Some(writer),
                                ..Hashing::default()
                            };
                            layer_tar(store, &name, tree, epoch, &mut tee)?;
                            // The end of the stream for the reader.
                            tee.inner = None;
                            Ok::<_, anyhow::Error>(tee)
                        });
                        let streamed = sink.blob_stream(&digest, size, &mut reader);
                        drop(reader);
                        // The producer's error says why the stream ended early.
                        let tee = producer.join().expect("layer thread")?;
                        streamed?;
                        let got = Digest::from_hasher(tee.hash);
                        if got != digest || tee.size != size {
                            bail!(
                                "the layer hashes to {got} ({} bytes), but the store says {digest} ({size} bytes); nothing was kept",
                                tee.size
                            );
                        }
                        Ok(())
                    })
                    .map_err(|e| anyhow!("the layer of {key}: {e:#}"))?;
                }
                layers.push(
                    Descriptor::new(OCI_LAYER_TAR, digest, size)
                        .annotate("org.opencontainers.image.title", &key.module),
                );
                n_layers += 1;
            }
            let diff_ids = layers.iter().map(|l| l.digest.clone()).collect();
            let config =
                ImageConfig::new(p, RootFs::layers(diff_ids)).with_config(ContainerConfig {
                    labels: Annotations::from([
                        (
                            "org.opencontainers.image.version".into(),
                            spec.version.clone(),
                        ),
                        ("io.kpbuild.bundle".into(), spec.name.clone()),
                    ]),
                });
            let config = put_json(&mut *sink, &mut written, &config)?;
            let manifest = ImageManifest::new(config, layers);
            let manifest = put_json(&mut *sink, &mut written, &manifest)?;
            manifests.push(manifest.with_platform(p));
        }
        // The layout's index.json names one image, the bundle version: a multi-platform image
        // index whose manifests are the platforms'.
        let image_index = ImageIndex::new(manifests);
        let image_index = put_json(&mut *sink, &mut written, &image_index)?;
        let index = ImageIndex::new(vec![
            image_index.annotate("org.opencontainers.image.ref.name", &spec.version),
        ]);
        let index = serde_json::to_vec_pretty(&index)?;
        sink.file("index.json", &index)?;
        Ok(n_layers)
    })();
    match result.and_then(|n| sink.finish().map(|()| n)) {
        Ok(n) => {
            // Every blob's and the index's data on disk before the name, the name after.
            part.complete(|p| kpbuild_store::durable::rename_tree(p, out))?;
            Ok(n)
        }
        Err(e) => {
            part.discard();
            Err(e)
        }
    }
}

/// Writes a document as a blob (once, however often it is put); returns its descriptor.
fn put_json(
    sink: &mut dyn Sink,
    written: &mut BTreeSet<Digest>,
    doc: &impl Blob,
) -> anyhow::Result<Descriptor> {
    let (data, desc) = doc.to_blob();
    if written.insert(desc.digest.clone()) {
        sink.blob_stream(&desc.digest, desc.size, &mut &data[..])?;
    }
    Ok(desc)
}

/// The digest and size of a stored tree's OCI layer made with `epoch`: remembered in the store,
/// else computed (a hashing pass over the layer) and remembered. `kpbuild build` calls it for
/// each new result, so that the first OCI export has nothing to compute.
pub fn layer_digest(
    store: &Store,
    name: &str,
    tree_digest: &Digest,
    epoch: u64,
) -> anyhow::Result<(Digest, u64)> {
    if let Some(known) = store.layer_digest(tree_digest, epoch) {
        return Ok(known);
    }
    let tree = store.tree(tree_digest)?;
    let mut hashed = Hashing::default();
    layer_tar(store, name, tree, epoch, &mut hashed)?;
    let d = Digest::from_hasher(hashed.hash);
    store.set_layer_digest(tree_digest, epoch, &d, hashed.size)?;
    Ok((d, hashed.size))
}

/// Writes a module's OCI layer: its tree from the store as a tar with normalized headers.
fn layer_tar<W: Write>(
    store: &Store,
    name: &str,
    tree: kpbuild_store::store::Tree,
    epoch: u64,
    w: W,
) -> anyhow::Result<()> {
    let mut builder = tar::Builder::new(w);
    crate::export::write_entries(
        &mut builder,
        vec![store.source(name, tree)],
        epoch,
        None,
        crate::archive::Extras::new(vec![]),
    )?;
    builder.into_inner()?.flush()?;
    Ok(())
}

/// A writer that hashes and counts what passes through to `inner` (nowhere when `None`).
#[derive(Default)]
struct Hashing {
    inner: Option<std::io::PipeWriter>,
    hash: sha2::Sha256,
    size: u64,
}

impl Write for Hashing {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = match &mut self.inner {
            Some(w) => w.write(buf)?,
            None => buf.len(),
        };
        self.hash.update(&buf[..n]);
        self.size += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        match &mut self.inner {
            Some(w) => w.flush(),
            None => Ok(()),
        }
    }
}

/// Asks for a 1 MiB pipe buffer (the default 64 KiB costs a switch between the threads every
/// 64 KiB); the default stays when the system refuses.
fn widen_pipe(w: &std::io::PipeWriter) {
    use std::os::fd::AsRawFd;
    // SAFETY: fcntl on a descriptor we own; F_SETPIPE_SZ only resizes the pipe's buffer.
    unsafe {
        libc::fcntl(w.as_raw_fd(), libc::F_SETPIPE_SZ, 1 << 20);
    }
}
