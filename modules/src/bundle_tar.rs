//! The tar layout of an exported bundle: entry order, normalized headers and safe paths.
//!
//! Module images hold the bundle tree from its root (`resources/…`, `kubeplay.lock.json`). The
//! export merges them into one stream under `kubeplay/`, with:
//! - entries in path order, compared component by component (`a`, `a/b`, `a-c` — the order of a
//!   sorted directory walk, which is also the order of each module's layer), so merging the
//!   modules' streams needs no temporary copy;
//! - fixed metadata: uid/gid 0, no user names, one modification time (`SOURCE_DATE_EPOCH`),
//!   modes reduced to 0755 (directories, executables) and 0644;
//! - no entry that could escape the bundle: absolute paths, `..`, and links pointing outside are
//!   refused with the offending path.

use std::cmp::Ordering;

/// The directory every entry of a bundle tarball lives in.
pub const BUNDLE_ROOT: &str = "kubeplay";

/// Compares two relative paths component by component.
pub fn path_order(a: &str, b: &str) -> Ordering {
    a.split('/').cmp(b.split('/'))
}

/// Errors on entry paths.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PathError {
    #[error("entry `{0}` has an absolute path")]
    Absolute(String),
    #[error("entry `{0}` climbs out of the bundle with `..`")]
    Parent(String),
    #[error("entry `{0}` is empty or not UTF-8")]
    Empty(String),
    #[error("link `{path}` points outside the bundle (`{target}`)")]
    EscapingLink { path: String, target: String },
}

/// Normalizes an entry path of a layer (`./a/b/` → `a/b`), refusing what could escape.
pub fn normalize_entry(raw: &str) -> Result<String, PathError> {
    if raw.starts_with('/') {
        return Err(PathError::Absolute(raw.into()));
    }
    let mut parts = Vec::new();
    for c in raw.split('/') {
        match c {
            "" | "." => {}
            ".." => return Err(PathError::Parent(raw.into())),
            c => parts.push(c),
        }
    }
    if parts.is_empty() {
        return Err(PathError::Empty(raw.into()));
    }
    Ok(parts.join("/"))
}

/// Checks that a symlink at `path` with `target` stays inside the bundle.
pub fn check_symlink(path: &str, target: &str) -> Result<(), PathError> {
    let escaping = || PathError::EscapingLink {
        path: path.into(),
        target: target.into(),
    };
    if target.starts_with('/') {
        return Err(escaping());
    }
    let mut depth: i64 = path.split('/').count() as i64 - 1;
    for c in target.split('/') {
        match c {
            "" | "." => {}
            ".." => {
                depth -= 1;
                if depth < 0 {
                    return Err(escaping());
                }
            }
            _ => depth += 1,
        }
    }
    Ok(())
}

/// The mode an entry gets in the bundle.
pub fn normalized_mode(is_dir: bool, mode: u32) -> u32 {
    if is_dir || mode & 0o111 != 0 {
        0o755
    } else {
        0o644
    }
}

/// The modification time of every entry: `SOURCE_DATE_EPOCH` when set, else 0.
pub fn source_date_epoch() -> Result<u64, String> {
    match std::env::var("SOURCE_DATE_EPOCH") {
        Ok(v) => v
            .trim()
            .parse()
            .map_err(|_| format!("SOURCE_DATE_EPOCH={v} is not a number of seconds")),
        Err(_) => Ok(0),
    }
}

/// The parent directories of a path, outermost first (`a/b/c` → `a`, `a/b`).
pub fn parents(path: &str) -> impl Iterator<Item = &str> {
    path.match_indices('/').map(move |(i, _)| &path[..i])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn order_is_component_wise() {
        let mut v = vec!["a-c", "a/b", "a", "b", "a/b/c", "a.b"];
        v.sort_by(|x, y| path_order(x, y));
        assert_eq!(v, ["a", "a/b", "a/b/c", "a-c", "a.b", "b"]);
    }

    #[test]
    fn paths_are_normalized_and_checked() {
        assert_eq!(
            normalize_entry("./resources/nginx/").unwrap(),
            "resources/nginx"
        );
        assert_eq!(
            normalize_entry("/etc/passwd"),
            Err(PathError::Absolute("/etc/passwd".into()))
        );
        assert!(matches!(
            normalize_entry("a/../../x"),
            Err(PathError::Parent(_))
        ));
        assert!(matches!(normalize_entry("./"), Err(PathError::Empty(_))));
        assert!(check_symlink("a/b/link", "../c").is_ok());
        assert!(check_symlink("a/link", "../../etc").is_err());
        assert!(check_symlink("a/link", "/etc/passwd").is_err());
        assert_eq!(parents("a/b/c").collect::<Vec<_>>(), ["a", "a/b"]);
        assert_eq!(normalized_mode(false, 0o700), 0o755);
        assert_eq!(normalized_mode(false, 0o600), 0o644);
    }
}
