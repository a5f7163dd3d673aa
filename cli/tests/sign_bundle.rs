//! Signatures end to end through the binary: `kpbuild key generate`, `kpbuild sign` of a
//! directory and of `.tar.zst`/`.tar.gz` archives, `kpbuild export --sign` from a store, and
//! `kpbuild verify --key` accepting them and refusing, each with the message a user reads: a
//! changed lock, a changed blob (named by the entry check), another bundle's signature, another
//! key, a truncated archive, a missing signature. The password of an encrypted key comes from
//! `KPBUILD_SIGN_PASSWORD`, or from a terminal the tests do not have.

use std::io::Read;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

mod common;
use common::{SPEC, sha256_hex};

const BLOB: &str = "resources/images/app.tar";
const BLOB_BYTES: &[u8] = b"an image archive, as docker save writes one";

/// A bundle's lock: one artifact, every other section empty.
fn lock(version: &str) -> String {
    format!(
        r#"{{
  "format": "kpbuild.lock/v1",
  "kpbuild": "0.1.0",
  "bundle": {{"name": "kubeplay", "version": "{version}", "platform": "linux/amd64", "modules": ["compose"]}},
  "spec": {{"file": "Dockerfile.bundle", "sha256": "{spec}"}},
  "files": [],
  "images": [],
  "packages": [],
  "skipped_packages": [],
  "artifacts": [{{"path": "{BLOB}", "sha256": "{a}", "size": {n}}}]
}}
"#,
        spec = sha256_hex(b"spec"),
        a = sha256_hex(BLOB_BYTES),
        n = BLOB_BYTES.len()
    )
}

/// A bundle directory `dir` of `version`.
fn bundle(dir: &Path, version: &str) {
    std::fs::create_dir_all(dir.join("resources/images")).unwrap();
    std::fs::write(dir.join(BLOB), BLOB_BYTES).unwrap();
    std::fs::write(dir.join("install.sh"), b"#!/bin/sh\n").unwrap();
    std::fs::write(dir.join("kubeplay.lock.json"), lock(version)).unwrap();
}

/// Runs kpbuild with `env` set, in a session of its own: no terminal to ask a password on.
fn kpbuild_env(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_kpbuild"));
    cmd.args(args)
        .env_remove("KPBUILD_SIGN_PASSWORD")
        .envs(env.iter().copied())
        .stdin(Stdio::null());
    // SAFETY: setsid only detaches the child from the controlling terminal.
    unsafe {
        cmd.pre_exec(|| {
            libc::setsid();
            Ok(())
        });
    }
    cmd.output().expect("run kpbuild")
}

fn kpbuild(args: &[&str]) -> Output {
    kpbuild_env(args, &[])
}

fn ok(o: &Output) -> String {
    let err = String::from_utf8_lossy(&o.stderr).into_owned();
    assert!(
        o.status.success(),
        "{err}{}",
        String::from_utf8_lossy(&o.stdout)
    );
    err
}

/// Fails, and returns stderr and stdout (the FAULT lines).
fn refused(o: &Output) -> String {
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&o.stderr),
        String::from_utf8_lossy(&o.stdout)
    );
    assert!(!o.status.success(), "accepted:\n{text}");
    text
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// An unencrypted key pair `dir/NAME.{pub,key}`.
fn keys(dir: &Path, name: &str) -> (PathBuf, PathBuf) {
    let prefix = dir.join(name);
    ok(&kpbuild(&[
        "key",
        "generate",
        "--unencrypted",
        "--out",
        s(&prefix),
    ]));
    (
        dir.join(format!("{name}.pub")),
        dir.join(format!("{name}.key")),
    )
}

/// The key ID a public key file names (`untrusted comment: minisign public key: ID`).
fn key_id(public: &Path) -> String {
    let text = std::fs::read_to_string(public).unwrap();
    text.lines()
        .next()
        .unwrap()
        .rsplit(' ')
        .next()
        .unwrap()
        .to_string()
}

fn trusted_comment(sig: &Path) -> String {
    let text = std::fs::read_to_string(sig).unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix("trusted comment: "))
        .unwrap()
        .to_string()
}

#[test]
fn a_signed_directory_verifies_and_each_change_is_refused_by_name() {
    let t = tempfile::tempdir().unwrap();
    let (public, secret) = keys(t.path(), "k");
    let dir = t.path().join("kubeplay");
    bundle(&dir, "v0.1.0");

    // Unsigned, with a key: refused, the missing signature named.
    let e = refused(&kpbuild(&["verify", s(&dir), "--key", s(&public)]));
    assert!(
        e.contains("kubeplay.lock.json.minisig: missing: --key"),
        "{e}"
    );
    assert!(e.contains("the entries were not checked"), "{e}");
    // Without a key it verifies as before.
    ok(&kpbuild(&["verify", s(&dir)]));

    ok(&kpbuild(&["sign", s(&dir), "--key", s(&secret)]));
    let sig = dir.join("kubeplay.lock.json.minisig");
    let comment = trusted_comment(&sig);
    let lock_sha = sha256_hex(&std::fs::read(dir.join("kubeplay.lock.json")).unwrap());
    assert!(comment.starts_with("timestamp:"), "{comment}");
    assert!(
        comment.ends_with(&format!(
            " file:kubeplay.lock.json bundle:kubeplay version:v0.1.0 platform:linux/amd64 \
             lock-sha256:{lock_sha}"
        )),
        "{comment}"
    );
    assert!(!dir.join("kubeplay.lock.json.minisig.partial").exists());
    let out = ok(&kpbuild(&["verify", s(&dir), "--key", s(&public)]));
    assert!(
        out.contains("kubeplay.lock.json: signature OK (key ID "),
        "{out}"
    );
    assert!(out.contains("kpbuild verify: OK"), "{out}");

    // Another key: both key IDs and the key file named.
    let (other, _) = keys(t.path(), "other");
    let e = refused(&kpbuild(&["verify", s(&dir), "--key", s(&other)]));
    assert!(
        e.contains(&format!(
            "kubeplay.lock.json.minisig: signed by the key with ID {}, not by the key given (ID {})",
            key_id(&public),
            key_id(&other)
        )),
        "{e}"
    );
    assert!(e.contains("other.pub"), "{e}");

    // One byte of a blob changed: the signature holds, the entry check names the blob.
    let blob = dir.join(BLOB);
    let mut bytes = BLOB_BYTES.to_vec();
    bytes[0] ^= 1;
    std::fs::write(&blob, &bytes).unwrap();
    let e = refused(&kpbuild(&["verify", s(&dir), "--key", s(&public)]));
    assert!(e.contains("signature OK"), "{e}");
    assert!(e.contains(&format!("FAULT {BLOB}: sha256 ")), "{e}");
    std::fs::write(&blob, BLOB_BYTES).unwrap();

    // One byte of the lock changed (kpbuild's version: the lock still reads): named as changed.
    let lock_path = dir.join("kubeplay.lock.json");
    let good_lock = std::fs::read_to_string(&lock_path).unwrap();
    let changed = good_lock.replace("\"kpbuild\": \"0.1.0\"", "\"kpbuild\": \"0.1.1\"");
    assert_eq!(changed.len(), good_lock.len());
    assert_ne!(changed, good_lock);
    std::fs::write(&lock_path, &changed).unwrap();
    let e = refused(&kpbuild(&["verify", s(&dir), "--key", s(&public)]));
    assert!(
        e.contains(&format!(
            "FAULT kubeplay.lock.json: does not match its signature kubeplay.lock.json.minisig: \
             changed after it was signed (sha256 {} now, {lock_sha} signed)",
            sha256_hex(changed.as_bytes())
        )),
        "{e}"
    );
    std::fs::write(&lock_path, &good_lock).unwrap();
    ok(&kpbuild(&["verify", s(&dir), "--key", s(&public)]));

    // Another bundle's signature (v0.2.0, same key) beside this lock: named as such.
    let dir2 = t.path().join("kubeplay-2");
    bundle(&dir2, "v0.2.0");
    ok(&kpbuild(&["sign", s(&dir2), "--key", s(&secret)]));
    std::fs::copy(dir2.join("kubeplay.lock.json.minisig"), &sig).unwrap();
    let e = refused(&kpbuild(&["verify", s(&dir), "--key", s(&public)]));
    assert!(
        e.contains(
            "FAULT kubeplay.lock.json.minisig: is another bundle's signature: it signs kubeplay \
             v0.2.0 linux/amd64"
        ),
        "{e}"
    );
    assert!(
        e.contains("this bundle is kubeplay v0.1.0 linux/amd64"),
        "{e}"
    );
}

/// `dir` as a bundle tarball `out` (entries under `kubeplay/`, in path order), with its
/// `.sha256`.
fn tarball(dir: &Path, out: &Path) {
    let mut tar = Vec::new();
    {
        let mut b = tar::Builder::new(&mut tar);
        b.mode(tar::HeaderMode::Deterministic);
        // A sorted walk: the bundle tar's path order.
        for e in walkdir::WalkDir::new(dir).sort_by_file_name() {
            let e = e.unwrap();
            let rel = e.path().strip_prefix(dir).unwrap();
            b.append_path_with_name(e.path(), Path::new("kubeplay").join(rel))
                .unwrap();
        }
        b.finish().unwrap();
    }
    let bytes = if out.to_str().unwrap().ends_with(".zst") {
        zstd::encode_all(&tar[..], 3).unwrap()
    } else {
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        std::io::Write::write_all(&mut gz, &tar).unwrap();
        gz.finish().unwrap()
    };
    std::fs::write(out, &bytes).unwrap();
    let name = out.file_name().unwrap().to_str().unwrap();
    std::fs::write(
        format!("{}.sha256", out.display()),
        format!("{}  {name}\n", sha256_hex(&bytes)),
    )
    .unwrap();
}

/// Every entry of a tarball: name and content.
fn entries(path: &Path) -> Vec<(String, Vec<u8>)> {
    let f = std::fs::File::open(path).unwrap();
    let r: Box<dyn Read> = if path.to_str().unwrap().ends_with(".zst") {
        Box::new(zstd::stream::read::Decoder::new(f).unwrap())
    } else {
        Box::new(flate2::read::MultiGzDecoder::new(f))
    };
    let mut ar = tar::Archive::new(r);
    ar.entries()
        .unwrap()
        .map(|e| {
            let mut e = e.unwrap();
            let name = e.path().unwrap().to_string_lossy().into_owned();
            let mut data = Vec::new();
            e.read_to_end(&mut data).unwrap();
            (name, data)
        })
        .collect()
}

/// Asserts the lock's signature is the entry right after the lock, the only one; returns the
/// entries without it.
fn signed_after_the_lock(entries: Vec<(String, Vec<u8>)>) -> Vec<(String, Vec<u8>)> {
    let names: Vec<&str> = entries.iter().map(|(n, _)| n.as_str()).collect();
    let at = names
        .iter()
        .position(|n| *n == "kubeplay/kubeplay.lock.json")
        .unwrap();
    assert_eq!(
        names[at + 1],
        "kubeplay/kubeplay.lock.json.minisig",
        "{names:?}"
    );
    let without: Vec<_> = entries
        .iter()
        .filter(|(n, _)| !n.ends_with(".minisig"))
        .cloned()
        .collect();
    assert_eq!(without.len() + 1, entries.len(), "{names:?}");
    without
}

#[test]
fn a_signed_archive_carries_both_signatures_and_a_truncated_one_is_refused() {
    let t = tempfile::tempdir().unwrap();
    let (public, secret) = keys(t.path(), "k");
    let dir = t.path().join("tree");
    bundle(&dir, "v0.1.0");
    for ext in ["tar.zst", "tar.gz"] {
        let archive = t.path().join(format!("kubeplay-v0.1.0-linux-amd64.{ext}"));
        tarball(&dir, &archive);
        let before = entries(&archive);
        // Signed twice: the second signature replaces the first.
        for _ in 0..2 {
            ok(&kpbuild(&["sign", s(&archive), "--key", s(&secret)]));
        }
        let without = signed_after_the_lock(entries(&archive));
        assert_eq!(without, before, "{ext}: every other entry as it was");
        // The .sha256 is the new archive's; the archive's signature names it and the lock.
        let bytes = std::fs::read(&archive).unwrap();
        let sum = std::fs::read_to_string(format!("{}.sha256", archive.display())).unwrap();
        assert!(sum.starts_with(&sha256_hex(&bytes)), "{sum}");
        let sig = PathBuf::from(format!("{}.minisig", archive.display()));
        let lock_sha = sha256_hex(lock("v0.1.0").as_bytes());
        assert!(
            trusted_comment(&sig).ends_with(&format!(
                " file:kubeplay-v0.1.0-linux-amd64.{ext} bundle:kubeplay version:v0.1.0 \
                 platform:linux/amd64 lock-sha256:{lock_sha}"
            )),
            "{}",
            trusted_comment(&sig)
        );
        let out = ok(&kpbuild(&["verify", s(&archive), "--key", s(&public)]));
        assert!(
            out.contains(&format!("kubeplay-v0.1.0-linux-amd64.{ext}: signature OK")),
            "{out}"
        );
        assert!(out.contains("kubeplay.lock.json: signature OK"), "{out}");

        // Truncated (its .minisig beside it): refused before anything is unpacked.
        let cut = t
            .path()
            .join(format!("cut/kubeplay-v0.1.0-linux-amd64.{ext}"));
        std::fs::create_dir_all(cut.parent().unwrap()).unwrap();
        let kept = bytes.len() / 2;
        std::fs::write(&cut, &bytes[..kept]).unwrap();
        std::fs::copy(&sig, format!("{}.minisig", cut.display())).unwrap();
        let e = refused(&kpbuild(&["verify", s(&cut), "--key", s(&public)]));
        assert!(
            e.contains(&format!(
                "does not match its signature {}.minisig: changed or truncated after it was \
                 signed ({} bytes now)",
                cut.display(),
                kept
            )),
            "{e}"
        );
        // Without the archive's signature the lock's is checked, and the truncation found.
        std::fs::remove_file(format!("{}.minisig", cut.display())).unwrap();
        let e = refused(&kpbuild(&["verify", s(&cut), "--key", s(&public)]));
        assert!(
            e.contains("the archive's own signature is not checked"),
            "{e}"
        );
        assert!(e.contains("truncated or corrupt"), "{e}");
    }
}

#[test]
fn a_damaged_archive_is_not_signed() {
    let t = tempfile::tempdir().unwrap();
    let (_, secret) = keys(t.path(), "k");
    let dir = t.path().join("tree");
    bundle(&dir, "v0.1.0");
    let archive = t.path().join("kubeplay-v0.1.0-linux-amd64.tar.zst");
    tarball(&dir, &archive);
    let sum = format!("{}.sha256", archive.display());
    std::fs::write(&sum, format!("{}  x\n", "0".repeat(64))).unwrap();
    let before = std::fs::read(&archive).unwrap();
    let e = refused(&kpbuild(&["sign", s(&archive), "--key", s(&secret)]));
    assert!(e.contains("a damaged archive is not signed"), "{e}");
    assert_eq!(std::fs::read(&archive).unwrap(), before);
    assert!(!PathBuf::from(format!("{}.minisig", archive.display())).exists());
    assert!(!PathBuf::from(format!("{}.partial", archive.display())).exists());
}

#[test]
fn an_encrypted_key_takes_its_password_from_the_environment_only() {
    let t = tempfile::tempdir().unwrap();
    let prefix = t.path().join("k");
    let pw = [("KPBUILD_SIGN_PASSWORD", "a long pass phrase")];
    // No password and no terminal: refused, saying where a password comes from.
    let e = refused(&kpbuild(&["key", "generate", "--out", s(&prefix)]));
    assert!(e.contains("set KPBUILD_SIGN_PASSWORD"), "{e}");
    ok(&kpbuild_env(&["key", "generate", "--out", s(&prefix)], &pw));
    let secret = t.path().join("k.key");
    assert!(
        std::fs::read_to_string(&secret)
            .unwrap()
            .starts_with("untrusted comment: kpbuild encrypted secret key\n")
    );
    let dir = t.path().join("kubeplay");
    bundle(&dir, "v0.1.0");
    let e = refused(&kpbuild(&["sign", s(&dir), "--key", s(&secret)]));
    assert!(
        e.contains("needs a password: set KPBUILD_SIGN_PASSWORD"),
        "{e}"
    );
    let e = refused(&kpbuild_env(
        &["sign", s(&dir), "--key", s(&secret)],
        &[("KPBUILD_SIGN_PASSWORD", "another")],
    ));
    assert!(e.contains("wrong password"), "{e}");
    ok(&kpbuild_env(&["sign", s(&dir), "--key", s(&secret)], &pw));
    ok(&kpbuild(&[
        "verify",
        s(&dir),
        "--key",
        s(&t.path().join("k.pub")),
    ]));
}

/// A layer tar of files (in path order, as `kpbuild build` stores them).
fn layer(files: &[(&str, &[u8])]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for (name, data) in files {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(tar::EntryType::Regular);
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        b.append_data(&mut h, name, *data).unwrap();
    }
    b.into_inner().unwrap()
}

/// A store holding SPEC's module results for linux/amd64: the blob and the lock.
fn store(root: &Path) {
    use kpbuild_store::store::{Access, Key, Store};
    let store = Store::open(root, Access::Shared).unwrap();
    let lock = lock("v0.1.0");
    for (module, layer) in [
        ("files", layer(&[(BLOB, BLOB_BYTES)])),
        ("lock", layer(&[("kubeplay.lock.json", lock.as_bytes())])),
    ] {
        let got = store.ingest(layer.as_slice()).unwrap();
        let key = Key {
            bundle: "kubeplay".into(),
            version: "v0.1.0".into(),
            module: module.into(),
            platform: "linux/amd64".parse().unwrap(),
        };
        store.set_ref(&key, &got).unwrap();
    }
}

#[test]
fn export_signs_the_lock_in_its_place_and_the_tarball_beside_it() {
    let t = tempfile::tempdir().unwrap();
    let (public, secret) = keys(t.path(), "k");
    let store_root = t.path().join("store");
    store(&store_root);
    let spec = t.path().join("Dockerfile.bundle");
    std::fs::write(&spec, SPEC).unwrap();
    let env = [
        ("KPBUILD_STORE", s(&store_root)),
        ("SOURCE_DATE_EPOCH", "1700000000"),
        ("DOCKER_HOST", "unix:///nonexistent/docker.sock"),
    ];
    let export = |out: &str, sign: bool| {
        let mut args = vec![
            "export",
            "-f",
            s(&spec),
            "--platform",
            "linux/amd64",
            "-o",
            out,
        ];
        if sign {
            args.extend(["--sign", s(&secret)]);
        }
        kpbuild_env(&args, &env)
    };
    let signed = t.path().join("kubeplay-v0.1.0-linux-amd64.tar.zst");
    ok(&export(s(&signed), true));
    let sig = PathBuf::from(format!("{}.minisig", signed.display()));
    assert!(sig.exists());
    let out = ok(&kpbuild(&["verify", s(&signed), "--key", s(&public)]));
    assert!(
        out.contains("kubeplay-v0.1.0-linux-amd64.tar.zst: signature OK"),
        "{out}"
    );
    assert!(out.contains("kubeplay.lock.json: signature OK"), "{out}");
    let without = signed_after_the_lock(entries(&signed));

    // Unsigned, the same entries less the signature; a stale .minisig beside it is removed.
    let plain = t.path().join("plain/kubeplay-v0.1.0-linux-amd64.tar.zst");
    std::fs::create_dir_all(plain.parent().unwrap()).unwrap();
    let stale = PathBuf::from(format!("{}.minisig", plain.display()));
    std::fs::copy(&sig, &stale).unwrap();
    ok(&export(s(&plain), false));
    assert!(
        !stale.exists(),
        "a stale signature stays beside an unsigned export"
    );
    assert_eq!(entries(&plain), without);

    // A directory: the lock's signature in it.
    let dir = t.path().join("dir");
    ok(&export(s(&dir), true));
    assert!(dir.join("kubeplay.lock.json.minisig").exists());
    ok(&kpbuild(&["verify", s(&dir), "--key", s(&public)]));

    // OCI: refused before any work.
    let oci = format!("oci-archive:{}", t.path().join("x.tar").display());
    let e = refused(&export(&oci, true));
    assert!(e.contains("--sign signs a directory or a tarball"), "{e}");
}
