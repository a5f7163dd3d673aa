//! The bundle manifest, `kubeplay.lock.json` at the bundle root: every file with its URL and
//! sha256, every image with its source, stored name and digests per platform, every OS package
//! with version and sha256, every image archive, the kpbuild version and the spec's digest.
//! It is written inside the build (from the module trees, by `kpbuild worker bundle-manifest`)
//! and is what `kpbuild verify` checks and a security review reads.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::Digest as _;

use crate::plan::PlatformPlan;
use kpbuild_oci::registry_layout::{self, Digest};

pub use crate::layout::LOCK_FILE;
/// Its format tag.
pub const FORMAT: &str = "kpbuild.lock/v1";

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Lock {
    pub format: String,
    pub kpbuild: String,
    pub bundle: BundleInfo,
    pub spec: SpecInfo,
    pub files: Vec<FileEntry>,
    pub images: Vec<ImageEntry>,
    pub packages: Vec<PackageEntry>,
    /// Packages a distro marked optional that it does not have.
    pub skipped_packages: Vec<SkippedPackages>,
    /// Other files the bundle carries (image archives, compose files, installer).
    pub artifacts: Vec<Artifact>,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct BundleInfo {
    pub name: String,
    pub version: String,
    pub platform: String,
    pub modules: Vec<String>,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct SpecInfo {
    pub file: String,
    pub sha256: String,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct FileEntry {
    /// Path from the bundle root.
    pub path: String,
    pub url: String,
    pub sha256: String,
    pub size: u64,
    /// The pin it was checked against (`sha256:…`, `sha512:…`), when there was one.
    pub pin: Option<String>,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct ImageEntry {
    pub source: String,
    /// `repository:tag` in the bundle's registry.
    pub stored: String,
    /// The digest the tag points at (an index for multi-platform images).
    pub digest: String,
    /// The manifest kept for each platform.
    pub platforms: BTreeMap<String, String>,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct PackageEntry {
    pub distro: String,
    /// The repository directory from the bundle root.
    pub repo: String,
    pub name: String,
    pub version: String,
    pub architecture: String,
    /// File name in the repository.
    pub file: String,
    pub sha256: String,
    pub size: u64,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct SkippedPackages {
    pub distro: String,
    pub names: Vec<String>,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Artifact {
    pub path: String,
    pub sha256: String,
    pub size: u64,
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
    #[error("file {url} ({path}): {algorithm} is {got}, but the pin is {want}")]
    PinMismatch {
        url: String,
        path: String,
        algorithm: String,
        got: String,
        want: String,
    },
    #[error("image {source_ref} is not in the registry tree as {stored}: {message}")]
    MissingImage {
        source_ref: String,
        stored: String,
        message: String,
    },
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
    /// `(module name, root of its tree)`: every tree is laid out from the bundle root.
    pub trees: Vec<(String, PathBuf)>,
}

/// Builds the manifest from the module trees, checking every file against its pin.
pub fn build(input: &LockInput) -> Result<Lock, LockError> {
    let mut lock = Lock {
        format: FORMAT.into(),
        kpbuild: env!("CARGO_PKG_VERSION").into(),
        bundle: BundleInfo {
            name: input.bundle.into(),
            version: input.version.into(),
            platform: input.plan.platform.to_string(),
            modules: input.plan.modules.iter().map(|m| m.name.clone()).collect(),
        },
        spec: SpecInfo {
            file: input.spec_file.into(),
            sha256: input.spec_sha256.into(),
        },
        files: vec![],
        images: vec![],
        packages: vec![],
        skipped_packages: vec![],
        artifacts: vec![],
    };
    for m in &input.plan.modules {
        // The manifest op mounts every module's tree; a module without one is not built.
        if let Some((_, root)) = input.trees.iter().find(|(n, _)| *n == m.name) {
            m.work.kind().lock(root, &mut lock)?;
        }
    }
    lock.files.sort_by(|a, b| a.path.cmp(&b.path));
    lock.images.sort_by(|a, b| a.stored.cmp(&b.stored));
    lock.packages
        .sort_by(|a, b| (&a.repo, &a.file).cmp(&(&b.repo, &b.file)));
    lock.artifacts.sort_by(|a, b| a.path.cmp(&b.path));
    Ok(lock)
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

/// The digests of an image in a registry storage tree (`root` holds `docker/registry/v2`): its
/// tag's manifest and each kept child.
pub(crate) fn image_entry(
    root: &Path,
    source: &str,
    stored: &str,
) -> Result<ImageEntry, LockError> {
    let missing = |message: String| LockError::MissingImage {
        source_ref: source.into(),
        stored: stored.into(),
        message,
    };
    let layout = registry_layout::Layout::new(root);
    let (repo, tag) = stored
        .rsplit_once(':')
        .ok_or_else(|| missing("no tag".into()))?;
    let link = layout.tag_current_link(repo, tag);
    let text =
        std::fs::read_to_string(&link).map_err(|e| missing(format!("{}: {e}", link.display())))?;
    let digest: Digest = text
        .trim()
        .parse()
        .map_err(|e| missing(format!("{}: {e:?}", link.display())))?;
    let blob = layout.blob_data(&digest);
    let bytes = std::fs::read(&blob).map_err(|e| missing(format!("{}: {e}", blob.display())))?;
    let mut platforms = BTreeMap::new();
    match registry_layout::parse_manifest(None, &bytes) {
        Ok(registry_layout::Manifest::Index { manifests, .. }) => {
            for c in manifests {
                if layout.revision_link(repo, &c.digest).is_file() {
                    let p = c
                        .platform
                        .map(|p| p.to_string())
                        .unwrap_or_else(|| "unknown".into());
                    platforms.insert(p, c.digest.to_string());
                }
            }
        }
        Ok(registry_layout::Manifest::Image { .. }) => {
            platforms.insert("any".into(), digest.to_string());
        }
        Err(e) => return Err(missing(format!("manifest {digest}: {e}"))),
    }
    Ok(ImageEntry {
        source: source.into(),
        stored: stored.into(),
        digest: digest.to_string(),
        platforms,
    })
}

/// One stanza of an apt `Packages` index.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct IndexedPackage {
    pub name: String,
    pub version: String,
    pub architecture: String,
    pub file: String,
    pub sha256: String,
    pub size: u64,
}

/// Reads `dir/Packages` (apt). A yum repository (`repodata/`) gives its `.rpm` files with
/// their sha256 instead, named by file.
pub(crate) fn read_packages_index(dir: &Path) -> Result<Vec<IndexedPackage>, LockError> {
    let index = dir.join("Packages");
    if !index.is_file() {
        let mut out = Vec::new();
        if dir.join("repodata").is_dir() {
            for p in walk_files(dir)? {
                if p.extension().is_some_and(|e| e == "rpm") {
                    let (sha256, _, size) = hash_file(&p)?;
                    let file = p
                        .file_name()
                        .unwrap_or_default()
                        .to_string_lossy()
                        .into_owned();
                    out.push(IndexedPackage {
                        name: file.clone(),
                        version: String::new(),
                        architecture: String::new(),
                        file,
                        sha256,
                        size,
                    });
                }
            }
            return Ok(out);
        }
        return Err(LockError::Invalid {
            path: dir.display().to_string(),
            message: "no Packages index and no repodata/".into(),
        });
    }
    let text = std::fs::read_to_string(&index).map_err(io_err(&index))?;
    parse_packages(&text).map_err(|message| LockError::Invalid {
        path: index.display().to_string(),
        message,
    })
}

/// Parses an apt `Packages` index.
pub(crate) fn parse_packages(text: &str) -> Result<Vec<IndexedPackage>, String> {
    let mut out = Vec::new();
    for (i, block) in text
        .split("\n\n")
        .filter(|b| !b.trim().is_empty())
        .enumerate()
    {
        let mut fields: BTreeMap<&str, &str> = BTreeMap::new();
        for line in block.lines() {
            if line.starts_with([' ', '\t']) {
                continue;
            }
            if let Some((k, v)) = line.split_once(':') {
                fields.insert(k, v.trim());
            }
        }
        let get = |k: &str| {
            fields
                .get(k)
                .map(|v| v.to_string())
                .ok_or_else(|| format!("stanza {}: no {k}", i + 1))
        };
        let file = get("Filename")?;
        out.push(IndexedPackage {
            name: get("Package")?,
            version: get("Version")?,
            architecture: get("Architecture")?,
            file: file.trim_start_matches("./").to_string(),
            sha256: get("SHA256")?,
            size: get("Size")?
                .parse()
                .map_err(|_| format!("stanza {}: Size is not a number", i + 1))?,
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn packages_index() {
        let text = "Package: a\nVersion: 1:2.0-1\nArchitecture: amd64\nDescription: x\n more\nFilename: ./a_2.0-1_amd64.deb\nSize: 10\nSHA256: ab\n\nPackage: b\nVersion: 1\nArchitecture: all\nFilename: b_1_all.deb\nSize: 3\nSHA256: cd\n";
        let p = parse_packages(text).unwrap();
        assert_eq!(p.len(), 2);
        assert_eq!(p[0].file, "a_2.0-1_amd64.deb");
        assert_eq!(p[0].version, "1:2.0-1");
        assert_eq!(p[1].architecture, "all");
        assert_eq!(
            parse_packages("Package: a\nVersion: 1\n").unwrap_err(),
            "stanza 1: no Filename"
        );
    }
}
