//! Merging module layers into one bundle stream, entry by entry, with no temporary copy.
//!
//! Each module image has one layer: a tar of the bundle tree from its root, in path order
//! ([`bundle_tar::path_order`]). `send_layer` parses one such tar on a producer thread
//! ([`LayerSource::spawn`]) and sends its entries, with their data in chunks, to a
//! [`LayerSource`]; [`merge`] reads every source at once and hands the entries of the bundle to
//! a callback. The merge guarantees:
//!
//! - entries come in path order, one per path: a directory several modules have is emitted
//!   once (with the first module's mode);
//! - every entry's parent directories are emitted before it (created when no layer has them);
//! - a path that is not a directory in every module having it (a file, a link) is refused,
//!   naming the images that have it: modules must not write the same file;
//! - an entry inside a path that is not a directory is refused, naming both images;
//! - entries that could escape the bundle are refused with the entry and the image: absolute
//!   paths, `..`, links pointing outside, entries written through a link an earlier entry made
//!   (every entry of every layer goes through a [`TarEntryChecker`], and the merged entries
//!   through another, for links across modules); whiteouts, out-of-order layers and truncated
//!   entries are refused too.
//!
//! A producer's error (a truncated layer, a refused entry) reaches the merge as
//! [`MergeError::Layer`]; the merge stops at the first error.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{self, Read};
use std::sync::mpsc::{Receiver, SyncSender, channel, sync_channel};

use crate::bundle_tar;
use kpbuild_paths::safe_path::{EntryKind, PathError, TarEntryChecker, relative_path};

/// One entry of a module layer, as the merge needs it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Meta {
    /// Normalized, relative to the bundle root (`resources/nginx`).
    pub path: String,
    pub kind: Kind,
    /// The mode bits as the layer has them (normalized when written).
    pub mode: u32,
    /// The size of the data (files only; 0 for the others).
    pub size: u64,
}

/// What an entry is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Kind {
    File,
    Dir,
    /// A symbolic link with its target as stored (relative to the link's directory).
    Symlink(String),
    /// A hard link to an earlier entry (normalized, relative to the bundle root).
    Hardlink(String),
}

/// What a producer sends for each entry: `Entry`, then `Data` chunks (files only), then `End`.
/// The layer ends when the sender is dropped; `Failed` ends it with an error.
#[derive(Debug)]
pub enum Msg {
    Entry(Meta),
    Data(Vec<u8>),
    End,
    Failed(String),
}

/// Why a layer tar is refused.
#[derive(Debug, thiserror::Error)]
pub enum LayerError {
    /// The tar could not be read (truncated, corrupt).
    #[error(transparent)]
    Io(#[from] io::Error),
    /// An entry that could escape the bundle (see [`TarEntryChecker`]).
    #[error("layer entry `{entry}` refused: {reason}")]
    Refused { entry: String, reason: PathError },
    #[error("layer entry `{entry}` is truncated: {got} of its {size} bytes")]
    Truncated { entry: String, got: u64, size: u64 },
    #[error("layer entry `{0}` is a whiteout; kpbuild's module layers have none")]
    Whiteout(String),
    #[error("layer entries out of order (`{prev}` before `{path}`)")]
    OutOfOrder { prev: String, path: String },
    #[error("layer entry `{entry}` has an unsupported type {kind}")]
    Unsupported { entry: String, kind: String },
}

/// How `send_layer` ended without an error.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Sent {
    /// Every entry of the layer was sent.
    Whole,
    /// The receiving side hung up (the merge stopped): the rest was not read.
    Abandoned,
}

/// The size of the data chunks `send_layer` sends.
const CHUNK: usize = 256 * 1024;

/// Parses one layer tar and sends its entries, checked and normalized, with their data;
/// `send` returns false when the receiving side is gone.
pub(crate) fn send_layer<R: Read>(
    layer: R,
    mut send: impl FnMut(Msg) -> bool,
) -> Result<Sent, LayerError> {
    let mut inner = tar::Archive::new(layer);
    let mut last: Option<String> = None;
    let mut buf = vec![0u8; CHUNK];
    let mut checker = TarEntryChecker::new();
    for e in inner.entries()? {
        let mut e = e?;
        let raw = e.path()?.to_string_lossy().into_owned();
        let refused = |reason| LayerError::Refused {
            entry: raw.clone(),
            reason,
        };
        let entry_type = e.header().entry_type();
        let target = match entry_type {
            tar::EntryType::Symlink | tar::EntryType::Link => e
                .link_name()?
                .map(|l| l.to_string_lossy().into_owned())
                .unwrap_or_default(),
            _ => String::new(),
        };
        let checked = match entry_type {
            tar::EntryType::Directory => EntryKind::Dir,
            tar::EntryType::Regular | tar::EntryType::Continuous => EntryKind::File,
            tar::EntryType::Symlink => EntryKind::Symlink(&target),
            tar::EntryType::Link => EntryKind::Hardlink(&target),
            other => {
                return Err(LayerError::Unsupported {
                    entry: raw,
                    kind: format!("{other:?}"),
                });
            }
        };
        // Names, link targets, and entries through a link an earlier entry made.
        let path = checker.check(&raw, checked).map_err(refused)?;
        if path
            .rsplit('/')
            .next()
            .is_some_and(|n| n.starts_with(".wh."))
        {
            return Err(LayerError::Whiteout(raw));
        }
        if let Some(prev) = &last
            && bundle_tar::path_order(prev, &path) != std::cmp::Ordering::Less
        {
            return Err(LayerError::OutOfOrder {
                prev: prev.clone(),
                path,
            });
        }
        let kind = match checked {
            EntryKind::Dir => Kind::Dir,
            EntryKind::File => Kind::File,
            EntryKind::Symlink(_) => Kind::Symlink(target.clone()),
            EntryKind::Hardlink(_) => {
                Kind::Hardlink(relative_path(&target, "the layer").map_err(refused)?)
            }
        };
        let h = e.header();
        let meta = Meta {
            path: path.clone(),
            mode: h.mode()?,
            size: if kind == Kind::File { h.size()? } else { 0 },
            kind,
        };
        let (is_file, size) = (meta.kind == Kind::File, meta.size);
        if !send(Msg::Entry(meta)) {
            return Ok(Sent::Abandoned);
        }
        if is_file {
            let mut got = 0u64;
            loop {
                let n = e.read(&mut buf)?;
                if n == 0 {
                    break;
                }
                got += n as u64;
                if !send(Msg::Data(buf[..n].to_vec())) {
                    return Ok(Sent::Abandoned);
                }
            }
            // The tar reader ends an entry's data quietly at the end of its input.
            if got != size {
                return Err(LayerError::Truncated {
                    entry: raw,
                    got,
                    size,
                });
            }
        }
        if !send(Msg::End) {
            return Ok(Sent::Abandoned);
        }
        last = Some(path);
    }
    Ok(Sent::Whole)
}

/// Why a merge stopped.
#[derive(Debug, thiserror::Error)]
pub enum MergeError {
    /// A module image's layer could not be read, or has an entry that is refused.
    #[error("module image {image}: {message}")]
    Layer { image: String, message: String },
    /// A path that is not a directory in more than one module image.
    #[error("`{path}` is in more than one module image ({}); modules must not write the same file", images.join(", "))]
    Duplicate { path: String, images: Vec<String> },
    /// An entry inside a path that is not a directory (two entries, a directory and something
    /// else, would have that path).
    #[error(
        "module image {image}: `{entry}` is inside `{parent}`, which is {parent_kind} in module image {parent_image}, not a directory"
    )]
    NotADirectory {
        image: String,
        entry: String,
        parent: String,
        parent_image: String,
        parent_kind: &'static str,
    },
    /// An entry, or the target of a link, that goes through a symbolic link another entry
    /// (of this module or another) made.
    #[error(
        "module image {image}: `{entry}` goes through the symbolic link `{link}` of module image {link_image}"
    )]
    ThroughLink {
        image: String,
        entry: String,
        link: String,
        link_image: String,
    },
    /// The data of an entry could not be read (the error names the image).
    #[error(transparent)]
    Data(io::Error),
}

/// The entries of one module image, produced on another thread.
pub struct LayerSource {
    image: String,
    rx: Receiver<Msg>,
}

/// How many messages a producer may send ahead of the merge.
const DEPTH: usize = 64;

impl LayerSource {
    /// Runs `produce` on a new thread: it sends the entries of `image` (with `send_layer`,
    /// through a bounded channel); an error it returns ends the source with that error (its
    /// alternate form, `{:#}`).
    pub fn spawn<E, F>(image: impl Into<String>, produce: F) -> LayerSource
    where
        E: std::fmt::Display,
        F: FnOnce(&SyncSender<Msg>) -> Result<(), E> + Send + 'static,
    {
        let (tx, rx) = sync_channel::<Msg>(DEPTH);
        std::thread::spawn(move || {
            if let Err(e) = produce(&tx) {
                let _ = tx.send(Msg::Failed(format!("{e:#}")));
            }
        });
        LayerSource {
            image: image.into(),
            rx,
        }
    }

    /// Parses a whole layer held in memory now, on this thread (tests, fuzzing): its entries,
    /// then its error if it has one, wait in an unbounded channel.
    pub fn from_bytes(image: impl Into<String>, layer: &[u8]) -> LayerSource {
        let (tx, rx) = channel::<Msg>();
        if let Err(e) = send_layer(layer, |m| tx.send(m).is_ok()) {
            let _ = tx.send(Msg::Failed(e.to_string()));
        }
        LayerSource {
            image: image.into(),
            rx,
        }
    }

    fn error(&self, message: impl Into<String>) -> MergeError {
        MergeError::Layer {
            image: self.image.clone(),
            message: message.into(),
        }
    }

    /// The next entry, `None` at the end of the layer.
    fn next_entry(&mut self) -> Result<Option<Meta>, MergeError> {
        match self.rx.recv() {
            Ok(Msg::Entry(m)) => Ok(Some(m)),
            Ok(Msg::Failed(e)) => Err(self.error(e)),
            Ok(_) => Err(self.error("internal: data out of place")),
            Err(_) => Ok(None),
        }
    }
}

/// Reads the data of the current entry of a source.
struct EntryReader<'a> {
    src: &'a mut LayerSource,
    buf: Vec<u8>,
    pos: usize,
    done: bool,
}

impl<'a> EntryReader<'a> {
    fn new(src: &'a mut LayerSource) -> Self {
        EntryReader {
            src,
            buf: Vec::new(),
            pos: 0,
            done: false,
        }
    }

    /// Reads what is left of the entry (when it is skipped).
    fn drain(mut self) -> Result<(), MergeError> {
        io::copy(&mut self, &mut io::sink())
            .map(|_| ())
            .map_err(MergeError::Data)
    }
}

impl Read for EntryReader<'_> {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        while self.pos >= self.buf.len() {
            if self.done {
                return Ok(0);
            }
            match self.src.rx.recv() {
                Ok(Msg::Data(d)) => {
                    self.buf = d;
                    self.pos = 0;
                }
                Ok(Msg::End) => self.done = true,
                Ok(Msg::Failed(e)) => return Err(io::Error::other(self.src.error(e))),
                Ok(Msg::Entry(_)) | Err(_) => {
                    return Err(io::Error::other(self.src.error("entry data ended early")));
                }
            }
        }
        let n = out.len().min(self.buf.len() - self.pos);
        out[..n].copy_from_slice(&self.buf[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

/// What a merge emitted.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    /// Entries emitted (directories included).
    pub entries: u64,
    /// Bytes of file content emitted.
    pub bytes: u64,
}

/// Merges `sources` in path order and hands each entry of the bundle to `emit`, with a reader
/// of its data when it is a file (what `emit` leaves unread is skipped). Stops at the first
/// error, from a source or from `emit`.
pub fn merge<E>(
    mut sources: Vec<LayerSource>,
    mut emit: impl FnMut(&Meta, Option<&mut dyn Read>) -> Result<(), E>,
) -> Result<Stats, E>
where
    E: From<MergeError>,
{
    let mut heads: Vec<Option<Meta>> = Vec::with_capacity(sources.len());
    for s in sources.iter_mut() {
        heads.push(s.next_entry()?);
    }
    let mut emitted_dirs: BTreeSet<String> = BTreeSet::new();
    // The last entry emitted that is not a directory, and its source. In path order, the
    // entries inside a path come right after it: a later entry inside this one would be the
    // first, so this is the only one to check against.
    let mut last_leaf: Option<(String, usize, Kind)> = None;
    // The entries as merged, checked again: a link of one module may lead through a link of
    // another (`x/y` or `l -> x/..` with `x -> .` from elsewhere).
    let mut checker = TarEntryChecker::new();
    let mut link_images: BTreeMap<String, usize> = BTreeMap::new();
    // Regular files (and hard links to them) emitted so far: what a hard link may name.
    let mut emitted_files: BTreeSet<String> = BTreeSet::new();
    let mut stats = Stats::default();
    while let Some(min) = heads
        .iter()
        .flatten()
        .map(|m| m.path.clone())
        .min_by(|a, b| bundle_tar::path_order(a, b))
    {
        let holders: Vec<usize> = (0..heads.len())
            .filter(|&i| heads[i].as_ref().is_some_and(|m| m.path == min))
            .collect();
        let metas: Vec<Meta> = holders
            .iter()
            .map(|&i| heads[i].clone().expect("held"))
            .collect();
        let all_dirs = metas.iter().all(|m| m.kind == Kind::Dir);
        if !all_dirs && holders.len() > 1 {
            return Err(MergeError::Duplicate {
                path: min,
                images: holders.iter().map(|&i| sources[i].image.clone()).collect(),
            }
            .into());
        }
        if let Some((leaf, i, kind)) = &last_leaf
            && min
                .strip_prefix(leaf.as_str())
                .is_some_and(|r| r.starts_with('/'))
        {
            return Err(MergeError::NotADirectory {
                image: sources[holders[0]].image.clone(),
                entry: min,
                parent: leaf.clone(),
                parent_image: sources[*i].image.clone(),
                parent_kind: match kind {
                    Kind::File => "a file",
                    Kind::Symlink(_) => "a symbolic link",
                    Kind::Hardlink(_) => "a hard link",
                    Kind::Dir => "a directory",
                },
            }
            .into());
        }
        let first = holders[0];
        let checked = match &metas[0].kind {
            Kind::Dir => EntryKind::Dir,
            Kind::File => EntryKind::File,
            Kind::Symlink(t) => EntryKind::Symlink(t),
            Kind::Hardlink(t) => EntryKind::Hardlink(t),
        };
        if let Err(e) = checker.check(&min, checked) {
            let image = sources[first].image.clone();
            return Err(match e {
                PathError::ThroughSymlink { link, .. } => MergeError::ThroughLink {
                    image,
                    entry: min,
                    link_image: link_images
                        .get(&link)
                        .map_or_else(|| "?".into(), |&i| sources[i].image.clone()),
                    link,
                },
                other => MergeError::Layer {
                    image,
                    message: format!("entry `{min}` refused: {other}"),
                },
            }
            .into());
        }
        match &metas[0].kind {
            Kind::Symlink(_) => {
                link_images.insert(min.clone(), first);
            }
            Kind::Hardlink(t) if !emitted_files.contains(t) => {
                return Err(MergeError::Layer {
                    image: sources[first].image.clone(),
                    message: format!(
                        "hard link `{min}` names `{t}`, which is not a file before it in the bundle"
                    ),
                }
                .into());
            }
            Kind::File | Kind::Hardlink(_) => {
                emitted_files.insert(min.clone());
            }
            Kind::Dir => {}
        }
        for parent in bundle_tar::parents(&min) {
            if emitted_dirs.insert(parent.to_string()) {
                emit(
                    &Meta {
                        path: parent.to_string(),
                        kind: Kind::Dir,
                        mode: 0o755,
                        size: 0,
                    },
                    None,
                )?;
                stats.entries += 1;
            }
        }
        let meta = metas[0].clone();
        if meta.kind == Kind::Dir {
            if emitted_dirs.insert(meta.path.clone()) {
                emit(&meta, None)?;
                stats.entries += 1;
            }
        } else {
            let mut reader = EntryReader::new(&mut sources[first]);
            if meta.kind == Kind::File {
                emit(&meta, Some(&mut reader))?;
                stats.bytes += meta.size;
            } else {
                emit(&meta, None)?;
            }
            reader.drain()?;
            stats.entries += 1;
            last_leaf = Some((meta.path.clone(), first, meta.kind.clone()));
        }
        for &i in &holders {
            if meta.kind == Kind::Dir || i != first {
                EntryReader::new(&mut sources[i]).drain()?;
            }
            heads[i] = sources[i].next_entry()?;
        }
    }
    Ok(stats)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An entry of a test layer: name (as stored, unchecked), type, link target, data.
    type TestEntry<'a> = (&'a str, tar::EntryType, &'a str, &'a [u8]);

    fn file<'a>(name: &'a str, data: &'a [u8]) -> TestEntry<'a> {
        (name, tar::EntryType::Regular, "", data)
    }
    fn dir(name: &str) -> TestEntry<'_> {
        (name, tar::EntryType::Directory, "", b"")
    }
    fn symlink<'a>(name: &'a str, target: &'a str) -> TestEntry<'a> {
        (name, tar::EntryType::Symlink, target, b"")
    }
    fn hardlink<'a>(name: &'a str, target: &'a str) -> TestEntry<'a> {
        (name, tar::EntryType::Link, target, b"")
    }

    /// A layer tar with these entries, names and link targets stored as given (the tar
    /// crate's path setters would refuse the bad ones).
    fn layer(entries: &[TestEntry<'_>]) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        for (name, kind, target, data) in entries {
            let mut h = tar::Header::new_old();
            let old = h.as_old_mut();
            old.name[..name.len()].copy_from_slice(name.as_bytes());
            old.linkname[..target.len()].copy_from_slice(target.as_bytes());
            h.set_entry_type(*kind);
            h.set_mode(if *kind == tar::EntryType::Directory {
                0o755
            } else {
                0o644
            });
            h.set_size(data.len() as u64);
            h.set_cksum();
            b.append(&h, *data).unwrap();
        }
        b.into_inner().unwrap()
    }

    fn source(image: &str, tar: Vec<u8>) -> LayerSource {
        LayerSource::from_bytes(image, &tar)
    }

    /// A source parsed on its own thread through a bounded channel, as `kpbuild export` has.
    fn threaded(image: &str, tar: Vec<u8>) -> LayerSource {
        LayerSource::spawn(image, move |tx| {
            send_layer(tar.as_slice(), |m| tx.send(m).is_ok()).map(|_| ())
        })
    }

    /// The emitted entries with their data.
    type Emitted = Vec<(Meta, Vec<u8>)>;

    /// Merges the layers.
    fn run(layers: Vec<(&str, Vec<u8>)>) -> Result<(Emitted, Stats), MergeError> {
        let sources = layers
            .into_iter()
            .map(|(image, tar)| source(image, tar))
            .collect();
        let mut out = Vec::new();
        let stats = merge(sources, |m: &Meta, data: Option<&mut dyn Read>| {
            let mut v = Vec::new();
            if let Some(r) = data {
                r.read_to_end(&mut v).map_err(MergeError::Data)?;
            }
            out.push((m.clone(), v));
            Ok::<(), MergeError>(())
        })?;
        Ok((out, stats))
    }

    fn refused(layers: Vec<(&str, Vec<u8>)>) -> String {
        match run(layers) {
            Ok((out, _)) => panic!("merged: {out:?}"),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn two_layers_merge_in_path_order_shared_dirs_once_parents_first() {
        let files = layer(&[
            dir("./resources/"),
            dir("./resources/files/"),
            file("./resources/files/kubelet", b"kubelet bytes"),
            symlink("./resources/files/latest", "kubelet"),
            hardlink("./resources/files/same", "resources/files/kubelet"),
        ]);
        let images = layer(&[
            file("deep/er/file", b"no parents in the layer"),
            dir("resources"),
            dir("resources/images"),
            file("resources/images/index.json", b"{}"),
            file("z.json", b"z"),
        ]);
        let (out, stats) = run(vec![("files", files), ("images", images)]).unwrap();
        let paths: Vec<&str> = out.iter().map(|(m, _)| m.path.as_str()).collect();
        assert_eq!(
            paths,
            [
                "deep",
                "deep/er",
                "deep/er/file",
                "resources",
                "resources/files",
                "resources/files/kubelet",
                "resources/files/latest",
                "resources/files/same",
                "resources/images",
                "resources/images/index.json",
                "z.json",
            ]
        );
        let get = |p: &str| out.iter().find(|(m, _)| m.path == p).unwrap();
        assert_eq!(get("deep").0.kind, Kind::Dir);
        assert_eq!(get("deep/er/file").1, b"no parents in the layer");
        assert_eq!(get("resources/files/kubelet").1, b"kubelet bytes");
        assert_eq!(get("resources/files/kubelet").0.size, 13);
        assert_eq!(
            get("resources/files/latest").0.kind,
            Kind::Symlink("kubelet".into())
        );
        assert_eq!(
            get("resources/files/same").0.kind,
            Kind::Hardlink("resources/files/kubelet".into())
        );
        assert_eq!(
            stats,
            Stats {
                entries: 11,
                bytes: 13 + 2 + 23 + 1
            }
        );
    }

    #[test]
    fn threaded_sources_stream_big_files_and_stop_with_the_merge() {
        let big: Vec<u8> = (0..3 * CHUNK + 5).map(|i| (i % 251) as u8).collect();
        let names: Vec<String> = (0..2 * DEPTH).map(|i| format!("many/{i:04}")).collect();
        let mut a = vec![file("big/a", &big)];
        a.extend(names.iter().map(|n| file(n, b"small")));
        let b = layer(&[file("big/b", &big[..CHUNK]), file("z", b"z")]);
        let mut seen = Vec::new();
        let stats = merge(
            vec![threaded("a", layer(&a)), threaded("b", b.clone())],
            |m, data| {
                let mut v = Vec::new();
                if let Some(r) = data {
                    r.read_to_end(&mut v).map_err(MergeError::Data)?;
                }
                seen.push((m.path.clone(), v.len()));
                Ok::<(), MergeError>(())
            },
        )
        .unwrap();
        assert_eq!(
            seen[..4],
            [
                ("big".to_string(), 0),
                ("big/a".to_string(), big.len()),
                ("big/b".to_string(), CHUNK),
                ("many".to_string(), 0)
            ]
        );
        assert_eq!(seen.len(), 4 + names.len() + 1);
        assert_eq!(
            stats.bytes,
            (big.len() + CHUNK + 5 * names.len() + 1) as u64
        );
        // The merge stops at an error while the producers still have entries to send: they
        // stop too (no hang).
        let r = merge(vec![threaded("a", layer(&a)), threaded("b", b)], |m, _| {
            if m.path == "big/b" {
                Err(MergeError::Data(io::Error::other("stop")))
            } else {
                Ok(())
            }
        });
        assert_eq!(r.unwrap_err().to_string(), "stop");
    }

    #[test]
    fn unread_data_is_skipped_and_emit_errors_stop_the_merge() {
        let a = layer(&[file("a", b"aaaa"), file("b", b"bbbb")]);
        let mut seen = Vec::new();
        let stats = merge(vec![source("a", a.clone())], |m, _| {
            seen.push(m.path.clone());
            Ok::<(), MergeError>(())
        })
        .unwrap();
        assert_eq!(seen, ["a", "b"]);
        assert_eq!(stats.bytes, 8);
        let r = merge(vec![source("a", a)], |m, _| {
            if m.path == "b" {
                Err(MergeError::Data(io::Error::other("disk full")))
            } else {
                Ok(())
            }
        });
        assert_eq!(r.unwrap_err().to_string(), "disk full");
    }

    #[test]
    fn a_file_in_two_layers_is_refused_naming_both_images() {
        let e = refused(vec![
            (
                "kubeplay/files:v0.1.0-amd64",
                layer(&[dir("x"), file("x/f", b"1")]),
            ),
            (
                "kubeplay/images:v0.1.0-amd64",
                layer(&[dir("x"), file("x/f", b"2")]),
            ),
        ]);
        assert_eq!(
            e,
            "`x/f` is in more than one module image (kubeplay/files:v0.1.0-amd64, kubeplay/images:v0.1.0-amd64); modules must not write the same file"
        );
        // A file in one, a link in the other: the same.
        let e = refused(vec![
            ("one", layer(&[file("x", b"1")])),
            ("two", layer(&[symlink("x", "y")])),
        ]);
        assert!(
            e.contains("`x` is in more than one module image (one, two)"),
            "{e}"
        );
    }

    #[test]
    fn an_entry_inside_a_file_or_link_is_refused() {
        // Found by the tar_merge fuzz target: the parent was emitted a second time, as a
        // directory (fuzz/regressions/tar_merge/file-then-child).
        let e = refused(vec![("img", layer(&[file("a", b"x"), file("a/b", b"y")]))]);
        assert_eq!(
            e,
            "module image img: `a/b` is inside `a`, which is a file in module image img, not a directory"
        );
        let e = refused(vec![
            ("one", layer(&[file("a", b"x"), file("a-z", b"")])),
            ("two", layer(&[dir("a/d"), file("a/d/f", b"y")])),
        ]);
        assert_eq!(
            e,
            "module image two: `a/d` is inside `a`, which is a file in module image one, not a directory"
        );
        let e = refused(vec![
            ("one", layer(&[symlink("a", ".")])),
            ("two", layer(&[file("a/b", b"y")])),
        ]);
        assert!(
            e.contains("which is a symbolic link in module image one"),
            "{e}"
        );
        // A sibling that sorts after the leaf's children is fine.
        run(vec![(
            "img",
            layer(&[file("a", b"x"), file("a-b", b""), file("a.c/d", b"")]),
        )])
        .unwrap();
    }

    #[test]
    fn links_across_modules_are_checked_together() {
        // Each layer alone is fine; merged, `l` would point at the bundle's parent.
        let e = refused(vec![
            ("one", layer(&[symlink("d", ".")])),
            ("two", layer(&[symlink("l", "d/..")])),
        ]);
        assert_eq!(
            e,
            "module image two: `l` goes through the symbolic link `d` of module image one"
        );
        let e = refused(vec![
            ("one", layer(&[symlink("a", ".")])),
            ("two", layer(&[file("b", b""), hardlink("h", "a/b")])),
        ]);
        assert_eq!(
            e,
            "module image two: `h` goes through the symbolic link `a` of module image one"
        );
        // Links that stay inside, across modules: fine.
        run(vec![
            ("one", layer(&[dir("d"), symlink("d/l", "../e/f")])),
            (
                "two",
                layer(&[dir("e"), file("e/f", b"f"), symlink("z", "d/l")]),
            ),
        ])
        .unwrap();
    }

    #[test]
    fn a_hard_link_names_a_file_before_it() {
        // To a file of another module that comes before it: fine.
        let a = layer(&[file("a", b"x")]);
        let b = layer(&[hardlink("b", "a")]);
        run(vec![("one", a), ("two", b)]).unwrap();
        // To a path that comes later, that is missing, or that is a directory: refused.
        for entries in [
            vec![hardlink("a", "b"), file("b", b"x")],
            vec![hardlink("h", "missing")],
            vec![dir("d"), hardlink("h", "d")],
        ] {
            let e = refused(vec![("kubeplay/files:v0.1.0-amd64", layer(&entries))]);
            assert!(
                e.contains("kubeplay/files:v0.1.0-amd64") && e.contains("not a file before it"),
                "{e}"
            );
        }
    }

    #[test]
    fn out_of_order_entries_are_refused() {
        for entries in [
            &[file("b", b""), file("a", b"")][..],
            &[dir("a"), file("a-c", b""), file("a/b", b"")][..],
            &[file("a", b""), file("./a", b"")][..],
        ] {
            let e = refused(vec![("img", layer(entries))]);
            assert!(
                e.starts_with("module image img: layer entries out of order"),
                "{e}"
            );
        }
    }

    #[test]
    fn entries_that_escape_are_refused_naming_the_entry_and_image() {
        let image = "kubeplay/files:v0.1.0-amd64";
        for (entries, entry, why) in [
            (vec![file("../x", b"x")], "../x", "climbs out"),
            (vec![file("a/../../x", b"x")], "a/../../x", "climbs out"),
            (vec![file("/abs", b"x")], "/abs", "is absolute"),
            (
                vec![dir("a"), symlink("a/link", "../../etc")],
                "a/link",
                "points at \"../../etc\"",
            ),
            (vec![symlink("etc", "/etc")], "etc", "points at \"/etc\""),
            (
                vec![file("f", b"x"), hardlink("h", "../outside")],
                "h",
                "climbs out",
            ),
            (vec![hardlink("h", "/etc/shadow")], "h", "is absolute"),
            (
                vec![symlink("a", "."), file("a/b", b"x")],
                "a/b",
                "written through the symbolic link \"a\"",
            ),
            (
                vec![symlink("a", "."), hardlink("h", "a/x")],
                "h",
                "written through the symbolic link \"a\"",
            ),
            (
                vec![symlink("a", "."), symlink("b", "a/..")],
                "b",
                "written through the symbolic link \"a\"",
            ),
            (vec![file("a\\..\\x", b"x")], "a\\..\\x", "backslash"),
        ] {
            let e = refused(vec![(image, layer(&entries))]);
            let want = format!("module image {image}: layer entry `{entry}` refused: ");
            assert!(e.starts_with(&want) && e.contains(why), "{entry}: {e}");
        }
    }

    #[test]
    fn whiteouts_are_refused() {
        for name in ["resources/.wh.old", ".wh..wh..opq"] {
            let e = refused(vec![("img", layer(&[dir("resources"), file(name, b"")]))]);
            assert_eq!(
                e,
                format!(
                    "module image img: layer entry `{name}` is a whiteout; kpbuild's module layers have none"
                )
            );
        }
    }

    #[test]
    fn unsupported_types_are_refused() {
        let e = refused(vec![(
            "img",
            layer(&[("dev/null", tar::EntryType::Char, "", b"")]),
        )]);
        assert!(
            e.starts_with("module image img: layer entry `dev/null` has an unsupported type"),
            "{e}"
        );
    }

    #[test]
    fn a_truncated_layer_is_an_error_not_a_panic() {
        let data = vec![7u8; 3000];
        let whole = layer(&[dir("d"), file("d/big", &data), file("d/z", b"z")]);
        // Cut within the data of `d/big`: the entry is named.
        let e = refused(vec![("img", whole[..512 * 2 + 1000].to_vec())]);
        assert_eq!(
            e,
            "module image img: layer entry `d/big` is truncated: 1000 of its 3000 bytes"
        );
        // Cut within a header.
        let e = refused(vec![("img", whole[..512 + 100].to_vec())]);
        assert!(e.starts_with("module image img: "), "{e}");
        // Cuts all over: an error, or (cut between entries, or in the end-of-archive blocks)
        // complete entries only.
        let content_end = whole.len() - 1024;
        for cut in (0..whole.len())
            .step_by(11)
            .chain([512, 1024, 4608, content_end])
        {
            if let Ok((out, _)) = run(vec![("img", whole[..cut].to_vec())]) {
                for (m, d) in &out {
                    assert_eq!(m.size, d.len() as u64, "cut {cut}: {m:?}");
                }
                assert!(
                    cut % 512 == 0 || cut >= content_end,
                    "cut {cut} accepted: {:?}",
                    out.iter().map(|(m, _)| &m.path).collect::<Vec<_>>()
                );
            }
        }
    }
}
