//! Pacing a definition's exec ops on a BuildKit older than v0.9 (Docker 20.10's v0.8): the
//! same graph, run a few exec ops at a time.
//!
//! Why: v0.8's flightcontrol answers a caller that finds a call on its key just finished with
//! "retry" and gives up after about 4 s of retries ("flightcontrol: exceeded retry timeout",
//! moby/buildkit#1822; v0.9's commit 3eec428 hands such a caller the result). Every exec op
//! passes through keys that all exec ops share: the daemon's one key for resolv.conf and hosts
//! files (`executor failed running [...]: flightcontrol: ...`), and, before the executor, the
//! keys under which the op's mounts and inputs are prepared (the bare message, seen with
//! `--no-cache`). Sixty short exec ops at once (a files module) keep those keys busy with calls
//! that finish at once, and some give up; a plain Dockerfile of 60 parallel `RUN` steps fails
//! the same way (`hack/bench-v08-stress.sh plain`). The hostname of [`crate::lower::OWN_HOSTNAME`]
//! takes the hosts file out of the first key; pacing bounds how many ops meet on any of them.
//!
//! How: before a definition is solved, every exec op in it is evaluated by a Solve of its own
//! (the op and what it reads, [`exec_closures`]), at most [`WINDOW`] at once
//! ([`crate::bridge::Bridge::evaluate`]). The ops, and so their cache keys, are the
//! definition's own: per-op caching is untouched, and the solve of the whole definition finds
//! every op done. Builders with v0.9's fix get no pacing.

use std::collections::{BTreeMap, BTreeSet};

use bollard_buildkit_proto::pb;
use prost::Message;

use crate::llb::{digest_of, terminal};

/// Exec ops evaluated at once on a builder that needs pacing (`KPBUILD_EXEC_WINDOW` changes
/// it). Measured with `hack/bench-v08-stress.sh` on 2 cores (README, Reliability): no failure
/// at 4, 8 or 16; a files module's time falls with the window up to 8 (op starts are latency,
/// not CPU) and not beyond, so 8, with room to spare below where failures were seen.
pub const WINDOW: usize = 8;

/// One definition per exec op of `def`, in dependency order: the op, every op it reads from
/// (transitively), and a terminal naming the op's first output. Exec ops without outputs are
/// left to the final solve. Metadata (names, caps, ignore-cache) is kept for the ops taken.
pub fn exec_closures(def: &pb::Definition) -> Vec<pb::Definition> {
    // The definition's ops, in its order (inputs before the ops reading them); the last one is
    // the terminal, which has no op of its own.
    let ops: Vec<(String, &Vec<u8>, pb::Op)> = def
        .def
        .iter()
        .filter_map(|b| {
            pb::Op::decode(b.as_slice())
                .ok()
                .map(|op| (digest_of(b), b, op))
        })
        .collect();
    let inputs: BTreeMap<&str, Vec<&str>> = ops
        .iter()
        .map(|(d, _, op)| {
            let ins = op.inputs.iter().map(|i| i.digest.as_str()).collect();
            (d.as_str(), ins)
        })
        .collect();
    let inputs_of = |digest: &str| inputs.get(digest).cloned().unwrap_or_default();
    let mut out = Vec::new();
    for (digest, _, op) in &ops {
        let Some(pb::op::Op::Exec(exec)) = &op.op else {
            continue;
        };
        if !exec.mounts.iter().any(|m| m.output >= 0) {
            continue;
        }
        let mut closure = BTreeSet::from([digest.as_str()]);
        let mut todo = inputs_of(digest);
        while let Some(d) = todo.pop() {
            if closure.insert(d) {
                todo.extend(inputs_of(d));
            }
        }
        out.push(pb::Definition {
            def: ops
                .iter()
                .filter(|(d, _, _)| closure.contains(d.as_str()))
                .map(|(_, b, _)| (*b).clone())
                .chain(std::iter::once(terminal(digest, 0)))
                .collect(),
            metadata: def
                .metadata
                .iter()
                .filter(|(d, _)| closure.contains(d.as_str()))
                .map(|(d, m)| (d.clone(), m.clone()))
                .collect(),
            source: None,
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::llb::{self, Exec, FileOp, Platform, State};
    use kpbuild_oci::platform::Arch;

    fn tool() -> State {
        llb::image("kpbuild/frontend:dev", &Platform::linux(Arch::Amd64))
    }

    fn fetch(name: &str) -> State {
        Exec::new(tool(), ["/kpbuild", "worker", name])
            .readonly_root()
            .mount_scratch("/out")
            .named(format!("fetch {name}"))
            .run()
            .mount("/out")
    }

    /// The exec ops of a definition, by name.
    fn exec_names(def: &pb::Definition) -> Vec<String> {
        llb::decode(def)
            .into_iter()
            .filter(|(_, op)| matches!(op.op, Some(pb::op::Op::Exec(_))))
            .map(|(d, _)| def.metadata[&d].description["llb.customname"].clone())
            .collect()
    }

    #[test]
    fn one_definition_per_exec_op_with_what_it_reads_in_dependency_order() {
        let (a, b) = (fetch("a"), fetch("b"));
        let layout = FileOp::on(None)
            .copy(&a, "/a", "/a", Default::default())
            .copy(&b, "/b", "/b", Default::default())
            .result();
        // An exec op reading the layout (as the manifest op reads the module trees).
        let lock = Exec::new(tool(), ["/kpbuild", "worker", "lock"])
            .readonly_root()
            .mount_readonly("/in", layout, "")
            .mount_scratch("/out")
            .named("lock")
            .run()
            .mount("/out");
        let full = llb::marshal(&lock).unwrap().definition;
        let closures = exec_closures(&full);
        let names: Vec<Vec<String>> = closures.iter().map(exec_names).collect();
        assert_eq!(
            names,
            [
                vec!["fetch a"],
                vec!["fetch b"],
                vec!["fetch a", "fetch b", "lock"]
            ]
        );
        let full_ops: BTreeSet<String> = full.def.iter().map(|b| digest_of(b)).collect();
        for (c, name) in closures.iter().zip(["fetch a", "fetch b", "lock"]) {
            // The ops are the full definition's, byte for byte (the same cache keys), and the
            // terminal names the exec op.
            let (last, rest) = c.def.split_last().unwrap();
            assert!(rest.iter().all(|b| full_ops.contains(&digest_of(b))));
            let terminal = pb::Op::decode(last.as_slice()).unwrap();
            let target = &terminal.inputs[0].digest;
            assert_eq!(c.metadata[target].description["llb.customname"], name);
            // Every input of every op is in the definition.
            let have: BTreeSet<String> = rest.iter().map(|b| digest_of(b)).collect();
            for b in rest {
                for i in pb::Op::decode(b.as_slice()).unwrap().inputs {
                    assert!(have.contains(&i.digest), "{name}: {} missing", i.digest);
                }
            }
            assert!(c.metadata.keys().all(|d| have.contains(d)));
        }
    }

    #[test]
    fn no_exec_op_no_definition() {
        let only_files = FileOp::on(None).mkdir("/x", 0o755, true).result();
        assert!(exec_closures(&llb::marshal(&only_files).unwrap().definition).is_empty());
    }
}
