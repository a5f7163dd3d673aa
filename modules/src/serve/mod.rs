//! The pure part of `kpbuild serve`: what a request path names in an unpacked bundle, which
//! bytes a `Range` header asks for, and the read-only registry the `resources/registry` tree
//! holds. No HTTP here (that is `cli/src/serve/`); everything is unit-tested without a socket.
//!
//! - [`path`]: a request path (percent-encoded) to a file under the bundle's nginx root, refused
//!   when it could leave it (`..`, `%2e%2e`, absolute, NUL, backslash) and opened without
//!   following any symbolic link;
//! - [`range`]: one `Range: bytes=…` header to one byte range, or why it cannot be served;
//! - [`registry`]: the routes of the OCI distribution spec's pull side and the index of
//!   repositories, tags, manifests (bytes kept, hashed when loaded) and linked blobs.

pub mod path;
pub mod range;
pub mod registry;
