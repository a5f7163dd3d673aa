//! Pure logic of kpbuild, with no BuildKit and no I/O beyond reading and writing files.
pub mod image_ref;
pub mod registry_layout;
