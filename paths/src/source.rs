//! Where the spec's inputs are read from: a directory on disk for the CLI, the BuildKit build
//! context for the frontend. Paths are relative to the source's root, `/`-separated.

use std::io;
use std::path::{Path, PathBuf};

/// Read-only access to a tree of files.
pub trait FileSource {
    /// The whole file as UTF-8 text.
    fn read_to_string(&self, path: &str) -> io::Result<String>;
    fn is_file(&self, path: &str) -> bool;
    fn is_dir(&self, path: &str) -> bool;
    /// Names of the entries of a directory, sorted.
    fn list_dir(&self, path: &str) -> io::Result<Vec<String>>;
    /// How to show `path` to a user (for error messages).
    fn display(&self, path: &str) -> String;
    /// Whether `path` may be read at all: an error saying why not (it leaves the source).
    fn check(&self, _path: &str) -> io::Result<()> {
        Ok(())
    }
}

/// A directory on the local filesystem.
#[derive(Clone, Debug)]
pub struct LocalDir {
    root: PathBuf,
}

impl LocalDir {
    pub fn new(root: impl Into<PathBuf>) -> Self {
        LocalDir { root: root.into() }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The path on disk, refused when it leaves the directory (`..`, absolute, or through a
    /// symbolic link to the outside: BuildKit would send the link, not its target).
    fn full(&self, path: &str) -> io::Result<PathBuf> {
        crate::safe_path::resolve_within(&self.root, path, &self.within())
            .map_err(crate::safe_path::PathError::into_io)
    }

    fn within(&self) -> String {
        format!("the build context {}", self.root.display())
    }
}

impl FileSource for LocalDir {
    fn read_to_string(&self, path: &str) -> io::Result<String> {
        std::fs::read_to_string(self.full(path)?)
    }

    fn is_file(&self, path: &str) -> bool {
        self.full(path).is_ok_and(|p| p.is_file())
    }

    fn is_dir(&self, path: &str) -> bool {
        self.full(path).is_ok_and(|p| p.is_dir())
    }

    fn list_dir(&self, path: &str) -> io::Result<Vec<String>> {
        let mut names: Vec<String> = std::fs::read_dir(self.full(path)?)?
            .filter_map(|e| e.ok().map(|e| e.file_name().to_string_lossy().into_owned()))
            .collect();
        names.sort();
        Ok(names)
    }

    fn check(&self, path: &str) -> io::Result<()> {
        self.full(path).map(|_| ())
    }

    fn display(&self, path: &str) -> String {
        if path.is_empty() || path == "." {
            self.root.display().to_string()
        } else {
            self.root.join(path).display().to_string()
        }
    }
}

/// Joins `/`-separated relative paths.
pub fn join(base: &str, rel: &str) -> String {
    let base = base.trim_end_matches('/');
    if base.is_empty() || base == "." {
        rel.to_string()
    } else {
        format!("{base}/{rel}")
    }
}

/// Files held in memory (what the frontend read from the build context).
#[derive(Clone, Debug, Default)]
pub struct MemSource {
    /// Path → content, for files.
    files: std::collections::BTreeMap<String, String>,
    /// Directory paths (every ancestor of a file is one too).
    dirs: std::collections::BTreeSet<String>,
    /// Shown before paths in messages (e.g. `build context`).
    label: String,
}

impl MemSource {
    pub fn new(label: impl Into<String>) -> Self {
        let mut dirs = std::collections::BTreeSet::new();
        dirs.insert(String::new());
        MemSource {
            files: Default::default(),
            dirs,
            label: label.into(),
        }
    }

    /// Adds a file (and its parent directories).
    pub fn insert(&mut self, path: &str, content: String) {
        let path = normalize(path);
        let mut parent = path.as_str();
        while let Some((p, _)) = parent.rsplit_once('/') {
            self.dirs.insert(p.to_string());
            parent = p;
        }
        self.files.insert(path, content);
    }

    /// Adds an empty directory.
    pub fn insert_dir(&mut self, path: &str) {
        let path = normalize(path);
        let mut p = path.as_str();
        loop {
            self.dirs.insert(p.to_string());
            match p.rsplit_once('/') {
                Some((parent, _)) => p = parent,
                None => break,
            }
        }
    }

    pub fn len(&self) -> usize {
        self.files.len()
    }

    pub fn is_empty(&self) -> bool {
        self.files.is_empty()
    }
}

fn normalize(path: &str) -> String {
    path.trim_start_matches("./").trim_matches('/').to_string()
}

impl FileSource for MemSource {
    fn read_to_string(&self, path: &str) -> io::Result<String> {
        self.files.get(&normalize(path)).cloned().ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::NotFound,
                format!("{} not found", self.display(path)),
            )
        })
    }

    fn is_file(&self, path: &str) -> bool {
        self.files.contains_key(&normalize(path))
    }

    fn is_dir(&self, path: &str) -> bool {
        self.dirs.contains(&normalize(path))
    }

    fn list_dir(&self, path: &str) -> io::Result<Vec<String>> {
        let dir = normalize(path);
        if !self.dirs.contains(&dir) {
            return Err(io::Error::new(
                io::ErrorKind::NotFound,
                format!("{} not found", self.display(path)),
            ));
        }
        let prefix = if dir.is_empty() {
            String::new()
        } else {
            format!("{dir}/")
        };
        let mut names: std::collections::BTreeSet<String> = std::collections::BTreeSet::new();
        for p in self.files.keys().chain(self.dirs.iter()) {
            if let Some(rest) = p.strip_prefix(&prefix)
                && !rest.is_empty()
                && p != &dir
            {
                names.insert(rest.split('/').next().unwrap_or(rest).to_string());
            }
        }
        Ok(names.into_iter().collect())
    }

    fn display(&self, path: &str) -> String {
        if self.label.is_empty() {
            normalize(path)
        } else {
            format!("{}:{}", self.label, normalize(path))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn local_dir_stays_inside() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("ctx");
        std::fs::create_dir_all(root.join("d")).unwrap();
        std::fs::write(root.join("d/f.yml"), "a: 1").unwrap();
        std::fs::write(dir.path().join("secret.yml"), "s: 1").unwrap();
        std::os::unix::fs::symlink("../secret.yml", root.join("link.yml")).unwrap();
        let l = LocalDir::new(&root);
        assert_eq!(l.read_to_string("d/f.yml").unwrap(), "a: 1");
        assert!(l.is_dir("d") && l.is_file("d/f.yml") && l.is_dir(""));
        for p in ["../secret.yml", "link.yml", "d/../../secret.yml"] {
            let e = l.read_to_string(p).unwrap_err();
            assert_eq!(e.kind(), io::ErrorKind::PermissionDenied, "{p}");
            assert!(e.to_string().contains("the build context"), "{p}: {e}");
            assert!(!l.is_file(p), "{p}");
            assert!(l.check(p).is_err(), "{p}");
        }
        assert!(l.list_dir("..").is_err());
        let abs = dir.path().join("secret.yml");
        assert!(l.read_to_string(abs.to_str().unwrap()).is_err());
    }

    #[test]
    fn mem_source_behaves_like_a_tree() {
        let mut m = MemSource::new("");
        m.insert("ks/roles/a/defaults/main.yml", "a: 1".into());
        m.insert("ks/roles/b/x.yml", "b: 1".into());
        m.insert_dir("ks/empty");
        assert!(
            m.is_dir("ks")
                && m.is_dir("ks/roles/a/defaults")
                && m.is_dir("ks/empty")
                && m.is_dir("")
        );
        assert!(m.is_file("ks/roles/a/defaults/main.yml") && !m.is_file("ks/roles"));
        assert_eq!(m.list_dir("ks").unwrap(), ["empty", "roles"]);
        assert_eq!(m.list_dir("ks/roles").unwrap(), ["a", "b"]);
        assert_eq!(m.read_to_string("./ks/roles/b/x.yml").unwrap(), "b: 1");
        assert!(m.read_to_string("nope").is_err());
    }
}
