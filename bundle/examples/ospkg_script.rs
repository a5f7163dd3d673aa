//! Development tool (not part of kpbuild): the os-packages scripts and client files of a spec,
//! as the frontend will generate them, written to files so that they can be run by hand in a
//! container of the distro's base image (`hack/stages/ospkg-script.sh` does).
//!
//! cargo run -p kpbuild-bundle --example ospkg_script -- SPEC CONTEXT ARCH OUT
//!
//! For every os-packages module and distro of SPEC planned for ARCH, writes
//! `OUT/<distro>-<arch>.sh` (the script) and `OUT/<client path>` (e.g.
//! `OUT/resources/nginx/repos/debian12-arm64.list`), and prints the script paths.

use std::path::Path;

use kpbuild_ansible::kubespray::Arch;
use kpbuild_bundle::kinds::os_packages::script::{self as ospkg, ScriptOptions};
use kpbuild_bundle::plan::{self, OsPackagesWork, PlanOptions, Work};
use kpbuild_bundle::spec::SpecFile;
use kpbuild_oci::platform::Platform;
use kpbuild_paths::source::LocalDir;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [spec, context, arch, out] = args.as_slice() else {
        eprintln!("usage: ospkg_script SPEC CONTEXT ARCH OUT");
        std::process::exit(2);
    };
    let fail = |e: String| -> ! {
        eprintln!("ospkg_script: {e}");
        std::process::exit(1)
    };
    let arch = Arch::parse(arch).unwrap_or_else(|| fail(format!("unknown architecture {arch}")));
    let spec = SpecFile::read(Path::new(spec)).unwrap_or_else(|e| fail(e.to_string()));
    let opts = PlanOptions {
        platforms: vec![Platform::linux(arch)],
        ..Default::default()
    };
    let plan =
        plan::plan(&spec, &LocalDir::new(context), &opts).unwrap_or_else(|e| fail(e.to_string()));
    let out = Path::new(out);
    for m in &plan.platforms[0].modules {
        let Work::OsPackages(OsPackagesWork { distros }) = &m.work else {
            continue;
        };
        for d in distros {
            let script =
                ospkg::script(d, &ScriptOptions::new(arch)).unwrap_or_else(|e| fail(e.to_string()));
            let client = ospkg::client_file(d, arch).unwrap_or_else(|e| fail(e.to_string()));
            let path = out.join(format!("{}-{arch}.sh", d.name));
            let client_path = out.join(&client.path);
            std::fs::create_dir_all(client_path.parent().expect("a parent"))
                .and_then(|_| std::fs::write(&path, script))
                .and_then(|_| std::fs::write(&client_path, &client.content))
                .unwrap_or_else(|e| fail(format!("writing {}: {e}", path.display())));
            println!("{}", path.display());
        }
    }
}
