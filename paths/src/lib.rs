//! Paths from input, checked before they touch a file system, and the file trees a bundle
//! spec's inputs are read from. The base of kpbuild's crates: it knows no bundle, no image and
//! no module kind.
//!
//! Where things live:
//! - [`safe_path`]: relative paths that cannot leave their root (no `..`, no absolute path,
//!   no NUL), tar entries checked the same way, and writes that follow no symbolic link;
//! - [`source`]: [`source::FileSource`], the read-only trees inputs come from (a local
//!   directory, or files in memory as the frontend reads them from BuildKit).

pub mod safe_path;
pub mod source;
