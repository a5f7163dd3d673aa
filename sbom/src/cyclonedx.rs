//! The CycloneDX 1.6 JSON writer: [`Bom`] and its parts are the document's typed form (their
//! field order is the order of the bytes), [`Bom::from_model`] maps the neutral model onto it
//! and [`write`] gives the bytes.
//!
//! The subject is `metadata.component`, its sources are that component's
//! `pedigree.ancestors` (what it was derived from), and what it contains are the top-level
//! `components`, each with its children as nested `components` (an image index holds its
//! platform manifests). Every component has its reference as `bom-ref`, its supplier, digests
//! as `hashes`, its purl, its download location as a `distribution` external reference, and
//! kpbuild's properties: `kpbuild:kind`, `kpbuild:module` (the module that brought it),
//! `kpbuild:path` (where it is in the subject) and `kpbuild:platform`. The `serialNumber` is a
//! UUID derived from the document's seed (SHA-256, shaped as an RFC 4122 name-based UUID: the
//! schema's pattern), so the same input gives the same document.

use serde::Serialize;
use sha2::Digest as _;

use crate::model::{Algorithm, Component, Document, Kind, SbomError};

#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct Bom {
    #[serde(rename = "bomFormat")]
    pub bom_format: &'static str,
    #[serde(rename = "specVersion")]
    pub spec_version: &'static str,
    #[serde(rename = "serialNumber")]
    pub serial_number: String,
    pub version: u32,
    pub metadata: Metadata,
    pub components: Vec<CdxComponent>,
}

#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct Metadata {
    pub timestamp: String,
    pub tools: Tools,
    pub component: CdxComponent,
}

#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct Tools {
    pub components: Vec<ToolComponent>,
}

#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct ToolComponent {
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub name: String,
    pub version: String,
}

#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct CdxComponent {
    #[serde(rename = "type")]
    pub kind: &'static str,
    #[serde(rename = "bom-ref")]
    pub bom_ref: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub supplier: Option<Supplier>,
    pub name: String,
    pub version: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub hashes: Vec<Hash>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub purl: Option<String>,
    #[serde(rename = "externalReferences", skip_serializing_if = "Vec::is_empty")]
    pub external_references: Vec<ExternalReference>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pedigree: Option<Pedigree>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub properties: Vec<Property>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub components: Vec<CdxComponent>,
}

#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct Supplier {
    pub name: String,
}

#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct Hash {
    pub alg: &'static str,
    pub content: String,
}

#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct ExternalReference {
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub url: String,
}

#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct Pedigree {
    pub ancestors: Vec<CdxComponent>,
}

#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct Property {
    pub name: &'static str,
    pub value: String,
}

/// The component type CycloneDX names for a kind.
fn component_type(kind: Kind) -> &'static str {
    match kind {
        Kind::Bundle | Kind::Source => "application",
        Kind::File | Kind::Artifact => "file",
        Kind::ImageIndex | Kind::ImageManifest | Kind::ImageArchive => "container",
        Kind::OsPackage => "library",
    }
}

fn component(c: &Component) -> CdxComponent {
    let mut properties = vec![Property {
        name: "kpbuild:kind",
        value: c.kind.id().into(),
    }];
    for (name, value) in [
        ("kpbuild:module", &c.module),
        ("kpbuild:path", &c.path),
        ("kpbuild:platform", &c.platform),
    ] {
        if let Some(v) = value {
            properties.push(Property {
                name,
                value: v.clone(),
            });
        }
    }
    CdxComponent {
        kind: component_type(c.kind),
        bom_ref: c.reference(),
        supplier: c.supplier.as_ref().map(|s| Supplier { name: s.clone() }),
        name: c.name.clone(),
        version: c.version.clone(),
        description: c.description.clone(),
        hashes: c
            .digests
            .iter()
            .map(|d| Hash {
                alg: match d.algorithm {
                    Algorithm::Sha256 => "SHA-256",
                    Algorithm::Sha512 => "SHA-512",
                },
                content: d.hex.clone(),
            })
            .collect(),
        purl: c.purl.clone(),
        external_references: c
            .download
            .iter()
            .map(|u| ExternalReference {
                kind: "distribution",
                url: u.clone(),
            })
            .collect(),
        pedigree: None,
        properties,
        components: c.children.iter().map(component).collect(),
    }
}

/// `urn:uuid:…` from the seed: the first 16 bytes of a SHA-256 of it, with the version and
/// variant bits of a name-based UUID.
pub fn serial_number(seed: &str) -> String {
    let mut h = sha2::Sha256::new();
    h.update(b"kpbuild cyclonedx serial number\0");
    h.update(seed.as_bytes());
    let mut b: [u8; 16] = h.finalize()[..16].try_into().expect("16 bytes");
    b[6] = (b[6] & 0x0f) | 0x50;
    b[8] = (b[8] & 0x3f) | 0x80;
    let x = hex::encode(b);
    format!(
        "urn:uuid:{}-{}-{}-{}-{}",
        &x[..8],
        &x[8..12],
        &x[12..16],
        &x[16..20],
        &x[20..]
    )
}

impl Bom {
    /// The document of `doc`.
    pub fn from_model(doc: &Document) -> Result<Bom, SbomError> {
        doc.check()?;
        let mut subject = component(&doc.subject);
        if !doc.sources.is_empty() {
            subject.pedigree = Some(Pedigree {
                ancestors: doc.sources.iter().map(component).collect(),
            });
        }
        Ok(Bom {
            bom_format: "CycloneDX",
            spec_version: "1.6",
            serial_number: serial_number(&doc.seed),
            version: 1,
            metadata: Metadata {
                timestamp: doc.created_rfc3339()?,
                tools: Tools {
                    components: vec![ToolComponent {
                        kind: "application",
                        name: doc.tool.name.clone(),
                        version: doc.tool.version.clone(),
                    }],
                },
                component: subject,
            },
            components: doc.components.iter().map(component).collect(),
        })
    }
}

/// The document's bytes: pretty JSON with a final newline.
pub fn write(doc: &Document) -> Result<Vec<u8>, SbomError> {
    let d = Bom::from_model(doc)?;
    let mut bytes = serde_json::to_vec_pretty(&d).expect("a CycloneDX document serializes");
    bytes.push(b'\n');
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serial_numbers_are_uuids_of_the_seed() {
        let a = serial_number(&"ab".repeat(32));
        assert_eq!(a, serial_number(&"ab".repeat(32)));
        assert_ne!(a, serial_number(&"ac".repeat(32)));
        // The pattern CycloneDX's schema holds it to.
        let re = a.strip_prefix("urn:uuid:").unwrap();
        let parts: Vec<&str> = re.split('-').collect();
        assert_eq!(
            parts.iter().map(|p| p.len()).collect::<Vec<_>>(),
            [8, 4, 4, 4, 12]
        );
        assert!(parts[2].starts_with('5'));
        assert!(matches!(parts[3].as_bytes()[0], b'8' | b'9' | b'a' | b'b'));
        assert!(re.bytes().all(|b| b == b'-' || b.is_ascii_hexdigit()));
    }
}
