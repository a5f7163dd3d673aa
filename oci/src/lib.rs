//! OCI images as kpbuild handles them, with no network and no knowledge of bundles or module
//! kinds: what the image sync engine, the frontend, the CLI and the bundle crate share.
//!
//! Where things live:
//! - [`platform`]: the one platform type (`linux/arm64`) and kpbuild's architectures;
//! - [`image_ref`]: image references, registry mirrors, fetch locations and the names images
//!   are stored under;
//! - [`media_type`]: every media type kpbuild reads or writes, declared once;
//! - [`document`]: the JSON kpbuild writes (descriptors, manifests, indexes, configs, a
//!   docker-archive's `manifest.json`) as typed structs whose field order fixes the bytes;
//! - [`registry_layout`]: digests, manifests and the storage layout a
//!   `registry:2` serves (`docker/registry/v2/{blobs,repositories}`);
//! - [`registry_verify`]: checking such a tree complete and consistent (links, tags,
//!   manifests, blobs);
//! - [`image_archive`]: image archives `docker load` accepts, from a registry tree or a root
//!   filesystem.

pub mod document;
pub mod image_archive;
pub mod image_ref;
pub mod media_type;
pub mod platform;
pub mod registry_layout;
pub mod registry_verify;

/// Serializes a type as its `Display` string and deserializes it through `FromStr`: parsed
/// values (references, digests, platforms) travel in JSON as the text users write.
macro_rules! serde_via_str {
    ($t:ty) => {
        impl serde::Serialize for $t {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.collect_str(self)
            }
        }
        impl<'de> serde::Deserialize<'de> for $t {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = <String as serde::Deserialize>::deserialize(d)?;
                s.parse().map_err(serde::de::Error::custom)
            }
        }
    };
}
pub(crate) use serde_via_str;
