//! The local content store: where `kpbuild build` keeps module results and `kpbuild export`
//! reads them, with no Docker daemon and no BuildKit.
//!
//! A module result is a tree (the bundle files one module wrote, from the bundle root). The
//! store keeps it as content-addressed files, so a file that several modules, platforms or
//! bundle versions have is stored once:
//!
//! ```text
//! STORE/store.json                         format marker ({"format": "kpbuild-store", "version": 1})
//! STORE/lock                               flock: shared while building or exporting, exclusive to prune
//! STORE/blobs/sha256/<ab>/<hex>            one file's content (read-only)
//! STORE/trees/sha256/<hex>.json            a module result: its entries in path order
//! STORE/trees/sha256/<hex>.layer-<epoch>   the digest and size of its OCI layer tar (a cache)
//! STORE/refs/<bundle>/<version>/<module>/<os>-<arch>[-<variant>].json
//!                                          the tree a build made for a module of a platform
//! STORE/results/<builder result id>        the tree of a result the builder names by content
//!                                          (a Docker image ID): a build whose result the
//!                                          store has needs no transfer
//! STORE/tmp/                               writes in progress
//! ```
//!
//! Writes never leave anything that reads as complete: blobs and trees are written under
//! `tmp/` and renamed to their digest; the file system is synced (`syncfs`) before a tree is
//! named, and a ref is renamed into place last. An interrupted build leaves only `tmp/` files
//! (and unnamed blobs), which `prune` removes; an export checks each blob's size as it reads.

use std::collections::{BTreeMap, BTreeSet};
use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::SyncSender;

use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

use crate::tar_merge::{self, Kind, LayerError, LayerSource, Meta, Msg};
use kpbuild_oci::platform::Platform;
use kpbuild_oci::registry_layout::Digest;

/// The format marker of a store directory.
const FORMAT: &str = "kpbuild-store";
const VERSION: u32 = 1;
/// Files up to this size are hashed in memory and written only when new.
const IN_MEMORY: usize = 8 << 20;
/// The size of the chunks a store source sends.
const CHUNK: usize = 256 * 1024;

/// Why the store could not do something.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{0} is not a kpbuild store (it has files but no store.json); choose another --store")]
    NotAStore(PathBuf),
    #[error("{path}: {message}")]
    Format { path: PathBuf, message: String },
    #[error("the store {0} is in use by another kpbuild (build or export); try again when it ends")]
    Busy(PathBuf),
    #[error("the module result is refused: {0}")]
    Layer(#[from] LayerError),
    #[error("{0}")]
    Invalid(String),
    #[error(
        "{what} is not in the store {store}\n  hint: run `kpbuild build` for it first (with the same --store)"
    )]
    Missing { what: String, store: PathBuf },
    #[error(
        "the store {store} is damaged: {what}\n  hint: remove {path} and run `kpbuild build` again (it brings the file back)"
    )]
    Damaged {
        store: PathBuf,
        what: String,
        path: PathBuf,
    },
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> StoreError + '_ {
    move |source| StoreError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// How a store is opened: to read and add (shared with other builds and exports), or to prune
/// (alone).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Access {
    Shared,
    Exclusive,
}

/// A module of a bundle version for a platform: what a ref names.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Key {
    pub bundle: String,
    pub version: String,
    pub module: String,
    pub platform: Platform,
}

impl std::fmt::Display for Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "module {} of {} {} ({})",
            self.module, self.bundle, self.version, self.platform
        )
    }
}

impl Key {
    /// The key of `module` of bundle `bundle` at `version` for `platform` (a spec's name and
    /// version: the store knows no spec).
    pub fn new(bundle: &str, version: &str, module: impl Into<String>, platform: &Platform) -> Key {
        Key {
            bundle: bundle.to_string(),
            version: version.to_string(),
            module: module.into(),
            platform: platform.clone(),
        }
    }

    /// The ref file of this key, relative to `refs/`.
    fn rel_path(&self) -> Result<PathBuf, StoreError> {
        for (what, s) in [
            ("bundle name", &self.bundle),
            ("version", &self.version),
            ("module", &self.module),
        ] {
            if s.is_empty()
                || s == "."
                || s == ".."
                || s.contains(['/', '\\', '\0'])
                || s.starts_with('.')
            {
                return Err(StoreError::Invalid(format!(
                    "{what} {s:?} cannot name a store entry (a name without `/` that does not start with `.`)"
                )));
            }
        }
        let mut p = format!("{}-{}", self.platform.os, self.platform.architecture);
        if let Some(v) = &self.platform.variant {
            p.push('-');
            p.push_str(v);
        }
        Ok(PathBuf::from(&self.bundle)
            .join(&self.version)
            .join(&self.module)
            .join(format!("{p}.json")))
    }
}

/// What a ref file holds: the tree a build made for a key, and when.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ref {
    #[serde(flatten)]
    pub key: Key,
    pub tree: Digest,
    /// Seconds since the epoch when the build stored it.
    pub created: u64,
    pub entries: u64,
    /// Bytes of file content in the tree.
    pub bytes: u64,
}

/// One entry of a module tree, in path order.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum Entry {
    Dir {
        path: String,
        mode: u32,
    },
    File {
        path: String,
        mode: u32,
        size: u64,
        digest: Digest,
    },
    Symlink {
        path: String,
        mode: u32,
        target: String,
    },
    Hardlink {
        path: String,
        mode: u32,
        target: String,
    },
}

impl Entry {
    pub fn path(&self) -> &str {
        match self {
            Entry::Dir { path, .. }
            | Entry::File { path, .. }
            | Entry::Symlink { path, .. }
            | Entry::Hardlink { path, .. } => path,
        }
    }

    fn meta(&self) -> Meta {
        let (path, mode, size, kind) = match self {
            Entry::Dir { path, mode } => (path, *mode, 0, Kind::Dir),
            Entry::File {
                path, mode, size, ..
            } => (path, *mode, *size, Kind::File),
            Entry::Symlink { path, mode, target } => {
                (path, *mode, 0, Kind::Symlink(target.clone()))
            }
            Entry::Hardlink { path, mode, target } => {
                (path, *mode, 0, Kind::Hardlink(target.clone()))
            }
        };
        Meta {
            path: path.clone(),
            kind,
            mode,
            size,
        }
    }
}

/// A module result: its entries in path order. Its digest is the digest of its JSON.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tree {
    pub entries: Vec<Entry>,
}

impl Tree {
    /// Bytes of file content (hard links not counted twice).
    pub fn bytes(&self) -> u64 {
        self.entries
            .iter()
            .map(|e| match e {
                Entry::File { size, .. } => *size,
                _ => 0,
            })
            .sum()
    }

    /// The blobs the tree's files are.
    pub fn blobs(&self) -> impl Iterator<Item = &Digest> {
        self.entries.iter().filter_map(|e| match e {
            Entry::File { digest, .. } => Some(digest),
            _ => None,
        })
    }
}

/// What bringing one module result into the store did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Ingested {
    pub tree: Digest,
    pub entries: u64,
    /// Bytes of file content in the result.
    pub bytes: u64,
    /// Files and bytes the store did not have before.
    pub new_files: u64,
    pub new_bytes: u64,
}

/// What `prune` removed.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Pruned {
    pub refs: u64,
    pub trees: u64,
    pub blobs: u64,
    /// Bytes of blobs and leftovers removed.
    pub bytes: u64,
    /// Files of interrupted writes removed from `tmp/`.
    pub leftovers: u64,
}

/// What the store holds.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Usage {
    pub blobs: u64,
    pub blob_bytes: u64,
    pub trees: u64,
    /// Files left in `tmp/` by interrupted writes (or writes in progress).
    pub leftovers: u64,
}

/// An open store. Holding it holds the store's lock.
#[derive(Debug)]
pub struct Store {
    root: PathBuf,
    _lock: File,
}

static TMP_COUNTER: AtomicU64 = AtomicU64::new(0);

impl Store {
    /// Opens (creating it when missing or empty) the store at `root`.
    pub fn open(root: &Path, access: Access) -> Result<Store, StoreError> {
        fs::create_dir_all(root).map_err(io_err(root))?;
        let marker = root.join("store.json");
        match fs::read(&marker) {
            Ok(data) => {
                #[derive(Deserialize)]
                struct Marker {
                    format: String,
                    version: u32,
                }
                let m: Marker = serde_json::from_slice(&data).map_err(|e| StoreError::Format {
                    path: marker.clone(),
                    message: format!("not a kpbuild store marker: {e}"),
                })?;
                if m.format != FORMAT || m.version != VERSION {
                    return Err(StoreError::Format {
                        path: marker,
                        message: format!(
                            "store format {} version {} (this kpbuild reads {FORMAT} version {VERSION}); use another --store",
                            m.format, m.version
                        ),
                    });
                }
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                let empty = fs::read_dir(root).map_err(io_err(root))?.next().is_none();
                if !empty {
                    return Err(StoreError::NotAStore(root.to_path_buf()));
                }
                let data = serde_json::json!({"format": FORMAT, "version": VERSION}).to_string();
                write_atomically(root, &marker, data.as_bytes())?;
            }
            Err(e) => return Err(io_err(&marker)(e)),
        }
        for d in ["blobs/sha256", "trees/sha256", "refs", "results", "tmp"] {
            let p = root.join(d);
            fs::create_dir_all(&p).map_err(io_err(&p))?;
        }
        let lock_path = root.join("lock");
        let lock = File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(io_err(&lock_path))?;
        match access {
            Access::Shared => lock.lock_shared().map_err(io_err(&lock_path))?,
            Access::Exclusive => match lock.try_lock() {
                Ok(()) => {}
                Err(fs::TryLockError::WouldBlock) => {
                    return Err(StoreError::Busy(root.to_path_buf()));
                }
                Err(fs::TryLockError::Error(e)) => return Err(io_err(&lock_path)(e)),
            },
        }
        Ok(Store {
            root: root.to_path_buf(),
            _lock: lock,
        })
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Where a blob is.
    pub fn blob_path(&self, d: &Digest) -> PathBuf {
        self.root
            .join("blobs/sha256")
            .join(&d.hex()[..2])
            .join(d.hex())
    }

    fn tree_path(&self, d: &Digest) -> PathBuf {
        self.root
            .join("trees/sha256")
            .join(format!("{}.json", d.hex()))
    }

    fn ref_path(&self, key: &Key) -> Result<PathBuf, StoreError> {
        Ok(self.root.join("refs").join(key.rel_path()?))
    }

    /// A new path under `tmp/` (unique in this process and among processes).
    pub fn tmp_path(&self, what: &str) -> PathBuf {
        let n = TMP_COUNTER.fetch_add(1, Ordering::Relaxed);
        self.root
            .join("tmp")
            .join(format!("{}-{n}-{what}", std::process::id()))
    }

    /// Reads one module result (a tar of its tree from the bundle root, in path order, as
    /// BuildKit's tar exporter writes it) into the store: every entry is checked as the export
    /// checks module layers (`tar_merge::send_layer`), each file is stored once by digest,
    /// and the tree is stored last. Nothing is named until all of it is on disk.
    pub fn ingest<R: Read>(&self, layer: R) -> Result<Ingested, StoreError> {
        let mut entries: Vec<Entry> = Vec::new();
        let mut current: Option<(Meta, BlobWriter)> = None;
        let mut failure: Option<StoreError> = None;
        let mut stats = Ingested {
            tree: Digest::of_bytes(b""),
            entries: 0,
            bytes: 0,
            new_files: 0,
            new_bytes: 0,
        };
        let sent = tar_merge::send_layer(layer, |msg| {
            let step = (|| -> Result<(), StoreError> {
                match msg {
                    Msg::Entry(meta) => {
                        let writer = BlobWriter::new(self);
                        current = Some((meta, writer));
                    }
                    Msg::Data(chunk) => {
                        let (_, w) = current.as_mut().ok_or_else(|| {
                            StoreError::Invalid("internal: data without an entry".into())
                        })?;
                        w.write(&chunk)?;
                    }
                    Msg::End => {
                        let (meta, w) = current.take().ok_or_else(|| {
                            StoreError::Invalid("internal: end without an entry".into())
                        })?;
                        stats.entries += 1;
                        let entry = match meta.kind {
                            Kind::Dir => Entry::Dir {
                                path: meta.path,
                                mode: meta.mode,
                            },
                            Kind::Symlink(target) => Entry::Symlink {
                                path: meta.path,
                                mode: meta.mode,
                                target,
                            },
                            Kind::Hardlink(target) => Entry::Hardlink {
                                path: meta.path,
                                mode: meta.mode,
                                target,
                            },
                            Kind::File => {
                                let (digest, size, new) = w.finish()?;
                                stats.bytes += size;
                                if new {
                                    stats.new_files += 1;
                                    stats.new_bytes += size;
                                }
                                Entry::File {
                                    path: meta.path,
                                    mode: meta.mode,
                                    size,
                                    digest,
                                }
                            }
                        };
                        entries.push(entry);
                    }
                    Msg::Failed(e) => return Err(StoreError::Invalid(e)),
                }
                Ok(())
            })();
            match step {
                Ok(()) => true,
                Err(e) => {
                    failure = Some(e);
                    false
                }
            }
        });
        if let Some((_, w)) = current.take() {
            w.discard();
        }
        if let Some(e) = failure {
            return Err(e);
        }
        sent?;
        // Every new blob reaches the disk before a tree names it.
        if stats.new_files > 0 {
            sync_fs(&self.root)?;
        }
        let tree = Tree { entries };
        let json = serde_json::to_vec(&tree).expect("a tree serializes");
        let digest = Digest::of_bytes(&json);
        let path = self.tree_path(&digest);
        if !path.exists() {
            write_atomically(&self.root, &path, &json)?;
        }
        stats.tree = digest;
        Ok(stats)
    }

    /// Names the tree a build made for `key` (replacing what it named before).
    pub fn set_ref(&self, key: &Key, ingested: &Ingested) -> Result<Ref, StoreError> {
        let r = Ref {
            key: key.clone(),
            tree: ingested.tree.clone(),
            created: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0),
            entries: ingested.entries,
            bytes: ingested.bytes,
        };
        let path = self.ref_path(key)?;
        let parent = path.parent().expect("refs/…");
        fs::create_dir_all(parent).map_err(io_err(parent))?;
        let json = serde_json::to_vec_pretty(&r).expect("a ref serializes");
        write_atomically(&self.root, &path, &json)?;
        Ok(r)
    }

    /// The ref of `key`, if a build stored one.
    pub fn get_ref(&self, key: &Key) -> Result<Option<Ref>, StoreError> {
        let path = self.ref_path(key)?;
        match fs::read(&path) {
            Ok(data) => serde_json::from_slice(&data)
                .map(Some)
                .map_err(|e| StoreError::Format {
                    path,
                    message: format!("not a ref: {e}"),
                }),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(io_err(&path)(e)),
        }
    }

    /// The ref of `key`, or an error that says to build it.
    pub fn require_ref(&self, key: &Key) -> Result<Ref, StoreError> {
        self.get_ref(key)?.ok_or_else(|| StoreError::Missing {
            what: key.to_string(),
            store: self.root.clone(),
        })
    }

    /// Every ref, sorted by key.
    pub fn refs(&self) -> Result<Vec<Ref>, StoreError> {
        let mut out = Vec::new();
        let base = self.root.join("refs");
        for e in walkdir::WalkDir::new(&base).min_depth(4).max_depth(4) {
            let e = e.map_err(|e| StoreError::Io {
                path: e.path().map(Path::to_path_buf).unwrap_or(base.clone()),
                source: e.into(),
            })?;
            if !e.file_type().is_file() || e.path().extension().is_none_or(|x| x != "json") {
                continue;
            }
            let data = fs::read(e.path()).map_err(io_err(e.path()))?;
            let r: Ref = serde_json::from_slice(&data).map_err(|err| StoreError::Format {
                path: e.path().to_path_buf(),
                message: format!("not a ref: {err}"),
            })?;
            out.push(r);
        }
        out.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(out)
    }

    /// A stored tree, checked against its digest.
    pub fn tree(&self, d: &Digest) -> Result<Tree, StoreError> {
        let path = self.tree_path(d);
        let data = match fs::read(&path) {
            Ok(data) => data,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Err(StoreError::Damaged {
                    store: self.root.clone(),
                    what: format!("tree {d} is missing"),
                    path,
                });
            }
            Err(e) => return Err(io_err(&path)(e)),
        };
        if Digest::of_bytes(&data) != *d {
            return Err(StoreError::Damaged {
                store: self.root.clone(),
                what: format!("tree {d} does not match its digest"),
                path,
            });
        }
        serde_json::from_slice(&data).map_err(|e| StoreError::Format {
            path,
            message: format!("not a tree: {e}"),
        })
    }

    /// The entries of a stored tree with their data, produced on another thread, for
    /// [`tar_merge::merge`]. Each blob's size is checked as it is read; a blob that is missing
    /// or has another size ends the source with an error naming it.
    pub fn source(&self, name: &str, tree: Tree) -> LayerSource {
        let root = self.root.clone();
        let blobs: Vec<Option<PathBuf>> = tree
            .entries
            .iter()
            .map(|e| match e {
                Entry::File { digest, .. } => Some(self.blob_path(digest)),
                _ => None,
            })
            .collect();
        LayerSource::spawn(name, move |tx: &SyncSender<Msg>| {
            send_tree(&root, &tree, &blobs, tx)
        })
    }

    fn result_path(&self, id: &str) -> Result<PathBuf, StoreError> {
        if id.is_empty()
            || !id
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        {
            return Err(StoreError::Invalid(format!(
                "result id {id:?} is not lowercase letters, digits and `-`"
            )));
        }
        Ok(self.root.join("results").join(id))
    }

    /// The tree of a builder result the store has seen (by the builder's content-derived id,
    /// e.g. `docker-image-<hex>`), if the store still holds that tree.
    pub fn result(&self, id: &str) -> Result<Option<Ingested>, StoreError> {
        let path = self.result_path(id)?;
        let Ok(text) = fs::read_to_string(&path) else {
            return Ok(None);
        };
        let Ok(digest) = text.trim().parse::<Digest>() else {
            return Ok(None);
        };
        if !self.tree_path(&digest).exists() {
            return Ok(None);
        }
        let tree = self.tree(&digest)?;
        Ok(Some(Ingested {
            tree: digest,
            entries: tree.entries.len() as u64,
            bytes: tree.bytes(),
            new_files: 0,
            new_bytes: 0,
        }))
    }

    /// Remembers the tree of a builder result.
    pub fn set_result(&self, id: &str, tree: &Digest) -> Result<(), StoreError> {
        let path = self.result_path(id)?;
        write_atomically(&self.root, &path, format!("{tree}\n").as_bytes())
    }

    /// The cached digest and size of a tree's OCI layer tar made with `epoch`.
    pub fn layer_digest(&self, tree: &Digest, epoch: u64) -> Option<(Digest, u64)> {
        let p = self.layer_cache_path(tree, epoch);
        let text = fs::read_to_string(p).ok()?;
        let (d, s) = text.trim().split_once(' ')?;
        Some((d.parse().ok()?, s.parse().ok()?))
    }

    /// Remembers the digest and size of a tree's OCI layer tar made with `epoch`.
    pub fn set_layer_digest(
        &self,
        tree: &Digest,
        epoch: u64,
        layer: &Digest,
        size: u64,
    ) -> Result<(), StoreError> {
        let p = self.layer_cache_path(tree, epoch);
        write_atomically(&self.root, &p, format!("{layer} {size}\n").as_bytes())
    }

    fn layer_cache_path(&self, tree: &Digest, epoch: u64) -> PathBuf {
        self.root
            .join("trees/sha256")
            .join(format!("{}.layer-{epoch}", tree.hex()))
    }

    /// What the store holds on disk.
    pub fn usage(&self) -> Result<Usage, StoreError> {
        let mut u = Usage::default();
        for (_, size) in files_under(&self.root.join("blobs/sha256"))? {
            u.blobs += 1;
            u.blob_bytes += size;
        }
        u.trees = files_under(&self.root.join("trees/sha256"))?
            .iter()
            .filter(|(p, _)| p.extension().is_some_and(|x| x == "json"))
            .count() as u64;
        u.leftovers = files_under(&self.root.join("tmp"))?.len() as u64;
        Ok(u)
    }

    /// Removes the refs of all but the `keep_last` newest versions of each bundle (when
    /// given), then every tree and blob no remaining ref needs, and every leftover of an
    /// interrupted write. Needs the store opened with [`Access::Exclusive`].
    pub fn prune(&self, keep_last: Option<usize>) -> Result<Pruned, StoreError> {
        let mut pruned = Pruned::default();
        // Leftovers: nothing else has the store open.
        for (p, size) in files_under(&self.root.join("tmp"))? {
            remove_file(&p)?;
            pruned.leftovers += 1;
            pruned.bytes += size;
        }
        let mut refs = self.refs()?;
        if let Some(keep) = keep_last {
            // Versions of each bundle, newest first (by the newest build of any module).
            let mut newest: BTreeMap<(&str, &str), u64> = BTreeMap::new();
            for r in &refs {
                let t = newest
                    .entry((r.key.bundle.as_str(), r.key.version.as_str()))
                    .or_default();
                *t = (*t).max(r.created);
            }
            let mut by_bundle: BTreeMap<&str, Vec<(u64, &str)>> = BTreeMap::new();
            for ((b, v), t) in &newest {
                by_bundle.entry(b).or_default().push((*t, v));
            }
            let mut dropped: BTreeSet<(String, String)> = BTreeSet::new();
            for (b, mut versions) in by_bundle {
                versions.sort_by(|a, b| b.cmp(a));
                for (_, v) in versions.into_iter().skip(keep) {
                    dropped.insert((b.to_string(), v.to_string()));
                }
            }
            let mut kept = Vec::new();
            for r in refs {
                if dropped.contains(&(r.key.bundle.clone(), r.key.version.clone())) {
                    remove_file(&self.ref_path(&r.key)?)?;
                    pruned.refs += 1;
                } else {
                    kept.push(r);
                }
            }
            refs = kept;
            remove_empty_dirs(&self.root.join("refs"))?;
        }
        // Mark what the remaining refs need, sweep the rest.
        let mut trees: BTreeSet<String> = BTreeSet::new();
        let mut blobs: BTreeSet<String> = BTreeSet::new();
        for r in &refs {
            let tree = self.tree(&r.tree)?;
            blobs.extend(tree.blobs().map(|d| d.hex().to_string()));
            trees.insert(r.tree.hex().to_string());
        }
        for (p, _) in files_under(&self.root.join("results"))? {
            let named = fs::read_to_string(&p).unwrap_or_default();
            let kept = named
                .trim()
                .parse::<Digest>()
                .is_ok_and(|d| trees.contains(d.hex()));
            if !kept {
                remove_file(&p)?;
            }
        }
        for (p, _) in files_under(&self.root.join("trees/sha256"))? {
            let name = p.file_name().unwrap_or_default().to_string_lossy();
            let hex = name.split('.').next().unwrap_or_default();
            if !trees.contains(hex) {
                remove_file(&p)?;
                if name.ends_with(".json") {
                    pruned.trees += 1;
                }
            }
        }
        for (p, size) in files_under(&self.root.join("blobs/sha256"))? {
            let name = p.file_name().unwrap_or_default().to_string_lossy();
            if !blobs.contains(name.as_ref()) {
                remove_file(&p)?;
                pruned.blobs += 1;
                pruned.bytes += size;
            }
        }
        remove_empty_dirs(&self.root.join("blobs/sha256"))?;
        Ok(pruned)
    }
}

/// Sends a stored tree's entries and data, checking each blob's size.
fn send_tree(
    root: &Path,
    tree: &Tree,
    blobs: &[Option<PathBuf>],
    tx: &SyncSender<Msg>,
) -> Result<(), StoreError> {
    for (entry, blob) in tree.entries.iter().zip(blobs) {
        if tx.send(Msg::Entry(entry.meta())).is_err() {
            return Ok(());
        }
        if let (
            Entry::File {
                size, digest, path, ..
            },
            Some(blob),
        ) = (entry, blob)
        {
            let damaged = |what: String| StoreError::Damaged {
                store: root.to_path_buf(),
                what,
                path: blob.clone(),
            };
            let mut f = match File::open(blob) {
                Ok(f) => f,
                Err(e) if e.kind() == io::ErrorKind::NotFound => {
                    return Err(damaged(format!("blob {digest} of {path} is missing")));
                }
                Err(e) => return Err(io_err(blob)(e)),
            };
            let mut got = 0u64;
            loop {
                // Read straight into the chunk that is sent (no copy, no zeroing).
                let mut chunk = Vec::with_capacity(CHUNK);
                let n = (&mut f)
                    .take(CHUNK as u64)
                    .read_to_end(&mut chunk)
                    .map_err(io_err(blob))?;
                if n == 0 {
                    break;
                }
                got += n as u64;
                if got > *size {
                    break;
                }
                if tx.send(Msg::Data(chunk)).is_err() {
                    return Ok(());
                }
            }
            if got != *size {
                return Err(damaged(format!(
                    "blob {digest} of {path} has {got} bytes where the tree says {size}"
                )));
            }
        }
        if tx.send(Msg::End).is_err() {
            return Ok(());
        }
    }
    Ok(())
}

/// Hashes a file's data as it comes; keeps it in memory while small, else spills it to `tmp/`.
struct BlobWriter<'a> {
    store: &'a Store,
    hash: Sha256,
    size: u64,
    mem: Vec<u8>,
    spill: Option<(PathBuf, io::BufWriter<File>)>,
}

impl<'a> BlobWriter<'a> {
    fn new(store: &'a Store) -> Self {
        BlobWriter {
            store,
            hash: Sha256::new(),
            size: 0,
            mem: Vec::new(),
            spill: None,
        }
    }

    fn write(&mut self, data: &[u8]) -> Result<(), StoreError> {
        self.hash.update(data);
        self.size += data.len() as u64;
        if self.spill.is_none() && self.mem.len() + data.len() > IN_MEMORY {
            let p = self.store.tmp_path("blob");
            let mut f =
                io::BufWriter::with_capacity(1 << 20, File::create(&p).map_err(io_err(&p))?);
            f.write_all(&self.mem).map_err(io_err(&p))?;
            self.mem = Vec::new();
            self.spill = Some((p, f));
        }
        match &mut self.spill {
            Some((p, f)) => f.write_all(data).map_err(io_err(p))?,
            None => self.mem.extend_from_slice(data),
        }
        Ok(())
    }

    /// The blob's digest and size, and whether the store did not have it.
    fn finish(self) -> Result<(Digest, u64, bool), StoreError> {
        let digest = Digest::from_hasher(self.hash);
        let dest = self.store.blob_path(&digest);
        let exists = fs::metadata(&dest).is_ok_and(|m| m.len() == self.size);
        let tmp = match self.spill {
            Some((p, f)) => {
                let f = f.into_inner().map_err(|e| io_err(&p)(e.into_error()))?;
                drop(f);
                p
            }
            None if exists => return Ok((digest, self.size, false)),
            None => {
                let p = self.store.tmp_path("blob");
                fs::write(&p, &self.mem).map_err(io_err(&p))?;
                p
            }
        };
        if exists {
            remove_file(&tmp)?;
            return Ok((digest, self.size, false));
        }
        use std::os::unix::fs::PermissionsExt;
        fs::set_permissions(&tmp, fs::Permissions::from_mode(0o444)).map_err(io_err(&tmp))?;
        let parent = dest.parent().expect("blobs/sha256/xx");
        fs::create_dir_all(parent).map_err(io_err(parent))?;
        crate::durable::rename(&tmp, &dest).map_err(io_err(&dest))?;
        Ok((digest, self.size, true))
    }

    fn discard(self) {
        if let Some((p, _)) = self.spill {
            let _ = fs::remove_file(p);
        }
    }
}

/// Writes `data` to `dest` through a synced temporary file in the store's `tmp/`.
fn write_atomically(root: &Path, dest: &Path, data: &[u8]) -> Result<(), StoreError> {
    let tmp_dir = root.join("tmp");
    fs::create_dir_all(&tmp_dir).map_err(io_err(&tmp_dir))?;
    let n = TMP_COUNTER.fetch_add(1, Ordering::Relaxed);
    let tmp = tmp_dir.join(format!("{}-{n}-write", std::process::id()));
    let mut f = File::create(&tmp).map_err(io_err(&tmp))?;
    f.write_all(data).map_err(io_err(&tmp))?;
    f.sync_all().map_err(io_err(&tmp))?;
    drop(f);
    fs::rename(&tmp, dest).map_err(io_err(dest))?;
    if let Some(parent) = dest.parent()
        && let Ok(d) = File::open(parent)
    {
        let _ = d.sync_all();
    }
    Ok(())
}

/// Flushes every write of the file system `path` is on (one call for many files).
fn sync_fs(path: &Path) -> Result<(), StoreError> {
    crate::durable::sync_fs(path).map_err(io_err(path))
}

fn remove_file(p: &Path) -> Result<(), StoreError> {
    match fs::remove_file(p) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(io_err(p)(e)),
    }
}

/// Regular files under `dir` with their sizes.
fn files_under(dir: &Path) -> Result<Vec<(PathBuf, u64)>, StoreError> {
    let mut out = Vec::new();
    for e in walkdir::WalkDir::new(dir).min_depth(1) {
        let e = e.map_err(|e| StoreError::Io {
            path: e.path().map(Path::to_path_buf).unwrap_or(dir.to_path_buf()),
            source: e.into(),
        })?;
        if e.file_type().is_file() {
            let len = e.metadata().map(|m| m.len()).unwrap_or(0);
            out.push((e.into_path(), len));
        }
    }
    Ok(out)
}

/// Removes the empty directories under `dir` (not `dir` itself).
fn remove_empty_dirs(dir: &Path) -> Result<(), StoreError> {
    for e in walkdir::WalkDir::new(dir).min_depth(1).contents_first(true) {
        let e = e.map_err(|e| StoreError::Io {
            path: e.path().map(Path::to_path_buf).unwrap_or(dir.to_path_buf()),
            source: e.into(),
        })?;
        if e.file_type().is_dir() {
            // Not empty: left as it is.
            let _ = fs::remove_dir(e.path());
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests;
