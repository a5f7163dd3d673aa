//! `kpbuild export` from a store filled as `kpbuild build` fills it, with no Docker daemon:
//! outputs are complete and byte-identical from run to run; on SIGINT/SIGTERM the `.partial`
//! output is removed and the exit code is 130/143; after SIGKILL only the `.partial` is left,
//! and the next run replaces it. A named pipe standing for a blob holds an export mid-stream.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use kpbuild_store::store::{Access, Entry, Key, Store};

mod common;
use common::{SPEC, sha256_hex};

const TARBALL: &str = "kubeplay-v0.1.0-linux-amd64.tar.gz";

/// A layer tar (in path order, as `kpbuild build` makes them).
fn layer(entries: &[(&str, Option<&[u8]>)]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for (name, data) in entries {
        let mut h = tar::Header::new_gnu();
        match data {
            Some(d) => {
                h.set_entry_type(tar::EntryType::Regular);
                h.set_size(d.len() as u64);
                h.set_mode(0o644);
                h.set_mtime(1234567);
                b.append_data(&mut h, name, *d).unwrap();
            }
            None => {
                h.set_entry_type(tar::EntryType::Directory);
                h.set_size(0);
                h.set_mode(0o700);
                b.append_data(&mut h, name, std::io::empty()).unwrap();
            }
        }
    }
    b.into_inner().unwrap()
}

/// The module results of SPEC for linux/amd64: image name → its tar (what BuildKit's tar
/// exporter sends).
fn images() -> BTreeMap<String, Vec<u8>> {
    let big: Vec<u8> = (0..3_000_000u32).map(|i| (i * 7 % 253) as u8).collect();
    let files = layer(&[
        ("resources/", None),
        ("resources/files/", None),
        ("resources/files/a-big-file", Some(&big)),
        ("resources/files/small", Some(b"small\n")),
    ]);
    let lock = layer(&[("kubeplay.lock.json", Some(b"{\"lock\":true}\n"))]);
    BTreeMap::from([
        ("kubeplay/files:v0.1.0-amd64".to_string(), files),
        ("kubeplay/lock:v0.1.0-amd64".to_string(), lock),
    ])
}

/// A store holding the module results of SPEC for linux/amd64 ([`images`]), as `kpbuild
/// build` leaves it. With `stall`, the blob of `resources/files/a-big-file` is a named pipe that
/// gives its first MiB and then nothing for 60 s (long enough for a test to interrupt the
/// export reading it).
struct Fixture {
    _dir: tempfile::TempDir,
    store: PathBuf,
}

impl Fixture {
    fn new(stall: bool) -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("store");
        let store = Store::open(&root, Access::Shared).unwrap();
        let mut big_blob = None;
        for (image, layer) in images() {
            let module = image.split(['/', ':']).nth(1).unwrap().to_string();
            let got = store.ingest(layer.as_slice()).unwrap();
            let key = Key {
                bundle: "kubeplay".into(),
                version: "v0.1.0".into(),
                module,
                platform: "linux/amd64".parse().unwrap(),
            };
            store.set_ref(&key, &got).unwrap();
            for e in store.tree(&got.tree).unwrap().entries {
                if let Entry::File { path, digest, .. } = e
                    && path.ends_with("a-big-file")
                {
                    big_blob = Some(store.blob_path(&digest));
                }
            }
        }
        if stall {
            let blob = big_blob.expect("the big file's blob");
            let data = std::fs::read(&blob).unwrap();
            std::fs::remove_file(&blob).unwrap();
            let ok = Command::new("mkfifo")
                .arg(&blob)
                .status()
                .unwrap()
                .success();
            assert!(ok, "mkfifo");
            std::thread::spawn(move || {
                let mut w = std::fs::File::options().write(true).open(&blob).unwrap();
                let _ = w.write_all(&data[..1 << 20]);
                std::thread::sleep(Duration::from_secs(60));
            });
        }
        Fixture {
            _dir: dir,
            store: root,
        }
    }
}

/// A `kpbuild export` child, killed if the test ends first.
struct Export(Child);

impl Drop for Export {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn export(fixture: &Fixture, spec: &Path, out: &str, format: Option<&str>) -> Export {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_kpbuild"));
    cmd.args(["export", "-f"]).arg(spec).args([
        "--platform",
        "linux/amd64",
        "-o",
        out,
        "--threads",
        "2",
    ]);
    if let Some(f) = format {
        cmd.args(["--format", f]);
    }
    Export(
        cmd.env("KPBUILD_STORE", &fixture.store)
            // No Docker daemon: the export reads the store alone.
            .env("DOCKER_HOST", "unix:///nonexistent/docker.sock")
            .env("SOURCE_DATE_EPOCH", "1700000000")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    )
}

fn finish(mut e: Export) -> (ExitStatus, String) {
    let mut err = String::new();
    e.0.stderr.take().unwrap().read_to_string(&mut err).unwrap();
    (e.0.wait().unwrap(), err)
}

fn signal(e: &Export, sig: &str) {
    let ok = Command::new("kill")
        .args([sig, &e.0.id().to_string()])
        .status()
        .unwrap()
        .success();
    assert!(ok, "kill {sig}");
}

fn wait_for(p: &Path) {
    let start = Instant::now();
    while !p.exists() {
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "{} never appeared",
            p.display()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    // Let the export write into it for a moment (the stream is stalled further on).
    std::thread::sleep(Duration::from_millis(300));
}

fn setup() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let spec = dir.path().join("Dockerfile.bundle");
    std::fs::write(&spec, SPEC).unwrap();
    (dir, spec)
}

fn names_in(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

#[test]
fn exports_are_complete_reproducible_and_replace_a_stale_partial() {
    let store = Fixture::new(false);
    let (tmp, spec) = setup();
    let (a, b) = (tmp.path().join("a"), tmp.path().join("b"));
    std::fs::create_dir_all(&a).unwrap();
    std::fs::create_dir_all(&b).unwrap();
    // A run killed with SIGKILL left these in b.
    std::fs::write(b.join(format!("{TARBALL}.partial")), b"stale").unwrap();
    std::fs::write(b.join(format!("{TARBALL}.sha256.partial")), b"stale").unwrap();
    for dir in [&a, &b] {
        let (status, err) = finish(export(
            &store,
            &spec,
            &format!("{}/", dir.display()),
            Some("tar.gz"),
        ));
        assert!(status.success(), "{err}");
        assert_eq!(
            names_in(dir),
            [TARBALL.to_string(), format!("{TARBALL}.sha256")]
        );
    }
    let ta = std::fs::read(a.join(TARBALL)).unwrap();
    assert!(
        ta == std::fs::read(b.join(TARBALL)).unwrap(),
        "not byte-identical"
    );
    assert_eq!(
        std::fs::read_to_string(a.join(format!("{TARBALL}.sha256"))).unwrap(),
        format!("{}  {TARBALL}\n", sha256_hex(&ta))
    );
    let mut archive = tar::Archive::new(flate2::read::GzDecoder::new(ta.as_slice()));
    let mut entries = Vec::new();
    for e in archive.entries().unwrap() {
        let mut e = e.unwrap();
        let mut data = Vec::new();
        e.read_to_end(&mut data).unwrap();
        let h = e.header();
        assert_eq!(h.mtime().unwrap(), 1700000000);
        entries.push((
            e.path().unwrap().display().to_string(),
            h.mode().unwrap(),
            data.len(),
        ));
    }
    assert_eq!(
        entries,
        [
            ("kubeplay/".to_string(), 0o755, 0),
            ("kubeplay/kubeplay.lock.json".to_string(), 0o644, 14),
            ("kubeplay/resources".to_string(), 0o755, 0),
            ("kubeplay/resources/files".to_string(), 0o755, 0),
            (
                "kubeplay/resources/files/a-big-file".to_string(),
                0o644,
                3_000_000
            ),
            ("kubeplay/resources/files/small".to_string(), 0o644, 6),
        ]
    );

    // A directory, over a stale `.partial` directory.
    let d = tmp.path().join("dir");
    std::fs::create_dir_all(tmp.path().join("dir.partial/junk")).unwrap();
    let (status, err) = finish(export(&store, &spec, d.to_str().unwrap(), None));
    assert!(status.success(), "{err}");
    assert!(!tmp.path().join("dir.partial").exists());
    assert_eq!(names_in(&d), ["kubeplay.lock.json", "resources"]);
    assert_eq!(
        std::fs::read(d.join("resources/files/small")).unwrap(),
        b"small\n"
    );
}

#[test]
fn sigint_during_a_tarball_export_removes_the_partial_file() {
    let store = Fixture::new(true);
    let (tmp, spec) = setup();
    let out = tmp.path().join("out");
    std::fs::create_dir_all(&out).unwrap();
    let e = export(&store, &spec, out.to_str().unwrap(), Some("tar.gz"));
    wait_for(&out.join(format!("{TARBALL}.partial")));
    signal(&e, "-INT");
    let (status, err) = finish(e);
    assert_eq!(status.code(), Some(130), "{err}");
    assert!(
        err.contains("kpbuild export: interrupted by SIGINT; removed the partial output"),
        "{err}"
    );
    assert_eq!(names_in(&out), Vec::<String>::new());
}

#[test]
fn sigterm_during_a_directory_export_removes_the_partial_directory() {
    let store = Fixture::new(true);
    let (tmp, spec) = setup();
    let out = tmp.path().join("bundle");
    let e = export(&store, &spec, out.to_str().unwrap(), None);
    let partial = tmp.path().join("bundle.partial");
    wait_for(&partial.join("resources/files"));
    signal(&e, "-TERM");
    let (status, err) = finish(e);
    assert_eq!(status.code(), Some(143), "{err}");
    assert!(err.contains("interrupted by SIGTERM"), "{err}");
    assert_eq!(names_in(tmp.path()), ["Dockerfile.bundle"]);
}

#[test]
fn oci_exports_are_complete_and_removed_on_sigint() {
    let (tmp, spec) = setup();
    let store = Fixture::new(false);
    for name in ["a.tar", "b.tar"] {
        let o = format!("oci-archive:{}", tmp.path().join(name).display());
        let (status, err) = finish(export(&store, &spec, &o, None));
        assert!(status.success(), "{err}");
    }
    assert!(
        std::fs::read(tmp.path().join("a.tar")).unwrap()
            == std::fs::read(tmp.path().join("b.tar")).unwrap(),
        "OCI archives differ"
    );
    let o = format!("oci:{}", tmp.path().join("layout").display());
    let (status, err) = finish(export(&store, &spec, &o, None));
    assert!(status.success(), "{err}");
    assert_eq!(
        names_in(&tmp.path().join("layout")),
        ["blobs", "index.json", "oci-layout"]
    );

    let store = Fixture::new(true);
    for (out, partial) in [
        ("oci:{}/oci", "oci.partial/oci-layout"),
        ("oci-archive:{}/oci.tar", "oci.tar.partial"),
    ] {
        let out = out.replace("{}", &tmp.path().display().to_string());
        let e = export(&store, &spec, &out, None);
        wait_for(&tmp.path().join(partial));
        signal(&e, "-INT");
        let (status, err) = finish(e);
        assert_eq!(status.code(), Some(130), "{out}: {err}");
        assert_eq!(
            names_in(tmp.path()),
            ["Dockerfile.bundle", "a.tar", "b.tar", "layout"],
            "{out}"
        );
    }
}

#[test]
fn after_sigkill_only_the_partial_is_left_and_the_rerun_completes() {
    let (tmp, spec) = setup();
    let out = tmp.path().join("out");
    std::fs::create_dir_all(&out).unwrap();
    {
        let store = Fixture::new(true);
        let e = export(&store, &spec, out.to_str().unwrap(), Some("tar.gz"));
        wait_for(&out.join(format!("{TARBALL}.partial")));
        signal(&e, "-KILL");
        let (status, _) = finish(e);
        assert_eq!(status.code(), None, "killed");
        assert_eq!(names_in(&out), [format!("{TARBALL}.partial")]);
    }
    let store = Fixture::new(false);
    let (status, err) = finish(export(&store, &spec, out.to_str().unwrap(), Some("tar.gz")));
    assert!(status.success(), "{err}");
    assert_eq!(
        names_in(&out),
        [TARBALL.to_string(), format!("{TARBALL}.sha256")]
    );
    let reference = tmp.path().join("reference");
    std::fs::create_dir_all(&reference).unwrap();
    let (status, err) = finish(export(
        &store,
        &spec,
        reference.to_str().unwrap(),
        Some("tar.gz"),
    ));
    assert!(status.success(), "{err}");
    assert!(
        std::fs::read(out.join(TARBALL)).unwrap()
            == std::fs::read(reference.join(TARBALL)).unwrap(),
        "the rerun differs from a fresh export"
    );
}

/// The JSON documents of an OCI export and the OCI archive, pinned byte for byte: their digests
/// are what users compare across kpbuild versions, so a change here changes every export's
/// digests. The chain is followed from `index.json` by the pinned digests.
#[test]
fn oci_export_documents_keep_their_bytes() {
    const FILES_LAYER: &str = "434657010e1e014617086bdc629ae7a85de123bff7e54c7bb3020f5000509a91";
    const LOCK_LAYER: &str = "79435fda31a27100ba776fd7b8932c3cbee529a90f474df6547f979ec25b598e";
    const CONFIG: &str = "d58239ea5e3625fad33ff4624360d82f6c25dfe10101ad48560b62f53df1e961";
    const MANIFEST: &str = "6a0b1efbc52fb99c491b4f896f90c85aa0639b594fc7edc6cfa6cdb2068ca873";
    const IMAGE_INDEX: &str = "759aa70cb5923676a3f6d5795e46d9503e2b212d2b0a617b928590b3a22432ec";
    const ARCHIVE: &str = "8956418e09c366cb57d851ccf44035d650a9103ef5127e760c3951ee504c2653";
    let (tmp, spec) = setup();
    let store = Fixture::new(false);
    let layout = tmp.path().join("layout");
    let (status, err) = finish(export(
        &store,
        &spec,
        &format!("oci:{}", layout.display()),
        None,
    ));
    assert!(status.success(), "{err}");
    let text = |p: PathBuf| String::from_utf8(std::fs::read(p).unwrap()).unwrap();
    let blob = |hex: &str| {
        let b = std::fs::read(layout.join("blobs/sha256").join(hex)).unwrap();
        assert_eq!(sha256_hex(&b), hex);
        String::from_utf8(b).unwrap()
    };
    assert_eq!(
        text(layout.join("oci-layout")),
        r#"{"imageLayoutVersion":"1.0.0"}"#
    );
    assert_eq!(
        text(layout.join("index.json")),
        format!(
            r#"{{
  "schemaVersion": 2,
  "mediaType": "application/vnd.oci.image.index.v1+json",
  "manifests": [
    {{
      "mediaType": "application/vnd.oci.image.index.v1+json",
      "digest": "sha256:{IMAGE_INDEX}",
      "size": 289,
      "annotations": {{
        "org.opencontainers.image.ref.name": "v0.1.0"
      }}
    }}
  ]
}}"#
        )
    );
    assert_eq!(
        blob(IMAGE_INDEX),
        format!(
            r#"{{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[{{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"sha256:{MANIFEST}","size":663,"platform":{{"architecture":"amd64","os":"linux"}}}}]}}"#
        )
    );
    assert_eq!(
        blob(MANIFEST),
        format!(
            r#"{{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"sha256:{CONFIG}","size":322}},"layers":[{{"mediaType":"application/vnd.oci.image.layer.v1.tar","digest":"sha256:{FILES_LAYER}","size":3003904,"annotations":{{"org.opencontainers.image.title":"files"}}}},{{"mediaType":"application/vnd.oci.image.layer.v1.tar","digest":"sha256:{LOCK_LAYER}","size":2048,"annotations":{{"org.opencontainers.image.title":"lock"}}}}]}}"#
        )
    );
    assert_eq!(
        blob(CONFIG),
        format!(
            r#"{{"architecture":"amd64","os":"linux","config":{{"Labels":{{"org.opencontainers.image.version":"v0.1.0","io.kpbuild.bundle":"kubeplay"}}}},"rootfs":{{"type":"layers","diff_ids":["sha256:{FILES_LAYER}","sha256:{LOCK_LAYER}"]}}}}"#
        )
    );
    assert_eq!(
        names_in(&layout.join("blobs/sha256")),
        [FILES_LAYER, MANIFEST, IMAGE_INDEX, LOCK_LAYER, CONFIG]
    );
    // The archive: the same files in one tar with fixed headers.
    let archive = tmp.path().join("a.tar");
    let (status, err) = finish(export(
        &store,
        &spec,
        &format!("oci-archive:{}", archive.display()),
        None,
    ));
    assert!(status.success(), "{err}");
    assert_eq!(sha256_hex(&std::fs::read(&archive).unwrap()), ARCHIVE);
}
