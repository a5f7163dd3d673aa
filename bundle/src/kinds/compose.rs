//! The `compose` kind: the services that serve the bundle on the install node — nginx
//! (`resources/nginx` on port 8080) and the registry (`resources/registry` read-only on 5000) as
//! loadable image archives under `resources/images/`, `compose.yaml` running them, their
//! configurations, and the installer files from the build context. Lowered in
//! `frontend/src/kinds/compose.rs` (one save job per image).

use std::path::Path;

use serde::{Deserialize, Serialize};

use super::{ModuleSpec, ModuleWork, NestedBuild, PlanCx, Validator, Work, loopback_hosts};
use crate::layout::{
    self, NGINX_CONF, NGINX_PORT, NGINX_ROOT, REGISTRY_CONF, REGISTRY_PORT, REGISTRY_ROOT,
};
use crate::lock::{Lock, LockError, artifacts};
use crate::plan::PlanError;
use crate::spec::SpecError;
use kpbuild_oci::image_ref::{self, FetchLocation, ImageRef};
use kpbuild_oci::platform::Platform;

/// The `compose` block of a spec.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct ComposeModule {
    /// The nginx image to ship (loadable archive under `resources/images/`).
    pub nginx_image: String,
    /// The registry image to ship.
    pub registry_image: String,
    /// Installer files (`install.sh`, `library/`, config samples) in the build context.
    pub installer: Option<String>,
}

/// The services of one platform.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct ComposeWork {
    pub nginx_image: ImageRef,
    pub registry_image: ImageRef,
    /// The loadable archives of those images.
    pub archives: Vec<ArchiveWork>,
    pub installer: Option<String>,
}

/// An image shipped as an archive `docker load` accepts.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct ArchiveWork {
    /// The normalized reference (`docker.io/library/nginx:1.27.4-alpine`): also the name
    /// `docker load` gives it (without a digest).
    pub source: ImageRef,
    /// Where it is fetched from.
    pub fetch: FetchLocation,
    /// The archive's path from the bundle root.
    pub path: String,
}

impl ModuleSpec for ComposeModule {
    fn validate(&self, _name: &str, v: &Validator<'_>) -> Result<(), SpecError> {
        if let Some(i) = &self.installer {
            v.context_path("installer", i)?;
        }
        Ok(())
    }

    fn plan_inputs(&self) -> Vec<String> {
        vec![]
    }

    fn build_inputs(&self) -> Vec<String> {
        self.installer.iter().cloned().collect()
    }

    fn builds_for(&self, _platform: &Platform) -> bool {
        true
    }

    fn plan(&self, cx: &PlanCx<'_>) -> Result<Work, PlanError> {
        let mut archives = Vec::new();
        for image in [&self.nginx_image, &self.registry_image] {
            let r = cx.image(image, format!("module `{}`", cx.module))?;
            archives.push(ArchiveWork {
                fetch: image_ref::fetch_location(&r, cx.registry_mirrors),
                path: layout::image_archive_path(image),
                source: r,
            });
        }
        Ok(Work::Compose(ComposeWork {
            nginx_image: archives[0].source.clone(),
            registry_image: archives[1].source.clone(),
            archives,
            installer: self.installer.clone(),
        }))
    }
}

impl ModuleWork for ComposeWork {
    fn images_to_resolve(&self) -> Vec<(&ImageRef, &FetchLocation)> {
        self.archives
            .iter()
            .map(|a| (&a.source, &a.fetch))
            .collect()
    }

    fn loopback_registries(&self) -> Vec<String> {
        loopback_hosts(self.archives.iter().map(|a| a.fetch.registry.as_str()))
    }

    fn nested_build(&self) -> Option<NestedBuild<'_>> {
        None
    }

    /// Every file it writes, as an artifact.
    fn lock(&self, tree: &Path, lock: &mut Lock) -> Result<(), LockError> {
        for a in artifacts(tree)? {
            lock.push(a)?;
        }
        Ok(())
    }
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
         \x20     - ./{NGINX_ROOT}:/usr/share/nginx/html:ro\n\
         \x20     - ./{NGINX_CONF}:/etc/nginx/nginx.conf:ro\n\
         \x20 registry:\n\
         \x20   image: {registry_image}\n\
         \x20   container_name: kubeplay-registry\n\
         \x20   restart: always\n\
         \x20   network_mode: host\n\
         \x20   volumes:\n\
         \x20     - ./{REGISTRY_ROOT}:/var/lib/registry:ro\n\
         \x20     - ./{REGISTRY_CONF}:/etc/docker/registry/config.yml:ro\n",
        nginx_archive = layout::image_archive_path(nginx_image),
        registry_archive = layout::image_archive_path(registry_image),
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
        "# kubeplay offline registry (kpbuild): serves {REGISTRY_ROOT} read-only\n\
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
    fn compose_mounts_the_bundle_read_only() {
        let y = compose_yaml(
            "docker.io/library/nginx:1.27.4-alpine",
            "docker.io/library/registry:2.8.1",
        );
        assert!(y.contains("./resources/registry:/var/lib/registry:ro"));
        assert!(y.contains("./resources/nginx:/usr/share/nginx/html:ro"));
        assert!(y.contains("./config/registry.yml:/etc/docker/registry/config.yml:ro"));
        assert!(y.contains("docker load -i resources/images/nginx-1.27.4-alpine.tar"));
        assert!(y.contains("image: docker.io/library/registry:2.8.1"));
        assert!(registry_yml().contains("readonly:\n      enabled: true"));
        assert!(nginx_conf().contains("listen 8080;"));
    }
}
