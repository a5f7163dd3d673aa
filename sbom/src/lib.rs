//! kpbuild's SBOM documents, knowing no module kind and no bundle spec: a neutral model of
//! what a document describes ([`model`]: the subject, what it contains, what it was generated
//! from), package URLs with their escaping ([`purl`]), and two typed writers, SPDX 2.3 JSON
//! ([`spdx`]) and CycloneDX 1.6 JSON ([`cyclonedx`]). Both writers are serde structs whose
//! field order fixes the bytes; identifiers are derived from content (no random ids, no clock),
//! so the same [`model::Document`] always gives the same bytes. The SPDX writer stands on its
//! own for other callers (a BuildKit attestation is an SPDX document of the same model).

pub mod cyclonedx;
pub mod model;
pub mod purl;
pub mod spdx;

pub use model::{Algorithm, Component, Digest, Document, Kind, SbomError, Tool};
pub use purl::Purl;
