//! Fills a registry with deterministic synthetic images for kpbuild's tests and benchmark.
//!
//! ```text
//! cargo run --release -p kpbuild-sync --example fixture-images -- \
//!     --registry 127.0.0.1:5710 --set main --out target/fixture/main
//! ```
//!
//! Writes `<out>.list` (one reference a line, for `kpbuild sync-images --list`) and
//! `<out>.tsv` (reference, manifest kind, digest, platforms, shared-layer notes).
//!
//! Sets:
//! - `main`: 24 references, ~590 MiB of unique blobs for linux/amd64 and ~950 MiB for all
//!   platforms: Docker schema 2 and OCI single-platform manifests, OCI indexes and Docker
//!   manifest lists (amd64 + arm64; two with ppc64le as a third platform), nested names
//!   (`a/b/c`), names under `quay.io/` (for `--mirror` tests), uncompressed OCI layers, and
//!   layers shared between images (`library/nginx` and `a/b/c` share `nginx-bin`).
//! - `bad`: `bad/corrupt:v1`, whose layer `corrupt-payload` the caller damages on disk, and
//!   `bad/fine:v1`.
//! - `refs --refs FILE`: one small amd64 + arm64 image for each `host/path:tag` line of FILE
//!   (e.g. `kpbuild lists images` output), pushed as `<registry>/host/path:tag` — a registry
//!   mirror of those names for the frontend's tests. Manifest lists and OCI indexes alternate;
//!   every image shares one base layer per architecture.
//!
//! Every byte is a function of the layer's name: rerunning gives the same digests. Pushing uses
//! the registry's own upload API, so the registry lays out its storage itself.

use std::collections::HashMap;
use std::io::Write;

use kpbuild_oci::media_type::{
    DOCKER_CONFIG, DOCKER_LAYER, DOCKER_MANIFEST, DOCKER_MANIFEST_LIST, OCI_CONFIG, OCI_INDEX,
    OCI_LAYER_TAR, OCI_LAYER_TAR_GZIP, OCI_MANIFEST,
};
use serde_json::json;
use sha2::{Digest as _, Sha256};

const MIB: f64 = 1024.0 * 1024.0;

#[derive(Clone, Copy, PartialEq)]
enum Format {
    Docker,
    Oci,
    /// OCI with uncompressed tar layers.
    OciTar,
}

struct Image {
    repo: &'static str,
    tags: &'static [&'static str],
    format: Format,
    /// Empty: a single-platform manifest for `single_arch`.
    platforms: &'static [&'static str],
    single_arch: &'static str,
    /// (layer id, MiB); `{arch}` in an id is replaced by the platform's architecture.
    layers: &'static [(&'static str, f64)],
}

const fn img(
    repo: &'static str,
    tags: &'static [&'static str],
    format: Format,
    platforms: &'static [&'static str],
    layers: &'static [(&'static str, f64)],
) -> Image {
    Image {
        repo,
        tags,
        format,
        platforms,
        single_arch: "amd64",
        layers,
    }
}

const AMD_ARM: &[&str] = &["linux/amd64", "linux/arm64/v8"];
const THREE: &[&str] = &["linux/amd64", "linux/arm64/v8", "linux/ppc64le"];
const SINGLE: &[&str] = &[];

const MAIN: &[Image] = &[
    img(
        "library/nginx",
        &["1.25", "latest"],
        Format::Docker,
        SINGLE,
        &[
            ("debian-{arch}", 25.0),
            ("nginx-bin", 18.0),
            ("nginx-conf", 0.05),
        ],
    ),
    img(
        "library/redis",
        &["7.2"],
        Format::Oci,
        SINGLE,
        &[("debian-{arch}", 25.0), ("redis", 22.0)],
    ),
    img(
        "library/busybox",
        &["1.36"],
        Format::Docker,
        SINGLE,
        &[("busybox", 2.0)],
    ),
    img(
        "library/alpine",
        &["3.19", "3"],
        Format::Oci,
        SINGLE,
        &[("alpine", 3.5)],
    ),
    img(
        "a/b/c",
        &["v1"],
        Format::Docker,
        SINGLE,
        &[("debian-{arch}", 25.0), ("nginx-bin", 18.0), ("abc", 5.0)],
    ),
    img(
        "a/b/d",
        &["v2"],
        Format::OciTar,
        SINGLE,
        &[("busybox-tar", 2.0), ("abd", 12.0)],
    ),
    img(
        "calico/node",
        &["v3.27.3"],
        Format::Oci,
        AMD_ARM,
        &[("base-{arch}", 40.0), ("calico-node-{arch}", 45.0)],
    ),
    img(
        "calico/cni",
        &["v3.27.3"],
        Format::Docker,
        THREE,
        &[("base-{arch}", 40.0), ("calico-cni-{arch}", 30.0)],
    ),
    img(
        "calico/kube-controllers",
        &["v3.27.3"],
        Format::Oci,
        AMD_ARM,
        &[("distroless-{arch}", 8.0), ("calico-kc-{arch}", 25.0)],
    ),
    img(
        "coredns/coredns",
        &["v1.11.1"],
        Format::Docker,
        AMD_ARM,
        &[("distroless-{arch}", 8.0), ("coredns-{arch}", 16.0)],
    ),
    img(
        "kube-apiserver",
        &["v1.32.8"],
        Format::Docker,
        AMD_ARM,
        &[("distroless-{arch}", 8.0), ("apiserver-{arch}", 30.0)],
    ),
    img(
        "kube-controller-manager",
        &["v1.32.8"],
        Format::Docker,
        AMD_ARM,
        &[("distroless-{arch}", 8.0), ("kcm-{arch}", 28.0)],
    ),
    img(
        "kube-scheduler",
        &["v1.32.8"],
        Format::Docker,
        AMD_ARM,
        &[("distroless-{arch}", 8.0), ("scheduler-{arch}", 18.0)],
    ),
    img(
        "kube-proxy",
        &["v1.32.8"],
        Format::Oci,
        AMD_ARM,
        &[("debian-{arch}", 25.0), ("kube-proxy-{arch}", 20.0)],
    ),
    img(
        "pause",
        &["3.10"],
        Format::Docker,
        THREE,
        &[("pause-{arch}", 0.3)],
    ),
    img(
        "etcd",
        &["3.5.16-0"],
        Format::Oci,
        AMD_ARM,
        &[("distroless-{arch}", 8.0), ("etcd-{arch}", 25.0)],
    ),
    img(
        "cpa/cluster-proportional-autoscaler",
        &["v1.8.8"],
        Format::Docker,
        SINGLE,
        &[("distroless-{arch}", 8.0), ("cpa", 12.0)],
    ),
    img(
        "dns/k8s-dns-node-cache",
        &["1.22.28"],
        Format::Oci,
        AMD_ARM,
        &[("debian-{arch}", 25.0), ("nodecache-{arch}", 15.0)],
    ),
    img(
        "metrics-server/metrics-server",
        &["v0.7.2"],
        Format::Docker,
        SINGLE,
        &[("distroless-{arch}", 8.0), ("metrics-server", 18.0)],
    ),
    img(
        "flannel/flannel",
        &["v0.25.0-amd64"],
        Format::Docker,
        SINGLE,
        &[("base-{arch}", 40.0), ("flannel-{arch}", 15.0)],
    ),
    Image {
        single_arch: "arm64",
        ..img(
            "flannel/flannel",
            &["v0.25.0-arm64"],
            Format::Docker,
            SINGLE,
            &[("base-{arch}", 40.0), ("flannel-{arch}", 15.0)],
        )
    },
    img(
        "quay.io/calico/typha",
        &["v3.27.3"],
        Format::Oci,
        AMD_ARM,
        &[("base-{arch}", 40.0), ("typha-{arch}", 20.0)],
    ),
    img(
        "quay.io/calico/pod2daemon-flexvol",
        &["v3.27.3"],
        Format::Docker,
        AMD_ARM,
        &[("flexvol-{arch}", 6.0)],
    ),
    img(
        "kubespray/kubespray",
        &["v2.26.0"],
        Format::Oci,
        SINGLE,
        &[
            ("debian-{arch}", 25.0),
            ("ansible", 60.0),
            ("kubespray", 15.0),
        ],
    ),
];

const BAD: &[Image] = &[
    img(
        "bad/corrupt",
        &["v1"],
        Format::Docker,
        SINGLE,
        &[("corrupt-payload", 1.0)],
    ),
    img(
        "bad/fine",
        &["v1"],
        Format::Docker,
        SINGLE,
        &[("fine-payload", 0.5)],
    ),
];

/// splitmix64, seeded from the layer id: fast and the same everywhere.
struct Rng(u64);
impl Rng {
    fn new(seed: &str) -> Rng {
        let h = Sha256::digest(seed.as_bytes());
        Rng(u64::from_le_bytes(h[..8].try_into().unwrap()))
    }
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    fn fill(&mut self, buf: &mut [u8]) {
        let mut chunks = buf.chunks_exact_mut(8);
        for c in &mut chunks {
            c.copy_from_slice(&self.next().to_le_bytes());
        }
        let rest = chunks.into_remainder();
        let last = self.next().to_le_bytes();
        rest.copy_from_slice(&last[..rest.len()]);
    }
}

fn digest(b: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(b)))
}

/// A tar with one regular file `data/<id>.bin` of `size` deterministic bytes.
fn tar_layer(id: &str, size: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(size + 2048);
    let mut h = [0u8; 512];
    let name = format!("data/{id}.bin");
    h[..name.len()].copy_from_slice(name.as_bytes());
    let field = |h: &mut [u8; 512], at: usize, _len: usize, v: &str| {
        h[at..at + v.len()].copy_from_slice(v.as_bytes());
    };
    field(&mut h, 100, 8, "0000644\0");
    field(&mut h, 108, 8, "0000000\0");
    field(&mut h, 116, 8, "0000000\0");
    field(&mut h, 124, 12, &format!("{size:011o}\0"));
    field(&mut h, 136, 12, &format!("{:011o}\0", 1_704_067_200u64));
    h[156] = b'0';
    field(&mut h, 257, 6, "ustar\0");
    field(&mut h, 263, 2, "00");
    h[148..156].copy_from_slice(b"        ");
    let sum: u32 = h.iter().map(|&b| b as u32).sum();
    field(&mut h, 148, 8, &format!("{sum:06o}\0 "));
    out.extend_from_slice(&h);
    let start = out.len();
    out.resize(start + size, 0);
    Rng::new(id).fill(&mut out[start..]);
    let pad = (512 - size % 512) % 512;
    out.resize(out.len() + pad + 1024, 0);
    out
}

/// A layer's bytes; gzip layers are the same bytes for Docker and OCI images, only the media
/// type in the manifest differs.
struct Layer {
    blob: Vec<u8>,
    digest: String,
    diff_id: String,
}

fn make_layer(id: &str, mib: f64, format: Format) -> Layer {
    let tar = tar_layer(id, (mib * MIB) as usize);
    let diff_id = digest(&tar);
    if format == Format::OciTar {
        return Layer {
            digest: diff_id.clone(),
            diff_id,
            blob: tar,
        };
    }
    // gzip without compression (random data would not shrink), fixed header: deterministic.
    let mut gz = flate2::GzBuilder::new().mtime(0).write(
        Vec::with_capacity(tar.len() + 4096),
        flate2::Compression::none(),
    );
    gz.write_all(&tar).unwrap();
    let blob = gz.finish().unwrap();
    Layer {
        digest: digest(&blob),
        diff_id,
        blob,
    }
}

struct Pusher {
    http: reqwest::Client,
    base: String,
    /// digest → a repository that has it (for cross-repository mounts)
    have: HashMap<String, String>,
    uploaded_bytes: u64,
}

impl Pusher {
    async fn check(resp: reqwest::Response, what: &str) -> reqwest::Response {
        if !resp.status().is_success() {
            let s = resp.status();
            let body = resp.text().await.unwrap_or_default();
            panic!("{what}: HTTP {s}: {body}");
        }
        resp
    }

    async fn blob(&mut self, repo: &str, d: &str, bytes: &[u8]) {
        let head = self
            .http
            .head(format!("{}/v2/{repo}/blobs/{d}", self.base))
            .send()
            .await
            .unwrap();
        if head.status().is_success() {
            self.have.insert(d.to_string(), repo.to_string());
            return;
        }
        let mut url = format!("{}/v2/{repo}/blobs/uploads/", self.base);
        if let Some(from) = self.have.get(d) {
            url.push_str(&format!("?mount={d}&from={from}"));
        }
        let resp = Self::check(self.http.post(&url).send().await.unwrap(), &url).await;
        if resp.status() == reqwest::StatusCode::CREATED {
            self.have.insert(d.to_string(), repo.to_string());
            return;
        }
        let loc = resp
            .headers()
            .get("location")
            .expect("upload location")
            .to_str()
            .unwrap()
            .to_string();
        let loc = if loc.starts_with('/') {
            format!("{}{loc}", self.base)
        } else {
            loc
        };
        let sep = if loc.contains('?') { '&' } else { '?' };
        let put = format!("{loc}{sep}digest={d}");
        Self::check(
            self.http
                .put(&put)
                .header("content-type", "application/octet-stream")
                .body(bytes.to_vec())
                .send()
                .await
                .unwrap(),
            &format!("upload {d} to {repo}"),
        )
        .await;
        self.uploaded_bytes += bytes.len() as u64;
        self.have.insert(d.to_string(), repo.to_string());
    }

    async fn manifest(&mut self, repo: &str, reference: &str, media_type: &str, bytes: &[u8]) {
        let url = format!("{}/v2/{repo}/manifests/{reference}", self.base);
        Self::check(
            self.http
                .put(&url)
                .header("content-type", media_type)
                .body(bytes.to_vec())
                .send()
                .await
                .unwrap(),
            &url,
        )
        .await;
    }
}

fn platform_json(p: &str) -> serde_json::Value {
    let parts: Vec<&str> = p.split('/').collect();
    let mut v = json!({"architecture": parts[1], "os": parts[0]});
    if let Some(var) = parts.get(2) {
        v["variant"] = json!(var);
    }
    v
}

/// Builds and pushes one image manifest for `platform`; returns its digest, bytes, media type
/// and layer ids.
async fn push_image_manifest(
    p: &mut Pusher,
    layers: &mut HashMap<String, Layer>,
    image: &Image,
    platform: &str,
) -> (String, Vec<u8>, &'static str, Vec<String>) {
    let parts: Vec<&str> = platform.split('/').collect();
    let arch = parts[1];
    let mut descs = Vec::new();
    let mut diff_ids = Vec::new();
    let mut ids = Vec::new();
    for (id, mib) in image.layers {
        let id = id.replace("{arch}", arch);
        let key = format!(
            "{id}/{}",
            if image.format == Format::OciTar {
                "tar"
            } else {
                "gz"
            }
        );
        if !layers.contains_key(&key) {
            layers.insert(key.clone(), make_layer(&id, *mib, image.format));
        }
        let l = &layers[&key];
        p.blob(image.repo, &l.digest, &l.blob).await;
        let media_type = match image.format {
            Format::Docker => DOCKER_LAYER,
            Format::Oci => OCI_LAYER_TAR_GZIP,
            Format::OciTar => OCI_LAYER_TAR,
        };
        descs.push(json!({"mediaType": media_type, "size": l.blob.len(), "digest": l.digest}));
        diff_ids.push(l.diff_id.clone());
        ids.push(id);
    }
    let mut config = json!({
        "architecture": arch,
        "os": parts[0],
        "created": "2024-01-01T00:00:00Z",
        "config": {"Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"],
                   "Labels": {"org.kpbuild.fixture": image.repo}},
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
    });
    if let Some(v) = parts.get(2) {
        config["variant"] = json!(v);
    }
    let config = serde_json::to_vec(&config).unwrap();
    let config_digest = digest(&config);
    p.blob(image.repo, &config_digest, &config).await;
    let (mt, cmt) = match image.format {
        Format::Docker => (DOCKER_MANIFEST, DOCKER_CONFIG),
        _ => (OCI_MANIFEST, OCI_CONFIG),
    };
    let manifest = serde_json::to_vec_pretty(&json!({
        "schemaVersion": 2,
        "mediaType": mt,
        "config": {"mediaType": cmt, "size": config.len(), "digest": config_digest},
        "layers": descs,
    }))
    .unwrap();
    let d = digest(&manifest);
    p.manifest(image.repo, &d, mt, &manifest).await;
    (d, manifest, mt, ids)
}

/// Images for the `refs` set: the names of FILE, amd64 + arm64, small, deterministic.
fn refs_images(file: &str) -> Vec<Image> {
    fn leak(s: String) -> &'static str {
        Box::leak(s.into_boxed_str())
    }
    let text = std::fs::read_to_string(file).unwrap_or_else(|e| panic!("{file}: {e}"));
    let mut out = Vec::new();
    for (i, line) in text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .enumerate()
    {
        let (repo, tag) = line
            .rsplit_once(':')
            .filter(|(r, t)| !t.contains('/') && !r.is_empty())
            .unwrap_or_else(|| panic!("{file}: `{line}` is not host/path:tag"));
        let layers: &'static [(&'static str, f64)] = Box::leak(
            vec![
                ("refs-base-{arch}", 1.5),
                (leak(format!("{repo}:{tag}-{{arch}}")), 0.25),
            ]
            .into_boxed_slice(),
        );
        out.push(Image {
            repo: leak(repo.to_string()),
            tags: Box::leak(vec![leak(tag.to_string())].into_boxed_slice()),
            format: if i % 2 == 0 {
                Format::Docker
            } else {
                Format::Oci
            },
            platforms: AMD_ARM,
            single_arch: "amd64",
            layers,
        });
    }
    out
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let args: Vec<String> = std::env::args().collect();
    let arg = |name: &str| {
        args.iter()
            .position(|a| a == name)
            .and_then(|i| args.get(i + 1))
            .cloned()
            .unwrap_or_else(|| panic!("usage: fixture-images --registry HOST:PORT --set main|bad --out PREFIX (missing {name})"))
    };
    let registry = arg("--registry");
    let set = arg("--set");
    let out = arg("--out");
    let images: &[Image] = match set.as_str() {
        "main" => MAIN,
        "bad" => BAD,
        "refs" => Box::leak(refs_images(&arg("--refs")).into_boxed_slice()),
        other => panic!("unknown set {other:?} (main, bad, refs)"),
    };
    let mut p = Pusher {
        http: reqwest::Client::new(),
        base: format!("http://{registry}"),
        have: HashMap::new(),
        uploaded_bytes: 0,
    };
    let mut layers: HashMap<String, Layer> = HashMap::new();
    let mut list = String::new();
    let mut tsv = String::from("reference\tkind\tdigest\tplatforms\tlayers\n");
    for image in images {
        let (top, top_bytes, top_mt, kind, platforms, ids) = if image.platforms.is_empty() {
            let platform = format!("linux/{}", image.single_arch);
            let (d, bytes, mt, ids) =
                push_image_manifest(&mut p, &mut layers, image, &platform).await;
            let kind = match image.format {
                Format::Docker => "docker-manifest",
                Format::Oci => "oci-manifest",
                Format::OciTar => "oci-manifest-uncompressed",
            };
            (d, bytes, mt, kind, platform, ids)
        } else {
            let mut children = Vec::new();
            let mut all_ids = Vec::new();
            for pl in image.platforms {
                let (d, bytes, child_mt, ids) =
                    push_image_manifest(&mut p, &mut layers, image, pl).await;
                children.push(json!({"mediaType": child_mt, "size": bytes.len(), "digest": d, "platform": platform_json(pl)}));
                all_ids.extend(ids);
            }
            let mt = if image.format == Format::Docker {
                DOCKER_MANIFEST_LIST
            } else {
                OCI_INDEX
            };
            let index = serde_json::to_vec_pretty(&json!({
                "schemaVersion": 2,
                "mediaType": mt,
                "manifests": children,
            }))
            .unwrap();
            let d = digest(&index);
            p.manifest(image.repo, &d, mt, &index).await;
            let kind = if image.format == Format::Docker {
                "docker-manifest-list"
            } else {
                "oci-index"
            };
            (d, index, mt, kind, image.platforms.join(","), all_ids)
        };
        for (i, tag) in image.tags.iter().enumerate() {
            p.manifest(image.repo, tag, top_mt, &top_bytes).await;
            let reference = format!("{registry}/{}:{tag}", image.repo);
            // Exercise the tag+digest form once: alpine's first tag is pinned in the list.
            if image.repo == "library/alpine" && i == 0 {
                list.push_str(&format!("{reference}@{top}\n"));
            } else {
                list.push_str(&format!("{reference}\n"));
            }
            tsv.push_str(&format!(
                "{reference}\t{kind}\t{top}\t{platforms}\t{}\n",
                ids.join(",")
            ));
        }
    }
    let mut layer_tsv = String::from("layer\tdigest\tsize\n");
    let mut keys: Vec<&String> = layers.keys().collect();
    keys.sort();
    for k in keys {
        let l = &layers[k];
        let id = k.rsplit_once('/').map(|(a, _)| a).unwrap_or(k);
        layer_tsv.push_str(&format!("{id}\t{}\t{}\n", l.digest, l.blob.len()));
    }
    std::fs::write(format!("{out}.list"), list).unwrap();
    std::fs::write(format!("{out}.tsv"), tsv).unwrap();
    std::fs::write(format!("{out}.layers.tsv"), layer_tsv).unwrap();
    let total: u64 = layers.values().map(|l| l.blob.len() as u64).sum();
    eprintln!(
        "fixture {set}: {} images, {} distinct layers, {:.1} MiB of layers, {:.1} MiB uploaded now",
        images.iter().map(|i| i.tags.len()).sum::<usize>(),
        layers.len(),
        total as f64 / MIB,
        p.uploaded_bytes as f64 / MIB
    );
}
