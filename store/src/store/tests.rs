use super::*;
use crate::tar_merge::{MergeError, merge};

fn key(version: &str, module: &str) -> Key {
    Key {
        bundle: "kubeplay".into(),
        version: version.into(),
        module: module.into(),
        platform: "linux/amd64".parse().unwrap(),
    }
}

/// A layer tar of these entries (in the order given): `(path, Some(data))` is a file,
/// `(path, None)` a directory.
fn layer(entries: &[(&str, Option<&[u8]>)]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for (path, data) in entries {
        let mut h = tar::Header::new_gnu();
        match data {
            Some(d) => {
                h.set_entry_type(tar::EntryType::Regular);
                h.set_size(d.len() as u64);
                h.set_mode(0o644);
                b.append_data(&mut h, path, *d).unwrap();
            }
            None => {
                h.set_entry_type(tar::EntryType::Directory);
                h.set_size(0);
                h.set_mode(0o755);
                b.append_data(&mut h, format!("{path}/"), io::empty())
                    .unwrap();
            }
        }
    }
    b.into_inner().unwrap()
}

/// Every entry a store source sends, with file data, through the export's merge.
fn read_back(store: &Store, r: &Ref) -> Vec<(String, Option<Vec<u8>>)> {
    let tree = store.tree(&r.tree).unwrap();
    let mut out = Vec::new();
    merge(vec![store.source("m", tree)], |meta, data| {
        let bytes = data.map(|d| {
            let mut v = Vec::new();
            d.read_to_end(&mut v).unwrap();
            v
        });
        out.push((meta.path.clone(), bytes));
        Ok::<(), MergeError>(())
    })
    .unwrap();
    out
}

#[test]
fn a_result_comes_back_as_it_went_in_and_files_are_stored_once() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), Access::Shared).unwrap();
    let big = vec![7u8; IN_MEMORY + 10];
    let tar1 = layer(&[
        ("resources", None),
        ("resources/a", Some(b"alpha")),
        ("resources/big", Some(&big)),
        ("resources/same", Some(b"alpha")),
    ]);
    let got = store.ingest(&tar1[..]).unwrap();
    assert_eq!((got.entries, got.bytes), (4, 5 + big.len() as u64 + 5));
    // "alpha" twice is one blob.
    assert_eq!((got.new_files, got.new_bytes), (2, 5 + big.len() as u64));
    let r = store.set_ref(&key("v1", "files"), &got).unwrap();
    assert_eq!(store.require_ref(&key("v1", "files")).unwrap(), r);
    let back = read_back(&store, &r);
    assert_eq!(
        back,
        vec![
            ("resources".to_string(), None),
            ("resources/a".to_string(), Some(b"alpha".to_vec())),
            ("resources/big".to_string(), Some(big.clone())),
            ("resources/same".to_string(), Some(b"alpha".to_vec())),
        ]
    );

    // The same result again adds nothing; one changed file adds one blob.
    let again = store.ingest(&tar1[..]).unwrap();
    assert_eq!(
        (again.tree.clone(), again.new_files, again.new_bytes),
        (got.tree.clone(), 0, 0)
    );
    let tar2 = layer(&[
        ("resources", None),
        ("resources/a", Some(b"alpha2")),
        ("resources/big", Some(&big)),
    ]);
    let changed = store.ingest(&tar2[..]).unwrap();
    assert_eq!((changed.new_files, changed.new_bytes), (1, 6));
    assert_ne!(changed.tree, got.tree);
    assert_eq!(store.usage().unwrap().blobs, 3);
    assert_eq!(store.usage().unwrap().leftovers, 0);
}

#[test]
fn a_truncated_result_names_nothing_and_prune_removes_what_it_left() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), Access::Shared).unwrap();
    let big = vec![3u8; IN_MEMORY * 2];
    let whole = layer(&[("a", Some(b"one")), ("b", Some(&big))]);
    let cut = &whole[..whole.len() - IN_MEMORY];
    let err = store.ingest(cut).unwrap_err();
    assert!(err.to_string().contains("truncated"), "{err}");
    assert_eq!(store.usage().unwrap().trees, 0);
    assert!(store.refs().unwrap().is_empty());
    // The spilled part of `b` was removed; `a` is a blob no tree names.
    assert_eq!(store.usage().unwrap().leftovers, 0);
    drop(store);
    let store = Store::open(dir.path(), Access::Exclusive).unwrap();
    let pruned = store.prune(None).unwrap();
    assert_eq!(pruned.blobs, 1);
    assert_eq!(store.usage().unwrap().blobs, 0);
}

#[test]
fn entries_a_module_must_not_have_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), Access::Shared).unwrap();
    let out_of_order = layer(&[("b", Some(b"1")), ("a", Some(b"2"))]);
    let err = store.ingest(&out_of_order[..]).unwrap_err();
    assert!(err.to_string().contains("out of order"), "{err}");
    let mut b = tar::Builder::new(Vec::new());
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(tar::EntryType::Symlink);
    h.set_size(0);
    b.append_link(&mut h, "escape", "../../etc/passwd").unwrap();
    let err = store.ingest(&b.into_inner().unwrap()[..]).unwrap_err();
    assert!(err.to_string().contains("escape"), "{err}");
}

#[test]
fn prune_keeps_what_the_newest_versions_need() {
    let dir = tempfile::tempdir().unwrap();
    {
        let store = Store::open(dir.path(), Access::Shared).unwrap();
        for (v, data) in [("v1", &b"old"[..]), ("v2", &b"new"[..])] {
            let got = store
                .ingest(&layer(&[("shared", Some(b"both")), ("x", Some(data))])[..])
                .unwrap();
            let mut r = store.set_ref(&key(v, "files"), &got).unwrap();
            // v1 older than v2 whatever the clock says.
            r.created = if v == "v1" { 1 } else { 2 };
            let path = store.ref_path(&r.key).unwrap();
            fs::write(path, serde_json::to_vec(&r).unwrap()).unwrap();
        }
        assert_eq!(store.usage().unwrap().blobs, 3);
        // A leftover of an interrupted write.
        fs::write(store.tmp_path("blob"), b"partial").unwrap();
        // Pruning needs the store to itself.
        let err = Store::open(dir.path(), Access::Exclusive).unwrap_err();
        assert!(matches!(err, StoreError::Busy(_)), "{err}");
    }
    let store = Store::open(dir.path(), Access::Exclusive).unwrap();
    let nothing = store.prune(None).unwrap();
    assert_eq!((nothing.refs, nothing.blobs, nothing.leftovers), (0, 0, 1));
    let v1 = store.require_ref(&key("v1", "files")).unwrap().tree;
    let v2 = store.require_ref(&key("v2", "files")).unwrap().tree;
    store.set_result("docker-image-1", &v1).unwrap();
    store.set_result("docker-image-2", &v2).unwrap();
    assert_eq!(store.result("docker-image-1").unwrap().unwrap().bytes, 7);
    assert!(store.result("docker-image-3").unwrap().is_none());
    assert!(store.set_result("../x", &v1).is_err());
    let pruned = store.prune(Some(1)).unwrap();
    assert_eq!((pruned.refs, pruned.trees, pruned.blobs), (1, 1, 1));
    // A result whose tree is gone is forgotten with it.
    assert!(store.result("docker-image-1").unwrap().is_none());
    assert_eq!(store.result("docker-image-2").unwrap().unwrap().tree, v2);
    assert!(store.get_ref(&key("v1", "files")).unwrap().is_none());
    let r = store.require_ref(&key("v2", "files")).unwrap();
    assert_eq!(read_back(&store, &r).len(), 2);
    assert!(!dir.path().join("refs/kubeplay/v1").exists());
}

#[test]
fn a_missing_module_or_a_damaged_blob_says_what_to_do() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), Access::Shared).unwrap();
    let err = store
        .require_ref(&key("v1", "images"))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("module images of kubeplay v1 (linux/amd64)") && err.contains("kpbuild build"),
        "{err}"
    );
    let got = store
        .ingest(&layer(&[("f", Some(b"content"))])[..])
        .unwrap();
    let r = store.set_ref(&key("v1", "files"), &got).unwrap();
    let tree = store.tree(&r.tree).unwrap();
    let blob = store.blob_path(tree.blobs().next().unwrap());
    fs::remove_file(&blob).unwrap();
    fs::write(&blob, b"cont").unwrap();
    let err = merge(vec![store.source("files", tree)], |_, data| {
        if let Some(d) = data {
            io::copy(d, &mut io::sink()).map_err(MergeError::Data)?;
        }
        Ok::<(), MergeError>(())
    })
    .unwrap_err()
    .to_string();
    assert!(
        err.contains("has 4 bytes where the tree says 7")
            && err.contains(&blob.display().to_string()),
        "{err}"
    );
}

#[test]
fn a_directory_that_is_not_a_store_or_a_bad_name_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    fs::write(dir.path().join("notes.txt"), b"mine").unwrap();
    let err = Store::open(dir.path(), Access::Shared).unwrap_err();
    assert!(matches!(err, StoreError::NotAStore(_)), "{err}");
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), Access::Shared).unwrap();
    let got = store.ingest(&layer(&[("f", Some(b"x"))])[..]).unwrap();
    let err = store.set_ref(&key("v1", "../up"), &got).unwrap_err();
    assert!(
        err.to_string().contains("cannot name a store entry"),
        "{err}"
    );
    // Reopening an existing store works.
    drop(store);
    Store::open(dir.path(), Access::Shared).unwrap();
}
