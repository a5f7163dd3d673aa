//! Checks an unpacked bundle against its manifest (`kubeplay.lock.json`): the manifest read,
//! its format and sections checked, then every section's entries checked by the kind that owns
//! it ([`crate::lock::Entry::verify`], in the order of [`crate::kinds::SECTIONS`]). [`Check`] is
//! what a section checks with: the bundle's root, whether to hash, and the fault list. Last,
//! the bundle's SBOMs must be exactly what the manifest gives ([`crate::sbom`]); a bundle made
//! before kpbuild wrote them has neither, which is no fault. The report lists every fault with
//! its path; nothing stops at the first.

use std::fmt;
use std::path::Path;

use crate::kinds::SECTIONS;
use crate::lock::{self, LOCK_FILE, Lock};
use crate::sbom::Format;

/// One thing wrong with a bundle.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Fault {
    /// The path (from the bundle root) or object at fault.
    pub at: String,
    pub what: String,
}

impl Fault {
    fn new(at: impl Into<String>, what: impl Into<String>) -> Self {
        Fault {
            at: at.into(),
            what: what.into(),
        }
    }
}

impl fmt::Display for Fault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.at, self.what)
    }
}

/// How many entries of one section were checked (and the section's detail count, such as the
/// registry's blobs beside its images).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Tally {
    pub noun: &'static str,
    pub count: usize,
    pub detail: Option<(&'static str, usize)>,
}

impl fmt::Display for Tally {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.count, self.noun)?;
        if let Some((noun, n)) = self.detail {
            write!(f, " ({n} {noun})")?;
        }
        Ok(())
    }
}

/// What was checked and what is wrong.
#[derive(Clone, Debug)]
pub struct Report {
    /// One per counted section, in the manifest's order.
    pub checked: Vec<Tally>,
    pub faults: Vec<Fault>,
}

impl Default for Report {
    /// Every counted section at zero.
    fn default() -> Self {
        Report {
            checked: SECTIONS
                .iter()
                .filter_map(|s| {
                    Some(Tally {
                        noun: s.noun()?,
                        count: 0,
                        detail: s.detail().map(|d| (d, 0)),
                    })
                })
                .collect(),
            faults: vec![],
        }
    }
}

impl Report {
    fn fault(&mut self, at: impl Into<String>, what: impl Into<String>) {
        self.faults.push(Fault::new(at, what));
    }

    pub fn ok(&self) -> bool {
        self.faults.is_empty()
    }

    /// What was checked: `11 files, 12 images (87 blobs), 269 packages, 11 artifacts`.
    pub fn summary(&self) -> String {
        self.checked
            .iter()
            .map(Tally::to_string)
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// What to check.
#[derive(Clone, Copy, Debug)]
pub struct Options {
    /// Hash every file, blob, package and artifact (the default). Without it (`verify
    /// --no-hash`, what `kpbuild serve` checks before it starts) every one is checked by its
    /// presence and size, and the tree's links, indexes and manifests as usual.
    pub hash: bool,
}

impl Default for Options {
    fn default() -> Self {
        Options { hash: true }
    }
}

/// What a section checks an unpacked bundle with.
pub struct Check<'a> {
    /// The bundle's root.
    pub root: &'a Path,
    pub opts: Options,
    faults: &'a mut Vec<Fault>,
}

impl Check<'_> {
    /// Records a fault: the path from the bundle root (or the object) and what is wrong.
    pub fn fault(&mut self, at: impl Into<String>, what: impl Into<String>) {
        self.faults.push(Fault::new(at, what));
    }

    /// The sha256, sha512 and size of the bundle's file at `path` (from the root); without
    /// hashing, its size alone and the digests the caller expects (so that only the size can
    /// differ).
    pub fn file(
        &self,
        path: &str,
        sha256: &str,
        sha512: Option<&str>,
    ) -> Result<(String, String, u64), lock::LockError> {
        self.file_at(&self.root.join(path), sha256, sha512)
    }

    /// [`Check::file`] of a path on disk.
    pub fn file_at(
        &self,
        path: &Path,
        sha256: &str,
        sha512: Option<&str>,
    ) -> Result<(String, String, u64), lock::LockError> {
        if self.opts.hash {
            return lock::hash_file(path);
        }
        let meta = std::fs::metadata(path).map_err(|source| lock::LockError::Io {
            path: path.display().to_string(),
            source,
        })?;
        if !meta.is_file() {
            return Err(lock::LockError::Invalid {
                path: path.display().to_string(),
                message: "not a regular file".into(),
            });
        }
        Ok((
            sha256.to_string(),
            sha512.unwrap_or_default().to_string(),
            meta.len(),
        ))
    }
}

/// Reads the manifest: its header, and exactly the sections the kinds own; with its bytes.
pub fn read_lock(root: &Path) -> Result<(Lock, String), String> {
    let text = std::fs::read_to_string(root.join(LOCK_FILE)).map_err(|e| e.to_string())?;
    let lock = parse_lock(&text)?;
    Ok((lock, text))
}

/// Parses a manifest's text: its header, and exactly the sections the kinds own.
pub fn parse_lock(text: &str) -> Result<Lock, String> {
    let lock: Lock = serde_json::from_str(text).map_err(|e| e.to_string())?;
    let expected = || {
        let keys: Vec<String> = lock::HEADER_KEYS
            .into_iter()
            .chain(SECTIONS.iter().map(|s| s.key()))
            .map(|k| format!("`{k}`"))
            .collect();
        keys.join(", ")
    };
    if let Some(k) = lock
        .section_keys()
        .find(|k| !SECTIONS.iter().any(|s| s.key() == *k))
    {
        return Err(format!(
            "unknown field `{k}`, expected one of {}",
            expected()
        ));
    }
    if let Some(s) = SECTIONS
        .iter()
        .find(|s| !lock.section_keys().any(|k| k == s.key()))
    {
        return Err(format!("missing field `{}`", s.key()));
    }
    Ok(lock)
}

/// Verifies the bundle whose root is `root`, hashing or not: the loop over the sections.
pub fn verify_bundle_with(root: &Path, opts: Options) -> Report {
    let mut r = Report::default();
    let (lock, text) = match read_lock(root) {
        Ok(l) => l,
        Err(e) => {
            r.fault(LOCK_FILE, format!("cannot read the bundle manifest: {e}"));
            return r;
        }
    };
    if lock.format != lock::FORMAT {
        r.fault(
            LOCK_FILE,
            format!("format {} is not {}", lock.format, lock::FORMAT),
        );
    }
    let mut tallies = Vec::new();
    for s in SECTIONS {
        let mut check = Check {
            root,
            opts,
            faults: &mut r.faults,
        };
        let (count, detail) = match s.verify(lock.section(s.key()), &mut check) {
            Ok(counts) => counts,
            Err(e) => {
                r.fault(LOCK_FILE, format!("cannot read the bundle manifest: {e}"));
                (0, 0)
            }
        };
        if let Some(noun) = s.noun() {
            tallies.push(Tally {
                noun,
                count,
                detail: s.detail().map(|d| (d, detail)),
            });
        }
    }
    // Counted when the bundle has them (a bundle made before SBOMs reads as it did).
    let sboms = check_sboms(root, &lock, text.as_bytes(), &mut r);
    if sboms > 0 {
        tallies.push(Tally {
            noun: "SBOMs",
            count: sboms,
            detail: None,
        });
    }
    r.checked = tallies;
    r
}

/// The SBOMs against what the manifest gives, byte for byte: a fault names each one that
/// differs or is missing (when the other is there). Returns how many were checked.
fn check_sboms(root: &Path, lock: &Lock, lock_bytes: &[u8], r: &mut Report) -> usize {
    let present: Vec<(Format, Option<Vec<u8>>)> = Format::ALL
        .into_iter()
        .map(|f| (f, std::fs::read(root.join(f.file())).ok()))
        .collect();
    if present.iter().all(|(_, b)| b.is_none()) {
        return 0;
    }
    let mut checked = 0;
    for (format, bytes) in present {
        let Some(bytes) = bytes else {
            r.fault(
                format.file(),
                "missing (the bundle has its other SBOM; `kpbuild sbom` makes it from the manifest)",
            );
            continue;
        };
        checked += 1;
        match crate::sbom::render(lock, lock_bytes, format) {
            Err(e) => r.fault(
                format.file(),
                format!("cannot be made from {LOCK_FILE}: {e}"),
            ),
            Ok(want) if want != bytes => r.fault(
                format.file(),
                format!(
                    "is not the SBOM {LOCK_FILE} gives ({} bytes, {} expected{})",
                    bytes.len(),
                    want.len(),
                    first_difference(&bytes, &want)
                        .map(|at| format!("; first difference at byte {at}"))
                        .unwrap_or_default()
                ),
            ),
            Ok(_) => {}
        }
    }
    checked
}

/// The offset of the first byte where `a` and `b` differ, if any within both.
fn first_difference(a: &[u8], b: &[u8]) -> Option<usize> {
    a.iter().zip(b).position(|(x, y)| x != y)
}
