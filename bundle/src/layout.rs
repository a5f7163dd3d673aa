//! The bundle layout: every path of the kubeplay tree, the target names, the module image
//! names and the output file names, in one place. No other file spells a bundle path.
//!
//! ```text
//! kubeplay.lock.json  kubeplay.lock.json.minisig (when signed)  kubeplay.spdx.json  kubeplay.cdx.json
//! compose.yaml  config/{nginx.conf,registry.yml}  install.sh …
//! resources/images/<name>-<tag>.tar            loadable image archives
//! resources/nginx/files/<host>/<url path>      files, laid out by URL
//! resources/nginx/<distro path>/               package repositories
//! resources/nginx/repos/                       client source files (.list, .repo)
//! resources/registry/docker/registry/v2/       the registry:2 storage tree
//! ```

use kpbuild_oci::platform::Platform;

/// The target that merges every module into the bundle tree (the default).
pub const BUNDLE_TARGET: &str = "bundle";
/// The pseudo-module that writes the bundle manifest.
pub const LOCK_TARGET: &str = "lock";

/// The bundle manifest at the root.
pub const LOCK_FILE: &str = "kubeplay.lock.json";
/// The manifest's signature beside it (minisign's format: `kpbuild sign`, `export --sign`).
pub const LOCK_SIGNATURE: &str = "kubeplay.lock.json.minisig";
/// The bundle's SBOM in SPDX 2.3 JSON, beside the manifest (made from it).
pub const SPDX_FILE: &str = "kubeplay.spdx.json";
/// The bundle's SBOM in CycloneDX 1.6 JSON, beside the manifest (made from it).
pub const CYCLONEDX_FILE: &str = "kubeplay.cdx.json";
/// What nginx serves (on the deploy node: `download_url`, package repositories).
pub const NGINX_ROOT: &str = "resources/nginx";
/// What the registry serves: the root a `registry:2` mounts as `/var/lib/registry`.
pub const REGISTRY_ROOT: &str = "resources/registry";
/// Loadable image archives (`docker load -i`).
pub(crate) const IMAGES_DIR: &str = "resources/images";
/// Client source files for the package repositories.
pub const REPOS_DIR: &str = "resources/nginx/repos";
/// The compose file at the root.
pub const COMPOSE_FILE: &str = "compose.yaml";
/// The services' configurations.
pub const CONFIG_DIR: &str = "config";
/// nginx's configuration.
pub const NGINX_CONF: &str = "config/nginx.conf";
/// The registry's configuration.
pub const REGISTRY_CONF: &str = "config/registry.yml";

/// The port the bundle's nginx serves [`NGINX_ROOT`] on (the deploy side's `download_url`
/// and the package repositories' client files name it).
pub(crate) const NGINX_PORT: u16 = 8080;
/// The port the bundle's registry serves [`REGISTRY_ROOT`] on.
pub(crate) const REGISTRY_PORT: u16 = 5000;

/// A path under [`NGINX_ROOT`] (`files/dl.k8s.io/…` → `resources/nginx/files/dl.k8s.io/…`).
pub fn nginx_path(rel: &str) -> String {
    format!("{NGINX_ROOT}/{rel}")
}

/// The registry storage tree (`docker/registry/v2`) under [`REGISTRY_ROOT`].
pub fn registry_v2() -> String {
    format!("{REGISTRY_ROOT}/docker/registry/v2")
}

/// The path under [`NGINX_ROOT`] of a downloaded file: `files/<host[:port]>/<path>` of its
/// upstream URL, what the deploy side asks for once `download_url` points at the bundle.
pub fn file_path_of_url(raw: &str) -> Result<String, String> {
    let url = url::Url::parse(raw).map_err(|e| format!("not a URL ({e})"))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(format!("scheme `{}` is not http or https", url.scheme()));
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err(
            "URLs with a query or fragment have no stable file path; use a plain URL".into(),
        );
    }
    let host = url.host_str().ok_or("no host")?;
    let host = match url.port() {
        Some(p) => format!("{host}:{p}"),
        None => host.to_string(),
    };
    // The parser resolves `..` and `.` already; what is left must be plain names.
    let segments: Vec<&str> = url.path_segments().map(|s| s.collect()).unwrap_or_default();
    if segments.is_empty()
        || segments
            .iter()
            .any(|s| s.is_empty() || *s == ".." || *s == ".")
    {
        return Err(
            "the URL path must name a file (no empty, `.` or `..` segments, no trailing `/`)"
                .into(),
        );
    }
    if raw.contains("/../") || raw.contains("/./") || raw.ends_with("/..") {
        return Err("the URL path must not contain `.` or `..` segments".into());
    }
    // The host becomes a directory too: `https://%2e%2e/x` has the host `..`.
    let path = format!("files/{host}/{}", segments.join("/"));
    match kpbuild_paths::safe_path::relative_path(&path, "the bundle") {
        Ok(clean) if clean == path => Ok(path),
        _ => Err(format!(
            "the URL's host `{host}` is not a host name usable as a directory"
        )),
    }
}

/// Whether a path from the bundle root is one of [`IMAGES_DIR`]'s image archives.
pub fn is_image_archive(path: &str) -> bool {
    path.strip_prefix(IMAGES_DIR)
        .and_then(|rest| rest.strip_prefix('/'))
        .is_some_and(|name| !name.contains('/') && name.ends_with(".tar"))
}

/// `resources/images/<name>-<tag>.tar` for an image reference.
pub(crate) fn image_archive_path(reference: &str) -> String {
    let no_digest = reference.split('@').next().unwrap_or(reference);
    let (repo, tag) = match no_digest.rsplit_once(':') {
        Some((r, t)) if !t.contains('/') => (r, t),
        _ => (no_digest, "latest"),
    };
    let name = repo.rsplit('/').next().unwrap_or(repo);
    format!("{IMAGES_DIR}/{name}-{tag}.tar")
}

/// The image a module of a platform is built into: `<bundle>/<module>:<version>-<arch>`.
pub fn module_image(bundle: &str, module: &str, version: &str, platform: &Platform) -> String {
    format!("{bundle}/{module}:{version}-{}", platform.architecture)
}

/// The file name of an exported bundle: `<bundle>-<version>-<os>-<arch>.<extension>`.
pub fn tarball_name(bundle: &str, version: &str, platform: &Platform, extension: &str) -> String {
    format!(
        "{bundle}-{version}-{}-{}.{extension}",
        platform.os, platform.architecture
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use kpbuild_oci::platform::Arch;

    #[test]
    fn url_paths() {
        assert_eq!(
            file_path_of_url("https://dl.k8s.io/release/v1.32.8/bin/linux/amd64/kubelet").unwrap(),
            "files/dl.k8s.io/release/v1.32.8/bin/linux/amd64/kubelet"
        );
        assert_eq!(
            file_path_of_url("http://127.0.0.1:8081/a/b").unwrap(),
            "files/127.0.0.1:8081/a/b"
        );
        assert!(file_path_of_url("https://x.io/a/../../etc/passwd").is_err());
        assert!(file_path_of_url("ftp://x.io/a").is_err());
        assert!(file_path_of_url("https://x.io/").is_err());
        assert!(file_path_of_url("https://x.io/a?b=1").is_err());
        // Ways out of files/ through the host or encoded dots.
        for bad in [
            "https://%2e%2e/a",
            "https://%2E%2E/debian/amd64/bookworm/Packages",
            "https://../a",
            "https://./a",
        ] {
            let e = file_path_of_url(bad).unwrap_err();
            assert!(!e.is_empty(), "{bad}");
        }
        assert_eq!(
            file_path_of_url("https://%2e%2e/a").unwrap_err(),
            "the URL's host `..` is not a host name usable as a directory"
        );
        // Encoded dots and backslashes in the path are resolved by the URL parser, inside.
        assert_eq!(
            file_path_of_url("http://x.io/a/%2e%2e/%2E%2e/b").unwrap(),
            "files/x.io/b"
        );
        assert_eq!(
            file_path_of_url("http://x.io/a\\..\\..\\b").unwrap(),
            "files/x.io/b"
        );
    }

    #[test]
    fn archive_and_output_names() {
        assert_eq!(
            image_archive_path("docker.io/library/nginx:1.27.4-alpine"),
            "resources/images/nginx-1.27.4-alpine.tar"
        );
        assert_eq!(
            image_archive_path("registry:2.8.1@sha256:abc"),
            "resources/images/registry-2.8.1.tar"
        );
        assert_eq!(
            image_archive_path("127.0.0.1:5000/registry"),
            "resources/images/registry-latest.tar"
        );
        assert!(is_image_archive("resources/images/registry-2.8.1.tar"));
        assert!(!is_image_archive("resources/images/a/b.tar"));
        assert!(!is_image_archive("resources/imagesx/b.tar"));
        assert!(!is_image_archive("install.sh"));
        assert_eq!(
            module_image("kubeplay", "files", "v0.1.0", &Platform::linux(Arch::Arm64)),
            "kubeplay/files:v0.1.0-arm64"
        );
        assert_eq!(
            tarball_name(
                "kubeplay",
                "v0.1.0",
                &Platform::linux(Arch::Amd64),
                "tar.zst"
            ),
            "kubeplay-v0.1.0-linux-amd64.tar.zst"
        );
    }
}
