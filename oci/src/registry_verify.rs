//! Checks a `registry:2` storage tree on disk (files only, nothing is written): what
//! `kpbuild verify` runs on a bundle's `resources/registry`, and what the reliability tests
//! run after interrupted and faulted syncs.
//!
//! [`verify_registry_tree`] walks `docker/registry/v2` and reports every fault it finds,
//! each with the path (relative to the root) and what is wrong:
//!
//! - every blob is `blobs/sha256/<2 hex>/<64 hex>/data`, a plain file whose sha256 is its name;
//! - every link file (`_manifests/revisions/…`, `_manifests/tags/<tag>/{current,index/…}`,
//!   `_layers/…`) holds exactly `sha256:<64 hex>`, no newline, names the digest of its
//!   directory (where the layout names one), and points at a blob that exists;
//! - every manifest revision parses, and the config and layers it needs are present, of the
//!   size the manifest says, and linked in the repository's `_layers`; an index has at least
//!   one of its children linked as a revision (a platform subset keeps only some);
//! - every tag points at a revision of its repository; names and tags are valid;
//! - no symbolic links (they could point outside the tree), no unfinished uploads, no
//!   temporary files of an interrupted write (`.kpbuild-tmp/`), nothing else unexpected.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};

use sha2::{Digest as _, Sha256};

use crate::image_ref::{validate_repository, validate_tag};
use crate::registry_layout::{Digest, Manifest, parse_manifest};

/// The directory (under the storage root) where kpbuild's sync writes files before renaming
/// them into place; anything in it is left over from an interrupted run.
pub const TEMP_DIR: &str = ".kpbuild-tmp";

/// What to check.
#[derive(Clone, Copy, Debug)]
pub struct VerifyOptions {
    /// Hash every blob (the default). Without it, blobs are checked by path and size only.
    pub hash_blobs: bool,
    /// Threads hashing blobs (at least 1).
    pub threads: usize,
}

impl Default for VerifyOptions {
    fn default() -> Self {
        VerifyOptions {
            hash_blobs: true,
            threads: std::thread::available_parallelism()
                .map(|n| n.get().min(8))
                .unwrap_or(2),
        }
    }
}

/// What is wrong with one path of the tree.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ProblemKind {
    #[error("not a registry storage tree: docker/registry/v2 is missing")]
    NotATree,
    #[error("blob content has sha256 {actual}, not the digest its path names")]
    BlobDigestMismatch { actual: Digest },
    #[error("not where a blob belongs: expected blobs/sha256/<2 hex>/<64 hex>/data")]
    BadBlobPath,
    #[error("a symbolic link (a registry tree holds only plain files and directories)")]
    Symlink,
    #[error("unexpected file in a registry tree")]
    UnexpectedFile,
    #[error("temporary file left by an interrupted write")]
    TempFile,
    #[error("blob directory without data (a write was interrupted before the rename)")]
    BlobWithoutData,
    #[error("link directory without its link file (a write was interrupted before the rename)")]
    LinkMissing,
    #[error("unfinished upload")]
    Upload,
    #[error("link file holds {contents:?}; expected `sha256:<64 hex>` with no newline")]
    BadLink { contents: String },
    #[error("link file ends with a newline (the registry answers 500 for it)")]
    LinkNewline,
    #[error("link holds {holds} but its directory names {named}")]
    LinkNameMismatch { holds: Digest, named: String },
    #[error("link points at {0}, which has no blob")]
    MissingBlob(Digest),
    #[error("repository name {name:?} is invalid: {reason}")]
    BadRepositoryName { name: String, reason: String },
    #[error("tag {0:?} is invalid")]
    BadTag(String),
    #[error("manifest {digest} does not parse: {error}")]
    BadManifest { digest: Digest, error: String },
    #[error("manifest {manifest} needs {what} {digest}, which has no blob")]
    ReferenceMissing {
        manifest: Digest,
        what: &'static str,
        digest: Digest,
    },
    #[error(
        "manifest {manifest} needs {what} {digest}, which is not linked in this repository's _layers"
    )]
    ReferenceNotLinked {
        manifest: Digest,
        what: &'static str,
        digest: Digest,
    },
    #[error("manifest {manifest}: {what} {digest} is {actual} bytes, the manifest says {expected}")]
    SizeMismatch {
        manifest: Digest,
        what: &'static str,
        digest: Digest,
        expected: u64,
        actual: u64,
    },
    #[error("index {index} has none of its {children} child manifests as a revision here")]
    IndexWithoutChildren { index: Digest, children: usize },
    #[error("tag points at {0}, which is not a manifest revision of this repository")]
    TagNotRevision(Digest),
    #[error("tag has no current/link")]
    TagWithoutCurrent,
    #[error("cannot read: {0}")]
    Io(String),
}

impl ProblemKind {
    /// A short stable code for scripts (`blob-digest-mismatch`, `temp-file`, …).
    pub fn code(&self) -> &'static str {
        match self {
            ProblemKind::NotATree => "not-a-tree",
            ProblemKind::BlobDigestMismatch { .. } => "blob-digest-mismatch",
            ProblemKind::BadBlobPath => "bad-blob-path",
            ProblemKind::Symlink => "symlink",
            ProblemKind::UnexpectedFile => "unexpected-file",
            ProblemKind::TempFile => "temp-file",
            ProblemKind::BlobWithoutData => "blob-without-data",
            ProblemKind::LinkMissing => "link-missing",
            ProblemKind::Upload => "upload",
            ProblemKind::BadLink { .. } => "bad-link",
            ProblemKind::LinkNewline => "link-newline",
            ProblemKind::LinkNameMismatch { .. } => "link-name-mismatch",
            ProblemKind::MissingBlob(_) => "missing-blob",
            ProblemKind::BadRepositoryName { .. } => "bad-repository-name",
            ProblemKind::BadTag(_) => "bad-tag",
            ProblemKind::BadManifest { .. } => "bad-manifest",
            ProblemKind::ReferenceMissing { .. } => "reference-missing",
            ProblemKind::ReferenceNotLinked { .. } => "reference-not-linked",
            ProblemKind::SizeMismatch { .. } => "size-mismatch",
            ProblemKind::IndexWithoutChildren { .. } => "index-without-children",
            ProblemKind::TagNotRevision(_) => "tag-not-revision",
            ProblemKind::TagWithoutCurrent => "tag-without-current",
            ProblemKind::Io(_) => "io",
        }
    }

    /// What an interrupted write leaves (a temporary file, a directory made for a file that
    /// was never renamed into place, a tag without its current link): harmless leftovers that
    /// the next run completes, rather than something wrong that looks complete.
    pub(crate) fn is_interrupted_write(&self) -> bool {
        matches!(
            self,
            ProblemKind::TempFile
                | ProblemKind::BlobWithoutData
                | ProblemKind::LinkMissing
                | ProblemKind::TagWithoutCurrent
        )
    }
}

/// One fault: where (relative to the storage root) and what.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Problem {
    pub path: PathBuf,
    pub kind: ProblemKind,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}: {} [{}]",
            self.path.display(),
            self.kind,
            self.kind.code()
        )
    }
}

/// What was checked and every fault found.
#[derive(Clone, Debug, Default)]
pub struct Report {
    /// The storage root checked.
    pub root: PathBuf,
    pub blobs: usize,
    pub blob_bytes: u64,
    /// Whether blob contents were hashed.
    pub hashed: bool,
    pub repositories: usize,
    /// Manifest revision links.
    pub revisions: usize,
    pub tags: usize,
    /// `_layers` links.
    pub layer_links: usize,
    /// Every fault, sorted by path.
    pub problems: Vec<Problem>,
}

impl Report {
    /// No fault found.
    pub fn is_ok(&self) -> bool {
        self.problems.is_empty()
    }

    /// The faults other than what an interrupted run leaves and the next run completes (see
    /// `ProblemKind::is_interrupted_write`).
    pub fn problems_besides_interrupted_writes(&self) -> impl Iterator<Item = &Problem> {
        self.problems
            .iter()
            .filter(|p| !p.kind.is_interrupted_write())
    }

    /// One line: what was checked, and how many faults.
    pub fn summary(&self) -> String {
        format!(
            "{}: {} blobs ({} bytes, {}), {} repositories, {} manifest revisions, {} tags, {} layer links: {}",
            self.root.display(),
            self.blobs,
            self.blob_bytes,
            if self.hashed {
                "sha256 checked"
            } else {
                "sizes only"
            },
            self.repositories,
            self.revisions,
            self.tags,
            self.layer_links,
            match self.problems.len() {
                0 => "ok".to_string(),
                1 => "1 problem".to_string(),
                n => format!("{n} problems"),
            }
        )
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "{}", self.summary())?;
        for p in &self.problems {
            writeln!(f, "  {p}")?;
        }
        Ok(())
    }
}

/// Checks the tree at `root` (the directory holding `docker/`), hashing every blob.
pub fn verify_registry_tree(root: &Path) -> Report {
    verify_registry_tree_with(root, &VerifyOptions::default())
}

/// Checks the tree at `root` with the given options.
pub fn verify_registry_tree_with(root: &Path, opts: &VerifyOptions) -> Report {
    let mut v = Verifier {
        root: root.to_path_buf(),
        report: Report {
            root: root.to_path_buf(),
            hashed: opts.hash_blobs,
            ..Report::default()
        },
        blobs: BTreeMap::new(),
        corrupt: BTreeSet::new(),
    };
    v.check_temp_dir();
    let v2 = root.join("docker/registry/v2");
    match fs::symlink_metadata(&v2) {
        Ok(m) if m.is_dir() => {
            v.check_v2(&v2, opts);
        }
        Ok(m) if m.file_type().is_symlink() => v.problem(&v2, ProblemKind::Symlink),
        _ => v.problem(&v2, ProblemKind::NotATree),
    }
    let mut report = v.report;
    report.problems.sort_by(|a, b| {
        a.path
            .cmp(&b.path)
            .then_with(|| a.kind.code().cmp(b.kind.code()))
    });
    report.problems.dedup();
    report
}

struct Verifier {
    root: PathBuf,
    report: Report,
    /// Blobs at a valid path: digest → size.
    blobs: BTreeMap<Digest, u64>,
    /// Blobs whose content does not match their name.
    corrupt: BTreeSet<Digest>,
}

/// Entries of a directory, sorted by name; symlinks are reported and left out.
fn entries(v: &mut Verifier, dir: &Path) -> Vec<(String, PathBuf, fs::FileType)> {
    let rd = match fs::read_dir(dir) {
        Ok(rd) => rd,
        Err(e) => {
            v.problem(dir, ProblemKind::Io(e.to_string()));
            return Vec::new();
        }
    };
    let mut out = Vec::new();
    for e in rd {
        match e {
            Ok(e) => {
                let path = e.path();
                let name = e.file_name().to_string_lossy().into_owned();
                match e.file_type() {
                    Ok(t) if t.is_symlink() => v.problem(&path, ProblemKind::Symlink),
                    Ok(t) => out.push((name, path, t)),
                    Err(err) => v.problem(&path, ProblemKind::Io(err.to_string())),
                }
            }
            Err(err) => v.problem(dir, ProblemKind::Io(err.to_string())),
        }
    }
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

fn is_lower_hex(s: &str, len: usize) -> bool {
    s.len() == len
        && s.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// The sha256 of a file's content, read in 1 MiB pieces.
pub fn sha256_file(path: &Path) -> std::io::Result<Digest> {
    let mut f = fs::File::open(path)?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(Digest::from_hasher(h))
}

/// A link file's target, or why it is bad.
fn read_link(path: &Path) -> Result<Digest, ProblemKind> {
    let bytes = fs::read(path).map_err(|e| ProblemKind::Io(e.to_string()))?;
    let text = String::from_utf8_lossy(&bytes);
    if let Some(stripped) = text.strip_suffix('\n')
        && stripped.parse::<Digest>().is_ok()
    {
        return Err(ProblemKind::LinkNewline);
    }
    text.parse::<Digest>().map_err(|_| ProblemKind::BadLink {
        contents: text.chars().take(100).collect(),
    })
}

/// What the revisions and tags of one repository hold.
#[derive(Default)]
struct Repo {
    revisions: BTreeSet<Digest>,
    layers: BTreeSet<Digest>,
    /// (tag dir, current target)
    tags: Vec<(PathBuf, Digest)>,
}

impl Verifier {
    fn problem(&mut self, path: &Path, kind: ProblemKind) {
        let rel = path.strip_prefix(&self.root).unwrap_or(path).to_path_buf();
        self.report.problems.push(Problem { path: rel, kind });
    }

    fn check_temp_dir(&mut self) {
        let tmp = self.root.join(TEMP_DIR);
        let Ok(meta) = fs::symlink_metadata(&tmp) else {
            return;
        };
        if !meta.is_dir() {
            self.problem(&tmp, ProblemKind::TempFile);
            return;
        }
        let mut stack = vec![tmp];
        while let Some(dir) = stack.pop() {
            for (_, path, t) in entries(self, &dir) {
                if t.is_dir() {
                    stack.push(path);
                } else {
                    self.problem(&path, ProblemKind::TempFile);
                }
            }
        }
    }

    fn check_v2(&mut self, v2: &Path, opts: &VerifyOptions) {
        for (name, path, t) in entries(self, v2) {
            match (name.as_str(), t.is_dir()) {
                ("blobs", true) | ("repositories", true) => {}
                _ => self.problem(&path, ProblemKind::UnexpectedFile),
            }
        }
        let blobs = v2.join("blobs");
        if blobs.is_dir() {
            self.check_blobs(&blobs, opts);
        }
        let repos = v2.join("repositories");
        if repos.is_dir() {
            self.walk_repositories(&repos, "");
        }
    }

    fn check_blobs(&mut self, blobs: &Path, opts: &VerifyOptions) {
        let mut files: Vec<(Digest, PathBuf, u64)> = Vec::new();
        for (name, path, t) in entries(self, blobs) {
            if name != "sha256" || !t.is_dir() {
                self.problem(&path, ProblemKind::BadBlobPath);
                continue;
            }
            for (prefix, pdir, pt) in entries(self, &path) {
                if !pt.is_dir() || !is_lower_hex(&prefix, 2) {
                    self.problem(&pdir, ProblemKind::BadBlobPath);
                    continue;
                }
                for (hex, bdir, bt) in entries(self, &pdir) {
                    if !bt.is_dir() || !is_lower_hex(&hex, 64) || !hex.starts_with(&prefix) {
                        self.problem(&bdir, ProblemKind::BadBlobPath);
                        continue;
                    }
                    let digest = Digest::from_hex(&hex).expect("checked hex");
                    let mut found = false;
                    for (fname, fpath, ft) in entries(self, &bdir) {
                        if fname == "data" && ft.is_file() {
                            match fs::metadata(&fpath) {
                                Ok(m) => {
                                    found = true;
                                    files.push((digest.clone(), fpath, m.len()));
                                }
                                Err(e) => self.problem(&fpath, ProblemKind::Io(e.to_string())),
                            }
                        } else {
                            self.problem(&fpath, ProblemKind::UnexpectedFile);
                        }
                    }
                    if !found {
                        // The registry treats it as absent.
                        self.problem(&bdir, ProblemKind::BlobWithoutData);
                    }
                }
            }
        }
        if opts.hash_blobs {
            let threads = opts.threads.max(1);
            let results: Vec<(usize, std::io::Result<Digest>)> = std::thread::scope(|s| {
                let handles: Vec<_> = (0..threads)
                    .map(|t| {
                        let files = &files;
                        s.spawn(move || {
                            files
                                .iter()
                                .enumerate()
                                .skip(t)
                                .step_by(threads)
                                .map(|(i, (_, p, _))| (i, sha256_file(p)))
                                .collect::<Vec<_>>()
                        })
                    })
                    .collect();
                handles
                    .into_iter()
                    .flat_map(|h| h.join().expect("hash thread panicked"))
                    .collect()
            });
            for (i, r) in results {
                let (d, p, _) = &files[i];
                match r {
                    Ok(actual) if actual == *d => {}
                    Ok(actual) => {
                        self.corrupt.insert(d.clone());
                        let p = p.clone();
                        self.problem(&p, ProblemKind::BlobDigestMismatch { actual });
                    }
                    Err(e) => {
                        self.corrupt.insert(d.clone());
                        let p = p.clone();
                        self.problem(&p, ProblemKind::Io(e.to_string()));
                    }
                }
            }
        }
        for (d, _, size) in files {
            self.report.blobs += 1;
            self.report.blob_bytes += size;
            self.blobs.insert(d, size);
        }
    }

    /// Finds repositories (directories holding `_manifests`, `_layers` or `_uploads`) at any
    /// depth under `repositories/`.
    fn walk_repositories(&mut self, dir: &Path, name: &str) {
        let list = entries(self, dir);
        let is_repo = list
            .iter()
            .any(|(n, _, t)| t.is_dir() && matches!(n.as_str(), "_manifests" | "_layers"));
        if is_repo {
            self.report.repositories += 1;
            if let Err(e) = validate_repository(name, name) {
                self.problem(
                    dir,
                    ProblemKind::BadRepositoryName {
                        name: name.to_string(),
                        reason: e.kind.to_string(),
                    },
                );
            }
            self.check_repository(dir, &list);
        }
        for (n, path, t) in list {
            if t.is_dir() && !n.starts_with('_') {
                let child = if name.is_empty() {
                    n.clone()
                } else {
                    format!("{name}/{n}")
                };
                self.walk_repositories(&path, &child);
            } else if n == "_uploads" && t.is_dir() {
                let mut stack = vec![path];
                while let Some(d) = stack.pop() {
                    for (_, p, t) in entries(self, &d) {
                        if t.is_dir() {
                            stack.push(p);
                        } else {
                            self.problem(&p, ProblemKind::Upload);
                        }
                    }
                }
            } else if !(is_repo && t.is_dir() && matches!(n.as_str(), "_manifests" | "_layers")) {
                self.problem(&path, ProblemKind::UnexpectedFile);
            }
        }
    }

    /// `<dir>/sha256/<hex>/link` links: digest → (link path, target).
    fn digest_links(&mut self, dir: &Path) -> Vec<(PathBuf, Digest)> {
        let mut out = Vec::new();
        for (alg, adir, at) in entries(self, dir) {
            if alg != "sha256" || !at.is_dir() {
                self.problem(&adir, ProblemKind::UnexpectedFile);
                continue;
            }
            for (hex, hdir, ht) in entries(self, &adir) {
                if !ht.is_dir() || !is_lower_hex(&hex, 64) {
                    self.problem(&hdir, ProblemKind::UnexpectedFile);
                    continue;
                }
                let mut has_link = false;
                for (f, fpath, ft) in entries(self, &hdir) {
                    if f != "link" || !ft.is_file() {
                        self.problem(&fpath, ProblemKind::UnexpectedFile);
                        continue;
                    }
                    has_link = true;
                    if let Some(d) = self.check_link(&fpath, Some(&hex)) {
                        out.push((fpath, d));
                    }
                }
                if !has_link {
                    self.problem(&hdir, ProblemKind::LinkMissing);
                }
            }
        }
        out
    }

    /// Reads a link file; reports bad contents, a name mismatch and a missing blob.
    fn check_link(&mut self, path: &Path, named: Option<&str>) -> Option<Digest> {
        match read_link(path) {
            Ok(d) => {
                if let Some(n) = named
                    && d.hex() != n
                {
                    self.problem(
                        path,
                        ProblemKind::LinkNameMismatch {
                            holds: d.clone(),
                            named: format!("sha256:{n}"),
                        },
                    );
                    return None;
                }
                if !self.blobs.contains_key(&d) {
                    self.problem(path, ProblemKind::MissingBlob(d));
                    return None;
                }
                Some(d)
            }
            Err(kind) => {
                self.problem(path, kind);
                None
            }
        }
    }

    fn check_repository(&mut self, dir: &Path, list: &[(String, PathBuf, fs::FileType)]) {
        let mut repo = Repo::default();
        if list.iter().any(|(n, _, t)| n == "_layers" && t.is_dir()) {
            for (_, d) in self.digest_links(&dir.join("_layers")) {
                self.report.layer_links += 1;
                repo.layers.insert(d);
            }
        }
        let manifests = dir.join("_manifests");
        if manifests.is_dir() {
            for (n, path, t) in entries(self, &manifests) {
                match (n.as_str(), t.is_dir()) {
                    ("revisions", true) => {
                        for (_, d) in self.digest_links(&path) {
                            self.report.revisions += 1;
                            repo.revisions.insert(d);
                        }
                    }
                    ("tags", true) => self.check_tags(&path, &mut repo),
                    _ => self.problem(&path, ProblemKind::UnexpectedFile),
                }
            }
        }
        for (tag_dir, target) in std::mem::take(&mut repo.tags) {
            if !repo.revisions.contains(&target) {
                self.problem(
                    &tag_dir.join("current/link"),
                    ProblemKind::TagNotRevision(target),
                );
            }
        }
        let revisions: Vec<Digest> = repo.revisions.iter().cloned().collect();
        for m in revisions {
            let path = dir.join("_manifests/revisions/sha256").join(m.hex());
            self.check_manifest(&path, &m, &repo);
        }
    }

    fn check_tags(&mut self, tags: &Path, repo: &mut Repo) {
        for (tag, tdir, tt) in entries(self, tags) {
            if !tt.is_dir() {
                self.problem(&tdir, ProblemKind::UnexpectedFile);
                continue;
            }
            if validate_tag(&tag, &tag).is_err() {
                self.problem(&tdir, ProblemKind::BadTag(tag.clone()));
            }
            self.report.tags += 1;
            let mut current = false;
            for (n, path, t) in entries(self, &tdir) {
                match (n.as_str(), t.is_dir()) {
                    ("current", true) => {
                        for (f, fpath, ft) in entries(self, &path) {
                            if f == "link" && ft.is_file() {
                                current = true;
                                if let Some(d) = self.check_link(&fpath, None) {
                                    repo.tags.push((tdir.clone(), d));
                                }
                            } else {
                                self.problem(&fpath, ProblemKind::UnexpectedFile);
                            }
                        }
                    }
                    ("index", true) => {
                        self.digest_links(&path);
                    }
                    _ => self.problem(&path, ProblemKind::UnexpectedFile),
                }
            }
            if !current {
                self.problem(&tdir, ProblemKind::TagWithoutCurrent);
            }
        }
    }

    /// The references of one manifest revision: present, of the right size, linked.
    fn check_manifest(&mut self, rev_dir: &Path, m: &Digest, repo: &Repo) {
        if self.corrupt.contains(m) {
            return; // reported with the blob
        }
        let blob = self
            .root
            .join("docker/registry/v2/blobs/sha256")
            .join(&m.hex()[..2])
            .join(m.hex())
            .join("data");
        let bytes = match fs::read(&blob) {
            Ok(b) => b,
            Err(e) => {
                self.problem(&blob, ProblemKind::Io(e.to_string()));
                return;
            }
        };
        let link = rev_dir.join("link");
        let parsed = match parse_manifest(None, &bytes) {
            Ok(p) => p,
            Err(e) => {
                self.problem(
                    &link,
                    ProblemKind::BadManifest {
                        digest: m.clone(),
                        error: e.to_string(),
                    },
                );
                return;
            }
        };
        match &parsed {
            Manifest::Image { config, .. } => {
                for d in parsed.blobs() {
                    let what = if d.digest == config.digest {
                        "config"
                    } else {
                        "layer"
                    };
                    match self.blobs.get(&d.digest) {
                        None => self.problem(
                            &link,
                            ProblemKind::ReferenceMissing {
                                manifest: m.clone(),
                                what,
                                digest: d.digest.clone(),
                            },
                        ),
                        Some(&size) => {
                            if size != d.size {
                                self.problem(
                                    &link,
                                    ProblemKind::SizeMismatch {
                                        manifest: m.clone(),
                                        what,
                                        digest: d.digest.clone(),
                                        expected: d.size,
                                        actual: size,
                                    },
                                );
                            }
                            if !repo.layers.contains(&d.digest) {
                                self.problem(
                                    &link,
                                    ProblemKind::ReferenceNotLinked {
                                        manifest: m.clone(),
                                        what,
                                        digest: d.digest.clone(),
                                    },
                                );
                            }
                        }
                    }
                }
            }
            Manifest::Index { manifests, .. } => {
                let mut kept = 0;
                for c in manifests {
                    if !repo.revisions.contains(&c.digest) {
                        continue;
                    }
                    kept += 1;
                    if let Some(&size) = self.blobs.get(&c.digest)
                        && size != c.size
                    {
                        self.problem(
                            &link,
                            ProblemKind::SizeMismatch {
                                manifest: m.clone(),
                                what: "child manifest",
                                digest: c.digest.clone(),
                                expected: c.size,
                                actual: size,
                            },
                        );
                    }
                }
                if kept == 0 && !manifests.is_empty() {
                    self.problem(
                        &link,
                        ProblemKind::IndexWithoutChildren {
                            index: m.clone(),
                            children: manifests.len(),
                        },
                    );
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::media_type::{OCI_INDEX, OCI_MANIFEST};
    use crate::registry_layout::Layout;

    struct Tree {
        dir: tempfile::TempDir,
        layout: Layout,
    }

    fn put(path: &Path, bytes: &[u8]) {
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(path, bytes).unwrap();
    }

    impl Tree {
        fn blob(&self, bytes: &[u8]) -> Digest {
            let d = Digest::of_bytes(bytes);
            put(&self.layout.blob_data(&d), bytes);
            d
        }
        fn link(&self, path: PathBuf, d: &Digest) {
            put(&path, d.link_contents().as_bytes());
        }
        fn rel(&self, p: &Path) -> PathBuf {
            p.strip_prefix(self.dir.path()).unwrap().to_path_buf()
        }
    }

    fn image_manifest(config: &[u8], layers: &[&[u8]]) -> Vec<u8> {
        let desc = |mt: &str, b: &[u8]| {
            format!(
                r#"{{"mediaType":"{mt}","digest":"{}","size":{}}}"#,
                Digest::of_bytes(b),
                b.len()
            )
        };
        format!(
            r#"{{"schemaVersion":2,"mediaType":"{OCI_MANIFEST}","config":{},"layers":[{}]}}"#,
            desc("application/vnd.oci.image.config.v1+json", config),
            layers
                .iter()
                .map(|l| desc("application/vnd.oci.image.layer.v1.tar", l))
                .collect::<Vec<_>>()
                .join(",")
        )
        .into_bytes()
    }

    /// A valid tree: `app:v1` (an index with amd64 and arm64 children, only amd64 kept) and
    /// `lib/single:v2` (one image manifest sharing a layer).
    fn good() -> (Tree, BTreeMap<&'static str, Digest>) {
        let dir = tempfile::tempdir().unwrap();
        let t = Tree {
            layout: Layout::new(dir.path()),
            dir,
        };
        let mut d = BTreeMap::new();
        let cfg = br#"{"architecture":"amd64","os":"linux"}"#;
        let layer = b"layer-bytes-shared";
        let layer2 = b"second-layer";
        let m_amd = image_manifest(cfg, &[layer, layer2]);
        let m_arm_digest = Digest::of_bytes(b"arm64 manifest, not shipped");
        let index = format!(
            r#"{{"schemaVersion":2,"mediaType":"{OCI_INDEX}","manifests":[{{"mediaType":"{OCI_MANIFEST}","digest":"{}","size":{},"platform":{{"os":"linux","architecture":"amd64"}}}},{{"mediaType":"{OCI_MANIFEST}","digest":"{m_arm_digest}","size":27,"platform":{{"os":"linux","architecture":"arm64"}}}}]}}"#,
            Digest::of_bytes(&m_amd),
            m_amd.len()
        );
        d.insert("cfg", t.blob(cfg));
        d.insert("layer", t.blob(layer));
        d.insert("layer2", t.blob(layer2));
        d.insert("amd", t.blob(&m_amd));
        d.insert("index", t.blob(index.as_bytes()));
        let links = t.layout.image_links(
            "app",
            Some("v1"),
            &d["index"],
            &[d["index"].clone(), d["amd"].clone()],
            &[d["cfg"].clone(), d["layer"].clone(), d["layer2"].clone()],
        );
        for (p, c) in links {
            put(&p, c.as_bytes());
        }
        let cfg2 = br#"{"architecture":"arm64","os":"linux"}"#;
        let single = image_manifest(cfg2, &[layer]);
        d.insert("cfg2", t.blob(cfg2));
        d.insert("single", t.blob(&single));
        for (p, c) in t.layout.image_links(
            "lib/single",
            Some("v2"),
            &d["single"],
            &[d["single"].clone()],
            &[d["cfg2"].clone(), d["layer"].clone()],
        ) {
            put(&p, c.as_bytes());
        }
        (t, d)
    }

    fn codes(r: &Report) -> Vec<(String, &'static str)> {
        r.problems
            .iter()
            .map(|p| (p.path.display().to_string(), p.kind.code()))
            .collect()
    }

    #[test]
    fn a_good_tree_passes_with_counts() {
        let (t, _) = good();
        let r = verify_registry_tree(t.dir.path());
        assert!(r.is_ok(), "{r}");
        assert_eq!(r.blobs, 7);
        assert_eq!(r.repositories, 2);
        assert_eq!(r.revisions, 3);
        assert_eq!(r.tags, 2);
        assert_eq!(r.layer_links, 5);
        assert!(r.summary().ends_with(": ok"), "{}", r.summary());
    }

    #[test]
    fn a_missing_tree_is_reported() {
        let dir = tempfile::tempdir().unwrap();
        let r = verify_registry_tree(dir.path());
        assert_eq!(codes(&r), [("docker/registry/v2".into(), "not-a-tree")]);
    }

    #[test]
    fn a_damaged_blob_is_named_with_its_actual_digest() {
        let (t, d) = good();
        let p = t.layout.blob_data(&d["layer2"]);
        fs::write(&p, b"second-layeR").unwrap();
        let r = verify_registry_tree(t.dir.path());
        assert_eq!(
            codes(&r),
            [(t.rel(&p).display().to_string(), "blob-digest-mismatch")]
        );
        assert!(
            r.problems[0]
                .to_string()
                .contains(&Digest::of_bytes(b"second-layeR").to_string())
        );
        // Without hashing, the same length passes: the option really skips the hash.
        let quick = verify_registry_tree_with(
            t.dir.path(),
            &VerifyOptions {
                hash_blobs: false,
                threads: 1,
            },
        );
        assert!(quick.is_ok(), "{quick}");
        // A shorter blob fails the size check even without hashing.
        fs::write(&p, b"short").unwrap();
        let quick = verify_registry_tree_with(
            t.dir.path(),
            &VerifyOptions {
                hash_blobs: false,
                threads: 1,
            },
        );
        let c = codes(&quick);
        assert_eq!(c.len(), 1, "{quick}");
        assert_eq!(c[0].1, "size-mismatch", "{quick}");
    }

    #[test]
    fn link_faults_are_each_named() {
        let (t, d) = good();
        let tag = t.layout.tag_current_link("app", "v1");
        fs::write(&tag, format!("{}\n", d["index"])).unwrap();
        let layer_link = t.layout.layer_link("app", &d["layer2"]);
        fs::write(&layer_link, "sha256:nothex").unwrap();
        let rev = t.layout.revision_link("lib/single", &d["single"]);
        fs::write(&rev, d["cfg2"].link_contents()).unwrap();
        let r = verify_registry_tree(t.dir.path());
        let c = codes(&r);
        assert!(
            c.contains(&(t.rel(&tag).display().to_string(), "link-newline")),
            "{r}"
        );
        assert!(
            c.contains(&(t.rel(&layer_link).display().to_string(), "bad-link")),
            "{r}"
        );
        assert!(
            c.contains(&(t.rel(&rev).display().to_string(), "link-name-mismatch")),
            "{r}"
        );
        // With the layer link gone bad, the amd64 manifest's layer is not linked; with the
        // revision gone, lib/single's tag points at no revision.
        assert!(c.iter().any(|(_, k)| *k == "reference-not-linked"), "{r}");
        assert!(c.iter().any(|(_, k)| *k == "tag-not-revision"), "{r}");
    }

    #[test]
    fn missing_blobs_and_references_are_named() {
        let (t, d) = good();
        fs::remove_dir_all(t.layout.blob_data(&d["layer"]).parent().unwrap()).unwrap();
        let r = verify_registry_tree(t.dir.path());
        let text = r.to_string();
        // Both repositories link the shared layer; both manifests need it.
        assert_eq!(
            r.problems
                .iter()
                .filter(|p| p.kind == ProblemKind::MissingBlob(d["layer"].clone()))
                .count(),
            2,
            "{text}"
        );
        assert_eq!(
            r.problems
                .iter()
                .filter(|p| matches!(&p.kind, ProblemKind::ReferenceMissing { digest, what: "layer", .. } if *digest == d["layer"]))
                .count(),
            2,
            "{text}"
        );
    }

    #[test]
    fn an_index_without_any_child_is_a_fault() {
        let (t, d) = good();
        fs::remove_dir_all(t.layout.revision_link("app", &d["amd"]).parent().unwrap()).unwrap();
        let r = verify_registry_tree(t.dir.path());
        assert!(
            r.problems
                .iter()
                .any(|p| p.kind.code() == "index-without-children"),
            "{r}"
        );
    }

    #[test]
    fn temp_files_uploads_symlinks_and_strays_are_reported() {
        let (t, d) = good();
        let root = t.dir.path();
        put(&root.join(".kpbuild-tmp/run-1/blob-abc"), b"partial");
        put(
            &t.layout.repository("app").join("_uploads/1234/data"),
            b"up",
        );
        put(&t.layout.v2().join("stray.txt"), b"x");
        put(
            &t.layout.blob_data(&d["cfg"]).with_file_name("data.tmp"),
            b"x",
        );
        std::os::unix::fs::symlink(
            "/etc/passwd",
            t.layout.repository("lib/single").join("escape"),
        )
        .unwrap();
        let r = verify_registry_tree(root);
        let kinds: BTreeSet<&str> = r.problems.iter().map(|p| p.kind.code()).collect();
        assert_eq!(
            kinds,
            ["temp-file", "upload", "unexpected-file", "symlink"]
                .into_iter()
                .collect(),
            "{r}"
        );
        assert_eq!(
            r.problems_besides_interrupted_writes().count(),
            r.problems.len() - 1
        );
        // A symlinked blob (which could serve anything) is refused, not followed.
        let p = t.layout.blob_data(&d["layer2"]);
        fs::remove_file(&p).unwrap();
        std::os::unix::fs::symlink("/etc/hostname", &p).unwrap();
        let r = verify_registry_tree(root);
        assert!(
            r.problems
                .iter()
                .any(|x| x.path == t.rel(&p) && x.kind == ProblemKind::Symlink),
            "{r}"
        );
    }

    #[test]
    fn what_an_interrupted_write_leaves_is_told_apart() {
        let (t, d) = good();
        // Directories made for files that were never renamed into place.
        let b = Digest::of_bytes(b"never arrived");
        fs::create_dir_all(t.layout.blob_data(&b).parent().unwrap()).unwrap();
        fs::create_dir_all(t.layout.layer_link("app", &b).parent().unwrap()).unwrap();
        let tag = t.layout.tag_current_link("app", "v9");
        fs::create_dir_all(tag.parent().unwrap().parent().unwrap()).unwrap();
        t.link(
            t.layout.tag_index_link("app", "v9", &d["index"]),
            &d["index"],
        );
        let r = verify_registry_tree(t.dir.path());
        let kinds: BTreeSet<&str> = r.problems.iter().map(|p| p.kind.code()).collect();
        assert_eq!(
            kinds,
            ["blob-without-data", "link-missing", "tag-without-current"]
                .into_iter()
                .collect(),
            "{r}"
        );
        assert_eq!(r.problems_besides_interrupted_writes().count(), 0, "{r}");
        // A wrong byte is not an interrupted write.
        fs::write(
            t.layout.blob_data(&d["cfg"]),
            b"{\"architecture\":\"amd64\",\"os\":\"linuX\"}",
        )
        .unwrap();
        let r = verify_registry_tree(t.dir.path());
        assert_eq!(r.problems_besides_interrupted_writes().count(), 1, "{r}");
    }

    #[test]
    fn bad_names_and_tags_are_reported() {
        let (t, d) = good();
        let bad_repo = t.layout.v2().join("repositories/Bad..Name");
        t.link(
            bad_repo
                .join("_layers/sha256")
                .join(d["cfg"].hex())
                .join("link"),
            &d["cfg"],
        );
        t.link(
            t.layout
                .repository("app")
                .join("_manifests/tags/-bad/current/link"),
            &d["index"],
        );
        let r = verify_registry_tree(t.dir.path());
        let kinds: BTreeSet<&str> = r.problems.iter().map(|p| p.kind.code()).collect();
        assert_eq!(
            kinds,
            ["bad-repository-name", "bad-tag"].into_iter().collect(),
            "{r}"
        );
    }

    #[test]
    fn a_manifest_that_does_not_parse_is_named() {
        let (t, _) = good();
        let junk = t.blob(b"{\"schemaVersion\":1}");
        t.link(t.layout.revision_link("app", &junk), &junk);
        let r = verify_registry_tree(t.dir.path());
        assert_eq!(r.problems.len(), 1, "{r}");
        assert!(
            matches!(&r.problems[0].kind, ProblemKind::BadManifest { digest, .. } if *digest == junk),
            "{r}"
        );
    }
}
