//! Package URLs (`pkg:type/namespace/name@version?qualifiers`), built and escaped as the purl
//! specification and its reference implementation (`packageurl-python`, what the SBOM tools
//! parse with) write them: the type lowercase; every namespace segment, the name and the
//! version percent-encoded except ASCII letters, digits, `-._~` and `:`; qualifiers sorted by
//! key, empty values left out, values encoded the same way but keeping `/` (a URL stays
//! readable: `repository_url=quay.io/calico/node`).

use std::collections::BTreeMap;
use std::fmt;

use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};

/// What stays as it is in a segment, the name and the version.
const SEGMENT: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~')
    .remove(b':');
/// What stays as it is in a qualifier's value.
const QUALIFIER: &AsciiSet = &SEGMENT.remove(b'/');

/// A package URL.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Purl {
    kind: String,
    namespace: Vec<String>,
    name: String,
    version: Option<String>,
    qualifiers: BTreeMap<String, String>,
}

impl Purl {
    /// `pkg:<kind>/<name>`; the kind is lowercased.
    pub fn new(kind: &str, name: impl Into<String>) -> Purl {
        Purl {
            kind: kind.to_ascii_lowercase(),
            namespace: vec![],
            name: name.into(),
            version: None,
            qualifiers: BTreeMap::new(),
        }
    }

    /// Its namespace, `/`-separated segments (empty segments dropped).
    pub fn namespace(mut self, namespace: &str) -> Purl {
        self.namespace = namespace
            .split('/')
            .filter(|s| !s.is_empty())
            .map(str::to_string)
            .collect();
        self
    }

    pub fn version(mut self, version: impl Into<String>) -> Purl {
        self.version = Some(version.into());
        self
    }

    /// A qualifier (keys are lowercased; an empty value is left out).
    pub fn qualifier(mut self, key: &str, value: impl Into<String>) -> Purl {
        let value = value.into();
        if !value.is_empty() {
            self.qualifiers.insert(key.to_ascii_lowercase(), value);
        }
        self
    }
}

impl fmt::Display for Purl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "pkg:{}/", self.kind)?;
        for segment in &self.namespace {
            write!(f, "{}/", utf8_percent_encode(segment, SEGMENT))?;
        }
        write!(f, "{}", utf8_percent_encode(&self.name, SEGMENT))?;
        if let Some(v) = &self.version {
            write!(f, "@{}", utf8_percent_encode(v, SEGMENT))?;
        }
        for (i, (k, v)) in self.qualifiers.iter().enumerate() {
            let sep = if i == 0 { '?' } else { '&' };
            write!(f, "{sep}{k}={}", utf8_percent_encode(v, QUALIFIER))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn oci_images_pin_the_digest_and_keep_urls_readable() {
        let p = Purl::new("OCI", "node")
            .version("sha256:9f86d081884c7d65")
            .qualifier("tag", "v3.29.5")
            .qualifier("repository_url", "quay.io/calico/node")
            .qualifier("arch", "");
        assert_eq!(
            p.to_string(),
            "pkg:oci/node@sha256:9f86d081884c7d65?repository_url=quay.io/calico/node&tag=v3.29.5"
        );
    }

    #[test]
    fn generic_files_escape_what_would_split_the_url() {
        let p = Purl::new("generic", "a b@c?d#e/f")
            .version("1.0+x")
            .qualifier("download_url", "https://h.io/a b?x=1&y=2#z")
            .qualifier("checksum", "sha256:00ff");
        assert_eq!(
            p.to_string(),
            "pkg:generic/a%20b%40c%3Fd%23e%2Ff@1.0%2Bx\
             ?checksum=sha256:00ff&download_url=https://h.io/a%20b%3Fx%3D1%26y%3D2%23z"
        );
    }

    #[test]
    fn debian_versions_keep_epoch_and_tilde_and_encode_plus() {
        let p = Purl::new("deb", "libc6")
            .namespace("debian")
            .version("1:2.36-9+deb12u10~x")
            .qualifier("arch", "amd64")
            .qualifier("distro", "debian-12");
        assert_eq!(
            p.to_string(),
            "pkg:deb/debian/libc6@1:2.36-9%2Bdeb12u10~x?arch=amd64&distro=debian-12"
        );
        // Non-ASCII is encoded as UTF-8 bytes; empty namespace segments are dropped.
        let q = Purl::new("generic", "ü").namespace("/a//b/");
        assert_eq!(q.to_string(), "pkg:generic/a/b/%C3%BC");
    }
}
