//! The bundle's SBOMs (`kubeplay.spdx.json`, `kubeplay.cdx.json` beside the manifest), made
//! from the manifest alone, never by scanning: the bundle is the subject, every section's
//! entries become components through their kind ([`crate::lock::Entry::components`]), each
//! naming the module that brought it, and the kubespray checkout the spec reads (`vars.kubespray`)
//! is the source the bundle was generated from. Nothing else goes in, so the same manifest
//! gives the same bytes: the documents' identity is the manifest's sha256 and their creation
//! time is the manifest's `source_date_epoch` (the build's `SOURCE_DATE_EPOCH`, else the
//! spec's `source-date-epoch`), else [`DEFAULT_CREATED`]. `kpbuild verify` makes them again
//! from the manifest and compares.

use sha2::Digest as _;

use crate::kinds::SECTIONS;
pub use crate::layout::{CYCLONEDX_FILE, SPDX_FILE};
use crate::lock::{BundleInfo, Lock, LockError};
use kpbuild_sbom::{Component, Document, Kind, Purl, Tool};

/// Where the SPDX namespaces of kpbuild's documents live (a reserved name: it identifies,
/// it is never fetched).
pub const NAMESPACE: &str = "https://kpbuild.invalid/spdx";
/// The creation time of a bundle's SBOMs when neither the build nor the spec sets one: the
/// epoch.
pub const DEFAULT_CREATED: u64 = 0;

/// What the kinds make their components with: the manifest's header.
pub struct SbomCx<'a> {
    pub bundle: &'a BundleInfo,
}

/// An SBOM format.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    Spdx,
    CycloneDx,
}

impl Format {
    pub const ALL: [Format; 2] = [Format::Spdx, Format::CycloneDx];

    /// Its file at the bundle root.
    pub fn file(self) -> &'static str {
        match self {
            Format::Spdx => SPDX_FILE,
            Format::CycloneDx => CYCLONEDX_FILE,
        }
    }
}

/// The SBOM document of a manifest whose bytes (as the bundle holds them) are `lock_bytes`.
pub fn document(lock: &Lock, lock_bytes: &[u8]) -> Result<Document, LockError> {
    let cx = SbomCx {
        bundle: &lock.bundle,
    };
    let mut components = Vec::new();
    for s in SECTIONS {
        let section = s
            .components(lock.section(s.key()), &cx)
            .map_err(|message| LockError::Invalid {
                path: crate::layout::LOCK_FILE.into(),
                message,
            })?;
        components.extend(section);
    }
    let mut subject = Component::new(
        Kind::Bundle,
        lock.bundle.name.clone(),
        lock.bundle.version.clone(),
    );
    subject.supplier = Some(lock.bundle.name.clone());
    subject.platform = Some(lock.bundle.platform.clone());
    subject.purl = Some(
        Purl::new("generic", lock.bundle.name.clone())
            .version(lock.bundle.version.clone())
            .qualifier("platform", lock.bundle.platform.clone())
            .to_string(),
    );
    subject.description = Some(format!(
        "the offline installer bundle, built by kpbuild {} from {} (sha256 {}) with the \
         modules {}",
        lock.kpbuild,
        lock.spec.file,
        lock.spec.sha256,
        lock.bundle.modules.join(", ")
    ));
    Ok(Document {
        subject,
        sources: lock
            .spec
            .kubespray
            .as_deref()
            .map(kubespray)
            .into_iter()
            .collect(),
        components,
        created: lock.bundle.source_date_epoch.unwrap_or(DEFAULT_CREATED),
        seed: hex::encode(sha2::Sha256::digest(lock_bytes)),
        tool: Tool {
            name: "kpbuild".into(),
            version: env!("CARGO_PKG_VERSION").into(),
        },
        namespace: NAMESPACE.into(),
    })
}

/// The bytes of one format's SBOM of a manifest.
pub fn render(lock: &Lock, lock_bytes: &[u8], format: Format) -> Result<Vec<u8>, LockError> {
    let doc = document(lock, lock_bytes)?;
    let bytes = match format {
        Format::Spdx => kpbuild_sbom::spdx::write(&doc),
        Format::CycloneDx => kpbuild_sbom::cyclonedx::write(&doc),
    };
    bytes.map_err(|e| LockError::Invalid {
        path: format.file().into(),
        message: e.to_string(),
    })
}

/// Both SBOMs of a manifest: `(file at the bundle root, bytes)`, SPDX first.
pub fn files(lock: &Lock, lock_bytes: &[u8]) -> Result<Vec<(&'static str, Vec<u8>)>, LockError> {
    Format::ALL
        .into_iter()
        .map(|f| Ok((f.file(), render(lock, lock_bytes, f)?)))
        .collect()
}

/// kubespray's release as the source of the lists: its version from the checkout's directory
/// name (`…/v2.28.1`) when it is one, else unknown.
fn kubespray(dir: &str) -> Component {
    let version = dir.rsplit('/').find(|s| is_version(s)).map(str::to_string);
    let mut c = Component::new(
        Kind::Source,
        "kubespray",
        version.clone().unwrap_or_else(|| "NOASSERTION".into()),
    );
    let mut purl = Purl::new("github", "kubespray").namespace("kubernetes-sigs");
    if let Some(v) = version {
        purl = purl.version(v);
    }
    c.purl = Some(purl.to_string());
    c.supplier = Some("kubernetes-sigs".into());
    c.description = Some(format!(
        "the source of the lists of files and images: kubespray's variables, read from `{dir}` \
         of the build context"
    ));
    c
}

/// Whether a name is a version (`v2.28.1`, `1.32`, `3.5.22-rc.1`).
pub(crate) fn is_version(s: &str) -> bool {
    let s = s.strip_prefix('v').unwrap_or(s);
    let (core, pre) = match s.split_once(['-', '+']) {
        Some((c, p)) => (c, Some(p)),
        None => (s, None),
    };
    let parts: Vec<&str> = core.split('.').collect();
    parts.len() >= 2
        && parts
            .iter()
            .all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()))
        && pre.is_none_or(|p| {
            !p.is_empty()
                && p.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-')
        })
}

/// The version a download's URL names: its last path segment that is a version
/// (`…/v1.32.8/bin/linux/amd64/kubelet`), else one inside its file name
/// (`helm-v3.16.4-linux-amd64.tar.gz`), else none.
pub(crate) fn version_in_url(url: &str) -> Option<String> {
    let path = url::Url::parse(url).ok()?;
    let segments: Vec<&str> = path.path_segments()?.collect();
    if let Some(v) = segments.iter().rev().find(|s| is_version(s)) {
        return Some(v.to_string());
    }
    let name = segments.last()?;
    // Split the file name at `-` and `_`, drop the extensions, and take a version among them.
    name.split(['-', '_'])
        .map(|part| {
            let mut p = part;
            for ext in [".tar.gz", ".tgz", ".tar.xz", ".tar", ".zip", ".gz"] {
                p = p.strip_suffix(ext).unwrap_or(p);
            }
            p
        })
        .find(|p| is_version(p))
        .map(str::to_string)
}

#[cfg(test)]
mod tests;
