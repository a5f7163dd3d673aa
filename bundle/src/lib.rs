//! The kubeplay bundle: what `Dockerfile.bundle` says, what each module kind does with it,
//! the plan every build runs, the jobs exec ops hand the worker, where everything lies in the
//! bundle, its lock and its verification. Pure logic, with no BuildKit and no I/O beyond
//! reading and writing files; the crates below it (paths, OCI, the Ansible evaluator) know no
//! module kind.
//!
//! Where things live:
//! - [`kinds`]: one home per module kind (files, images, os-packages, dockerfile, compose):
//!   its spec, validation, plan, lock entries and the questions other code asks of it
//!   (`kinds/os_packages/` also holds the package groups and the generated scripts);
//! - [`spec`] reads `Dockerfile.bundle`, [`plan`] runs every kind's planning per platform,
//!   [`jobs`] is the contract between an LLB exec op and the worker it runs;
//! - [`layout`] is the one home of bundle paths, ports, target names and module image names;
//! - [`lock`] writes and reads `kubeplay.lock.json`; [`verify`] checks a bundle against it;
//! - [`sbom`] makes the bundle's SBOMs from the lock (each kind maps its own entries to
//!   components; `kpbuild-sbom` writes the documents).

pub mod jobs;
pub mod kinds;
pub mod layout;
pub mod lock;
pub mod plan;
pub mod sbom;
pub mod spec;
pub mod verify;
