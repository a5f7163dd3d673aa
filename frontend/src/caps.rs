//! What the frontend asks of the BuildKit it runs on, decided by the capabilities BuildKit's
//! `Ping` reports, never by its version: the optional features used where the daemon has them
//! ([`Features`]: MergeOp, v0.8's flightcontrol), the capabilities no build can do without
//! ([`decide`] refuses a daemon lacking any, naming its version and what is missing), and the
//! check of each definition against the daemon's LLB caps before it is solved
//! ([`missing_llb_caps`]).

use std::collections::BTreeSet;

use bollard_buildkit_proto::pb;

use crate::bridge::BuildInfo;

/// Gateway API caps every build uses: reading the spec and the context's files and
/// directories, resolving image tags to digests, returning one result per platform.
pub const REQUIRED_GATEWAY_CAPS: &[&str] = &["readfile", "readdir", "resolveimage", "returnmap"];

/// LLB caps every build uses: the local sources of the session, the frontend image as the root
/// of the worker ops, file ops, exec ops with bind mounts and a network mode, per-op platforms
/// and vertex names.
pub const REQUIRED_LLB_CAPS: &[&str] = &[
    "source.local",
    "source.image",
    "file.base",
    "exec.meta.base",
    "exec.meta.network",
    "exec.mount.bind",
    "platform",
    "meta.description",
];

/// Optional features, each used where the daemon reports its cap.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Features {
    /// `MergeOp` (cap `mergeop`, BuildKit ≥ 0.10): module trees merged without copying;
    /// otherwise a file op copies them in order (the BuildKit v0.8 path).
    pub merge_op: bool,
    /// BuildKit older than v0.9 (no [`SINCE_V09_LLB_CAP`]), whose flightcontrol gives up on a
    /// shared key after ~4 s of retries ("flightcontrol: exceeded retry timeout",
    /// moby/buildkit#1822) when many short exec ops start at once: exec ops get their own
    /// hostname ([`crate::lower::OWN_HOSTNAME`]) and are computed a few at once
    /// ([`crate::pace`]).
    pub old_flightcontrol: bool,
}

/// An LLB cap every BuildKit from v0.9 on reports and v0.8 does not
/// (`file.copy.includeexcludepatterns`). v0.9 is also the release whose flightcontrol gives a
/// finished result to a late caller instead of a retry (moby/buildkit commit 3eec428).
pub const SINCE_V09_LLB_CAP: &str = "file.copy.includeexcludepatterns";

/// A BuildKit that cannot run this frontend at all, or a definition it cannot solve.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "{daemon} lacks what kpbuild needs: {}; kpbuild runs on BuildKit v0.8 (Docker Engine 20.10) \
     or newer: upgrade the daemon or build with another builder",
    missing.join(", ")
)]
pub struct CapsError {
    /// `BuildKit v0.32.2`, or what is known of the daemon.
    pub daemon: String,
    /// `gateway cap readfile`, `LLB cap file.base`, …
    pub missing: Vec<String>,
}

/// The daemon as the user knows it: its version when it reports one.
pub fn daemon_name(info: &BuildInfo) -> String {
    match &info.buildkit_version {
        Some(v) => format!("BuildKit {v}"),
        None => "this BuildKit (its version is not reported; v0.8, in Docker 20.10, does not say)"
            .to_string(),
    }
}

/// The features to use on this daemon, or why it cannot run kpbuild.
pub fn decide(info: &BuildInfo) -> Result<Features, CapsError> {
    let missing: Vec<String> = REQUIRED_GATEWAY_CAPS
        .iter()
        .filter(|c| !info.api_caps.contains(**c))
        .map(|c| format!("gateway cap {c}"))
        .chain(
            REQUIRED_LLB_CAPS
                .iter()
                .filter(|c| !info.llb_caps.contains(**c))
                .map(|c| format!("LLB cap {c}")),
        )
        .collect();
    if !missing.is_empty() {
        return Err(CapsError {
            daemon: daemon_name(info),
            missing,
        });
    }
    Ok(Features {
        merge_op: info.llb_caps.contains("mergeop"),
        old_flightcontrol: !info.llb_caps.contains(SINCE_V09_LLB_CAP),
    })
}

/// The LLB caps a definition's ops declare that the daemon lacks (sorted, each once).
pub fn missing_llb_caps(def: &pb::Definition, llb_caps: &BTreeSet<String>) -> Vec<String> {
    def.metadata
        .values()
        .flat_map(|m| m.caps.iter().filter(|(_, on)| **on).map(|(c, _)| c))
        .filter(|c| !llb_caps.contains(*c))
        .cloned()
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect()
}

#[cfg(test)]
pub mod tests {
    use super::*;
    use crate::llb;

    /// What Docker Engine 20.10's BuildKit (v0.8) reports to a frontend's `Ping`, as read on
    /// this machine (`--build-arg KPBUILD_DEBUG=caps`).
    pub const V08_LLB_CAPS: &str = "constraints exec.cgroup exec.meta.base exec.meta.network \
        exec.meta.proxyenv exec.meta.security exec.meta.security.devices.v1 \
        exec.meta.setsdefaultpath exec.mount.bind exec.mount.bind.readwrite-nooutput \
        exec.mount.cache exec.mount.cache.sharing exec.mount.secret exec.mount.selector \
        exec.mount.ssh exec.mount.tmpfs file.base file.rm.wildcard meta.description \
        meta.exportcache meta.ignorecache platform soruce.http.uidgid source.buildop.llbfilename \
        source.git source.git.fullurl source.git.httpauth source.git.keepgitdir \
        source.git.knownsshhosts source.git.mountsshsock source.http source.http.checksum \
        source.http.perm source.image source.image.resolvemode source.local \
        source.local.excludepatterns source.local.followpaths source.local.includepatterns \
        source.local.sessionid source.local.sharedkeyhint source.local.unique";
    pub const V08_GATEWAY_CAPS: &str = "frontend.caps frontend.inputs gateway.exec \
        gateway.solve.evaluate gateway.solve.metadata importcaches proto.refarray readdir \
        readfile reference.output resolveimage resolveimage.resolvemode return returnmap \
        solve.base solve.inlinereturn statfile";

    /// A BuildKit v0.8 (Docker 20.10) as the frontend sees it.
    pub fn v08_info() -> BuildInfo {
        let set = |s: &str| s.split_whitespace().map(String::from).collect();
        BuildInfo {
            api_caps: set(V08_GATEWAY_CAPS),
            llb_caps: set(V08_LLB_CAPS),
            ..Default::default()
        }
    }

    #[test]
    fn mergeop_where_the_daemon_has_it() {
        let mut info = v08_info();
        assert!(!decide(&info).unwrap().merge_op);
        info.llb_caps.insert("mergeop".into());
        info.llb_caps.insert("diffop".into());
        assert!(decide(&info).unwrap().merge_op);
    }

    #[test]
    fn the_flightcontrol_workarounds_only_before_v09() {
        let mut info = v08_info();
        assert!(decide(&info).unwrap().old_flightcontrol);
        info.llb_caps.insert(SINCE_V09_LLB_CAP.into());
        assert!(!decide(&info).unwrap().old_flightcontrol);
    }

    #[test]
    fn a_daemon_lacking_a_required_cap_is_refused_by_version_and_cap() {
        let mut info = v08_info();
        info.api_caps.remove("readdir");
        info.llb_caps.remove("file.base");
        info.buildkit_version = Some("v0.7.3".into());
        let e = decide(&info).unwrap_err();
        assert_eq!(e.missing, ["gateway cap readdir", "LLB cap file.base"]);
        let msg = e.to_string();
        assert!(
            msg.starts_with(
                "BuildKit v0.7.3 lacks what kpbuild needs: gateway cap readdir, LLB cap file.base;"
            ),
            "{msg}"
        );
        info.buildkit_version = None;
        let msg = decide(&info).unwrap_err().to_string();
        assert!(msg.contains("its version is not reported"), "{msg}");
    }

    #[test]
    fn a_definition_names_the_caps_the_daemon_lacks() {
        let a = llb::FileOp::on(None).mkdir("/a", 0o755, false).result();
        let b = llb::http("https://example.invalid/x", Some(&"0".repeat(64)), None);
        let def = llb::marshal(&llb::merge(vec![a, b])).unwrap().definition;
        let info = v08_info();
        assert_eq!(missing_llb_caps(&def, &info.llb_caps), ["mergeop"]);
        let mut caps = info.llb_caps.clone();
        caps.insert("mergeop".into());
        assert!(missing_llb_caps(&def, &caps).is_empty());
    }
}
