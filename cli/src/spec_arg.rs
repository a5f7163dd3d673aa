//! The arguments `build`, `plan` and `export` share: the spec (`-f`), the platforms, and the
//! build context the spec's paths are relative to.

use std::path::{Path, PathBuf};

use kpbuild_bundle::spec::SpecFile;
use kpbuild_oci::platform::Platform;

#[derive(clap::Args)]
pub struct SpecArg {
    /// The bundle spec (names the bundle, its version, platforms and modules).
    #[arg(
        short = 'f',
        long = "file",
        value_name = "FILE",
        default_value = "Dockerfile.bundle"
    )]
    pub spec: PathBuf,
    /// Platforms, comma-separated or repeated, e.g. linux/arm64 (default: the spec's).
    #[arg(long, value_delimiter = ',', value_parser = parse_platform)]
    pub platform: Vec<Platform>,
}

impl SpecArg {
    pub fn read(&self) -> anyhow::Result<SpecFile> {
        Ok(SpecFile::read(&self.spec)?)
    }

    /// The platforms asked for, else the spec's.
    pub fn platforms_or(&self, spec: &SpecFile) -> Vec<Platform> {
        if self.platform.is_empty() {
            spec.spec.platforms.clone()
        } else {
            self.platform.clone()
        }
    }
}

#[derive(clap::Args)]
pub struct ContextArg {
    /// The build context the spec's paths are relative to (default: the spec's directory).
    #[arg(long, value_name = "DIR")]
    pub context: Option<PathBuf>,
}

impl ContextArg {
    /// `--context`, else the spec's directory, else the working directory.
    pub fn dir(&self, spec: &Path) -> PathBuf {
        context_dir(spec, self.context.as_deref())
    }
}

pub(crate) fn parse_platform(s: &str) -> Result<Platform, String> {
    Platform::parse_bundle(s).map_err(|e| e.to_string())
}

/// The build context: `context`, else the spec's directory, else the working directory.
pub fn context_dir(spec: &Path, context: Option<&Path>) -> PathBuf {
    context
        .filter(|c| !c.as_os_str().is_empty())
        .map(Path::to_path_buf)
        .or_else(|| {
            spec.parent()
                .filter(|p| !p.as_os_str().is_empty())
                .map(Path::to_path_buf)
        })
        .unwrap_or_else(|| PathBuf::from("."))
}
