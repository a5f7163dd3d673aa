//! The one platform type of kpbuild: `os/architecture[/variant]` as OCI and BuildKit name it,
//! and [`Arch`], the CPU architectures kubespray ships for (its `image_arch` naming).
//!
//! A spec's platforms, a plan's, an exec op's and an index entry's are all [`Platform`]; a
//! bundle platform is one whose [`Platform::arch`] is some `Arch` (checked where a spec is
//! read, [`Platform::parse_bundle`]).

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// A platform as found in an index (`os`, `architecture`, `variant`), or as asked for
/// (`linux/arm64`, `linux/arm/v7`). Serialized as its string; deserialized from the string or
/// from the OCI object form.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Platform {
    pub os: String,
    pub architecture: String,
    pub variant: Option<String>,
}

/// Why a platform string is not `os/arch[/variant]`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid platform {0:?}: expected os/arch[/variant], such as linux/amd64 or linux/arm/v7")]
pub struct PlatformError(pub String);

/// A platform kpbuild cannot build a bundle for.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown platform `{0}`; use linux/amd64, linux/arm64, linux/arm or linux/ppc64le")]
pub struct BundlePlatformError(pub String);

impl FromStr for Platform {
    type Err = PlatformError;
    fn from_str(s: &str) -> Result<Platform, PlatformError> {
        let parts: Vec<&str> = s.split('/').collect();
        let ok = |p: &str| {
            !p.is_empty()
                && p.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-')
        };
        match parts.as_slice() {
            [os, arch] if ok(os) && ok(arch) => Ok(Platform {
                os: os.to_string(),
                architecture: arch.to_string(),
                variant: None,
            }),
            [os, arch, variant] if ok(os) && ok(arch) && ok(variant) => Ok(Platform {
                os: os.to_string(),
                architecture: arch.to_string(),
                variant: Some(variant.to_string()),
            }),
            _ => Err(PlatformError(s.to_string())),
        }
    }
}

impl fmt::Display for Platform {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.os, self.architecture)?;
        if let Some(v) = &self.variant {
            write!(f, "/{v}")?;
        }
        Ok(())
    }
}

impl Serialize for Platform {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Platform {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Form {
            Text(String),
            Object {
                os: String,
                architecture: String,
                #[serde(default)]
                variant: Option<String>,
            },
        }
        match Form::deserialize(d)? {
            Form::Text(s) => s.parse().map_err(serde::de::Error::custom),
            Form::Object {
                os,
                architecture,
                variant,
            } => Ok(Platform {
                os,
                architecture,
                variant,
            }),
        }
    }
}

impl Platform {
    /// `linux/<arch>`.
    pub fn linux(arch: Arch) -> Platform {
        Platform {
            os: "linux".into(),
            architecture: arch.image_arch().into(),
            variant: None,
        }
    }

    /// A platform a bundle is built for: `linux/<arch>` of an [`Arch`], normalized (the
    /// default variants `linux/arm/v7` and `linux/arm64/v8` are accepted and dropped).
    pub fn parse_bundle(s: &str) -> Result<Platform, BundlePlatformError> {
        let bad = || BundlePlatformError(s.to_string());
        let p: Platform = s.parse().map_err(|_| bad())?;
        let default_variant = matches!(
            (p.architecture.as_str(), p.variant.as_deref()),
            (_, None) | ("arm", Some("v7")) | ("arm64", Some("v8"))
        );
        match p.arch() {
            Some(arch) if default_variant => Ok(Platform::linux(arch)),
            _ => Err(bad()),
        }
    }

    /// The architecture, when this is a Linux platform kubespray ships for.
    pub fn arch(&self) -> Option<Arch> {
        if self.os != "linux" {
            return None;
        }
        Arch::ALL
            .into_iter()
            .find(|a| a.image_arch() == self.architecture)
    }

    /// The platform this program was built for (`linux/amd64`, `linux/arm64`, …).
    pub fn host() -> Platform {
        let architecture = match std::env::consts::ARCH {
            "x86_64" => "amd64",
            "aarch64" => "arm64",
            "x86" => "386",
            "arm" => "arm",
            "powerpc64" => "ppc64le",
            "s390x" => "s390x",
            "riscv64" => "riscv64",
            other => other,
        };
        Platform {
            os: std::env::consts::OS.to_string(),
            architecture: architecture.to_string(),
            variant: None,
        }
    }

    /// The variant with the defaults Docker assumes: `arm64` is `v8`, `arm` is `v7`.
    fn normalized_variant(&self) -> Option<&str> {
        match (self.architecture.as_str(), self.variant.as_deref()) {
            ("arm64", None) => Some("v8"),
            ("arm", None) => Some("v7"),
            (_, v) => v,
        }
    }

    /// Whether an index entry's platform (`self`) satisfies the asked-for `wanted`.
    /// The variant is compared only when `wanted` names one, or for `arm`/`arm64` where
    /// Docker's defaults apply.
    pub fn satisfies(&self, wanted: &Platform) -> bool {
        if self.os != wanted.os || self.architecture != wanted.architecture {
            return false;
        }
        if wanted.variant.is_none() && !matches!(wanted.architecture.as_str(), "arm" | "arm64") {
            return true;
        }
        self.normalized_variant() == wanted.normalized_variant()
    }
}

/// Deserializes a spec's list of bundle platforms ([`Platform::parse_bundle`]).
pub fn deserialize_bundle_platforms<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> Result<Vec<Platform>, D::Error> {
    Vec::<String>::deserialize(d)?
        .iter()
        .map(|s| Platform::parse_bundle(s).map_err(serde::de::Error::custom))
        .collect()
}

/// Target CPU architecture, in kubespray's `image_arch` naming.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Arch {
    Amd64,
    Arm64,
    Arm,
    Ppc64le,
}

impl Arch {
    pub const ALL: [Arch; 4] = [Arch::Amd64, Arch::Arm64, Arch::Arm, Arch::Ppc64le];

    /// kubespray's `image_arch` (and OCI's architecture).
    pub fn image_arch(self) -> &'static str {
        match self {
            Arch::Amd64 => "amd64",
            Arch::Arm64 => "arm64",
            Arch::Arm => "arm",
            Arch::Ppc64le => "ppc64le",
        }
    }

    /// The `ansible_architecture` fact of a host of this architecture (`uname -m`).
    pub fn ansible_architecture(self) -> &'static str {
        match self {
            Arch::Amd64 => "x86_64",
            Arch::Arm64 => "aarch64",
            Arch::Arm => "armv7l",
            Arch::Ppc64le => "ppc64le",
        }
    }

    /// From `amd64`, `arm64`, `linux/arm64`, `x86_64`, `aarch64`, …
    pub fn parse(s: &str) -> Option<Arch> {
        let s = s.strip_prefix("linux/").unwrap_or(s);
        let s = s.split('/').next().unwrap_or(s);
        Arch::ALL
            .into_iter()
            .find(|a| a.image_arch() == s || a.ansible_architecture() == s)
    }
}

impl fmt::Display for Arch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.image_arch())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bundle_platforms_are_linux_arches_normalized() {
        assert_eq!(
            Platform::parse_bundle("linux/arm64/v8").unwrap(),
            Platform::linux(Arch::Arm64)
        );
        assert_eq!(
            Platform::parse_bundle("linux/arm/v7").unwrap().to_string(),
            "linux/arm"
        );
        for bad in [
            "linux/riscv64",
            "windows/amd64",
            "linux/arm/v6",
            "amd64",
            "",
        ] {
            assert!(Platform::parse_bundle(bad).is_err(), "{bad}");
        }
        assert_eq!(
            Platform::parse_bundle("linux/riscv64")
                .unwrap_err()
                .to_string(),
            "unknown platform `linux/riscv64`; use linux/amd64, linux/arm64, linux/arm or linux/ppc64le"
        );
    }

    #[test]
    fn serde_as_text_and_object() {
        let p: Platform = serde_json::from_str("\"linux/arm/v7\"").unwrap();
        assert_eq!(p.variant.as_deref(), Some("v7"));
        let q: Platform =
            serde_json::from_str(r#"{"os":"linux","architecture":"arm","variant":"v7"}"#).unwrap();
        assert_eq!(p, q);
        assert_eq!(serde_json::to_string(&q).unwrap(), "\"linux/arm/v7\"");
        assert_eq!(q.arch(), Some(Arch::Arm));
    }
}
