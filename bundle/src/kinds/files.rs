//! The `files` kind: every binary the deploy downloads, laid out by upstream URL under
//! `resources/nginx/files/<host>/<path>` (what the deploy side asks for once `download_url`
//! points at the bundle), content fetched from the spec's URL mirrors, each checked against
//! its pin. Lowered in `frontend/src/kinds/files.rs`.

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};

use super::{ModuleSpec, ModuleWork, NestedBuild, PlanCx, Validator, Work, loopback_hosts};
use crate::layout;
use crate::lock::{Entry, Lock, LockError, hash_file};
use crate::plan::PlanError;
use crate::sbom::{SbomCx, version_in_url};
use crate::spec::{ListSelection, PerArch, SpecError, UrlMirror};
use crate::verify::Check;
use kpbuild_ansible::kubespray::{Item, Pin};
use kpbuild_oci::image_ref::{FetchLocation, ImageRef, is_loopback_registry};
use kpbuild_oci::platform::Platform;
use kpbuild_sbom::{Algorithm, Component, Digest, Kind, Purl};

/// The `files` block of a spec.
#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct FilesModule {
    #[serde(default)]
    pub from_kubespray: ListSelection,
    #[serde(default)]
    pub extra: Vec<ExtraFile>,
    /// URLs (exact, after rendering) to leave out.
    #[serde(default)]
    pub exclude: Vec<String>,
}

/// A file beside the generated ones.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct ExtraFile {
    /// URL; `{arch}` is replaced by the platform's architecture.
    pub url: String,
    /// sha256 pin, one for all architectures or per architecture.
    pub sha256: Option<PerArch<String>>,
    /// Only for these architectures (default: all platforms of the bundle).
    #[serde(default)]
    pub archs: Vec<String>,
}

/// The files of one platform, sorted by URL.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct FilesWork {
    pub files: Vec<FileWork>,
}

/// A file to download into `resources/nginx/<path>`.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq, PartialOrd, Ord)]
pub struct FileWork {
    /// The upstream URL (what the deploy side asks for).
    pub url: String,
    /// Where the content is fetched from, tried in order (the mirror's locations, or `url`).
    pub fetch_urls: Vec<String>,
    /// `files/<host>/<path of the URL>`, under `resources/nginx/`.
    pub path: String,
    /// The pin, when kubespray or the spec gives one.
    pub pin: Option<PinWork>,
}

impl FileWork {
    /// The file's path from the bundle root.
    pub fn bundle_path(&self) -> String {
        layout::nginx_path(&self.path)
    }

    /// The file's name (the last component of its path).
    pub fn file_name(&self) -> &str {
        self.path.rsplit('/').next().unwrap_or("file")
    }

    /// Whether a location is on the loopback interface (an op fetching it needs the host's
    /// network).
    pub fn needs_host_network(&self) -> bool {
        self.fetch_urls
            .iter()
            .filter_map(|u| url_host(u))
            .any(|h| is_loopback_registry(&h))
    }
}

/// `host:port` of a URL (the port its scheme implies when it names none).
fn url_host(u: &str) -> Option<String> {
    let u = url::Url::parse(u).ok()?;
    Some(format!(
        "{}:{}",
        u.host_str()?,
        u.port_or_known_default().unwrap_or(0)
    ))
}

/// A content pin: `sha256` or `sha512` and the hex digest.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq, PartialOrd, Ord)]
pub struct PinWork {
    pub algorithm: String,
    pub hex: String,
}

impl From<Pin> for PinWork {
    fn from(p: Pin) -> Self {
        PinWork {
            algorithm: p.algorithm,
            hex: p.hex,
        }
    }
}

/// The locations of `url`, in the order they are tried: the longest matching URL prefix
/// mirror's `to` prefixes, or `url` itself when no mirror matches.
pub(crate) fn mirror_urls(url: &str, mirrors: &[UrlMirror]) -> Vec<String> {
    mirrors
        .iter()
        .filter(|m| {
            let from = m.from.trim_end_matches('/');
            url == from || url.starts_with(&format!("{from}/"))
        })
        .max_by_key(|m| m.from.trim_end_matches('/').len())
        .map(|m| {
            let rest = &url[m.from.trim_end_matches('/').len()..];
            let mut out: Vec<String> = Vec::new();
            for to in m.to.all() {
                let u = format!("{}{rest}", to.trim_end_matches('/'));
                if !out.contains(&u) {
                    out.push(u);
                }
            }
            out
        })
        .unwrap_or_else(|| vec![url.to_string()])
}

impl ModuleSpec for FilesModule {
    fn validate(&self, name: &str, v: &Validator<'_>) -> Result<(), SpecError> {
        for e in &self.extra {
            let url = e.url.replace("{arch}", "amd64");
            if let Err(err) = layout::file_path_of_url(&url) {
                return Err(v.invalid(
                    Some("url"),
                    format!("module `{name}`: file URL `{}`: {err}", e.url),
                    "give a full http(s) URL of a file",
                ));
            }
        }
        v.kubespray_for(name, self.from_kubespray, "files")
    }

    fn plan_inputs(&self) -> Vec<String> {
        vec![]
    }

    fn build_inputs(&self) -> Vec<String> {
        vec![]
    }

    fn builds_for(&self, _platform: &Platform) -> bool {
        true
    }

    fn plan(&self, cx: &PlanCx<'_>) -> Result<Work, PlanError> {
        let arch = cx.arch;
        let mut files: BTreeMap<String, Option<Pin>> = BTreeMap::new();
        if let Some(k) = cx.kubespray(self.from_kubespray)? {
            match self.from_kubespray {
                ListSelection::All => {
                    for url in k.files().map_err(|e| cx.list_err(e))? {
                        files.entry(url).or_default();
                    }
                    for item in k.checksums().map_err(|e| cx.list_err(e))? {
                        files.insert(item.url, item.pin);
                    }
                }
                ListSelection::Enabled => {
                    for (item, pin) in k.enabled_detailed().map_err(|e| cx.list_err(e))? {
                        if let Item::File(url) = item {
                            files.insert(url, pin);
                        }
                    }
                }
                ListSelection::None => {}
            }
        }
        let url_err = |url: &str, reason: String| PlanError::Url {
            spec: cx.spec_name.to_string(),
            module: cx.module.to_string(),
            url: url.to_string(),
            reason,
        };
        for e in &self.extra {
            if !e.archs.is_empty() && !e.archs.iter().any(|a| a == arch.image_arch()) {
                continue;
            }
            let url = cx.for_arch(&e.url);
            let pin = match e.sha256.as_ref().map(|s| s.for_arch(arch)) {
                Some(Some(hex)) => Some(Pin::parse(&format!("sha256:{hex}")).ok_or_else(|| {
                    url_err(&url, format!("sha256 `{hex}` is not 64 hex digits"))
                })?),
                _ => None,
            };
            files.insert(url, pin);
        }
        for x in &self.exclude {
            files.remove(&cx.for_arch(x));
        }
        let mut by_path: BTreeMap<String, String> = BTreeMap::new();
        let mut list = Vec::new();
        for (url, pin) in files {
            let path = layout::file_path_of_url(&url).map_err(|reason| url_err(&url, reason))?;
            if let Some(first) = by_path.insert(path.clone(), url.clone()) {
                return Err(PlanError::PathClash {
                    spec: cx.spec_name.to_string(),
                    module: cx.module.to_string(),
                    path,
                    first,
                    second: url,
                });
            }
            list.push(FileWork {
                fetch_urls: mirror_urls(&url, &cx.spec_file.spec.mirrors),
                url,
                path,
                pin: pin.map(Into::into),
            });
        }
        Ok(Work::Files(FilesWork { files: list }))
    }
}

impl ModuleWork for FilesWork {
    fn images_to_resolve(&self) -> Vec<(&ImageRef, &FetchLocation)> {
        vec![]
    }

    /// Downloads run in fetch-file ops; their loopback locations need the host's network
    /// like a loopback registry does (the entitlement is the same).
    fn loopback_registries(&self) -> Vec<String> {
        let hosts: Vec<String> = self
            .files
            .iter()
            .flat_map(|f| f.fetch_urls.iter())
            .filter_map(|u| url_host(u))
            .collect();
        loopback_hosts(hosts.iter().map(String::as_str))
    }

    fn nested_build(&self) -> Option<NestedBuild<'_>> {
        None
    }

    /// Every file with its sha256 and size, checked against its pin.
    fn lock(&self, tree: &Path, lock: &mut Lock) -> Result<(), LockError> {
        for f in &self.files {
            let path = f.bundle_path();
            let (s256, s512, size) = hash_file(&tree.join(&path))?;
            if let Some(pin) = &f.pin {
                let got = match pin.algorithm.as_str() {
                    "sha512" => &s512,
                    _ => &s256,
                };
                if *got != pin.hex {
                    return Err(LockError::Entry(Box::new(PinMismatch {
                        url: f.url.clone(),
                        path,
                        algorithm: pin.algorithm.clone(),
                        got: got.clone(),
                        want: pin.hex.clone(),
                    })));
                }
            }
            lock.push(FileEntry {
                path,
                url: f.url.clone(),
                sha256: s256,
                size,
                pin: f.pin.as_ref().map(|p| format!("{}:{}", p.algorithm, p.hex)),
            })?;
        }
        Ok(())
    }
}

/// A file of the bundle in the manifest's `files` section.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct FileEntry {
    /// Path from the bundle root.
    pub path: String,
    pub url: String,
    pub sha256: String,
    pub size: u64,
    /// The pin it was checked against (`sha256:…`, `sha512:…`), when there was one.
    pub pin: Option<String>,
}

/// A downloaded file that does not match its pin (the manifest is not written).
#[derive(Debug, thiserror::Error)]
#[error("file {url} ({path}): {algorithm} is {got}, but the pin is {want}")]
pub struct PinMismatch {
    url: String,
    path: String,
    algorithm: String,
    got: String,
    want: String,
}

impl Entry for FileEntry {
    const SECTION: &'static str = "files";
    const NOUN: Option<&'static str> = Some("files");
    type SortKey = String;
    fn sort_key(&self) -> String {
        self.path.clone()
    }

    /// A download: `pkg:generic/<file name>@<version>?checksum=sha256:…&download_url=<URL>`,
    /// its version the one its URL names (else its sha256), downloaded from its upstream URL
    /// (what the deploy side asks for; a mirror only served the same bytes), supplied by the
    /// URL's host; a sha512 pin is a second digest.
    fn components(&self, _: &SbomCx<'_>) -> Vec<Component> {
        let url = url::Url::parse(&self.url).ok();
        let name = url
            .as_ref()
            .and_then(|u| u.path_segments()?.next_back().map(str::to_string))
            .filter(|n| !n.is_empty())
            .unwrap_or_else(|| self.path.rsplit('/').next().unwrap_or_default().to_string());
        let version =
            version_in_url(&self.url).unwrap_or_else(|| format!("sha256:{}", self.sha256));
        let mut c = Component::new(Kind::File, name.clone(), version.clone());
        c.purl = Some(
            Purl::new("generic", name)
                .version(version)
                .qualifier("download_url", self.url.clone())
                .qualifier("checksum", format!("sha256:{}", self.sha256))
                .to_string(),
        );
        c.digests = vec![Digest::sha256(self.sha256.clone())];
        if let Some(hex) = self.pin.as_deref().and_then(|p| p.strip_prefix("sha512:")) {
            c.digests.push(Digest {
                algorithm: Algorithm::Sha512,
                hex: hex.to_string(),
            });
        }
        c.download = Some(self.url.clone());
        c.supplier = url.and_then(|u| u.host_str().map(str::to_string));
        c.path = Some(self.path.clone());
        vec![c]
    }

    /// Each file present with its size and sha256, and matching its pin.
    fn verify(entries: &[Self], check: &mut Check<'_>) -> (usize, usize) {
        for f in entries {
            let pin512 = f.pin.as_deref().and_then(|p| p.strip_prefix("sha512:"));
            match check.file(&f.path, &f.sha256, pin512) {
                Err(e) => check.fault(
                    &f.path,
                    format!("missing or unreadable ({e}); from {}", f.url),
                ),
                Ok((s256, s512, size)) => {
                    if size != f.size {
                        check.fault(
                            &f.path,
                            format!("size {size}, the manifest says {}", f.size),
                        );
                    }
                    if s256 != f.sha256 {
                        check.fault(
                            &f.path,
                            format!("sha256 {s256}, the manifest says {}", f.sha256),
                        );
                    }
                    if let Some(pin) = &f.pin {
                        let ok = match pin.split_once(':') {
                            Some(("sha256", h)) => h == s256,
                            Some(("sha512", h)) => h == s512,
                            _ => true,
                        };
                        if !ok {
                            check.fault(
                                &f.path,
                                format!("does not match its pin {pin} ({})", f.url),
                            );
                        }
                    }
                }
            }
        }
        (entries.len(), 0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mirrors_use_the_longest_prefix() {
        let m = vec![
            UrlMirror {
                from: "https://github.com".into(),
                to: "http://127.0.0.1:8081/gh".into(),
            },
            UrlMirror {
                from: "https://github.com/etcd-io".into(),
                to: "http://m/etcd".into(),
            },
        ];
        assert_eq!(
            mirror_urls("https://github.com/a/b", &m),
            ["http://127.0.0.1:8081/gh/a/b"]
        );
        assert_eq!(
            mirror_urls("https://github.com/etcd-io/x", &m),
            ["http://m/etcd/x"]
        );
        assert_eq!(
            mirror_urls("https://github.community/x", &m),
            ["https://github.community/x"]
        );
    }

    #[test]
    fn mirror_lists_are_tried_in_order_upstream_last() {
        let m = vec![UrlMirror {
            from: "https://dl.k8s.io/".into(),
            to: crate::spec::MirrorTargets::Many(vec![
                "http://a/dl".into(),
                "http://b/dl/".into(),
                "http://a/dl".into(),
                "https://dl.k8s.io".into(),
            ]),
        }];
        let file = FileWork {
            url: "https://dl.k8s.io/v1/kubelet".into(),
            fetch_urls: mirror_urls("https://dl.k8s.io/v1/kubelet", &m),
            path: "files/dl.k8s.io/v1/kubelet".into(),
            pin: None,
        };
        assert_eq!(
            file.fetch_urls,
            [
                "http://a/dl/v1/kubelet",
                "http://b/dl/v1/kubelet",
                "https://dl.k8s.io/v1/kubelet"
            ]
        );
        assert!(!file.needs_host_network());
        let local = FileWork {
            fetch_urls: vec!["http://x/a".into(), "http://127.0.0.1:8081/a".into()],
            ..file.clone()
        };
        assert!(local.needs_host_network());
        assert_eq!(
            FilesWork {
                files: vec![local, file]
            }
            .loopback_registries(),
            ["127.0.0.1:8081"]
        );
    }
}
