//! Outputs written under a temporary name (`OUT.partial`) and renamed when complete: on SIGINT
//! or SIGTERM, the partial outputs are removed and the process exits with 130 or 143.
//!
//! Every operation that creates or renames a path of a partial output runs under one lock
//! ([`fs`], [`Partial::complete`]); the signal handler takes that lock and keeps it until the
//! process exits, so a partial output is never created again after it was removed, nor renamed
//! to its final name half-written. Writing into files already open needs no lock: once their
//! names are removed, what is written goes nowhere. After a SIGKILL the `.partial` stays; the
//! final name only ever appears complete, and the next run replaces the stale `.partial`.

use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard, PoisonError};

use anyhow::Context;

/// The partial outputs being written.
static PARTIALS: Mutex<Vec<PathBuf>> = Mutex::new(Vec::new());

fn lock() -> MutexGuard<'static, Vec<PathBuf>> {
    PARTIALS.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Runs `f`, an operation creating or renaming paths of a partial output, so that an
/// interruption happens before or after it, not during it.
pub(crate) fn fs<T>(f: impl FnOnce() -> T) -> T {
    let _guard = lock();
    f()
}

/// Removes a file or a directory tree, if it is there; tells whether it was.
pub(crate) fn remove(path: &Path) -> std::io::Result<bool> {
    match std::fs::symlink_metadata(path) {
        Ok(m) if m.is_dir() => std::fs::remove_dir_all(path).map(|()| true),
        Ok(_) => std::fs::remove_file(path).map(|()| true),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(e),
    }
}

/// A partial output (a file or a directory), removed if the process is interrupted while this
/// lives. Registered before the path is created.
pub(crate) struct Partial {
    path: PathBuf,
}

impl Partial {
    pub fn new(path: PathBuf) -> Partial {
        lock().push(path.clone());
        Partial { path }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Completes the output: `rename` (which gives it its final name) runs under the lock, and
    /// afterwards the output is no longer removed on an interruption.
    pub fn complete<T>(self, rename: impl FnOnce(&Path) -> T) -> T {
        let mut partials = lock();
        let r = rename(&self.path);
        partials.retain(|p| p != &self.path);
        r
    }

    /// Removes the partial output (after a failure).
    pub fn discard(self) {
        let _ = fs(|| remove(&self.path));
    }
}

impl Drop for Partial {
    fn drop(&mut self) {
        lock().retain(|p| p != &self.path);
    }
}

/// Handles SIGINT and SIGTERM from now on: removes the partial outputs, says so on stderr
/// (prefixed with `command`), and exits with 130 (SIGINT) or 143 (SIGTERM).
pub(crate) fn remove_partials_on_signal(
    runtime: &tokio::runtime::Runtime,
    command: &'static str,
) -> anyhow::Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let _entered = runtime.enter();
    let mut int = signal(SignalKind::interrupt()).context("cannot handle SIGINT")?;
    let mut term = signal(SignalKind::terminate()).context("cannot handle SIGTERM")?;
    runtime.spawn(async move {
        let (name, code) = tokio::select! {
            _ = int.recv() => ("SIGINT", 130),
            _ = term.recv() => ("SIGTERM", 143),
        };
        // Blocks on the lock while a path operation finishes; never returns.
        let _ = tokio::task::spawn_blocking(move || interrupted(command, name, code)).await;
    });
    Ok(())
}

fn interrupted(command: &str, signal: &str, code: i32) -> ! {
    let partials = lock();
    let mut removed = Vec::new();
    for p in partials.iter() {
        match remove(p) {
            Ok(true) => removed.push(p.display().to_string()),
            Ok(false) => {}
            Err(e) => eprintln!("{command}: cannot remove {}: {e}", p.display()),
        }
    }
    if removed.is_empty() {
        eprintln!("{command}: interrupted by {signal}; no output was written");
    } else {
        eprintln!(
            "{command}: interrupted by {signal}; removed the partial output {}; rerun the same command to write it",
            removed.join(", ")
        );
    }
    std::process::exit(code);
}
