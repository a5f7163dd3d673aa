//! Paths that come from input — spec paths into the build context, paths in the bundle, tar
//! entries — checked before they touch a filesystem: relative, no `..`, nothing absolute, no
//! way out through a symbolic link.
//!
//! - [`relative_path`]: a `/`-separated path inside some root (the build context, the bundle),
//!   normalized (`./a//b` → `a/b`), refused when absolute, climbing out with `..`, or empty.
//! - `resolve_within`: the same, resolved on disk, refused when a symbolic link on the way
//!   leads outside the root.
//! - [`TarEntryChecker`]: tar entries one by one as an archive lists them: names, symbolic and
//!   hard link targets, and no entry written through a symbolic link an earlier entry made.

use std::collections::BTreeSet;
use std::io;
use std::path::{Path, PathBuf};

/// Why a path is refused. `path` is the path as given; `within` names the root.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum PathError {
    #[error("path {path:?} is empty; name a file or directory in {within}")]
    Empty { path: String, within: String },
    #[error("path {path:?} is absolute; give it relative to {within}")]
    Absolute { path: String, within: String },
    #[error("path {path:?} climbs out of {within} with `..`")]
    ParentDir { path: String, within: String },
    #[error("path {path:?} has a NUL byte")]
    Nul { path: String },
    #[error("path {path:?} has a backslash, a directory separator on Windows; use `/`")]
    Backslash { path: String },
    #[error("path {path:?} leads outside {within} through the symbolic link {link:?}")]
    SymlinkEscapes {
        path: String,
        within: String,
        link: String,
    },
    #[error("symbolic link {entry:?} points at {target:?}, outside {within}")]
    LinkTargetEscapes {
        entry: String,
        target: String,
        within: String,
    },
    #[error("entry {entry:?} would be written through the symbolic link {link:?}")]
    ThroughSymlink { entry: String, link: String },
    #[error("entry {entry:?} would replace the symbolic link of the same name")]
    ReplacesSymlink { entry: String },
}

impl PathError {
    /// The error as an `io::Error` (for [`crate::source::FileSource`] readers).
    pub(crate) fn into_io(self) -> io::Error {
        io::Error::new(io::ErrorKind::PermissionDenied, self.to_string())
    }
}

/// Checks and normalizes a relative `/`-separated path inside `within` (named in errors):
/// `.` components and repeated or trailing slashes are dropped; an absolute path, a `..`
/// component, a NUL byte or nothing left are errors.
pub fn relative_path(path: &str, within: &str) -> Result<String, PathError> {
    if path.contains('\0') {
        return Err(PathError::Nul {
            path: path.to_string(),
        });
    }
    if path.starts_with('/') {
        return Err(PathError::Absolute {
            path: path.to_string(),
            within: within.to_string(),
        });
    }
    let mut parts = Vec::new();
    for c in path.split('/') {
        match c {
            "" | "." => {}
            ".." => {
                return Err(PathError::ParentDir {
                    path: path.to_string(),
                    within: within.to_string(),
                });
            }
            c => parts.push(c),
        }
    }
    if parts.is_empty() {
        return Err(PathError::Empty {
            path: path.to_string(),
            within: within.to_string(),
        });
    }
    Ok(parts.join("/"))
}

/// `root` joined with the relative `path` (checked with [`relative_path`]; an empty path or
/// `.` is the root itself), refused when a symbolic link on the way leads outside `root`.
/// Paths that do not exist (yet) are checked up to their deepest existing ancestor.
pub(crate) fn resolve_within(root: &Path, path: &str, within: &str) -> Result<PathBuf, PathError> {
    let rel = if path.is_empty() || path.trim_matches('/') == "." {
        String::new()
    } else {
        relative_path(path, within)?
    };
    let joined = if rel.is_empty() {
        root.to_path_buf()
    } else {
        root.join(&rel)
    };
    // Without a real root there is nothing to escape from on disk.
    let Ok(real_root) = root.canonicalize() else {
        return Ok(joined);
    };
    let mut cur = root.to_path_buf();
    for c in rel.split('/').filter(|c| !c.is_empty()) {
        cur.push(c);
        match std::fs::symlink_metadata(&cur) {
            Ok(m) if m.file_type().is_symlink() => match cur.canonicalize() {
                Ok(real) if real.starts_with(&real_root) => {}
                // A link whose target is missing, or outside: refused either way (BuildKit
                // sends the link itself, not what it points at).
                _ => {
                    return Err(PathError::SymlinkEscapes {
                        path: path.to_string(),
                        within: within.to_string(),
                        link: cur.strip_prefix(root).unwrap_or(&cur).display().to_string(),
                    });
                }
            },
            Ok(_) => {}
            Err(_) => break,
        }
    }
    Ok(joined)
}

/// What a tar entry is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EntryKind<'a> {
    File,
    Dir,
    /// A symbolic link to this target (as stored: relative to the entry's directory, or
    /// absolute).
    Symlink(&'a str),
    /// A hard link to this other entry (relative to the archive's root).
    Hardlink(&'a str),
}

/// Checks tar entries in archive order before they are extracted under a root: each name is a
/// clean relative path, a symbolic link's target stays inside the root, a hard link names an
/// entry inside it, and no entry is written through (or over) a symbolic link an earlier entry
/// made — the usual ways out of an extraction directory.
#[derive(Clone, Debug, Default)]
pub struct TarEntryChecker {
    symlinks: BTreeSet<String>,
}

const ARCHIVE: &str = "the archive's root";

impl TarEntryChecker {
    pub fn new() -> TarEntryChecker {
        TarEntryChecker::default()
    }

    fn through_symlink(&self, entry: &str, path: &str) -> Result<(), PathError> {
        let mut prefix = String::new();
        for c in path.split('/') {
            if !prefix.is_empty() {
                if self.symlinks.contains(&prefix) {
                    return Err(PathError::ThroughSymlink {
                        entry: entry.to_string(),
                        link: prefix,
                    });
                }
                prefix.push('/');
            }
            prefix.push_str(c);
        }
        Ok(())
    }

    /// Checks one entry; returns its normalized path.
    pub fn check(&mut self, name: &str, kind: EntryKind<'_>) -> Result<String, PathError> {
        if name.contains('\\') {
            return Err(PathError::Backslash {
                path: name.to_string(),
            });
        }
        let path = relative_path(name, ARCHIVE)?;
        self.through_symlink(name, &path)?;
        if self.symlinks.contains(&path) {
            return Err(PathError::ReplacesSymlink {
                entry: name.to_string(),
            });
        }
        match kind {
            EntryKind::File | EntryKind::Dir => {}
            EntryKind::Hardlink(target) => {
                if target.contains('\\') {
                    return Err(PathError::Backslash {
                        path: target.to_string(),
                    });
                }
                let t = relative_path(target, ARCHIVE)?;
                self.through_symlink(name, &t)?;
            }
            EntryKind::Symlink(target) => {
                let escapes = || PathError::LinkTargetEscapes {
                    entry: name.to_string(),
                    target: target.to_string(),
                    within: ARCHIVE.to_string(),
                };
                if target.starts_with('/') || target.contains('\0') || target.is_empty() {
                    return Err(escapes());
                }
                if target.contains('\\') {
                    return Err(PathError::Backslash {
                        path: target.to_string(),
                    });
                }
                // Resolve from the link's directory; its ancestors are real directories (no
                // entry goes through a symbolic link), so the walk is exact as long as the
                // target itself goes through no other link (`x -> up/..` with `up -> .`
                // would climb out of the root).
                let mut at: Vec<&str> = path.split('/').collect();
                at.pop();
                let comps: Vec<&str> = target
                    .split('/')
                    .filter(|c| !c.is_empty() && *c != ".")
                    .collect();
                for (i, c) in comps.iter().enumerate() {
                    if *c == ".." {
                        if at.pop().is_none() {
                            return Err(escapes());
                        }
                    } else {
                        at.push(c);
                        let prefix = at.join("/");
                        if i + 1 < comps.len() && self.symlinks.contains(&prefix) {
                            return Err(PathError::ThroughSymlink {
                                entry: name.to_string(),
                                link: prefix,
                            });
                        }
                    }
                }
                self.symlinks.insert(path.clone());
            }
        }
        Ok(path)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relative_paths_are_normalized_or_refused() {
        assert_eq!(relative_path("a/b", "ctx").unwrap(), "a/b");
        assert_eq!(relative_path("./a//b/./c/", "ctx").unwrap(), "a/b/c");
        assert_eq!(relative_path("a..b/.c", "ctx").unwrap(), "a..b/.c");
        let e = relative_path("../x", "the build context").unwrap_err();
        assert_eq!(
            e.to_string(),
            "path \"../x\" climbs out of the build context with `..`"
        );
        assert!(matches!(
            relative_path("a/../../x", "c"),
            Err(PathError::ParentDir { .. })
        ));
        assert!(matches!(
            relative_path("a/..", "c"),
            Err(PathError::ParentDir { .. })
        ));
        let e = relative_path("/etc/passwd", "the build context").unwrap_err();
        assert!(e.to_string().contains("is absolute"), "{e}");
        assert!(matches!(
            relative_path("", "c"),
            Err(PathError::Empty { .. })
        ));
        assert!(matches!(
            relative_path("././/", "c"),
            Err(PathError::Empty { .. })
        ));
        assert!(matches!(
            relative_path("a\0b", "c"),
            Err(PathError::Nul { .. })
        ));
    }

    #[test]
    fn symlinks_out_of_the_root_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("ctx");
        std::fs::create_dir_all(root.join("inside/sub")).unwrap();
        std::fs::write(root.join("inside/sub/f"), b"x").unwrap();
        let outside = dir.path().join("secret");
        std::fs::write(&outside, b"s").unwrap();
        std::os::unix::fs::symlink(&outside, root.join("out")).unwrap();
        std::os::unix::fs::symlink("../..", root.join("inside/up")).unwrap();
        std::os::unix::fs::symlink("sub", root.join("inside/same")).unwrap();
        std::os::unix::fs::symlink("/nonexistent", root.join("dangling")).unwrap();

        assert_eq!(
            resolve_within(&root, "inside/sub/f", "ctx").unwrap(),
            root.join("inside/sub/f")
        );
        assert_eq!(
            resolve_within(&root, "inside/same/f", "ctx").unwrap(),
            root.join("inside/same/f"),
            "a link that stays inside is fine"
        );
        assert_eq!(
            resolve_within(&root, "not/there/yet", "ctx").unwrap(),
            root.join("not/there/yet")
        );
        assert_eq!(resolve_within(&root, ".", "ctx").unwrap(), root);
        let e = resolve_within(&root, "out", "the build context").unwrap_err();
        assert_eq!(
            e.to_string(),
            "path \"out\" leads outside the build context through the symbolic link \"out\""
        );
        let e = resolve_within(&root, "inside/up/secret", "ctx").unwrap_err();
        assert!(
            matches!(&e, PathError::SymlinkEscapes { link, .. } if link == "inside/up"),
            "{e}"
        );
        assert!(resolve_within(&root, "dangling", "ctx").is_err());
        assert!(resolve_within(&root, "../secret", "ctx").is_err());
    }

    #[test]
    fn tar_entries() {
        let mut c = TarEntryChecker::new();
        assert_eq!(c.check("./a/b.txt", EntryKind::File).unwrap(), "a/b.txt");
        assert_eq!(c.check("a/", EntryKind::Dir).unwrap(), "a");
        // Links that stay inside.
        c.check("a/l1", EntryKind::Symlink("b.txt")).unwrap();
        c.check("a/l2", EntryKind::Symlink("../a/./b.txt")).unwrap();
        c.check("a/h", EntryKind::Hardlink("a/b.txt")).unwrap();
        // The ways out.
        for (name, kind) in [
            ("../x", EntryKind::File),
            ("/etc/passwd", EntryKind::File),
            ("a/../../x", EntryKind::Dir),
            ("a\\..\\..\\x", EntryKind::File),
            ("a/abs", EntryKind::Symlink("/etc")),
            ("a/up", EntryKind::Symlink("../..")),
            ("deep/er/up", EntryKind::Symlink("../../../x")),
            ("a/h2", EntryKind::Hardlink("../outside")),
            ("a/h3", EntryKind::Hardlink("/etc/shadow")),
            ("a/empty", EntryKind::Symlink("")),
        ] {
            assert!(c.check(name, kind).is_err(), "{name} {kind:?} accepted");
        }
        // Through, or over, a link an earlier entry made.
        c.check("a/dir", EntryKind::Symlink(".")).unwrap();
        let e = c.check("a/dir/x", EntryKind::File).unwrap_err();
        assert_eq!(
            e.to_string(),
            "entry \"a/dir/x\" would be written through the symbolic link \"a/dir\""
        );
        assert!(matches!(
            c.check("a/dir", EntryKind::File),
            Err(PathError::ReplacesSymlink { .. })
        ));
        assert!(matches!(
            c.check("a/h4", EntryKind::Hardlink("a/dir/b.txt")),
            Err(PathError::ThroughSymlink { .. })
        ));
        // The classic: a link to the parent, then an entry through it.
        let mut c = TarEntryChecker::new();
        c.check("up", EntryKind::Symlink(".")).unwrap();
        assert!(c.check("up/../../etc/x", EntryKind::File).is_err());
        assert!(c.check("up/x", EntryKind::File).is_err());
        // A link whose target goes through another link (`up/..` is the root's parent).
        assert!(matches!(
            c.check("x", EntryKind::Symlink("up/..")),
            Err(PathError::ThroughSymlink { .. })
        ));
        // A link to a link is fine: the last component is not gone through.
        c.check("y", EntryKind::Symlink("up")).unwrap();
    }
}
