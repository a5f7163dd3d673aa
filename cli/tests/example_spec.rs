//! The repository's example Dockerfile.bundle stays valid and plans against ../shared.

use std::path::PathBuf;
use std::process::Command;

#[test]
fn example_bundle_spec_plans() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let o = Command::new(env!("CARGO_BIN_EXE_kpbuild"))
        .args(["plan", "-f"])
        .arg(root.join("Dockerfile.bundle"))
        .arg("--context")
        .arg(root.join("../shared"))
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let plan: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let platforms = plan["platforms"].as_array().unwrap();
    assert_eq!(platforms.len(), 2);
    for p in platforms {
        let arch = p["platform"].as_str().unwrap().trim_start_matches("linux/");
        let modules = p["modules"].as_array().unwrap();
        let files = modules[0]["work"]["files"].as_array().unwrap();
        // kubespray 2.28.1, calico + containerd: the enabled files, every one pinned.
        assert_eq!(files.len(), 11, "{arch}");
        assert!(
            files
                .iter()
                .all(|f| f["pin"]["hex"].as_str().is_some_and(|h| h.len() == 64))
        );
        assert!(files.iter().all(|f| {
            f["fetch_url"]
                .as_str()
                .unwrap()
                .starts_with("http://127.0.0.1:8081/")
        }));
        let images = modules[1]["work"]["images"].as_array().unwrap();
        assert!(images.iter().any(|i| i["stored"] == "calico/node:v3.29.5"));
        assert!(
            images
                .iter()
                .any(|i| i["stored"] == "library/registry:2.8.1")
        );
        let distro = &modules[2]["work"]["distros"][0];
        assert_eq!(distro["path"], format!("debian/{arch}/bookworm"));
    }
}
