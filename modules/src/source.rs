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

    fn full(&self, path: &str) -> PathBuf {
        if path.is_empty() || path == "." {
            self.root.clone()
        } else {
            self.root.join(path)
        }
    }
}

impl FileSource for LocalDir {
    fn read_to_string(&self, path: &str) -> io::Result<String> {
        std::fs::read_to_string(self.full(path))
    }

    fn is_file(&self, path: &str) -> bool {
        self.full(path).is_file()
    }

    fn is_dir(&self, path: &str) -> bool {
        self.full(path).is_dir()
    }

    fn list_dir(&self, path: &str) -> io::Result<Vec<String>> {
        let mut names: Vec<String> = std::fs::read_dir(self.full(path))?
            .filter_map(|e| e.ok().map(|e| e.file_name().to_string_lossy().into_owned()))
            .collect();
        names.sort();
        Ok(names)
    }

    fn display(&self, path: &str) -> String {
        self.full(path).display().to_string()
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
