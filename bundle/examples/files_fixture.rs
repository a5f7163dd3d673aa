//! Test fixture (not part of kpbuild): synthetic downloads for every file kubespray pins, and a
//! variable file that re-pins kubespray's checksum dictionaries to them.
//!
//! Real kubelets cannot be fetched here, so the files module is proven on deterministic
//! stand-ins: for each `<pin> <url>` that `kpbuild lists checksums` renders (per architecture),
//! write pseudo-random bytes derived from the URL to `OUT/<host>/<path>`, and write
//! `VARS` (JSON, which is YAML) holding every `*_checksums` dictionary of the kubespray
//! checkout with each original digest replaced by the stand-in's. Loaded as extra variables,
//! it makes kubespray's own templates render the stand-ins' pins.
//!
//! cargo run -p kpbuild-bundle --example files_fixture -- KUBESPRAY OUT VARS [ARCH…]

use std::collections::BTreeMap;
use std::path::Path;

use indexmap::IndexMap;
use kpbuild_ansible::kubespray::{Arch, Kubespray};
use kpbuild_ansible::vars::VarSet;
use kpbuild_bundle::layout::file_path_of_url as bundle_path_of_url;
use sha2::Digest as _;

fn content(url: &str) -> Vec<u8> {
    let seed = sha2::Sha256::digest(url.as_bytes());
    let size = 64 * 1024 + usize::from(seed[0]) * 2048;
    let mut out = Vec::with_capacity(size + 32);
    let mut block = seed.to_vec();
    while out.len() < size {
        block = sha2::Sha256::digest(&block).to_vec();
        out.extend_from_slice(&block);
    }
    out.truncate(size);
    out
}

fn replace(v: &mut serde_json::Value, map: &BTreeMap<String, String>) -> usize {
    match v {
        serde_json::Value::String(s) => {
            let bare = s.rsplit(':').next().unwrap_or(s).to_ascii_lowercase();
            match map.get(&bare) {
                Some(new) => {
                    *s = new.clone();
                    1
                }
                None => 0,
            }
        }
        serde_json::Value::Object(m) => m.values_mut().map(|x| replace(x, map)).sum(),
        serde_json::Value::Array(a) => a.iter_mut().map(|x| replace(x, map)).sum(),
        _ => 0,
    }
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.len() < 3 {
        eprintln!("usage: files_fixture KUBESPRAY OUT VARS [ARCH…]");
        std::process::exit(2);
    }
    let (dir, out, vars_out) = (
        Path::new(&args[0]),
        Path::new(&args[1]),
        Path::new(&args[2]),
    );
    let archs: Vec<Arch> = if args.len() > 3 {
        args[3..]
            .iter()
            .map(|a| Arch::parse(a).expect("arch"))
            .collect()
    } else {
        vec![Arch::Amd64, Arch::Arm64]
    };
    // original digest (bare hex) -> the stand-in's, in kubespray's `algorithm:hex` form
    let mut repin: BTreeMap<String, String> = BTreeMap::new();
    let mut files = 0;
    for arch in archs {
        let k = Kubespray::load(dir, arch, &[]).unwrap_or_else(|e| panic!("{e}"));
        for item in k.checksums().unwrap_or_else(|e| panic!("{e}")) {
            let Some(pin) = item.pin else { continue };
            let data = content(&item.url);
            let path = out.join(
                bundle_path_of_url(&item.url)
                    .expect("url")
                    .trim_start_matches("files/"),
            );
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(&path, &data).unwrap();
            let new = match pin.algorithm.as_str() {
                "sha512" => format!("sha512:{}", hex::encode(sha2::Sha512::digest(&data))),
                _ => format!("sha256:{}", hex::encode(sha2::Sha256::digest(&data))),
            };
            repin.insert(pin.hex.clone(), new);
            files += 1;
        }
    }
    let (vars, _) = VarSet::load_kubespray(dir).unwrap_or_else(|e| panic!("{e}"));
    let mut overrides: IndexMap<String, serde_json::Value> = IndexMap::new();
    let mut replaced = 0;
    for name in vars
        .names()
        .filter(|n| n.ends_with("_checksums"))
        .map(str::to_string)
        .collect::<Vec<_>>()
    {
        let raw = &vars.get(&name).unwrap().value;
        let mut json = serde_json::to_value(raw).expect("checksum dictionaries are plain data");
        let n = replace(&mut json, &repin);
        if n > 0 {
            replaced += n;
            overrides.insert(name, json);
        }
    }
    std::fs::write(vars_out, serde_json::to_string_pretty(&overrides).unwrap()).unwrap();
    eprintln!(
        "files_fixture: {files} files under {}, {replaced} pins replaced in {}",
        out.display(),
        vars_out.display()
    );
}
