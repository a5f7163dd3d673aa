//! The tar layout of an exported bundle: entry order, normalized headers and safe paths.
//!
//! Module images hold the bundle tree from its root (`resources/…`, `kubeplay.lock.json`). The
//! export merges them into one stream under `kubeplay/`, with:
//! - entries in path order, compared component by component (`a`, `a/b`, `a-c` — the order of a
//!   sorted directory walk, which is also the order of each module's layer), so merging the
//!   modules' streams needs no temporary copy;
//! - fixed metadata: uid/gid 0, no user names, one modification time (`SOURCE_DATE_EPOCH`),
//!   modes reduced to 0755 (directories, executables) and 0644;
//! - no entry that could escape the bundle (absolute paths, `..`, links pointing outside,
//!   writes through a link): `safe_path::TarEntryChecker` refuses them with the offending path,
//!   in the merge (`tar_merge`) and when `verify` unpacks a tarball.

use std::cmp::Ordering;

/// The directory every entry of a bundle tarball lives in.
pub const BUNDLE_ROOT: &str = "kubeplay";

/// Compares two relative paths component by component.
pub fn path_order(a: &str, b: &str) -> Ordering {
    a.split('/').cmp(b.split('/'))
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
    fn parents_and_modes() {
        assert_eq!(parents("a/b/c").collect::<Vec<_>>(), ["a", "a/b"]);
        assert_eq!(normalized_mode(false, 0o700), 0o755);
        assert_eq!(normalized_mode(false, 0o600), 0o644);
        assert_eq!(normalized_mode(true, 0o700), 0o755);
    }
}
