//! The bundle spec: `Dockerfile.bundle`.
//!
//! The file's first line is `# syntax=<kpbuild frontend image>` (so `docker build` hands it to
//! kpbuild's frontend); the rest is one YAML document: bundle name and version, platforms,
//! where variables come from, URL and registry mirrors, and the modules with their options.
//! Parsing is typed (serde), unknown keys are rejected, and every error carries
//! `file:line:column`, the offending lines and a hint. See the README for the full format.

use std::collections::BTreeSet;
use std::fmt;
use std::path::{Path, PathBuf};

use indexmap::IndexMap;
use serde::{Deserialize, Serialize};

pub use crate::kinds::Module;
use crate::kinds::Validator;
use kpbuild_oci::image_ref::{Mirror, MirrorError};
use kpbuild_oci::platform::{Arch, Platform};

/// The whole spec.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Spec {
    /// Bundle name, e.g. `kubeplay`; names the module images and the output file.
    pub name: String,
    /// Bundle version, e.g. `v0.1.0`.
    pub version: String,
    /// The creation time of the bundle's SBOMs, in seconds since the epoch, when the build
    /// passes no `SOURCE_DATE_EPOCH` (default: the epoch itself).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_date_epoch: Option<u64>,
    /// Target platforms; default `[linux/amd64]`.
    #[serde(
        default = "default_platforms",
        deserialize_with = "kpbuild_oci::platform::deserialize_bundle_platforms"
    )]
    pub platforms: Vec<Platform>,
    /// Where the Ansible variables come from.
    #[serde(default)]
    pub vars: VarsSpec,
    /// URL prefix mirrors for file downloads: content from `to` (one location or a list tried
    /// in order), paths from `from`.
    #[serde(default)]
    pub mirrors: Vec<UrlMirror>,
    /// Registry mirrors for images: fetch from `to`, store under the upstream name.
    #[serde(default)]
    pub registry_mirrors: Vec<RegistryMirror>,
    /// Modules by name, in build order of the bundle.
    pub modules: IndexMap<String, Module>,
}

impl Spec {
    /// The registry mirrors as rules the image code applies (`from=to`), in spec order.
    pub fn registry_mirrors(&self) -> Result<Vec<Mirror>, MirrorError> {
        self.registry_mirrors
            .iter()
            .map(|m| format!("{}={}", m.from, m.to).parse())
            .collect()
    }
}

fn default_platforms() -> Vec<Platform> {
    vec![Platform::linux(Arch::Amd64)]
}

/// Variable sources.
#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct VarsSpec {
    /// A kubespray checkout in the build context (either variable layout).
    pub kubespray: Option<String>,
    /// More variable files in the build context, at extra-vars precedence, in order.
    #[serde(default)]
    pub files: Vec<String>,
    /// Extra variables, like `-e name=value` (highest precedence).
    #[serde(default)]
    pub extra: IndexMap<String, serde_json::Value>,
}

#[derive(Clone, Debug, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct UrlMirror {
    pub from: String,
    /// One URL prefix, or several tried in order (the upstream prefix itself may be the last).
    pub to: MirrorTargets,
}

/// The `to` of a URL mirror: one URL prefix or a list of them.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq, Eq)]
#[serde(untagged)]
pub enum MirrorTargets {
    One(String),
    Many(Vec<String>),
}

impl MirrorTargets {
    /// The prefixes, in the order they are tried.
    pub fn all(&self) -> Vec<&str> {
        match self {
            MirrorTargets::One(s) => vec![s.as_str()],
            MirrorTargets::Many(v) => v.iter().map(String::as_str).collect(),
        }
    }
}

impl From<&str> for MirrorTargets {
    fn from(s: &str) -> Self {
        MirrorTargets::One(s.to_string())
    }
}

#[derive(Clone, Debug, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct RegistryMirror {
    /// Upstream registry host (and optional path prefix), e.g. `quay.io`.
    pub from: String,
    /// Mirror, e.g. `127.0.0.1:5000/quay.io`.
    pub to: String,
}

/// Which generated list a module takes from kubespray.
#[derive(Clone, Copy, Debug, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum ListSelection {
    /// Everything kubespray can download (`generate_list.sh`'s lists).
    All,
    /// Only what the configured cluster enables (`kpbuild lists --enabled-only`).
    #[default]
    Enabled,
    /// Nothing generated: only the module's `extra` entries.
    None,
}

/// A value that is either the same for every architecture or given per architecture
/// (`{amd64: …, arm64: …}`).
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
#[serde(untagged)]
pub enum PerArch<T> {
    Same(T),
    ByArch(IndexMap<String, T>),
}

impl<T> PerArch<T> {
    pub(crate) fn for_arch(&self, arch: Arch) -> Option<&T> {
        match self {
            PerArch::Same(v) => Some(v),
            PerArch::ByArch(m) => m.get(arch.image_arch()),
        }
    }
}

impl<'de> Deserialize<'de> for PerArch<String> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = PerArch<String>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a string, or a mapping of architecture (amd64, arm64, …) to string")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Self::Value, E> {
                Ok(PerArch::Same(v.to_string()))
            }
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<Self::Value, E> {
                Err(E::custom(format!(
                    "`{v}` was read as a number; quote it: \"{v}\""
                )))
            }
            fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<Self::Value, E> {
                Err(E::custom(format!(
                    "`{v}` was read as a number; quote it: \"{v}\""
                )))
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut map: A,
            ) -> Result<Self::Value, A::Error> {
                let mut out = IndexMap::new();
                while let Some((k, v)) = map.next_entry::<String, String>()? {
                    if Arch::parse(&k).is_none() {
                        return Err(serde::de::Error::custom(format!(
                            "`{k}` is not an architecture (amd64, arm64, arm, ppc64le)"
                        )));
                    }
                    out.insert(k, v);
                }
                Ok(PerArch::ByArch(out))
            }
        }
        d.deserialize_any(V)
    }
}

/// Errors reading a spec.
#[derive(Debug, thiserror::Error)]
pub enum SpecError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{file}:{line}:{column}: {message}\n{snippet}  hint: {hint}")]
    Syntax {
        file: String,
        line: u64,
        column: u64,
        message: String,
        snippet: String,
        hint: String,
    },
    #[error("{file}:{line}:{column}: {message}\n  hint: {hint}")]
    Invalid {
        file: String,
        line: usize,
        column: usize,
        message: String,
        hint: String,
    },
}

impl SpecError {
    pub fn line(&self) -> Option<u64> {
        match self {
            SpecError::Syntax { line, .. } => Some(*line),
            SpecError::Invalid { line, .. } => Some(*line as u64),
            SpecError::Read { .. } => None,
        }
    }
}

/// Largest spec accepted, in bytes.
pub(crate) const MAX_SPEC_BYTES: usize = 4 << 20;
/// Deepest YAML nesting accepted in a spec.
pub(crate) const MAX_SPEC_DEPTH: usize = 32;

/// A parsed spec with the file it came from (for positions in later errors).
#[derive(Clone, Debug)]
pub struct SpecFile {
    pub path: PathBuf,
    pub source: String,
    pub frontend: String,
    pub spec: Spec,
}

impl SpecFile {
    pub fn read(path: &Path) -> Result<SpecFile, SpecError> {
        let source = std::fs::read_to_string(path).map_err(|source| SpecError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Self::parse(&source, &path.display().to_string())
    }

    /// Parses spec text; `name` is used in error positions.
    pub fn parse(source: &str, name: &str) -> Result<SpecFile, SpecError> {
        let first = source.lines().next().unwrap_or("");
        let frontend = first
            .strip_prefix('#')
            .map(str::trim_start)
            .and_then(|l| l.strip_prefix("syntax="))
            .map(|s| s.trim().to_string())
            .filter(|s| !s.is_empty())
            .ok_or_else(|| SpecError::Invalid {
                file: name.to_string(),
                line: 1,
                column: 1,
                message: "the first line must be `# syntax=<kpbuild frontend image>`".into(),
                hint: "start the file with e.g. `# syntax=kpbuild/frontend:dev`, so that \
                       `docker build -f Dockerfile.bundle` runs kpbuild's frontend"
                    .into(),
            })?;
        if source.len() > MAX_SPEC_BYTES {
            return Err(SpecError::Invalid {
                file: name.to_string(),
                line: 1,
                column: 1,
                message: format!(
                    "the file is {} bytes, more than the {MAX_SPEC_BYTES} a spec may have",
                    source.len()
                ),
                hint: "a Dockerfile.bundle names its inputs; it does not hold them".into(),
            });
        }
        // Bounded: hostile or broken input fails with an error, quickly, never with a stack
        // overflow (`vars.extra` values are deserialized, converted and rendered recursively).
        let options = serde_saphyr::options! {
            duplicate_keys: serde_saphyr::options::DuplicateKeyPolicy::Error,
            budget: serde_saphyr::budget! {
                max_depth: MAX_SPEC_DEPTH,
                max_events: 1_000_000,
                max_aliases: 1_000,
            },
        };
        let spec: Spec = serde_saphyr::from_str_with_options(source, options)
            .map_err(|e| yaml_error(&e, source, name))?;
        let file = SpecFile {
            path: PathBuf::from(name),
            source: source.to_string(),
            frontend,
            spec,
        };
        file.validate()?;
        Ok(file)
    }

    /// The 1-based line and column of the first line matching `key:` under the top-level
    /// block `section` (or of the section itself).
    pub(crate) fn position_of(&self, section: &str, key: Option<&str>) -> (usize, usize) {
        find_key(&self.source, section, key)
    }

    pub(crate) fn invalid(
        &self,
        section: &str,
        key: Option<&str>,
        message: String,
        hint: &str,
    ) -> SpecError {
        let (line, column) = self.position_of(section, key);
        SpecError::Invalid {
            file: self.path.display().to_string(),
            line,
            column,
            message,
            hint: hint.to_string(),
        }
    }

    fn validate(&self) -> Result<(), SpecError> {
        let s = &self.spec;
        if !is_name(&s.name) {
            return Err(self.invalid(
                "name",
                None,
                format!("bundle name `{}` is not a valid name", s.name),
                "use lowercase letters, digits, `.`, `_` and `-`, e.g. `kubeplay`",
            ));
        }
        if s.version.is_empty() || s.version.contains(['/', ' ', ':']) {
            return Err(self.invalid(
                "version",
                None,
                format!(
                    "bundle version `{}` is not usable in file and image names",
                    s.version
                ),
                "use e.g. `v0.1.0`",
            ));
        }
        if s.platforms.is_empty() {
            return Err(self.invalid(
                "platforms",
                None,
                "no platforms".into(),
                "list at least one, e.g. [linux/amd64]",
            ));
        }
        let mut seen = BTreeSet::new();
        for p in &s.platforms {
            if !seen.insert(p.clone()) {
                return Err(self.invalid(
                    "platforms",
                    None,
                    format!("platform {p} is listed twice"),
                    "list each once",
                ));
            }
        }
        if s.modules.is_empty() {
            return Err(self.invalid(
                "modules",
                None,
                "no modules".into(),
                "add at least one module, e.g. `files: {kind: files}`",
            ));
        }
        for m in &s.mirrors {
            if m.to.all().is_empty() {
                return Err(self.invalid(
                    "mirrors",
                    Some("to"),
                    format!("mirror of `{}` has an empty `to` list", m.from),
                    "give one URL prefix, or a list tried in order",
                ));
            }
            let from = [("from", m.from.as_str())];
            let to = m.to.all().into_iter().map(|u| ("to", u));
            for (what, u) in from.into_iter().chain(to) {
                if url::Url::parse(u).is_err() {
                    return Err(self.invalid(
                        "mirrors",
                        Some(what),
                        format!("mirror `{what}: {u}` is not a URL"),
                        "write full URL prefixes, e.g. from: https://dl.k8s.io, to: http://127.0.0.1:8081/dl.k8s.io",
                    ));
                }
            }
        }
        if let Some(k) = &s.vars.kubespray {
            self.context_path("vars", "kubespray", k)?;
        }
        for f in &s.vars.files {
            self.context_path("vars", "files", f)?;
        }
        let v = Validator { file: self };
        for (name, module) in &s.modules {
            if name == crate::layout::BUNDLE_TARGET || name == crate::layout::LOCK_TARGET {
                return Err(self.invalid(
                    "modules",
                    Some(name),
                    format!("`{name}` is reserved for kpbuild's own target"),
                    "give the module another name",
                ));
            }
            if !is_name(name) {
                return Err(self.invalid(
                    "modules",
                    Some(name),
                    format!("module name `{name}` is not a valid name"),
                    "use lowercase letters, digits, `.`, `_` and `-`",
                ));
            }
            module.kind().validate(name, &v)?;
        }
        Ok(())
    }

    /// A path into the build context: relative, without `..` (BuildKit sends only the context).
    pub(crate) fn context_path(
        &self,
        section: &str,
        key: &str,
        value: &str,
    ) -> Result<(), SpecError> {
        kpbuild_paths::safe_path::relative_path(value, "the build context")
            .map(|_| ())
            .map_err(|e| {
                self.invalid(
                    section,
                    Some(key),
                    format!("`{key}`: {e}"),
                    "paths in Dockerfile.bundle are relative to the build context, inside it",
                )
            })
    }
}

pub(crate) fn is_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 128
        && s.bytes().all(|b| {
            b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'.' | b'_' | b'-')
        })
        && s.as_bytes()[0].is_ascii_alphanumeric()
}

/// A relative path without `..`, empty or absolute components.
pub fn is_relative_clean(p: &str) -> bool {
    !p.is_empty()
        && !p.starts_with('/')
        && p.split('/').all(|c| !c.is_empty() && c != ".." && c != ".")
}

fn find_key(source: &str, section: &str, key: Option<&str>) -> (usize, usize) {
    let mut in_section = false;
    let mut section_pos = (1, 1);
    for (i, line) in source.lines().enumerate() {
        let trimmed = line.trim_start();
        if !line.starts_with([' ', '\t', '#', '-']) && !line.is_empty() {
            in_section = line.starts_with(&format!("{section}:"));
            if in_section {
                section_pos = (i + 1, 1);
                if key.is_none() {
                    return section_pos;
                }
            }
            continue;
        }
        if in_section && let Some(k) = key {
            let t = trimmed.trim_start_matches("- ");
            if t.starts_with(&format!("{k}:")) || t.contains(&format!(" {k}")) && t.ends_with(':') {
                return (i + 1, line.len() - t.len() + 1);
            }
        }
    }
    section_pos
}

fn yaml_error(e: &serde_saphyr::Error, source: &str, name: &str) -> SpecError {
    let loc = e.location();
    let (mut line, mut column) = loc.map(|l| (l.line(), l.column())).unwrap_or((0, 0));
    let core = e.without_snippet().to_string();
    let message = strip_location_prefix(&core);
    // Unknown fields inside a module are reported at the module's start; point at the field.
    if let Some(field) = backticked_after(&message, "unknown field ")
        && let Some((l, c)) = find_field_after(source, line as usize, &field)
    {
        line = l as u64;
        column = c as u64;
    }
    let kinds = Module::kinds().join(", ");
    let hint = if message.contains("unknown variant") && message.contains(&kinds) {
        format!("module `kind` is one of: {kinds}")
    } else if message.contains("unknown field") {
        "check the key's spelling; the README lists every key of Dockerfile.bundle".to_string()
    } else if message.contains("missing field") {
        "add the missing key; the README lists the required keys".to_string()
    } else if message.contains("duplicate") {
        "each key may appear once".to_string()
    } else {
        "Dockerfile.bundle is YAML after its `# syntax=` line; check indentation and quoting"
            .to_string()
    };
    SpecError::Syntax {
        file: name.to_string(),
        line,
        column,
        message,
        snippet: snippet(source, line as usize),
        hint,
    }
}

fn strip_location_prefix(s: &str) -> String {
    let s = s.strip_prefix("error: ").unwrap_or(s);
    static HEAD: std::sync::LazyLock<regex::Regex> = std::sync::LazyLock::new(|| {
        regex::Regex::new(r"^line \d+ column \d+: ").expect("static regex")
    });
    static TAIL: std::sync::LazyLock<regex::Regex> = std::sync::LazyLock::new(|| {
        regex::Regex::new(r" at line \d+, column \d+$").expect("static regex")
    });
    let (head, tail) = (&*HEAD, &*TAIL);
    let s = head.replace(s, "");
    tail.replace(s.trim(), "").trim().to_string()
}

fn backticked_after(msg: &str, prefix: &str) -> Option<String> {
    let rest = &msg[msg.find(prefix)? + prefix.len()..];
    let rest = rest.strip_prefix('`')?;
    Some(rest[..rest.find('`')?].to_string())
}

/// The first `field:` key at or after `line` (1-based), with its column.
fn find_field_after(source: &str, line: usize, field: &str) -> Option<(usize, usize)> {
    source
        .lines()
        .enumerate()
        .skip(line.saturating_sub(1))
        .find_map(|(i, l)| {
            let t = l.trim_start().trim_start_matches("- ");
            t.starts_with(&format!("{field}:"))
                .then(|| (i + 1, l.len() - t.len() + 1))
        })
}

fn snippet(source: &str, line: usize) -> String {
    if line == 0 {
        return String::new();
    }
    let mut out = String::new();
    for (i, l) in source.lines().enumerate() {
        let n = i + 1;
        if n + 2 >= line && n <= line + 1 {
            out.push_str(&format!(
                "  {n:>4} {} {l}\n",
                if n == line { '>' } else { '|' }
            ));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = "# syntax=kpbuild/frontend:dev
name: kubeplay
version: v0.1.0
platforms: [linux/amd64, linux/arm64]
vars:
  kubespray: kubespray
  extra:
    kube_network_plugin: calico
mirrors:
  - from: https://dl.k8s.io
    to: http://127.0.0.1:8081/dl.k8s.io
modules:
  files:
    kind: files
    extra:
      - url: https://get.helm.sh/helm-v3.16.4-linux-{arch}.tar.gz
        sha256:
          amd64: fc307327959aa38ed8f9f7e66d45492bb022a66c3e5da6063958254b9767d179
  images:
    kind: images
    from-kubespray: all
    extra: [docker.io/library/registry:2.8.1]
";

    #[test]
    fn parses_a_good_spec() {
        let f = SpecFile::parse(GOOD, "Dockerfile.bundle").unwrap();
        assert_eq!(f.frontend, "kpbuild/frontend:dev");
        assert_eq!(f.spec.platforms.len(), 2);
        assert_eq!(f.spec.modules.len(), 2);
        assert!(
            matches!(f.spec.modules["images"], Module::Images(ref i) if i.from_kubespray == ListSelection::All)
        );
    }

    #[test]
    fn mirror_lists() {
        let m = |to: &str| {
            GOOD.replace(
                "mirrors:\n",
                &format!("mirrors:\n  - from: https://get.helm.sh\n    to: {to}\n"),
            )
        };
        let f =
            SpecFile::parse(&m("[http://a/h, https://get.helm.sh]"), "Dockerfile.bundle").unwrap();
        assert_eq!(
            f.spec.mirrors[0].to.all(),
            ["http://a/h", "https://get.helm.sh"]
        );
        let e = err(&m("[]"));
        assert!(e.contains("empty `to` list"), "{e}");
        let e = err(&m("[http://a/h, nope]"));
        assert!(e.contains("mirror `to: nope` is not a URL"), "{e}");
    }

    fn err(text: &str) -> String {
        SpecFile::parse(text, "Dockerfile.bundle")
            .unwrap_err()
            .to_string()
    }

    #[test]
    fn unknown_module_kind_names_line_and_kinds() {
        let e = err(&GOOD.replace("kind: images", "kind: imagez"));
        assert!(e.starts_with("Dockerfile.bundle:20:"), "{e}");
        assert!(e.contains("imagez") && e.contains("os-packages"), "{e}");
        assert!(
            e.ends_with(
                "\n  hint: module `kind` is one of: files, images, os-packages, dockerfile, compose"
            ),
            "{e}"
        );
    }

    #[test]
    fn unknown_key_points_at_the_key() {
        let e = err(&GOOD.replace(
            "    from-kubespray: all",
            "    from-kubespray: all\n    exclud: []",
        ));
        assert!(
            e.starts_with("Dockerfile.bundle:22:5: unknown field `exclud`"),
            "{e}"
        );
        assert!(!e.contains(" at line "), "the position is given once: {e}");
    }

    #[test]
    fn yaml_syntax_error_has_position_and_snippet() {
        let e = err(&GOOD.replace(
            "platforms: [linux/amd64, linux/arm64]",
            "platforms: [linux/amd64",
        ));
        assert!(e.starts_with("Dockerfile.bundle:"), "{e}");
        assert!(e.contains("hint:"), "{e}");
    }

    #[test]
    fn missing_syntax_line_is_explained() {
        let e = err(GOOD.trim_start_matches("# syntax=kpbuild/frontend:dev\n"));
        assert!(
            e.starts_with("Dockerfile.bundle:1:1:") && e.contains("# syntax="),
            "{e}"
        );
    }

    #[test]
    fn bad_platform_and_values() {
        assert!(
            err(&GOOD.replace("linux/arm64]", "linux/riscv64]"))
                .contains("unknown platform `linux/riscv64`")
        );
        let e = err(&GOOD.replace("kubespray: kubespray\n", "files: []\n"));
        assert!(
            e.contains("vars.kubespray") && e.starts_with("Dockerfile.bundle:13:"),
            "{e}"
        );
        let e = err(&GOOD.replace("https://get.helm.sh/helm", "ftp:/x/../helm"));
        assert!(
            e.starts_with("Dockerfile.bundle:16:9: module `files`: file URL `ftp:/x/../helm"),
            "{e}"
        );
    }

    #[test]
    fn per_arch_values_are_explained() {
        let e = err(&GOOD.replace("          amd64: fc30", "          amd65: fc30"));
        assert!(e.contains("`amd65` is not an architecture"), "{e}");
        let e = err(&GOOD.replace(
            "        sha256:\n          amd64: fc307327959aa38ed8f9f7e66d45492bb022a66c3e5da6063958254b9767d179",
            "        sha256: 1234",
        ));
        assert!(e.contains("quote it"), "{e}");
    }

    #[test]
    fn paths_stay_inside_the_build_context() {
        for (from, to) in [
            ("kubespray: kubespray\n", "kubespray: ../kubespray\n"),
            ("kubespray: kubespray\n", "kubespray: /home/me/kubespray\n"),
            (
                "kubespray: kubespray\n",
                "kubespray: kubespray\n  files: [vars/../../secret.yml]\n",
            ),
            (
                "extra: [docker.io/library/registry:2.8.1]\n",
                "extra: [docker.io/library/registry:2.8.1]\n    map: ../../etc/passwd\n",
            ),
        ] {
            let e = err(&GOOD.replace(from, to));
            assert!(
                e.starts_with("Dockerfile.bundle:")
                    && (e.contains("climbs out of the build context") || e.contains("is absolute")),
                "{to}: {e}"
            );
        }
        let e = err(&GOOD.replace("kubespray: kubespray\n", "kubespray: ../kubespray\n"));
        assert!(
            e.starts_with("Dockerfile.bundle:6:3: `kubespray`: path \"../kubespray\""),
            "{e}"
        );
        // `./` and plain names are fine.
        SpecFile::parse(
            &GOOD.replace("kubespray: kubespray\n", "kubespray: ./ks/v2.28.1\n"),
            "Dockerfile.bundle",
        )
        .unwrap();
    }

    #[test]
    fn deep_huge_and_explosive_specs_are_refused_quickly() {
        // `vars.extra` nested as deep as allowed: parses, and its variables load and render.
        let depth = MAX_SPEC_DEPTH - 4; // spec root, vars, extra, the variable itself
        let nested = format!("{}1{}", "{k: ".repeat(depth), "}".repeat(depth));
        let text = GOOD.replace(
            "    kube_network_plugin: calico\n",
            &format!("    kube_network_plugin: calico\n    deep: {nested}\n"),
        );
        let f = SpecFile::parse(&text, "Dockerfile.bundle").unwrap();
        let mut set = kpbuild_ansible::vars::VarSet::new();
        for (k, v) in &f.spec.vars.extra {
            let v: minijinja::Value = serde::Deserialize::deserialize(v.clone()).unwrap();
            let origin = kpbuild_ansible::vars::Origin::described("extra");
            set.set(
                k.clone(),
                v,
                origin,
                kpbuild_ansible::vars::Precedence::ExtraVars,
            );
        }
        let ev = kpbuild_ansible::vars::Evaluator::new(set);
        assert!(ev.var("deep").is_ok());
        for text in [
            GOOD.replace(
                "    kube_network_plugin: calico\n",
                &format!("    deep: {}1{}\n", "[".repeat(10_000), "]".repeat(10_000)),
            ),
            GOOD.replace(
                "    kube_network_plugin: calico\n",
                &format!(
                    "    deep: {}1{}\n",
                    "{k: ".repeat(MAX_SPEC_DEPTH),
                    "}".repeat(MAX_SPEC_DEPTH)
                ),
            ),
        ] {
            let e = err(&text);
            assert!(e.starts_with("Dockerfile.bundle:"), "{e}");
        }
        let mut bomb = String::from("    a0: &a0 [x, x, x, x, x, x, x, x, x, x]\n");
        for i in 1..9 {
            let refs = vec![format!("*a{}", i - 1); 10].join(", ");
            bomb.push_str(&format!("    a{i}: &a{i} [{refs}]\n"));
        }
        let e = err(&GOOD.replace("    kube_network_plugin: calico\n", &bomb));
        assert!(e.starts_with("Dockerfile.bundle:"), "{e}");
        let e = err(&format!("{GOOD}# {}\n", "x".repeat(MAX_SPEC_BYTES)));
        assert!(e.starts_with("Dockerfile.bundle:1:1: the file is "), "{e}");
    }

    #[test]
    fn duplicate_keys_are_errors() {
        let e = err(&GOOD.replace("version: v0.1.0\n", "version: v0.1.0\nversion: v2\n"));
        assert!(e.contains("duplicate"), "{e}");
    }
}
