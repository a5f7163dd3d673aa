//! Ansible variables: loading kubespray's role defaults and vars, and evaluating them lazily.
//!
//! [`VarSet`] holds raw (unrendered) values, each with the file and line it came from, merged with
//! Ansible's precedence: role defaults < facts < role vars < extra vars (`-e`).
//! [`Evaluator`] renders them on demand with an Ansible-compatible Jinja engine (see [`ansible`]).

pub mod ansible;
mod eval;
pub mod version;

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use indexmap::IndexMap;
use minijinja::Value;
use serde_saphyr::Spanned;

use kpbuild_paths::source::{FileSource, LocalDir, join};

pub use eval::{EvalError, Evaluator, UndefinedChainLink};

/// Where a variable's raw value comes from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Origin {
    /// File path as given to the loader, or a description such as `-e` or `--arch`.
    pub file: Arc<str>,
    /// 1-based line, 0 when unknown.
    pub line: usize,
    /// 1-based column, 0 when unknown.
    pub column: usize,
}

impl Origin {
    pub fn described(what: &str) -> Self {
        Origin {
            file: what.into(),
            line: 0,
            column: 0,
        }
    }
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.line == 0 {
            write!(f, "{}", self.file)
        } else {
            write!(f, "{}:{}:{}", self.file, self.line, self.column)
        }
    }
}

/// Ansible's variable precedence levels that kpbuild models, lowest first.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Precedence {
    RoleDefaults,
    Facts,
    RoleVars,
    ExtraVars,
}

/// One variable's raw value.
#[derive(Clone, Debug)]
pub struct VarDef {
    pub value: Value,
    pub origin: Origin,
    pub precedence: Precedence,
}

/// Errors while loading variable files.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("{path}:{line}:{column}: YAML error: {message}")]
    Yaml {
        path: String,
        line: u64,
        column: u64,
        message: String,
    },
    #[error(
        "{dir}: no such directory; point --kubespray (or `vars.kubespray` in the spec) at a kubespray checkout"
    )]
    NoSuchDir { dir: String },
    #[error(
        "{dir}: a file, not a directory; point --kubespray (or `vars.kubespray` in the spec) at a kubespray checkout"
    )]
    NotADir { dir: String },
    #[error(
        "{dir}: not a kubespray checkout: none of kubespray's download variable files is there; looked for\n{}\n  found {found}\n  hint: point --kubespray (or `vars.kubespray` in the spec) at the root of a kubespray checkout (the directory holding `roles/`)",
        Layout::ALL.iter().map(|l| format!("  {} ({})", l.download_vars(), l.versions())).collect::<Vec<_>>().join("\n")
    )]
    NotKubespray {
        dir: String,
        /// What of kubespray's was found instead, as a phrase.
        found: String,
    },
    #[error(
        "extra var `{arg}` is not of the form name=value (or @file.yml); example: -e kube_network_plugin=cilium"
    )]
    BadExtraVar { arg: String },
    #[error(
        "extra var name `{name}` is not a valid variable name (letters, digits and `_`, not starting with a digit)"
    )]
    BadVarName { name: String },
}

/// The kubespray variable-file layouts, told apart by which file holds the download variables
/// (see `Layout::download_vars`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Layout {
    /// `roles/kubespray_defaults/{defaults,vars}/main/*.yml` (underscore; kubespray 2.28 and later).
    V2_28,
    /// `roles/kubespray-defaults/{defaults,vars}/main/*.yml` (hyphen; kubespray 2.24 to 2.27).
    V2_24,
    /// `roles/download/defaults/main/*.yml` + `roles/kubespray-defaults/{defaults,vars}/main.y*ml`
    /// (kubespray 2.23).
    V2_23,
    /// `roles/download/defaults/main.yml` + `roles/kubespray-defaults/{defaults,vars}/main.y*ml`
    /// (kubespray 2.16 to 2.22).
    V2_16,
}

impl Layout {
    /// Newest first: the order they are looked for.
    pub const ALL: [Layout; 4] = [Layout::V2_28, Layout::V2_24, Layout::V2_23, Layout::V2_16];

    /// The file, relative to the checkout, whose presence identifies the layout: the one that
    /// holds kubespray's `*_download_url` variables and `downloads`.
    pub(crate) fn download_vars(self) -> &'static str {
        match self {
            Layout::V2_28 => "roles/kubespray_defaults/defaults/main/download.yml",
            Layout::V2_24 => "roles/kubespray-defaults/defaults/main/download.yml",
            Layout::V2_23 => "roles/download/defaults/main/main.yml",
            Layout::V2_16 => "roles/download/defaults/main.yml",
        }
    }

    /// The kubespray releases that use it.
    pub fn versions(self) -> &'static str {
        match self {
            Layout::V2_28 => "kubespray 2.28 and later",
            Layout::V2_24 => "kubespray 2.24 to 2.27",
            Layout::V2_23 => "kubespray 2.23",
            Layout::V2_16 => "kubespray 2.16 to 2.22",
        }
    }

    /// The role whose defaults and vars hold the general variables.
    fn defaults_role(self) -> &'static str {
        match self {
            Layout::V2_28 => "roles/kubespray_defaults",
            _ => "roles/kubespray-defaults",
        }
    }

    /// Which layout `dir` of `src` has, by what is there.
    pub(crate) fn detect(src: &dyn FileSource, dir: &str) -> Result<Layout, LoadError> {
        if !src.is_dir(dir) {
            return Err(if src.is_file(dir) {
                LoadError::NotADir {
                    dir: src.display(dir),
                }
            } else {
                LoadError::NoSuchDir {
                    dir: src.display(dir),
                }
            });
        }
        if let Some(layout) = Layout::ALL
            .into_iter()
            .find(|l| src.is_file(&join(dir, l.download_vars())))
        {
            return Ok(layout);
        }
        let roles = join(dir, "roles");
        let found = if !src.is_dir(&roles) {
            "no `roles/` directory".to_string()
        } else {
            let names: Vec<String> = src
                .list_dir(&roles)
                .unwrap_or_default()
                .into_iter()
                .filter(|n| n.contains("kubespray") || n == "download")
                .filter(|n| src.is_dir(&join(&roles, n)))
                .map(|n| format!("roles/{n}/"))
                .collect();
            if names.is_empty() {
                "`roles/` without kubespray's roles (no roles/kubespray_defaults, roles/kubespray-defaults or roles/download)".to_string()
            } else {
                names.join(", ")
            }
        };
        Err(LoadError::NotKubespray {
            dir: src.display(dir),
            found,
        })
    }
}

/// A set of raw variables merged by precedence.
#[derive(Clone, Debug, Default)]
pub struct VarSet {
    defs: IndexMap<String, VarDef>,
    /// Each loaded file with the top-level names it defines, in load order.
    files: Vec<(PathBuf, Vec<String>)>,
}

impl VarSet {
    pub fn new() -> Self {
        Self::default()
    }

    /// Loads a kubespray checkout's defaults and vars, in either layout.
    pub fn load_kubespray(dir: &Path) -> Result<(VarSet, Layout), LoadError> {
        let mut set = VarSet::new();
        let layout = set.add_kubespray(&LocalDir::new(dir), "")?;
        Ok((set, layout))
    }

    /// Adds the defaults and vars of the kubespray checkout at `dir` of `src` to this set, in
    /// whichever [`Layout`] it has.
    pub fn add_kubespray(&mut self, src: &dyn FileSource, dir: &str) -> Result<Layout, LoadError> {
        let layout = Layout::detect(src, dir)?;
        let defaults_role = join(dir, layout.defaults_role());
        // Role defaults are one level: the roles load in play order (kubespray-defaults, then
        // download), a later file winning over an earlier one, as Ansible does. From 2.24 the
        // download role has no defaults of its own; what is there is loaded all the same.
        for file in role_files(src, &defaults_role, "defaults")? {
            self.load_source_file(src, &file, Precedence::RoleDefaults)?;
        }
        for file in role_files(src, &join(dir, "roles/download"), "defaults")? {
            self.load_source_file(src, &file, Precedence::RoleDefaults)?;
        }
        for file in role_files(src, &defaults_role, "vars")? {
            self.load_source_file(src, &file, Precedence::RoleVars)?;
        }
        Ok(layout)
    }

    /// Loads one variable file of `src` at the given precedence.
    pub fn load_source_file(
        &mut self,
        src: &dyn FileSource,
        path: &str,
        precedence: Precedence,
    ) -> Result<(), LoadError> {
        let shown = src.display(path);
        let text = src.read_to_string(path).map_err(|source| LoadError::Read {
            path: shown.clone(),
            source,
        })?;
        self.load_str(&text, Path::new(&shown), precedence)
    }

    /// Loads one YAML file of top-level variables at the given precedence.
    pub(crate) fn load_file(
        &mut self,
        path: &Path,
        precedence: Precedence,
    ) -> Result<(), LoadError> {
        let text = std::fs::read_to_string(path).map_err(|source| LoadError::Read {
            path: path.display().to_string(),
            source,
        })?;
        self.load_str(&text, path, precedence)
    }

    /// Loads YAML text of top-level variables; `path` is used in origins and errors.
    pub fn load_str(
        &mut self,
        text: &str,
        path: &Path,
        precedence: Precedence,
    ) -> Result<(), LoadError> {
        let file: Arc<str> = path.display().to_string().into();
        let map = parse_var_file(text).map_err(|(line, column, message)| LoadError::Yaml {
            path: path.display().to_string(),
            line,
            column,
            message,
        })?;
        let mut names = Vec::with_capacity(map.len());
        for (name, value) in map {
            names.push(name.value.clone());
            let origin = Origin {
                file: file.clone(),
                line: name.referenced.line() as usize,
                column: name.referenced.column() as usize,
            };
            self.set(name.value, value, origin, precedence);
        }
        self.files.push((path.to_path_buf(), names));
        Ok(())
    }

    /// Sets a variable unless one of higher precedence is already set.
    pub fn set(
        &mut self,
        name: impl Into<String>,
        value: Value,
        origin: Origin,
        precedence: Precedence,
    ) {
        let name = name.into();
        match self.defs.get(&name) {
            Some(existing) if existing.precedence > precedence => {}
            _ => {
                self.defs.insert(
                    name,
                    VarDef {
                        value,
                        origin,
                        precedence,
                    },
                );
            }
        }
    }

    /// Parses and sets one `-e` argument: `name=value` (value read as a YAML scalar, so
    /// `true`, `3` and `v1.2` keep their types) or `@file.yml` (a YAML mapping).
    pub(crate) fn add_extra_arg(&mut self, arg: &str) -> Result<(), LoadError> {
        if let Some(path) = arg.strip_prefix('@') {
            return self.load_file(Path::new(path), Precedence::ExtraVars);
        }
        let Some((name, raw)) = arg.split_once('=') else {
            return Err(LoadError::BadExtraVar {
                arg: arg.to_string(),
            });
        };
        let name = name.trim();
        if !is_var_name(name) {
            return Err(LoadError::BadVarName {
                name: name.to_string(),
            });
        }
        let value = parse_scalar(raw);
        self.set(
            name,
            value,
            Origin::described(&format!("-e {arg}")),
            Precedence::ExtraVars,
        );
        Ok(())
    }

    pub fn get(&self, name: &str) -> Option<&VarDef> {
        self.defs.get(name)
    }

    pub fn contains(&self, name: &str) -> bool {
        self.defs.contains_key(name)
    }

    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.defs.keys().map(String::as_str)
    }

    pub fn len(&self) -> usize {
        self.defs.len()
    }

    pub fn is_empty(&self) -> bool {
        self.defs.is_empty()
    }

    /// The files loaded, in load order, each with the top-level names it defines.
    pub fn files(&self) -> &[(PathBuf, Vec<String>)] {
        &self.files
    }
}

/// The YAML files of a role's `defaults` or `vars`: `main.yml`/`main.yaml`, or every
/// `*.yml`/`*.yaml` in `main/`, sorted by name (Ansible's order).
fn role_files(src: &dyn FileSource, role: &str, kind: &str) -> Result<Vec<String>, LoadError> {
    let base = join(role, kind);
    let mut out = Vec::new();
    for name in ["main.yml", "main.yaml"] {
        let p = join(&base, name);
        if src.is_file(&p) {
            out.push(p);
        }
    }
    let dir = join(&base, "main");
    if src.is_dir(&dir) {
        let names = src.list_dir(&dir).map_err(|source| LoadError::Read {
            path: src.display(&dir),
            source,
        })?;
        for name in names {
            let p = join(&dir, &name);
            if (name.ends_with(".yml") || name.ends_with(".yaml")) && src.is_file(&p) {
                out.push(p);
            }
        }
    }
    Ok(out)
}

/// Deepest nesting of a variable file's YAML.
pub(crate) const MAX_VAR_DEPTH: usize = 48;
/// Largest variable file read, in bytes (kubespray's largest is ~100 KiB).
pub(crate) const MAX_VAR_FILE_BYTES: usize = 16 << 20;

/// YAML options matching Ansible's loader (PyYAML, YAML 1.1) where it matters for variables:
/// `0755` is octal, `yes`/`no` are booleans; duplicate keys: the last one wins.
fn ansible_yaml_options() -> serde_saphyr::Options {
    serde_saphyr::options! {
        legacy_octal_numbers: true,
        duplicate_keys: serde_saphyr::options::DuplicateKeyPolicy::LastWins,
        // Bounded so that hostile or broken input fails quickly with an error, never with a
        // stack overflow or a memory blow-up: nesting beyond ~80 levels overflowed a 2 MiB
        // thread stack (debug build) while deserializing; kubespray nests a handful of levels.
        budget: serde_saphyr::budget! {
            max_depth: MAX_VAR_DEPTH,
            max_events: 5_000_000,
            max_aliases: 10_000,
        },
    }
}

/// A YAML error: line, column (0 when unknown) and the message with the offending lines.
type YamlFailure = (u64, u64, String);

fn parse_var_file(text: &str) -> Result<IndexMap<Spanned<String>, Value>, YamlFailure> {
    if text.len() > MAX_VAR_FILE_BYTES {
        return Err((
            0,
            0,
            format!(
                "the file is {} bytes, more than the {} a variable file may have",
                text.len(),
                MAX_VAR_FILE_BYTES
            ),
        ));
    }
    if text.trim().is_empty()
        || text
            .lines()
            .all(|l| l.trim().is_empty() || l.trim_start().starts_with('#') || l.trim() == "---")
    {
        return Ok(IndexMap::new());
    }
    serde_saphyr::from_str_with_options(text, ansible_yaml_options()).map_err(|e| {
        let (line, column) = e
            .location()
            .map(|l| (l.line(), l.column()))
            .unwrap_or((0, 0));
        let text = e.to_string();
        let text = text.strip_prefix("error: ").unwrap_or(&text);
        let message = match text.split_once(": ") {
            Some((loc, rest)) if loc.starts_with("line ") => rest.to_string(),
            _ => text.to_string(),
        };
        (line, column, message)
    })
}

/// Reads a YAML scalar the way a `-e name=value` user means it.
pub(crate) fn parse_scalar(raw: &str) -> Value {
    if raw.is_empty() {
        return Value::from("");
    }
    match serde_saphyr::from_str_with_options::<Value>(raw, ansible_yaml_options()) {
        Ok(v) if !v.is_none() || matches!(raw.trim(), "null" | "~" | "None") => v,
        _ => Value::from(raw),
    }
}

pub(crate) fn is_var_name(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn precedence_keeps_the_highest() {
        let mut set = VarSet::new();
        set.set(
            "a",
            Value::from(1),
            Origin::described("d"),
            Precedence::RoleDefaults,
        );
        set.set(
            "a",
            Value::from(2),
            Origin::described("x"),
            Precedence::ExtraVars,
        );
        set.set(
            "a",
            Value::from(3),
            Origin::described("v"),
            Precedence::RoleVars,
        );
        assert_eq!(set.get("a").unwrap().value, Value::from(2));
        set.set(
            "b",
            Value::from(1),
            Origin::described("d"),
            Precedence::RoleDefaults,
        );
        set.set(
            "b",
            Value::from(2),
            Origin::described("d2"),
            Precedence::RoleDefaults,
        );
        assert_eq!(
            set.get("b").unwrap().value,
            Value::from(2),
            "later file at one level wins"
        );
    }

    #[test]
    fn extra_args_are_typed_scalars() {
        let mut set = VarSet::new();
        set.add_extra_arg("x=true").unwrap();
        set.add_extra_arg("y=3").unwrap();
        set.add_extra_arg("z=cilium").unwrap();
        set.add_extra_arg("w=").unwrap();
        assert_eq!(set.get("x").unwrap().value, Value::from(true));
        assert_eq!(set.get("y").unwrap().value, Value::from(3));
        assert_eq!(set.get("z").unwrap().value, Value::from("cilium"));
        assert_eq!(set.get("w").unwrap().value, Value::from(""));
        assert!(matches!(
            set.add_extra_arg("novalue"),
            Err(LoadError::BadExtraVar { .. })
        ));
        assert!(matches!(
            set.add_extra_arg("9x=1"),
            Err(LoadError::BadVarName { .. })
        ));
    }

    #[test]
    fn yaml_error_names_file_and_line() {
        let mut set = VarSet::new();
        let err = set
            .load_str(
                "a: 1\nb: [unclosed\nc: 2\n",
                Path::new("roles/x/defaults/main.yml"),
                Precedence::RoleDefaults,
            )
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with("roles/x/defaults/main.yml:3:2: YAML error:"),
            "{err}"
        );
    }

    fn nested_block(depth: usize) -> String {
        (0..depth)
            .map(|i| format!("{}k{i}:\n", "  ".repeat(i)))
            .collect::<String>()
            + &format!("{}leaf: '{{{{ 1 + 1 }}}}'\n", "  ".repeat(depth))
    }

    #[test]
    fn deep_nesting_is_bounded_and_the_allowed_depth_renders() {
        // At the limit (the leaf mapping is one level more): loads and renders on a 2 MiB
        // test-thread stack.
        let mut set = VarSet::new();
        set.load_str(
            &nested_block(MAX_VAR_DEPTH - 1),
            Path::new("deep.yml"),
            Precedence::RoleDefaults,
        )
        .unwrap();
        let ev = Evaluator::new(set);
        let mut v = ev.var("k0").unwrap();
        for i in 1..MAX_VAR_DEPTH - 1 {
            v = v.get_attr(&format!("k{i}")).unwrap();
        }
        assert_eq!(v.get_attr("leaf").unwrap(), Value::from(2));
        // Far beyond it (where the stack overflowed before): an error, at once.
        for text in [
            nested_block(400),
            format!("a: {}{}\n", "[".repeat(5000), "]".repeat(5000)),
            format!("a: {}{}\n", "{b: ".repeat(5000), "}".repeat(5000)),
        ] {
            let e = VarSet::new()
                .load_str(&text, Path::new("deep.yml"), Precedence::RoleDefaults)
                .unwrap_err()
                .to_string();
            assert!(
                e.starts_with("deep.yml:") && e.contains("YAML error"),
                "{e}"
            );
        }
    }

    #[test]
    fn alias_bombs_and_huge_files_are_refused() {
        // Nine levels of ten aliases each: 10^9 scalars if expanded.
        let mut bomb = String::from("a0: &a0 [x, x, x, x, x, x, x, x, x, x]\n");
        for i in 1..9 {
            let refs = vec![format!("*a{}", i - 1); 10].join(", ");
            bomb.push_str(&format!("a{i}: &a{i} [{refs}]\n"));
        }
        let e = VarSet::new()
            .load_str(&bomb, Path::new("bomb.yml"), Precedence::RoleDefaults)
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with("bomb.yml:") && e.contains("YAML error"),
            "{e}"
        );
        let huge = format!("a: '{}'\n", "x".repeat(MAX_VAR_FILE_BYTES));
        let e = VarSet::new()
            .load_str(&huge, Path::new("huge.yml"), Precedence::RoleDefaults)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("more than the 16777216 a variable file may have"),
            "{e}"
        );
    }

    /// A checkout of each layout, holding only what tells it apart plus a general variable.
    fn checkout(layout: Layout) -> kpbuild_paths::source::MemSource {
        let mut src = kpbuild_paths::source::MemSource::new("context");
        let general = match layout {
            Layout::V2_28 => "ks/roles/kubespray_defaults/defaults/main/main.yml",
            Layout::V2_24 => "ks/roles/kubespray-defaults/defaults/main/main.yml",
            Layout::V2_23 | Layout::V2_16 => "ks/roles/kubespray-defaults/defaults/main.yaml",
        };
        src.insert(general, "kube_version: v1.0.0\nwho: general\n".into());
        src.insert(
            &format!("ks/{}", layout.download_vars()),
            "who: download\ndownloads: {}\n".into(),
        );
        src
    }

    #[test]
    fn every_layout_is_found_by_what_is_there() {
        for layout in Layout::ALL {
            let mut set = VarSet::new();
            assert_eq!(set.add_kubespray(&checkout(layout), "ks").unwrap(), layout);
            assert!(set.contains("downloads") && set.contains("kube_version"));
            // Up to 2.23 the download role's defaults load after the general role's, as in a
            // play; from 2.24 both are files of one directory, read in name order.
            let who = match layout {
                Layout::V2_23 | Layout::V2_16 => "download",
                Layout::V2_28 | Layout::V2_24 => "general",
            };
            assert_eq!(
                set.get("who").unwrap().value,
                Value::from(who),
                "{layout:?}"
            );
        }
    }

    #[test]
    fn no_layout_names_what_was_looked_for_and_found() {
        let mut src = kpbuild_paths::source::MemSource::new("context");
        src.insert("ks/roles/kubespray-default/defaults/x.yml", "a: 1\n".into());
        src.insert("ks/roles/other/tasks/main.yml", "- x\n".into());
        let e = VarSet::new()
            .add_kubespray(&src, "ks")
            .unwrap_err()
            .to_string();
        for want in [
            "not a kubespray checkout",
            "roles/kubespray_defaults/defaults/main/download.yml (kubespray 2.28 and later)",
            "roles/kubespray-defaults/defaults/main/download.yml (kubespray 2.24 to 2.27)",
            "roles/download/defaults/main/main.yml (kubespray 2.23)",
            "roles/download/defaults/main.yml (kubespray 2.16 to 2.22)",
            "found roles/kubespray-default/\n",
        ] {
            assert!(e.contains(want), "{want:?} in {e}");
        }
        let e = VarSet::new()
            .add_kubespray(&src, "nope")
            .unwrap_err()
            .to_string();
        assert!(e.contains("nope: no such directory"), "{e}");
        let e = VarSet::new()
            .add_kubespray(&src, "ks/roles/other/tasks/main.yml")
            .unwrap_err()
            .to_string();
        assert!(e.contains("a file, not a directory"), "{e}");
        let e = VarSet::new()
            .add_kubespray(&src, "ks/roles")
            .unwrap_err()
            .to_string();
        assert!(e.contains("found no `roles/` directory"), "{e}");
    }

    #[test]
    fn origins_carry_lines_and_order_is_kept() {
        let mut set = VarSet::new();
        set.load_str(
            "---\n# c\nfirst: 1\nsecond:\n  b: 1\n  a: 2\n",
            Path::new("f.yml"),
            Precedence::RoleDefaults,
        )
        .unwrap();
        assert_eq!(set.get("first").unwrap().origin.to_string(), "f.yml:3:1");
        assert_eq!(set.get("second").unwrap().origin.line, 4);
        let keys: Vec<String> = set
            .get("second")
            .unwrap()
            .value
            .try_iter()
            .unwrap()
            .map(|k| k.to_string())
            .collect();
        assert_eq!(keys, ["b", "a"]);
    }
}
