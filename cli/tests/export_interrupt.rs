//! `kpbuild export` against a fake Docker Engine API on a Unix socket (image inspect and
//! `docker save` only, no daemon): outputs are complete and byte-identical from run to run; on
//! SIGINT/SIGTERM the `.partial` output is removed and the exit code is 130/143; after SIGKILL
//! only the `.partial` is left, and the next run replaces it.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use sha2::Digest as _;

const SPEC: &str = "# syntax=kpbuild/frontend:dev
name: kubeplay
version: v0.1.0
platforms: [linux/amd64]
modules:
  files:
    kind: files
    from-kubespray: none
";

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

/// The module images of SPEC for linux/amd64: name → layer tar.
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

fn sha256_hex(data: &[u8]) -> String {
    hex::encode(sha2::Sha256::digest(data))
}

/// What `docker save` streams for an image with this one layer.
fn save_tar(layer: &[u8]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    let id = sha256_hex(layer);
    for (name, data) in [
        ("manifest.json".to_string(), b"[]".to_vec()),
        (format!("{id}/layer.tar"), layer.to_vec()),
    ] {
        let mut h = tar::Header::new_gnu();
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        b.append_data(&mut h, name, data.as_slice()).unwrap();
    }
    b.into_inner().unwrap()
}

/// A fake Docker Engine API: image inspect and `docker save` of [`images`]. With `stall`, the
/// save stream of that image stops for 60 s after that many bytes.
struct FakeDocker {
    _dir: tempfile::TempDir,
    host: String,
}

impl FakeDocker {
    fn start(stall: Option<(&str, usize)>) -> FakeDocker {
        let dir = tempfile::tempdir().unwrap();
        let sock = dir.path().join("docker.sock");
        let listener = UnixListener::bind(&sock).unwrap();
        let images = Arc::new(images());
        let stall = stall.map(|(i, n)| (i.to_string(), n));
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(conn) = conn else { return };
                let images = images.clone();
                let stall = stall.clone();
                std::thread::spawn(move || {
                    let _ = serve(conn, &images, stall.as_ref());
                });
            }
        });
        FakeDocker {
            host: format!("unix://{}", sock.display()),
            _dir: dir,
        }
    }
}

fn serve(
    conn: UnixStream,
    images: &BTreeMap<String, Vec<u8>>,
    stall: Option<&(String, usize)>,
) -> std::io::Result<()> {
    let mut reader = BufReader::new(conn.try_clone()?);
    let mut out = conn;
    loop {
        let mut request = String::new();
        if reader.read_line(&mut request)? == 0 {
            return Ok(());
        }
        let mut length = 0usize;
        loop {
            let mut line = String::new();
            reader.read_line(&mut line)?;
            if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                length = v.trim().parse().unwrap_or(0);
            }
            if line == "\r\n" || line.is_empty() {
                break;
            }
        }
        std::io::copy(&mut (&mut reader).take(length as u64), &mut std::io::sink())?;
        let path = request.split(' ').nth(1).unwrap_or("").to_string();
        let path = path.split('?').next().unwrap_or("");
        let image_of = |suffix: &str| {
            path.strip_suffix(suffix)
                .and_then(|p| p.split_once("/images/"))
                .map(|(_, name)| name.to_string())
        };
        if let Some(name) = image_of("/json") {
            let Some(layer) = images.get(&name) else {
                write!(
                    out,
                    "HTTP/1.1 404 Not Found\r\nContent-Type: application/json\r\nContent-Length: 31\r\n\r\n{{\"message\":\"no such image  x\"}}"
                )?;
                continue;
            };
            let body = format!(
                "{{\"Id\":\"sha256:{}\",\"RootFS\":{{\"Type\":\"layers\",\"Layers\":[\"sha256:{}\"]}}}}",
                sha256_hex(name.as_bytes()),
                sha256_hex(layer)
            );
            write!(
                out,
                "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
                body.len()
            )?;
        } else if let Some(name) = image_of("/get") {
            let save = save_tar(&images[&name]);
            write!(
                out,
                "HTTP/1.1 200 OK\r\nContent-Type: application/x-tar\r\nTransfer-Encoding: chunked\r\n\r\n"
            )?;
            let stall_at = stall
                .filter(|(i, _)| *i == name)
                .map(|(_, n)| *n)
                .unwrap_or(usize::MAX);
            let mut sent = 0;
            for chunk in save.chunks(64 * 1024) {
                if sent >= stall_at {
                    out.flush()?;
                    // Long enough for the test to interrupt the export.
                    std::thread::sleep(Duration::from_secs(60));
                }
                write!(out, "{:x}\r\n", chunk.len())?;
                out.write_all(chunk)?;
                write!(out, "\r\n")?;
                sent += chunk.len();
            }
            write!(out, "0\r\n\r\n")?;
            out.flush()?;
        } else {
            write!(out, "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n")?;
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

fn export(docker: &FakeDocker, spec: &Path, out: &str, format: Option<&str>) -> Export {
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
        cmd.env("DOCKER_HOST", &docker.host)
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
    let docker = FakeDocker::start(None);
    let (tmp, spec) = setup();
    let (a, b) = (tmp.path().join("a"), tmp.path().join("b"));
    std::fs::create_dir_all(&a).unwrap();
    std::fs::create_dir_all(&b).unwrap();
    // A run killed with SIGKILL left these in b.
    std::fs::write(b.join(format!("{TARBALL}.partial")), b"stale").unwrap();
    std::fs::write(b.join(format!("{TARBALL}.sha256.partial")), b"stale").unwrap();
    for dir in [&a, &b] {
        let (status, err) = finish(export(
            &docker,
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
    let (status, err) = finish(export(&docker, &spec, d.to_str().unwrap(), None));
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
    let docker = FakeDocker::start(Some(("kubeplay/files:v0.1.0-amd64", 1 << 20)));
    let (tmp, spec) = setup();
    let out = tmp.path().join("out");
    std::fs::create_dir_all(&out).unwrap();
    let e = export(&docker, &spec, out.to_str().unwrap(), Some("tar.gz"));
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
    let docker = FakeDocker::start(Some(("kubeplay/files:v0.1.0-amd64", 1 << 20)));
    let (tmp, spec) = setup();
    let out = tmp.path().join("bundle");
    let e = export(&docker, &spec, out.to_str().unwrap(), None);
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
    let docker = FakeDocker::start(None);
    for name in ["a.tar", "b.tar"] {
        let o = format!("oci-archive:{}", tmp.path().join(name).display());
        let (status, err) = finish(export(&docker, &spec, &o, None));
        assert!(status.success(), "{err}");
    }
    assert!(
        std::fs::read(tmp.path().join("a.tar")).unwrap()
            == std::fs::read(tmp.path().join("b.tar")).unwrap(),
        "OCI archives differ"
    );
    let o = format!("oci:{}", tmp.path().join("layout").display());
    let (status, err) = finish(export(&docker, &spec, &o, None));
    assert!(status.success(), "{err}");
    assert_eq!(
        names_in(&tmp.path().join("layout")),
        ["blobs", "index.json", "oci-layout"]
    );

    let docker = FakeDocker::start(Some(("kubeplay/files:v0.1.0-amd64", 1 << 20)));
    for (out, partial) in [
        ("oci:{}/oci", "oci.partial/oci-layout"),
        ("oci-archive:{}/oci.tar", "oci.tar.partial"),
    ] {
        let out = out.replace("{}", &tmp.path().display().to_string());
        let e = export(&docker, &spec, &out, None);
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
        let docker = FakeDocker::start(Some(("kubeplay/files:v0.1.0-amd64", 1 << 20)));
        let e = export(&docker, &spec, out.to_str().unwrap(), Some("tar.gz"));
        wait_for(&out.join(format!("{TARBALL}.partial")));
        signal(&e, "-KILL");
        let (status, _) = finish(e);
        assert_eq!(status.code(), None, "killed");
        assert_eq!(names_in(&out), [format!("{TARBALL}.partial")]);
    }
    let docker = FakeDocker::start(None);
    let (status, err) = finish(export(
        &docker,
        &spec,
        out.to_str().unwrap(),
        Some("tar.gz"),
    ));
    assert!(status.success(), "{err}");
    assert_eq!(
        names_in(&out),
        [TARBALL.to_string(), format!("{TARBALL}.sha256")]
    );
    let reference = tmp.path().join("reference");
    std::fs::create_dir_all(&reference).unwrap();
    let (status, err) = finish(export(
        &docker,
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
