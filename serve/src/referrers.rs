//! The referrers API of the OCI distribution spec 1.1 (`GET /v2/<name>/referrers/<digest>`),
//! its pure part: the descriptor a referrer is listed with ([`descriptor`]), the
//! `artifactType` filter a query asks for ([`artifact_type_filter`]) and the listing itself,
//! an OCI image index ([`listing`]). Which manifests of a repository refer to which subject is
//! found once, while the registry index is read (`registry.rs`): the tree is read-only while
//! it is served, so nothing is looked up on disk per request.
//!
//! The listing is written with `kpbuild-oci`'s typed documents (`ImageIndex`, `Descriptor`),
//! so its key order is fixed there: `schemaVersion`, `mediaType`, `manifests`, and in each
//! descriptor `mediaType`, `digest`, `size`, `annotations`, `artifactType`.

use kpbuild_oci::document::{self, Descriptor, ImageIndex};
use kpbuild_oci::registry_layout::{Digest, Referrer};

/// The response header that says which filters were applied (the spec's name).
pub const FILTERS_APPLIED: &str = "oci-filters-applied";

/// The one filter the spec defines: the query parameter, and the value of
/// [`FILTERS_APPLIED`] when it was applied.
pub const ARTIFACT_TYPE: &str = "artifactType";

/// The descriptor a referrer is listed with: the manifest's media type, digest and size, its
/// annotations, and its `artifactType`: the manifest's own, else its config's media type (an
/// image manifest's); none for an index without one. An empty `artifactType` counts as none.
pub fn descriptor(media_type: &'static str, digest: Digest, size: u64, r: &Referrer) -> Descriptor {
    let mut d = Descriptor::new(media_type, digest, size);
    d.annotations = r.annotations.clone();
    d.artifact_type = [&r.artifact_type, &r.config_media_type]
        .into_iter()
        .flatten()
        .find(|t| !t.is_empty())
        .cloned();
    d
}

/// The `artifactType` a request's query asks for: the first `artifactType=` parameter,
/// percent-decoded (a `+` stays a `+`: media types hold one). `None` when there is none or
/// it is empty: nothing is filtered then.
pub fn artifact_type_filter(query: Option<&str>) -> Option<String> {
    let value = query?
        .split('&')
        .find_map(|kv| kv.strip_prefix(ARTIFACT_TYPE)?.strip_prefix('='))?;
    let decoded = percent_encoding::percent_decode_str(value)
        .decode_utf8_lossy()
        .into_owned();
    (!decoded.is_empty()).then_some(decoded)
}

/// A referrers response: the index's bytes, and whether a filter was applied (the response
/// then says so in [`FILTERS_APPLIED`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listing {
    pub bytes: Vec<u8>,
    pub filtered: bool,
}

/// The image index listing `referrers` (in the order given), only those of `artifact_type`
/// when a filter is given. No referrer is an empty index, not an error.
pub fn listing<'a>(
    referrers: impl IntoIterator<Item = &'a Descriptor>,
    artifact_type: Option<&str>,
) -> Listing {
    let manifests = referrers
        .into_iter()
        .filter(|d| artifact_type.is_none_or(|t| d.artifact_type.as_deref() == Some(t)))
        .cloned()
        .collect();
    Listing {
        bytes: document::to_bytes(&ImageIndex::new(manifests)),
        filtered: artifact_type.is_some(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kpbuild_oci::document::Annotations;
    use kpbuild_oci::media_type::{OCI_INDEX, OCI_MANIFEST};

    fn d(c: char) -> Digest {
        Digest::from_hex(&c.to_string().repeat(64)).unwrap()
    }

    fn referrer(artifact_type: Option<&str>, config: Option<&str>) -> Referrer {
        Referrer {
            subject: d('f'),
            artifact_type: artifact_type.map(Into::into),
            config_media_type: config.map(Into::into),
            annotations: Annotations::from([("z".into(), "1".into()), ("a".into(), "2".into())]),
        }
    }

    #[test]
    fn the_artifact_type_is_the_manifests_else_its_configs() {
        let at = |r: Referrer| descriptor(OCI_MANIFEST, d('a'), 1, &r).artifact_type;
        let sig = "application/vnd.example.sig";
        let cfg = "application/vnd.example.sbom.config";
        assert_eq!(at(referrer(Some(sig), Some(cfg))).as_deref(), Some(sig));
        assert_eq!(at(referrer(None, Some(cfg))).as_deref(), Some(cfg));
        assert_eq!(at(referrer(Some(""), Some(cfg))).as_deref(), Some(cfg));
        // An index: no config; without an artifactType of its own, none.
        assert_eq!(at(referrer(None, None)), None);
        assert_eq!(at(referrer(Some(""), None)), None);
        let desc = descriptor(OCI_INDEX, d('b'), 9, &referrer(None, None));
        assert_eq!(
            (desc.media_type, desc.digest, desc.size),
            (OCI_INDEX, d('b'), 9)
        );
        assert_eq!(desc.annotations.keys().collect::<Vec<_>>(), ["z", "a"]);
    }

    #[test]
    fn the_filter_is_read_from_the_query() {
        let f = artifact_type_filter;
        assert_eq!(f(None), None);
        assert_eq!(f(Some("")), None);
        assert_eq!(f(Some("artifactType=")), None);
        assert_eq!(f(Some("n=1&last=x")), None);
        assert_eq!(f(Some("artifactTypes=x")), None);
        assert_eq!(
            f(Some("artifactType=application%2Fvnd.example%2Bjson")).as_deref(),
            Some("application/vnd.example+json")
        );
        assert_eq!(
            f(Some(
                "n=2&artifactType=application/vnd.example+json&artifactType=b"
            ))
            .as_deref(),
            Some("application/vnd.example+json")
        );
    }

    #[test]
    fn a_listing_is_an_image_index_of_the_referrers_filtered() {
        let sig = descriptor(
            OCI_MANIFEST,
            d('a'),
            10,
            &referrer(Some("application/vnd.example.sig"), None),
        );
        let mut bare = referrer(None, None);
        bare.annotations.clear();
        let idx = descriptor(OCI_INDEX, d('b'), 20, &bare);
        let all = listing([&sig, &idx], None);
        let a = "a".repeat(64);
        let b = "b".repeat(64);
        assert_eq!(
            String::from_utf8(all.bytes).unwrap(),
            format!(
                r#"{{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[{{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"sha256:{a}","size":10,"annotations":{{"z":"1","a":"2"}},"artifactType":"application/vnd.example.sig"}},{{"mediaType":"application/vnd.oci.image.index.v1+json","digest":"sha256:{b}","size":20}}]}}"#
            )
        );
        assert!(!all.filtered);
        let only = listing([&sig, &idx], Some("application/vnd.example.sig"));
        assert!(only.filtered);
        let v: serde_json::Value = serde_json::from_slice(&only.bytes).unwrap();
        assert_eq!(v["manifests"].as_array().unwrap().len(), 1);
        assert_eq!(v["manifests"][0]["digest"], format!("sha256:{a}"));
        let none = listing([&sig, &idx], Some("application/vnd.other"));
        assert!(none.filtered);
        assert_eq!(
            String::from_utf8(none.bytes).unwrap(),
            r#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[]}"#
        );
        assert!(!listing([], None).filtered);
    }
}
