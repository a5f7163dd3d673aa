//! The lists rendered from kubespray's real variable files equal what kubespray's own Ansible
//! tooling renders (`../shared/testdata/kubespray/*/expected`).

use std::collections::BTreeSet;
use std::path::PathBuf;

use kpbuild_modules::kubespray::{Arch, Kubespray};

fn testdata() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared/testdata/kubespray")
}

fn expected(version: &str, file: &str) -> BTreeSet<String> {
    let path = testdata().join(version).join("expected").join(file);
    std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(str::to_string)
        .collect()
}

fn load(version: &str, arch: Arch, extra: &[&str]) -> Kubespray {
    let extra: Vec<String> = extra.iter().map(|s| s.to_string()).collect();
    Kubespray::load(&testdata().join(version), arch, &extra)
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

#[test]
fn v2_16_0_old_arch_quirks_match_ansible() {
    for arch in [Arch::Amd64, Arch::Arm64] {
        let k = load("v2.16.0", arch, GENERATOR_HOST);
        assert_same(
            &format!("files {arch}"),
            &set(k.files().unwrap()),
            &expected("v2.16.0", &format!("files-{arch}.list")),
        );
        // The newer generator applied to 2.16 writes `v{{ kube_version }}` although 2.16's
        // kube_version already starts with `v`: `kube-apiserver:vv1.20.7`, which no registry
        // has. kpbuild writes the tag kubeadm pulls; every other line is identical.
        let want: BTreeSet<String> = expected("v2.16.0", &format!("images-{arch}.list"))
            .into_iter()
            .map(|l| l.replace(":vv1.", ":v1."))
            .collect();
        assert_same(&format!("images {arch}"), &set(k.images().unwrap()), &want);
    }
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
