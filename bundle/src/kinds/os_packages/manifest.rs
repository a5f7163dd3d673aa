//! The os-packages kind's sections of the bundle manifest: `packages` (every package of every
//! repository, read from the repository's own index) and `skipped_packages` (optional packages
//! a distro lacks), and how an unpacked bundle's repositories are checked against them.

use std::collections::BTreeMap;
use std::io::Read as _;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::lock::{Entry, LockError, hash_file, walk_files};
use crate::sbom::SbomCx;
use crate::verify::Check;
use kpbuild_sbom::{Component, Digest, Kind, Purl};

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

impl Entry for PackageEntry {
    const SECTION: &'static str = "packages";
    const NOUN: Option<&'static str> = Some("packages");
    type SortKey = (String, String);
    fn sort_key(&self) -> (String, String) {
        (self.repo.clone(), self.file.clone())
    }

    /// A package of its distro: `pkg:deb/<distro>/<name>@<version>?arch=…&distro=<distro>-<release>`
    /// (`pkg:rpm/…` for an `.rpm`), supplied by the distro, at its file in the repository.
    fn components(&self, _: &SbomCx<'_>) -> Vec<Component> {
        let (family, release) = distro_parts(&self.distro);
        let kind = if self.file.ends_with(".rpm") {
            "rpm"
        } else {
            "deb"
        };
        let mut c = Component::new(Kind::OsPackage, self.name.clone(), self.version.clone());
        c.purl = Some(
            Purl::new(kind, self.name.clone())
                .namespace(if family == "alma" {
                    "almalinux"
                } else {
                    family
                })
                .version(self.version.clone())
                .qualifier("arch", self.architecture.clone())
                .qualifier(
                    "distro",
                    if release.is_empty() {
                        family.to_string()
                    } else {
                        format!("{family}-{release}")
                    },
                )
                .to_string(),
        );
        c.digests = vec![Digest::sha256(self.sha256.clone())];
        c.supplier = Some(supplier(family));
        c.path = Some(format!("{}/{}", self.repo, self.file));
        vec![c]
    }

    /// Each repository's index against its files (sha256 and size), each package of the
    /// manifest in its repository's index, `Packages.gz` the same index as `Packages`.
    fn verify(entries: &[Self], check: &mut Check<'_>) -> (usize, usize) {
        let mut checked = 0;
        let mut repos: Vec<&str> = entries.iter().map(|p| p.repo.as_str()).collect();
        repos.dedup();
        for repo in repos {
            let dir = check.root.join(repo);
            let distro = entries
                .iter()
                .find(|p| p.repo == repo)
                .map_or("", |p| p.distro.as_str());
            let index = match read_packages_index(&dir, distro, repo) {
                Ok(i) => i,
                Err(e) => {
                    check.fault(repo, e.to_string());
                    continue;
                }
            };
            for p in &index {
                let path = format!("{repo}/{}", p.file);
                match check.file_at(&dir.join(&p.file), &p.sha256, None) {
                    Err(e) => check.fault(&path, format!("listed in the index, {e}")),
                    Ok((s256, _, size)) => {
                        if s256 != p.sha256 || size != p.size {
                            check.fault(
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
            for p in entries.iter().filter(|p| p.repo == repo) {
                checked += 1;
                if !index
                    .iter()
                    .any(|i| i.file == p.file && i.sha256 == p.sha256 && i.version == p.version)
                {
                    check.fault(
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
                if flate2::read::GzDecoder::new(gz.as_slice())
                    .read_to_end(&mut out)
                    .is_err()
                    || out != plain
                {
                    check.fault(
                        format!("{repo}/Packages.gz"),
                        "does not hold the same index as Packages",
                    );
                }
            }
        }
        (checked, 0)
    }
}

impl Entry for SkippedPackages {
    const SECTION: &'static str = "skipped_packages";
    const NOUN: Option<&'static str> = None;
    type SortKey = ();
    fn sort_key(&self) {}
    /// A record of what is not there: nothing to check.
    fn verify(_: &[Self], _: &mut Check<'_>) -> (usize, usize) {
        (0, 0)
    }
    /// What is not there is no component of the bundle.
    fn components(&self, _: &SbomCx<'_>) -> Vec<Component> {
        vec![]
    }
}

/// A distro's name split into its family and release: `debian12` → (`debian`, `12`),
/// `ubuntu2404` → (`ubuntu`, `2404`), `alma9` → (`alma`, `9`).
fn distro_parts(distro: &str) -> (&str, &str) {
    let at = distro
        .find(|c: char| c.is_ascii_digit())
        .unwrap_or(distro.len());
    distro.split_at(at)
}

/// Who supplies a distro family's packages.
fn supplier(family: &str) -> String {
    match family {
        "debian" => "Debian".into(),
        "ubuntu" => "Canonical".into(),
        "rocky" => "Rocky Enterprise Software Foundation".into(),
        "alma" => "AlmaLinux OS Foundation".into(),
        other => other.to_string(),
    }
}

/// The packages of the repository `repo` (from the bundle root) of `distro` in the directory
/// `dir`, as manifest entries, read from its `Packages` (apt). A yum repository (`repodata/`)
/// gives its `.rpm` files with their sha256 instead, named by file.
pub(crate) fn read_packages_index(
    dir: &Path,
    distro: &str,
    repo: &str,
) -> Result<Vec<PackageEntry>, LockError> {
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
                    out.push(PackageEntry {
                        distro: distro.into(),
                        repo: repo.into(),
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
    let text = std::fs::read_to_string(&index).map_err(|source| LockError::Io {
        path: index.display().to_string(),
        source,
    })?;
    parse_packages(&text, distro, repo).map_err(|message| LockError::Invalid {
        path: index.display().to_string(),
        message,
    })
}

/// Parses an apt `Packages` index: the entries of the repository `repo` of `distro`.
pub(crate) fn parse_packages(
    text: &str,
    distro: &str,
    repo: &str,
) -> Result<Vec<PackageEntry>, String> {
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
        out.push(PackageEntry {
            distro: distro.into(),
            repo: repo.into(),
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
        let p = parse_packages(text, "debian12", "debian/amd64/bookworm").unwrap();
        assert_eq!(p.len(), 2);
        assert_eq!(p[0].file, "a_2.0-1_amd64.deb");
        assert_eq!(p[0].version, "1:2.0-1");
        assert_eq!(p[1].architecture, "all");
        assert_eq!(p[1].repo, "debian/amd64/bookworm");
        assert_eq!(p[1].distro, "debian12");
        assert_eq!(
            parse_packages("Package: a\nVersion: 1\n", "d", "r").unwrap_err(),
            "stanza 1: no Filename"
        );
    }
}
