#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = kpbuild_fuzz::tree::registry_tree(data);
});
