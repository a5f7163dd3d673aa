//! The compose module's files: `compose.yaml` running nginx (serving `resources/nginx` on
//! 8080) and the registry (serving `resources/registry` read-only on 5000) from the image
//! archives the bundle carries, and their configurations.

/// Port of the bundle's nginx.
pub const NGINX_PORT: u16 = 8080;
/// Port of the bundle's registry.
pub const REGISTRY_PORT: u16 = 5000;

/// `resources/images/<name>-<tag>.tar` for an image reference.
pub fn archive_path(reference: &str) -> String {
    let no_digest = reference.split('@').next().unwrap_or(reference);
    let (repo, tag) = match no_digest.rsplit_once(':') {
        Some((r, t)) if !t.contains('/') => (r, t),
        _ => (no_digest, "latest"),
    };
    let name = repo.rsplit('/').next().unwrap_or(repo);
    format!("resources/images/{name}-{tag}.tar")
}

/// `compose.yaml` at the bundle root.
pub fn compose_yaml(nginx_image: &str, registry_image: &str) -> String {
    format!(
        "# kubeplay offline services (kpbuild). Load the images first:\n\
         #   docker load -i {nginx_archive}\n\
         #   docker load -i {registry_archive}\n\
         services:\n\
         \x20 nginx:\n\
         \x20   image: {nginx_image}\n\
         \x20   container_name: kubeplay-nginx\n\
         \x20   restart: always\n\
         \x20   network_mode: host\n\
         \x20   volumes:\n\
         \x20     - ./resources/nginx:/usr/share/nginx/html:ro\n\
         \x20     - ./config/nginx.conf:/etc/nginx/nginx.conf:ro\n\
         \x20 registry:\n\
         \x20   image: {registry_image}\n\
         \x20   container_name: kubeplay-registry\n\
         \x20   restart: always\n\
         \x20   network_mode: host\n\
         \x20   volumes:\n\
         \x20     - ./resources/registry:/var/lib/registry:ro\n\
         \x20     - ./config/registry.yml:/etc/docker/registry/config.yml:ro\n",
        nginx_archive = archive_path(nginx_image),
        registry_archive = archive_path(registry_image),
    )
}

/// `config/nginx.conf`: static files of `resources/nginx` on port 8080, listings on.
pub fn nginx_conf() -> String {
    format!(
        "# kubeplay offline file server (kpbuild)\n\
         worker_processes auto;\n\
         pid /tmp/nginx.pid;\n\
         events {{ worker_connections 1024; }}\n\
         http {{\n\
         \x20 include /etc/nginx/mime.types;\n\
         \x20 default_type application/octet-stream;\n\
         \x20 sendfile on;\n\
         \x20 access_log /dev/stdout;\n\
         \x20 error_log /dev/stderr;\n\
         \x20 server {{\n\
         \x20   listen {NGINX_PORT};\n\
         \x20   root /usr/share/nginx/html;\n\
         \x20   autoindex on;\n\
         \x20 }}\n\
         }}\n"
    )
}

/// `config/registry.yml`: distribution serving the bundle's tree, read-only.
pub fn registry_yml() -> String {
    format!(
        "# kubeplay offline registry (kpbuild): serves resources/registry read-only\n\
         version: 0.1\n\
         log:\n\
         \x20 level: info\n\
         storage:\n\
         \x20 filesystem:\n\
         \x20   rootdirectory: /var/lib/registry\n\
         \x20 delete:\n\
         \x20   enabled: false\n\
         \x20 maintenance:\n\
         \x20   uploadpurging:\n\
         \x20     enabled: false\n\
         \x20   readonly:\n\
         \x20     enabled: true\n\
         http:\n\
         \x20 addr: :{REGISTRY_PORT}\n"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn archive_names() {
        assert_eq!(
            archive_path("docker.io/library/nginx:1.27.4-alpine"),
            "resources/images/nginx-1.27.4-alpine.tar"
        );
        assert_eq!(
            archive_path("127.0.0.1:5000/registry:2.8.1@sha256:abc"),
            "resources/images/registry-2.8.1.tar"
        );
        assert_eq!(
            archive_path("127.0.0.1:5000/x/registry"),
            "resources/images/registry-latest.tar"
        );
    }

    #[test]
    fn compose_mounts_the_bundle_read_only() {
        let y = compose_yaml(
            "docker.io/library/nginx:1.27.4-alpine",
            "docker.io/library/registry:2.8.1",
        );
        assert!(y.contains("./resources/registry:/var/lib/registry:ro"));
        assert!(y.contains("image: docker.io/library/registry:2.8.1"));
        assert!(registry_yml().contains("readonly:\n      enabled: true"));
        assert!(nginx_conf().contains("listen 8080;"));
    }
}
