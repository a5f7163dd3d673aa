//! `kpbuild verify DIR` over a small bundle made here: one file, one image, one apt repository
//! and one artifact, each section of `kubeplay.lock.json` checked and each fault named with its
//! message as users read it. The bundle is written by hand (its manifest as JSON text), so these
//! tests pin the manifest's shape and `verify`'s words, not the code that produces them.

use std::fs;
use std::io::Write as _;
use std::path::Path;
use std::process::{Command, Output};

use kpbuild_oci::registry_layout::{Digest, Layout};
use sha2::{Digest as _, Sha256, Sha512};

fn kpbuild(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_kpbuild"))
        .args(args)
        .output()
        .expect("run kpbuild")
}

fn put(path: &Path, bytes: &[u8]) {
    fs::create_dir_all(path.parent().unwrap()).unwrap();
    fs::write(path, bytes).unwrap();
}

fn sha256(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

const FILE: &str = "resources/nginx/files/dl.example.com/v1/tool";
const FILE_BYTES: &[u8] = b"a downloaded binary\n";
const REPO: &str = "resources/nginx/debian/amd64/bookworm";
const DEB: &[u8] = b"not really a deb, but hashed like one";
const ARTIFACT: &str = "kubespray/images/kubespray.tar";
const ARTIFACT_BYTES: &[u8] = b"an image archive";

/// The `Packages` stanza of the one package.
fn packages_index() -> String {
    format!(
        "Package: tool\nVersion: 1:2.0-1\nArchitecture: amd64\nDescription: a tool\n more text\nFilename: ./tool_2.0-1_amd64.deb\nSize: {}\nSHA256: {}\n",
        DEB.len(),
        sha256(DEB)
    )
}

/// A valid bundle at `root`; returns the image's manifest digest.
fn bundle(root: &Path) -> Digest {
    put(&root.join(FILE), FILE_BYTES);
    put(&root.join(ARTIFACT), ARTIFACT_BYTES);
    let repo = root.join(REPO);
    put(&repo.join("tool_2.0-1_amd64.deb"), DEB);
    put(&repo.join("Packages"), packages_index().as_bytes());
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gz.write_all(packages_index().as_bytes()).unwrap();
    put(&repo.join("Packages.gz"), &gz.finish().unwrap());

    let layout = Layout::new(root.join("resources/registry"));
    let blob = |bytes: &[u8]| {
        let d = Digest::of_bytes(bytes);
        put(&layout.blob_data(&d), bytes);
        d
    };
    let config =
        br#"{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]}}"#;
    let layer = b"layer bytes";
    let (cfg, lay) = (blob(config), blob(layer));
    let manifest = format!(
        r#"{{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"{cfg}","size":{}}},"layers":[{{"mediaType":"application/vnd.oci.image.layer.v1.tar","digest":"{lay}","size":{}}}]}}"#,
        config.len(),
        layer.len()
    );
    let m = blob(manifest.as_bytes());
    for (p, c) in layout.image_links(
        "library/tool",
        Some("v1"),
        &m,
        std::slice::from_ref(&m),
        &[cfg, lay],
    ) {
        put(&p, c.as_bytes());
    }

    let lock = format!(
        r#"{{
  "format": "kpbuild.lock/v1",
  "kpbuild": "0.1.0",
  "bundle": {{"name": "kubeplay", "version": "v0.1.0", "platform": "linux/amd64", "modules": ["files", "images", "os-packages", "kubespray"]}},
  "spec": {{"file": "Dockerfile.bundle", "sha256": "{spec}"}},
  "files": [{{"path": "{FILE}", "url": "https://dl.example.com/v1/tool", "sha256": "{f256}", "size": {fsize}, "pin": "sha512:{f512}"}}],
  "images": [{{"source": "docker.io/library/tool:v1", "stored": "library/tool:v1", "digest": "{m}", "platforms": {{"any": "{m}"}}}}],
  "packages": [{{"distro": "debian-bookworm", "repo": "{REPO}", "name": "tool", "version": "1:2.0-1", "architecture": "amd64", "file": "tool_2.0-1_amd64.deb", "sha256": "{d256}", "size": {dsize}}}],
  "skipped_packages": [{{"distro": "debian-bookworm", "names": ["python-apt"]}}],
  "artifacts": [{{"path": "{ARTIFACT}", "sha256": "{a256}", "size": {asize}}}]
}}
"#,
        spec = sha256(b"spec"),
        f256 = sha256(FILE_BYTES),
        fsize = FILE_BYTES.len(),
        f512 = hex::encode(Sha512::digest(FILE_BYTES)),
        d256 = sha256(DEB),
        dsize = DEB.len(),
        a256 = sha256(ARTIFACT_BYTES),
        asize = ARTIFACT_BYTES.len(),
    );
    put(&root.join("kubeplay.lock.json"), lock.as_bytes());
    m
}

/// `kpbuild verify` of `root` (with `--no-hash` when asked): whether it passed, its summary line
/// (the path replaced by `DIR`) and its `FAULT` lines.
fn verify(root: &Path, no_hash: bool) -> (bool, String, Vec<String>) {
    let dir = root.to_str().unwrap();
    let mut args = vec!["verify", dir];
    if no_hash {
        args.push("--no-hash");
    }
    let o = kpbuild(&args);
    let stderr = String::from_utf8_lossy(&o.stderr).replace(dir, "DIR");
    let summary = stderr
        .lines()
        .find(|l| l.starts_with("kpbuild verify DIR:"))
        .unwrap_or_default()
        .to_string();
    let faults = String::from_utf8_lossy(&o.stdout)
        .replace(dir, "DIR")
        .lines()
        .map(str::to_string)
        .collect();
    (o.status.success(), summary, faults)
}

const SUMMARY: &str =
    "kpbuild verify DIR: 1 files, 1 images (3 blobs), 1 packages, 1 artifacts checked";

#[test]
fn a_good_bundle_passes_every_section() {
    let tmp = tempfile::tempdir().unwrap();
    bundle(tmp.path());
    for no_hash in [false, true] {
        assert_eq!(
            verify(tmp.path(), no_hash),
            (true, SUMMARY.to_string(), vec![]),
            "no_hash={no_hash}"
        );
    }
}

#[test]
fn a_changed_file_fails_its_hash_and_pin_and_a_missing_one_names_its_url() {
    let tmp = tempfile::tempdir().unwrap();
    bundle(tmp.path());
    put(&tmp.path().join(FILE), b"a downloaded binarY\n");
    let (ok, summary, faults) = verify(tmp.path(), false);
    assert!(!ok);
    assert_eq!(summary, SUMMARY);
    assert_eq!(
        faults,
        [
            format!(
                "FAULT {FILE}: sha256 {}, the manifest says {}",
                sha256(b"a downloaded binarY\n"),
                sha256(FILE_BYTES)
            ),
            format!(
                "FAULT {FILE}: does not match its pin sha512:{} (https://dl.example.com/v1/tool)",
                hex::encode(Sha512::digest(FILE_BYTES))
            ),
        ]
    );
    // Without hashing, only its size is checked: the same size passes.
    assert!(verify(tmp.path(), true).0);

    put(&tmp.path().join(FILE), b"shorter\n");
    let (_, _, faults) = verify(tmp.path(), true);
    assert_eq!(
        faults,
        [format!(
            "FAULT {FILE}: size 8, the manifest says {}",
            FILE_BYTES.len()
        )]
    );

    fs::remove_file(tmp.path().join(FILE)).unwrap();
    let (_, _, faults) = verify(tmp.path(), false);
    assert_eq!(faults.len(), 1, "{faults:?}");
    assert!(
        faults[0].starts_with(&format!(
            "FAULT {FILE}: missing or unreadable (DIR/{FILE}: "
        )) && faults[0].ends_with("; from https://dl.example.com/v1/tool"),
        "{faults:?}"
    );
}

#[test]
fn an_image_whose_tag_moved_or_whose_blob_is_corrupt_is_named() {
    let tmp = tempfile::tempdir().unwrap();
    let m = bundle(tmp.path());
    let layout = Layout::new(tmp.path().join("resources/registry"));
    let other = Digest::of_bytes(b"another manifest");
    put(
        &layout.tag_current_link("library/tool", "v1"),
        other.link_contents().as_bytes(),
    );
    let (ok, _, faults) = verify(tmp.path(), true);
    assert!(!ok);
    assert!(
        faults.iter().any(|f| f.starts_with("FAULT image library/tool:v1: image docker.io/library/tool:v1 is not in the registry tree as library/tool:v1: ")),
        "{faults:?}"
    );

    let tmp = tempfile::tempdir().unwrap();
    let m2 = bundle(tmp.path());
    assert_eq!(m, m2);
    let data = layout_of(tmp.path()).blob_data(&Digest::of_bytes(b"layer bytes"));
    put(&data, b"layer bytez");
    let (ok, _, faults) = verify(tmp.path(), false);
    assert!(!ok);
    assert_eq!(faults.len(), 1, "{faults:?}");
    assert!(
        faults[0].starts_with(&format!(
            "FAULT resources/registry/docker/registry/v2/blobs/sha256/{}/",
            &Digest::of_bytes(b"layer bytes").hex()[..2]
        )),
        "{faults:?}"
    );
}

fn layout_of(root: &Path) -> Layout {
    Layout::new(root.join("resources/registry"))
}

#[test]
fn a_package_changed_dropped_from_the_index_or_a_stale_gzip_index_is_named() {
    let tmp = tempfile::tempdir().unwrap();
    bundle(tmp.path());
    let deb = tmp.path().join(REPO).join("tool_2.0-1_amd64.deb");
    put(&deb, b"not really a deb, but hashed like onE");
    let (ok, _, faults) = verify(tmp.path(), false);
    assert!(!ok);
    assert_eq!(
        faults,
        [format!(
            "FAULT {REPO}/tool_2.0-1_amd64.deb: sha256 {} size {}, the index says {} size {}",
            sha256(b"not really a deb, but hashed like onE"),
            DEB.len(),
            sha256(DEB),
            DEB.len()
        )]
    );

    let tmp = tempfile::tempdir().unwrap();
    bundle(tmp.path());
    put(&tmp.path().join(REPO).join("Packages"), b"");
    let (ok, _, faults) = verify(tmp.path(), true);
    assert!(!ok);
    assert_eq!(
        faults,
        [
            format!(
                "FAULT {REPO}/tool_2.0-1_amd64.deb: tool 1:2.0-1 is in the manifest but not in the index"
            ),
            format!("FAULT {REPO}/Packages.gz: does not hold the same index as Packages"),
        ]
    );

    let tmp = tempfile::tempdir().unwrap();
    bundle(tmp.path());
    fs::remove_file(tmp.path().join(REPO).join("Packages")).unwrap();
    let (_, _, faults) = verify(tmp.path(), true);
    assert_eq!(
        faults,
        [format!(
            "FAULT {REPO}: DIR/{REPO}: no Packages index and no repodata/"
        )]
    );
}

#[test]
fn an_artifact_changed_or_missing_is_named() {
    let tmp = tempfile::tempdir().unwrap();
    bundle(tmp.path());
    put(&tmp.path().join(ARTIFACT), b"an image archivE");
    let (ok, _, faults) = verify(tmp.path(), false);
    assert!(!ok);
    assert_eq!(
        faults,
        [format!(
            "FAULT {ARTIFACT}: sha256 {} size {}, the manifest says {} size {}",
            sha256(b"an image archivE"),
            ARTIFACT_BYTES.len(),
            sha256(ARTIFACT_BYTES),
            ARTIFACT_BYTES.len()
        )]
    );
    fs::remove_file(tmp.path().join(ARTIFACT)).unwrap();
    let (_, _, faults) = verify(tmp.path(), true);
    assert_eq!(faults.len(), 1);
    assert!(
        faults[0].starts_with(&format!("FAULT {ARTIFACT}: missing or unreadable (")),
        "{faults:?}"
    );
}

#[test]
fn a_manifest_of_another_format_or_shape_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    bundle(tmp.path());
    let lock = tmp.path().join("kubeplay.lock.json");
    let text = fs::read_to_string(&lock).unwrap();
    put(
        &lock,
        text.replace("kpbuild.lock/v1", "kpbuild.lock/v9")
            .as_bytes(),
    );
    let (ok, _, faults) = verify(tmp.path(), true);
    assert!(!ok);
    assert_eq!(
        faults,
        ["FAULT kubeplay.lock.json: format kpbuild.lock/v9 is not kpbuild.lock/v1"]
    );

    put(
        &lock,
        text.replace("\"artifacts\"", "\"charts\"").as_bytes(),
    );
    let (ok, summary, faults) = verify(tmp.path(), true);
    assert!(!ok);
    assert_eq!(
        summary,
        "kpbuild verify DIR: 0 files, 0 images (0 blobs), 0 packages, 0 artifacts checked"
    );
    assert_eq!(faults.len(), 1);
    assert!(
        faults[0].starts_with(
            "FAULT kubeplay.lock.json: cannot read the bundle manifest: unknown field `charts`"
        ),
        "{faults:?}"
    );
}

/// `kpbuild sbom` of `path` with `args`: whether it passed, stdout, stderr.
fn sbom(path: &Path, args: &[&str]) -> (bool, Vec<u8>, String) {
    let mut all = vec!["sbom", path.to_str().unwrap()];
    all.extend_from_slice(args);
    let o = kpbuild(&all);
    (
        o.status.success(),
        o.stdout,
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

#[test]
fn sboms_are_made_from_the_manifest_read_back_from_a_tarball_and_held_to_it() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("kubeplay");
    bundle(&root);
    // A bundle made before SBOMs: made from its manifest, and said so.
    let (ok, spdx, err) = sbom(&root, &[]);
    assert!(ok, "{err}");
    assert!(err.contains("made from its kubeplay.lock.json"), "{err}");
    let (ok, cdx, _) = sbom(&root, &["--format", "cyclonedx"]);
    assert!(ok);
    let spdx_text = String::from_utf8(spdx.clone()).unwrap();
    assert!(spdx_text.contains("\"spdxVersion\": \"SPDX-2.3\""));
    // `…/v1/tool` names no version: the file's sha256 versions it.
    let f256 = sha256(FILE_BYTES);
    assert!(spdx_text.contains(&format!(
        "pkg:generic/tool@sha256:{f256}?checksum=sha256:{f256}"
    )));
    assert!(String::from_utf8_lossy(&cdx).contains("\"specVersion\": \"1.6\""));
    // Put in the bundle, they are what `verify` expects, and what `sbom` prints.
    put(&root.join("kubeplay.spdx.json"), &spdx);
    put(&root.join("kubeplay.cdx.json"), &cdx);
    let (ok, summary, faults) = verify(&root, false);
    assert!(ok, "{faults:?}");
    assert_eq!(summary, SUMMARY.replace(" checked", ", 2 SBOMs checked"));
    let (_, again, err) = sbom(&root, &[]);
    assert_eq!(again, spdx);
    assert!(err.contains("the bundle's kubeplay.spdx.json"), "{err}");
    // From a tarball (under kubeplay/, as exports lay it out), read as a stream.
    let tarball = tmp.path().join("bundle.tar.gz");
    let mut t = tar::Builder::new(flate2::write::GzEncoder::new(
        fs::File::create(&tarball).unwrap(),
        flate2::Compression::fast(),
    ));
    t.append_dir_all("kubeplay", &root).unwrap();
    t.into_inner().unwrap().finish().unwrap();
    let (ok, from_tar, err) = sbom(&tarball, &["--format", "cyclonedx"]);
    assert!(ok, "{err}");
    assert_eq!(from_tar, cdx);
    // A changed SBOM is a fault naming it.
    let changed = String::from_utf8(cdx)
        .unwrap()
        .replace("\"version\": 1,", "\"version\": 2,");
    put(&root.join("kubeplay.cdx.json"), changed.as_bytes());
    let (ok, _, faults) = verify(&root, true);
    assert!(!ok);
    assert_eq!(faults.len(), 1, "{faults:?}");
    assert!(
        faults[0].starts_with("FAULT kubeplay.cdx.json: is not the SBOM kubeplay.lock.json gives"),
        "{faults:?}"
    );
    let (ok, printed, err) = sbom(&root, &["--format", "cyclonedx"]);
    assert!(ok && printed == changed.as_bytes());
    assert!(err.contains("WARNING"), "{err}");
}
