//! kpbuild's image sync engine: fetches images from registries and writes them straight into
//! the storage tree a `registry:2` serves (`docker/registry/v2/{blobs,repositories}`), every
//! blob once however many images share it, concurrently, verified while streaming.
//!
//! The pure parts (references, names, layout paths, manifest parsing) live in
//! `kpbuild_oci::{image_ref, registry_layout}`; this crate does the network and disk I/O:
//! [`client`] talks to registries, [`store`] writes the tree, [`engine`] ties them together.
//! [`download`] is the files module's fetcher: one file from its locations in order, given as a
//! plain [`download::FileRequest`]. Nothing here knows a bundle or a module kind.

pub mod auth;
pub mod client;
pub mod download;
pub mod engine;
pub mod error;
pub mod retry;
pub mod store;

pub use client::{ClientConfig, RetryEvent};
pub use engine::{
    NoProgress, PlatformSelection, Progress, Summary, SyncOptions, SyncedImage, sync_images,
};
pub use error::{HttpError, ImageError, ImageFailure, SyncError};
pub use retry::RetryPolicy;
