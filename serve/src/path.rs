//! Request paths to files: `/debian/amd64/bookworm/Packages` → `debian/amd64/bookworm/Packages`
//! under the nginx root, as nginx lays them out.
//!
//! A path is percent-decoded once, then checked with [`kpbuild_paths::safe_path::relative_path`]: after
//! decoding, `..` (whatever its encoding: `%2e%2e`, `.%2E`), an absolute path (`//etc`), a NUL
//! byte or a backslash is refused; nothing is normalized away silently except `.` and repeated
//! slashes. Opening walks every component with `lstat` and refuses a symbolic link anywhere on
//! the way (the bundle holds none; one placed in it is never followed), then opens the file with
//! `O_NOFOLLOW`.

use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};

use kpbuild_paths::safe_path::{self, PathError};

/// Why a request path is refused. Every variant answers 400 or 404 without touching a file
/// outside the root.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PathRefusal {
    #[error("the request path is not valid percent-encoded UTF-8")]
    Encoding,
    #[error("the request path does not start with `/`")]
    NotAbsolute,
    #[error("{0}")]
    Unsafe(PathError),
    #[error("`{0}` is a symbolic link; kpbuild serve never follows links")]
    Symlink(String),
}

/// What a request path names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// The root itself (`/`).
    Root,
    /// A path relative to the root, normalized; `dir` when the request ended with `/`.
    Path { rel: String, dir: bool },
}

/// Decodes and checks a request path (without its query). `/` is [`Target::Root`].
pub fn request_target(raw: &str) -> Result<Target, PathRefusal> {
    let Some(rest) = raw.strip_prefix('/') else {
        return Err(PathRefusal::NotAbsolute);
    };
    let decoded = percent_encoding::percent_decode_str(rest)
        .decode_utf8()
        .map_err(|_| PathRefusal::Encoding)?;
    if decoded.contains('\\') {
        return Err(PathRefusal::Unsafe(PathError::Backslash {
            path: decoded.into_owned(),
        }));
    }
    if decoded.is_empty() {
        return Ok(Target::Root);
    }
    // A second leading slash (`//etc/passwd`, `/%2fetc`) is an absolute path, not a root-relative
    // one with an empty first name.
    let rel =
        safe_path::relative_path(&decoded, "the served directory").map_err(PathRefusal::Unsafe)?;
    Ok(Target::Path {
        rel,
        dir: decoded.ends_with('/'),
    })
}

/// What is at a checked relative path.
#[derive(Debug)]
pub enum Found {
    File { file: File, len: u64 },
    Dir(PathBuf),
    Missing,
}

/// Opens `rel` (from [`request_target`]) under `root` without following any symbolic link:
/// every component is checked with `lstat`, the file is opened with `O_NOFOLLOW`.
pub fn open_under(root: &Path, rel: &str) -> Result<Found, PathRefusal> {
    let mut cur = root.to_path_buf();
    for c in rel.split('/') {
        cur.push(c);
        match std::fs::symlink_metadata(&cur) {
            Ok(m) if m.file_type().is_symlink() => return Err(PathRefusal::Symlink(rel.into())),
            Ok(_) => {}
            Err(_) => return Ok(Found::Missing),
        }
    }
    let meta = match std::fs::symlink_metadata(&cur) {
        Ok(m) => m,
        Err(_) => return Ok(Found::Missing),
    };
    if meta.is_dir() {
        return Ok(Found::Dir(cur));
    }
    if !meta.is_file() {
        return Ok(Found::Missing);
    }
    match open_nofollow(&cur) {
        Ok(file) => {
            let len = file.metadata().map(|m| m.len()).unwrap_or(0);
            Ok(Found::File { file, len })
        }
        Err(e) if e.raw_os_error() == Some(libc::ELOOP) => Err(PathRefusal::Symlink(rel.into())),
        Err(_) => Ok(Found::Missing),
    }
}

/// Opens a file for reading, refusing a symbolic link as the last component.
pub fn open_nofollow(path: &Path) -> io::Result<File> {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)
}

/// The entries of a directory for a listing (names, `/` after directories), sorted; symbolic
/// links are left out.
pub fn list_dir(dir: &Path) -> io::Result<Vec<String>> {
    let mut names = Vec::new();
    for e in std::fs::read_dir(dir)? {
        let e = e?;
        let t = e.file_type()?;
        let name = e.file_name().to_string_lossy().into_owned();
        if t.is_dir() {
            names.push(format!("{name}/"));
        } else if t.is_file() {
            names.push(name);
        }
    }
    names.sort();
    Ok(names)
}

/// The `Content-Type` nginx's `mime.types` gives the files a bundle holds; anything else is
/// `application/octet-stream` (nginx's `default_type` in the bundle's configuration).
pub fn content_type(rel: &str) -> &'static str {
    let name = rel.rsplit('/').next().unwrap_or(rel);
    match name.rsplit_once('.').map(|(_, e)| e) {
        Some("html" | "htm") => "text/html",
        Some("txt" | "list" | "repo" | "sha256" | "sha512") => "text/plain",
        Some("json") => "application/json",
        Some("xml") => "text/xml",
        Some("gz" | "tgz") => "application/gzip",
        Some("tar") => "application/x-tar",
        Some("deb") => "application/vnd.debian.binary-package",
        Some("rpm") => "application/x-redhat-package-manager",
        Some("zip") => "application/zip",
        _ => "application/octet-stream",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rel(raw: &str) -> String {
        match request_target(raw).unwrap() {
            Target::Path { rel, .. } => rel,
            Target::Root => String::new(),
        }
    }

    #[test]
    fn plain_paths_are_normalized() {
        assert_eq!(rel("/files/dl.k8s.io/a"), "files/dl.k8s.io/a");
        assert_eq!(rel("/debian/./amd64//bookworm/"), "debian/amd64/bookworm");
        assert_eq!(rel("/files/a%20b"), "files/a b");
        assert_eq!(rel("/files/127.0.0.1:8081/x"), "files/127.0.0.1:8081/x");
        assert_eq!(request_target("/").unwrap(), Target::Root);
        assert_eq!(
            request_target("/repos/").unwrap(),
            Target::Path {
                rel: "repos".into(),
                dir: true
            }
        );
    }

    #[test]
    fn traversal_is_refused_in_every_spelling_and_position() {
        for bad in [
            "/..",
            "/../etc/passwd",
            "/files/../../etc/passwd",
            "/files/a/..",
            "/%2e%2e/etc/passwd",
            "/files/%2E%2e/%2e%2E/x",
            "/files/.%2e/x",
            "/files/%2e./x",
            "/files%2f..%2f..%2fetc",
            "//etc/passwd",
            "/%2fetc/passwd",
            "/files/a%00b",
            "/files/..%5c..%5cx",
            "/files\\..\\x",
            "/files/%ff",
            "relative",
        ] {
            assert!(request_target(bad).is_err(), "{bad} accepted");
        }
    }

    #[test]
    fn symbolic_links_are_never_followed() {
        let d = tempfile::tempdir().unwrap();
        let root = d.path().join("root");
        std::fs::create_dir_all(root.join("files/sub")).unwrap();
        std::fs::write(root.join("files/sub/a"), b"abc").unwrap();
        std::fs::write(d.path().join("secret"), b"s").unwrap();
        std::os::unix::fs::symlink(d.path().join("secret"), root.join("files/leak")).unwrap();
        std::os::unix::fs::symlink("sub", root.join("files/inside")).unwrap();
        std::os::unix::fs::symlink(d.path(), root.join("out")).unwrap();
        match open_under(&root, "files/sub/a").unwrap() {
            Found::File { len, .. } => assert_eq!(len, 3),
            other => panic!("{other:?}"),
        }
        for link in ["files/leak", "files/inside/a", "out/secret"] {
            assert_eq!(
                open_under(&root, link).unwrap_err(),
                PathRefusal::Symlink(link.into())
            );
        }
        assert!(matches!(
            open_under(&root, "files/nope").unwrap(),
            Found::Missing
        ));
        assert!(matches!(
            open_under(&root, "files/sub").unwrap(),
            Found::Dir(_)
        ));
        assert_eq!(list_dir(&root.join("files")).unwrap(), vec!["sub/"]);
    }

    #[test]
    fn content_types() {
        assert_eq!(content_type("debian/x/Packages.gz"), "application/gzip");
        assert_eq!(content_type("repos/debian12-amd64.list"), "text/plain");
        assert_eq!(
            content_type("files/dl.k8s.io/kubelet"),
            "application/octet-stream"
        );
    }
}
