//! Pure logic of kpbuild, with no BuildKit and no I/O beyond reading and writing files:
//! the bundle spec, kubespray variable rendering, list generation, the module plan, and the
//! writers that are pure data transforms.

pub mod bundle_tar;
pub mod compose;
pub mod image_archive;
pub mod image_ref;
pub mod kubespray;
pub mod lock;
pub mod ospkg;
pub mod packages;
pub mod plan;
pub mod registry_layout;
pub mod registry_verify;
pub mod safe_path;
pub mod source;
pub mod spec;
pub mod tar_merge;
pub mod vars;
pub mod verify;
