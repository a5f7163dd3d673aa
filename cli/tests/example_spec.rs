//! The repository's example Dockerfile.bundle stays valid: it plans in the context
//! hack/bundle-context.sh assembles (here with kubespray's real pins).

use std::path::PathBuf;
use std::process::Command;

#[test]
fn example_bundle_spec_plans() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let tmp = tempfile::tempdir().unwrap();
    let ctx = tmp.path().join("ctx");
    let status = Command::new("bash")
        .arg(root.join("hack/bundle-context.sh"))
        .arg(&ctx)
        .arg("--real-pins")
        .status()
        .unwrap();
    assert!(status.success());
    let o = Command::new(env!("CARGO_BIN_EXE_kpbuild"))
        .args(["plan", "-f"])
        .arg(ctx.join("Dockerfile.bundle"))
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let plan: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let platforms = plan["platforms"].as_array().unwrap();
    assert_eq!(platforms.len(), 2);
    for p in platforms {
        let arch = p["platform"].as_str().unwrap().trim_start_matches("linux/");
        let modules = p["modules"].as_array().unwrap();
        let names: Vec<&str> = modules
            .iter()
            .map(|m| m["name"].as_str().unwrap())
            .collect();
        // The kubespray image for both (arm64's RUN steps under QEMU on an amd64 worker), its
        // base from the fixture registry.
        assert_eq!(
            names,
            ["files", "images", "os-packages", "kubespray", "compose"],
            "{arch}"
        );
        assert_eq!(
            modules[3]["work"]["build_args"]["BASE"],
            "127.0.0.1:5730/docker.io/library/debian:bookworm"
        );
        let files = modules[0]["work"]["files"].as_array().unwrap();
        // kubespray 2.28.1, calico + containerd: the enabled files, every one pinned.
        assert_eq!(files.len(), 11, "{arch}");
        assert!(
            files
                .iter()
                .all(|f| f["pin"]["hex"].as_str().is_some_and(|h| h.len() == 64))
        );
        assert!(files.iter().all(|f| {
            f["fetch_urls"][0]
                .as_str()
                .unwrap()
                .starts_with("http://127.0.0.1:8081/")
        }));
        let images = modules[1]["work"]["images"].as_array().unwrap();
        assert!(images.iter().any(|i| i["stored"] == "calico/node:v3.29.5"));
        assert!(
            images
                .iter()
                .all(|i| i["platforms"] == serde_json::json!(["linux/amd64", "linux/arm64"]))
        );
        let distro = &modules[2]["work"]["distros"][0];
        assert_eq!(distro["path"], format!("debian/{arch}/bookworm"));
        let compose = &modules.last().unwrap()["work"];
        assert_eq!(
            compose["archives"][0]["path"],
            "resources/images/nginx-1.27.4-alpine.tar"
        );
        assert_eq!(
            compose["archives"][1]["fetch"],
            "127.0.0.1:5730/docker.io/library/registry"
        );
    }
}

/// The CI matrix of the example is every distro of its os-packages module × its two platforms,
/// in spec order (hack/stages/workflows.sh checks that bundle.yml reads it and nothing else).
#[test]
fn example_matrix_is_every_distro_times_every_platform() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let o = Command::new(env!("CARGO_BIN_EXE_kpbuild"))
        .args(["plan", "--matrix", "-f"])
        .arg(root.join("Dockerfile.bundle"))
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let text = String::from_utf8(o.stdout).unwrap();
    assert_eq!(
        text.lines().count(),
        1,
        "one line for $GITHUB_OUTPUT: {text}"
    );
    let m: serde_json::Value = serde_json::from_str(&text).unwrap();
    let jobs: Vec<String> = m["include"]
        .as_array()
        .unwrap()
        .iter()
        .map(|j| format!("{} {} {}", j["distro"], j["platform"], j["arch"]).replace('"', ""))
        .collect();
    let mut want = Vec::new();
    for d in [
        "debian11",
        "debian12",
        "debian13",
        "ubuntu2204",
        "ubuntu2404",
        "rocky8",
        "rocky9",
        "alma8",
        "alma9",
    ] {
        for a in ["amd64", "arm64"] {
            want.push(format!("{d} linux/{a} {a}"));
        }
    }
    assert_eq!(jobs, want);
}
