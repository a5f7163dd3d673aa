//! Lists derived from kubespray's own variables: the files, images and checksums an offline
//! bundle must hold, for one architecture, as kubespray's `contrib/offline/generate_list.sh`
//! renders them with Ansible — and the minimal set for one cluster configuration.
//!
//! - files: every `*download_url` variable of the download defaults, rendered;
//! - images: `repo:tag` of every `downloads` entry that has both, plus the four images kubeadm
//!   pulls itself (`kube-apiserver`, `kube-controller-manager`, `kube-scheduler`, `kube-proxy`);
//! - checksums: the pin of every `downloads` entry that is a file;
//! - enabled: the `downloads` entries whose `enabled` condition holds, as files and images.
//!
//! Two deliberate differences from the generator, both in what the deploy side really asks for:
//! the kube-* tags are `v` + `kube_version` without doubling a `v` that old kubespray versions
//! already carry (the generator writes `vv1.20.7` for kubespray 2.16), and the host facts
//! (`ansible_architecture` and `ansible_facts['architecture']`, set both ways) follow `--arch`
//! instead of the machine the generator ran on (pass `-e ansible_architecture=x86_64` to
//! reproduce a generator run on an x86_64 host).

use std::collections::BTreeSet;
use std::fmt;
use std::path::Path;

use minijinja::Value;
use minijinja::value::ValueKind;

use crate::vars::{EvalError, Evaluator, LoadError, Origin, Precedence, VarSet};

pub use kpbuild_oci::platform::Arch;

/// Errors producing lists.
#[derive(Debug, thiserror::Error)]
pub enum ListError {
    #[error(transparent)]
    Load(#[from] LoadError),
    #[error("{context}: {source}")]
    Eval {
        context: String,
        source: Box<EvalError>,
    },
    #[error(
        "{dir}: no `downloads` variable in the kubespray defaults; is this a kubespray checkout?"
    )]
    NoDownloads { dir: String },
    #[error(
        "{origin}: `ansible_facts` must be a mapping of fact names to values, e.g. -e 'ansible_facts={{architecture: x86_64}}'"
    )]
    FactsNotMapping { origin: Origin },
    #[error(
        "the host fact `{fact}` is given twice with different values: `ansible_{fact}={flat} and `ansible_facts['{fact}']={mapped}; give one"
    )]
    FactConflict {
        fact: String,
        /// The flat variable's value and where it was given.
        flat: String,
        /// The mapping's value and where it was given.
        mapped: String,
    },
    #[error("{origin}: `downloads.{entry}` is not a mapping")]
    BadEntry { entry: String, origin: Origin },
    #[error(
        "{origin}: `downloads.{entry}`: checksum `{value}` is neither a sha256 hex digest nor `<algorithm>:<hex>`"
    )]
    BadChecksum {
        entry: String,
        value: String,
        origin: Origin,
    },
}

/// A content pin of a downloaded file.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Pin {
    /// `sha256`, `sha512`, …
    pub algorithm: String,
    pub hex: String,
}

impl Pin {
    /// Reads kubespray's forms: bare sha256 hex, or `sha256:<hex>` / `sha512:<hex>`.
    pub fn parse(s: &str) -> Option<Pin> {
        let s = s.trim();
        let (algorithm, hex) = match s.split_once(':') {
            Some((a, h)) => (a.to_ascii_lowercase(), h),
            None if s.len() == 64 => ("sha256".to_string(), s),
            None => return None,
        };
        let want = match algorithm.as_str() {
            "sha256" => 64,
            "sha512" => 128,
            "sha384" => 96,
            "sha1" => 40,
            "md5" => 32,
            _ => return None,
        };
        (hex.len() == want && hex.bytes().all(|b| b.is_ascii_hexdigit())).then(|| Pin {
            algorithm,
            hex: hex.to_ascii_lowercase(),
        })
    }
}

impl fmt::Display for Pin {
    /// sha256 as bare hex (kubespray's and the generator's form), others as `algorithm:hex`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.algorithm == "sha256" {
            f.write_str(&self.hex)
        } else {
            write!(f, "{}:{}", self.algorithm, self.hex)
        }
    }
}

/// A file download: URL and pin (when kubespray pins one).
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct FileItem {
    pub url: String,
    pub pin: Option<Pin>,
}

/// One item of an `--enabled-only` list.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Item {
    File(String),
    Image(String),
}

impl fmt::Display for Item {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Item::File(u) => write!(f, "file {u}"),
            Item::Image(i) => write!(f, "image {i}"),
        }
    }
}

/// The images kubeadm pulls itself, which `downloads` does not list.
pub(crate) const KUBEADM_IMAGES: [&str; 4] = [
    "kube-apiserver",
    "kube-controller-manager",
    "kube-scheduler",
    "kube-proxy",
];

/// A kubespray checkout's variables rendered for one architecture.
#[derive(Debug, Clone)]
pub struct Kubespray {
    dir: String,
    arch: Arch,
    eval: Evaluator,
    /// Top-level names of the download defaults ending in `download_url`, in file order.
    download_url_vars: Vec<String>,
    /// The file downloads with a placeholder checksum, found on first use.
    unbuilt: std::sync::OnceLock<Vec<Unbuilt>>,
}

/// A file download that kubespray has no build of for this architecture: its checksum for the
/// architecture is a placeholder, `0` or empty. Left out of every list.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Unbuilt {
    /// The `downloads` entry.
    pub entry: String,
    pub url: String,
    /// The placeholder as rendered (`0` or empty).
    pub checksum: String,
    /// Whether the entry's `enabled` condition holds (true when it cannot be rendered).
    pub enabled: bool,
    pub arch: Arch,
}

impl fmt::Display for Unbuilt {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "left out {} (`downloads.{}`): its {} checksum is `{}`, kubespray has no {} build of it",
            self.url, self.entry, self.arch, self.checksum, self.arch
        )
    }
}

/// What a file entry's checksum says.
enum Checksum {
    Pinned(Pin),
    /// No checksum at all (`None`, or no field).
    Unpinned,
    /// `0` or empty: no build for this architecture.
    Placeholder(String),
}

impl Kubespray {
    /// Loads `dir` for `arch`, with `-e` style extra variables.
    pub fn load(dir: &Path, arch: Arch, extra: &[String]) -> Result<Kubespray, ListError> {
        let (vars, _) = VarSet::load_kubespray(dir)?;
        Self::from_vars(&dir.display().to_string(), vars, arch, extra)
    }

    /// Builds from already loaded variables (extra sources, a spec's vars, …).
    pub fn from_vars(
        dir: &str,
        mut vars: VarSet,
        arch: Arch,
        extra: &[String],
    ) -> Result<Kubespray, ListError> {
        for (name, value) in host_vars() {
            vars.set(
                name,
                value,
                Origin::described("host variables of kpbuild lists"),
                Precedence::Facts,
            );
        }
        vars.set(
            "image_arch",
            Value::from(arch.image_arch()),
            Origin::described("--arch"),
            Precedence::ExtraVars,
        );
        for arg in extra {
            vars.add_extra_arg(arg)?;
        }
        set_host_facts(&mut vars, arch)?;
        let download_url_vars = vars
            .files()
            .iter()
            .filter(|(path, _)| is_download_defaults(path))
            .flat_map(|(_, names)| {
                names
                    .iter()
                    .filter(|n| n.ends_with("download_url"))
                    .cloned()
            })
            .fold(Vec::new(), |mut acc: Vec<String>, n| {
                if !acc.contains(&n) {
                    acc.push(n);
                }
                acc
            });
        if !vars.contains("downloads") {
            return Err(ListError::NoDownloads {
                dir: dir.to_string(),
            });
        }
        Ok(Kubespray {
            dir: dir.to_string(),
            arch,
            eval: Evaluator::new(vars),
            download_url_vars,
            unbuilt: std::sync::OnceLock::new(),
        })
    }

    /// The checkout, as shown to users.
    pub fn dir(&self) -> &str {
        &self.dir
    }

    pub fn evaluator(&self) -> &Evaluator {
        &self.eval
    }

    fn var(&self, name: &str, context: &str) -> Result<Value, ListError> {
        self.eval.var(name).map_err(|source| ListError::Eval {
            context: context.to_string(),
            source: Box::new(source),
        })
    }

    /// What `generate_list.sh` writes to `files.list`: every `*download_url` variable, less
    /// the [`Self::unbuilt`] files.
    pub fn files(&self) -> Result<Vec<String>, ListError> {
        let mut out = BTreeSet::new();
        for name in &self.download_url_vars {
            out.insert(self.var(name, "files list")?.to_string());
        }
        for u in self.unbuilt() {
            out.remove(&u.url);
        }
        Ok(out.into_iter().collect())
    }

    /// The file downloads kubespray has no build of for this architecture (checksum `0` or
    /// empty), which every list leaves out. An entry whose URL or checksum cannot be rendered
    /// is not one of them (the lists that need it report the error).
    pub fn unbuilt(&self) -> &[Unbuilt] {
        self.unbuilt.get_or_init(|| {
            let Ok(entries) = self.entries() else {
                return vec![];
            };
            entries
                .iter()
                .filter(|e| self.flag(e, "file").unwrap_or(false))
                .filter_map(|e| {
                    let Ok(Checksum::Placeholder(checksum)) = self.checksum_of(e) else {
                        return None;
                    };
                    Some(Unbuilt {
                        entry: e.name.clone(),
                        url: self.field(e, "url").ok()?.to_string(),
                        checksum,
                        enabled: self.flag(e, "enabled").unwrap_or(true),
                        arch: self.arch,
                    })
                })
                .collect()
        })
    }

    fn is_unbuilt(&self, entry: &Entry) -> bool {
        self.unbuilt().iter().any(|u| u.entry == entry.name)
    }

    /// What `generate_list.sh` writes to `images.list`: `repo:tag` of every `downloads` entry
    /// that has both, plus the kubeadm images.
    pub fn images(&self) -> Result<Vec<String>, ListError> {
        let mut out: BTreeSet<String> = self.kubeadm_images()?.into_iter().collect();
        for entry in self.entries()? {
            if entry.has("repo") && entry.has("tag") {
                out.insert(self.image_of(&entry)?);
            }
        }
        Ok(out.into_iter().collect())
    }

    /// The pin and URL of every `downloads` entry that is a file (`file` true).
    pub fn checksums(&self) -> Result<Vec<FileItem>, ListError> {
        let mut out = BTreeSet::new();
        for entry in self.entries()? {
            if self.flag(&entry, "file")? && !self.is_unbuilt(&entry) {
                out.insert(self.file_of(&entry)?);
            }
        }
        Ok(out.into_iter().collect())
    }

    /// Only the `downloads` entries whose `enabled` condition is true, plus the kubeadm images.
    pub fn enabled(&self) -> Result<Vec<Item>, ListError> {
        Ok(self
            .enabled_detailed()?
            .into_iter()
            .map(|(item, _)| item)
            .collect())
    }

    /// [`Self::enabled`] with each file's pin.
    pub fn enabled_detailed(&self) -> Result<Vec<(Item, Option<Pin>)>, ListError> {
        let mut out = BTreeSet::new();
        for image in self.kubeadm_images()? {
            out.insert((Item::Image(image), None));
        }
        for entry in self.entries()? {
            if !self.flag(&entry, "enabled")? {
                continue;
            }
            if self.flag(&entry, "file")? && !self.is_unbuilt(&entry) {
                let file = self.file_of(&entry)?;
                out.insert((Item::File(file.url), file.pin));
            }
            if self.flag(&entry, "container")? {
                out.insert((Item::Image(self.image_of(&entry)?), None));
            }
        }
        Ok(out.into_iter().collect())
    }

    /// `kube_image_repo/<name>:v<kube_version>` for the four images kubeadm pulls.
    pub(crate) fn kubeadm_images(&self) -> Result<Vec<String>, ListError> {
        let repo = self.var("kube_image_repo", "kubeadm images")?.to_string();
        let version = self.var("kube_version", "kubeadm images")?.to_string();
        let tag = format!("v{}", version.strip_prefix('v').unwrap_or(&version));
        Ok(KUBEADM_IMAGES
            .iter()
            .map(|n| format!("{repo}/{n}:{tag}"))
            .collect())
    }

    fn entries(&self) -> Result<Vec<Entry>, ListError> {
        let def = self.eval.vars().get("downloads").expect("checked at load");
        let defaults = self
            .eval
            .vars()
            .get("download_defaults")
            .map(|d| d.value.clone());
        let mut out = Vec::new();
        let raw = &def.value;
        if raw.kind() != ValueKind::Map {
            return Err(ListError::BadEntry {
                entry: String::new(),
                origin: def.origin.clone(),
            });
        }
        for key in raw.try_iter().expect("map iterates") {
            let fields = raw.get_item(&key).unwrap_or_default();
            let name = key.to_string();
            if fields.kind() != ValueKind::Map {
                return Err(ListError::BadEntry {
                    entry: name,
                    origin: def.origin.clone(),
                });
            }
            out.push(Entry {
                name,
                fields,
                defaults: defaults.clone(),
                origin: def.origin.clone(),
            });
        }
        Ok(out)
    }

    fn field(&self, entry: &Entry, field: &str) -> Result<Value, ListError> {
        let label = format!("downloads.{}.{field}", entry.name);
        let raw = match entry.fields.get_attr(field) {
            Ok(v) if !v.is_undefined() => v,
            _ => match &entry.defaults {
                Some(d) => d.get_attr(field).unwrap_or_default(),
                None => Value::UNDEFINED,
            },
        };
        if raw.is_undefined() {
            return Ok(Value::from(()));
        }
        self.eval
            .render(&raw, &label, &entry.origin)
            .map_err(|source| ListError::Eval {
                context: format!("{}: list entry `downloads.{}`", self.dir, entry.name),
                source: Box::new(source),
            })
    }

    /// A boolean field with Ansible's `when` reading: `true`, `"True"`, `"yes"`, `1` are true.
    fn flag(&self, entry: &Entry, field: &str) -> Result<bool, ListError> {
        Ok(truthy(&self.field(entry, field)?))
    }

    fn image_of(&self, entry: &Entry) -> Result<String, ListError> {
        let repo = self.field(entry, "repo")?;
        let tag = self.field(entry, "tag")?;
        Ok(format!("{repo}:{tag}"))
    }

    fn file_of(&self, entry: &Entry) -> Result<FileItem, ListError> {
        let url = self.field(entry, "url")?.to_string();
        let pin = match self.checksum_of(entry)? {
            Checksum::Pinned(pin) => Some(pin),
            // Placeholders are left out before (`is_unbuilt`); never a pin.
            Checksum::Unpinned | Checksum::Placeholder(_) => None,
        };
        Ok(FileItem { url, pin })
    }

    /// The entry's `checksum` (or, in old kubespray, `sha256`) field.
    fn checksum_of(&self, entry: &Entry) -> Result<Checksum, ListError> {
        let mut raw = self.field(entry, "checksum")?;
        if raw.is_none() || raw.as_str() == Some("") {
            let sha256 = self.field(entry, "sha256")?;
            if !sha256.is_none() || raw.is_none() {
                raw = sha256;
            }
        }
        let text = raw.to_string();
        if raw.is_none() || text == "None" {
            return Ok(Checksum::Unpinned);
        }
        if text.trim().is_empty() || text.trim() == "0" {
            return Ok(Checksum::Placeholder(text.trim().to_string()));
        }
        Pin::parse(&text)
            .map(Checksum::Pinned)
            .ok_or_else(|| ListError::BadChecksum {
                entry: entry.name.clone(),
                value: text.clone(),
                origin: entry.origin.clone(),
            })
    }
}

struct Entry {
    name: String,
    fields: Value,
    defaults: Option<Value>,
    origin: Origin,
}

impl Entry {
    fn has(&self, field: &str) -> bool {
        self.fields.get_attr(field).is_ok_and(|v| !v.is_undefined())
    }
}

/// Ansible's reading of a rendered condition.
pub(crate) fn truthy(v: &Value) -> bool {
    match v.as_str() {
        Some(s) => match s.trim().to_ascii_lowercase().as_str() {
            "true" | "yes" | "on" | "1" => true,
            "false" | "no" | "off" | "0" | "" | "none" => false,
            _ => true,
        },
        None => v.is_true(),
    }
}

/// Files that hold kubespray's download defaults: the `download` role's defaults (2.16 to 2.23)
/// or `kubespray[-_]defaults/defaults/main/download.yml` (2.24 on); see [`crate::vars::Layout`].
fn is_download_defaults(path: &Path) -> bool {
    let s = path.to_string_lossy().replace('\\', "/");
    s.contains("roles/download/defaults/") || s.ends_with("defaults/main/download.yml")
}

/// Variables Ansible gives every host that kubespray's variable files read, other than facts.
fn host_vars() -> Vec<(&'static str, Value)> {
    vec![
        ("inventory_hostname", Value::from("localhost")),
        (
            "groups",
            Value::from_pairs([
                ("all", Value::from(Vec::<Value>::new())),
                ("ungrouped", Value::from(Vec::<Value>::new())),
            ]),
        ),
        ("omit", Value::from("__omit_place_holder__")),
    ]
}

/// The facts of a host of `arch`, as keys of `ansible_facts` (each also set as `ansible_<key>`):
/// an Ubuntu 24.04 Linux host, whose architecture follows `--arch`. kubespray's variable files
/// read the system, the architecture and (for a few `enabled` conditions) the OS family.
pub(crate) fn host_facts(arch: Arch) -> Vec<(&'static str, &'static str)> {
    vec![
        ("system", "Linux"),
        ("architecture", arch.ansible_architecture()),
        ("machine", arch.ansible_architecture()),
        ("os_family", "Debian"),
        ("distribution", "Ubuntu"),
        ("distribution_release", "noble"),
        ("distribution_version", "24.04"),
        ("distribution_major_version", "24"),
    ]
}

/// `ansible_*` variables that are connection settings, not facts: never mirrored into
/// `ansible_facts`.
fn is_connection_var(name: &str) -> bool {
    const EXACT: [&str; 8] = [
        "ansible_facts",
        "ansible_host",
        "ansible_port",
        "ansible_user",
        "ansible_password",
        "ansible_connection",
        "ansible_python_interpreter",
        "ansible_private_key_file",
    ];
    const PREFIXES: [&str; 4] = [
        "ansible_ssh_",
        "ansible_become",
        "ansible_shell_",
        "ansible_winrm_",
    ];
    EXACT.contains(&name) || PREFIXES.iter().any(|p| name.starts_with(p))
}

/// Sets the host facts both ways Ansible offers them: as `ansible_facts['<key>']` and as the
/// flat `ansible_<key>` (which kubespray read before 2.29 and Ansible is retiring). Both start
/// from [`host_facts`] for `arch`; extra variables override either form (`-e
/// ansible_architecture=x86_64`, `-e 'ansible_facts={architecture: x86_64}'`) and the other
/// follows, so the two never disagree. `machine` follows an overridden `architecture` unless
/// given itself.
fn set_host_facts(vars: &mut VarSet, arch: Arch) -> Result<(), ListError> {
    let facts_origin = Origin::described("host facts for --arch");
    let mut facts: indexmap::IndexMap<String, (Value, Origin)> = host_facts(arch)
        .into_iter()
        .map(|(k, v)| (k.to_string(), (Value::from(v), facts_origin.clone())))
        .collect();
    let mut overridden: Vec<String> = Vec::new();
    // `ansible_facts` given as an extra variable: its keys win over the defaults.
    let given_mapping = vars
        .get("ansible_facts")
        .filter(|d| d.precedence == Precedence::ExtraVars)
        .cloned();
    if let Some(def) = &given_mapping {
        if def.value.kind() != ValueKind::Map {
            return Err(ListError::FactsNotMapping {
                origin: def.origin.clone(),
            });
        }
        for key in def.value.try_iter().expect("a map iterates") {
            let value = def.value.get_item(&key).unwrap_or_default();
            let name = key.to_string();
            overridden.push(name.clone());
            facts.insert(name, (value, def.origin.clone()));
        }
    }
    // Flat `ansible_<key>` given as extra variables.
    let flat: Vec<(String, Value, Origin)> = vars
        .names()
        .filter(|n| n.starts_with("ansible_") && !is_connection_var(n))
        .filter_map(|n| {
            let d = vars.get(n)?;
            (d.precedence == Precedence::ExtraVars).then(|| {
                (
                    n.strip_prefix("ansible_").unwrap_or(n).to_string(),
                    d.value.clone(),
                    d.origin.clone(),
                )
            })
        })
        .collect();
    for (key, value, origin) in flat {
        if let Some((mapped, mapped_origin)) = facts.get(&key)
            && overridden.contains(&key)
            && mapped != &value
        {
            return Err(ListError::FactConflict {
                fact: key,
                flat: format!("{value}` ({origin})"),
                mapped: format!("{mapped}` ({mapped_origin})"),
            });
        }
        overridden.push(key.clone());
        facts.insert(key, (value, origin));
    }
    if overridden.iter().any(|k| k == "architecture") && !overridden.iter().any(|k| k == "machine")
    {
        let architecture = facts["architecture"].clone();
        facts.insert("machine".to_string(), architecture);
    }
    let mapping = Value::from(
        facts
            .iter()
            .map(|(k, (v, _))| (Value::from(k.as_str()), v.clone()))
            .collect::<indexmap::IndexMap<Value, Value>>(),
    );
    for (key, (value, origin)) in facts {
        // An extra variable keeps its own (highest) level; the others are facts.
        let precedence = if origin == facts_origin {
            Precedence::Facts
        } else {
            Precedence::ExtraVars
        };
        vars.set(format!("ansible_{key}"), value, origin, precedence);
    }
    match given_mapping {
        Some(def) => vars.set("ansible_facts", mapping, def.origin, Precedence::ExtraVars),
        None => vars.set("ansible_facts", mapping, facts_origin, Precedence::Facts),
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    #[test]
    fn pins() {
        let h = "a".repeat(64);
        assert_eq!(Pin::parse(&h).unwrap().to_string(), h);
        assert_eq!(Pin::parse(&format!("sha256:{h}")).unwrap().to_string(), h);
        let h512 = "b".repeat(128);
        assert_eq!(
            Pin::parse(&format!("sha512:{h512}")).unwrap().to_string(),
            format!("sha512:{h512}")
        );
        assert!(Pin::parse("sha256:abc").is_none());
        assert!(Pin::parse("nonsense").is_none());
    }

    #[test]
    fn arch_names() {
        assert_eq!(Arch::parse("linux/arm64"), Some(Arch::Arm64));
        assert_eq!(Arch::parse("x86_64"), Some(Arch::Amd64));
        assert_eq!(Arch::parse("riscv64"), None);
    }

    /// A synthetic download defaults file reading the host facts both ways, as kubespray's
    /// main branch (`ansible_facts['system']`) and its releases (`ansible_architecture`) do.
    fn facts_reader(arch: Arch, extra: &[&str]) -> Result<Kubespray, ListError> {
        let mut vars = VarSet::new();
        vars.load_str(
            "kube_version: 1.0.0\nkube_image_repo: r\ndownloads: {}\n\
             x_download_url: \"{{ ansible_facts['system'] | lower }}/{{ ansible_facts['architecture'] }}/{{ ansible_facts.machine }}/{{ ansible_system }}/{{ ansible_architecture }}/{{ ansible_os_family }}\"\n",
            Path::new("roles/download/defaults/main.yml"),
            Precedence::RoleDefaults,
        )
        .unwrap();
        let extra: Vec<String> = extra.iter().map(|s| s.to_string()).collect();
        Kubespray::from_vars("ks", vars, arch, &extra)
    }

    fn rendered(arch: Arch, extra: &[&str]) -> String {
        let k = facts_reader(arch, extra).unwrap_or_else(|e| panic!("{e}"));
        k.files().unwrap().join(" ")
    }

    #[test]
    fn host_facts_are_set_both_ways_and_follow_arch() {
        assert_eq!(
            rendered(Arch::Amd64, &[]),
            "linux/x86_64/x86_64/Linux/x86_64/Debian"
        );
        assert_eq!(
            rendered(Arch::Arm64, &[]),
            "linux/aarch64/aarch64/Linux/aarch64/Debian"
        );
    }

    #[test]
    fn fact_overrides_keep_both_forms_consistent() {
        let x86 = "linux/x86_64/x86_64/Linux/x86_64/Debian";
        assert_eq!(rendered(Arch::Arm64, &["ansible_architecture=x86_64"]), x86);
        assert_eq!(
            rendered(Arch::Arm64, &["ansible_facts={architecture: x86_64}"]),
            x86
        );
        assert_eq!(
            rendered(
                Arch::Arm64,
                &[
                    "ansible_facts={architecture: x86_64, os_family: RedHat}",
                    "ansible_architecture=x86_64"
                ]
            ),
            "linux/x86_64/x86_64/Linux/x86_64/RedHat"
        );
        assert_eq!(
            rendered(Arch::Amd64, &["ansible_os_family=RedHat"]),
            "linux/x86_64/x86_64/Linux/x86_64/RedHat"
        );
        let e = facts_reader(
            Arch::Arm64,
            &[
                "ansible_facts={architecture: x86_64}",
                "ansible_architecture=ppc64le",
            ],
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("`architecture` is given twice"), "{e}");
        let e = facts_reader(Arch::Arm64, &["ansible_facts=x86_64"])
            .unwrap_err()
            .to_string();
        assert!(e.contains("`ansible_facts` must be a mapping"), "{e}");
        // Connection variables are not facts.
        let k = facts_reader(Arch::Amd64, &["ansible_user=me"]).unwrap();
        let facts = k.evaluator().var("ansible_facts").unwrap();
        assert!(facts.get_attr("user").unwrap().is_undefined());
    }

    #[test]
    fn placeholder_checksums_leave_the_file_out_for_that_arch() {
        let yaml = format!(
            "kube_version: 1.0.0\nkube_image_repo: r\n\
             a_download_url: \"https://x/a/{{{{ image_arch }}}}\"\n\
             b_download_url: \"https://x/b/{{{{ image_arch }}}}\"\n\
             c_download_url: \"https://x/c/{{{{ image_arch }}}}\"\n\
             sums:\n  amd64: {{a: {h}, b: {h}, c: {h}}}\n  arm64: {{a: {h}, b: 0, c: ''}}\n\
             downloads:\n\
             \x20 a: {{enabled: true, file: true, url: \"{{{{ a_download_url }}}}\", checksum: \"{{{{ sums[image_arch].a }}}}\"}}\n\
             \x20 b: {{enabled: true, file: true, url: \"{{{{ b_download_url }}}}\", sha256: \"{{{{ sums[image_arch].b }}}}\"}}\n\
             \x20 c: {{enabled: true, file: true, url: \"{{{{ c_download_url }}}}\", checksum: \"{{{{ sums[image_arch].c }}}}\"}}\n",
            h = "a".repeat(64)
        );
        let load = |arch| {
            let mut vars = VarSet::new();
            vars.load_str(
                &yaml,
                Path::new("roles/download/defaults/main.yml"),
                Precedence::RoleDefaults,
            )
            .unwrap();
            Kubespray::from_vars("ks", vars, arch, &[]).unwrap()
        };
        let amd = load(Arch::Amd64);
        assert!(amd.unbuilt().is_empty());
        assert_eq!(amd.files().unwrap().len(), 3);
        assert_eq!(amd.checksums().unwrap().len(), 3);
        let arm = load(Arch::Arm64);
        let left: Vec<(&str, &str)> = arm
            .unbuilt()
            .iter()
            .map(|u| (u.entry.as_str(), u.checksum.as_str()))
            .collect();
        assert_eq!(left, [("b", "0"), ("c", "")]);
        assert_eq!(arm.files().unwrap(), ["https://x/a/arm64"]);
        let sums = arm.checksums().unwrap();
        assert_eq!(sums.len(), 1);
        assert!(sums[0].pin.is_some());
        let files: Vec<String> = arm
            .enabled()
            .unwrap()
            .into_iter()
            .filter_map(|i| match i {
                Item::File(u) => Some(u),
                Item::Image(_) => None,
            })
            .collect();
        assert_eq!(files, ["https://x/a/arm64"]);
        assert!(
            arm.unbuilt()[0]
                .to_string()
                .contains("its arm64 checksum is `0`, kubespray has no arm64 build"),
        );
    }

    #[test]
    fn conditions_read_like_ansible() {
        assert!(truthy(&Value::from("True")));
        assert!(!truthy(&Value::from("false")));
        assert!(!truthy(&Value::from(false)));
        assert!(truthy(&Value::from(1)));
        assert!(!truthy(&Value::from(())));
    }
}
