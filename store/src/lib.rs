//! The local content store of module results (`kpbuild build` writes it, `kpbuild export`
//! reads it, with no Docker daemon and no BuildKit), and the tar handling both sides share.
//! It knows no spec and no module kind: a result is keyed by bundle, version, module name and
//! platform ([`store::Key`]).
//!
//! Where things live:
//! - [`store`]: the store's format, its lock, ingesting a result and reading a tree back;
//! - [`tar_merge`]: module trees merged entry by entry in path order into one normalized
//!   stream, each entry's path checked;
//! - [`bundle_tar`]: the bundle tar's normalization (path order, the root, `SOURCE_DATE_EPOCH`);
//! - [`durable`]: writes that survive a crash (data synced before the name, renames synced).

pub mod bundle_tar;
pub mod durable;
pub mod store;
pub mod tar_merge;
