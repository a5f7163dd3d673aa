//! The frontend's main flow: read `Dockerfile.bundle` and the inputs it names from the build
//! context, plan, resolve image tags to digests, lower to LLB, solve, return.
//!
//! Options (`docker build --target/--platform/--build-arg`, or `kpbuild build`):
//! - `filename`: the spec in the `dockerfile` local source (default `Dockerfile.bundle`);
//! - `target`: a module name, or `bundle` (default: every module merged into the bundle tree);
//! - `platform`: comma-separated platforms (default: the spec's);
//! - `build-arg:NAME=VALUE`: extra variables, like `kpbuild lists -e NAME=VALUE`;
//! - `build-arg:KPBUILD_REGISTRY_SECRET=ID`: registry credentials for the sync ops from the build
//!   secret ID, a Docker config file (`docker build --secret id=ID,src=~/.docker/config.json`).
//!   Tags are resolved by BuildKit itself, with the client's own credentials.

use std::collections::{BTreeMap, HashMap};

use kpbuild_modules::image_ref::{self, ImageRef, Mirror};
use kpbuild_modules::plan::{self, PlanOptions, Work, context_inputs};
use kpbuild_modules::source::MemSource;
use kpbuild_modules::spec::{Platform as SpecPlatform, SpecFile};

use crate::gateway::{BuildInfo, Gateway};
use crate::llb::{self, Platform};
use crate::lower::{self, LowerEnv};

/// Runs the frontend (the image's entrypoint) and exits the process: tokio's stdin reader
/// would otherwise keep it alive after `Return`.
/// The build argument naming the build secret with registry credentials.
pub const REGISTRY_SECRET_ARG: &str = "KPBUILD_REGISTRY_SECRET";

pub fn main_entry(tool_binary: &str) -> ! {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    let code = runtime.block_on(run(tool_binary));
    std::process::exit(code)
}

async fn run(tool_binary: &str) -> i32 {
    let info = BuildInfo::from_env();
    let mut gw = match Gateway::connect(info).await {
        Ok(g) => g,
        Err(e) => {
            eprintln!("kpbuild frontend: {e}");
            return 1;
        }
    };
    let outcome = build(&mut gw, tool_binary).await;
    let returned = match outcome {
        Ok(Output::Single(id)) => gw.return_ref(Some(id), HashMap::new()).await,
        Ok(Output::PerPlatform(refs)) => gw.return_refs(refs, HashMap::new()).await,
        Err(message) => gw.return_error(&message).await,
    };
    match returned {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("kpbuild frontend: {e}");
            1
        }
    }
}

enum Output {
    Single(String),
    PerPlatform(Vec<(String, String)>),
}

const DEFAULT_SPEC: &str = "Dockerfile.bundle";

async fn build(gw: &mut Gateway, tool_binary: &str) -> Result<Output, String> {
    let opts = gw.info.opts.clone();
    let session = gw.info.session_id.clone();
    let filename = opts
        .get("filename")
        .cloned()
        .unwrap_or_else(|| DEFAULT_SPEC.to_string());
    let filename = filename.rsplit('/').next().unwrap_or(&filename).to_string();

    // The spec, from the `dockerfile` local source.
    let dockerfile = llb::local(
        "dockerfile",
        local_attrs(&session, "dockerfile", std::slice::from_ref(&filename)),
    )
    .named(format!("load spec {filename}"));
    let def = llb::marshal(&dockerfile).map_err(|e| e.to_string())?;
    let spec_ref = gw
        .solve(def.definition)
        .await
        .map_err(|e| format!("reading {filename}: {}", e.message()))?;
    let text = gw
        .read_file(&spec_ref, &filename)
        .await
        .map_err(|e| format!("reading {filename}: {}", e.message()))?;
    let text = String::from_utf8(text).map_err(|_| format!("{filename} is not UTF-8 text"))?;
    let spec = SpecFile::parse(&text, &filename).map_err(|e| e.to_string())?;

    // The inputs the plan reads, from the build context.
    let ctx = read_context(gw, &session, &context_inputs(&spec.spec)).await?;

    let platforms = match opts.get("platform").filter(|p| !p.is_empty()) {
        Some(list) => list
            .split(',')
            .map(|p| {
                SpecPlatform::parse(p.trim()).ok_or_else(|| {
                    format!("--platform {p}: kpbuild builds linux/amd64, linux/arm64, …")
                })
            })
            .collect::<Result<Vec<_>, _>>()?,
        None => vec![],
    };
    let target = opts.get("target").filter(|t| !t.is_empty()).cloned();
    // `--build-arg KPBUILD_REGISTRY_SECRET=ID`: registry credentials come from the build
    // secret ID (`--secret id=ID,src=…/config.json`); not a variable.
    let registry_secret = opts
        .get(&format!("build-arg:{REGISTRY_SECRET_ARG}"))
        .filter(|v| !v.is_empty())
        .cloned();
    let extra_vars: Vec<String> = opts
        .iter()
        .filter(|(k, _)| k.as_str() != format!("build-arg:{REGISTRY_SECRET_ARG}"))
        .filter_map(|(k, v)| {
            k.strip_prefix("build-arg:")
                .map(|name| format!("{name}={v}"))
        })
        .collect();
    let plan_opts = PlanOptions {
        extra_vars,
        platforms,
        targets: target.iter().cloned().collect(),
    };
    let plan = plan::plan(&spec, &ctx, &plan_opts).map_err(|e| e.to_string())?;

    let worker = gw.info.worker_platform.clone().map(|(os, arch)| Platform {
        os,
        architecture: arch,
        variant: String::new(),
    });
    let worker = worker.unwrap_or_else(|| Platform::linux("amd64"));
    let tool_image = opts
        .get("source")
        .cloned()
        .ok_or("BuildKit did not pass the frontend image (`source` option); run through `# syntax=` or kpbuild build")?;
    let registry_mirrors: Vec<String> = spec
        .spec
        .registry_mirrors
        .iter()
        .map(|m| format!("{}={}", m.from, m.to))
        .collect();
    let mirrors: Vec<Mirror> = registry_mirrors
        .iter()
        .filter_map(|m| m.parse().ok())
        .collect();

    // Pin every image to the digest its tag has now: the sync op is cached until upstream moves.
    let mut digests = BTreeMap::new();
    for p in &plan.platforms {
        for m in &p.modules {
            if let Work::Images { images } = &m.work {
                for img in images {
                    if digests.contains_key(&img.source) {
                        continue;
                    }
                    let r = ImageRef::parse(&img.source).map_err(|e| e.to_string())?;
                    let digest = match &r.digest {
                        Some(d) => d.to_string(),
                        None => {
                            let at = image_ref::fetch_location(&r, &mirrors);
                            let tag = r.tag.clone().unwrap_or_else(|| "latest".into());
                            let pb_platform = Platform::linux(p.platform.arch.image_arch());
                            let (d, _) = gw
                                .resolve_image(
                                    &format!("{at}:{tag}"),
                                    &pb_platform.to_pb_platform(),
                                )
                                .await
                                .map_err(|e| {
                                    format!(
                                        "module `{}`: image {} (from {at}:{tag}) for {}: {}",
                                        m.name,
                                        img.source,
                                        p.platform,
                                        e.message()
                                    )
                                })?;
                            d
                        }
                    };
                    digests.insert(img.source.clone(), digest);
                }
            }
        }
    }

    let env = LowerEnv {
        tool_image,
        tool_binary: tool_binary.to_string(),
        worker_platform: worker,
        merge_op: gw.info.has_llb_cap("mergeop"),
        digests,
        registry_mirrors,
        registry_secret,
    };
    // BuildKit refuses host networking before any op runs, with a bare "network.host is not
    // allowed" that never reaches the frontend; say beforehand, as a vertex in the progress
    // output, why it is needed.
    let loopback: std::collections::BTreeSet<String> = plan
        .platforms
        .iter()
        .flat_map(|p| p.modules.iter())
        .filter_map(|m| {
            if let Work::Images { images } = &m.work {
                Some(images)
            } else {
                None
            }
        })
        .flatten()
        .filter_map(|i| {
            i.fetch
                .split('/')
                .next()
                .filter(|h| lower::is_loopback_registry(h))
                .map(str::to_string)
        })
        .collect();
    if !loopback.is_empty() {
        let hosts = loopback.into_iter().collect::<Vec<_>>().join(", ");
        let note = llb::FileOp::on(None)
            .mkfile("/note", 0o644, "host network")
            .named(format!(
                "note: images come from {hosts} on this machine: the sync ops use the host's network \
                 (docker build --network host, or kpbuild build)"
            ))
            .result();
        let def = llb::marshal(&note).map_err(|e| e.to_string())?;
        let id = gw.solve(def.definition).await.map_err(|e| e.message())?;
        // Solved refs are lazy: reading the file makes the vertex run and show.
        gw.read_file(&id, "/note").await.map_err(|e| e.message())?;
    }

    let mut results = Vec::new();
    for p in &plan.platforms {
        let modules = lower::lower_platform(p, &env).map_err(|e| e.to_string())?;
        let names: Vec<String> = modules.iter().map(|(n, _)| n.clone()).collect();
        let states: Vec<llb::State> = modules.into_iter().map(|(_, s)| s).collect();
        let state = if states.is_empty() {
            return Err(format!("nothing to build for {}", p.platform));
        } else {
            lower::merge_trees(
                states,
                &format!("bundle [{}]: {}", p.platform, names.join(" + ")),
                &env,
            )
        };
        let def = llb::marshal(&state).map_err(|e| e.to_string())?;
        let id = gw
            .solve(def.definition)
            .await
            .map_err(|e| explain_solve_error(&e.message()))?;
        results.push((p.platform.to_string(), id));
    }
    if results.len() == 1 {
        Ok(Output::Single(results.remove(0).1))
    } else {
        Ok(Output::PerPlatform(results))
    }
}

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

/// Go's `os.ModeDir` in fsutil's `Stat.mode`.
const MODE_DIR: u32 = 1 << 31;

/// Reads the named paths of the build context into memory.
async fn read_context(
    gw: &mut Gateway,
    session: &str,
    inputs: &[String],
) -> Result<MemSource, String> {
    let mut mem = MemSource::new("build context");
    if inputs.is_empty() {
        return Ok(mem);
    }
    let ctx = llb::local("context", local_attrs(session, "context", inputs))
        .named("load build context inputs");
    let def = llb::marshal(&ctx).map_err(|e| e.to_string())?;
    let id = gw
        .solve(def.definition)
        .await
        .map_err(|e| format!("reading the build context: {}", e.message()))?;
    let mut stack = vec![String::new()];
    let mut files = 0usize;
    while let Some(dir) = stack.pop() {
        let entries = gw
            .read_dir(&id, if dir.is_empty() { "/" } else { &dir })
            .await
            .map_err(|e| e.message())?;
        for e in entries {
            let name = e.path.rsplit('/').next().unwrap_or(&e.path).to_string();
            let path = if dir.is_empty() {
                name
            } else {
                format!("{dir}/{name}")
            };
            if e.mode & MODE_DIR != 0 {
                mem.insert_dir(&path);
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
    Ok(mem)
}

/// Turns BuildKit's terse refusals into what to do.
fn explain_solve_error(message: &str) -> String {
    if message.contains("network.host is not allowed") {
        return format!(
            "{message}\n  an image is fetched from a registry on this machine (127.0.0.1/localhost), which needs the \
             host's network: run `docker build --network host …` (or `kpbuild build`, which asks for it)"
        );
    }
    message.to_string()
}

impl Platform {
    fn to_pb_platform(&self) -> bollard_buildkit_proto::pb::Platform {
        bollard_buildkit_proto::pb::Platform {
            architecture: self.architecture.clone(),
            os: self.os.clone(),
            variant: self.variant.clone(),
            ..Default::default()
        }
    }
}
