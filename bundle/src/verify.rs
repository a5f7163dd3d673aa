//! Checks an unpacked bundle against its manifest (`kubeplay.lock.json`): every file present with
//! the size and sha256 recorded (and its pin), every image's tag resolving to the recorded digest
//! in a registry tree whose blobs hash to their names and whose links all resolve, every
//! repository index consistent with its packages, every artifact intact. The report lists every
//! fault with its path; nothing stops at the first.

use std::fmt;
use std::path::Path;

use crate::lock::{self, LOCK_FILE, Lock};

/// One thing wrong with a bundle.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Fault {
    /// The path (from the bundle root) or object at fault.
    pub at: String,
    pub what: String,
}

impl fmt::Display for Fault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.at, self.what)
    }
}

/// What was checked and what is wrong.
#[derive(Clone, Debug, Default)]
pub struct Report {
    pub files: usize,
    pub images: usize,
    pub blobs: usize,
    pub packages: usize,
    pub artifacts: usize,
    pub faults: Vec<Fault>,
}

impl Report {
    fn fault(&mut self, at: impl Into<String>, what: impl Into<String>) {
        self.faults.push(Fault {
            at: at.into(),
            what: what.into(),
        });
    }

    pub fn ok(&self) -> bool {
        self.faults.is_empty()
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

/// The sha256, sha512 and size of a file; without `hash`, its size alone and the digests the
/// caller expects (so that only the size can differ).
fn check_file(
    path: &Path,
    hash: bool,
    sha256: &str,
    sha512: Option<&str>,
) -> Result<(String, String, u64), lock::LockError> {
    if hash {
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

/// Verifies the bundle whose root is `root`, hashing or not.
pub fn verify_bundle_with(root: &Path, opts: Options) -> Report {
    let mut r = Report::default();
    let lock_path = root.join(LOCK_FILE);
    let lock: Lock = match std::fs::read_to_string(&lock_path)
        .map_err(|e| e.to_string())
        .and_then(|t| serde_json::from_str(&t).map_err(|e| e.to_string()))
    {
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
    for f in &lock.files {
        r.files += 1;
        let pin512 = f.pin.as_deref().and_then(|p| p.strip_prefix("sha512:"));
        match check_file(&root.join(&f.path), opts.hash, &f.sha256, pin512) {
            Err(e) => r.fault(
                &f.path,
                format!("missing or unreadable ({e}); from {}", f.url),
            ),
            Ok((s256, s512, size)) => {
                if size != f.size {
                    r.fault(
                        &f.path,
                        format!("size {size}, the manifest says {}", f.size),
                    );
                }
                if s256 != f.sha256 {
                    r.fault(
                        &f.path,
                        format!("sha256 {s256}, the manifest says {}", f.sha256),
                    );
                }
                if let Some(pin) = &f.pin {
                    let ok = match pin.split_once(':') {
                        Some(("sha256", h)) => h == s256,
                        Some(("sha512", h)) => h == s512,
                        _ => true,
                    };
                    if !ok {
                        r.fault(&f.path, format!("does not match its pin {pin} ({})", f.url));
                    }
                }
            }
        }
    }
    let registry = root.join(crate::layout::REGISTRY_ROOT);
    if !lock.images.is_empty() {
        let ropts = kpbuild_oci::registry_verify::VerifyOptions {
            hash_blobs: opts.hash,
            ..Default::default()
        };
        for problem in
            kpbuild_oci::registry_verify::verify_registry_tree_with(&registry, &ropts).problems
        {
            r.fault(
                format!(
                    "{}/{}",
                    crate::layout::REGISTRY_ROOT,
                    problem.path.display()
                ),
                problem.kind.to_string(),
            );
        }
        r.blobs = count_blobs(&registry);
    }
    for img in &lock.images {
        r.images += 1;
        match lock::image_entry(&registry, &img.source, &img.stored) {
            Err(e) => r.fault(format!("image {}", img.stored), e.to_string()),
            Ok(found) => {
                if found.digest != img.digest {
                    r.fault(
                        format!("image {}", img.stored),
                        format!(
                            "tag points at {}, the manifest says {}",
                            found.digest, img.digest
                        ),
                    );
                }
                for (p, d) in &img.platforms {
                    if found.platforms.get(p) != Some(d) {
                        r.fault(
                            format!("image {}", img.stored),
                            format!("{p}: manifest {d} is not linked"),
                        );
                    }
                }
            }
        }
    }
    let mut repos: Vec<&str> = lock.packages.iter().map(|p| p.repo.as_str()).collect();
    repos.dedup();
    for repo in repos {
        let dir = root.join(repo);
        let index = match lock::read_packages_index(&dir) {
            Ok(i) => i,
            Err(e) => {
                r.fault(repo, e.to_string());
                continue;
            }
        };
        for p in &index {
            let path = format!("{repo}/{}", p.file);
            match check_file(&dir.join(&p.file), opts.hash, &p.sha256, None) {
                Err(e) => r.fault(&path, format!("listed in the index, {e}")),
                Ok((s256, _, size)) => {
                    if s256 != p.sha256 || size != p.size {
                        r.fault(
                            &path,
                            format!(
                                "sha256 {s256} size {size}, the index says {} size {}",
                                p.sha256, p.size
                            ),
                        );
                    }
                }
            }
        }
        for p in lock.packages.iter().filter(|p| p.repo == repo) {
            r.packages += 1;
            if !index
                .iter()
                .any(|i| i.file == p.file && i.sha256 == p.sha256 && i.version == p.version)
            {
                r.fault(
                    format!("{repo}/{}", p.file),
                    format!(
                        "{} {} is in the manifest but not in the index",
                        p.name, p.version
                    ),
                );
            }
        }
        if let Ok(gz) = std::fs::read(dir.join("Packages.gz"))
            && let Ok(plain) = std::fs::read(dir.join("Packages"))
        {
            let mut out = Vec::new();
            use std::io::Read as _;
            if flate2::read::GzDecoder::new(gz.as_slice())
                .read_to_end(&mut out)
                .is_err()
                || out != plain
            {
                r.fault(
                    format!("{repo}/Packages.gz"),
                    "does not hold the same index as Packages",
                );
            }
        }
    }
    for a in &lock.artifacts {
        r.artifacts += 1;
        match check_file(&root.join(&a.path), opts.hash, &a.sha256, None) {
            Err(e) => r.fault(&a.path, format!("missing or unreadable ({e})")),
            Ok((s256, _, size)) if s256 != a.sha256 || size != a.size => r.fault(
                &a.path,
                format!(
                    "sha256 {s256} size {size}, the manifest says {} size {}",
                    a.sha256, a.size
                ),
            ),
            Ok(_) => {}
        }
    }
    r
}

fn count_blobs(registry: &Path) -> usize {
    lock::walk_files(&registry.join("docker/registry/v2/blobs"))
        .map(|v| v.len())
        .unwrap_or(0)
}
