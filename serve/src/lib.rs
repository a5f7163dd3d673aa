//! `kpbuild serve`'s server: an unpacked bundle served on a machine with nothing installed —
//! the registry under `/v2/` (read-only, the pull side of the OCI distribution spec) and every
//! other path a file under the bundle's nginx root — so that an offline install needs neither
//! a container engine nor the nginx and registry images first. The CLI (`cli/src/serve.rs`)
//! parses the command line, checks the bundle and calls [`serve`].
//!
//! Where things live:
//! - `server.rs`: what the server is given ([`Config`]), the state connections share, the
//!   per-client summary, signals;
//! - `listen.rs`: listeners, TLS handshakes, the connection limit, header and idle timeouts;
//! - `handler.rs`: one request to one response (registry, referrers, files, `/-/healthy`);
//! - `body.rs`: response bodies, streamed from files with bounded memory, counted per client,
//!   blob digests checked;
//! - `tls.rs`: certificates from files or made here (self-signed);
//! - the pure parts, unit-tested without a socket: `path.rs` (a request path, percent-encoded,
//!   to a file under the files root, refused when it could leave it — `..`, `%2e%2e`,
//!   absolute, NUL, backslash — and opened without following any symbolic link), `range.rs`
//!   (one `Range: bytes=…` header to one byte range, or why it cannot be served),
//!   `registry.rs` (the routes of the pull side, the codes of the spec's error table it
//!   answers, and the index of repositories, tags, manifests — bytes kept, hashed when loaded
//!   —, referrers by subject and linked blobs, [`Registry`]) and `referrers.rs` (the referrers
//!   API's listing: each referrer's descriptor, the `artifactType` filter, the image index).
//!
//! **Digest policy.** Every manifest is hashed against its digest while the registry index is
//! read ([`Registry::load`]). Blobs are hashed while served: the first time a blob
//! is sent whole, its sha256 is computed on the way and the last chunk is held back until it
//! matches, so no client ever receives a complete blob with the wrong content; on a mismatch
//! the response is cut short, the path is logged, and the blob is answered with 500 from then
//! on. A blob once matched is not hashed again while the process lives. Range requests are not
//! hashed (clients check the digest of what they assemble). Files are served as they are (the
//! CLI checks the bundle with `kpbuild verify --no-hash` before serving; `kpbuild verify`, with
//! hashing, checks them against `kubeplay.lock.json`, and apt checks each package against the
//! repository index).

mod body;
mod handler;
mod listen;
mod path;
mod range;
mod referrers;
mod registry;
mod server;
mod tls;

pub use listen::Limits;
pub use registry::{LoadError, Registry};
pub use server::{Config, Tls, serve};
