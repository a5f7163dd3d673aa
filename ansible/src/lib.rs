//! The Ansible-compatible variable evaluator kpbuild renders kubespray's variables with, and
//! kubespray's own lists (files, images, checksums) generated from them per architecture. It
//! knows no bundle and no module kind.
//!
//! Where things live:
//! - [`vars`]: loading variable files with Ansible's precedence, and the Jinja evaluator with
//!   Ansible's filters and tests (`vars/ansible.rs`) and version comparisons
//!   (`vars/version.rs`); a variable that cannot be resolved is an error naming the chain that
//!   needed it;
//! - [`kubespray`]: a kubespray checkout's variables (either layout) and its download lists,
//!   with the old naming quirks, per [`kubespray::Arch`].

pub mod kubespray;
pub mod vars;
