//! Signatures of bundles, verified offline, in minisign's format: what `kpbuild key generate`,
//! `kpbuild sign`, `kpbuild export --sign` and `kpbuild verify --key` share, and what Debian's
//! `minisign -V` checks on the far side of an air gap with nothing but the public key. It knows
//! no bundle layout and does no file I/O of its own: callers hand it texts and readers.
//!
//! Where things live:
//! - [`key`]: key pairs (generated, the secret key scrypt-encrypted unless asked not to), the
//!   public and secret key files as minisign writes them, key IDs as minisign shows them;
//! - [`comment`]: the trusted comment of a kpbuild signature (signed with the data): the file,
//!   the bundle, its version and platform and the sha256 of its lock, one line of fields;
//! - [`signature`]: signing a stream (prehashed, as minisign 0.10+ does by default) and
//!   verifying one, each refusal its own [`signature::VerifyError`].
//!
//! The format code is the `minisign` crate's (Frank Denis, the author of the minisign tool):
//! kpbuild's key and signature files are byte for byte what the tool reads and writes.

pub mod comment;
pub mod key;
pub mod signature;

pub use comment::{Subject, TrustedComment};
pub use key::{KeyId, KeyPairFiles, PublicKey, SecretKey, SecretKeyFile};
pub use signature::{SUFFIX, Verified, VerifyError, sign, verify};
