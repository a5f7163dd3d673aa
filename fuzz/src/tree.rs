//! Helpers: a registry tree built from fuzz input, and a lexical model of extracting tar
//! entries through symbolic links.

use std::collections::BTreeMap;
use std::fs;
use std::path::Path;

use arbitrary::{Result, Unstructured};
use kpbuild_oci::registry_layout::{Digest, Layout};
use kpbuild_oci::registry_verify::verify_registry_tree;

/// Extracts accepted entries in a model filesystem (paths resolved through the symbolic links
/// extracted before them) and panics if one lands, or one link points, outside the root.
pub fn assert_extraction_stays_inside(entries: &[(String, Option<String>)]) {
    let mut links: BTreeMap<Vec<String>, String> = BTreeMap::new();
    for (path, link) in entries {
        let comps: Vec<String> = path.split('/').map(str::to_string).collect();
        // The parent directories are followed; the entry itself is created, not followed.
        let mut at = resolve(&links, &comps[..comps.len() - 1], 0)
            .unwrap_or_else(|| panic!("entry {path:?} escapes the root: {entries:?}"));
        at.push(comps[comps.len() - 1].clone());
        if let Some(t) = link {
            let mut target = at[..at.len() - 1].to_vec();
            target.extend(t.split('/').map(str::to_string));
            assert!(
                !t.starts_with('/') && resolve(&links, &target, 0).is_some(),
                "link {path:?} -> {t:?} points outside the root: {entries:?}"
            );
            links.insert(at, t.clone());
        }
    }
}

/// Resolves components from the root through `links`; `None` when the path climbs above the
/// root or a link is absolute.
fn resolve(
    links: &BTreeMap<Vec<String>, String>,
    comps: &[String],
    hops: usize,
) -> Option<Vec<String>> {
    if hops > 40 {
        return Some(Vec::new()); // a loop: the extractor fails, nothing escapes
    }
    let mut cur: Vec<String> = Vec::new();
    for (i, c) in comps.iter().enumerate() {
        match c.as_str() {
            "" | "." => continue,
            ".." => {
                cur.pop()?;
                continue;
            }
            _ => cur.push(c.clone()),
        }
        if let Some(t) = links.get(&cur) {
            if t.starts_with('/') {
                return None;
            }
            cur.pop();
            let mut next = cur;
            next.extend(t.split('/').map(str::to_string));
            next.extend(comps[i + 1..].iter().cloned());
            return resolve(links, &next, hops + 1);
        }
    }
    Some(cur)
}

const NAMES: &[&str] = &["app", "lib/x", "a/b/c", "Bad", "app/_x", ".."];
const TAGS: &[&str] = &["v1", "latest", "-bad", "..", "a/b"];

fn write(path: &Path, bytes: &[u8]) {
    if let Some(p) = path.parent() {
        let _ = fs::create_dir_all(p);
    }
    let _ = fs::write(path, bytes);
}

/// A registry tree built from fuzz input (blobs, manifests pointing at them, links, stray
/// files, symbolic links), checked by `verify_registry_tree`: no panic, and a tree it accepts
/// passes a few independent checks.
pub fn registry_tree(data: &[u8]) -> Result<()> {
    let mut u = Unstructured::new(data);
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path();
    let layout = Layout::new(root);
    fs::create_dir_all(layout.v2().join("repositories")).unwrap();
    fs::create_dir_all(layout.blobs_dir()).unwrap();
    let mut blobs: Vec<Digest> = Vec::new();
    let ops = u.int_in_range(0..=24u8)?;
    for _ in 0..ops {
        match u.int_in_range(0..=8u8)? {
            0 => {
                let bytes: Vec<u8> = u.arbitrary()?;
                let d = Digest::of_bytes(&bytes);
                write(&layout.blob_data(&d), &bytes);
                blobs.push(d);
            }
            1 => {
                // A manifest over earlier blobs (image or index), sizes right or wrong.
                if blobs.is_empty() {
                    continue;
                }
                let desc = |u: &mut Unstructured| -> Result<String> {
                    let d = u.choose(&blobs)?.clone();
                    let size = match fs::metadata(layout.blob_data(&d)) {
                        Ok(m) if u.arbitrary()? => m.len(),
                        _ => u.int_in_range(0..=64u64)?,
                    };
                    Ok(format!(
                        r#"{{"mediaType":"x","digest":"{d}","size":{size}}}"#
                    ))
                };
                let json = if u.arbitrary()? {
                    let cfg = desc(&mut u)?;
                    let n = u.int_in_range(0..=3u8)?;
                    let layers: Vec<String> =
                        (0..n).map(|_| desc(&mut u)).collect::<Result<_>>()?;
                    format!(
                        r#"{{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{cfg},"layers":[{}]}}"#,
                        layers.join(",")
                    )
                } else {
                    let n = u.int_in_range(0..=3u8)?;
                    let ms: Vec<String> = (0..n).map(|_| desc(&mut u)).collect::<Result<_>>()?;
                    format!(
                        r#"{{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[{}]}}"#,
                        ms.join(",")
                    )
                };
                let d = Digest::of_bytes(json.as_bytes());
                write(&layout.blob_data(&d), json.as_bytes());
                blobs.push(d);
            }
            2..=4 => {
                // A link: revision, layer or tag; contents usually right.
                if blobs.is_empty() {
                    continue;
                }
                let name = *u.choose(NAMES)?;
                let d = u.choose(&blobs)?.clone();
                let path = match u.int_in_range(0..=2u8)? {
                    0 => layout.revision_link(name, &d),
                    1 => layout.layer_link(name, &d),
                    _ => layout.tag_current_link(name, u.choose(TAGS)?),
                };
                let contents = match u.int_in_range(0..=5u8)? {
                    0 => format!("{d}\n").into_bytes(),
                    1 => u.arbitrary::<Vec<u8>>()?,
                    _ => d.to_string().into_bytes(),
                };
                write(&path, &contents);
            }
            5 => {
                // Damage a blob.
                if let Ok(d) = u.choose(&blobs) {
                    let p = layout.blob_data(d);
                    let bytes: Vec<u8> = u.arbitrary()?;
                    write(&p, &bytes);
                }
            }
            6 => {
                // A stray file somewhere under the root (no `..`).
                let comps: Vec<String> = u.arbitrary()?;
                let rel: Vec<String> = comps
                    .into_iter()
                    .filter(|c| {
                        !c.is_empty()
                            && c != "."
                            && c != ".."
                            && !c.contains('/')
                            && !c.contains('\0')
                    })
                    .take(6)
                    .collect();
                if !rel.is_empty() {
                    write(&root.join(rel.join("/")), b"stray");
                }
            }
            7 => {
                // A symbolic link, inside or out.
                let name = *u.choose(NAMES)?;
                let target = *u.choose(&["/etc", "..", "../../..", "_layers", "x"])?;
                let p = layout.repository(name).join(u.choose(&[
                    "_layers",
                    "_manifests",
                    "link",
                    "z",
                ])?);
                if let Some(parent) = p.parent() {
                    let _ = fs::create_dir_all(parent);
                }
                let _ = std::os::unix::fs::symlink(target, &p);
            }
            _ => {
                write(&root.join(".kpbuild-tmp/run-x/blob-1"), b"partial");
            }
        }
    }
    let report = verify_registry_tree(root);
    let _ = report.to_string();
    if report.is_ok() {
        // Independent checks of an accepted tree: every blob hashes to its name, and no
        // symbolic link anywhere.
        for e in walk(root) {
            let m = fs::symlink_metadata(&e).unwrap();
            assert!(
                !m.file_type().is_symlink(),
                "accepted a tree with a symlink at {e:?}"
            );
            if e.file_name().is_some_and(|n| n == "data") && e.starts_with(layout.blobs_dir()) {
                let hex = e
                    .parent()
                    .unwrap()
                    .file_name()
                    .unwrap()
                    .to_string_lossy()
                    .to_string();
                assert_eq!(Digest::of_bytes(&fs::read(&e).unwrap()).hex(), hex, "{e:?}");
            }
        }
    }
    Ok(())
}

fn walk(p: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    if let Ok(rd) = fs::read_dir(p) {
        for e in rd.flatten() {
            let path = e.path();
            out.push(path.clone());
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                out.extend(walk(&path));
            }
        }
    }
    out
}
