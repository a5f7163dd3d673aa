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
    // Every manifest a repository serves must have what it references linked in that
    // repository: configs and layers under `_layers`, an index's kept children as revisions.
    let layout = crate::registry_layout::Layout::new(root);
    let repos_prefix = format!("{}/repositories/", v2.display());
    for f in &files {
        let p = f.to_string_lossy();
        let Some((repo, _)) = p
            .strip_prefix(&repos_prefix)
            .and_then(|rest| rest.split_once("/_manifests/revisions/sha256/"))
        else {
            continue;
        };
        let Ok(digest) = std::fs::read_to_string(f)
            .unwrap_or_default()
            .parse::<crate::registry_layout::Digest>()
        else {
            continue;
        };
        let Ok(bytes) = std::fs::read(layout.blob_data(&digest)) else {
            continue;
        };
        match crate::registry_layout::parse_manifest(None, &bytes) {
            Ok(crate::registry_layout::Manifest::Image { config, layers, .. }) => {
                for d in std::iter::once(&config)
                    .chain(layers.iter())
                    .filter(|d| !d.is_foreign())
                {
                    let link = layout.layer_link(repo, &d.digest);
                    if !link.is_file() {
                        r.faults.push(RegistryFault {
                            path: rel(&link),
                            what: format!(
                                "missing: manifest {digest} of {repo} references {}",
                                d.digest
                            ),
                        });
                    }
                }
            }
            Ok(crate::registry_layout::Manifest::Index { manifests, .. }) => {
                if !manifests
                    .iter()
                    .any(|c| layout.revision_link(repo, &c.digest).is_file())
                {
                    r.faults.push(RegistryFault {
                        path: rel(f),
                        what: format!("index {digest} of {repo} has none of its manifests linked"),
                    });
                }
            }
            Err(e) => r.faults.push(RegistryFault {
                path: rel(f),
                what: format!("manifest {digest}: {e}"),
            }),
        }
    }
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tree() -> tempfile::TempDir {
        let t = tempfile::tempdir().unwrap();
        let v2 = t.path().join("docker/registry/v2");
        let blob = |data: &[u8]| {
            use sha2::Digest as _;
            let hex = hex::encode(sha2::Sha256::digest(data));
            let d = v2.join(format!("blobs/sha256/{}/{hex}", &hex[..2]));
            std::fs::create_dir_all(&d).unwrap();
            std::fs::write(d.join("data"), data).unwrap();
            hex
        };
        let config = blob(b"{}");
        let layer = blob(b"layer");
        let manifest = format!(
            r#"{{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"sha256:{config}","size":2}},"layers":[{{"mediaType":"application/vnd.oci.image.layer.v1.tar","digest":"sha256:{layer}","size":5}}]}}"#
        );
        let m = blob(manifest.as_bytes());
        let link = |p: String, hex: &str| {
            let p = v2.join(p);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, format!("sha256:{hex}")).unwrap();
        };
        link(
            format!("repositories/a/b/_manifests/revisions/sha256/{m}/link"),
            &m,
        );
        link(
            "repositories/a/b/_manifests/tags/v1/current/link".into(),
            &m,
        );
        link(
            format!("repositories/a/b/_layers/sha256/{config}/link"),
            &config,
        );
        link(
            format!("repositories/a/b/_layers/sha256/{layer}/link"),
            &layer,
        );
        t
    }

    #[test]
    fn a_good_tree_passes_and_each_fault_is_named() {
        let t = tree();
        let r = verify_registry_tree(t.path());
        assert!(r.faults.is_empty(), "{:?}", r.faults);
        assert_eq!((r.blobs, r.links), (3, 4));
        // a missing layer link
        let layers = t
            .path()
            .join("docker/registry/v2/repositories/a/b/_layers/sha256");
        let first = std::fs::read_dir(&layers)
            .unwrap()
            .next()
            .unwrap()
            .unwrap()
            .path();
        std::fs::remove_dir_all(&first).unwrap();
        let r = verify_registry_tree(t.path());
        assert_eq!(r.faults.len(), 1, "{:?}", r.faults);
        assert!(
            r.faults[0]
                .path
                .contains(first.file_name().unwrap().to_str().unwrap())
        );
        // a link with a newline
        let tag = t
            .path()
            .join("docker/registry/v2/repositories/a/b/_manifests/tags/v1/current/link");
        let text = std::fs::read_to_string(&tag).unwrap();
        std::fs::write(&tag, format!("{text}\n")).unwrap();
        let r = verify_registry_tree(t.path());
        assert!(
            r.faults
                .iter()
                .any(|f| f.path.ends_with("tags/v1/current/link")),
            "{:?}",
            r.faults
        );
    }
}
