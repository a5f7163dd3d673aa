//! The pure part of the `registry:2` storage tree: where blobs and links live, what a link file
//! holds, what a manifest or index points at, and what a referrer (OCI 1.1: a manifest with a
//! `subject`) says of itself.
//!
//! The tree is the one Distribution's filesystem driver reads (`/var/lib/registry`):
//!
//! ```text
//! docker/registry/v2/blobs/sha256/<2 hex>/<hex>/data                     exact bytes
//! docker/registry/v2/repositories/<name>/_manifests/revisions/sha256/<hex>/link
//! docker/registry/v2/repositories/<name>/_manifests/tags/<tag>/current/link
//! docker/registry/v2/repositories/<name>/_manifests/tags/<tag>/index/sha256/<hex>/link
//! docker/registry/v2/repositories/<name>/_layers/sha256/<hex>/link
//! ```
//!
//! Link files hold `sha256:<hex>` and no newline (the registry answers 500 on a newline).
//! Manifests are parsed only to find what they point at, leniently (optional fields, unknown
//! ones ignored); their bytes are never re-serialized, since every digest is taken over the
//! exact bytes. What kpbuild writes itself is typed in [`crate::document`].

use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

pub use crate::platform::Platform;

use crate::document::Annotations;

use serde::Deserialize;
use sha2::{Digest as _, Sha256};

use crate::media_type::{
    DOCKER_FOREIGN_LAYER, DOCKER_MANIFEST, DOCKER_MANIFEST_LIST, DOCKER_MANIFEST_V1,
    DOCKER_MANIFEST_V1_SIGNED, OCI_INDEX, OCI_MANIFEST, OCI_NONDISTRIBUTABLE_PREFIX,
};

/// A `sha256` content digest. Other algorithms are rejected when parsing.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Digest {
    hex: String,
}

/// Why a digest string is not a valid `sha256:<64 lowercase hex>` digest.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DigestError {
    #[error("digest {0:?} has no algorithm (expected sha256:<64 hex digits>)")]
    NoAlgorithm(String),
    #[error("digest {0:?} uses an unsupported algorithm (only sha256 is supported)")]
    UnsupportedAlgorithm(String),
    #[error("digest {0:?} is not 64 lowercase hex digits after sha256:")]
    BadHex(String),
}

impl Digest {
    /// The sha256 digest of exactly these bytes.
    pub fn of_bytes(bytes: &[u8]) -> Digest {
        Digest {
            hex: hex::encode(Sha256::digest(bytes)),
        }
    }

    /// Builds a digest from a finished hasher.
    pub fn from_hasher(hasher: Sha256) -> Digest {
        Digest {
            hex: hex::encode(hasher.finalize()),
        }
    }

    /// A digest from its 64 hex digits (without `sha256:`).
    pub fn from_hex(hex: &str) -> Result<Digest, DigestError> {
        if hex.len() == 64
            && hex
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        {
            Ok(Digest {
                hex: hex.to_string(),
            })
        } else {
            Err(DigestError::BadHex(format!("sha256:{hex}")))
        }
    }

    /// The 64 hex digits.
    pub fn hex(&self) -> &str {
        &self.hex
    }

    /// What a link file holds: `sha256:<hex>`, without a newline.
    pub fn link_contents(&self) -> String {
        self.to_string()
    }
}

impl FromStr for Digest {
    type Err = DigestError;
    fn from_str(s: &str) -> Result<Digest, DigestError> {
        let Some((alg, hex)) = s.split_once(':') else {
            return Err(DigestError::NoAlgorithm(s.to_string()));
        };
        if alg != "sha256" {
            return Err(DigestError::UnsupportedAlgorithm(s.to_string()));
        }
        Digest::from_hex(hex).map_err(|_| DigestError::BadHex(s.to_string()))
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "sha256:{}", self.hex)
    }
}

impl fmt::Debug for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "sha256:{}", self.hex)
    }
}

impl serde::Serialize for Digest {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Digest {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Digest, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// Paths inside a registry storage root (the directory a `registry:2` mounts as
/// `/var/lib/registry`). Repository names and tags must already be validated
/// (see `image_ref::validate_repository` and `image_ref::validate_tag`).
#[derive(Debug, Clone)]
pub struct Layout {
    root: PathBuf,
}

impl Layout {
    /// A layout rooted at `root` (the directory that holds `docker/`).
    pub fn new(root: impl Into<PathBuf>) -> Layout {
        Layout { root: root.into() }
    }

    /// The storage root.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// `docker/registry/v2`.
    pub fn v2(&self) -> PathBuf {
        self.root.join("docker/registry/v2")
    }

    /// `…/blobs`.
    pub fn blobs_dir(&self) -> PathBuf {
        self.v2().join("blobs")
    }

    /// `…/blobs/sha256/<2 hex>/<hex>/data`.
    pub fn blob_data(&self, d: &Digest) -> PathBuf {
        self.blobs_dir()
            .join("sha256")
            .join(&d.hex[..2])
            .join(&d.hex)
            .join("data")
    }

    /// `…/repositories/<name>`.
    pub fn repository(&self, name: &str) -> PathBuf {
        self.v2().join("repositories").join(name)
    }

    /// `…/<name>/_manifests/revisions/sha256/<hex>/link`: makes a manifest servable by digest.
    pub fn revision_link(&self, name: &str, d: &Digest) -> PathBuf {
        self.repository(name)
            .join("_manifests/revisions/sha256")
            .join(&d.hex)
            .join("link")
    }

    /// `…/<name>/_manifests/tags/<tag>/current/link`: what the tag points at.
    pub fn tag_current_link(&self, name: &str, tag: &str) -> PathBuf {
        self.repository(name)
            .join("_manifests/tags")
            .join(tag)
            .join("current/link")
    }

    /// `…/<name>/_manifests/tags/<tag>/index/sha256/<hex>/link`: the tag's history, as the
    /// registry itself writes it.
    pub(crate) fn tag_index_link(&self, name: &str, tag: &str, d: &Digest) -> PathBuf {
        self.repository(name)
            .join("_manifests/tags")
            .join(tag)
            .join("index/sha256")
            .join(&d.hex)
            .join("link")
    }

    /// `…/<name>/_layers/sha256/<hex>/link`: makes a config or layer blob servable in `name`.
    pub fn layer_link(&self, name: &str, d: &Digest) -> PathBuf {
        self.repository(name)
            .join("_layers/sha256")
            .join(&d.hex)
            .join("link")
    }

    /// All the link files (path, contents) that make one image servable under `name`:
    /// `_layers` links for `blobs`, revision links for `manifests`, and, when `tag` is given,
    /// the tag's index and current links to `top`. The current tag link comes last, so a
    /// writer that writes them in this order leaves no tag pointing at an incomplete image.
    pub fn image_links(
        &self,
        name: &str,
        tag: Option<&str>,
        top: &Digest,
        manifests: &[Digest],
        blobs: &[Digest],
    ) -> Vec<(PathBuf, String)> {
        let mut out = Vec::new();
        for b in blobs {
            out.push((self.layer_link(name, b), b.link_contents()));
        }
        for m in manifests.iter().filter(|m| *m != top) {
            out.push((self.revision_link(name, m), m.link_contents()));
        }
        out.push((self.revision_link(name, top), top.link_contents()));
        if let Some(tag) = tag {
            out.push((self.tag_index_link(name, tag, top), top.link_contents()));
            out.push((self.tag_current_link(name, tag), top.link_contents()));
        }
        out
    }
}

/// What kind of manifest a document is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ManifestKind {
    DockerManifest,
    DockerManifestList,
    OciManifest,
    OciIndex,
}

impl ManifestKind {
    /// The media type string.
    pub fn media_type(self) -> &'static str {
        match self {
            ManifestKind::DockerManifest => DOCKER_MANIFEST,
            ManifestKind::DockerManifestList => DOCKER_MANIFEST_LIST,
            ManifestKind::OciManifest => OCI_MANIFEST,
            ManifestKind::OciIndex => OCI_INDEX,
        }
    }

    /// Whether this kind lists other manifests (index or manifest list).
    pub(crate) fn is_index(self) -> bool {
        matches!(
            self,
            ManifestKind::DockerManifestList | ManifestKind::OciIndex
        )
    }

    fn from_media_type(mt: &str) -> Option<ManifestKind> {
        // Content-Type may carry parameters (`; charset=utf-8`).
        let mt = mt.split(';').next().unwrap_or("").trim();
        match mt {
            DOCKER_MANIFEST => Some(ManifestKind::DockerManifest),
            DOCKER_MANIFEST_LIST => Some(ManifestKind::DockerManifestList),
            OCI_MANIFEST => Some(ManifestKind::OciManifest),
            OCI_INDEX => Some(ManifestKind::OciIndex),
            _ => None,
        }
    }
}

/// A content descriptor as found in a manifest.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Descriptor {
    #[serde(default)]
    pub media_type: Option<String>,
    pub digest: Digest,
    pub size: u64,
    #[serde(default)]
    pub platform: Option<Platform>,
    #[serde(default)]
    pub urls: Vec<String>,
}

impl Descriptor {
    /// A layer whose bytes live outside the registry (foreign / non-distributable with
    /// `urls`): registries do not serve it, so it is neither fetched nor linked.
    pub(crate) fn is_foreign(&self) -> bool {
        let mt = self.media_type.as_deref().unwrap_or("");
        !self.urls.is_empty()
            && (mt == DOCKER_FOREIGN_LAYER || mt.starts_with(OCI_NONDISTRIBUTABLE_PREFIX))
    }
}

/// What a manifest points at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Manifest {
    /// An image manifest: one config and its layers.
    Image {
        kind: ManifestKind,
        config: Descriptor,
        layers: Vec<Descriptor>,
    },
    /// An index or manifest list: child manifests, usually one per platform.
    Index {
        kind: ManifestKind,
        manifests: Vec<Descriptor>,
    },
}

impl Manifest {
    /// The kind of document.
    pub fn kind(&self) -> ManifestKind {
        match self {
            Manifest::Image { kind, .. } | Manifest::Index { kind, .. } => *kind,
        }
    }

    /// The blobs an image manifest needs in the registry (config first, then the layers
    /// that are distributable). Empty for an index.
    pub fn blobs(&self) -> Vec<&Descriptor> {
        match self {
            Manifest::Image { config, layers, .. } => std::iter::once(config)
                .chain(layers.iter().filter(|l| !l.is_foreign()))
                .collect(),
            Manifest::Index { .. } => Vec::new(),
        }
    }
}

/// Why manifest bytes could not be understood.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ManifestError {
    #[error("manifest is not valid JSON: {0}")]
    Json(String),
    #[error(
        "Docker schema 1 manifests are not supported (deprecated since 2017); \
         ask for a schema 2 or OCI image"
    )]
    Schema1,
    #[error("unsupported manifest media type {0:?}")]
    UnsupportedMediaType(String),
    #[error("manifest has schemaVersion {0}, expected 2")]
    SchemaVersion(u64),
    #[error("manifest {0}")]
    Invalid(String),
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawManifest {
    #[serde(default)]
    schema_version: Option<u64>,
    #[serde(default)]
    media_type: Option<String>,
    #[serde(default)]
    config: Option<Descriptor>,
    #[serde(default)]
    layers: Option<Vec<Descriptor>>,
    #[serde(default)]
    manifests: Option<Vec<Descriptor>>,
}

/// Parses manifest bytes to find what they point at. The kind is taken from the document's
/// `mediaType`, else from the HTTP `Content-Type`, else from its shape (`manifests` versus
/// `layers`), as OCI allows `mediaType` to be absent.
pub fn parse_manifest(content_type: Option<&str>, bytes: &[u8]) -> Result<Manifest, ManifestError> {
    if let Some(ct) = content_type {
        let ct = ct.split(';').next().unwrap_or("").trim();
        if ct == DOCKER_MANIFEST_V1 || ct == DOCKER_MANIFEST_V1_SIGNED {
            return Err(ManifestError::Schema1);
        }
    }
    let raw: RawManifest =
        serde_json::from_slice(bytes).map_err(|e| ManifestError::Json(e.to_string()))?;
    match raw.schema_version {
        Some(1) => return Err(ManifestError::Schema1),
        Some(2) => {}
        Some(v) => return Err(ManifestError::SchemaVersion(v)),
        None => return Err(ManifestError::Invalid("has no schemaVersion".into())),
    }
    let kind = match raw.media_type.as_deref() {
        Some(mt) => Some(
            ManifestKind::from_media_type(mt)
                .ok_or_else(|| ManifestError::UnsupportedMediaType(mt.to_string()))?,
        ),
        None => None,
    };
    let kind = match kind {
        Some(k) => k,
        None => match content_type.and_then(ManifestKind::from_media_type) {
            Some(k) => k,
            None if raw.manifests.is_some() => ManifestKind::OciIndex,
            None if raw.layers.is_some() => ManifestKind::OciManifest,
            None => {
                return Err(ManifestError::UnsupportedMediaType(
                    content_type.unwrap_or("(none)").to_string(),
                ));
            }
        },
    };
    if kind.is_index() {
        let manifests = raw
            .manifests
            .ok_or_else(|| ManifestError::Invalid("index has no \"manifests\"".into()))?;
        Ok(Manifest::Index { kind, manifests })
    } else {
        let config = raw
            .config
            .ok_or_else(|| ManifestError::Invalid("image manifest has no \"config\"".into()))?;
        let layers = raw.layers.unwrap_or_default();
        Ok(Manifest::Image {
            kind,
            config,
            layers,
        })
    }
}

/// What an OCI 1.1 manifest that refers to another (a signature, an SBOM, an attestation)
/// says of itself: the digest of its `subject`, its `artifactType`, its config's media type
/// (an image manifest's; an index has none) and its `annotations` in the document's order.
/// What the referrers API lists it with is decided by the registry that serves it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Referrer {
    pub subject: Digest,
    pub artifact_type: Option<String>,
    pub config_media_type: Option<String>,
    pub annotations: Annotations,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawReferrer {
    #[serde(default)]
    subject: Option<RawSubject>,
    #[serde(default)]
    artifact_type: Option<String>,
    #[serde(default)]
    config: Option<RawConfigType>,
    #[serde(default)]
    annotations: Option<Annotations>,
}

#[derive(Deserialize)]
struct RawSubject {
    digest: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawConfigType {
    #[serde(default)]
    media_type: Option<String>,
}

/// Reads what makes manifest bytes a referrer, leniently (unknown fields ignored; the kind and
/// the blobs are [`parse_manifest`]'s). `None` when the manifest has no `subject`, or one
/// whose digest is of another algorithm than sha256 (no manifest of a registry kpbuild serves
/// can be that subject). A subject with no digest, or a malformed one, and annotations that
/// are not strings are errors.
pub fn parse_referrer(bytes: &[u8]) -> Result<Option<Referrer>, ManifestError> {
    let raw: RawReferrer =
        serde_json::from_slice(bytes).map_err(|e| ManifestError::Json(e.to_string()))?;
    let Some(subject) = raw.subject else {
        return Ok(None);
    };
    let subject = match subject.digest.parse::<Digest>() {
        Ok(d) => d,
        Err(DigestError::UnsupportedAlgorithm(_)) => return Ok(None),
        Err(e) => return Err(ManifestError::Invalid(format!("subject: {e}"))),
    };
    Ok(Some(Referrer {
        subject,
        artifact_type: raw.artifact_type,
        config_media_type: raw.config.and_then(|c| c.media_type),
        annotations: raw.annotations.unwrap_or_default(),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    const HEX: &str = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

    fn d(c: char) -> Digest {
        Digest::from_hex(&c.to_string().repeat(64)).unwrap()
    }

    #[test]
    fn digest_of_empty_bytes() {
        assert_eq!(Digest::of_bytes(b"").hex(), HEX);
        assert_eq!(Digest::of_bytes(b"").to_string(), format!("sha256:{HEX}"));
    }

    #[test]
    fn digest_parse_rejects_bad_input() {
        assert!(format!("sha256:{HEX}").parse::<Digest>().is_ok());
        assert!(matches!(
            HEX.parse::<Digest>(),
            Err(DigestError::NoAlgorithm(_))
        ));
        assert!(matches!(
            format!("sha512:{HEX}").parse::<Digest>(),
            Err(DigestError::UnsupportedAlgorithm(_))
        ));
        assert!(matches!(
            format!("sha256:{}", HEX.to_uppercase()).parse::<Digest>(),
            Err(DigestError::BadHex(_))
        ));
        assert!(matches!(
            format!("sha256:{}", &HEX[1..]).parse::<Digest>(),
            Err(DigestError::BadHex(_))
        ));
        assert!(matches!(
            "sha256:../../etc/passwd".parse::<Digest>(),
            Err(DigestError::BadHex(_))
        ));
    }

    #[test]
    fn link_contents_have_no_newline() {
        let c = d('a').link_contents();
        assert_eq!(c, format!("sha256:{}", "a".repeat(64)));
        assert!(!c.ends_with('\n'));
    }

    #[test]
    fn paths_follow_registry_layout() {
        let l = Layout::new("/r");
        let dig = Digest::from_hex(HEX).unwrap();
        assert_eq!(
            l.blob_data(&dig),
            PathBuf::from(format!("/r/docker/registry/v2/blobs/sha256/e3/{HEX}/data"))
        );
        assert_eq!(
            l.revision_link("calico/node", &dig),
            PathBuf::from(format!(
                "/r/docker/registry/v2/repositories/calico/node/_manifests/revisions/sha256/{HEX}/link"
            ))
        );
        assert_eq!(
            l.tag_current_link("calico/node", "v3.27"),
            PathBuf::from(
                "/r/docker/registry/v2/repositories/calico/node/_manifests/tags/v3.27/current/link"
            )
        );
        assert_eq!(
            l.tag_index_link("a/b/c", "v1", &dig),
            PathBuf::from(format!(
                "/r/docker/registry/v2/repositories/a/b/c/_manifests/tags/v1/index/sha256/{HEX}/link"
            ))
        );
        assert_eq!(
            l.layer_link("library/nginx", &dig),
            PathBuf::from(format!(
                "/r/docker/registry/v2/repositories/library/nginx/_layers/sha256/{HEX}/link"
            ))
        );
    }

    #[test]
    fn image_links_put_the_tag_last() {
        let l = Layout::new("/r");
        let links = l.image_links("x/y", Some("v1"), &d('a'), &[d('a'), d('b')], &[d('c')]);
        let paths: Vec<String> = links
            .iter()
            .map(|(p, _)| {
                p.strip_prefix("/r/docker/registry/v2/repositories/x/y")
                    .unwrap()
                    .display()
                    .to_string()
            })
            .collect();
        assert_eq!(
            paths,
            vec![
                format!("_layers/sha256/{}/link", "c".repeat(64)),
                format!("_manifests/revisions/sha256/{}/link", "b".repeat(64)),
                format!("_manifests/revisions/sha256/{}/link", "a".repeat(64)),
                format!("_manifests/tags/v1/index/sha256/{}/link", "a".repeat(64)),
                "_manifests/tags/v1/current/link".to_string(),
            ]
        );
        assert!(links.iter().all(|(_, c)| !c.contains('\n')));
        assert_eq!(links.last().unwrap().1, d('a').to_string());
        // No tag: no tag links.
        assert_eq!(l.image_links("x/y", None, &d('a'), &[d('a')], &[]).len(), 1);
    }

    #[test]
    fn platform_parse_and_match() {
        let amd: Platform = "linux/amd64".parse().unwrap();
        let arm64: Platform = "linux/arm64".parse().unwrap();
        let arm64v8: Platform = "linux/arm64/v8".parse().unwrap();
        let armv7: Platform = "linux/arm/v7".parse().unwrap();
        let armv6: Platform = "linux/arm/v6".parse().unwrap();
        let arm: Platform = "linux/arm".parse().unwrap();
        assert_eq!(arm64v8.to_string(), "linux/arm64/v8");
        assert!(amd.satisfies(&amd));
        assert!(!amd.satisfies(&arm64));
        assert!(arm64v8.satisfies(&arm64));
        assert!(arm64.satisfies(&arm64v8));
        assert!(armv7.satisfies(&arm));
        assert!(!armv6.satisfies(&arm));
        assert!(!armv6.satisfies(&armv7));
        let amd_v3 = Platform {
            variant: Some("v3".into()),
            ..amd.clone()
        };
        assert!(amd_v3.satisfies(&amd));
        assert!(!amd.satisfies(&amd_v3));
        for bad in [
            "linux",
            "linux/",
            "/amd64",
            "linux/amd64/v8/x",
            "Linux/amd64",
            "",
        ] {
            assert!(bad.parse::<Platform>().is_err(), "{bad}");
        }
    }

    fn image_json(mt: Option<&str>) -> String {
        let mt = mt
            .map(|m| format!("\"mediaType\":\"{m}\","))
            .unwrap_or_default();
        format!(
            r#"{{"schemaVersion":2,{mt}"config":{{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"sha256:{a}","size":10}},
            "layers":[{{"mediaType":"application/vnd.oci.image.layer.v1.tar+gzip","digest":"sha256:{b}","size":20}},
                      {{"mediaType":"{foreign}","digest":"sha256:{c}","size":30,"urls":["https://example.invalid/x"]}}]}}"#,
            a = "a".repeat(64),
            b = "b".repeat(64),
            c = "c".repeat(64),
            foreign = DOCKER_FOREIGN_LAYER,
        )
    }

    #[test]
    fn parse_image_manifest_finds_config_and_layers() {
        let m = parse_manifest(None, image_json(Some(OCI_MANIFEST)).as_bytes()).unwrap();
        assert_eq!(m.kind(), ManifestKind::OciManifest);
        let blobs: Vec<String> = m.blobs().iter().map(|d| d.digest.to_string()).collect();
        // The foreign layer is neither fetched nor linked.
        assert_eq!(
            blobs,
            vec![
                format!("sha256:{}", "a".repeat(64)),
                format!("sha256:{}", "b".repeat(64))
            ]
        );
        // Without mediaType: Content-Type decides, else the shape.
        let m = parse_manifest(Some(DOCKER_MANIFEST), image_json(None).as_bytes()).unwrap();
        assert_eq!(m.kind(), ManifestKind::DockerManifest);
        let m = parse_manifest(None, image_json(None).as_bytes()).unwrap();
        assert_eq!(m.kind(), ManifestKind::OciManifest);
    }

    #[test]
    fn parse_index_finds_children_with_platforms() {
        let json = format!(
            r#"{{"schemaVersion":2,"mediaType":"{DOCKER_MANIFEST_LIST}","manifests":[
            {{"mediaType":"{DOCKER_MANIFEST}","digest":"sha256:{a}","size":1,"platform":{{"os":"linux","architecture":"amd64"}}}},
            {{"mediaType":"{DOCKER_MANIFEST}","digest":"sha256:{b}","size":2,"platform":{{"os":"linux","architecture":"arm64","variant":"v8"}}}}]}}"#,
            a = "a".repeat(64),
            b = "b".repeat(64)
        );
        let m = parse_manifest(Some("application/json"), json.as_bytes()).unwrap();
        let Manifest::Index { kind, manifests } = m else {
            panic!("not an index")
        };
        assert_eq!(kind, ManifestKind::DockerManifestList);
        assert_eq!(manifests.len(), 2);
        assert!(
            manifests[1]
                .platform
                .as_ref()
                .unwrap()
                .satisfies(&"linux/arm64".parse().unwrap())
        );
        let no_mt = r#"{"schemaVersion":2,"manifests":[]}"#;
        assert_eq!(
            parse_manifest(None, no_mt.as_bytes()).unwrap().kind(),
            ManifestKind::OciIndex
        );
    }

    #[test]
    fn parse_rejects_schema1_and_garbage() {
        assert_eq!(
            parse_manifest(None, br#"{"schemaVersion":1,"name":"x"}"#),
            Err(ManifestError::Schema1)
        );
        assert_eq!(
            parse_manifest(Some(DOCKER_MANIFEST_V1_SIGNED), b"{}"),
            Err(ManifestError::Schema1)
        );
        assert!(matches!(
            parse_manifest(None, b"not json"),
            Err(ManifestError::Json(_))
        ));
        assert!(matches!(
            parse_manifest(None, br#"{"schemaVersion":2,"mediaType":"text/plain"}"#),
            Err(ManifestError::UnsupportedMediaType(_))
        ));
        assert!(matches!(
            parse_manifest(
                None,
                format!(r#"{{"schemaVersion":2,"mediaType":"{OCI_MANIFEST}"}}"#).as_bytes()
            ),
            Err(ManifestError::Invalid(_))
        ));
        // A digest that is not sha256 hex is refused, so it can never become a path.
        let bad =
            r#"{"schemaVersion":2,"config":{"digest":"sha256:../../x","size":1},"layers":[]}"#;
        assert!(matches!(
            parse_manifest(None, bad.as_bytes()),
            Err(ManifestError::Json(_))
        ));
    }
    #[test]
    fn referrers_are_read_from_their_subject() {
        let (a, b) = ("a".repeat(64), "b".repeat(64));
        let sig = format!(
            r#"{{"schemaVersion":2,"mediaType":"{OCI_MANIFEST}","artifactType":"application/vnd.example.sig",
            "config":{{"mediaType":"application/vnd.oci.empty.v1+json","digest":"sha256:{a}","size":2}},"layers":[],
            "subject":{{"mediaType":"{OCI_MANIFEST}","digest":"sha256:{b}","size":9}},
            "annotations":{{"z":"1","a":"2"}}}}"#
        );
        let r = parse_referrer(sig.as_bytes()).unwrap().unwrap();
        assert_eq!(r.subject, d('b'));
        assert_eq!(
            r.artifact_type.as_deref(),
            Some("application/vnd.example.sig")
        );
        assert_eq!(
            r.config_media_type.as_deref(),
            Some("application/vnd.oci.empty.v1+json")
        );
        // The document's order, not sorted.
        assert_eq!(r.annotations.keys().collect::<Vec<_>>(), ["z", "a"]);
        // An index referrer: no config, no artifactType, no annotations.
        let idx = format!(
            r#"{{"schemaVersion":2,"mediaType":"{OCI_INDEX}","manifests":[],"subject":{{"digest":"sha256:{b}","size":9}}}}"#
        );
        let r = parse_referrer(idx.as_bytes()).unwrap().unwrap();
        assert_eq!(
            (r.artifact_type, r.config_media_type, r.annotations.len()),
            (None, None, 0)
        );
        // No subject; a subject of another algorithm: not a referrer here.
        assert_eq!(parse_referrer(image_json(None).as_bytes()), Ok(None));
        let sha512 = format!(r#"{{"subject":{{"digest":"sha512:{a}{a}","size":1}}}}"#);
        assert_eq!(parse_referrer(sha512.as_bytes()), Ok(None));
        // A malformed subject or annotations that are not strings are errors.
        for bad in [
            r#"{"subject":{"size":1}}"#.to_string(),
            r#"{"subject":{"digest":"sha256:zz","size":1}}"#.to_string(),
            format!(r#"{{"subject":{{"digest":"sha256:{b}"}},"annotations":{{"k":1}}}}"#),
        ] {
            assert!(parse_referrer(bad.as_bytes()).is_err(), "{bad}");
        }
    }
}
