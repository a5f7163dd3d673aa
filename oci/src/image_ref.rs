//! Image references and the names images are stored under.
//!
//! - [`ImageRef::parse`] follows Docker's normalization: `nginx` is
//!   `docker.io/library/nginx:latest`; the first path component is a registry host when it
//!   holds a `.` or a `:`, is `localhost`, or has upper-case letters; a reference carries a
//!   tag, a `@sha256:` digest, or both.
//! - Stored names: by default the source path without the registry host
//!   (`quay.io/calico/node:v3` → `calico/node:v3`, kubespray's offline convention), or what a
//!   kubeplay `images_origin.yaml` map says ([`NameMap`]); two sources stored under one name is
//!   an error ([`check_collisions`]).
//! - Mirrors ([`Mirror`]): `quay.io=127.0.0.1:5000/quay.io` fetches `quay.io/x` from
//!   `127.0.0.1:5000/quay.io/x`; the stored name stays the upstream one.
//!
//! Every name that becomes a path is validated: no `..`, no empty or absolute components.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use serde::Deserialize;

use crate::registry_layout::{Digest, DigestError};

/// Docker Hub's canonical registry name.
pub const DOCKER_HUB: &str = "docker.io";
const MAX_NAME_LEN: usize = 255;
const MAX_TAG_LEN: usize = 128;

/// A normalized image reference.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ImageRef {
    /// Registry host, with port when given (`docker.io`, `quay.io`, `127.0.0.1:5000`).
    pub registry: String,
    /// Repository path inside the registry (`library/nginx`, `calico/node`).
    pub repository: String,
    /// The tag; `latest` when the reference has neither tag nor digest.
    pub tag: Option<String>,
    /// The pinned digest, if any. When both tag and digest are given the digest is fetched
    /// and the tag is written pointing at it.
    pub digest: Option<Digest>,
}

/// An invalid image reference: which one, and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid image reference {reference:?}: {kind}")]
pub struct RefError {
    pub reference: String,
    pub kind: RefErrorKind,
}

/// What is wrong with a reference or name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RefErrorKind {
    #[error("it is empty")]
    Empty,
    #[error("it has leading or trailing whitespace")]
    Whitespace,
    #[error("{0}")]
    Digest(DigestError),
    #[error(
        "tag {0:?} is invalid (1 to 128 of letters, digits, '_', '.', '-', not starting with '.' or '-')"
    )]
    Tag(String),
    #[error("registry host {0:?} is invalid (expected host[:port])")]
    Registry(String),
    #[error(
        "path component {0:?} is invalid (lower-case letters and digits, separated by '.', '_', '__' or '-'; no empty, '.' or '..' components)"
    )]
    Component(String),
    #[error("repository names must be lower-case")]
    Uppercase,
    #[error("name is {0} characters long, the limit is 255")]
    TooLong(usize),
}

fn err(reference: &str, kind: RefErrorKind) -> RefError {
    RefError {
        reference: reference.to_string(),
        kind,
    }
}

/// Checks one path component against Docker's grammar:
/// `[a-z0-9]+(?:(?:[._]|__|[-]+)[a-z0-9]+)*`. This also rejects `.`, `..` and empty components.
fn valid_component(c: &str) -> bool {
    let b = c.as_bytes();
    let alnum = |x: u8| x.is_ascii_lowercase() || x.is_ascii_digit();
    if b.is_empty() || !alnum(b[0]) || !alnum(b[b.len() - 1]) {
        return false;
    }
    let mut i = 0;
    while i < b.len() {
        if alnum(b[i]) {
            i += 1;
            continue;
        }
        // A separator run: '.', '_', '__', or one or more '-'.
        let start = i;
        while i < b.len() && !alnum(b[i]) {
            i += 1;
        }
        let sep = &c[start..i];
        let ok = sep == "." || sep == "_" || sep == "__" || sep.bytes().all(|x| x == b'-');
        if !ok {
            return false;
        }
    }
    true
}

/// Validates a repository path (`calico/node`, `a/b/c`): the name images are stored under
/// and the directory it becomes. `what` is the text errors quote.
pub fn validate_repository(path: &str, what: &str) -> Result<(), RefError> {
    if path.is_empty() {
        return Err(err(what, RefErrorKind::Empty));
    }
    if path.len() > MAX_NAME_LEN {
        return Err(err(what, RefErrorKind::TooLong(path.len())));
    }
    for c in path.split('/') {
        if !valid_component(c) {
            if c.bytes().any(|b| b.is_ascii_uppercase()) && valid_component(&c.to_lowercase()) {
                return Err(err(what, RefErrorKind::Uppercase));
            }
            return Err(err(what, RefErrorKind::Component(c.to_string())));
        }
    }
    Ok(())
}

/// Validates a tag: `[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}`.
pub fn validate_tag(tag: &str, what: &str) -> Result<(), RefError> {
    let b = tag.as_bytes();
    let word = |x: u8| x.is_ascii_alphanumeric() || x == b'_';
    let ok = !b.is_empty()
        && b.len() <= MAX_TAG_LEN
        && word(b[0])
        && b.iter().all(|&x| word(x) || x == b'.' || x == b'-');
    if ok {
        Ok(())
    } else {
        Err(err(what, RefErrorKind::Tag(tag.to_string())))
    }
}

fn valid_registry(host: &str) -> bool {
    let (h, port) = if let Some(rest) = host.strip_prefix('[') {
        // [ipv6]:port
        let Some((addr, after)) = rest.split_once(']') else {
            return false;
        };
        if addr.is_empty() || !addr.bytes().all(|b| b.is_ascii_hexdigit() || b == b':') {
            return false;
        }
        match after {
            "" => return true,
            p => match p.strip_prefix(':') {
                Some(p) => ("x", Some(p)),
                None => return false,
            },
        }
    } else {
        match host.rsplit_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (host, None),
        }
    };
    let bad_port = |p: &str| p.is_empty() || p.len() > 5 || !p.bytes().all(|b| b.is_ascii_digit());
    if port.is_some_and(bad_port) {
        return false;
    }
    !h.is_empty()
        && h.split('.').all(|label| {
            let b = label.as_bytes();
            !b.is_empty()
                && b[0].is_ascii_alphanumeric()
                && b[b.len() - 1].is_ascii_alphanumeric()
                && b.iter().all(|&x| x.is_ascii_alphanumeric() || x == b'-')
        })
}

/// Normalizes a registry name the way Docker does (`index.docker.io` → `docker.io`).
pub(crate) fn normalize_registry(host: &str) -> String {
    match host {
        "index.docker.io" | "registry-1.docker.io" => DOCKER_HUB.to_string(),
        h => h.to_string(),
    }
}

/// Whether the first path component names a registry host.
fn is_registry_component(c: &str) -> bool {
    c.contains('.')
        || c.contains(':')
        || c == "localhost"
        || c.bytes().any(|b| b.is_ascii_uppercase())
}

/// Splits `name` (no tag, no digest) into a normalized registry and repository path.
fn split_registry(reference: &str, name: &str) -> Result<(String, String), RefError> {
    let (registry, path) = match name.split_once('/') {
        Some((first, rest)) if is_registry_component(first) => {
            if !valid_registry(first) {
                return Err(err(reference, RefErrorKind::Registry(first.to_string())));
            }
            (normalize_registry(first), rest.to_string())
        }
        _ => (DOCKER_HUB.to_string(), name.to_string()),
    };
    let path = if registry == DOCKER_HUB && !path.contains('/') {
        format!("library/{path}")
    } else {
        path
    };
    validate_repository(&path, reference)?;
    let full = registry.len() + 1 + path.len();
    if full > MAX_NAME_LEN {
        return Err(err(reference, RefErrorKind::TooLong(full)));
    }
    Ok((registry, path))
}

/// Normalizes a repository without tag or digest (`nginx` → `docker.io/library/nginx`),
/// as used for the `src` of a map entry or mirror.
pub(crate) fn normalize_repository(s: &str) -> Result<(String, String), RefError> {
    if s.is_empty() {
        return Err(err(s, RefErrorKind::Empty));
    }
    if s.trim() != s {
        return Err(err(s, RefErrorKind::Whitespace));
    }
    split_registry(s, s)
}

impl ImageRef {
    /// Parses and normalizes a reference such as `nginx`, `quay.io/calico/node:v3.27`,
    /// `127.0.0.1:5000/a/b/c@sha256:…` or `name:tag@sha256:…`.
    pub fn parse(s: &str) -> Result<ImageRef, RefError> {
        if s.is_empty() {
            return Err(err(s, RefErrorKind::Empty));
        }
        if s.trim() != s {
            return Err(err(s, RefErrorKind::Whitespace));
        }
        let (rest, digest) = match s.split_once('@') {
            Some((rest, d)) => (
                rest,
                Some(
                    d.parse::<Digest>()
                        .map_err(|e| err(s, RefErrorKind::Digest(e)))?,
                ),
            ),
            None => (s, None),
        };
        let last_slash = rest.rfind('/').map(|i| i + 1).unwrap_or(0);
        let (name, tag) = match rest[last_slash..].rfind(':') {
            Some(i) => {
                let i = last_slash + i;
                let tag = &rest[i + 1..];
                validate_tag(tag, s)?;
                (&rest[..i], Some(tag.to_string()))
            }
            None => (rest, None),
        };
        if name.is_empty() {
            return Err(err(s, RefErrorKind::Component(String::new())));
        }
        let (registry, repository) = split_registry(s, name)?;
        let tag = match (&tag, &digest) {
            (None, None) => Some("latest".to_string()),
            _ => tag,
        };
        Ok(ImageRef {
            registry,
            repository,
            tag,
            digest,
        })
    }

    /// `registry/repository`: the source repository, the identity collisions are checked on.
    pub fn source_repository(&self) -> String {
        format!("{}/{}", self.registry, self.repository)
    }

    /// This reference pinned to `digest`, keeping its tag (`repo:tag@digest`): what an op
    /// fetches once a tag was resolved.
    pub fn pinned(&self, digest: &Digest) -> ImageRef {
        ImageRef {
            digest: Some(digest.clone()),
            ..self.clone()
        }
    }

    /// The reference without its digest (`repo:tag`, or `repo:latest` when it had neither).
    pub fn unpinned(&self) -> ImageRef {
        ImageRef {
            tag: Some(self.tag.clone().unwrap_or_else(|| "latest".into())),
            digest: None,
            ..self.clone()
        }
    }

    /// What to ask the registry's manifest endpoint for: the digest when pinned, else the tag.
    pub fn manifest_reference(&self) -> String {
        match (&self.digest, &self.tag) {
            (Some(d), _) => d.to_string(),
            (None, Some(t)) => t.clone(),
            (None, None) => "latest".to_string(),
        }
    }
}

impl FromStr for ImageRef {
    type Err = RefError;
    fn from_str(s: &str) -> Result<ImageRef, RefError> {
        ImageRef::parse(s)
    }
}

impl fmt::Display for ImageRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.registry, self.repository)?;
        if let Some(t) = &self.tag {
            write!(f, ":{t}")?;
        }
        if let Some(d) = &self.digest {
            write!(f, "@{d}")?;
        }
        Ok(())
    }
}

crate::serde_via_str!(ImageRef);

/// One entry of kubeplay's `images_origin.yaml`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawMapEntry {
    src: String,
    dest: String,
}

/// A name map in kubeplay's `images_origin.yaml` form:
///
/// ```yaml
/// - src: quay.io/calico/node
///   dest: library/calico-node
/// ```
///
/// `src` is a repository (normalized, so `nginx` means `docker.io/library/nginx`), `dest` the
/// stored repository name. Tags are kept as they are.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NameMap {
    /// normalized `registry/repository` → stored name
    entries: BTreeMap<String, String>,
}

/// Why a name map cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MapError {
    #[error("{file}: not a list of {{src, dest}} entries: {message}")]
    Yaml { file: String, message: String },
    #[error("{file}: entry {index}: {field} {value:?} is not a valid repository name: {reason}")]
    BadName {
        file: String,
        index: usize,
        field: &'static str,
        value: String,
        reason: RefErrorKind,
    },
    #[error(
        "{file}: entry {index}: {what} {value:?} must name a repository without a tag or digest"
    )]
    HasTag {
        file: String,
        index: usize,
        what: &'static str,
        value: String,
    },
    #[error("{file}: {src:?} is mapped twice, to {first:?} and to {second:?}")]
    DuplicateSource {
        file: String,
        src: String,
        first: String,
        second: String,
    },
    #[error(transparent)]
    Collision(#[from] CollisionError),
}

impl NameMap {
    /// Parses `images_origin.yaml` text; `file` names it in errors.
    pub fn parse(file: &str, text: &str) -> Result<NameMap, MapError> {
        let raw: Vec<RawMapEntry> = if text.trim().is_empty() {
            Vec::new()
        } else {
            serde_saphyr::from_str(text).map_err(|e| MapError::Yaml {
                file: file.to_string(),
                message: e.to_string(),
            })?
        };
        let mut entries: BTreeMap<String, String> = BTreeMap::new();
        let mut by_dest: BTreeMap<String, String> = BTreeMap::new();
        for (i, e) in raw.iter().enumerate() {
            let index = i + 1;
            let bad = |field: &'static str, value: &str| {
                let file = file.to_string();
                let value = value.to_string();
                move |e: RefError| MapError::BadName {
                    file,
                    index,
                    field,
                    value,
                    reason: e.kind,
                }
            };
            if e.src.contains('@') || e.src.rsplit('/').next().is_some_and(|l| l.contains(':')) {
                return Err(MapError::HasTag {
                    file: file.to_string(),
                    index,
                    what: "src",
                    value: e.src.clone(),
                });
            }
            if e.dest.contains('@') || e.dest.contains(':') {
                return Err(MapError::HasTag {
                    file: file.to_string(),
                    index,
                    what: "dest",
                    value: e.dest.clone(),
                });
            }
            let (reg, path) = normalize_repository(&e.src).map_err(bad("src", &e.src))?;
            validate_repository(&e.dest, &e.dest).map_err(bad("dest", &e.dest))?;
            let src = format!("{reg}/{path}");
            if let Some(prev) = entries.get(&src) {
                if *prev != e.dest {
                    return Err(MapError::DuplicateSource {
                        file: file.to_string(),
                        src,
                        first: prev.clone(),
                        second: e.dest.clone(),
                    });
                }
                continue;
            }
            if let Some(other) = by_dest.get(&e.dest) {
                return Err(MapError::Collision(CollisionError {
                    name: e.dest.clone(),
                    first: other.clone(),
                    second: src,
                    origin: Some(file.to_string()),
                }));
            }
            by_dest.insert(e.dest.clone(), src.clone());
            entries.insert(src, e.dest.clone());
        }
        Ok(NameMap { entries })
    }

    /// The mapped name of a normalized `registry/repository`, if the map has one.
    pub fn get(&self, source_repository: &str) -> Option<&str> {
        self.entries.get(source_repository).map(String::as_str)
    }

    /// A map of one source repository (`registry/repository`) to its stored name.
    pub fn single(source_repository: &str, stored: &str) -> NameMap {
        NameMap {
            entries: BTreeMap::from([(source_repository.to_string(), stored.to_string())]),
        }
    }

    /// Number of entries.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether the map has no entries.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

/// The repository name an image is stored under: the map's `dest` when the map names its
/// source repository, else the source path without the registry host.
pub fn stored_repository(r: &ImageRef, map: Option<&NameMap>) -> String {
    map.and_then(|m| m.get(&r.source_repository()))
        .map(str::to_string)
        .unwrap_or_else(|| r.repository.clone())
}

/// Two different source repositories would be stored under one name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "name collision{}: {first} and {second} would both be stored as {name:?}; map one of them to another name (--map)",
    origin.as_ref().map(|o| format!(" in {o}")).unwrap_or_default()
)]
pub struct CollisionError {
    pub name: String,
    pub first: String,
    pub second: String,
    pub origin: Option<String>,
}

/// Checks that no two different source repositories are stored under the same name.
/// Takes `(source, stored name)` pairs, such as `(r, stored_repository(r, map))`.
pub fn check_collisions<'a>(
    pairs: impl IntoIterator<Item = (&'a ImageRef, &'a str)>,
) -> Result<(), CollisionError> {
    let mut seen: BTreeMap<&str, String> = BTreeMap::new();
    for (r, name) in pairs {
        let src = r.source_repository();
        match seen.get(name) {
            Some(first) if *first != src => {
                return Err(CollisionError {
                    name: name.to_string(),
                    first: first.clone(),
                    second: src,
                    origin: None,
                });
            }
            Some(_) => {}
            None => {
                seen.insert(name, src);
            }
        }
    }
    Ok(())
}

/// A mirror rule: fetch images of `source` registry from `registry`/`prefix` instead.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mirror {
    /// The upstream registry this rule applies to (normalized: `docker.io`, `quay.io`).
    pub source: String,
    /// The registry to fetch from.
    pub registry: String,
    /// A path prefix in the mirror (`quay.io` in `127.0.0.1:5000/quay.io`), or empty.
    pub prefix: String,
}

impl fmt::Display for Mirror {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}={}", self.source, self.registry)?;
        if !self.prefix.is_empty() {
            write!(f, "/{}", self.prefix)?;
        }
        Ok(())
    }
}

crate::serde_via_str!(Mirror);

/// Why a `--mirror SRC=DST` rule is malformed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "invalid mirror {rule:?}: {reason} (expected SRC=DST, such as quay.io=127.0.0.1:5000/quay.io)"
)]
pub struct MirrorError {
    pub rule: String,
    pub reason: String,
}

impl FromStr for Mirror {
    type Err = MirrorError;
    fn from_str(s: &str) -> Result<Mirror, MirrorError> {
        let fail = |reason: &str| MirrorError {
            rule: s.to_string(),
            reason: reason.to_string(),
        };
        let (src, dst) = s.split_once('=').ok_or_else(|| fail("no '='"))?;
        if !valid_registry(src) {
            return Err(fail("SRC is not a registry host"));
        }
        let dst = dst.trim_end_matches('/');
        let (registry, prefix) = match dst.split_once('/') {
            Some((r, p)) => (r, p),
            None => (dst, ""),
        };
        if !valid_registry(registry) {
            return Err(fail("DST does not start with a registry host"));
        }
        if !prefix.is_empty() {
            validate_repository(prefix, prefix).map_err(|e| fail(&e.kind.to_string()))?;
        }
        Ok(Mirror {
            source: normalize_registry(src),
            registry: registry.to_string(),
            prefix: prefix.to_string(),
        })
    }
}

/// Where to fetch an image from: registry host and repository path there.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct FetchLocation {
    pub registry: String,
    pub repository: String,
}

impl fmt::Display for FetchLocation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.registry, self.repository)
    }
}

impl FetchLocation {
    /// Whether the registry is on this machine (`127.0.0.0/8`, `localhost`, `[::1]`): an op
    /// fetching from it needs the host's network. The one place kpbuild decides that.
    pub fn needs_host_network(&self) -> bool {
        is_loopback_registry(&self.registry)
    }
}

impl FromStr for FetchLocation {
    type Err = RefError;
    fn from_str(s: &str) -> Result<FetchLocation, RefError> {
        match s.split_once('/') {
            Some((registry, repository)) if !registry.is_empty() && !repository.is_empty() => {
                Ok(FetchLocation {
                    registry: registry.to_string(),
                    repository: repository.to_string(),
                })
            }
            _ => Err(err(s, RefErrorKind::Component(s.to_string()))),
        }
    }
}

crate::serde_via_str!(FetchLocation);

/// Whether a registry host (with optional port) is on this machine.
pub fn is_loopback_registry(host: &str) -> bool {
    let h = host
        .rsplit_once(':')
        .map(|(h, p)| {
            if p.chars().all(|c| c.is_ascii_digit()) {
                h
            } else {
                host
            }
        })
        .unwrap_or(host);
    let h = h.trim_start_matches('[').trim_end_matches(']');
    h == "localhost" || h == "::1" || h.starts_with("127.")
}

/// The name an image is stored under in the bundle's registry: the stored repository and the
/// tag (or, for a reference pinned by digest alone, the digest). Written `repo:tag` or
/// `repo@digest`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct StoredRef {
    pub repository: String,
    /// The tag, or `None` when only a digest names the image.
    pub tag: Option<String>,
    pub digest: Option<Digest>,
}

impl StoredRef {
    /// `r` stored under `repository` (see [`stored_repository`]).
    pub fn new(r: &ImageRef, repository: String) -> StoredRef {
        match (&r.tag, &r.digest) {
            (None, Some(d)) => StoredRef {
                repository,
                tag: None,
                digest: Some(d.clone()),
            },
            (t, _) => StoredRef {
                repository,
                tag: Some(t.clone().unwrap_or_else(|| "latest".into())),
                digest: None,
            },
        }
    }
}

impl fmt::Display for StoredRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.repository)?;
        match (&self.tag, &self.digest) {
            (Some(t), _) => write!(f, ":{t}"),
            (None, Some(d)) => write!(f, "@{d}"),
            (None, None) => f.write_str(":latest"),
        }
    }
}

impl FromStr for StoredRef {
    type Err = RefError;
    fn from_str(s: &str) -> Result<StoredRef, RefError> {
        if let Some((repo, d)) = s.split_once('@') {
            let digest = d
                .parse::<Digest>()
                .map_err(|e| err(s, RefErrorKind::Digest(e)))?;
            validate_repository(repo, s)?;
            return Ok(StoredRef {
                repository: repo.to_string(),
                tag: None,
                digest: Some(digest),
            });
        }
        let last_slash = s.rfind('/').map(|i| i + 1).unwrap_or(0);
        let (repo, tag) = match s[last_slash..].rfind(':') {
            Some(i) => (&s[..last_slash + i], &s[last_slash + i + 1..]),
            None => (s, "latest"),
        };
        validate_repository(repo, s)?;
        validate_tag(tag, s)?;
        Ok(StoredRef {
            repository: repo.to_string(),
            tag: Some(tag.to_string()),
            digest: None,
        })
    }
}

crate::serde_via_str!(StoredRef);

/// Where to fetch `r` from: the first mirror whose source is `r`'s registry, else `r` itself.
pub fn fetch_location(r: &ImageRef, mirrors: &[Mirror]) -> FetchLocation {
    match mirrors.iter().find(|m| m.source == r.registry) {
        Some(m) if m.prefix.is_empty() => FetchLocation {
            registry: m.registry.clone(),
            repository: r.repository.clone(),
        },
        Some(m) => FetchLocation {
            registry: m.registry.clone(),
            repository: format!("{}/{}", m.prefix, r.repository),
        },
        None => FetchLocation {
            registry: r.registry.clone(),
            repository: r.repository.clone(),
        },
    }
}

/// Reads a list of references: one a line, `#` starts a comment, blank lines skipped.
/// Errors carry the 1-based line number.
pub fn parse_list(text: &str) -> Result<Vec<ImageRef>, (usize, RefError)> {
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.split('#').next().unwrap_or("").trim();
        if line.is_empty() {
            continue;
        }
        out.push(ImageRef::parse(line).map_err(|e| (i + 1, e))?);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> ImageRef {
        ImageRef::parse(s).unwrap_or_else(|e| panic!("{s}: {e}"))
    }

    fn kind(s: &str) -> RefErrorKind {
        ImageRef::parse(s).unwrap_err().kind
    }

    const HEX: &str = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

    #[test]
    fn docker_normalization() {
        assert_eq!(p("nginx").to_string(), "docker.io/library/nginx:latest");
        assert_eq!(p("nginx:1.25").to_string(), "docker.io/library/nginx:1.25");
        assert_eq!(p("calico/node").to_string(), "docker.io/calico/node:latest");
        assert_eq!(
            p("docker.io/nginx").to_string(),
            "docker.io/library/nginx:latest"
        );
        assert_eq!(
            p("index.docker.io/library/nginx:1").to_string(),
            "docker.io/library/nginx:1"
        );
        assert_eq!(
            p("quay.io/calico/node:v3").to_string(),
            "quay.io/calico/node:v3"
        );
        assert_eq!(p("localhost/x").registry, "localhost");
        assert_eq!(p("localhost:5000/x/y:z").registry, "localhost:5000");
        assert_eq!(p("127.0.0.1:5000/a/b/c:v1").repository, "a/b/c");
        assert_eq!(p("[::1]:5000/a:v1").registry, "[::1]:5000");
        // A dot-less, colon-less first component is a path on Docker Hub.
        assert_eq!(p("registry/x").registry, "docker.io");
        assert_eq!(p("registry/x").repository, "registry/x");
        // Upper case in the first component makes it a host.
        assert_eq!(p("Myhost/x").registry, "Myhost");
    }

    #[test]
    fn tags_and_digests() {
        let r = p(&format!("quay.io/calico/node@sha256:{HEX}"));
        assert_eq!(r.tag, None);
        assert_eq!(r.digest.as_ref().unwrap().hex(), HEX);
        assert_eq!(r.manifest_reference(), format!("sha256:{HEX}"));
        let r = p(&format!("127.0.0.1:5000/a:v1@sha256:{HEX}"));
        assert_eq!(r.tag.as_deref(), Some("v1"));
        assert_eq!(r.registry, "127.0.0.1:5000");
        assert_eq!(r.manifest_reference(), format!("sha256:{HEX}"));
        assert_eq!(r.to_string(), format!("127.0.0.1:5000/a:v1@sha256:{HEX}"));
        assert_eq!(p("a:v1").manifest_reference(), "v1");
        assert_eq!(p("127.0.0.1:5000/a").tag.as_deref(), Some("latest"));
    }

    #[test]
    fn invalid_references_say_why_and_name_the_reference() {
        let e = ImageRef::parse("Bad//ref::x").unwrap_err();
        assert_eq!(e.reference, "Bad//ref::x");
        assert!(e.to_string().contains("\"Bad//ref::x\""), "{e}");
        assert_eq!(kind(""), RefErrorKind::Empty);
        assert_eq!(kind(" nginx"), RefErrorKind::Whitespace);
        assert!(matches!(kind("nginx:"), RefErrorKind::Tag(_)));
        assert!(matches!(kind("nginx:.x"), RefErrorKind::Tag(_)));
        assert!(matches!(
            kind(&format!("nginx:{}", "a".repeat(129))),
            RefErrorKind::Tag(_)
        ));
        assert!(matches!(kind("nginx@sha256:abc"), RefErrorKind::Digest(_)));
        assert!(matches!(
            kind(&format!("nginx@md5:{HEX}")),
            RefErrorKind::Digest(_)
        ));
        assert_eq!(kind("NGINX"), RefErrorKind::Uppercase);
        assert_eq!(kind("quay.io/Calico/node"), RefErrorKind::Uppercase);
        assert!(matches!(kind("quay.io//node"), RefErrorKind::Component(c) if c.is_empty()));
        assert!(matches!(kind("quay.io/a/../b"), RefErrorKind::Component(c) if c == ".."));
        assert!(matches!(kind("/abs/path"), RefErrorKind::Component(c) if c.is_empty()));
        assert!(matches!(kind("quay.io/a/"), RefErrorKind::Component(_)));
        assert!(matches!(kind("quay.io/-a"), RefErrorKind::Component(_)));
        assert!(matches!(kind("quay.io/a___b"), RefErrorKind::Component(_)));
        assert!(matches!(
            kind("bad_host.io:port/x"),
            RefErrorKind::Registry(_)
        ));
        assert!(matches!(
            kind("host.io:99999999/x"),
            RefErrorKind::Registry(_)
        ));
        assert!(matches!(
            kind(&format!("q.io/{}", "a".repeat(260))),
            RefErrorKind::TooLong(_)
        ));
    }

    #[test]
    fn component_grammar() {
        for ok in [
            "a",
            "a0",
            "a.b",
            "a_b",
            "a__b",
            "a-b",
            "a---b",
            "quay.io",
            "kube-apiserver",
        ] {
            assert!(valid_component(ok), "{ok}");
        }
        for bad in [
            "", ".", "..", "a.", ".a", "a..b", "a___b", "a-_b", "A", "a b", "a/b",
        ] {
            assert!(!valid_component(bad), "{bad}");
        }
    }

    #[test]
    fn default_stored_name_drops_the_host() {
        assert_eq!(
            stored_repository(&p("quay.io/calico/node:v3"), None),
            "calico/node"
        );
        assert_eq!(stored_repository(&p("nginx"), None), "library/nginx");
        assert_eq!(
            stored_repository(&p("docker.io/library/nginx"), None),
            "library/nginx"
        );
        assert_eq!(
            stored_repository(&p("127.0.0.1:5000/a/b/c:v1"), None),
            "a/b/c"
        );
    }

    const MAP: &str = "\
- src: quay.io/calico/node
  dest: library/calico-node
- src: nginx
  dest: library/nginx-web
";

    #[test]
    fn map_maps_and_normalizes() {
        let m = NameMap::parse("images_origin.yaml", MAP).unwrap();
        assert_eq!(m.len(), 2);
        assert_eq!(
            stored_repository(&p("quay.io/calico/node:v3"), Some(&m)),
            "library/calico-node"
        );
        assert_eq!(
            stored_repository(&p("docker.io/library/nginx:1"), Some(&m)),
            "library/nginx-web"
        );
        assert_eq!(
            stored_repository(&p("quay.io/calico/cni:v3"), Some(&m)),
            "calico/cni"
        );
        assert!(NameMap::parse("f", "").unwrap().is_empty());
    }

    #[test]
    fn map_errors_name_both_sources() {
        let text = "\
- src: quay.io/calico/node
  dest: library/calico-node
- src: docker.io/calico/node
  dest: library/calico-node
";
        let e = NameMap::parse("images_origin.yaml", text).unwrap_err();
        let msg = e.to_string();
        assert!(
            msg.contains("quay.io/calico/node") && msg.contains("docker.io/calico/node"),
            "{msg}"
        );
        assert!(
            msg.contains("library/calico-node") && msg.contains("images_origin.yaml"),
            "{msg}"
        );
        let dup = "- src: a.io/x\n  dest: x\n- src: a.io/x\n  dest: y\n";
        assert!(matches!(
            NameMap::parse("f", dup),
            Err(MapError::DuplicateSource { .. })
        ));
        let same = "- src: a.io/x\n  dest: x\n- src: a.io/x\n  dest: x\n";
        assert_eq!(NameMap::parse("f", same).unwrap().len(), 1);
    }

    #[test]
    fn map_rejects_bad_entries() {
        for (text, what) in [
            ("- src: a.io/x\n  dest: ../etc\n", "dest traversal"),
            ("- src: a.io/x\n  dest: /abs\n", "dest absolute"),
            ("- src: a.io/x\n  dest: a//b\n", "dest empty component"),
            ("- src: a.io/x\n  dest: Library/X\n", "dest upper case"),
            ("- src: a.io/x:v1\n  dest: x\n", "src tag"),
            ("- src: a.io/x\n  dest: x:v1\n", "dest tag"),
            ("- src: a.io/x\n", "no dest"),
            ("- src: a.io/x\n  dest: x\n  extra: 1\n", "unknown field"),
            ("src: a\ndest: b\n", "not a list"),
        ] {
            let e = NameMap::parse("m.yaml", text);
            assert!(e.is_err(), "{what}: {e:?}");
            assert!(e.unwrap_err().to_string().contains("m.yaml"), "{what}");
        }
    }

    #[test]
    fn collisions_between_sources() {
        let a = p("quay.io/calico/node:v3");
        let b = p("docker.io/calico/node:v3");
        let c = p("quay.io/calico/node:v4");
        let na = stored_repository(&a, None);
        let nb = stored_repository(&b, None);
        let nc = stored_repository(&c, None);
        // Two tags of one source: fine.
        check_collisions([(&a, na.as_str()), (&c, nc.as_str())]).unwrap();
        let e = check_collisions([(&a, na.as_str()), (&b, nb.as_str())]).unwrap_err();
        assert_eq!(e.first, "quay.io/calico/node");
        assert_eq!(e.second, "docker.io/calico/node");
        assert!(e.to_string().contains("calico/node"));
    }

    #[test]
    fn mirrors_fetch_elsewhere_keep_the_name() {
        let m: Mirror = "quay.io=127.0.0.1:5000/quay.io".parse().unwrap();
        assert_eq!(m.source, "quay.io");
        assert_eq!(m.registry, "127.0.0.1:5000");
        assert_eq!(m.prefix, "quay.io");
        let hub: Mirror = "index.docker.io=127.0.0.1:5001".parse().unwrap();
        assert_eq!(hub.source, "docker.io");
        let mirrors = [m, hub];
        let r = p("quay.io/calico/node:v3");
        assert_eq!(
            fetch_location(&r, &mirrors).to_string(),
            "127.0.0.1:5000/quay.io/calico/node"
        );
        assert_eq!(stored_repository(&r, None), "calico/node");
        assert_eq!(
            fetch_location(&p("nginx"), &mirrors).to_string(),
            "127.0.0.1:5001/library/nginx"
        );
        assert_eq!(
            fetch_location(&p("ghcr.io/x/y"), &mirrors).to_string(),
            "ghcr.io/x/y"
        );
        for bad in [
            "quay.io",
            "=x.io",
            "quay.io=",
            "quay.io=x.io/../y",
            "q uay=x.io",
        ] {
            assert!(bad.parse::<Mirror>().is_err(), "{bad}");
        }
    }

    #[test]
    fn list_files() {
        let refs = parse_list("# images\nnginx:1\n\n  quay.io/a/b:v1  # trailing\n").unwrap();
        assert_eq!(refs.len(), 2);
        assert_eq!(refs[1].to_string(), "quay.io/a/b:v1");
        let (line, e) = parse_list("nginx\nBad Ref\n").unwrap_err();
        assert_eq!(line, 2);
        assert_eq!(e.reference, "Bad Ref");
    }
}
