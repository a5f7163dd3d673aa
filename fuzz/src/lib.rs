//! The bodies of kpbuild's fuzz targets, as plain functions: the `cargo fuzz` binaries in
//! `fuzz_targets/` call them, and so can a test or a replay of a crash. Each one panics when
//! an invariant breaks (beyond "does not crash, does not hang").

use std::path::{Component, Path};

use kpbuild_store::bundle_tar::{parents, path_order};
use kpbuild_oci::image_ref::{ImageRef, stored_repository, validate_repository};
use kpbuild_bundle::layout::file_path_of_url as bundle_path_of_url;
use kpbuild_bundle::plan::{self, PlanOptions, Work};
use kpbuild_oci::registry_layout::{Layout, parse_manifest, parse_referrer};
use kpbuild_paths::safe_path::{EntryKind, TarEntryChecker, relative_path};
use kpbuild_paths::source::MemSource;
use kpbuild_bundle::spec::{SpecFile, is_relative_clean};
use kpbuild_store::tar_merge::{self, Kind, LayerSource, MergeError};
use kpbuild_ansible::vars::{Evaluator, Precedence, VarSet};

pub mod tree;

/// `path` stays under `root`: no `..`, no other root.
pub fn assert_under(root: &Path, path: &Path) {
    let rest = path
        .strip_prefix(root)
        .unwrap_or_else(|_| panic!("{} is not under {}", path.display(), root.display()));
    for c in rest.components() {
        assert!(
            matches!(c, Component::Normal(_)),
            "{} leaves {}",
            path.display(),
            root.display()
        );
    }
}

/// The spec parser, then the planner on an empty build context: no panic; every path a plan
/// produces stays inside the bundle.
pub fn spec_parse(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let f = match SpecFile::parse(text, "Dockerfile.bundle") {
        Ok(f) => f,
        Err(e) => {
            let _ = e.to_string();
            return;
        }
    };
    for input in plan::context_inputs(&f.spec) {
        relative_path(&input, "ctx").expect("a validated spec reads inside its context");
    }
    let ctx = MemSource::new("ctx");
    let Ok(p) = plan::plan(&f, &ctx, &PlanOptions::default()) else {
        return;
    };
    for pp in &p.platforms {
        for m in &pp.modules {
            match &m.work {
                Work::Files(w) => {
                    for fw in &w.files {
                        assert!(
                            fw.path.starts_with("files/") && is_relative_clean(&fw.path),
                            "{fw:?}"
                        );
                    }
                }
                Work::Images(w) => {
                    for i in &w.images {
                        let repo = &i.stored.repository;
                        validate_repository(repo, repo).expect("stored names are valid");
                    }
                }
                Work::OsPackages(w) => {
                    for d in &w.distros {
                        assert!(is_relative_clean(&d.path), "{d:?}");
                    }
                }
                Work::Dockerfile(d) => assert!(is_relative_clean(&d.archive), "{d:?}"),
                Work::Compose(_) => {}
            }
        }
    }
}

/// Variables (YAML) and a template, separated by the first NUL byte: load, render every
/// variable and the template. Errors are fine; panics, hangs and overflows are not.
pub fn vars_render(data: &[u8]) {
    let (yaml, template) = match data.iter().position(|&b| b == 0) {
        Some(i) => (&data[..i], &data[i + 1..]),
        None => (data, &b""[..]),
    };
    let (Ok(yaml), Ok(template)) = (std::str::from_utf8(yaml), std::str::from_utf8(template))
    else {
        return;
    };
    let mut set = VarSet::new();
    if set
        .load_str(yaml, Path::new("fuzz.yml"), Precedence::RoleDefaults)
        .is_err()
    {
        return;
    }
    let names: Vec<String> = set.names().take(16).map(str::to_string).collect();
    let ev = Evaluator::new(set);
    for n in &names {
        if let Err(e) = ev.var(n) {
            let _ = e.to_string();
        }
    }
    if !template.is_empty() {
        match ev.render_str(template, "fuzz") {
            Ok(v) => {
                let _ = v.to_string();
            }
            Err(e) => {
                let _ = e.to_string();
            }
        }
    }
}

/// Manifest bytes, with a content type chosen by the first byte; and the same bytes read as a
/// referrer.
pub fn manifest_parse(data: &[u8]) {
    let Some((&sel, bytes)) = data.split_first() else {
        return;
    };
    let ct = match sel % 6 {
        0 => None,
        1 => Some(kpbuild_oci::media_type::DOCKER_MANIFEST),
        2 => Some(kpbuild_oci::media_type::OCI_INDEX),
        3 => Some(kpbuild_oci::media_type::DOCKER_MANIFEST_V1_SIGNED),
        4 => Some("application/json; charset=utf-8"),
        _ => Some("text/plain"),
    };
    if let Ok(m) = parse_manifest(ct, bytes) {
        let layout = Layout::new("/r");
        for d in m.blobs() {
            assert_under(Path::new("/r"), &layout.blob_data(&d.digest));
        }
        let _ = m.kind().media_type();
    }
    // A referrer's subject is a lookup key only; were it ever a path, it would stay inside.
    if let Ok(Some(r)) = parse_referrer(bytes) {
        assert_under(Path::new("/r"), &Layout::new("/r").blob_data(&r.subject));
    }
}

/// Image references, URLs, relative paths and tar entries from text lines: whatever is
/// accepted stays inside its root.
pub fn names(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let root = Path::new("/root");
    let layout = Layout::new(root);
    let mut tar = TarEntryChecker::new();
    let mut accepted: Vec<(String, Option<String>)> = Vec::new();
    for line in text.lines() {
        if let Ok(r) = ImageRef::parse(line) {
            let name = stored_repository(&r, None);
            validate_repository(&name, &name).expect("a parsed reference has a valid stored name");
            assert_under(root, &layout.repository(&name));
            if let Some(t) = &r.tag {
                assert_under(root, &layout.tag_current_link(&name, t));
            }
            if let Some(d) = &r.digest {
                assert_under(root, &layout.revision_link(&name, d));
            }
        }
        if let Ok(p) = bundle_path_of_url(line) {
            assert!(p.starts_with("files/"), "{line:?} -> {p:?}");
            assert_eq!(
                relative_path(&p, "b").as_deref(),
                Ok(p.as_str()),
                "{line:?}"
            );
        }
        if let Ok(p) = relative_path(line, "x") {
            assert!(!p.starts_with('/') && !p.split('/').any(|c| c == ".." || c.is_empty()));
        }
        // Tar entries: `f NAME`, `d NAME`, `l NAME TARGET`, `h NAME TARGET`.
        let mut parts = line.splitn(3, ' ');
        let (Some(kind), Some(name)) = (parts.next(), parts.next()) else {
            continue;
        };
        let target = parts.next();
        let kind = match (kind, target) {
            ("f", _) => EntryKind::File,
            ("d", _) => EntryKind::Dir,
            ("l", Some(t)) => EntryKind::Symlink(t),
            ("h", Some(t)) => EntryKind::Hardlink(t),
            _ => continue,
        };
        if let Ok(p) = tar.check(name, kind) {
            let link = match kind {
                EntryKind::Symlink(t) => Some(t.to_string()),
                _ => None,
            };
            accepted.push((p, link));
        }
    }
    tree::assert_extraction_stays_inside(&accepted);
}

/// What separates the layers of a `tar_merge` input.
pub const LAYER_SEPARATOR: &[u8] = b"\n--kpbuild-layer--\n";

/// Sets the checksum of each header along a tar's chain of headers (as a reader walks it:
/// header, data rounded up to 512 bytes, next header, until a zero block), so that mutated
/// header fields reach the parser instead of failing its checksum test.
pub fn fix_tar_checksums(tar: &mut [u8]) {
    let mut pos = 0usize;
    while pos + 512 <= tar.len() {
        let block = &mut tar[pos..pos + 512];
        if block.iter().all(|&b| b == 0) {
            break;
        }
        block[148..156].fill(b' ');
        let sum: u32 = block.iter().map(|&b| u32::from(b)).sum();
        block[148..156].copy_from_slice(format!("{sum:06o}\0 ").as_bytes());
        let size = tar::Header::from_byte_slice(block)
            .entry_size()
            .unwrap_or(0);
        let Some(next) = usize::try_from(size)
            .ok()
            .and_then(|s| s.checked_next_multiple_of(512))
            .and_then(|s| s.checked_add(pos + 512))
        else {
            break;
        };
        pos = next;
    }
}

/// One to three layer tars, separated by [`LAYER_SEPARATOR`] (their header checksums fixed
/// with [`fix_tar_checksums`]), merged as `kpbuild export` merges module layers. Errors are fine; when the merge succeeds, the entries are in strict
/// path order, each path clean and relative, each parent emitted (as a directory) before its
/// children, each file with all its data, and extracting them in order keeps every entry and
/// every symbolic link inside the bundle.
pub fn tar_merge(data: &[u8]) {
    let mut layers: Vec<&[u8]> = Vec::new();
    let mut rest = data;
    while layers.len() < 2 {
        match rest
            .windows(LAYER_SEPARATOR.len())
            .position(|w| w == LAYER_SEPARATOR)
        {
            Some(i) => {
                layers.push(&rest[..i]);
                rest = &rest[i + LAYER_SEPARATOR.len()..];
            }
            None => break,
        }
    }
    layers.push(rest);
    let sources = layers
        .into_iter()
        .enumerate()
        .map(|(i, layer)| {
            let mut layer = layer.to_vec();
            fix_tar_checksums(&mut layer);
            LayerSource::from_bytes(format!("layer{i}"), &layer)
        })
        .collect();
    let mut emitted: Vec<(String, Kind)> = Vec::new();
    let mut dirs = std::collections::BTreeSet::new();
    let result = tar_merge::merge(sources, |meta, data| {
        let p = meta.path.as_str();
        assert!(
            !p.is_empty()
                && !p.starts_with('/')
                && p.split('/').all(|c| !matches!(c, "" | "." | "..")),
            "unclean path {p:?}"
        );
        if let Some((prev, _)) = emitted.last() {
            assert_eq!(
                path_order(prev, p),
                std::cmp::Ordering::Less,
                "{p:?} after {prev:?}: {emitted:?}"
            );
        }
        for parent in parents(p) {
            assert!(
                dirs.contains(parent),
                "{p:?} before its directory {parent:?}: {emitted:?}"
            );
        }
        match (&meta.kind, data) {
            (Kind::File, Some(r)) => {
                let mut buf = Vec::new();
                r.read_to_end(&mut buf).map_err(MergeError::Data)?;
                assert_eq!(buf.len() as u64, meta.size, "{p:?}");
            }
            (Kind::File, None) => panic!("file {p:?} without data"),
            (_, Some(_)) => panic!("{p:?} ({:?}) with data", meta.kind),
            (Kind::Dir, None) => {
                dirs.insert(p.to_string());
            }
            (Kind::Hardlink(t), None) => {
                assert!(
                    !t.is_empty()
                        && !t.starts_with('/')
                        && t.split('/').all(|c| !matches!(c, "" | "." | "..")),
                    "hard link {p:?} to {t:?}"
                );
            }
            (Kind::Symlink(_), None) => {}
        }
        emitted.push((p.to_string(), meta.kind.clone()));
        Ok::<(), MergeError>(())
    });
    match result {
        Ok(_) => {
            let accepted: Vec<(String, Option<String>)> = emitted
                .into_iter()
                .map(|(p, k)| match k {
                    Kind::Symlink(t) => (p, Some(t)),
                    _ => (p, None),
                })
                .collect();
            tree::assert_extraction_stays_inside(&accepted);
        }
        Err(e) => {
            let _ = e.to_string();
        }
    }
}
