//! kpbuild's BuildKit frontend.
