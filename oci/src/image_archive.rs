//! Image archives that `docker load` and `nerdctl load` accept (the `docker save` format), made
//! from an image in a `registry:2` storage tree: `manifest.json`, the config as `<hex>.json`, and
//! each layer blob as `<hex>/layer.tar` — the upstream bytes unchanged (compressed layers load as
//! they are); or from a root filesystem, as one layer under an upstream config whose `rootfs`
//! and `history` are rewritten and whose other keys are kept as they are. Deterministic: the
//! same image gives the same archive. `manifest.json` and the rewritten parts of a config are
//! [`crate::document`]'s types. Written to a temporary name, then renamed.

use std::io::Write;
use std::path::Path;

use crate::document::{self, DockerArchiveEntry, History, RootFs};
use crate::registry_layout::{self, Digest, Layout, Manifest, Platform};

/// Errors writing an archive.
#[derive(Debug, thiserror::Error)]
pub enum ArchiveError {
    #[error("{path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("image {image}: {message}")]
    Image { image: String, message: String },
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> ArchiveError + '_ {
    move |source| ArchiveError::Io {
        path: path.display().to_string(),
        source,
    }
}

/// A docker-archive being written under `<out>.partial`: regular entries with fixed metadata,
/// then `manifest.json`, then the rename to `out`.
struct ArchiveWriter {
    partial: std::path::PathBuf,
    out: std::path::PathBuf,
    tar: tar::Builder<std::io::BufWriter<std::fs::File>>,
}

impl ArchiveWriter {
    fn create(out: &Path) -> Result<ArchiveWriter, ArchiveError> {
        let partial = out.with_extension("tar.partial");
        if let Some(dir) = out.parent() {
            std::fs::create_dir_all(dir).map_err(io(dir))?;
        }
        let file = std::fs::File::create(&partial).map_err(io(&partial))?;
        Ok(ArchiveWriter {
            tar: tar::Builder::new(std::io::BufWriter::new(file)),
            partial,
            out: out.to_path_buf(),
        })
    }

    fn append_reader(
        &mut self,
        name: &str,
        data: &mut dyn std::io::Read,
        size: u64,
    ) -> Result<(), ArchiveError> {
        let mut h = tar::Header::new_gnu();
        h.set_size(size);
        h.set_mode(0o644);
        h.set_mtime(0);
        h.set_entry_type(tar::EntryType::Regular);
        self.tar
            .append_data(&mut h, name, data)
            .map_err(io(&self.partial))
    }

    fn append(&mut self, name: &str, data: &[u8]) -> Result<(), ArchiveError> {
        self.append_reader(name, &mut &data[..], data.len() as u64)
    }

    /// Writes `manifest.json` (one image: its config, tag and layers) and renames the archive
    /// into place.
    fn finish(
        mut self,
        config_name: &str,
        repo_tag: &str,
        layer_names: &[String],
    ) -> Result<(), ArchiveError> {
        let manifest = document::to_bytes(&[DockerArchiveEntry {
            config: config_name.to_string(),
            repo_tags: vec![repo_tag.to_string()],
            layers: layer_names.to_vec(),
        }]);
        self.append("manifest.json", &manifest)?;
        self.tar
            .into_inner()
            .map_err(io(&self.partial))?
            .flush()
            .map_err(io(&self.partial))?;
        std::fs::rename(&self.partial, &self.out).map_err(io(&self.out))
    }
}

/// Writes `repo:tag` of the tree at `root`, for `platform`, as a docker-archive at `out`, tagged
/// `repo_tag` (what `docker load` names it). Returns the digest of the manifest archived.
pub fn write_docker_archive(
    root: &Path,
    repo: &str,
    tag: &str,
    platform: &Platform,
    repo_tag: &str,
    out: &Path,
) -> Result<Digest, ArchiveError> {
    let image = format!("{repo}:{tag}");
    let bad = |message: String| ArchiveError::Image {
        image: image.clone(),
        message,
    };
    let layout = Layout::new(root);
    let link = layout.tag_current_link(repo, tag);
    let top: Digest = std::fs::read_to_string(&link)
        .map_err(|e| bad(format!("{}: {e}", link.display())))?
        .trim()
        .parse()
        .map_err(|e| bad(format!("{}: {e:?}", link.display())))?;
    let read =
        |d: &Digest| std::fs::read(layout.blob_data(d)).map_err(|e| bad(format!("blob {d}: {e}")));
    let mut digest = top.clone();
    let mut bytes = read(&digest)?;
    if let Manifest::Index { manifests, .. } =
        registry_layout::parse_manifest(None, &bytes).map_err(|e| bad(e.to_string()))?
    {
        let child = manifests
            .iter()
            .find(|m| m.platform.as_ref().is_some_and(|p| p.satisfies(platform)))
            .ok_or_else(|| bad(format!("no manifest for {platform} in the index {top}")))?;
        digest = child.digest.clone();
        bytes = read(&digest)?;
    }
    let Manifest::Image { config, layers, .. } =
        registry_layout::parse_manifest(None, &bytes).map_err(|e| bad(e.to_string()))?
    else {
        return Err(bad(format!("{digest} is an index inside an index")));
    };
    let mut archive = ArchiveWriter::create(out)?;
    let config_name = format!("{}.json", config.digest.hex());
    let config_bytes = read(&config.digest)?;
    archive.append(&config_name, &config_bytes)?;
    let mut layer_names = Vec::new();
    for l in layers.iter().filter(|l| !l.is_foreign()) {
        let name = format!("{}/layer.tar", l.digest.hex());
        let path = layout.blob_data(&l.digest);
        let mut f =
            std::fs::File::open(&path).map_err(|e| bad(format!("layer {}: {e}", l.digest)))?;
        let size = f.metadata().map_err(io(&path))?.len();
        archive.append_reader(&name, &mut f, size)?;
        layer_names.push(name);
    }
    archive.finish(&config_name, repo_tag, &layer_names)?;
    Ok(digest)
}

/// Writes a root filesystem (a directory) as a one-layer image archive: the layer is a tar of
/// the tree (sorted, ownership and modes kept), the config is `config_json` with its `rootfs`
/// and `history` made to describe that one layer. `work` holds the layer while it is hashed.
pub fn write_rootfs_archive(
    rootfs: &Path,
    config_json: &[u8],
    repo_tag: &str,
    out: &Path,
    work: &Path,
) -> Result<Digest, ArchiveError> {
    use sha2::Digest as _;
    let bad = |message: String| ArchiveError::Image {
        image: repo_tag.to_string(),
        message,
    };
    // The layer.
    let layer_path = work.join("layer.tar");
    {
        let file = std::fs::File::create(&layer_path).map_err(io(&layer_path))?;
        let mut b = tar::Builder::new(std::io::BufWriter::new(file));
        b.follow_symlinks(false);
        let mut entries = Vec::new();
        for e in walkdir::WalkDir::new(rootfs).min_depth(1) {
            let e = e.map_err(|e| {
                let path = e.path().unwrap_or(rootfs).to_path_buf();
                io(&path)(e.into())
            })?;
            let ft = e.file_type();
            // Device nodes, sockets and FIFOs (debootstrap's /dev): the runtime makes its own
            // /dev; an image layer does not carry them.
            if ft.is_dir() || ft.is_file() || ft.is_symlink() {
                entries.push(e.into_path());
            }
        }
        entries.sort_by(|a, b| a.components().cmp(b.components()));
        for p in &entries {
            let rel = p.strip_prefix(rootfs).expect("under the rootfs");
            b.append_path_with_name(p, rel).map_err(io(p))?;
        }
        b.into_inner()
            .map_err(io(&layer_path))?
            .flush()
            .map_err(io(&layer_path))?;
    }
    let mut hasher = sha2::Sha256::new();
    let mut f = std::fs::File::open(&layer_path).map_err(io(&layer_path))?;
    std::io::copy(&mut f, &mut hasher).map_err(io(&layer_path))?;
    let layer_digest = Digest::from_hasher(hasher);
    // The config, describing that one layer: the upstream config kept as it is (unknown keys
    // and their order too), its `rootfs` and `history` replaced where they stand, or added.
    let mut config: serde_json::Value = serde_json::from_slice(config_json)
        .map_err(|e| bad(format!("the image config is not JSON: {e}")))?;
    let fields = config
        .as_object_mut()
        .ok_or_else(|| bad("the image config is not a JSON object".to_string()))?;
    let rootfs = RootFs::layers(vec![layer_digest.clone()]);
    let history = [History {
        created_by: "kpbuild: the Dockerfile build's root filesystem, one layer".to_string(),
    }];
    fields.insert("rootfs".to_string(), document::to_value(&rootfs));
    fields.insert("history".to_string(), document::to_value(&history));
    let config_bytes = document::to_bytes(&config);
    let config_name = format!("{}.json", Digest::of_bytes(&config_bytes).hex());
    let layer_name = format!("{}/layer.tar", layer_digest.hex());
    let mut archive = ArchiveWriter::create(out)?;
    let size = std::fs::metadata(&layer_path)
        .map_err(io(&layer_path))?
        .len();
    let mut layer = std::fs::File::open(&layer_path).map_err(io(&layer_path))?;
    archive.append_reader(&layer_name, &mut layer, size)?;
    drop(layer);
    std::fs::remove_file(&layer_path).map_err(io(&layer_path))?;
    archive.append(&config_name, &config_bytes)?;
    archive.finish(&config_name, repo_tag, &[layer_name])?;
    Ok(layer_digest)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The entries of a tar file: (name, bytes), in order.
    fn entries(tar_path: &Path) -> Vec<(String, Vec<u8>)> {
        let mut a = tar::Archive::new(std::fs::File::open(tar_path).unwrap());
        a.entries()
            .unwrap()
            .map(|e| {
                let mut e = e.unwrap();
                let mut data = Vec::new();
                std::io::Read::read_to_end(&mut e, &mut data).unwrap();
                (e.path().unwrap().display().to_string(), data)
            })
            .collect()
    }

    fn text(b: &[u8]) -> &str {
        std::str::from_utf8(b).unwrap()
    }

    fn put(p: &Path, data: &[u8]) {
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, data).unwrap();
    }

    #[test]
    fn a_docker_archive_keeps_the_upstream_bytes_and_writes_its_manifest_in_fixed_order() {
        let dir = tempfile::tempdir().unwrap();
        let layout = Layout::new(dir.path().join("registry"));
        let config = br#"{"os":"linux","architecture":"amd64","zzz":1}"#;
        let (layer_a, layer_b) = (b"layer a".as_slice(), b"layer b".as_slice());
        let (cd, la, lb) = (
            Digest::of_bytes(config),
            Digest::of_bytes(layer_a),
            Digest::of_bytes(layer_b),
        );
        let manifest = format!(
            r#"{{"schemaVersion":2,"mediaType":"application/vnd.docker.distribution.manifest.v2+json","config":{{"mediaType":"application/vnd.docker.container.image.v1+json","size":{},"digest":"{cd}"}},"layers":[{{"mediaType":"application/vnd.docker.image.rootfs.diff.tar.gzip","size":7,"digest":"{la}"}},{{"mediaType":"application/vnd.docker.image.rootfs.diff.tar.gzip","size":7,"digest":"{lb}"}}]}}"#,
            config.len()
        );
        let md = Digest::of_bytes(manifest.as_bytes());
        for (d, data) in [
            (&cd, config.as_slice()),
            (&la, layer_a),
            (&lb, layer_b),
            (&md, manifest.as_bytes()),
        ] {
            put(&layout.blob_data(d), data);
        }
        put(
            &layout.tag_current_link("lib/app", "v1"),
            md.to_string().as_bytes(),
        );
        let out = dir.path().join("app.tar");
        let got = write_docker_archive(
            layout.root(),
            "lib/app",
            "v1",
            &"linux/amd64".parse().unwrap(),
            "registry.example/lib/app:v1",
            &out,
        )
        .unwrap();
        assert_eq!(got, md);
        let e = entries(&out);
        let names: Vec<&str> = e.iter().map(|(n, _)| n.as_str()).collect();
        let (cn, an, bn) = (
            format!("{}.json", cd.hex()),
            format!("{}/layer.tar", la.hex()),
            format!("{}/layer.tar", lb.hex()),
        );
        assert_eq!(names, [cn.as_str(), &an, &bn, "manifest.json"]);
        assert_eq!(e[0].1, config, "the config's upstream bytes");
        assert_eq!(e[1].1, layer_a);
        assert_eq!(
            text(&e[3].1),
            format!(
                r#"[{{"Config":"{cn}","RepoTags":["registry.example/lib/app:v1"],"Layers":["{an}","{bn}"]}}]"#
            )
        );
    }

    /// Writes a one-file root filesystem's archive with `config`; returns the layer digest and
    /// the archive's config and manifest.json texts.
    fn rootfs_archive(config: &str) -> (Digest, String, String) {
        let dir = tempfile::tempdir().unwrap();
        let rootfs = dir.path().join("rootfs");
        put(&rootfs.join("etc/hostname"), b"box\n");
        let work = dir.path().join("work");
        std::fs::create_dir_all(&work).unwrap();
        let out = dir.path().join("img.tar");
        let layer =
            write_rootfs_archive(&rootfs, config.as_bytes(), "local/img:v1", &out, &work).unwrap();
        let e = entries(&out);
        assert_eq!(e.len(), 3);
        assert_eq!(e[0].0, format!("{}/layer.tar", layer.hex()));
        let config_name = format!("{}.json", sha256_hex(&e[1].1));
        assert_eq!(e[1].0, config_name);
        assert_eq!(e[2].0, "manifest.json");
        (layer, text(&e[1].1).to_string(), text(&e[2].1).to_string())
    }

    fn sha256_hex(b: &[u8]) -> String {
        Digest::of_bytes(b).hex().to_string()
    }

    #[test]
    fn a_rootfs_archive_rewrites_only_rootfs_and_history_of_the_upstream_config() {
        // Upstream keys, known or not, keep their order and values; rootfs and history are
        // replaced where they stand.
        let (layer, config, manifest) = rootfs_archive(
            r#"{"zz":{"b":1,"a":2},"rootfs":{"type":"layers","diff_ids":["sha256:old"]},"architecture":"arm64","history":[{"created_by":"old"}],"os":"linux","config":{"Env":["A=1"]}}"#,
        );
        assert_eq!(
            config,
            format!(
                r#"{{"zz":{{"b":1,"a":2}},"rootfs":{{"type":"layers","diff_ids":["{layer}"]}},"architecture":"arm64","history":[{{"created_by":"kpbuild: the Dockerfile build's root filesystem, one layer"}}],"os":"linux","config":{{"Env":["A=1"]}}}}"#
            )
        );
        let hex = layer.hex();
        assert_eq!(
            manifest,
            format!(
                r#"[{{"Config":"{}.json","RepoTags":["local/img:v1"],"Layers":["{hex}/layer.tar"]}}]"#,
                sha256_hex(config.as_bytes())
            )
        );
        // Absent, they are added at the end.
        let (layer, config, _) =
            rootfs_archive(r#"{"architecture":"amd64","os":"linux","config":{}}"#);
        let expected = format!(
            r#"{{"architecture":"amd64","os":"linux","config":{{}},"rootfs":{{"type":"layers","diff_ids":["{layer}"]}},"history":[{{"created_by":"kpbuild: the Dockerfile build's root filesystem, one layer"}}]}}"#
        );
        assert_eq!(config, expected);
        // An empty rootfs where it would be added comes to the same bytes.
        let (_, config, _) = rootfs_archive(
            r#"{"architecture":"amd64","os":"linux","config":{},"rootfs":{"type":"layers","diff_ids":[]}}"#,
        );
        assert_eq!(config, expected);
    }

    #[test]
    fn a_rootfs_archive_needs_a_config_object() {
        let dir = tempfile::tempdir().unwrap();
        let rootfs = dir.path().join("rootfs");
        std::fs::create_dir_all(&rootfs).unwrap();
        for (config, why) in [
            ("[]", "the image config is not a JSON object"),
            ("null", "the image config is not a JSON object"),
            ("{", "the image config is not JSON"),
        ] {
            let out = dir.path().join("img.tar");
            let e = write_rootfs_archive(&rootfs, config.as_bytes(), "x:1", &out, dir.path())
                .unwrap_err()
                .to_string();
            assert!(e.starts_with(&format!("image x:1: {why}")), "{config}: {e}");
            assert!(!out.exists());
        }
    }
}
