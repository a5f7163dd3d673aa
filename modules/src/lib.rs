//! Pure logic of kpbuild, with no BuildKit and no I/O beyond reading and writing files:
//! the bundle spec, kubespray variable rendering, list generation, the module plan, and the
//! writers that are pure data transforms.
//!
//! Where things live:
//! - [`kinds`]: one file per module kind (files, images, os-packages, dockerfile, compose):
//!   its spec, validation, plan, lock entries and the questions other code asks of it;
//! - [`spec`] reads `Dockerfile.bundle`, [`plan`] runs every kind's planning per platform,
//!   [`jobs`] is the contract between an LLB exec op and the worker it runs;
//! - [`layout`] is the one home of bundle paths, target names and module image names;
//!   [`platform`] the one platform type;
//! - [`store`] is the local content store of module results that `kpbuild export` reads.

pub mod bundle_tar;
pub mod durable;
pub mod image_archive;
pub mod image_ref;
pub mod jobs;
pub mod kinds;
pub mod kubespray;
pub mod layout;
pub mod lock;
pub mod packages;
pub mod plan;
pub mod platform;
pub mod registry_layout;
pub mod registry_verify;
pub mod safe_path;
pub mod serve;
pub mod source;
pub mod spec;
pub mod store;
pub mod tar_merge;
pub mod vars;
pub mod verify;

/// Serializes a type as its `Display` string and deserializes it through `FromStr`: parsed
/// values (references, digests, platforms) travel in JSON as the text users write.
#[macro_export]
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
