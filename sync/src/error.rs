//! Typed errors of the sync engine. Each says what failed and where (image, digest, URL).

use std::path::PathBuf;

use kpbuild_oci::image_ref::CollisionError;
use kpbuild_oci::registry_layout::{Digest, ManifestError};

use crate::auth::CredentialError;

/// An error reaching or talking to a registry.
#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    #[error("{url}: {message} (after {attempts} attempts)")]
    Transport {
        url: String,
        attempts: u32,
        message: String,
    },
    #[error("{url}: HTTP {status}{}", fmt_detail(detail))]
    Status {
        url: String,
        status: u16,
        detail: String,
    },
    #[error(
        "{url}: not found (HTTP 404{}); check the name, tag or digest",
        fmt_detail(detail)
    )]
    NotFound { url: String, detail: String },
    #[error(
        "{url}: registry {registry} refused the credentials (HTTP {status}{}); check the entry for {registry} in the Docker config file",
        fmt_detail(detail)
    )]
    Denied {
        url: String,
        registry: String,
        status: u16,
        detail: String,
    },
    #[error(
        "{url}: registry {registry} requires authentication and the Docker config file ({config}) has no credentials for it; run `docker login {registry}` or add an \"auths\" entry"
    )]
    NoCredentials {
        url: String,
        registry: String,
        config: String,
    },
    #[error("token request to {realm} for {registry} failed: {message}")]
    Token {
        registry: String,
        realm: String,
        message: String,
    },
    #[error(transparent)]
    Credentials(#[from] CredentialError),
}

fn fmt_detail(d: &str) -> String {
    if d.is_empty() {
        String::new()
    } else {
        format!(": {d}")
    }
}

/// Why one image could not be synced. Rendered after the image's reference.
#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    #[error("manifest: {0}")]
    Fetch(HttpError),
    #[error("blob {digest}: {source}")]
    BlobFetch {
        digest: Digest,
        #[source]
        source: HttpError,
    },
    #[error(
        "blob {digest}: the bytes from {url} have sha256 {actual}, not the digest asked for; nothing was stored"
    )]
    BlobDigestMismatch {
        digest: Digest,
        actual: Digest,
        url: String,
    },
    #[error(
        "blob {digest}: {url} sent {got} bytes where the manifest says {expected}; nothing was stored"
    )]
    BlobSizeMismatch {
        digest: Digest,
        url: String,
        expected: u64,
        got: u64,
    },
    #[error(
        "manifest {expected}: the bytes from {url} have sha256 {actual}, not the digest asked for; nothing was stored"
    )]
    ManifestDigestMismatch {
        expected: String,
        actual: Digest,
        url: String,
    },
    #[error("manifest {digest} from {url}: {source}")]
    BadManifest {
        digest: Digest,
        url: String,
        #[source]
        source: ManifestError,
    },
    #[error("index {index} has no manifest for platform {wanted} (it has: {available})")]
    MissingPlatform {
        index: Digest,
        wanted: String,
        available: String,
    },
    #[error("index {0} nests indexes more than 3 deep")]
    TooDeep(Digest),
    #[error("blob {digest}: fetch failed for another image that shares it ({image}): {message}")]
    SharedBlobFailed {
        digest: Digest,
        image: String,
        message: String,
    },
    #[error(transparent)]
    Shared(std::sync::Arc<ImageError>),
    #[error("cannot write {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// One image that failed, and why.
#[derive(Debug)]
pub struct ImageFailure {
    /// The reference as given, normalized.
    pub image: String,
    pub error: ImageError,
}

impl std::fmt::Display for ImageFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "image {}: {}", self.image, self.error)
    }
}

/// An error that stops the whole run before or outside any one image.
#[derive(Debug, thiserror::Error)]
pub enum SyncError {
    #[error(transparent)]
    Collision(#[from] CollisionError),
    // The I/O error is part of the message, not a `source`, so that a renderer printing the
    // chain does not print it twice.
    #[error("cannot prepare the destination {path}: {error}")]
    Dest {
        path: PathBuf,
        error: std::io::Error,
    },
    #[error("cannot set up the HTTP client: {0}")]
    Client(String),
    #[error("invalid stored name: {0}")]
    Name(kpbuild_oci::image_ref::RefError),
}
