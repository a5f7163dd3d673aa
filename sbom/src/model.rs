//! The neutral model both writers read: a [`Document`] describes one subject (a bundle), lists
//! the [`Component`]s the subject contains (each may contain more: an image index its platform
//! manifests), and the components the subject was generated from (its sources). Components
//! carry what a security review asks of each: name, version, package URL, digests, where it was
//! downloaded from, its supplier, the part of the subject that brought it, and its [`Kind`].
//! Their references are derived from their content ([`Component::reference`]), and the
//! document's own identity from a caller's seed (a digest of what the document was made from).

use std::collections::BTreeSet;

use sha2::Digest as _;

/// What a component is. Its [`Kind::id`] names it in references and properties.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Kind {
    /// What the document describes (a bundle).
    Bundle,
    /// Where the subject's lists came from (a release of a project).
    Source,
    /// A downloaded file.
    File,
    /// An image as its tag names it: an index (or a single manifest) in a registry.
    ImageIndex,
    /// The manifest of one platform of an image.
    ImageManifest,
    /// A package of an operating system (`.deb`, `.rpm`).
    OsPackage,
    /// An image saved as a loadable archive (`docker load`).
    ImageArchive,
    /// A file the subject itself is made of (installer, configuration).
    Artifact,
}

impl Kind {
    /// Its name in references and properties: `image-index`.
    pub fn id(self) -> &'static str {
        match self {
            Kind::Bundle => "bundle",
            Kind::Source => "source",
            Kind::File => "file",
            Kind::ImageIndex => "image-index",
            Kind::ImageManifest => "image-manifest",
            Kind::OsPackage => "os-package",
            Kind::ImageArchive => "image-archive",
            Kind::Artifact => "artifact",
        }
    }
}

/// A digest's algorithm.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Algorithm {
    Sha256,
    Sha512,
}

/// A digest of a component's bytes, in lowercase hex.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Digest {
    pub algorithm: Algorithm,
    pub hex: String,
}

impl Digest {
    pub fn sha256(hex: impl Into<String>) -> Digest {
        Digest {
            algorithm: Algorithm::Sha256,
            hex: hex.into(),
        }
    }
}

/// One thing the document names.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Component {
    pub kind: Kind,
    pub name: String,
    /// Its version (documents require one: a digest when nothing better is known).
    pub version: String,
    /// Its package URL.
    pub purl: Option<String>,
    pub digests: Vec<Digest>,
    /// Where it was downloaded from (a URL).
    pub download: Option<String>,
    /// Who supplies it (an organization's name).
    pub supplier: Option<String>,
    /// The part of the subject that brought it (a module of a bundle).
    pub module: Option<String>,
    /// Where it is in the subject (a path from the subject's root).
    pub path: Option<String>,
    /// Its platform (`linux/arm64/v8`), when it is of one.
    pub platform: Option<String>,
    /// One line on what it is, for readers.
    pub description: Option<String>,
    /// What it contains (an image index its platform manifests).
    pub children: Vec<Component>,
}

impl Component {
    /// A component with a kind, name and version, and nothing else yet.
    pub fn new(kind: Kind, name: impl Into<String>, version: impl Into<String>) -> Component {
        Component {
            kind,
            name: name.into(),
            version: version.into(),
            purl: None,
            digests: vec![],
            download: None,
            supplier: None,
            module: None,
            path: None,
            platform: None,
            description: None,
            children: vec![],
        }
    }

    /// Its reference, derived from its content: `<kind>-<20 hex digits>` of the sha256 of
    /// its kind, name, version, package URL, path, platform, description and digests. The same component
    /// always has the same reference; two components differ in it unless they are the same
    /// thing in the same place.
    pub fn reference(&self) -> String {
        let mut h = sha2::Sha256::new();
        for part in [
            Some(self.kind.id()),
            Some(self.name.as_str()),
            Some(self.version.as_str()),
            self.purl.as_deref(),
            self.path.as_deref(),
            self.platform.as_deref(),
            self.description.as_deref(),
        ] {
            // Absent and empty differ; each part is ended so that no two splits collide.
            match part {
                Some(p) => {
                    h.update(b"+");
                    h.update(p.as_bytes());
                }
                None => h.update(b"-"),
            }
            h.update([0u8]);
        }
        for d in &self.digests {
            h.update(format!("{:?}:{}", d.algorithm, d.hex).as_bytes());
            h.update([0u8]);
        }
        format!("{}-{}", self.kind.id(), &hex::encode(h.finalize())[..20])
    }

    /// The component and everything it contains, depth first.
    pub fn walk(&self) -> Vec<&Component> {
        let mut out = vec![self];
        for c in &self.children {
            out.extend(c.walk());
        }
        out
    }
}

/// The program that made the document.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Tool {
    pub name: String,
    pub version: String,
}

/// What a document says.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Document {
    /// What the document describes.
    pub subject: Component,
    /// What the subject was generated from.
    pub sources: Vec<Component>,
    /// What the subject contains, in order.
    pub components: Vec<Component>,
    /// When the document was made: seconds since the epoch (a fixed time, never the clock,
    /// so that the same input gives the same bytes).
    pub created: u64,
    /// What names the document: a digest (hex) of what it was made from. Its namespace
    /// (SPDX) and serial number (CycloneDX) are derived from it.
    pub seed: String,
    pub tool: Tool,
    /// Where the document's namespace lives: the SPDX `documentNamespace` is
    /// `<namespace>/<title>-<seed>` ([`Document::title`]).
    pub namespace: String,
}

/// A document that cannot be written.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SbomError {
    #[error("two components have the reference {0}: {1}")]
    DuplicateReference(String, String),
    #[error("the creation time {0} is not a time a document can name")]
    Created(u64),
    #[error("the seed `{0}` is not a hex digest of at least 32 digits")]
    Seed(String),
}

impl Document {
    /// Every component: the subject, its sources, what it contains (depth first).
    pub fn all(&self) -> Vec<&Component> {
        let mut out = vec![&self.subject];
        out.extend(self.sources.iter());
        for c in &self.components {
            out.extend(c.walk());
        }
        out
    }

    /// Checks what the writers rely on: references unique, the time and the seed usable.
    pub fn check(&self) -> Result<(), SbomError> {
        let mut seen = BTreeSet::new();
        for c in self.all() {
            let r = c.reference();
            if !seen.insert(r.clone()) {
                return Err(SbomError::DuplicateReference(r, c.name.clone()));
            }
        }
        created_rfc3339(self.created)?;
        if self.seed.len() < 32 || !self.seed.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(SbomError::Seed(self.seed.clone()));
        }
        Ok(())
    }

    /// The document's name: `<subject>-<version>`, and `-<os>-<arch>…` of the subject's
    /// platform when it has one (`kubeplay-v0.1.0-linux-amd64`).
    pub fn title(&self) -> String {
        let s = &self.subject;
        match &s.platform {
            Some(p) => format!("{}-{}-{}", s.name, s.version, p.replace('/', "-")),
            None => format!("{}-{}", s.name, s.version),
        }
    }

    /// The creation time as both formats write it: `1970-01-01T00:00:00Z`.
    pub fn created_rfc3339(&self) -> Result<String, SbomError> {
        created_rfc3339(self.created)
    }
}

fn created_rfc3339(secs: u64) -> Result<String, SbomError> {
    let t = i64::try_from(secs)
        .ok()
        .and_then(|s| time::OffsetDateTime::from_unix_timestamp(s).ok())
        .ok_or(SbomError::Created(secs))?;
    // Whole seconds in UTC: `YYYY-MM-DDThh:mm:ssZ`, the form SPDX requires.
    t.format(&time::format_description::well_known::Rfc3339)
        .map_err(|_| SbomError::Created(secs))
        .and_then(|s| {
            if s.len() == 20 {
                Ok(s)
            } else {
                Err(SbomError::Created(secs))
            }
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn references_follow_content() {
        let a = Component::new(Kind::File, "kubelet", "v1.32.8");
        let mut b = a.clone();
        assert_eq!(a.reference(), b.reference());
        assert!(a.reference().starts_with("file-"));
        assert_eq!(a.reference().len(), "file-".len() + 20);
        b.path = Some("x".into());
        assert_ne!(a.reference(), b.reference());
        // An absent part and an empty one are not the same component.
        let mut c = a.clone();
        c.path = Some(String::new());
        assert_ne!(a.reference(), c.reference());
        assert_ne!(b.reference(), c.reference());
        // Parts do not slide into each other.
        let d = Component::new(Kind::File, "kube", "letv1.32.8");
        assert_ne!(a.reference(), d.reference());
        let mut e = a.clone();
        e.digests.push(Digest::sha256("00"));
        assert_ne!(a.reference(), e.reference());
    }

    #[test]
    fn times_are_whole_seconds_in_utc() {
        assert_eq!(created_rfc3339(0).unwrap(), "1970-01-01T00:00:00Z");
        assert_eq!(created_rfc3339(1700000000).unwrap(), "2023-11-14T22:13:20Z");
        // The year 10000 has no four-digit form.
        assert_eq!(
            created_rfc3339(253_402_300_800),
            Err(SbomError::Created(253_402_300_800))
        );
        assert!(created_rfc3339(u64::MAX).is_err());
    }
}
