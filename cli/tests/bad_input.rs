//! Bad input gives a clear error: non-zero exit, naming the file and position or the variable.

use std::path::Path;
use std::process::{Command, Output};

fn kpbuild(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_kpbuild"))
        .args(args)
        .output()
        .expect("run kpbuild")
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// A minimal kubespray checkout (recent layout) whose download defaults are `download_yml`.
fn kubespray(dir: &Path, download_yml: &str) {
    let d = dir.join("roles/kubespray_defaults/defaults/main");
    std::fs::create_dir_all(&d).unwrap();
    std::fs::write(
        d.join("main.yml"),
        "kube_version: 1.32.8\nkube_image_repo: registry.k8s.io\n",
    )
    .unwrap();
    std::fs::write(d.join("download.yml"), download_yml).unwrap();
}

const DOWNLOADS: &str = "downloads:\n  kubelet:\n    enabled: true\n    file: true\n    url: \"{{ kubelet_download_url }}\"\n";

#[test]
fn undefined_variable_names_it_and_the_chain() {
    let tmp = tempfile::tempdir().unwrap();
    kubespray(
        tmp.path(),
        &format!(
            "---\ndl_k8s_io_url: \"{{{{ mirror_host }}}}/dl\"\nkubelet_download_url: \"{{{{ dl_k8s_io_url }}}}/v{{{{ kube_version }}}}/kubelet\"\n{DOWNLOADS}"
        ),
    );
    let o = kpbuild(&[
        "lists",
        "files",
        "--kubespray",
        tmp.path().to_str().unwrap(),
    ]);
    let e = stderr(&o);
    assert!(!o.status.success());
    assert!(e.contains("variable `mirror_host` is undefined"), "{e}");
    assert!(
        e.contains("needed by `dl_k8s_io_url` (") && e.contains("download.yml:2:1)"),
        "{e}"
    );
    assert!(
        e.contains("needed by `kubelet_download_url` (") && e.contains("download.yml:3:1)"),
        "{e}"
    );
    assert!(e.contains("-e mirror_host=VALUE"), "{e}");
    assert!(o.stdout.is_empty(), "nothing half-printed on stdout");
}

#[test]
fn yaml_syntax_error_names_file_and_line() {
    let tmp = tempfile::tempdir().unwrap();
    kubespray(
        tmp.path(),
        &format!("a: 1\nkubelet_download_url: [unclosed\n{DOWNLOADS}"),
    );
    let o = kpbuild(&[
        "lists",
        "images",
        "--kubespray",
        tmp.path().to_str().unwrap(),
    ]);
    let e = stderr(&o);
    assert!(!o.status.success());
    assert!(
        e.contains("download.yml:3:10: YAML error: illegal placement"),
        "{e}"
    );
}

#[test]
fn jinja_syntax_error_names_variable_and_position() {
    let tmp = tempfile::tempdir().unwrap();
    kubespray(
        tmp.path(),
        &format!("kubelet_download_url: \"{{{{ kube_version | }}}}\"\n{DOWNLOADS}"),
    );
    let o = kpbuild(&[
        "lists",
        "files",
        "--kubespray",
        tmp.path().to_str().unwrap(),
        "--arch",
        "arm64",
    ]);
    let e = stderr(&o);
    assert!(!o.status.success());
    assert!(
        e.contains("download.yml:1:1: Jinja syntax error in `kubelet_download_url`"),
        "{e}"
    );
}

#[test]
fn unknown_module_kind_names_spec_position() {
    let tmp = tempfile::tempdir().unwrap();
    let spec = tmp.path().join("Dockerfile.bundle");
    std::fs::write(
        &spec,
        "# syntax=kpbuild/frontend:dev\nname: b\nversion: v1\nmodules:\n  files:\n    kind: files\n  pkgs:\n    kind: rpm-packages\n",
    )
    .unwrap();
    let o = kpbuild(&["plan", "-f", spec.to_str().unwrap()]);
    let e = stderr(&o);
    assert!(!o.status.success());
    assert!(
        e.contains("Dockerfile.bundle:8:5: unknown variant `rpm-packages`"),
        "{e}"
    );
    assert!(
        e.contains(
            "hint: module `kind` is one of: files, images, os-packages, dockerfile, compose"
        ),
        "{e}"
    );
}

#[test]
fn not_a_kubespray_checkout() {
    let tmp = tempfile::tempdir().unwrap();
    let o = kpbuild(&[
        "lists",
        "files",
        "--kubespray",
        tmp.path().to_str().unwrap(),
    ]);
    assert!(!o.status.success());
    assert!(
        stderr(&o).contains("not a kubespray checkout"),
        "{}",
        stderr(&o)
    );
}

#[test]
fn a_missing_kubespray_directory_says_so() {
    let tmp = tempfile::tempdir().unwrap();
    let missing = tmp.path().join("no-such-dir");
    let o = kpbuild(&["lists", "files", "--kubespray", missing.to_str().unwrap()]);
    assert!(!o.status.success());
    assert!(
        stderr(&o).contains("no-such-dir: no such directory"),
        "{}",
        stderr(&o)
    );
}

#[test]
fn lists_from_a_spec_use_its_variables() {
    let tmp = tempfile::tempdir().unwrap();
    kubespray(
        &tmp.path().join("ks"),
        &format!(
            "kubelet_download_url: \"https://{{{{ host }}}}/v{{{{ kube_version }}}}/{{{{ image_arch }}}}/kubelet\"\n{DOWNLOADS}"
        ),
    );
    let spec = tmp.path().join("Dockerfile.bundle");
    std::fs::write(
        &spec,
        "# syntax=kpbuild/frontend:dev\nname: b\nversion: v1\nplatforms: [linux/arm64]\nvars:\n  kubespray: ks\n  extra:\n    host: dl.example.com\nmodules:\n  files: {kind: files}\n",
    )
    .unwrap();
    let o = kpbuild(&["lists", "files", "--spec", spec.to_str().unwrap()]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(
        String::from_utf8_lossy(&o.stdout),
        "https://dl.example.com/v1.32.8/arm64/kubelet\n"
    );
}
