//! The os-packages module's scripts: from one distro's work ([`DistroWork`]) and a target
//! architecture, the POSIX `sh` script that an exec op runs on the distro's base image to write
//! an offline repository, and the client-side source file a target host needs to use it.
//! Pure text generation: no I/O, and the same inputs always give the same bytes (the script is
//! part of the op's cache key).
//!
//! # The op
//!
//! Run the script with `/bin/sh -c <script>` as root, with the distro's base image (e.g.
//! `debian:bookworm`) as the root filesystem, **on the build host's own platform** (amd64 here;
//! no QEMU, whatever the target), with network access to the distro's mirrors and a scratch
//! mount at [`ScriptOptions::out_root`] (`/out`). The repository lands in `/out/<path>`, where
//! `<path>` is the distro's `path` (`debian/arm64/bookworm`), so the op's output merges into the
//! bundle under `resources/nginx/`. Everything else the script does (tools it installs, indexes
//! it reads) stays in the discarded root filesystem.
//!
//! # What the repository holds
//!
//! The **complete** dependency closure of the listed packages for the target architecture,
//! resolved by the distro's own resolver as if **nothing were installed**, so that a target host
//! can install the list from this repository alone, whatever its base image already had:
//!
//! - **apt**: `dpkg --add-architecture <arch>` when the target is foreign, `apt-get update`, then
//!   a separate apt configuration with `APT::Architecture=<arch>` (and only that architecture),
//!   an empty dpkg status file, and its own cache and archives directory;
//!   `apt-get install --download-only` downloads the closure (`<arch>` and `all` packages).
//!   Build-side tools (`apt-utils` for `apt-ftparchive`, and `ca-certificates` when extra
//!   repositories are given) are installed into the op's root only, before and apart from that
//!   resolution, so they never enter the list. Essential packages that nothing declares a
//!   dependency on (Debian policy forbids declaring them) are not added: every Debian host has
//!   them, and `apt-get install` with an empty status resolves without them.
//! - **dnf** (Rocky/Alma/RHEL 8+, Fedora): `dnf download --resolve --alldeps --forcearch=<arch>`
//!   (`--alldeps` ignores the installed set), with `dnf-plugins-core` and `createrepo_c`
//!   installed on the build side.
//! - **yum** (CentOS 7): `repotrack -a <arch>` (which resolves regardless of the installed set;
//!   packages of other architectures it pulls for multilib are dropped) and `createrepo`. yum
//!   cannot resolve for a foreign architecture, so a yum distro is only accepted for the build
//!   host's own architecture ([`ScriptError::ForeignArch`]).
//!
//! The repository is for hosts **of the target architecture**. It does not carry what an amd64
//! host would need to install arm64 packages next to its own (`dpkg --add-architecture arm64`):
//! there, arch-`all` packages resolve their dependencies for amd64 and packages the host has
//! for amd64 would be cross-graded, so that is not a use it serves.
//!
//! Recommends (apt) and weak dependencies (dnf) are **not** taken by default: they are not
//! needed for the install to succeed (apt and dnf skip unavailable ones) and they roughly double
//! the repository (`dpkg-dev` alone recommends a compiler toolchain). [`ScriptOptions::recommends`]
//! takes them.
//!
//! Extra `repositories` of the distro are added before resolving: apt source lines verbatim
//! (`deb [trusted=yes] https://… bookworm stable`; give `[trusted=yes]` or `[signed-by=…]` with a
//! key the image has) into `/etc/apt/sources.list.d/kpbuild-extra.list`; for dnf and yum, URLs of
//! `.repo` files or repository base URLs, added with `config-manager --add-repo`.
//!
//! # Layout of `/out/<path>`
//!
//! Flat: every package file in the directory itself, in the distro's pool naming (apt: epochs
//! are dropped from file names, `libcap2_1%3a2.66-4_arm64.deb` → `libcap2_2.66-4_arm64.deb`, so
//! that no `%` reaches a URL), and the index:
//!
//! - apt: `Packages`, `Packages.gz` (`gzip -n`), `Release` (`apt-ftparchive`, its `Date` fixed at
//!   the epoch so that the index is reproducible; `Packages` is in
//!   file name order). Unsigned: clients use `[trusted=yes]`.
//! - dnf/yum: `repodata/` (`createrepo_c` / `createrepo`). Clients use `gpgcheck=0`.
//! - Always: `RECORD_FILE` (`kpbuild-os-packages.json`), the record of what was asked and what
//!   was skipped, for the bundle manifest (`RepoRecord`):
//!
//! ```json
//! {
//!   "format": "kpbuild.os-packages/v1",
//!   "distro": "debian12",
//!   "image": "debian:bookworm",
//!   "manager": "apt",
//!   "platform": "linux/arm64",
//!   "recommends": false,
//!   "packages": ["apache2-utils", "…"],
//!   "skipped": ["aufs-tools", "netcat", "python-apt"],
//!   "files": 269
//! }
//! ```
//!
//! `packages` are the listed packages that exist (sorted), `skipped` the listed packages marked
//! `optional` that do not exist for this distro and architecture (sorted), `files` the number of
//! package files in the repository (the closure).
//!
//! # Missing packages
//!
//! A listed package "exists" when the distro's resolver has an installation candidate for it on
//! the target architecture (for apt: a real package, or a virtual one `apt-get install` accepts,
//! i.e. with exactly one provider; for dnf/yum: a package name, NEVRA or provide). A package
//! that does not exist fails the op, naming every such package, the distro, its image and the
//! platform:
//!
//! ```text
//! kpbuild: error: package(s) not available on distro debian12 (debian:bookworm, linux/arm64): python-apt
//! kpbuild: hint: remove them from the groups or packages of distro debian12, or list them under optional: to skip and record them
//! ```
//!
//! unless it is listed in `optional`: then it is skipped, said in the op's log, and recorded
//! under `skipped` in the record file.
//!
//! # Client side
//!
//! [`client_file`] gives the file a target host drops into `/etc/apt/sources.list.d/` or
//! `/etc/yum.repos.d/`, at `resources/nginx/repos/<distro>-<arch>.list|.repo` in the bundle,
//! with `OFFLINE_NODE` (`{{ offline_node }}`) where the offline node's address goes (the
//! nginx of the bundle serves `resources/nginx/` on port [`crate::layout::NGINX_PORT`]):
//!
//! ```text
//! deb [trusted=yes] http://{{ offline_node }}:8080/debian/amd64/bookworm/ ./
//! ```
//!
//! # Tested
//!
//! The apt script is proven for real by `hack/stages/ospkg-script.sh` (Debian 12, amd64 and arm64).
//! The dnf script is run with a real dnf (Debian's dnf 4.14 on Debian 12, a stand-in for an EL
//! image: no RPM distribution is reachable here) against a fixture RPM repository by
//! `hack/stages/ospkg-dnf.sh`: closure, virtual provides, architectures, offline install from an
//! empty rpmdb, missing packages. Only a CI matrix job proves it on Rocky/Alma images against
//! their mirrors. The yum script is covered only by the unit tests below: its text, `sh -n`, and
//! runs against stub `yum`/`repotrack`/`createrepo` commands that check the control flow
//! (missing, optional, record), not the real tools' behaviour.

use serde::{Deserialize, Serialize};

use super::{DistroWork, PackageManager};
use crate::layout::NGINX_PORT;
use crate::spec::is_relative_clean;
use kpbuild_ansible::kubespray::Arch;

/// The record file written next to the repository index.
pub(crate) const RECORD_FILE: &str = "kpbuild-os-packages.json";
/// The `format` of `RepoRecord`.
pub(crate) const RECORD_FORMAT: &str = "kpbuild.os-packages/v1";
/// The placeholder for the offline node's address in client files.
pub(crate) const OFFLINE_NODE: &str = "{{ offline_node }}";

/// How to generate a script.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ScriptOptions {
    /// The target architecture: the repository holds its packages.
    pub arch: Arch,
    /// The architecture the op runs on natively (the BuildKit worker's).
    pub host: Arch,
    /// Also take Recommends (apt) / weak dependencies (dnf) into the closure.
    pub recommends: bool,
    /// The op's output mount.
    pub out_root: String,
}

impl ScriptOptions {
    /// For `arch`, run on an amd64 host, without recommends, into `/out`.
    pub fn new(arch: Arch) -> ScriptOptions {
        ScriptOptions {
            arch,
            host: Arch::Amd64,
            recommends: false,
            out_root: "/out".into(),
        }
    }
}

/// Inputs a script cannot be made from.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ScriptError {
    #[error(
        "distro `{distro}`: package `{package}` is not a package name\n  hint: use the distro's package names (letters, digits, `.+-_~:=/`, starting with a letter or digit), e.g. `python3-apt`"
    )]
    BadPackage { distro: String, package: String },
    #[error(
        "distro name `{distro}` is not usable in file names\n  hint: use letters, digits, `.`, `_` and `-`, e.g. `debian12`"
    )]
    BadName { distro: String },
    #[error("distro `{distro}`: image `{image}` is not an image reference")]
    BadImage { distro: String, image: String },
    #[error(
        "distro `{distro}`: path `{path}` must be a relative path of letters, digits, `._+-` without `..`\n  hint: e.g. `debian/{{arch}}/bookworm`"
    )]
    BadPath { distro: String, path: String },
    #[error("distro `{distro}`: repository `{repository}`: {reason}")]
    BadRepository {
        distro: String,
        repository: String,
        reason: String,
    },
    #[error(
        "distro `{distro}`: yum cannot resolve packages for linux/{arch} on a linux/{host} build host without emulation\n  hint: use `manager: dnf` (EL 8 and later) for other architectures, or build linux/{arch} on a linux/{arch} worker"
    )]
    ForeignArch {
        distro: String,
        arch: Arch,
        host: Arch,
    },
}

/// The record written to `<path>/kpbuild-os-packages.json` (see the module doc).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RepoRecord {
    pub format: String,
    pub distro: String,
    pub image: String,
    pub manager: PackageManager,
    /// `linux/<arch>`.
    pub platform: String,
    pub recommends: bool,
    /// Listed packages that exist, sorted.
    pub packages: Vec<String>,
    /// Listed optional packages that do not exist for this distro and architecture, sorted.
    pub skipped: Vec<String>,
    /// Package files in the repository.
    pub files: u64,
}

impl RepoRecord {
    /// Reads a record file's text, checking its format.
    pub fn parse(text: &str) -> Result<RepoRecord, String> {
        let r: RepoRecord =
            serde_json::from_str(text).map_err(|e| format!("{RECORD_FILE}: {e}"))?;
        if r.format != RECORD_FORMAT {
            return Err(format!(
                "{RECORD_FILE}: format `{}` is not `{RECORD_FORMAT}`",
                r.format
            ));
        }
        Ok(r)
    }
}

/// Debian's name of an architecture.
pub(crate) fn deb_arch(arch: Arch) -> &'static str {
    match arch {
        Arch::Amd64 => "amd64",
        Arch::Arm64 => "arm64",
        Arch::Arm => "armhf",
        Arch::Ppc64le => "ppc64el",
    }
}

/// RPM's name of an architecture.
pub(crate) fn rpm_arch(arch: Arch) -> &'static str {
    match arch {
        Arch::Amd64 => "x86_64",
        Arch::Arm64 => "aarch64",
        Arch::Arm => "armv7hl",
        Arch::Ppc64le => "ppc64le",
    }
}

fn manager_name(m: PackageManager) -> &'static str {
    match m {
        PackageManager::Apt => "apt",
        PackageManager::Dnf => "dnf",
        PackageManager::Yum => "yum",
    }
}

/// `s` as one single-quoted shell word.
fn sh_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

fn valid_package(p: &str) -> bool {
    !p.is_empty()
        && p.len() <= 256
        && p.as_bytes()[0].is_ascii_alphanumeric()
        && p.bytes().all(|b| {
            b.is_ascii_alphanumeric()
                || matches!(b, b'.' | b'+' | b'-' | b'_' | b'~' | b':' | b'=' | b'/')
        })
}

fn valid_distro_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 128
        && s.as_bytes()[0].is_ascii_alphanumeric()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

fn valid_image(s: &str) -> bool {
    !s.is_empty()
        && s.bytes().all(|b| {
            b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-' | b':' | b'/' | b'@')
        })
}

fn valid_path(s: &str) -> bool {
    is_relative_clean(s)
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-' | b'+' | b'/'))
}

fn check(work: &DistroWork, opts: &ScriptOptions) -> Result<(), ScriptError> {
    let distro = || work.name.clone();
    if !valid_distro_name(&work.name) {
        return Err(ScriptError::BadName { distro: distro() });
    }
    if !valid_image(&work.image) {
        return Err(ScriptError::BadImage {
            distro: distro(),
            image: work.image.clone(),
        });
    }
    if !valid_path(&work.path) {
        return Err(ScriptError::BadPath {
            distro: distro(),
            path: work.path.clone(),
        });
    }
    if let Some(p) = work
        .packages
        .iter()
        .chain(&work.optional)
        .find(|p| !valid_package(p))
    {
        return Err(ScriptError::BadPackage {
            distro: distro(),
            package: p.clone(),
        });
    }
    for r in &work.repositories {
        let bad = |reason: &str| ScriptError::BadRepository {
            distro: distro(),
            repository: r.clone(),
            reason: reason.into(),
        };
        if r.trim().is_empty() || r.contains(['\n', '\r', '\0']) {
            return Err(bad("must be one non-empty line"));
        }
        match work.manager {
            PackageManager::Apt => {
                let kind = r.split_whitespace().next().unwrap_or("");
                if kind != "deb" {
                    return Err(bad(
                        "is not an apt source line; write e.g. `deb [trusted=yes] https://download.docker.com/linux/debian bookworm stable`",
                    ));
                }
            }
            PackageManager::Dnf | PackageManager::Yum => {
                let ok = !r.contains(char::is_whitespace)
                    && url::Url::parse(r)
                        .is_ok_and(|u| matches!(u.scheme(), "http" | "https" | "file"));
                if !ok {
                    return Err(bad(
                        "is not an http(s) or file URL of a `.repo` file or a repository; write e.g. `https://download.docker.com/linux/centos/docker-ce.repo`",
                    ));
                }
            }
        }
    }
    if work.manager == PackageManager::Yum && opts.arch != opts.host {
        return Err(ScriptError::ForeignArch {
            distro: distro(),
            arch: opts.arch,
            host: opts.host,
        });
    }
    Ok(())
}

/// The script that writes `work`'s repository for `opts.arch` into `<out_root>/<path>`.
pub fn script(work: &DistroWork, opts: &ScriptOptions) -> Result<String, ScriptError> {
    check(work, opts)?;
    let manager = manager_name(work.manager);
    let (arch, body) = match work.manager {
        PackageManager::Apt => (deb_arch(opts.arch), APT),
        PackageManager::Dnf => (rpm_arch(opts.arch), DNF),
        PackageManager::Yum => (rpm_arch(opts.arch), YUM),
    };
    let out = format!("{}/{}", opts.out_root.trim_end_matches('/'), work.path);
    let mut packages = work.packages.clone();
    packages.sort();
    packages.dedup();
    let mut optional = work.optional.clone();
    optional.sort();
    optional.dedup();
    let platform = format!("linux/{}", opts.arch.image_arch());

    let mut s = String::new();
    s.push_str("#!/bin/sh\n");
    s.push_str(&format!(
        "# kpbuild os-packages: the offline {manager} repository of distro {} for {platform}.\n",
        work.name
    ));
    s.push_str(&format!(
        "# Generated by kpbuild's os-packages module. Runs as root on {} natively (no emulation)\n# and writes {out}.\n",
        work.image
    ));
    s.push_str("set -eu\nexport LC_ALL=C\n");
    let vars: [(&str, String); 10] = [
        ("DISTRO", work.name.clone()),
        ("IMAGE", work.image.clone()),
        ("MANAGER", manager.into()),
        ("PLATFORM", platform),
        ("ARCH", arch.into()),
        ("OUT", out),
        ("PACKAGES", packages.join(" ")),
        ("OPTIONAL", optional.join(" ")),
        ("REPOSITORIES", work.repositories.join("\n")),
        ("RECOMMENDS", opts.recommends.to_string()),
    ];
    for (k, v) in vars {
        s.push_str(&format!("{k}={}\n", sh_quote(&v)));
    }
    s.push_str(COMMON_HEAD);
    s.push_str(body);
    s.push_str(COMMON_TAIL);
    Ok(s)
}

/// A file of the bundle: its path from the bundle root and its content.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClientFile {
    pub path: String,
    pub content: String,
}

impl ClientFile {
    /// The content with the offline node's address (`10.0.0.5`, `offline.example`) in place.
    pub fn render(&self, offline_node: &str) -> String {
        self.content.replace(OFFLINE_NODE, offline_node)
    }
}

/// The source file a target host of `arch` needs to install from `work`'s repository:
/// `resources/nginx/repos/<distro>-<arch>.list` (apt) or `.repo` (dnf, yum).
pub fn client_file(work: &DistroWork, arch: Arch) -> Result<ClientFile, ScriptError> {
    if !valid_distro_name(&work.name) {
        return Err(ScriptError::BadName {
            distro: work.name.clone(),
        });
    }
    if !valid_path(&work.path) {
        return Err(ScriptError::BadPath {
            distro: work.name.clone(),
            path: work.path.clone(),
        });
    }
    let url = format!("http://{OFFLINE_NODE}:{NGINX_PORT}/{}/", work.path);
    let arch = arch.image_arch();
    let (ext, content) = match work.manager {
        PackageManager::Apt => (
            "list",
            format!(
                "# kpbuild: offline repository of distro {} for linux/{arch}\ndeb [trusted=yes] {url} ./\n",
                work.name
            ),
        ),
        m @ (PackageManager::Dnf | PackageManager::Yum) => {
            let hotfixes = if m == PackageManager::Dnf {
                // Installable even where a module stream of the same name is enabled.
                "module_hotfixes=1\n"
            } else {
                ""
            };
            (
                "repo",
                format!(
                    "[kpbuild-{name}]\nname=kpbuild offline repository of distro {name} for linux/{arch}\nbaseurl={url}\nenabled=1\ngpgcheck=0\n{hotfixes}",
                    name = work.name
                ),
            )
        }
    };
    Ok(ClientFile {
        path: format!("{}/{}-{arch}.{ext}", crate::layout::REPOS_DIR, work.name),
        content,
    })
}

/// Shared by every manager, after the variables: helpers and the work directory.
const COMMON_HEAD: &str = r#"
say() { printf 'kpbuild: %s\n' "$*" >&2; }
die() { say "error: $*"; exit 1; }
is_optional() {
  case " $OPTIONAL " in *" $1 "*) return 0 ;; esac
  return 1
}
json_list() {
  sep=
  for x in "$@"; do printf '%s"%s"' "$sep" "$x"; sep=', '; done
}
W=$(mktemp -d /tmp/kpbuild-os-packages.XXXXXX)
trap 'rm -rf "$W"' EXIT
"#;

/// apt: `setup`, `candidates`, `accepts`, `fetch`, `index` and the package file extension.
const APT: &str = r#"
EXT=deb
setup() {
  export DEBIAN_FRONTEND=noninteractive
  native=$(dpkg --print-architecture)
  if [ "$native" != "$ARCH" ]; then
    dpkg --add-architecture "$ARCH"
  fi
  say "apt-get update on $IMAGE ($native build side, $ARCH target)"
  apt-get update -q || die "apt-get update failed on $IMAGE: the distro's mirrors must be reachable from the build"
  # Build-side tools: installed into this container only, never part of the list.
  tools=apt-utils
  [ -z "$REPOSITORIES" ] || tools="$tools ca-certificates"
  apt-get install -y -q --no-install-recommends $tools > "$W/tools.log" 2>&1 \
    || { cat "$W/tools.log" >&2; die "cannot install the build-side tools ($tools) on $IMAGE"; }
  if [ -n "$REPOSITORIES" ]; then
    printf '%s\n' "$REPOSITORIES" > /etc/apt/sources.list.d/kpbuild-extra.list
    apt-get update -q || die "apt-get update failed after adding the repositories of distro $DISTRO"
  fi
  # The resolver's own configuration: the target architecture only, an EMPTY dpkg status (the
  # closure includes what the base image already has), its own cache and archives.
  mkdir -p "$W/cache" "$W/archives/partial" "$W/state"
  : > "$W/status"
  cat > "$W/apt.conf" <<EOF
#clear APT::Architectures;
APT::Architecture "$ARCH";
APT::Architectures { "$ARCH"; };
Dir::State::status "$W/status";
Dir::State::extended_states "$W/state/extended_states";
Dir::Cache "$W/cache/";
Dir::Cache::archives "$W/archives/";
APT::Install-Recommends "$RECOMMENDS";
APT::Install-Suggests "false";
APT::Sandbox::User "root";
EOF
}
# Names with an installation candidate, from one query.
candidates() {
  apt-cache -c "$W/apt.conf" policy $PACKAGES 2>/dev/null \
    | awk '/^[^ ].*:$/ { name = substr($0, 1, length($0) - 1) }
           /^  Candidate: / && $2 != "(none)" { print name }' || true
}
# Whether apt-get install accepts one name (virtual packages, version pins).
accepts() {
  apt-get -c "$W/apt.conf" -s -qq install "$1" > /dev/null 2>&1
}
fetch() {
  say "resolving the closure of $# package(s) for $ARCH against an empty dpkg status, downloading"
  apt-get -c "$W/apt.conf" install --download-only -y -q "$@" \
    || die "apt could not resolve or download the packages of distro $DISTRO for $PLATFORM (apt's message is above)"
  for f in "$W"/archives/*.deb; do
    [ -e "$f" ] || continue
    b=${f##*/}
    # Pool file names carry no epoch (no % in URLs): name_1%3a2.0-1_arch.deb -> name_2.0-1_arch.deb
    case $b in *%3a*) b=$(printf '%s\n' "$b" | sed 's/_[0-9][0-9]*%3a/_/') ;; esac
    mv "$f" "$OUT/$b"
  done
}
index() {
  cd "$OUT"
  apt-ftparchive packages . > "$W/Packages" || die "apt-ftparchive packages $OUT failed"
  mv "$W/Packages" Packages
  gzip -9n < Packages > Packages.gz
  # Date: fixed, not the time of the build: the same packages give the same Release bytes on
  # any builder (apt checks a Release's Date only against Valid-Until, which there is none of).
  apt-ftparchive -o APT::FTPArchive::Release::Origin=kpbuild \
    -o "APT::FTPArchive::Release::Label=kpbuild $DISTRO $ARCH" \
    -o "APT::FTPArchive::Release::Date=Thu, 01 Jan 1970 00:00:00 UTC" release . > "$W/Release" \
    || die "apt-ftparchive release $OUT failed"
  mv "$W/Release" Release
}
"#;

/// dnf: as [`APT`].
const DNF: &str = r#"
EXT=rpm
dnfx() {
  dnf -q -y --forcearch="$ARCH" --setopt=install_weak_deps="$RECOMMENDS" "$@"
}
setup() {
  # An image that has them (e.g. Debian's dnf, dnf-plugins-core and createrepo-c, whose rpmdb is
  # empty and which has no repository to install them from) keeps its own.
  if dnf download --help > /dev/null 2>&1 && command -v createrepo_c > /dev/null 2>&1; then
    say "the build-side tools (dnf download, createrepo_c) are on $IMAGE"
  else
    say "installing the build-side tools (dnf-plugins-core, createrepo_c) on $IMAGE"
    dnf -q -y install dnf-plugins-core createrepo_c \
      || die "cannot install the build-side tools (dnf-plugins-core, createrepo_c) on $IMAGE"
  fi
  if [ -n "$REPOSITORIES" ]; then
    printf '%s\n' "$REPOSITORIES" > "$W/repositories"
    while IFS= read -r url; do
      dnf config-manager --add-repo "$url" || die "cannot add repository $url of distro $DISTRO"
    done < "$W/repositories"
  fi
  say "dnf makecache for $ARCH on $IMAGE"
  dnfx makecache || die "dnf makecache for $ARCH failed on $IMAGE: the distro's mirrors must be reachable from the build"
}
candidates() {
  dnfx repoquery --qf '%{name}' $PACKAGES 2>/dev/null || true
}
accepts() {
  [ -n "$(dnfx repoquery --qf '%{name}' "$1" 2>/dev/null || true)" ] \
    || [ -n "$(dnfx repoquery --qf '%{name}' --whatprovides "$1" 2>/dev/null || true)" ]
}
fetch() {
  say "resolving the closure of $# package(s) for $ARCH regardless of what is installed, downloading"
  mkdir -p "$W/pkgs"
  # --arch: a repository may hold other architectures of a name (multilib i686, or several
  # architectures in one tree); resolving every one of them fails ("does not have a compatible
  # architecture").
  dnfx download --resolve --alldeps --arch "$ARCH,noarch" --destdir "$W/pkgs" "$@" \
    || die "dnf could not resolve or download the packages of distro $DISTRO for $PLATFORM (dnf's message is above)"
  for f in "$W"/pkgs/*.rpm; do
    [ -e "$f" ] || continue
    mv "$f" "$OUT/"
  done
}
index() {
  createrepo_c -q "$OUT" || die "createrepo_c $OUT failed"
}
"#;

/// yum (CentOS 7): as [`APT`].
const YUM: &str = r#"
EXT=rpm
setup() {
  say "installing the build-side tools (yum-utils, createrepo) on $IMAGE"
  yum -q -y install yum-utils createrepo \
    || die "cannot install the build-side tools (yum-utils, createrepo) on $IMAGE"
  if [ -n "$REPOSITORIES" ]; then
    printf '%s\n' "$REPOSITORIES" > "$W/repositories"
    while IFS= read -r url; do
      yum-config-manager -q --add-repo "$url" > /dev/null || die "cannot add repository $url of distro $DISTRO"
    done < "$W/repositories"
  fi
  say "yum makecache on $IMAGE"
  yum -q makecache fast || die "yum makecache failed on $IMAGE: the distro's mirrors must be reachable from the build"
}
candidates() {
  repoquery -q --qf '%{name}' $PACKAGES 2>/dev/null || true
}
accepts() {
  [ -n "$(repoquery -q --qf '%{name}' "$1" 2>/dev/null || true)" ] \
    || [ -n "$(repoquery -q --qf '%{name}' --whatprovides "$1" 2>/dev/null || true)" ]
}
fetch() {
  say "resolving the closure of $# package(s) for $ARCH regardless of what is installed, downloading"
  mkdir -p "$W/pkgs"
  repotrack -a "$ARCH" -p "$W/pkgs" "$@" \
    || die "repotrack could not resolve or download the packages of distro $DISTRO for $PLATFORM (its message is above)"
  # repotrack also fetches other architectures' multilib packages: keep $ARCH and noarch.
  for f in "$W"/pkgs/*.rpm; do
    [ -e "$f" ] || continue
    case $f in *."$ARCH".rpm | *.noarch.rpm) mv "$f" "$OUT/" ;; esac
  done
}
index() {
  createrepo -q "$OUT" || die "createrepo $OUT failed"
}
"#;

/// Shared by every manager, after its functions: the flow.
const COMMON_TAIL: &str = r#"
setup
candidates > "$W/candidates"
WANT=
SKIPPED=
MISSING=
for p in $PACKAGES; do
  if grep -qxF "$p" "$W/candidates" || accepts "$p"; then
    WANT="$WANT $p"
  elif is_optional "$p"; then
    SKIPPED="$SKIPPED $p"
  else
    MISSING="$MISSING $p"
  fi
done
if [ -n "$MISSING" ]; then
  say "error: package(s) not available on distro $DISTRO ($IMAGE, $PLATFORM):$MISSING"
  say "hint: remove them from the groups or packages of distro $DISTRO, or list them under optional: to skip and record them"
  exit 1
fi
[ -z "$SKIPPED" ] || say "skipping optional package(s) not available on distro $DISTRO ($PLATFORM):$SKIPPED"
mkdir -p "$OUT"
if [ -n "$WANT" ]; then
  fetch $WANT
fi
index
n=0
for f in "$OUT"/*."$EXT"; do
  if [ -e "$f" ]; then n=$((n + 1)); fi
done
{
  printf '{\n'
  printf '  "format": "kpbuild.os-packages/v1",\n'
  printf '  "distro": "%s",\n' "$DISTRO"
  printf '  "image": "%s",\n' "$IMAGE"
  printf '  "manager": "%s",\n' "$MANAGER"
  printf '  "platform": "%s",\n' "$PLATFORM"
  printf '  "recommends": %s,\n' "$RECOMMENDS"
  printf '  "packages": [%s],\n' "$(json_list $WANT)"
  printf '  "skipped": [%s],\n' "$(json_list $SKIPPED)"
  printf '  "files": %s\n' "$n"
  printf '}\n'
} > "$OUT/kpbuild-os-packages.json"
say "distro $DISTRO ($PLATFORM): $n package files in $OUT ($(du -sh "$OUT" | cut -f1))"
"#;

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;
    use std::process::Command;

    fn debian() -> DistroWork {
        DistroWork {
            name: "debian12".into(),
            image: "debian:bookworm".into(),
            manager: PackageManager::Apt,
            packages: ["curl", "containerd", "netcat", "python-apt", "vim"]
                .map(String::from)
                .to_vec(),
            optional: vec!["netcat".into(), "python-apt".into()],
            repositories: vec![],
            path: "debian/arm64/bookworm".into(),
        }
    }

    fn rocky() -> DistroWork {
        DistroWork {
            name: "rocky9".into(),
            image: "rockylinux:9".into(),
            manager: PackageManager::Dnf,
            packages: [
                "conntrack-tools",
                "containerd.io-1.7.27",
                "curl",
                "nc",
                "nss",
            ]
            .map(String::from)
            .to_vec(),
            optional: vec!["nss".into()],
            repositories: vec!["https://download.docker.com/linux/centos/docker-ce.repo".into()],
            path: "centos/9/os/arm64".into(),
        }
    }

    fn centos7() -> DistroWork {
        DistroWork {
            name: "centos7".into(),
            image: "centos:7.9.2009".into(),
            manager: PackageManager::Yum,
            packages: ["conntrack-tools", "curl", "libselinux-python"]
                .map(String::from)
                .to_vec(),
            optional: vec![],
            repositories: vec!["https://download.docker.com/linux/centos/docker-ce.repo".into()],
            path: "centos/7/os/amd64".into(),
        }
    }

    /// The value of `NAME='…'` in a script.
    fn var<'a>(script: &'a str, name: &str) -> &'a str {
        let prefix = format!("{name}='");
        let line = script
            .lines()
            .find(|l| l.starts_with(&prefix))
            .unwrap_or_else(|| panic!("no {name} in the script"));
        line[prefix.len()..].strip_suffix('\'').unwrap()
    }

    #[test]
    fn the_header_says_what_the_script_does_and_names_no_source_file() {
        let s = script(&debian(), &ScriptOptions::new(Arch::Arm64)).unwrap();
        let header: Vec<&str> = s.lines().take(4).collect();
        assert_eq!(
            header,
            [
                "#!/bin/sh",
                "# kpbuild os-packages: the offline apt repository of distro debian12 for linux/arm64.",
                "# Generated by kpbuild's os-packages module. Runs as root on debian:bookworm natively (no emulation)",
                "# and writes /out/debian/arm64/bookworm.",
            ]
        );
    }

    #[test]
    fn apt_script_holds_its_inputs_and_the_empty_status_resolution() {
        let s = script(&debian(), &ScriptOptions::new(Arch::Arm64)).unwrap();
        assert_eq!(var(&s, "DISTRO"), "debian12");
        assert_eq!(var(&s, "ARCH"), "arm64");
        assert_eq!(var(&s, "PLATFORM"), "linux/arm64");
        assert_eq!(var(&s, "OUT"), "/out/debian/arm64/bookworm");
        assert_eq!(
            var(&s, "PACKAGES"),
            "containerd curl netcat python-apt vim",
            "sorted"
        );
        assert_eq!(var(&s, "OPTIONAL"), "netcat python-apt");
        assert_eq!(var(&s, "RECOMMENDS"), "false");
        for needle in [
            r#"dpkg --add-architecture "$ARCH""#,
            "#clear APT::Architectures;",
            r#"APT::Architecture "$ARCH";"#,
            r#"Dir::State::status "$W/status";"#,
            r#": > "$W/status""#,
            r#"install --download-only -y -q "$@""#,
            "apt-ftparchive packages .",
            "gzip -9n < Packages > Packages.gz",
            "release . >",
            "apt-get install -y -q --no-install-recommends $tools",
            &format!("$OUT/{RECORD_FILE}"),
            &format!("\"format\": \"{RECORD_FORMAT}\""),
        ] {
            assert!(s.contains(needle), "missing `{needle}` in\n{s}");
        }
        // The build-side tools are installed before, and apart from, the resolution.
        let tools = s.find("--no-install-recommends $tools").unwrap();
        let conf = s.find(r#"cat > "$W/apt.conf""#).unwrap();
        assert!(tools < conf);
        assert!(!var(&s, "PACKAGES").contains("apt-utils"));
    }

    #[test]
    fn scripts_are_deterministic_and_differ_by_their_inputs() {
        let opts = ScriptOptions::new(Arch::Arm64);
        assert_eq!(
            script(&debian(), &opts).unwrap(),
            script(&debian(), &opts).unwrap()
        );
        // Input order does not matter: the same set gives the same bytes.
        let mut shuffled = debian();
        shuffled.packages.reverse();
        shuffled.optional.reverse();
        assert_eq!(
            script(&shuffled, &opts).unwrap(),
            script(&debian(), &opts).unwrap()
        );
        let amd = script(&debian(), &ScriptOptions::new(Arch::Amd64)).unwrap();
        assert_ne!(amd, script(&debian(), &opts).unwrap());
        assert_eq!(var(&amd, "ARCH"), "amd64");
        let mut more = debian();
        more.packages.push("wget".into());
        assert_ne!(
            script(&more, &opts).unwrap(),
            script(&debian(), &opts).unwrap()
        );
        let rec = ScriptOptions {
            recommends: true,
            ..opts.clone()
        };
        assert_eq!(var(&script(&debian(), &rec).unwrap(), "RECOMMENDS"), "true");
    }

    #[test]
    fn dnf_script_forces_the_architecture_and_ignores_the_installed_set() {
        let s = script(&rocky(), &ScriptOptions::new(Arch::Arm64)).unwrap();
        assert_eq!(var(&s, "ARCH"), "aarch64");
        assert_eq!(var(&s, "MANAGER"), "dnf");
        assert_eq!(var(&s, "OUT"), "/out/centos/9/os/arm64");
        assert_eq!(
            var(&s, "REPOSITORIES"),
            "https://download.docker.com/linux/centos/docker-ce.repo"
        );
        for needle in [
            r#"--forcearch="$ARCH""#,
            r#"--setopt=install_weak_deps="$RECOMMENDS""#,
            "download --resolve --alldeps --arch \"$ARCH,noarch\" --destdir",
            r#"dnf config-manager --add-repo "$url""#,
            "dnf -q -y install dnf-plugins-core createrepo_c",
            r#"createrepo_c -q "$OUT""#,
            "--whatprovides",
        ] {
            assert!(s.contains(needle), "missing `{needle}` in\n{s}");
        }
        assert!(!s.contains("apt-get") && !s.contains("repotrack"));
    }

    #[test]
    fn yum_script_uses_repotrack_and_refuses_a_foreign_architecture() {
        let s = script(&centos7(), &ScriptOptions::new(Arch::Amd64)).unwrap();
        assert_eq!(var(&s, "ARCH"), "x86_64");
        for needle in [
            r#"repotrack -a "$ARCH" -p "$W/pkgs""#,
            r#"*."$ARCH".rpm | *.noarch.rpm"#,
            r#"createrepo -q "$OUT""#,
            r#"yum-config-manager -q --add-repo "$url""#,
        ] {
            assert!(s.contains(needle), "missing `{needle}` in\n{s}");
        }
        let e = script(&centos7(), &ScriptOptions::new(Arch::Arm64)).unwrap_err();
        assert!(matches!(e, ScriptError::ForeignArch { .. }), "{e}");
        let msg = e.to_string();
        assert!(
            msg.contains("centos7") && msg.contains("linux/arm64") && msg.contains("dnf"),
            "{msg}"
        );
        // On an arm64 worker, arm64 is native.
        let native = ScriptOptions {
            host: Arch::Arm64,
            ..ScriptOptions::new(Arch::Arm64)
        };
        assert_eq!(
            var(&script(&centos7(), &native).unwrap(), "ARCH"),
            "aarch64"
        );
    }

    #[test]
    fn bad_inputs_are_refused_naming_them() {
        let opts = ScriptOptions::new(Arch::Amd64);
        for bad in ["vim;reboot", "-o", "a b", "curl*", "$(x)", "", "it's"] {
            let mut d = debian();
            d.packages.push(bad.into());
            let e = script(&d, &opts).unwrap_err();
            assert_eq!(
                e,
                ScriptError::BadPackage {
                    distro: "debian12".into(),
                    package: bad.into()
                }
            );
        }
        for good in [
            "libstdc++6",
            "containerd.io=1.4.9-1",
            "python3:any",
            "nss_wrapper",
        ] {
            let mut d = debian();
            d.packages.push(good.into());
            assert!(script(&d, &opts).is_ok(), "{good}");
        }
        let mut d = debian();
        d.repositories = vec!["https://example.com/repo".into()];
        let e = script(&d, &opts).unwrap_err().to_string();
        assert!(
            e.contains("https://example.com/repo") && e.contains("apt source line"),
            "{e}"
        );
        d.repositories = vec!["deb http://a ./\ndeb http://b ./".into()];
        assert!(matches!(
            script(&d, &opts),
            Err(ScriptError::BadRepository { .. })
        ));
        let mut r = rocky();
        r.repositories = vec!["deb http://x ./".into()];
        assert!(matches!(
            script(&r, &opts),
            Err(ScriptError::BadRepository { .. })
        ));
        let mut d = debian();
        d.name = "Debian 12".into();
        assert!(matches!(
            script(&d, &opts),
            Err(ScriptError::BadName { .. })
        ));
        let mut d = debian();
        d.path = "../etc".into();
        assert!(matches!(
            script(&d, &opts),
            Err(ScriptError::BadPath { .. })
        ));
        let mut d = debian();
        d.image = "debian:bookworm\"".into();
        assert!(matches!(
            script(&d, &opts),
            Err(ScriptError::BadImage { .. })
        ));
    }

    #[test]
    fn client_files_point_at_the_offline_node() {
        let c = client_file(&debian(), Arch::Arm64).unwrap();
        assert_eq!(c.path, "resources/nginx/repos/debian12-arm64.list");
        assert_eq!(
            c.content.lines().last().unwrap(),
            "deb [trusted=yes] http://{{ offline_node }}:8080/debian/arm64/bookworm/ ./"
        );
        assert!(
            c.render("10.0.0.5")
                .contains("deb [trusted=yes] http://10.0.0.5:8080/debian/arm64/bookworm/ ./\n")
        );
        let r = client_file(&rocky(), Arch::Arm64).unwrap();
        assert_eq!(r.path, "resources/nginx/repos/rocky9-arm64.repo");
        assert_eq!(
            r.content,
            "[kpbuild-rocky9]\nname=kpbuild offline repository of distro rocky9 for linux/arm64\n\
             baseurl=http://{{ offline_node }}:8080/centos/9/os/arm64/\nenabled=1\ngpgcheck=0\n\
             module_hotfixes=1\n"
        );
        let y = client_file(&centos7(), Arch::Amd64).unwrap();
        assert!(y.content.ends_with("gpgcheck=0\n"), "{}", y.content);
        let mut bad = debian();
        bad.path = "/abs".into();
        assert!(client_file(&bad, Arch::Amd64).is_err());
    }

    #[test]
    fn record_parses_and_checks_its_format() {
        let text = r#"{"format": "kpbuild.os-packages/v1", "distro": "debian12", "image": "debian:bookworm",
            "manager": "apt", "platform": "linux/arm64", "recommends": false,
            "packages": ["curl"], "skipped": ["netcat"], "files": 3}"#;
        let r = RepoRecord::parse(text).unwrap();
        assert_eq!(r.manager, PackageManager::Apt);
        assert_eq!(r.skipped, ["netcat"]);
        let e = RepoRecord::parse(&text.replace("/v1", "/v9")).unwrap_err();
        assert!(e.contains("kpbuild.os-packages/v9"), "{e}");
        assert!(RepoRecord::parse(&text.replace("\"files\"", "\"filez\"")).is_err());
    }

    #[test]
    fn the_plan_of_the_kubeplay_groups_gives_the_expected_list() {
        use crate::plan::{PlanOptions, Work, plan};
        use crate::spec::SpecFile;
        use kpbuild_paths::source::LocalDir;
        let spec = "# syntax=kpbuild/frontend:dev
name: t
version: v0
platforms: [linux/arm64]
modules:
  os-packages:
    kind: os-packages
    groups-file: os-packages/packages.kubeplay.yaml
    distros:
      - name: debian12
        image: debian:bookworm
        manager: apt
        groups: [kubespray.common, kubespray.apt, common, apt]
        packages: [containerd]
        optional: [python-apt, aufs-tools, netcat]
        path: debian/{arch}/bookworm
";
        let testdata = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/testdata");
        let spec = SpecFile::parse(spec, "Dockerfile.bundle").unwrap();
        let p = plan(&spec, &LocalDir::new(testdata), &PlanOptions::default()).unwrap();
        let Work::OsPackages(super::super::OsPackagesWork { distros }) =
            &p.platforms[0].modules[0].work
        else {
            panic!()
        };
        let s = script(&distros[0], &ScriptOptions::new(Arch::Arm64)).unwrap();
        let packages: Vec<&str> = var(&s, "PACKAGES").split(' ').collect();
        for p in [
            "containerd",
            "conntrack",
            "python3-apt",
            "rsync",
            "apache2-utils",
        ] {
            assert!(packages.contains(&p), "{p}");
        }
        assert_eq!(var(&s, "OPTIONAL"), "aufs-tools netcat python-apt");
        assert_eq!(var(&s, "OUT"), "/out/debian/arm64/bookworm");
    }

    // ---- The generated shell, run: syntax, quoting, and the control flow against stubs. ----

    fn sh(args: &[&str], path: Option<&Path>) -> std::process::Output {
        let mut c = Command::new("sh");
        c.args(args);
        if let Some(p) = path {
            c.env("PATH", format!("{}:/usr/bin:/bin", p.display()));
        }
        c.output().expect("sh runs")
    }

    #[test]
    fn every_script_is_valid_sh() {
        let dir = tempfile::tempdir().unwrap();
        let mut d = debian();
        d.repositories = vec!["deb [trusted=yes] http://x.example/it's bookworm main".into()];
        let cases = [
            script(&d, &ScriptOptions::new(Arch::Arm64)).unwrap(),
            script(&rocky(), &ScriptOptions::new(Arch::Arm64)).unwrap(),
            script(&centos7(), &ScriptOptions::new(Arch::Amd64)).unwrap(),
        ];
        for (i, s) in cases.iter().enumerate() {
            let f = dir.path().join(format!("{i}.sh"));
            std::fs::write(&f, s).unwrap();
            let out = sh(&["-n", f.to_str().unwrap()], None);
            assert!(
                out.status.success(),
                "{}\n{s}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }

    #[test]
    fn quoting_keeps_values_intact() {
        for v in [
            "plain",
            "it's",
            "a'b'c",
            "deb [trusted=yes] http://x/ ./",
            "$(x) `y` \"z\"",
        ] {
            let out = sh(&["-c", &format!("printf %s {}", sh_quote(v))], None);
            assert_eq!(String::from_utf8(out.stdout).unwrap(), v);
        }
    }

    /// Writes executable stubs into `dir/bin`.
    fn stubs(dir: &Path, files: &[(&str, &str)]) -> std::path::PathBuf {
        use std::os::unix::fs::PermissionsExt;
        let bin = dir.join("bin");
        std::fs::create_dir_all(&bin).unwrap();
        for (name, body) in files {
            let p = bin.join(name);
            std::fs::write(&p, format!("#!/bin/sh\n{body}")).unwrap();
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
        }
        bin
    }

    /// apt, dpkg and apt-ftparchive as far as the script uses them. Real packages: curl,
    /// containerd, vim; `netcat` is a virtual package without a candidate.
    const APT_STUBS: &[(&str, &str)] = &[
        (
            "dpkg",
            r#"echo "dpkg $*" >> "$STUB_LOG"
case $1 in --print-architecture) echo amd64 ;; esac"#,
        ),
        (
            "apt-get",
            r#"echo "apt-get $*" >> "$STUB_LOG"
conf=
[ "$1" = -c ] && { conf=$2; shift 2; }
case " $* " in
  *" update "*) exit 0 ;;
  *" -s "*) exit 100 ;;
  *" --download-only "*)
    # The resolution must see an empty dpkg status and the target architecture only.
    status=$(sed -n 's/^Dir::State::status "\(.*\)";$/\1/p' "$conf")
    [ -f "$status" ] && [ ! -s "$status" ] || { echo "status $status is not empty" >&2; exit 99; }
    grep -qx '#clear APT::Architectures;' "$conf" || exit 98
    archives=$(sed -n 's/^Dir::Cache::archives "\(.*\)";$/\1/p' "$conf")
    for a in "$@"; do case $a in -*) ;; install) ;; *) : > "$archives/${a}_1.0_arm64.deb" ;; esac; done
    : > "$archives/libcap2_1%3a2.66-4_arm64.deb"
    exit 0 ;;
  *" install "*) exit 0 ;;
esac
exit 1"#,
        ),
        (
            "apt-cache",
            r#"shift 2; [ "$1" = policy ] && shift
for p in "$@"; do
  case $p in
    curl|containerd|vim) printf '%s:\n  Installed: (none)\n  Candidate: 1.0\n  Version table:\n' "$p" ;;
    netcat) printf '%s:\n  Installed: (none)\n  Candidate: (none)\n  Version table:\n' "$p" ;;
  esac
done"#,
        ),
        (
            "apt-ftparchive",
            r#"for a in "$@"; do last=$a; done
case " $* " in
  *" packages "*) for f in *.deb; do printf 'Package: %s\nFilename: ./%s\n\n' "${f%%_*}" "$f"; done ;;
  *" release "*) echo "Origin: kpbuild" ;;
esac"#,
        ),
    ];

    fn run_stubbed(
        work: &DistroWork,
        opts_arch: Arch,
        stub_files: &[(&str, &str)],
    ) -> (std::process::Output, tempfile::TempDir, String) {
        let dir = tempfile::tempdir().unwrap();
        let bin = stubs(dir.path(), stub_files);
        let opts = ScriptOptions {
            out_root: dir.path().join("out").display().to_string(),
            ..ScriptOptions::new(opts_arch)
        };
        let f = dir.path().join("script.sh");
        std::fs::write(&f, script(work, &opts).unwrap()).unwrap();
        let log = dir.path().join("stub.log");
        std::fs::write(&log, "").unwrap();
        let out = Command::new("sh")
            .arg(&f)
            .env("PATH", format!("{}:/usr/bin:/bin", bin.display()))
            .env("STUB_LOG", &log)
            .output()
            .unwrap();
        let log = std::fs::read_to_string(&log).unwrap();
        (out, dir, log)
    }

    #[test]
    fn apt_flow_skips_and_records_optional_packages() {
        let (out, dir, log) = run_stubbed(&debian(), Arch::Arm64, APT_STUBS);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{stderr}\n{log}");
        let repo = dir.path().join("out/debian/arm64/bookworm");
        let record =
            RepoRecord::parse(&std::fs::read_to_string(repo.join(RECORD_FILE)).unwrap()).unwrap();
        assert_eq!(record.packages, ["containerd", "curl", "vim"]);
        assert_eq!(record.skipped, ["netcat", "python-apt"]);
        assert_eq!(record.platform, "linux/arm64");
        assert_eq!(record.files, 4);
        assert!(!record.recommends);
        assert!(
            stderr.contains("skipping optional package(s) not available on distro debian12 (linux/arm64): netcat python-apt"),
            "{stderr}"
        );
        // The epoch is gone from the file name; the index and release were written.
        assert!(repo.join("libcap2_2.66-4_arm64.deb").exists());
        assert!(!repo.join("libcap2_1%3a2.66-4_arm64.deb").exists());
        for f in ["Packages", "Packages.gz", "Release"] {
            assert!(repo.join(f).exists(), "{f}");
        }
        assert!(log.contains("dpkg --add-architecture arm64"), "{log}");
        assert!(log.contains("--no-install-recommends apt-utils"), "{log}");
        let download = log.lines().find(|l| l.contains("--download-only")).unwrap();
        assert!(
            download.ends_with("install --download-only -y -q containerd curl vim"),
            "{download}"
        );
    }

    #[test]
    fn apt_flow_fails_naming_missing_packages_and_the_distro() {
        let mut d = debian();
        d.optional = vec!["netcat".into()];
        let (out, dir, log) = run_stubbed(&d, Arch::Amd64, APT_STUBS);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{stderr}");
        assert!(
            stderr.contains(
                "kpbuild: error: package(s) not available on distro debian12 (debian:bookworm, linux/amd64): python-apt\n"
            ),
            "{stderr}"
        );
        assert!(stderr.contains("optional:"), "{stderr}");
        assert!(
            !log.contains("--download-only"),
            "nothing is downloaded: {log}"
        );
        assert!(
            !dir.path()
                .join("out/debian/arm64/bookworm")
                .join(RECORD_FILE)
                .exists()
        );
    }

    const DNF_STUBS: &[(&str, &str)] = &[
        (
            "dnf",
            r#"echo "dnf $*" >> "$STUB_LOG"
while [ $# -gt 0 ]; do case $1 in -*) shift ;; *) break ;; esac; done
cmd=$1; shift
case $cmd in
  install|makecache) exit 0 ;;
  config-manager) exit 0 ;;
  repoquery)
    provides=
    while [ $# -gt 0 ]; do
      case $1 in --qf) shift 2 ;; --whatprovides) provides=1; shift ;; *) break ;; esac
    done
    for p in "$@"; do
      case $p in
        curl|conntrack-tools) echo "$p" ;;
        containerd.io-1.7.27) [ -n "$provides" ] || echo containerd.io ;;
        nc) [ -z "$provides" ] || echo nmap-ncat ;;
      esac
    done ;;
  download)
    while [ $# -gt 0 ]; do case $1 in --destdir) dest=$2; shift 2 ;; --arch) [ "$2" = aarch64,noarch ] || exit 9; shift 2 ;; -*) shift ;; *) break ;; esac; done
    for p in "$@"; do : > "$dest/$p-1.0-1.aarch64.rpm"; done ;;
esac"#,
        ),
        (
            "createrepo_c",
            r#"echo "createrepo_c $*" >> "$STUB_LOG"; for a in "$@"; do d=$a; done; mkdir -p "$d/repodata""#,
        ),
    ];

    #[test]
    fn dnf_flow_accepts_provides_and_nevras_and_records_skipped() {
        let (out, dir, log) = run_stubbed(&rocky(), Arch::Arm64, DNF_STUBS);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{stderr}\n{log}");
        let repo = dir.path().join("out/centos/9/os/arm64");
        let record =
            RepoRecord::parse(&std::fs::read_to_string(repo.join(RECORD_FILE)).unwrap()).unwrap();
        assert_eq!(
            record.packages,
            ["conntrack-tools", "containerd.io-1.7.27", "curl", "nc"]
        );
        assert_eq!(record.skipped, ["nss"]);
        assert_eq!(record.manager, PackageManager::Dnf);
        assert_eq!(record.files, 4);
        assert!(repo.join("repodata").is_dir());
        assert!(
            log.contains(
                "dnf config-manager --add-repo https://download.docker.com/linux/centos/docker-ce.repo"
            ),
            "{log}"
        );
        let download = log
            .lines()
            .find(|l| l.contains(" download ") && l.contains("--resolve"))
            .unwrap();
        assert!(
            download.contains("--forcearch=aarch64")
                && download.contains("--setopt=install_weak_deps=false")
                && download.contains("--resolve --alldeps"),
            "{download}"
        );
    }

    #[test]
    fn dnf_flow_fails_naming_missing_packages_and_the_distro() {
        let mut r = rocky();
        r.optional.clear();
        let (out, _dir, _log) = run_stubbed(&r, Arch::Arm64, DNF_STUBS);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success());
        assert!(
            stderr.contains("not available on distro rocky9 (rockylinux:9, linux/arm64): nss\n"),
            "{stderr}"
        );
    }

    const YUM_STUBS: &[(&str, &str)] = &[
        ("yum", r#"echo "yum $*" >> "$STUB_LOG""#),
        (
            "yum-config-manager",
            r#"echo "yum-config-manager $*" >> "$STUB_LOG""#,
        ),
        (
            "repoquery",
            r#"while [ $# -gt 0 ]; do case $1 in --qf) shift 2 ;; -*) shift ;; *) break ;; esac; done
for p in "$@"; do case $p in curl|conntrack-tools) echo "$p" ;; esac; done"#,
        ),
        (
            "repotrack",
            r#"echo "repotrack $*" >> "$STUB_LOG"
while [ $# -gt 0 ]; do case $1 in -p) dest=$2; shift 2 ;; -a) shift 2 ;; *) break ;; esac; done
for p in "$@"; do : > "$dest/$p-1.0-1.x86_64.rpm"; : > "$dest/$p-1.0-1.i686.rpm"; done
: > "$dest/tzdata-2024-1.noarch.rpm""#,
        ),
        (
            "createrepo",
            r#"for a in "$@"; do d=$a; done; mkdir -p "$d/repodata""#,
        ),
    ];

    #[test]
    fn yum_flow_keeps_only_its_architecture() {
        let mut c = centos7();
        c.optional = vec!["libselinux-python".into()];
        let (out, dir, log) = run_stubbed(&c, Arch::Amd64, YUM_STUBS);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{stderr}\n{log}");
        let repo = dir.path().join("out/centos/7/os/amd64");
        let mut files: Vec<String> = std::fs::read_dir(&repo)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        files.sort();
        assert_eq!(
            files,
            [
                "conntrack-tools-1.0-1.x86_64.rpm",
                "curl-1.0-1.x86_64.rpm",
                RECORD_FILE,
                "repodata",
                "tzdata-2024-1.noarch.rpm"
            ]
        );
        let record =
            RepoRecord::parse(&std::fs::read_to_string(repo.join(RECORD_FILE)).unwrap()).unwrap();
        assert_eq!(record.skipped, ["libselinux-python"]);
        assert_eq!(record.files, 3);
        assert!(log.contains("repotrack -a x86_64 -p"), "{log}");
    }
}
