//! Pure logic of kpbuild, with no BuildKit and no I/O beyond reading and writing files.
