//! What the store-backed CLI tests share (`mod common;` in `export_interrupt.rs` and
//! `sign_bundle.rs`): the spec whose module results they put in a store, and the digest helper.

use sha2::Digest as _;

/// One `files` module with no kubespray lists, for linux/amd64: the spec the tests export.
pub const SPEC: &str = "# syntax=kpbuild/frontend:dev
name: kubeplay
version: v0.1.0
platforms: [linux/amd64]
modules:
  files:
    kind: files
    from-kubespray: none
";

/// The sha256 of `data`, lower-case hex.
pub fn sha256_hex(data: &[u8]) -> String {
    hex::encode(sha2::Sha256::digest(data))
}
