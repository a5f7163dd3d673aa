//! The bundle manifest, `kubeplay.lock.json` at the bundle root: every file with its URL and
//! sha256, every image with its source, stored name and digests per platform, every OS package
//! with version and sha256, every image archive, the kpbuild version and the spec's digest.
//! It is written inside the build (from the module trees, by `kpbuild worker bundle-manifest`)
//! and is what `kpbuild verify` checks, the bundle's SBOMs are made from ([`crate::sbom`]) and
//! a security review reads. Every entry a module adds names that module (`module`, the last
//! key of the entry; absent in manifests made before it was recorded).

use std::io::Read;
use std::marker::PhantomData;
use std::path::{Path, PathBuf};

use indexmap::IndexMap;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::Digest as _;

use crate::kinds::SECTIONS;
use crate::plan::PlatformPlan;
use crate::sbom::SbomCx;
use crate::verify::Check;
use kpbuild_sbom::{Component, Digest, Kind, Purl};

pub use crate::layout::LOCK_FILE;
/// Its format tag.
pub const FORMAT: &str = "kpbuild.lock/v1";
/// The manifest's keys before its sections, in order (`Lock`'s fields; a test holds them equal).
pub const HEADER_KEYS: [&str; 4] = ["format", "kpbuild", "bundle", "spec"];
/// The key of an entry naming the module that added it (written by [`Lock::push`] after the
/// entry's own fields; not a field of any [`Entry`] type).
pub const MODULE_KEY: &str = "module";

/// The manifest. Its header is typed here; its sections (`files`, `images`, …) belong to the
/// module kinds: each is a list of entries of one [`Entry`] type, kept in the document's order
/// (every section of [`crate::kinds::SECTIONS`], in that order, when built).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Lock {
    // The fields before the sections: their keys are HEADER_KEYS, in this order.
    pub format: String,
    pub kpbuild: String,
    pub bundle: BundleInfo,
    pub spec: SpecInfo,
    #[serde(flatten)]
    sections: IndexMap<String, Vec<Value>>,
    /// The module whose entries [`Lock::push`] is adding (while [`build`] runs).
    #[serde(skip)]
    module: Option<String>,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct BundleInfo {
    pub name: String,
    pub version: String,
    pub platform: String,
    pub modules: Vec<String>,
    /// The build's `SOURCE_DATE_EPOCH` (or the spec's `source-date-epoch`): the creation
    /// time of the bundle's SBOMs; absent, they name the epoch ([`crate::sbom`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_date_epoch: Option<u64>,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct SpecInfo {
    pub file: String,
    pub sha256: String,
    /// The kubespray checkout the spec reads its lists from (`vars.kubespray`, a directory of
    /// the build context), when it names one: the source the SBOMs name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kubespray: Option<String>,
}

/// An entry of one section of the manifest, and what the section answers: its key, its order,
/// how its entries are checked against an unpacked bundle and how they are counted. A kind
/// that writes entries of its own declares a type implementing this beside its spec and lists
/// its section in [`crate::kinds::SECTIONS`].
pub trait Entry: Serialize + DeserializeOwned + 'static {
    /// The section's key in `kubeplay.lock.json`.
    const SECTION: &'static str;
    /// What a count of its entries is called in summaries (`files`), or `None` when the
    /// section is not counted.
    const NOUN: Option<&'static str>;
    /// What the check also counts and shows in brackets (`blobs`), if anything.
    const DETAIL: Option<&'static str> = None;
    /// The key entries are sorted by (stably) once every module added its own.
    type SortKey: Ord;
    fn sort_key(&self) -> Self::SortKey;
    /// Checks the section's entries against the bundle `check` reads, adding a fault for
    /// everything wrong, and returns how many were checked and the detail's count.
    fn verify(entries: &[Self], check: &mut Check<'_>) -> (usize, usize);
    /// What the entry is in the bundle's SBOMs: the components it maps to (none for an entry
    /// that names nothing the bundle carries), with their digests, package URLs and origin.
    /// The module that brought it is set by the caller.
    fn components(&self, cx: &SbomCx<'_>) -> Vec<Component>;
}

/// A file the bundle carries that no other section describes (image archives, compose files,
/// the installer): its path from the bundle root, sha256 and size. Any kind may add them.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Artifact {
    pub path: String,
    pub sha256: String,
    pub size: u64,
}

impl Entry for Artifact {
    const SECTION: &'static str = "artifacts";
    const NOUN: Option<&'static str> = Some("artifacts");
    type SortKey = String;
    fn sort_key(&self) -> String {
        self.path.clone()
    }
    /// An image archive (`resources/images/*.tar`) is what it is, an image saved for `docker
    /// load`; every other artifact is a file of the bundle itself. Both are made for this
    /// bundle: its name supplies them, its version versions them.
    fn components(&self, cx: &SbomCx<'_>) -> Vec<Component> {
        let file_name = self.path.rsplit('/').next().unwrap_or(&self.path);
        let kind = if crate::layout::is_image_archive(&self.path) {
            Kind::ImageArchive
        } else {
            Kind::Artifact
        };
        let mut c = Component::new(kind, self.path.clone(), cx.bundle.version.clone());
        c.purl = Some(
            Purl::new("generic", file_name)
                .namespace(&cx.bundle.name)
                .version(cx.bundle.version.clone())
                .qualifier("checksum", format!("sha256:{}", self.sha256))
                .to_string(),
        );
        c.digests = vec![Digest::sha256(self.sha256.clone())];
        c.supplier = Some(cx.bundle.name.clone());
        c.path = Some(self.path.clone());
        if kind == Kind::ImageArchive {
            c.description = Some("an image archive for `docker load`".into());
        }
        vec![c]
    }
    fn verify(entries: &[Self], check: &mut Check<'_>) -> (usize, usize) {
        for a in entries {
            match check.file(&a.path, &a.sha256, None) {
                Err(e) => check.fault(&a.path, format!("missing or unreadable ({e})")),
                Ok((s256, _, size)) if s256 != a.sha256 || size != a.size => check.fault(
                    &a.path,
                    format!(
                        "sha256 {s256} size {size}, the manifest says {} size {}",
                        a.sha256, a.size
                    ),
                ),
                Ok(_) => {}
            }
        }
        (entries.len(), 0)
    }
}

/// Errors building or reading a manifest.
#[derive(Debug, thiserror::Error)]
pub enum LockError {
    #[error("{path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("{path}: {message}")]
    Invalid { path: String, message: String },
    /// An entry a kind could not write (its own error, with its own message).
    #[error(transparent)]
    Entry(Box<dyn std::error::Error + Send + Sync>),
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> LockError + '_ {
    move |source| LockError::Io {
        path: path.display().to_string(),
        source,
    }
}

/// sha256 and sha512 (hex) and the size of a file, read once.
pub fn hash_file(path: &Path) -> Result<(String, String, u64), LockError> {
    let mut f = std::fs::File::open(path).map_err(io_err(path))?;
    let mut s256 = sha2::Sha256::new();
    let mut s512 = sha2::Sha512::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut size = 0u64;
    loop {
        let n = f.read(&mut buf).map_err(io_err(path))?;
        if n == 0 {
            break;
        }
        s256.update(&buf[..n]);
        s512.update(&buf[..n]);
        size += n as u64;
    }
    Ok((
        hex::encode(s256.finalize()),
        hex::encode(s512.finalize()),
        size,
    ))
}

/// What the manifest is built from: the plan of one platform and the module trees.
pub struct LockInput<'a> {
    pub plan: &'a PlatformPlan,
    pub bundle: &'a str,
    pub version: &'a str,
    pub spec_file: &'a str,
    pub spec_sha256: &'a str,
    /// The spec's `vars.kubespray`, if any.
    pub kubespray: Option<&'a str>,
    /// `SOURCE_DATE_EPOCH` (the build's, else the spec's), if any.
    pub source_date_epoch: Option<u64>,
    /// `(module name, root of its tree)`: every tree is laid out from the bundle root.
    pub trees: Vec<(String, PathBuf)>,
}

/// Builds the manifest from the module trees, checking every file against its pin: every
/// section present (empty when no module wrote to it), each in its entries' order.
pub fn build(input: &LockInput) -> Result<Lock, LockError> {
    let mut lock = Lock {
        format: FORMAT.into(),
        kpbuild: env!("CARGO_PKG_VERSION").into(),
        bundle: BundleInfo {
            name: input.bundle.into(),
            version: input.version.into(),
            platform: input.plan.platform.to_string(),
            modules: input.plan.modules.iter().map(|m| m.name.clone()).collect(),
            source_date_epoch: input.source_date_epoch,
        },
        spec: SpecInfo {
            file: input.spec_file.into(),
            sha256: input.spec_sha256.into(),
            kubespray: input.kubespray.map(str::to_string),
        },
        sections: SECTIONS
            .iter()
            .map(|s| (s.key().to_string(), vec![]))
            .collect(),
        module: None,
    };
    for m in &input.plan.modules {
        // The manifest op mounts every module's tree; a module without one is not built.
        if let Some((_, root)) = input.trees.iter().find(|(n, _)| *n == m.name) {
            lock.module = Some(m.name.clone());
            let added = m.work.kind().lock(root, &mut lock);
            lock.module = None;
            added?;
        }
    }
    for s in SECTIONS {
        if let Some(entries) = lock.sections.get_mut(s.key()) {
            s.sort(entries)?;
        }
    }
    Ok(lock)
}

impl Lock {
    /// Adds an entry to its section, naming the module adding it (while [`build`] runs).
    pub fn push<E: Entry>(&mut self, entry: E) -> Result<(), LockError> {
        let mut value = serde_json::to_value(entry).map_err(|e| LockError::Invalid {
            path: E::SECTION.into(),
            message: e.to_string(),
        })?;
        if let (Some(m), Value::Object(fields)) = (&self.module, &mut value) {
            fields.insert(MODULE_KEY.into(), Value::String(m.clone()));
        }
        self.sections
            .entry(E::SECTION.to_string())
            .or_default()
            .push(value);
        Ok(())
    }

    /// The entries of a section, as written (none when the section is absent).
    pub fn section(&self, key: &str) -> &[Value] {
        self.sections
            .get(key)
            .map(Vec::as_slice)
            .unwrap_or_default()
    }

    /// The keys of the sections, in the document's order.
    pub fn section_keys(&self) -> impl Iterator<Item = &str> {
        self.sections.keys().map(String::as_str)
    }

    /// How many entries each counted section holds: `11 files, 12 images, …`.
    pub fn summary(&self) -> String {
        SECTIONS
            .iter()
            .filter_map(|s| Some(format!("{} {}", self.section(s.key()).len(), s.noun()?)))
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// A section of the manifest as the loops over all of them see it (building, checking,
/// counting): [`Entry`] made object-safe. [`SectionOf`] is the one implementation.
pub trait Section: Sync {
    fn key(&self) -> &'static str;
    fn noun(&self) -> Option<&'static str>;
    fn detail(&self) -> Option<&'static str>;
    /// Puts the entries in their order.
    fn sort(&self, entries: &mut Vec<Value>) -> Result<(), LockError>;
    /// Checks the entries (as read from a bundle); `(checked, detail count)`, or why the
    /// entries cannot be read.
    fn verify(&self, entries: &[Value], check: &mut Check<'_>) -> Result<(usize, usize), String>;
    /// The SBOM components of the entries, each with the module that brought it (when the
    /// manifest names it), in the entries' order; or why the entries cannot be read.
    fn components(&self, entries: &[Value], cx: &SbomCx<'_>) -> Result<Vec<Component>, String>;
}

/// The section of entries of type `E`.
pub struct SectionOf<E>(PhantomData<fn() -> E>);

impl<E> SectionOf<E> {
    pub const fn new() -> Self {
        SectionOf(PhantomData)
    }
}

impl<E> Default for SectionOf<E> {
    fn default() -> Self {
        Self::new()
    }
}

/// The module an entry names, if any.
fn module_of(entry: &Value) -> Option<&str> {
    entry.get(MODULE_KEY).and_then(Value::as_str)
}

/// The entries as their type, each without the module it names.
fn typed<E: Entry>(entries: &[Value]) -> Result<Vec<E>, String> {
    entries
        .iter()
        .enumerate()
        .map(|(i, v)| {
            let entry = match v {
                Value::Object(fields) if fields.contains_key(MODULE_KEY) => {
                    let mut own = fields.clone();
                    own.remove(MODULE_KEY);
                    E::deserialize(Value::Object(own))
                }
                _ => E::deserialize(v),
            };
            entry.map_err(|e| format!("{}[{i}]: {e}", E::SECTION))
        })
        .collect()
}

impl<E: Entry> Section for SectionOf<E> {
    fn key(&self) -> &'static str {
        E::SECTION
    }
    fn noun(&self) -> Option<&'static str> {
        E::NOUN
    }
    fn detail(&self) -> Option<&'static str> {
        E::DETAIL
    }
    fn sort(&self, entries: &mut Vec<Value>) -> Result<(), LockError> {
        let typed = typed::<E>(entries).map_err(|message| LockError::Invalid {
            path: E::SECTION.into(),
            message,
        })?;
        // The entries as written (with their modules), in the order of their typed keys.
        let mut keyed: Vec<(E::SortKey, Value)> = typed
            .iter()
            .map(E::sort_key)
            .zip(std::mem::take(entries))
            .collect();
        keyed.sort_by(|a, b| a.0.cmp(&b.0));
        *entries = keyed.into_iter().map(|(_, v)| v).collect();
        Ok(())
    }
    fn verify(&self, entries: &[Value], check: &mut Check<'_>) -> Result<(usize, usize), String> {
        Ok(E::verify(&typed::<E>(entries)?, check))
    }
    fn components(&self, entries: &[Value], cx: &SbomCx<'_>) -> Result<Vec<Component>, String> {
        let typed = typed::<E>(entries)?;
        let mut out = Vec::new();
        for (entry, value) in typed.iter().zip(entries) {
            let module = module_of(value);
            for mut c in entry.components(cx) {
                c.module = module.map(str::to_string);
                for child in &mut c.children {
                    child.module = c.module.clone();
                }
                out.push(c);
            }
        }
        Ok(out)
    }
}

/// Every regular file under `root`, sorted.
pub(crate) fn walk_files(root: &Path) -> Result<Vec<PathBuf>, LockError> {
    let mut out = Vec::new();
    for e in walkdir::WalkDir::new(root).sort_by_file_name() {
        let e = e.map_err(|e| LockError::Io {
            path: e.path().unwrap_or(root).display().to_string(),
            source: e.into(),
        })?;
        if e.file_type().is_file() {
            out.push(e.into_path());
        }
    }
    out.sort();
    Ok(out)
}

/// Every file of a module's tree as an artifact (path from the bundle root, sha256, size).
pub fn artifacts(root: &Path) -> Result<Vec<Artifact>, LockError> {
    walk_files(root)?
        .into_iter()
        .map(|path| {
            let rel = path
                .strip_prefix(root)
                .unwrap_or(&path)
                .to_string_lossy()
                .replace('\\', "/");
            let (sha256, _, size) = hash_file(&path)?;
            Ok(Artifact {
                path: rel,
                sha256,
                size,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A manifest as `kpbuild worker bundle-manifest` writes it: the header, then every
    /// section in the kinds' order, fields in their declared order.
    const WRITTEN: &str = r#"{
  "format": "kpbuild.lock/v1",
  "kpbuild": "0.1.0",
  "bundle": {
    "name": "kubeplay",
    "version": "v0.1.0",
    "platform": "linux/amd64",
    "modules": [
      "files"
    ]
  },
  "spec": {
    "file": "Dockerfile.bundle",
    "sha256": "ab"
  },
  "files": [
    {
      "path": "resources/nginx/files/h/a",
      "url": "https://h/a",
      "sha256": "cd",
      "size": 3,
      "pin": null,
      "module": "files"
    }
  ],
  "images": [],
  "packages": [],
  "skipped_packages": [
    {
      "distro": "debian-bookworm",
      "names": [
        "python-apt"
      ]
    }
  ],
  "artifacts": []
}"#;

    #[test]
    fn a_manifest_reads_and_writes_back_byte_for_byte() {
        let lock: Lock = serde_json::from_str(WRITTEN).unwrap();
        assert_eq!(serde_json::to_string_pretty(&lock).unwrap(), WRITTEN);
        let keys: Vec<&str> = lock.section_keys().collect();
        let sections: Vec<&str> = SECTIONS.iter().map(|s| s.key()).collect();
        assert_eq!(keys, sections);
        assert_eq!(lock.summary(), "1 files, 0 images, 0 packages, 0 artifacts");
        let value = serde_json::to_value(&lock).unwrap();
        let written: Vec<&str> = value
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        let header: Vec<&str> = HEADER_KEYS.into_iter().chain(sections).collect();
        assert_eq!(
            written, header,
            "HEADER_KEYS and the sections are every key, in order"
        );
    }

    /// Pushes an artifact of each path and sorts the section.
    fn push_artifacts(lock: &mut Lock, paths: &[&str]) {
        for path in paths {
            lock.push(Artifact {
                path: path.to_string(),
                sha256: "00".into(),
                size: 1,
            })
            .unwrap();
        }
        let s = SECTIONS.iter().find(|s| s.key() == "artifacts").unwrap();
        s.sort(lock.sections.get_mut("artifacts").unwrap()).unwrap();
    }

    #[test]
    fn sections_sort_their_entries_by_their_own_key() {
        let mut lock: Lock = serde_json::from_str(WRITTEN).unwrap();
        push_artifacts(&mut lock, &["z", "b"]);
        let paths: Vec<&str> = lock
            .section("artifacts")
            .iter()
            .map(|e| e["path"].as_str().unwrap())
            .collect();
        assert_eq!(paths, ["b", "z"]);
    }

    #[test]
    fn entries_name_the_module_that_added_them_and_keep_it_through_sorting() {
        let mut lock: Lock = serde_json::from_str(WRITTEN).unwrap();
        lock.module = Some("compose".into());
        push_artifacts(&mut lock, &["z", "b"]);
        lock.module = None;
        push_artifacts(&mut lock, &["a"]);
        let entries = lock.section("artifacts");
        let modules: Vec<Option<&str>> = entries.iter().map(module_of).collect();
        assert_eq!(modules, [None, Some("compose"), Some("compose")]);
        // The module is the entry's last key, and the typed entry does not see it.
        let text = serde_json::to_string(&entries[1]).unwrap();
        assert_eq!(
            text,
            r#"{"path":"b","sha256":"00","size":1,"module":"compose"}"#
        );
        let own = typed::<Artifact>(entries).unwrap();
        assert_eq!(own[1].path, "b");
        // Any other unknown key is still refused.
        let bad = serde_json::json!([{"path": "b", "sha256": "00", "size": 1, "modul": "x"}]);
        assert!(typed::<Artifact>(bad.as_array().unwrap()).is_err());
    }
}
