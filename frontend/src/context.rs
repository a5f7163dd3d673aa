//! Where the build context comes from (the client's file-sync session, an uploaded tar, or
//! states another frontend handed over), and reading the inputs planning needs from it.

use std::collections::{BTreeMap, HashMap};

use kpbuild_paths::source::MemSource;

use crate::bridge::Bridge;
use crate::llb;

fn local_attrs(session: &str, name: &str, include: &[String]) -> BTreeMap<String, String> {
    let mut attrs = BTreeMap::new();
    attrs.insert("local.session".into(), session.to_string());
    attrs.insert("local.sharedkeyhint".into(), name.to_string());
    if !include.is_empty() {
        attrs.insert(
            "local.includepattern".into(),
            serde_json::to_string(include).expect("json"),
        );
    }
    attrs
}

/// Where the build context comes from.
#[derive(Clone, Debug)]
pub enum ContextSource {
    /// `docker build` / buildx: the client's session syncs the `context` and `dockerfile`
    /// local sources.
    Local { session: String },
    /// A context uploaded as a tar through the Engine API (`kpbuild build`): the daemon passes
    /// a one-shot URL of it (`context=http://build-context-…`); the spec is inside.
    Tar { url: String },
    /// States handed over as frontend inputs (the Dockerfile frontend forwarding through
    /// `# syntax=` passes the context it already loaded: the one-shot URL is spent).
    Inputs {
        context: llb::State,
        dockerfile: llb::State,
    },
}

impl ContextSource {
    pub fn from_opts(
        opts: &BTreeMap<String, String>,
        session: &str,
        inputs: &HashMap<String, bollard_buildkit_proto::pb::Definition>,
    ) -> ContextSource {
        let state = |name: &str| inputs.get(name).and_then(llb::from_definition);
        if let Some(context) = state("context") {
            let dockerfile = state("dockerfile").unwrap_or_else(|| context.clone());
            return ContextSource::Inputs {
                context,
                dockerfile,
            };
        }
        match opts.get("context") {
            Some(url) if url.starts_with("http://") || url.starts_with("https://") => {
                ContextSource::Tar { url: url.clone() }
            }
            _ => ContextSource::Local {
                session: session.to_string(),
            },
        }
    }

    /// The uploaded tar, unpacked. The URL answers once, and the Dockerfile frontend that
    /// forwarded here through `# syntax=` has fetched it already: the source op is encoded
    /// byte for byte as it encodes it, so BuildKit shares that vertex instead of fetching again.
    fn unpacked(url: &str) -> llb::State {
        let tar = llb::http_go_encoded(url, "context");
        llb::FileOp::on(None)
            .copy(
                &tar,
                "/context",
                "/",
                llb::CopyOptions {
                    unpack: true,
                    allow_wildcard: true,
                    ..Default::default()
                },
            )
            .named("unpack build context")
            .result()
    }

    /// The state holding the spec, and the spec's path in it.
    pub fn spec_state(&self, filename: &str) -> (llb::State, String) {
        match self {
            ContextSource::Local { session } => {
                let name = filename.rsplit('/').next().unwrap_or(filename).to_string();
                let state = llb::local(
                    "dockerfile",
                    local_attrs(session, "dockerfile", std::slice::from_ref(&name)),
                )
                .named(format!("load spec {name}"));
                (state, name)
            }
            ContextSource::Tar { url } => (
                Self::unpacked(url),
                filename.trim_start_matches("./").to_string(),
            ),
            ContextSource::Inputs { dockerfile, .. } => (
                dockerfile.clone(),
                filename.trim_start_matches("./").to_string(),
            ),
        }
    }

    /// The build context restricted to `include` (paths or directories; all when empty).
    pub fn context_state(&self, include: &[String]) -> llb::State {
        match self {
            ContextSource::Local { session } => {
                llb::local("context", local_attrs(session, "context", include))
                    .named("load build context")
            }
            ContextSource::Tar { url } => Self::unpacked(url),
            ContextSource::Inputs { context, .. } => context.clone(),
        }
    }
}

/// Reads the named paths (files or directories, recursively) of the build context into memory.
pub async fn read_context<B: Bridge>(
    gw: &mut B,
    source: &ContextSource,
    inputs: &[String],
) -> Result<MemSource, String> {
    let mut mem = MemSource::new("build context");
    if inputs.is_empty() {
        return Ok(mem);
    }
    let ctx = source.context_state(inputs);
    let def = llb::marshal(&ctx).map_err(|e| e.to_string())?;
    let id = gw
        .solve(def.definition)
        .await
        .map_err(|e| format!("reading the build context: {}", e.message()))?;
    let mut files = 0usize;
    for input in inputs {
        let input = input
            .trim_start_matches("./")
            .trim_end_matches('/')
            .to_string();
        // A directory lists; a file does not (then it is read); a missing path is left for the
        // plan to report with its spec position.
        let mut stack = match gw.read_dir(&id, &input).await {
            Ok(_) => vec![input.clone()],
            Err(_) => {
                if let Ok(data) = gw.read_file(&id, &input).await {
                    mem.insert(&input, String::from_utf8_lossy(&data).into_owned());
                }
                continue;
            }
        };
        while let Some(dir) = stack.pop() {
            mem.insert_dir(&dir);
            let entries = gw.read_dir(&id, &dir).await.map_err(|e| e.message())?;
            for e in entries {
                let path = format!("{dir}/{}", e.name);
                if e.is_dir {
                    stack.push(path);
                } else {
                    files += 1;
                    if files > 10_000 {
                        return Err("the build context inputs hold more than 10000 files; point vars.kubespray at a kubespray checkout".into());
                    }
                    let data = gw
                        .read_file(&id, &path)
                        .await
                        .map_err(|e| format!("reading {path}: {}", e.message()))?;
                    mem.insert(&path, String::from_utf8_lossy(&data).into_owned());
                }
            }
        }
    }
    Ok(mem)
}
