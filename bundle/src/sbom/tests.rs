//! The bundle's SBOMs from a small hand-written manifest: golden documents in both formats,
//! the same bytes from the same manifest, counts per kind, purls per kind, and the faults
//! `verify` reports for a changed or missing SBOM.

use super::*;
use crate::verify::{Options, parse_lock, verify_bundle_with};

/// A manifest with one entry or two of every section, modules named.
const LOCK: &str = r#"{
  "format": "kpbuild.lock/v1",
  "kpbuild": "0.1.0",
  "bundle": {
    "name": "kubeplay",
    "version": "v0.1.0",
    "platform": "linux/amd64",
    "modules": [
      "files",
      "images",
      "os-packages",
      "compose"
    ],
    "source_date_epoch": 1700000000
  },
  "spec": {
    "file": "Dockerfile.bundle",
    "sha256": "5ec0000000000000000000000000000000000000000000000000000000000000",
    "kubespray": "testdata/kubespray/v2.28.1"
  },
  "files": [
    {
      "path": "resources/nginx/files/get.helm.sh/helm-v3.16.4-linux-amd64.tar.gz",
      "url": "https://get.helm.sh/helm-v3.16.4-linux-amd64.tar.gz",
      "sha256": "f1e0000000000000000000000000000000000000000000000000000000000001",
      "size": 10,
      "pin": "sha512:abababababababababababababababababababababababababababababababababababababababababababababababababababababababababababababababab",
      "module": "files"
    }
  ],
  "images": [
    {
      "source": "quay.io/calico/node:v3.29.5",
      "stored": "calico/node:v3.29.5",
      "digest": "sha256:1de0000000000000000000000000000000000000000000000000000000000000",
      "platforms": {
        "linux/amd64": "sha256:a6d0000000000000000000000000000000000000000000000000000000000000",
        "linux/arm64/v8": "sha256:a640000000000000000000000000000000000000000000000000000000000000"
      },
      "module": "images"
    },
    {
      "source": "registry.k8s.io/pause:3.10",
      "stored": "pause:3.10",
      "digest": "sha256:9a50000000000000000000000000000000000000000000000000000000000000",
      "platforms": {
        "linux/amd64": "sha256:9a50000000000000000000000000000000000000000000000000000000000000"
      },
      "module": "images"
    }
  ],
  "packages": [
    {
      "distro": "debian12",
      "repo": "resources/nginx/debian/amd64/bookworm",
      "name": "libc6",
      "version": "2.36-9+deb12u10",
      "architecture": "amd64",
      "file": "libc6_2.36-9+deb12u10_amd64.deb",
      "sha256": "dec0000000000000000000000000000000000000000000000000000000000000",
      "size": 2,
      "module": "os-packages"
    },
    {
      "distro": "rocky9",
      "repo": "resources/nginx/rocky/9/os/x86_64",
      "name": "curl",
      "version": "7.76.1-29.el9_4",
      "architecture": "x86_64",
      "file": "curl-7.76.1-29.el9_4.x86_64.rpm",
      "sha256": "4b30000000000000000000000000000000000000000000000000000000000000",
      "size": 3,
      "module": "os-packages"
    }
  ],
  "skipped_packages": [
    {
      "distro": "debian12",
      "names": [
        "python-apt"
      ],
      "module": "os-packages"
    }
  ],
  "artifacts": [
    {
      "path": "install.sh",
      "sha256": "1a50000000000000000000000000000000000000000000000000000000000000",
      "size": 4,
      "module": "compose"
    },
    {
      "path": "resources/images/nginx-1.27.4-alpine.tar",
      "sha256": "a9c0000000000000000000000000000000000000000000000000000000000000",
      "size": 5,
      "module": "compose"
    }
  ]
}
"#;

fn lock() -> Lock {
    parse_lock(LOCK).unwrap()
}

/// Compares with the golden file beside this one; `KPBUILD_UPDATE_GOLDEN=1` rewrites it.
fn golden(name: &str, got: &[u8]) {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("src/sbom")
        .join(name);
    if std::env::var_os("KPBUILD_UPDATE_GOLDEN").is_some() {
        std::fs::write(&path, got).unwrap();
    }
    let want = std::fs::read(&path).unwrap();
    assert!(
        got == want.as_slice(),
        "{name} differs from the golden file:\n{}",
        String::from_utf8_lossy(got)
    );
}

#[test]
fn golden_documents_of_a_small_manifest() {
    let l = lock();
    golden(
        "golden.spdx.json",
        &render(&l, LOCK.as_bytes(), Format::Spdx).unwrap(),
    );
    golden(
        "golden.cdx.json",
        &render(&l, LOCK.as_bytes(), Format::CycloneDx).unwrap(),
    );
}

#[test]
fn the_same_manifest_gives_the_same_bytes_and_another_manifest_another_identity() {
    let l = lock();
    let a = files(&l, LOCK.as_bytes()).unwrap();
    let b = files(&lock(), LOCK.as_bytes()).unwrap();
    assert_eq!(a, b);
    assert_eq!(
        a.iter().map(|(f, _)| *f).collect::<Vec<_>>(),
        [SPDX_FILE, CYCLONEDX_FILE]
    );
    // One byte more in the manifest (its digest changes): a new namespace and serial number,
    // nothing else.
    let other = format!("{LOCK}\n");
    let c = files(&l, other.as_bytes()).unwrap();
    for ((_, x), (_, y)) in a.iter().zip(&c) {
        let (x, y) = (String::from_utf8_lossy(x), String::from_utf8_lossy(y));
        let differ: Vec<(&str, &str)> = x.lines().zip(y.lines()).filter(|(p, q)| p != q).collect();
        assert_eq!(differ.len(), 1, "{differ:?}");
        assert!(
            differ[0].0.contains("documentNamespace") || differ[0].0.contains("serialNumber"),
            "{differ:?}"
        );
    }
    // No time in the manifest: the epoch, never the clock.
    let mut no_time = lock();
    no_time.bundle.source_date_epoch = None;
    let d = document(&no_time, LOCK.as_bytes()).unwrap();
    assert_eq!(d.created, DEFAULT_CREATED);
    assert_eq!(d.created_rfc3339().unwrap(), "1970-01-01T00:00:00Z");
    assert_eq!(
        document(&l, LOCK.as_bytes())
            .unwrap()
            .created_rfc3339()
            .unwrap(),
        "2023-11-14T22:13:20Z"
    );
}

#[test]
fn components_count_what_the_manifest_lists_by_kind_and_name_their_module() {
    let l = lock();
    let d = document(&l, LOCK.as_bytes()).unwrap();
    let count = |k: Kind| d.all().iter().filter(|c| c.kind == k).count();
    assert_eq!(count(Kind::File), l.section("files").len());
    assert_eq!(count(Kind::ImageIndex), l.section("images").len());
    // calico/node's two platforms; pause is one manifest (its own platform, no children).
    assert_eq!(count(Kind::ImageManifest), 2);
    assert_eq!(count(Kind::OsPackage), l.section("packages").len());
    assert_eq!(
        count(Kind::ImageArchive) + count(Kind::Artifact),
        l.section("artifacts").len()
    );
    assert_eq!(count(Kind::Source), 1);
    assert_eq!(count(Kind::Bundle), 1);
    for c in d.components.iter().flat_map(Component::walk) {
        let want = match c.kind {
            Kind::File => "files",
            Kind::ImageIndex | Kind::ImageManifest => "images",
            Kind::OsPackage => "os-packages",
            _ => "compose",
        };
        assert_eq!(c.module.as_deref(), Some(want), "{}", c.name);
    }
    // A manifest made before modules were recorded: the same components, no module.
    let mut v: serde_json::Value = serde_json::from_str(LOCK).unwrap();
    for section in v.as_object_mut().unwrap().values_mut() {
        for e in section.as_array_mut().into_iter().flatten() {
            e.as_object_mut().unwrap().remove(crate::lock::MODULE_KEY);
        }
    }
    let old = serde_json::to_string_pretty(&v).unwrap();
    assert!(!old.contains("module\""));
    let old_lock = parse_lock(&old).unwrap_or_else(|e| panic!("{e}\n{old}"));
    let o = document(&old_lock, old.as_bytes()).unwrap();
    assert_eq!(o.all().len(), d.all().len());
    assert!(o.all().iter().all(|c| c.module.is_none()));
}

#[test]
fn each_kind_names_its_components_by_package_url() {
    let d = document(&lock(), LOCK.as_bytes()).unwrap();
    let purls: Vec<&str> = d.all().iter().filter_map(|c| c.purl.as_deref()).collect();
    let want = [
        "pkg:generic/kubeplay@v0.1.0?platform=linux/amd64",
        "pkg:github/kubernetes-sigs/kubespray@v2.28.1",
        "pkg:generic/helm-v3.16.4-linux-amd64.tar.gz@v3.16.4?checksum=sha256:f1e0000000000000000000000000000000000000000000000000000000000001&download_url=https://get.helm.sh/helm-v3.16.4-linux-amd64.tar.gz",
        "pkg:oci/node@sha256:1de0000000000000000000000000000000000000000000000000000000000000?repository_url=quay.io/calico/node&tag=v3.29.5",
        "pkg:oci/node@sha256:a6d0000000000000000000000000000000000000000000000000000000000000?arch=amd64&repository_url=quay.io/calico/node&tag=v3.29.5",
        "pkg:oci/node@sha256:a640000000000000000000000000000000000000000000000000000000000000?arch=arm64&repository_url=quay.io/calico/node&tag=v3.29.5",
        "pkg:oci/pause@sha256:9a50000000000000000000000000000000000000000000000000000000000000?arch=amd64&repository_url=registry.k8s.io/pause&tag=3.10",
        "pkg:deb/debian/libc6@2.36-9%2Bdeb12u10?arch=amd64&distro=debian-12",
        "pkg:rpm/rocky/curl@7.76.1-29.el9_4?arch=x86_64&distro=rocky-9",
        "pkg:generic/kubeplay/install.sh@v0.1.0?checksum=sha256:1a50000000000000000000000000000000000000000000000000000000000000",
        "pkg:generic/kubeplay/nginx-1.27.4-alpine.tar@v0.1.0?checksum=sha256:a9c0000000000000000000000000000000000000000000000000000000000000",
    ];
    assert_eq!(purls, want);
    let helm = d.all().into_iter().find(|c| c.kind == Kind::File).unwrap();
    assert_eq!(
        helm.download.as_deref(),
        Some("https://get.helm.sh/helm-v3.16.4-linux-amd64.tar.gz")
    );
    assert_eq!(helm.supplier.as_deref(), Some("get.helm.sh"));
    assert_eq!(helm.digests.len(), 2, "the sha512 pin is a second digest");
}

#[test]
fn versions_in_urls_and_directories() {
    for (url, want) in [
        (
            "https://dl.k8s.io/release/v1.32.8/bin/linux/amd64/kubelet",
            Some("v1.32.8"),
        ),
        (
            "https://get.helm.sh/helm-v3.16.4-linux-amd64.tar.gz",
            Some("v3.16.4"),
        ),
        (
            "https://github.com/projectcalico/calico/archive/v3.29.5.tar.gz",
            Some("v3.29.5"),
        ),
        (
            "https://github.com/opencontainers/runc/releases/download/v1.2.6/runc.amd64",
            Some("v1.2.6"),
        ),
        // A file name is cut at `-` and `_`: a pre-release there is not kept.
        ("https://h.io/etcd-3.5.22-rc.1_linux.tgz", Some("3.5.22")),
        ("https://h.io/v3.5.22-rc.1/etcd", Some("v3.5.22-rc.1")),
        ("https://h.io/a/b/tool", None),
        ("https://h.io/v1/tool", None),
    ] {
        assert_eq!(version_in_url(url).as_deref(), want, "{url}");
    }
    assert!(is_version("v2.28.1") && is_version("1.32") && !is_version("v2") && !is_version("2.x"));
    assert!(!is_version("1.2-") && !is_version("kubespray"));
}

/// A bundle directory holding the manifest and its SBOMs, to verify.
fn bundle_dir() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join(crate::layout::LOCK_FILE), LOCK).unwrap();
    for (file, bytes) in files(&lock(), LOCK.as_bytes()).unwrap() {
        std::fs::write(dir.path().join(file), bytes).unwrap();
    }
    dir
}

/// The faults `verify` reports at the SBOMs, and how many SBOMs it checked.
fn sbom_faults(root: &std::path::Path) -> (Vec<String>, usize) {
    let r = verify_bundle_with(root, Options { hash: false });
    let faults = r
        .faults
        .iter()
        .filter(|f| f.at == SPDX_FILE || f.at == CYCLONEDX_FILE)
        .map(|f| f.to_string())
        .collect();
    let checked = r
        .checked
        .iter()
        .find(|t| t.noun == "SBOMs")
        .map_or(0, |t| t.count);
    (faults, checked)
}

#[test]
fn verify_names_a_changed_or_missing_sbom_and_accepts_a_bundle_without_any() {
    let dir = bundle_dir();
    assert_eq!(sbom_faults(dir.path()), (vec![], 2));
    // One byte changed.
    let spdx = dir.path().join(SPDX_FILE);
    let mut bytes = std::fs::read(&spdx).unwrap();
    let at = bytes.iter().position(|&b| b == b'v').unwrap();
    bytes[at] = b'w';
    std::fs::write(&spdx, &bytes).unwrap();
    let (faults, checked) = sbom_faults(dir.path());
    assert_eq!(checked, 2);
    assert_eq!(faults.len(), 1, "{faults:?}");
    assert!(
        faults[0].starts_with(&format!(
            "{SPDX_FILE}: is not the SBOM kubeplay.lock.json gives"
        )) && faults[0].contains(&format!("first difference at byte {at}")),
        "{}",
        faults[0]
    );
    // One missing while the other is there.
    std::fs::remove_file(&spdx).unwrap();
    let (faults, _) = sbom_faults(dir.path());
    assert_eq!(faults.len(), 1);
    assert!(
        faults[0].starts_with(&format!("{SPDX_FILE}: missing")),
        "{}",
        faults[0]
    );
    // Neither: a bundle made before SBOMs, no fault, none checked.
    std::fs::remove_file(dir.path().join(CYCLONEDX_FILE)).unwrap();
    assert_eq!(sbom_faults(dir.path()), (vec![], 0));
    // The manifest changed under unchanged SBOMs: both are faults.
    let dir = bundle_dir();
    std::fs::write(
        dir.path().join(crate::layout::LOCK_FILE),
        LOCK.replace("\"size\": 10", "\"size\": 11"),
    )
    .unwrap();
    let (faults, _) = sbom_faults(dir.path());
    assert_eq!(faults.len(), 2, "{faults:?}");
}
