//! The SPDX 2.3 JSON writer: [`SpdxDocument`] and its parts are the document's typed form
//! (their field order is the order of the bytes), [`SpdxDocument::from_model`] maps the neutral
//! model onto it and [`write`] gives the bytes.
//!
//! Every component is a package (`SPDXRef-<reference>`), with `filesAnalyzed: false` (the
//! checksums are of the package's own bytes), its purl as a `PACKAGE-MANAGER` external
//! reference, its download location (or `NOASSERTION`), its supplier as an organization, its
//! path in the subject as `packageFileName`, and the module that brought it as `sourceInfo`.
//! Relationships: the document `DESCRIBES` the subject, the subject is `GENERATED_FROM` each
//! source and `CONTAINS` each component, and a component `CONTAINS` its children. The
//! namespace is `<namespace>/<title>-<seed>` ([`Document::title`]): the same input, the same
//! document.

use serde::Serialize;

use crate::model::{Algorithm, Component, Document, Kind, SbomError};

/// The document's own identifier.
pub const DOCUMENT_ID: &str = "SPDXRef-DOCUMENT";
/// What every value the writer does not know says.
pub const NOASSERTION: &str = "NOASSERTION";

#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct SpdxDocument {
    #[serde(rename = "spdxVersion")]
    pub spdx_version: &'static str,
    #[serde(rename = "dataLicense")]
    pub data_license: &'static str,
    #[serde(rename = "SPDXID")]
    pub spdx_id: &'static str,
    pub name: String,
    #[serde(rename = "documentNamespace")]
    pub document_namespace: String,
    #[serde(rename = "creationInfo")]
    pub creation_info: CreationInfo,
    pub packages: Vec<Package>,
    pub relationships: Vec<Relationship>,
}

#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct CreationInfo {
    pub created: String,
    pub creators: Vec<String>,
}

#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct Package {
    #[serde(rename = "SPDXID")]
    pub spdx_id: String,
    pub name: String,
    #[serde(rename = "versionInfo")]
    pub version_info: String,
    #[serde(rename = "packageFileName", skip_serializing_if = "Option::is_none")]
    pub package_file_name: Option<String>,
    pub supplier: String,
    #[serde(rename = "downloadLocation")]
    pub download_location: String,
    #[serde(rename = "filesAnalyzed")]
    pub files_analyzed: bool,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub checksums: Vec<Checksum>,
    #[serde(rename = "sourceInfo", skip_serializing_if = "Option::is_none")]
    pub source_info: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    #[serde(rename = "externalRefs", skip_serializing_if = "Vec::is_empty")]
    pub external_refs: Vec<ExternalRef>,
    #[serde(rename = "primaryPackagePurpose")]
    pub primary_package_purpose: &'static str,
}

#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct Checksum {
    pub algorithm: &'static str,
    #[serde(rename = "checksumValue")]
    pub checksum_value: String,
}

#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct ExternalRef {
    #[serde(rename = "referenceCategory")]
    pub reference_category: &'static str,
    #[serde(rename = "referenceType")]
    pub reference_type: &'static str,
    #[serde(rename = "referenceLocator")]
    pub reference_locator: String,
}

#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct Relationship {
    #[serde(rename = "spdxElementId")]
    pub spdx_element_id: String,
    #[serde(rename = "relationshipType")]
    pub relationship_type: &'static str,
    #[serde(rename = "relatedSpdxElement")]
    pub related_spdx_element: String,
}

/// The SPDX identifier of a component.
pub fn spdx_id(c: &Component) -> String {
    format!("SPDXRef-{}", c.reference())
}

fn purpose(kind: Kind) -> &'static str {
    match kind {
        Kind::Bundle => "ARCHIVE",
        Kind::Source => "SOURCE",
        Kind::File | Kind::Artifact => "FILE",
        Kind::ImageIndex | Kind::ImageManifest | Kind::ImageArchive => "CONTAINER",
        Kind::OsPackage => "INSTALL",
    }
}

fn package(c: &Component) -> Package {
    Package {
        spdx_id: spdx_id(c),
        name: c.name.clone(),
        version_info: c.version.clone(),
        package_file_name: c.path.clone(),
        supplier: c
            .supplier
            .as_ref()
            .map_or_else(|| NOASSERTION.into(), |s| format!("Organization: {s}")),
        download_location: c.download.clone().unwrap_or_else(|| NOASSERTION.into()),
        files_analyzed: false,
        checksums: c
            .digests
            .iter()
            .map(|d| Checksum {
                algorithm: match d.algorithm {
                    Algorithm::Sha256 => "SHA256",
                    Algorithm::Sha512 => "SHA512",
                },
                checksum_value: d.hex.clone(),
            })
            .collect(),
        source_info: c
            .module
            .as_ref()
            .map(|m| format!("brought by the module `{m}`")),
        description: c.description.clone(),
        external_refs: c
            .purl
            .iter()
            .map(|p| ExternalRef {
                reference_category: "PACKAGE-MANAGER",
                reference_type: "purl",
                reference_locator: p.clone(),
            })
            .collect(),
        primary_package_purpose: purpose(c.kind),
    }
}

fn relationship(from: String, kind: &'static str, to: &Component) -> Relationship {
    Relationship {
        spdx_element_id: from,
        relationship_type: kind,
        related_spdx_element: spdx_id(to),
    }
}

impl SpdxDocument {
    /// The document of `doc`.
    pub fn from_model(doc: &Document) -> Result<SpdxDocument, SbomError> {
        doc.check()?;
        let subject = spdx_id(&doc.subject);
        let mut relationships = vec![relationship(DOCUMENT_ID.into(), "DESCRIBES", &doc.subject)];
        for s in &doc.sources {
            relationships.push(relationship(subject.clone(), "GENERATED_FROM", s));
        }
        fn contains(parent: String, c: &Component, out: &mut Vec<Relationship>) {
            out.push(relationship(parent, "CONTAINS", c));
            for child in &c.children {
                contains(spdx_id(c), child, out);
            }
        }
        for c in &doc.components {
            contains(subject.clone(), c, &mut relationships);
        }
        let name = doc.title();
        Ok(SpdxDocument {
            spdx_version: "SPDX-2.3",
            data_license: "CC0-1.0",
            spdx_id: DOCUMENT_ID,
            document_namespace: format!("{}/{name}-{}", doc.namespace, doc.seed),
            name,
            creation_info: CreationInfo {
                created: doc.created_rfc3339()?,
                creators: vec![format!("Tool: {}-{}", doc.tool.name, doc.tool.version)],
            },
            packages: doc.all().into_iter().map(package).collect(),
            relationships,
        })
    }
}

/// The document's bytes: pretty JSON with a final newline.
pub fn write(doc: &Document) -> Result<Vec<u8>, SbomError> {
    let d = SpdxDocument::from_model(doc)?;
    let mut bytes = serde_json::to_vec_pretty(&d).expect("an SPDX document serializes");
    bytes.push(b'\n');
    Ok(bytes)
}
