//! Checks a `registry:2` storage tree (`root` holds `docker/registry/v2`): every blob's content
//! hashes to its name, every link file is `sha256:<hex>` without a newline and names a blob that
//! is present. Every fault is listed with its path.

use std::path::Path;

/// One fault, with its path from `root`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RegistryFault {
    pub path: String,
    pub what: String,
}

#[derive(Clone, Debug, Default)]
pub struct RegistryReport {
    pub blobs: usize,
    pub links: usize,
    pub faults: Vec<RegistryFault>,
}

/// Verifies the tree under `root`.
pub fn verify_registry_tree(root: &Path) -> RegistryReport {
    let mut r = RegistryReport::default();
    let v2 = root.join("docker/registry/v2");
    let rel = |p: &Path| {
        p.strip_prefix(root)
            .unwrap_or(p)
            .to_string_lossy()
            .into_owned()
    };
    if !v2.is_dir() {
        r.faults.push(RegistryFault {
            path: "docker/registry/v2".into(),
            what: "missing".into(),
        });
        return r;
    }
    let files = match crate::lock::walk_files(&v2) {
        Ok(f) => f,
        Err(e) => {
            r.faults.push(RegistryFault {
                path: "docker/registry/v2".into(),
                what: e.to_string(),
            });
            return r;
        }
    };
    for f in &files {
        let name = f.file_name().unwrap_or_default().to_string_lossy();
        let in_blobs = f.strip_prefix(v2.join("blobs/sha256")).is_ok();
        if in_blobs && name == "data" {
            r.blobs += 1;
            let hex = f
                .parent()
                .and_then(|p| p.file_name())
                .unwrap_or_default()
                .to_string_lossy()
                .into_owned();
            match crate::lock::hash_file(f) {
                Ok((h, _, _)) if h == hex => {}
                Ok((h, _, _)) => r.faults.push(RegistryFault {
                    path: rel(f),
                    what: format!("content hashes to sha256:{h}, not its name"),
                }),
                Err(e) => r.faults.push(RegistryFault {
                    path: rel(f),
                    what: e.to_string(),
                }),
            }
        } else if name == "link" {
            r.links += 1;
            let text = std::fs::read_to_string(f).unwrap_or_default();
            let Some(hex) = text
                .strip_prefix("sha256:")
                .filter(|h| h.len() == 64 && h.bytes().all(|b| b.is_ascii_hexdigit()))
            else {
                r.faults.push(RegistryFault {
                    path: rel(f),
                    what: format!("not a link (`sha256:<hex>` without a newline): {text:?}"),
                });
                continue;
            };
            let blob = v2.join(format!("blobs/sha256/{}/{hex}/data", &hex[..2]));
            if !blob.is_file() {
                r.faults.push(RegistryFault {
                    path: rel(f),
                    what: format!("points at sha256:{hex}, which has no blob"),
                });
            }
        } else if name.contains(".partial") || name.contains(".tmp") || name.starts_with(".kpbuild")
        {
            r.faults.push(RegistryFault {
                path: rel(f),
                what: "a leftover temporary file".into(),
            });
        }
    }
    r
}
