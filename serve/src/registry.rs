//! The pull side of the OCI distribution spec over a `registry:2` storage tree, read-only.
//!
//! [`route`] turns a `/v2/…` request into a [`Route`]; [`Registry::load`] reads the tree once
//! at start (repositories, tags, revision and layer links, every manifest's bytes — hashed
//! against their digest there, so a manifest is never served under a wrong digest); lookups
//! then answer from memory, and blobs from their `data` file. What a repository may serve is
//! what it links: a manifest by tag or by a digest in its `_manifests/revisions`, a blob in its
//! `_layers` (or a linked manifest), exactly as Distribution's filesystem driver decides.
//! The referrers API (OCI 1.1) lists, from memory too, the manifests of a repository whose
//! `subject` is the digest asked: which manifest refers to which subject is found while the
//! tree is read, the descriptor each is listed with made there ([`crate::referrers`]).
//! Errors carry the codes of the spec's error table ([`ErrorCode`]) and render as its JSON
//! error body.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use kpbuild_oci::document::Descriptor;
use kpbuild_oci::image_ref::{validate_repository, validate_tag};
use kpbuild_oci::registry_layout::{Digest, Layout, parse_manifest, parse_referrer};

use crate::referrers;

/// A request under `/v2/`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    /// `/v2/`: the API version check.
    Base,
    /// `/v2/_catalog`.
    Catalog,
    /// `/v2/<name>/tags/list`.
    Tags { name: String },
    /// `/v2/<name>/manifests/<reference>` (a tag or a digest).
    Manifest { name: String, reference: String },
    /// `/v2/<name>/blobs/<digest>`.
    Blob { name: String, digest: String },
    /// `/v2/<name>/blobs/uploads/…`: a push.
    Upload { name: String },
    /// `/v2/<name>/referrers/<digest>` (OCI 1.1).
    Referrers { name: String, digest: String },
    /// Anything else under `/v2/`.
    Unknown,
}

/// Parses a decoded request path that starts with `/v2`. `None` when it does not.
pub fn route(path: &str) -> Option<Route> {
    let rest = path.strip_prefix("/v2")?;
    if rest.is_empty() || rest == "/" {
        return Some(Route::Base);
    }
    let rest = rest.strip_prefix('/')?;
    if rest == "_catalog" {
        return Some(Route::Catalog);
    }
    // The name has slashes of its own: the keyword is found from the right.
    let r = if let Some(name) = rest.strip_suffix("/tags/list") {
        Route::Tags { name: name.into() }
    } else if let Some((name, reference)) = rsplit_keyword(rest, "/manifests/") {
        Route::Manifest {
            name,
            reference: reference.into(),
        }
    } else if let Some(i) = rest.find("/blobs/uploads") {
        Route::Upload {
            name: rest[..i].into(),
        }
    } else if let Some((name, digest)) = rsplit_keyword(rest, "/blobs/") {
        Route::Blob {
            name,
            digest: digest.into(),
        }
    } else if let Some((name, digest)) = rsplit_keyword(rest, "/referrers/") {
        Route::Referrers {
            name,
            digest: digest.into(),
        }
    } else {
        Route::Unknown
    };
    Some(r)
}

fn rsplit_keyword<'a>(s: &'a str, kw: &str) -> Option<(String, &'a str)> {
    let i = s.rfind(kw)?;
    let tail = &s[i + kw.len()..];
    (!tail.is_empty() && !tail.contains('/')).then(|| (s[..i].to_string(), tail))
}

/// The codes of the distribution spec's error table that a read-only registry without
/// authentication answers, each with the status it goes with (those Distribution answers).
///
/// The table's other codes are never answered here: `BLOB_UPLOAD_INVALID`,
/// `BLOB_UPLOAD_UNKNOWN`, `MANIFEST_BLOB_UNKNOWN`, `MANIFEST_INVALID` and `SIZE_INVALID`
/// belong to pushes, which are refused whole with `UNSUPPORTED`; `UNAUTHORIZED` and `DENIED`
/// to authentication, which there is none of; `TOOMANYREQUESTS` to rate limits (connections
/// over the limit wait to be accepted instead). Two refusals are not the table's and answer
/// plain text, not its JSON body (which may carry only the table's codes): a route that is
/// not the spec's (404, as Distribution's router answers it) and a blob whose bytes do not
/// hash to its name (500).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorCode {
    /// A blob the repository does not link (or whose data is missing).
    BlobUnknown,
    /// A blob or referrers digest that is not `sha256:<64 lowercase hex>`.
    DigestInvalid,
    /// A manifest the repository does not have, or a reference that is neither a tag nor a
    /// digest (no manifest can have it).
    ManifestUnknown,
    /// A repository name that is not valid.
    NameInvalid,
    /// A repository the tree does not have.
    NameUnknown,
    /// Pushes, deletes, any method but GET and HEAD: the registry is read-only (what
    /// Distribution answers in read-only mode).
    Unsupported,
}

impl ErrorCode {
    /// The HTTP status.
    pub fn status(self) -> u16 {
        match self {
            ErrorCode::BlobUnknown | ErrorCode::ManifestUnknown | ErrorCode::NameUnknown => 404,
            ErrorCode::DigestInvalid | ErrorCode::NameInvalid => 400,
            ErrorCode::Unsupported => 405,
        }
    }

    /// The code string of the error body.
    pub fn code(self) -> &'static str {
        match self {
            ErrorCode::BlobUnknown => "BLOB_UNKNOWN",
            ErrorCode::DigestInvalid => "DIGEST_INVALID",
            ErrorCode::ManifestUnknown => "MANIFEST_UNKNOWN",
            ErrorCode::NameInvalid => "NAME_INVALID",
            ErrorCode::NameUnknown => "NAME_UNKNOWN",
            ErrorCode::Unsupported => "UNSUPPORTED",
        }
    }

    /// The spec's JSON error body: `{"errors":[{"code","message","detail"}]}`.
    pub fn body(self, message: &str, detail: &str) -> String {
        serde_json::json!({"errors": [{"code": self.code(), "message": message, "detail": detail}]})
            .to_string()
    }
}

/// A registry error: its code and a message naming what was asked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegistryError {
    pub code: ErrorCode,
    pub message: String,
}

fn err(code: ErrorCode, message: impl Into<String>) -> RegistryError {
    RegistryError {
        code,
        message: message.into(),
    }
}

/// A manifest as stored: its exact bytes and the media type they declare.
#[derive(Debug, Clone)]
pub struct StoredManifest {
    pub digest: Digest,
    pub media_type: &'static str,
    pub bytes: Arc<[u8]>,
    /// For a referrer (a manifest with a `subject`): that subject, and the descriptor the
    /// referrers API lists the manifest with.
    pub referrer: Option<(Digest, Descriptor)>,
}

#[derive(Debug, Default)]
struct Repo {
    tags: BTreeMap<String, Digest>,
    revisions: BTreeSet<Digest>,
    layers: BTreeSet<Digest>,
    /// Subject → the revisions of this repository that refer to it, in digest order.
    referrers: BTreeMap<Digest, Vec<Digest>>,
}

/// What a manifest reference names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reference<'a> {
    Digest(Digest),
    Tag(&'a str),
    /// Neither a valid tag nor a sha256 digest (`.INVALID_MANIFEST_NAME`, `sha256:zz`): no
    /// manifest can have it, so it is answered as unknown (404 `MANIFEST_UNKNOWN`), not as a
    /// bad request.
    Neither,
}

/// Classifies a manifest reference.
pub fn reference(r: &str) -> Reference<'_> {
    if let Ok(d) = r.parse::<Digest>() {
        Reference::Digest(d)
    } else if validate_tag(r, "tag").is_ok() {
        Reference::Tag(r)
    } else {
        Reference::Neither
    }
}

/// The registry a storage tree holds, read once.
#[derive(Debug)]
pub struct Registry {
    layout: Layout,
    repos: BTreeMap<String, Repo>,
    manifests: HashMap<Digest, StoredManifest>,
}

/// Why a storage tree cannot be served; names the path.
#[derive(Debug, thiserror::Error)]
#[error("{path}: {what}")]
pub struct LoadError {
    pub path: PathBuf,
    pub what: String,
}

fn load_err(path: &Path, what: impl Into<String>) -> LoadError {
    LoadError {
        path: path.to_path_buf(),
        what: what.into(),
    }
}

impl Registry {
    /// Reads the tree under `root` (the directory holding `docker/registry/v2`). A missing
    /// `repositories` directory is an empty registry.
    pub fn load(root: &Path) -> Result<Registry, LoadError> {
        let layout = Layout::new(root);
        let mut reg = Registry {
            layout,
            repos: BTreeMap::new(),
            manifests: HashMap::new(),
        };
        let repos_dir = reg.layout.v2().join("repositories");
        if repos_dir.is_dir() {
            reg.walk(&repos_dir, "")?;
        }
        Ok(reg)
    }

    fn walk(&mut self, dir: &Path, name: &str) -> Result<(), LoadError> {
        let mut entries: Vec<_> = std::fs::read_dir(dir)
            .map_err(|e| load_err(dir, e.to_string()))?
            .filter_map(Result::ok)
            .collect();
        entries.sort_by_key(|e| e.file_name());
        let is_repo = entries
            .iter()
            .any(|e| matches!(e.file_name().to_str(), Some("_manifests" | "_layers")));
        if is_repo {
            validate_repository(name, "repository").map_err(|e| load_err(dir, e.to_string()))?;
            let repo = self.read_repo(dir)?;
            self.repos.insert(name.to_string(), repo);
        }
        for e in entries {
            let n = e.file_name().to_string_lossy().into_owned();
            let is_dir = e.file_type().map(|t| t.is_dir()).unwrap_or(false);
            if is_dir && !n.starts_with('_') {
                let child = if name.is_empty() {
                    n
                } else {
                    format!("{name}/{n}")
                };
                self.walk(&e.path(), &child)?;
            }
        }
        Ok(())
    }

    fn read_repo(&mut self, dir: &Path) -> Result<Repo, LoadError> {
        let mut repo = Repo::default();
        for d in digest_dirs(&dir.join("_layers/sha256"))? {
            repo.layers.insert(read_link(&d)?);
        }
        for d in digest_dirs(&dir.join("_manifests/revisions/sha256"))? {
            let digest = read_link(&d)?;
            self.read_manifest(&digest)?;
            if let Some((subject, _)) = &self.manifests[&digest].referrer {
                repo.referrers
                    .entry(subject.clone())
                    .or_default()
                    .push(digest.clone());
            }
            repo.revisions.insert(digest);
        }
        let tags = dir.join("_manifests/tags");
        if tags.is_dir() {
            for e in std::fs::read_dir(&tags).map_err(|e| load_err(&tags, e.to_string()))? {
                let e = e.map_err(|e| load_err(&tags, e.to_string()))?;
                let tag = e.file_name().to_string_lossy().into_owned();
                validate_tag(&tag, "tag").map_err(|x| load_err(&e.path(), x.to_string()))?;
                let current = e.path().join("current");
                let digest = read_link(&current)?;
                if !repo.revisions.contains(&digest) {
                    return Err(load_err(
                        &current,
                        format!("tag points at {digest}, which has no revision link"),
                    ));
                }
                repo.tags.insert(tag, digest);
            }
        }
        Ok(repo)
    }

    fn read_manifest(&mut self, digest: &Digest) -> Result<(), LoadError> {
        if self.manifests.contains_key(digest) {
            return Ok(());
        }
        let path = self.layout.blob_data(digest);
        let bytes = std::fs::read(&path).map_err(|e| load_err(&path, e.to_string()))?;
        let actual = Digest::of_bytes(&bytes);
        if &actual != digest {
            return Err(load_err(
                &path,
                format!("manifest bytes hash to {actual}, not {digest}; run `kpbuild verify`"),
            ));
        }
        let kind = parse_manifest(None, &bytes)
            .map_err(|e| load_err(&path, e.to_string()))?
            .kind();
        let referrer = parse_referrer(&bytes)
            .map_err(|e| load_err(&path, e.to_string()))?
            .map(|r| {
                let desc = referrers::descriptor(
                    kind.media_type(),
                    digest.clone(),
                    bytes.len() as u64,
                    &r,
                );
                (r.subject, desc)
            });
        self.manifests.insert(
            digest.clone(),
            StoredManifest {
                digest: digest.clone(),
                media_type: kind.media_type(),
                bytes: bytes.into(),
                referrer,
            },
        );
        Ok(())
    }

    /// Repository names, sorted.
    pub fn repositories(&self) -> impl Iterator<Item = &str> {
        self.repos.keys().map(String::as_str)
    }

    /// How many manifests the registry holds.
    pub fn manifest_count(&self) -> usize {
        self.manifests.len()
    }

    /// How many of them are referrers (have a `subject`).
    pub fn referrer_count(&self) -> usize {
        self.manifests
            .values()
            .filter(|m| m.referrer.is_some())
            .count()
    }

    fn repo(&self, name: &str) -> Result<&Repo, RegistryError> {
        if validate_repository(name, "repository").is_err() {
            return Err(err(
                ErrorCode::NameInvalid,
                format!("invalid repository name {name:?}"),
            ));
        }
        self.repos.get(name).ok_or_else(|| {
            err(
                ErrorCode::NameUnknown,
                format!("repository {name} is not in this bundle"),
            )
        })
    }

    /// The tags of a repository, sorted.
    pub fn tags(&self, name: &str) -> Result<Vec<&str>, RegistryError> {
        Ok(self.repo(name)?.tags.keys().map(String::as_str).collect())
    }

    /// A manifest by tag or digest. A reference that is neither cannot name a manifest: it is
    /// unknown like a missing tag.
    pub fn manifest(&self, name: &str, r: &str) -> Result<&StoredManifest, RegistryError> {
        let repo = self.repo(name)?;
        let unknown = |why: &str| {
            err(
                ErrorCode::ManifestUnknown,
                format!("manifest {name}:{r} is not in this bundle{why}"),
            )
        };
        let digest = match reference(r) {
            Reference::Digest(d) if repo.revisions.contains(&d) => d,
            Reference::Tag(t) if repo.tags.contains_key(t) => repo.tags[t].clone(),
            Reference::Digest(_) | Reference::Tag(_) => return Err(unknown("")),
            Reference::Neither => {
                return Err(unknown(
                    " (the reference is neither a tag nor a sha256 digest)",
                ));
            }
        };
        self.manifests.get(&digest).ok_or_else(|| unknown(""))
    }

    /// The referrers API: the descriptors of the manifests of repository `name` whose
    /// `subject` is `digest`, in digest order; none when nothing refers to it (the digest need
    /// not name a manifest here).
    pub fn referrers(&self, name: &str, digest: &str) -> Result<Vec<&Descriptor>, RegistryError> {
        let repo = self.repo(name)?;
        let d = digest_of(digest)?;
        Ok(repo
            .referrers
            .get(&d)
            .into_iter()
            .flatten()
            .filter_map(|m| self.manifests.get(m)?.referrer.as_ref())
            .map(|(_, desc)| desc)
            .collect())
    }

    /// The `data` file of a blob the repository links.
    pub fn blob(&self, name: &str, digest: &str) -> Result<(Digest, PathBuf), RegistryError> {
        let repo = self.repo(name)?;
        let d = digest_of(digest)?;
        if !(repo.layers.contains(&d) || repo.revisions.contains(&d)) {
            return Err(err(
                ErrorCode::BlobUnknown,
                format!("blob {d} is not linked in repository {name}"),
            ));
        }
        let path = self.layout.blob_data(&d);
        Ok((d, path))
    }
}

/// A blob or referrers digest: `sha256:<64 lowercase hex>`, else 400 `DIGEST_INVALID`.
fn digest_of(digest: &str) -> Result<Digest, RegistryError> {
    digest
        .parse()
        .map_err(|e: kpbuild_oci::registry_layout::DigestError| {
            err(ErrorCode::DigestInvalid, e.to_string())
        })
}

/// One page of a sorted list (`n`, `last` of the spec's pagination): the items after `last`,
/// at most `n` of them, and whether more follow.
pub fn page<'a>(items: &[&'a str], n: Option<usize>, last: Option<&str>) -> (Vec<&'a str>, bool) {
    let start = match last {
        Some(l) => items.partition_point(|x| *x <= l),
        None => 0,
    };
    let rest = &items[start..];
    match n {
        Some(n) if n < rest.len() => (rest[..n].to_vec(), true),
        _ => (rest.to_vec(), false),
    }
}

fn digest_dirs(dir: &Path) -> Result<Vec<PathBuf>, LoadError> {
    if !dir.is_dir() {
        return Ok(vec![]);
    }
    let mut out: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|e| load_err(dir, e.to_string()))?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .collect();
    out.sort();
    Ok(out)
}

fn read_link(dir: &Path) -> Result<Digest, LoadError> {
    let p = dir.join("link");
    let text = std::fs::read_to_string(&p).map_err(|e| load_err(&p, e.to_string()))?;
    text.parse()
        .map_err(|e: kpbuild_oci::registry_layout::DigestError| load_err(&p, e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes() {
        assert_eq!(route("/v2/"), Some(Route::Base));
        assert_eq!(route("/v2"), Some(Route::Base));
        assert_eq!(route("/v2/_catalog"), Some(Route::Catalog));
        assert_eq!(route("/v3/"), None);
        assert_eq!(route("/files/x"), None);
        assert_eq!(
            route("/v2/library/calico-node/tags/list"),
            Some(Route::Tags {
                name: "library/calico-node".into()
            })
        );
        assert_eq!(
            route("/v2/a/manifests/b/manifests/v1"),
            Some(Route::Manifest {
                name: "a/manifests/b".into(),
                reference: "v1".into()
            })
        );
        assert_eq!(
            route("/v2/a/blobs/sha256:00"),
            Some(Route::Blob {
                name: "a".into(),
                digest: "sha256:00".into()
            })
        );
        assert_eq!(
            route("/v2/a/b/blobs/uploads/"),
            Some(Route::Upload { name: "a/b".into() })
        );
        assert_eq!(
            route("/v2/a/b/referrers/sha256:00"),
            Some(Route::Referrers {
                name: "a/b".into(),
                digest: "sha256:00".into()
            })
        );
        // The keyword nearest the end decides: a repository may be named `referrers`.
        assert_eq!(
            route("/v2/a/referrers/manifests/v1"),
            Some(Route::Manifest {
                name: "a/referrers".into(),
                reference: "v1".into()
            })
        );
        assert_eq!(route("/v2/a/referrers/"), Some(Route::Unknown));
        assert_eq!(route("/v2/a/manifests/"), Some(Route::Unknown));
        assert_eq!(route("/v2/a/x"), Some(Route::Unknown));
    }

    /// Every code answered, with its status: each one of the spec's error table, with the
    /// status Distribution answers it with.
    const ANSWERED: [(ErrorCode, &str, u16); 6] = [
        (ErrorCode::BlobUnknown, "BLOB_UNKNOWN", 404),
        (ErrorCode::DigestInvalid, "DIGEST_INVALID", 400),
        (ErrorCode::ManifestUnknown, "MANIFEST_UNKNOWN", 404),
        (ErrorCode::NameInvalid, "NAME_INVALID", 400),
        (ErrorCode::NameUnknown, "NAME_UNKNOWN", 404),
        (ErrorCode::Unsupported, "UNSUPPORTED", 405),
    ];

    /// The distribution spec's error table (code-1 to code-14).
    const SPEC_TABLE: [&str; 14] = [
        "BLOB_UNKNOWN",
        "BLOB_UPLOAD_INVALID",
        "BLOB_UPLOAD_UNKNOWN",
        "DIGEST_INVALID",
        "MANIFEST_BLOB_UNKNOWN",
        "MANIFEST_INVALID",
        "MANIFEST_UNKNOWN",
        "NAME_INVALID",
        "NAME_UNKNOWN",
        "SIZE_INVALID",
        "UNAUTHORIZED",
        "DENIED",
        "UNSUPPORTED",
        "TOOMANYREQUESTS",
    ];

    #[test]
    fn every_code_is_the_spec_tables_with_its_status() {
        for (code, text, status) in ANSWERED {
            // The match makes a new variant fail to compile until it is in ANSWERED.
            match code {
                ErrorCode::BlobUnknown
                | ErrorCode::DigestInvalid
                | ErrorCode::ManifestUnknown
                | ErrorCode::NameInvalid
                | ErrorCode::NameUnknown
                | ErrorCode::Unsupported => {}
            }
            assert_eq!((code.code(), code.status()), (text, status));
            assert!(SPEC_TABLE.contains(&code.code()), "{text}");
            let v: serde_json::Value = serde_json::from_str(&code.body("what", "")).unwrap();
            assert_eq!(v["errors"][0]["code"], text);
            assert_eq!(v["errors"][0]["message"], "what");
        }
    }

    #[test]
    fn references_are_digests_tags_or_neither() {
        let d = Digest::of_bytes(b"x");
        assert_eq!(reference(&d.to_string()), Reference::Digest(d));
        assert_eq!(reference("v1.2_x-y"), Reference::Tag("v1.2_x-y"));
        let long = "t".repeat(129);
        for neither in [
            ".INVALID_MANIFEST_NAME",
            "-x",
            "sha256:zz",
            "sha512:00",
            "a:b",
            "",
            long.as_str(),
        ] {
            assert_eq!(reference(neither), Reference::Neither, "{neither}");
        }
    }

    #[test]
    fn pages() {
        let items = ["a", "b", "c", "d"];
        assert_eq!(page(&items, None, None), (vec!["a", "b", "c", "d"], false));
        assert_eq!(page(&items, Some(2), None), (vec!["a", "b"], true));
        assert_eq!(page(&items, Some(2), Some("b")), (vec!["c", "d"], false));
        assert_eq!(page(&items, Some(5), Some("bb")), (vec!["c", "d"], false));
        assert_eq!(page(&items, Some(0), None), (vec![], true));
    }

    fn put(p: &Path, bytes: &[u8]) {
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, bytes).unwrap();
    }

    /// A tree with one image `lib/app:v1` (a manifest, its config and one layer) and a blob
    /// linked nowhere.
    fn tree() -> (tempfile::TempDir, Digest, Digest, Digest) {
        let d = tempfile::tempdir().unwrap();
        let l = Layout::new(d.path());
        let config = b"{}".to_vec();
        let layer = b"layer".to_vec();
        let (cd, ld) = (Digest::of_bytes(&config), Digest::of_bytes(&layer));
        let manifest = serde_json::json!({
            "schemaVersion": 2,
            "mediaType": kpbuild_oci::media_type::OCI_MANIFEST,
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": cd.to_string(), "size": 2},
            "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": ld.to_string(), "size": 5}],
        })
        .to_string()
        .into_bytes();
        let md = Digest::of_bytes(&manifest);
        for (dg, b) in [(&cd, &config), (&ld, &layer), (&md, &manifest)] {
            put(&l.blob_data(dg), b);
        }
        put(&l.blob_data(&Digest::of_bytes(b"stray")), b"stray");
        put(&l.revision_link("lib/app", &md), md.to_string().as_bytes());
        put(
            &l.tag_current_link("lib/app", "v1"),
            md.to_string().as_bytes(),
        );
        put(&l.layer_link("lib/app", &cd), cd.to_string().as_bytes());
        put(&l.layer_link("lib/app", &ld), ld.to_string().as_bytes());
        (d, md, cd, ld)
    }

    #[test]
    fn a_tree_is_served_as_it_links() {
        let (d, md, _cd, ld) = tree();
        let r = Registry::load(d.path()).unwrap();
        assert_eq!(r.repositories().collect::<Vec<_>>(), ["lib/app"]);
        assert_eq!(r.tags("lib/app").unwrap(), ["v1"]);
        let m = r.manifest("lib/app", "v1").unwrap();
        assert_eq!(m.digest, md);
        assert_eq!(m.media_type, kpbuild_oci::media_type::OCI_MANIFEST);
        assert_eq!(Digest::of_bytes(&m.bytes), md);
        assert_eq!(r.manifest("lib/app", &md.to_string()).unwrap().digest, md);
        assert_eq!(r.blob("lib/app", &ld.to_string()).unwrap().0, ld);
        let code = |e: RegistryError| e.code;
        assert_eq!(
            code(r.manifest("lib/app", "v2").unwrap_err()),
            ErrorCode::ManifestUnknown
        );
        assert_eq!(
            code(r.manifest("lib/other", "v1").unwrap_err()),
            ErrorCode::NameUnknown
        );
        assert_eq!(
            code(r.manifest("Lib/App", "v1").unwrap_err()),
            ErrorCode::NameInvalid
        );
        // Neither a tag nor a digest: unknown, as a missing tag is.
        for neither in ["sha256:zz", "-x", ".INVALID_MANIFEST_NAME"] {
            let e = r.manifest("lib/app", neither).unwrap_err();
            assert_eq!(e.code, ErrorCode::ManifestUnknown, "{neither}");
            assert!(e.message.contains("neither a tag nor"), "{}", e.message);
        }
        let missing = Digest::of_bytes(b"missing").to_string();
        assert_eq!(
            code(r.manifest("lib/app", &missing).unwrap_err()),
            ErrorCode::ManifestUnknown
        );
        let stray = Digest::of_bytes(b"stray").to_string();
        assert_eq!(
            code(r.blob("lib/app", &stray).unwrap_err()),
            ErrorCode::BlobUnknown
        );
        assert_eq!(
            code(r.blob("lib/app", "md5:00").unwrap_err()),
            ErrorCode::DigestInvalid
        );
    }

    /// Stores `doc` as a manifest revision of `name`; its digest.
    fn put_manifest(root: &Path, name: &str, doc: serde_json::Value) -> Digest {
        let l = Layout::new(root);
        let bytes = doc.to_string().into_bytes();
        let d = Digest::of_bytes(&bytes);
        put(&l.blob_data(&d), &bytes);
        put(&l.revision_link(name, &d), d.to_string().as_bytes());
        d
    }

    #[test]
    fn referrers_are_indexed_per_repository_and_subject_when_loaded() {
        use kpbuild_oci::media_type::{OCI_INDEX, OCI_MANIFEST};
        let (d, md, cd, _) = tree();
        let subject =
            serde_json::json!({"mediaType": OCI_MANIFEST, "digest": md.to_string(), "size": 1});
        let config =
            |mt: &str| serde_json::json!({"mediaType": mt, "digest": cd.to_string(), "size": 2});
        let sig = put_manifest(
            d.path(),
            "lib/app",
            serde_json::json!({"schemaVersion": 2, "mediaType": OCI_MANIFEST,
                "artifactType": "application/vnd.example.sig",
                "config": config("application/vnd.oci.empty.v1+json"), "layers": [],
                "subject": subject, "annotations": {"org.example.b": "2", "org.example.a": "1"}}),
        );
        let sbom = put_manifest(
            d.path(),
            "lib/app",
            serde_json::json!({"schemaVersion": 2, "mediaType": OCI_MANIFEST,
                "config": config("application/vnd.example.sbom.config"), "layers": [],
                "subject": subject}),
        );
        let idx = put_manifest(
            d.path(),
            "lib/app",
            serde_json::json!({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": [],
                "subject": subject}),
        );
        // Another repository's referrer of the same digest, and one of another subject.
        let elsewhere = put_manifest(
            d.path(),
            "lib/other",
            serde_json::json!({"schemaVersion": 2, "mediaType": OCI_MANIFEST,
                "artifactType": "application/vnd.example.sig",
                "config": config("application/vnd.oci.empty.v1+json"), "layers": [],
                "subject": subject, "annotations": {"where": "other"}}),
        );
        put(
            &Layout::new(d.path()).layer_link("lib/other", &cd),
            cd.to_string().as_bytes(),
        );
        let of_sig = put_manifest(
            d.path(),
            "lib/app",
            serde_json::json!({"schemaVersion": 2, "mediaType": OCI_MANIFEST,
                "artifactType": "application/vnd.example.att",
                "config": config("application/vnd.oci.empty.v1+json"), "layers": [],
                "subject": {"mediaType": OCI_MANIFEST, "digest": sig.to_string(), "size": 1}}),
        );

        let r = Registry::load(d.path()).unwrap();
        assert_eq!(r.referrer_count(), 5);
        let list = r.referrers("lib/app", &md.to_string()).unwrap();
        let mut want = vec![sig.clone(), sbom.clone(), idx.clone()];
        want.sort();
        assert_eq!(
            list.iter().map(|x| x.digest.clone()).collect::<Vec<_>>(),
            want
        );
        let by = |dg: &Digest| list.iter().find(|x| &x.digest == dg).unwrap();
        assert_eq!(
            by(&sig).artifact_type.as_deref(),
            Some("application/vnd.example.sig")
        );
        assert_eq!(
            by(&sig).annotations.keys().collect::<Vec<_>>(),
            ["org.example.b", "org.example.a"]
        );
        assert_eq!(by(&sig).media_type, OCI_MANIFEST);
        assert_eq!(
            by(&sbom).artifact_type.as_deref(),
            Some("application/vnd.example.sbom.config")
        );
        assert_eq!(
            (by(&idx).media_type, by(&idx).artifact_type.as_deref()),
            (OCI_INDEX, None)
        );
        let stored = r.manifest("lib/app", &sig.to_string()).unwrap();
        assert_eq!(by(&sig).size, stored.bytes.len() as u64);

        let other = r.referrers("lib/other", &md.to_string()).unwrap();
        assert_eq!(other.len(), 1);
        assert_eq!(other[0].digest, elsewhere);
        let chained = r.referrers("lib/app", &sig.to_string()).unwrap();
        assert_eq!(chained.len(), 1);
        assert_eq!(chained[0].digest, of_sig);
        // A digest nothing refers to, or that names nothing here: an empty list.
        assert!(
            r.referrers("lib/app", &of_sig.to_string())
                .unwrap()
                .is_empty()
        );
        let nothing = Digest::of_bytes(b"nothing").to_string();
        assert!(r.referrers("lib/app", &nothing).unwrap().is_empty());
        let md = md.to_string();
        for (name, digest, want) in [
            ("lib/app", "sha256:zz", ErrorCode::DigestInvalid),
            ("lib/app", "v1", ErrorCode::DigestInvalid),
            ("lib/nope", md.as_str(), ErrorCode::NameUnknown),
            ("Lib/App", md.as_str(), ErrorCode::NameInvalid),
        ] {
            let e = r.referrers(name, digest).unwrap_err();
            assert_eq!(e.code, want, "{name} {digest}");
        }
    }

    #[test]
    fn a_referrer_with_a_malformed_subject_stops_the_load() {
        let (d, _, _, _) = tree();
        let bad = put_manifest(
            d.path(),
            "lib/app",
            serde_json::json!({"schemaVersion": 2, "manifests": [],
                "subject": {"digest": "sha256:zz", "size": 1}}),
        );
        let e = Registry::load(d.path()).unwrap_err().to_string();
        assert!(e.contains(bad.hex()) && e.contains("subject"), "{e}");
    }

    #[test]
    fn a_manifest_that_does_not_hash_to_its_name_stops_the_load() {
        let (d, md, _, _) = tree();
        let p = Layout::new(d.path()).blob_data(&md);
        let mut b = std::fs::read(&p).unwrap();
        b.push(b' ');
        std::fs::write(&p, b).unwrap();
        let e = Registry::load(d.path()).unwrap_err().to_string();
        assert!(e.contains(md.hex()) && e.contains("kpbuild verify"), "{e}");
    }
}
