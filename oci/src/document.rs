//! The JSON documents kpbuild writes, as typed structs: descriptors, OCI image manifests and
//! indexes, image configs (or the parts of one kpbuild writes into an upstream config), the
//! OCI platform object, and the entry of a docker-archive `manifest.json`.
//!
//! Their bytes are digests users compare across kpbuild versions, so the bytes are fixed here:
//! a struct's field order is its key order (serde writes fields as declared), optional fields
//! are left out when absent, and maps (annotations, labels) keep the order they were filled in.
//! The unit tests pin every document's exact bytes. These types only write; reading stays
//! lenient and keeps the upstream bytes ([`crate::registry_layout`]: its `Descriptor` takes
//! what any registry sends, and an upstream config is kept as a `serde_json::Value`).
//!
//! Why not `oci-spec`'s types: they decide key order and which empty fields are written
//! themselves, and may change either between releases, which would change every digest.

use indexmap::IndexMap;
use serde::Serialize;

use crate::media_type::{OCI_CONFIG, OCI_INDEX, OCI_MANIFEST};
use crate::platform::Platform;
use crate::registry_layout::Digest;

/// Annotations or labels: written in the order they were inserted.
pub type Annotations = IndexMap<String, String>;

/// The bytes of a document: compact JSON.
pub fn to_bytes<T: Serialize + ?Sized>(doc: &T) -> Vec<u8> {
    serde_json::to_vec(doc).expect("documents have string keys only")
}

/// A document as a JSON value, to be placed into a document kpbuild keeps leniently (an
/// upstream image config); its keys keep their order.
pub fn to_value<T: Serialize + ?Sized>(doc: &T) -> serde_json::Value {
    serde_json::to_value(doc).expect("documents have string keys only")
}

/// A document stored as a blob under its digest, with the media type its descriptor names.
pub trait Blob: Serialize {
    const MEDIA_TYPE: &'static str;

    /// Its bytes ([`to_bytes`]) and the descriptor of those bytes.
    fn to_blob(&self) -> (Vec<u8>, Descriptor) {
        let bytes = to_bytes(self);
        let desc = Descriptor::of_bytes(Self::MEDIA_TYPE, &bytes);
        (bytes, desc)
    }
}

/// A content descriptor: `mediaType`, `digest`, `size`, then `platform`, `annotations` and
/// `artifactType` when there are any (`artifactType` last, where OCI's own descriptor has it;
/// kpbuild writes it only into the referrers listings `kpbuild serve` answers).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Descriptor {
    pub media_type: &'static str,
    pub digest: Digest,
    pub size: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub platform: Option<PlatformObject>,
    #[serde(skip_serializing_if = "IndexMap::is_empty")]
    pub annotations: Annotations,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub artifact_type: Option<String>,
}

impl Descriptor {
    /// A descriptor with no platform and no annotations.
    pub fn new(media_type: &'static str, digest: Digest, size: u64) -> Descriptor {
        Descriptor {
            media_type,
            digest,
            size,
            platform: None,
            annotations: Annotations::new(),
            artifact_type: None,
        }
    }

    /// The descriptor of `bytes`.
    pub fn of_bytes(media_type: &'static str, bytes: &[u8]) -> Descriptor {
        Descriptor::new(media_type, Digest::of_bytes(bytes), bytes.len() as u64)
    }

    /// With the platform of the manifest it points at.
    pub fn with_platform(mut self, platform: &Platform) -> Descriptor {
        self.platform = Some(platform.into());
        self
    }

    /// With this `artifactType` (what an artifact manifest is, for the referrers API).
    pub fn with_artifact_type(mut self, artifact_type: &str) -> Descriptor {
        self.artifact_type = Some(artifact_type.to_string());
        self
    }

    /// With one more annotation (after those already there).
    pub fn annotate(mut self, key: &str, value: &str) -> Descriptor {
        self.annotations.insert(key.to_string(), value.to_string());
        self
    }
}

/// The OCI platform object: `architecture`, `os`, then `variant` when there is one.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PlatformObject {
    pub architecture: String,
    pub os: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub variant: Option<String>,
}

impl From<&Platform> for PlatformObject {
    fn from(p: &Platform) -> PlatformObject {
        PlatformObject {
            architecture: p.architecture.clone(),
            os: p.os.clone(),
            variant: p.variant.clone(),
        }
    }
}

/// An OCI image manifest: `schemaVersion` 2, `mediaType`, `config`, `layers`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ImageManifest {
    schema_version: u32,
    media_type: &'static str,
    pub config: Descriptor,
    pub layers: Vec<Descriptor>,
}

impl ImageManifest {
    pub fn new(config: Descriptor, layers: Vec<Descriptor>) -> ImageManifest {
        ImageManifest {
            schema_version: 2,
            media_type: OCI_MANIFEST,
            config,
            layers,
        }
    }
}

impl Blob for ImageManifest {
    const MEDIA_TYPE: &'static str = OCI_MANIFEST;
}

/// An OCI image index: `schemaVersion` 2, `mediaType`, `manifests`. An OCI layout's
/// `index.json` is one too.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ImageIndex {
    schema_version: u32,
    media_type: &'static str,
    pub manifests: Vec<Descriptor>,
}

impl ImageIndex {
    pub fn new(manifests: Vec<Descriptor>) -> ImageIndex {
        ImageIndex {
            schema_version: 2,
            media_type: OCI_INDEX,
            manifests,
        }
    }
}

impl Blob for ImageIndex {
    const MEDIA_TYPE: &'static str = OCI_INDEX;
}

/// An image config as kpbuild writes one: `architecture`, `os`, `variant` when there is one,
/// `config` when there is one, `rootfs`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ImageConfig {
    pub architecture: String,
    pub os: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub variant: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub config: Option<ContainerConfig>,
    pub rootfs: RootFs,
}

impl ImageConfig {
    /// The config of an image for `platform` with these layers and no `config` object.
    pub fn new(platform: &Platform, rootfs: RootFs) -> ImageConfig {
        ImageConfig {
            architecture: platform.architecture.clone(),
            os: platform.os.clone(),
            variant: platform.variant.clone(),
            config: None,
            rootfs,
        }
    }

    /// With this `config` object.
    pub fn with_config(mut self, config: ContainerConfig) -> ImageConfig {
        self.config = Some(config);
        self
    }
}

impl Blob for ImageConfig {
    const MEDIA_TYPE: &'static str = OCI_CONFIG;
}

/// The `config` object of an image config: `Labels` when there are any (`{}` otherwise).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct ContainerConfig {
    #[serde(rename = "Labels", skip_serializing_if = "IndexMap::is_empty")]
    pub labels: Annotations,
}

/// An image config's `rootfs`: `type` `layers`, then the `diff_ids` (the digests of the
/// uncompressed layers, in order).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RootFs {
    #[serde(rename = "type")]
    kind: &'static str,
    pub diff_ids: Vec<Digest>,
}

impl RootFs {
    pub fn layers(diff_ids: Vec<Digest>) -> RootFs {
        RootFs {
            kind: "layers",
            diff_ids,
        }
    }
}

/// One entry of an image config's `history`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct History {
    pub created_by: String,
}

/// One image of a docker-archive's `manifest.json` (the file is a list of them): `Config`
/// (the config's file name in the archive), `RepoTags`, `Layers` (the layers' file names).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct DockerArchiveEntry {
    pub config: String,
    pub repo_tags: Vec<String>,
    pub layers: Vec<String>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::media_type::OCI_LAYER_TAR;

    fn d(c: char) -> Digest {
        Digest::from_hex(&c.to_string().repeat(64)).unwrap()
    }

    fn text<T: Serialize>(doc: &T) -> String {
        String::from_utf8(to_bytes(doc)).unwrap()
    }

    #[test]
    fn descriptors_write_optional_fields_only_when_present() {
        let a = "a".repeat(64);
        assert_eq!(
            text(&Descriptor::new(OCI_CONFIG, d('a'), 322)),
            format!(
                r#"{{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"sha256:{a}","size":322}}"#
            )
        );
        assert_eq!(
            text(
                &Descriptor::new(OCI_LAYER_TAR, d('a'), 2048)
                    .annotate("org.opencontainers.image.title", "lock")
            ),
            format!(
                r#"{{"mediaType":"application/vnd.oci.image.layer.v1.tar","digest":"sha256:{a}","size":2048,"annotations":{{"org.opencontainers.image.title":"lock"}}}}"#
            )
        );
        // A referrer's descriptor: artifactType after the annotations.
        assert_eq!(
            text(
                &Descriptor::new(OCI_MANIFEST, d('a'), 7)
                    .annotate("k", "v")
                    .with_artifact_type("application/vnd.example.sig")
            ),
            format!(
                r#"{{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"sha256:{a}","size":7,"annotations":{{"k":"v"}},"artifactType":"application/vnd.example.sig"}}"#
            )
        );
        // Both: platform before annotations; annotations in insertion order, not sorted.
        let arm: Platform = "linux/arm/v7".parse().unwrap();
        assert_eq!(
            text(
                &Descriptor::of_bytes(OCI_MANIFEST, b"{}")
                    .with_platform(&arm)
                    .annotate("z", "1")
                    .annotate("a", "2")
            ),
            format!(
                r#"{{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"{}","size":2,"platform":{{"architecture":"arm","os":"linux","variant":"v7"}},"annotations":{{"z":"1","a":"2"}}}}"#,
                Digest::of_bytes(b"{}")
            )
        );
    }

    #[test]
    fn manifest_and_index_bytes() {
        let (a, b, c) = ("a".repeat(64), "b".repeat(64), "c".repeat(64));
        let manifest = ImageManifest::new(
            Descriptor::new(OCI_CONFIG, d('a'), 10),
            vec![
                Descriptor::new(OCI_LAYER_TAR, d('b'), 20).annotate("k", "v"),
                Descriptor::new(OCI_LAYER_TAR, d('c'), 30),
            ],
        );
        assert_eq!(
            text(&manifest),
            format!(
                r#"{{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"sha256:{a}","size":10}},"layers":[{{"mediaType":"application/vnd.oci.image.layer.v1.tar","digest":"sha256:{b}","size":20,"annotations":{{"k":"v"}}}},{{"mediaType":"application/vnd.oci.image.layer.v1.tar","digest":"sha256:{c}","size":30}}]}}"#
            )
        );
        let index = ImageIndex::new(vec![
            Descriptor::new(OCI_MANIFEST, d('a'), 1).with_platform(&"linux/amd64".parse().unwrap()),
            Descriptor::new(OCI_MANIFEST, d('b'), 2).with_platform(&"linux/arm64".parse().unwrap()),
        ]);
        assert_eq!(
            text(&index),
            format!(
                r#"{{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[{{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"sha256:{a}","size":1,"platform":{{"architecture":"amd64","os":"linux"}}}},{{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"sha256:{b}","size":2,"platform":{{"architecture":"arm64","os":"linux"}}}}]}}"#
            )
        );
        // An OCI layout's index.json: the same document, pretty-printed.
        let layout_index = ImageIndex::new(vec![
            Descriptor::new(OCI_INDEX, d('c'), 289)
                .annotate("org.opencontainers.image.ref.name", "v1"),
        ]);
        assert_eq!(
            serde_json::to_string_pretty(&layout_index).unwrap(),
            format!(
                r#"{{
  "schemaVersion": 2,
  "mediaType": "application/vnd.oci.image.index.v1+json",
  "manifests": [
    {{
      "mediaType": "application/vnd.oci.image.index.v1+json",
      "digest": "sha256:{c}",
      "size": 289,
      "annotations": {{
        "org.opencontainers.image.ref.name": "v1"
      }}
    }}
  ]
}}"#
            )
        );
    }

    #[test]
    fn config_bytes() {
        let (a, b) = ("a".repeat(64), "b".repeat(64));
        let amd64: Platform = "linux/amd64".parse().unwrap();
        let labelled = ImageConfig::new(&amd64, RootFs::layers(vec![d('a'), d('b')])).with_config(
            ContainerConfig {
                labels: Annotations::from([
                    ("org.opencontainers.image.version".into(), "v1".into()),
                    ("io.kpbuild.bundle".into(), "kubeplay".into()),
                ]),
            },
        );
        assert_eq!(
            text(&labelled),
            format!(
                r#"{{"architecture":"amd64","os":"linux","config":{{"Labels":{{"org.opencontainers.image.version":"v1","io.kpbuild.bundle":"kubeplay"}}}},"rootfs":{{"type":"layers","diff_ids":["sha256:{a}","sha256:{b}"]}}}}"#
            )
        );
        let arm: Platform = "linux/arm/v7".parse().unwrap();
        let bare = ImageConfig::new(&arm, RootFs::layers(vec![]));
        assert_eq!(
            text(&bare),
            r#"{"architecture":"arm","os":"linux","variant":"v7","rootfs":{"type":"layers","diff_ids":[]}}"#
        );
        assert_eq!(
            text(&bare.with_config(ContainerConfig::default())),
            r#"{"architecture":"arm","os":"linux","variant":"v7","config":{},"rootfs":{"type":"layers","diff_ids":[]}}"#
        );
        assert_eq!(
            text(&[History {
                created_by: "kpbuild".into()
            }]),
            r#"[{"created_by":"kpbuild"}]"#
        );
    }

    #[test]
    fn a_blob_is_described_by_its_bytes() {
        let manifest = ImageManifest::new(Descriptor::new(OCI_CONFIG, d('a'), 1), vec![]);
        let (bytes, desc) = manifest.to_blob();
        assert_eq!(bytes, to_bytes(&manifest));
        assert_eq!(
            desc,
            Descriptor::new(OCI_MANIFEST, Digest::of_bytes(&bytes), bytes.len() as u64)
        );
        let (_, desc) = ImageIndex::new(vec![]).to_blob();
        assert_eq!(desc.media_type, OCI_INDEX);
        let amd64: Platform = "linux/amd64".parse().unwrap();
        let (_, desc) = ImageConfig::new(&amd64, RootFs::layers(vec![])).to_blob();
        assert_eq!(desc.media_type, OCI_CONFIG);
    }

    #[test]
    fn docker_archive_manifest_bytes() {
        let entry = DockerArchiveEntry {
            config: "c.json".into(),
            repo_tags: vec!["r/app:v1".into()],
            layers: vec!["a/layer.tar".into(), "b/layer.tar".into()],
        };
        assert_eq!(
            text(&[entry]),
            r#"[{"Config":"c.json","RepoTags":["r/app:v1"],"Layers":["a/layer.tar","b/layer.tar"]}]"#
        );
    }
}
