//! The lists rendered from kubespray's real variable files equal what kubespray's own Ansible
//! tooling renders (`../shared/testdata/kubespray/*/expected`): the compatibility matrix of every
//! release there, v2.16 to v2.31, in each of kubespray's four variable layouts.

use std::collections::{BTreeSet, HashMap};
use std::path::PathBuf;
use std::sync::{Mutex, OnceLock};

use kpbuild_ansible::kubespray::{Arch, Kubespray};
use kpbuild_ansible::vars::{Layout, VarSet};

fn testdata() -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared/testdata/kubespray");
    assert!(
        dir.is_dir(),
        "{}: missing; these tests read kubespray's variable files and the lists its own tooling \
         rendered from ../shared/testdata beside the repository (see hack/test.sh)",
        dir.display()
    );
    dir
}

/// The releases of the matrix, each with the variable layout it has.
const MATRIX: [(&str, Layout); 7] = [
    ("v2.16.0", Layout::V2_16),
    ("v2.20.0", Layout::V2_16),
    ("v2.23.0", Layout::V2_23),
    ("v2.24.0", Layout::V2_24),
    ("v2.26.0", Layout::V2_24),
    ("v2.28.1", Layout::V2_28),
    ("v2.31.0", Layout::V2_28),
];

fn expected(version: &str, file: &str) -> BTreeSet<String> {
    let path = testdata().join(version).join("expected").join(file);
    std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(str::to_string)
        .collect()
}

/// A release's variables, read once per test binary (parsing is most of a debug build's time).
fn vars(version: &str) -> VarSet {
    static READ: OnceLock<Mutex<HashMap<String, VarSet>>> = OnceLock::new();
    let mut read = READ.get_or_init(Default::default).lock().unwrap();
    read.entry(version.to_string())
        .or_insert_with(|| {
            VarSet::load_kubespray(&testdata().join(version))
                .unwrap_or_else(|e| panic!("{version}: {e}"))
                .0
        })
        .clone()
}

fn load(version: &str, arch: Arch, extra: &[&str]) -> Kubespray {
    let extra: Vec<String> = extra.iter().map(|s| s.to_string()).collect();
    Kubespray::from_vars(version, vars(version), arch, &extra)
        .unwrap_or_else(|e| panic!("{version} {arch}: {e}"))
}

fn set(items: impl IntoIterator<Item = String>) -> BTreeSet<String> {
    items.into_iter().collect()
}

#[track_caller]
fn assert_same(what: &str, got: &BTreeSet<String>, want: &BTreeSet<String>) {
    let missing: Vec<_> = want.difference(got).collect();
    let extra: Vec<_> = got.difference(want).collect();
    assert!(
        missing.is_empty() && extra.is_empty(),
        "{what}:\n missing {missing:#?}\n extra {extra:#?}"
    );
}

/// The generator ran on an x86_64 host: its `ansible_architecture` fact is x86_64 whatever
/// `image_arch` is. kpbuild follows `--arch` unless told the generator's fact.
const GENERATOR_HOST: &[&str] = &["ansible_architecture=x86_64"];

#[test]
fn v2_28_1_files_images_checksums_match_ansible() {
    for arch in [Arch::Amd64, Arch::Arm64] {
        let k = load("v2.28.1", arch, GENERATOR_HOST);
        assert_same(
            &format!("files {arch}"),
            &set(k.files().unwrap()),
            &expected("v2.28.1", &format!("files-{arch}.list")),
        );
        assert_same(
            &format!("images {arch}"),
            &set(k.images().unwrap()),
            &expected("v2.28.1", &format!("images-{arch}.list")),
        );
        let checksums = set(k
            .checksums()
            .unwrap()
            .into_iter()
            .map(|f| format!("{} {}", f.pin.expect("pinned"), f.url)));
        assert_same(
            &format!("checksums {arch}"),
            &checksums,
            &expected("v2.28.1", &format!("checksums-{arch}.txt")),
        );
    }
}

#[test]
fn v2_28_1_enabled_only_matches_ansible() {
    for (arch, extra, file) in [
        (Arch::Amd64, vec![], "enabled-amd64.list"),
        (Arch::Arm64, vec![], "enabled-arm64.list"),
        (
            Arch::Amd64,
            vec!["kube_network_plugin=cilium", "container_manager=crio"],
            "enabled-amd64-cilium-crio.list",
        ),
    ] {
        let mut all = GENERATOR_HOST.to_vec();
        all.extend(extra);
        let k = load("v2.28.1", arch, &all);
        let got = set(k.enabled().unwrap().into_iter().map(|i| i.to_string()));
        assert_same(file, &got, &expected("v2.28.1", file));
    }
}

/// The documented host-fact rule: the expected lists were rendered on an x86_64 host, so for
/// `image_arch=arm64` they name the x86_64 builds of the files kubespray picks by the host's
/// `ansible_architecture` (kata, youki, gVisor). kpbuild's facts follow `--arch`: it names the
/// aarch64 builds. Any other `x86_64` in an arm64 list would be a real difference.
fn host_fact_rule(arch: Arch, line: &str) -> String {
    if arch != Arch::Arm64 || !line.contains("x86_64") {
        return line.to_string();
    }
    assert!(
        ["/kata-static-", "/youki", "/gvisor/"]
            .iter()
            .any(|f| line.contains(f)),
        "an x86_64 file outside the documented host-fact rule: {line}"
    );
    line.replace("x86_64", "aarch64")
}

/// The generator writes `v{{ kube_version }}` although kubespray 2.16's `kube_version` already
/// starts with `v`: `kube-apiserver:vv1.20.7`, which no registry has. kpbuild writes the tag
/// kubeadm pulls; every other line is identical.
fn kube_tag_rule(line: &str) -> String {
    line.replace(":vv1.", ":v1.")
}

/// One cell of the matrix: the differences, empty when equal as sets.
fn compare(version: &str, arch: Arch, list: &str) -> Vec<String> {
    let k = load(version, arch, &[]);
    let (got, mut want): (BTreeSet<String>, BTreeSet<String>) = match list {
        "files" => (
            set(k
                .files()
                .unwrap_or_else(|e| panic!("{version} {arch}: {e}"))),
            expected(version, &format!("files-{arch}.list"))
                .iter()
                .map(|l| host_fact_rule(arch, l))
                .collect(),
        ),
        _ => (
            set(k
                .images()
                .unwrap_or_else(|e| panic!("{version} {arch}: {e}"))),
            expected(version, &format!("images-{arch}.list"))
                .iter()
                .map(|l| kube_tag_rule(&host_fact_rule(arch, l)))
                .collect(),
        ),
    };
    let mut diffs = Vec::new();
    // Files kubespray has no build of for this architecture (checksum `0`): the generator lists
    // them, kpbuild leaves them out.
    for u in k.unbuilt() {
        if list == "files" && !want.remove(&u.url) {
            diffs.push(format!(
                "left out {} but the generator did not list it",
                u.url
            ));
        }
    }
    diffs.extend(want.difference(&got).map(|l| format!("missing {l}")));
    diffs.extend(got.difference(&want).map(|l| format!("extra {l}")));
    diffs
        .into_iter()
        .map(|d| format!("{version} {arch} {list}: {d}"))
        .collect()
}

#[test]
fn every_release_in_testdata_is_in_the_matrix() {
    let mut found: Vec<String> = std::fs::read_dir(testdata())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with('v'))
        .collect();
    found.sort();
    let matrix: Vec<&str> = MATRIX.iter().map(|(v, _)| *v).collect();
    assert_eq!(found, matrix);
    for (version, layout) in MATRIX {
        let (_, got) = VarSet::load_kubespray(&testdata().join(version)).unwrap();
        assert_eq!(got, layout, "{version}");
    }
}

#[test]
fn compatibility_matrix_files_and_images_equal_kubesprays_own_lists() {
    let mut diffs = Vec::new();
    let mut cells = 0;
    for (version, _) in MATRIX {
        for arch in [Arch::Amd64, Arch::Arm64] {
            for list in ["files", "images"] {
                diffs.extend(compare(version, arch, list));
                cells += 1;
            }
        }
    }
    assert_eq!(cells, 28);
    assert!(diffs.is_empty(), "{}", diffs.join("\n"));
}

#[test]
fn compatibility_matrix_checksums_and_enabled_lists_render() {
    for (version, _) in MATRIX {
        for arch in [Arch::Amd64, Arch::Arm64] {
            for extra in [
                &[][..],
                &["kube_network_plugin=cilium", "container_manager=crio"],
            ] {
                let k = load(version, arch, extra);
                let sums = k
                    .checksums()
                    .unwrap_or_else(|e| panic!("{version} {arch} checksums: {e}"));
                let unpinned: Vec<_> = sums.iter().filter(|f| f.pin.is_none()).collect();
                assert!(unpinned.is_empty(), "{version} {arch}: {unpinned:#?}");
                let enabled = k
                    .enabled()
                    .unwrap_or_else(|e| panic!("{version} {arch} {extra:?} enabled: {e}"));
                let left_out: BTreeSet<&str> = k.unbuilt().iter().map(|u| u.url.as_str()).collect();
                assert!(
                    !enabled
                        .iter()
                        .any(|i| left_out.contains(i.to_string().trim_start_matches("file "))),
                    "{version} {arch}: an unbuilt file is enabled"
                );
                assert!(
                    !sums.iter().any(|f| left_out.contains(f.url.as_str())),
                    "{version} {arch}: an unbuilt file has a checksum line"
                );
            }
        }
    }
}

#[test]
fn placeholder_checksums_of_old_releases_are_left_out_on_arm64() {
    let left = |version| -> Vec<String> {
        load(version, Arch::Arm64, &[])
            .unbuilt()
            .iter()
            .map(|u| u.entry.clone())
            .collect()
    };
    assert_eq!(left("v2.16.0"), ["kata_containers"]);
    assert_eq!(
        left("v2.20.0"),
        [
            "youki",
            "kata_containers",
            "gvisor_runsc",
            "gvisor_containerd_shim"
        ]
    );
    assert!(left("v2.28.1").is_empty());
    for (version, _) in MATRIX {
        assert!(
            load(version, Arch::Amd64, &[]).unbuilt().is_empty(),
            "{version}"
        );
    }
}

#[test]
fn v2_16_0_old_arch_quirks() {
    let arm = set(load("v2.16.0", Arch::Arm64, &[]).images().unwrap());
    for quirk in [
        "k8s.gcr.io/cpa/cluster-proportional-autoscaler-arm64:1.8.3",
        "quay.io/coreos/flannel:v0.13.0-arm64",
        "quay.io/calico/node:v3.17.4-arm64",
        "quay.io/coreos/etcd:v3.4.13-arm64",
        "k8s.gcr.io/kube-apiserver:v1.20.7",
    ] {
        assert!(arm.contains(quirk), "{quirk} missing from {arm:#?}");
    }
}

#[test]
fn host_facts_follow_arch_by_default() {
    let files = load("v2.28.1", Arch::Arm64, &[]).files().unwrap();
    assert!(
        files
            .iter()
            .any(|f| f.ends_with("/youki-0.5.5-aarch64-gnu.tar.gz")),
        "{files:#?}"
    );
    assert!(
        files.iter().any(|f| f.ends_with("/aarch64/runsc")),
        "{files:#?}"
    );
    assert!(!files.iter().any(|f| f.contains("x86_64")), "{files:#?}");
}

#[test]
fn v2_16_0_checksums_come_from_sha256_fields() {
    let k = load("v2.16.0", Arch::Amd64, &[]);
    let sums = k.checksums().unwrap();
    let kubeadm = sums
        .iter()
        .find(|f| f.url.ends_with("/amd64/kubeadm"))
        .expect("kubeadm is a file download");
    let pin = kubeadm.pin.as_ref().expect("kubeadm is pinned");
    assert_eq!(pin.algorithm, "sha256");
    assert_eq!(pin.hex.len(), 64);
}

#[test]
fn a_missing_key_names_the_mapping_the_key_and_its_keys() {
    for (version, keys) in [
        ("v2.28.1", "'1.32', '1.31', '1.30'"),
        ("v2.31.0", "'1.35', '1.34', '1.33'"),
    ] {
        let k = load(version, Arch::Amd64, &["kube_version=9.9.9"]);
        let e = k.files().unwrap_err().to_string();
        assert!(
            e.contains("`etcd_supported_versions` has no key '9.9'"),
            "{version}: {e}"
        );
        assert!(e.contains(&format!("its keys: {keys}")), "{version}: {e}");
        assert!(!e.contains("-e etcd_supported_versions=VALUE"), "{e}");
    }
}
