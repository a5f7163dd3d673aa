//! A small typed LLB builder: a build graph as immutable values, marshalled once into a
//! [`Definition`] with deterministic bytes and digests.
//!
//! ```text
//! let tools = llb::image("docker.io/library/debian:bookworm", platform);
//! let out = Exec::new(tools, ["/bin/sh", "-c", "echo hi > /out/x"])
//!     .mount_scratch("/out")
//!     .run();
//! let def = llb::marshal(&out.mount("/out"))?;
//! ```
//!
//! Every op is encoded with prost (maps are ordered, so equal graphs give equal bytes), its
//! digest is the sha256 of those bytes, inputs refer to digests, and the definition ends with a
//! terminal op whose only input is the result — as BuildKit's own `client/llb` does.

use std::collections::BTreeMap;
use std::sync::Arc;

use bollard_buildkit_proto::pb;
use prost::Message;
use sha2::{Digest as _, Sha256};

pub use kpbuild_oci::platform::Platform;

/// An op's platform as LLB encodes it.
pub fn pb_platform(p: &Platform) -> pb::Platform {
    pb::Platform {
        architecture: p.architecture.clone(),
        os: p.os.clone(),
        variant: p.variant.clone().unwrap_or_default(),
        ..Default::default()
    }
}

/// What the user sees in the progress output, and the caps an op needs.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
struct Meta {
    name: Option<String>,
    caps: Vec<&'static str>,
}

#[derive(Debug)]
enum OpKind {
    Source {
        identifier: String,
        attrs: BTreeMap<String, String>,
    },
    Exec(ExecSpec),
    File {
        actions: Vec<FileActionSpec>,
        has_base: bool,
    },
    Merge,
    /// Ops of a definition made elsewhere (a nested solve's result), embedded as they are.
    Foreign {
        ops: Vec<Vec<u8>>,
        metadata: BTreeMap<String, pb::OpMetadata>,
        digest: String,
    },
}

#[derive(Debug)]
struct Node {
    kind: OpKind,
    inputs: Vec<State>,
    platform: Option<Platform>,
    meta: Meta,
}

/// One output of an op: a filesystem state. `None` inside means scratch (empty).
#[derive(Clone, Debug)]
pub struct State {
    node: Arc<Node>,
    index: i64,
}

impl State {
    /// Names the op producing this state in the progress output (`llb.customname`).
    pub fn named(self, name: impl Into<String>) -> State {
        self.with_meta(|m| m.name = Some(name.into()))
    }

    /// Never takes this op from the cache.
    fn with_meta(self, f: impl FnOnce(&mut Meta)) -> State {
        let node = &*self.node;
        let mut meta = node.meta.clone();
        f(&mut meta);
        let rebuilt = Node {
            kind: clone_kind(&node.kind),
            inputs: node.inputs.clone(),
            platform: node.platform.clone(),
            meta,
        };
        State {
            node: Arc::new(rebuilt),
            index: self.index,
        }
    }
}

fn clone_kind(k: &OpKind) -> OpKind {
    match k {
        OpKind::Source { identifier, attrs } => OpKind::Source {
            identifier: identifier.clone(),
            attrs: attrs.clone(),
        },
        OpKind::Exec(e) => OpKind::Exec(e.clone()),
        OpKind::File { actions, has_base } => OpKind::File {
            actions: actions.clone(),
            has_base: *has_base,
        },
        OpKind::Merge => OpKind::Merge,
        OpKind::Foreign {
            ops,
            metadata,
            digest,
        } => OpKind::Foreign {
            ops: ops.clone(),
            metadata: metadata.clone(),
            digest: digest.clone(),
        },
    }
}

/// A source op given as exact bytes (to share a vertex with an op another frontend made: the
/// digest is the bytes').
pub fn raw_op(bytes: Vec<u8>) -> State {
    State {
        node: Arc::new(Node {
            kind: OpKind::Foreign {
                digest: digest_of(&bytes),
                ops: vec![bytes],
                metadata: BTreeMap::new(),
            },
            inputs: vec![],
            platform: None,
            meta: Meta::default(),
        }),
        index: 0,
    }
}

/// An HTTP source encoded exactly as BuildKit's Go client (`client/llb`) encodes it: fields in
/// tag order, no platform (HTTP sources are not platform-specific) and empty worker
/// constraints. Equal bytes mean an equal digest, so this op is the very vertex another frontend
/// (the Dockerfile frontend reading a one-shot uploaded context) already solved in the build.
pub fn http_go_encoded(url: &str, filename: &str) -> State {
    let mut attrs = BTreeMap::new();
    attrs.insert("http.filename".to_string(), filename.to_string());
    let head = pb::Op {
        op: Some(pb::op::Op::Source(pb::SourceOp {
            identifier: url.to_string(),
            attrs,
        })),
        ..Default::default()
    };
    let tail = pb::Op {
        constraints: Some(pb::WorkerConstraints::default()),
        ..Default::default()
    };
    let mut bytes = head.encode_to_vec();
    bytes.extend(tail.encode_to_vec());
    raw_op(bytes)
}

/// The result of a definition solved elsewhere (e.g. by BuildKit's Dockerfile frontend), as a
/// state of this graph: its ops are embedded verbatim, so digests and cache keys are unchanged.
pub fn from_definition(def: &pb::Definition) -> Option<State> {
    let (terminal, ops) = def.def.split_last()?;
    let terminal = pb::Op::decode(terminal.as_slice()).ok()?;
    let input = terminal.inputs.first()?.clone();
    Some(State {
        node: Arc::new(Node {
            kind: OpKind::Foreign {
                ops: ops.to_vec(),
                metadata: def.metadata.clone(),
                digest: input.digest,
            },
            inputs: vec![],
            platform: None,
            meta: Meta::default(),
        }),
        index: input.index,
    })
}

fn source(
    identifier: String,
    attrs: BTreeMap<String, String>,
    platform: Option<Platform>,
    caps: Vec<&'static str>,
) -> State {
    State {
        node: Arc::new(Node {
            kind: OpKind::Source { identifier, attrs },
            inputs: vec![],
            platform,
            meta: Meta { name: None, caps },
        }),
        index: 0,
    }
}

/// A container image's root filesystem.
pub fn image(reference: &str, platform: &Platform) -> State {
    source(
        format!("docker-image://{reference}"),
        BTreeMap::new(),
        Some(platform.clone()),
        vec!["source.image"],
    )
}

/// A local source sent by the client session (`context`, `dockerfile`).
pub fn local(name: &str, attrs: BTreeMap<String, String>) -> State {
    source(format!("local://{name}"), attrs, None, vec!["source.local"])
}

/// An HTTP(S) download, optionally pinned: BuildKit fails the build when the bytes do not match.
pub fn http(url: &str, sha256_hex: Option<&str>, filename: Option<&str>) -> State {
    let mut attrs = BTreeMap::new();
    let mut caps = vec!["source.http"];
    if let Some(h) = sha256_hex {
        attrs.insert("http.checksum".into(), format!("sha256:{h}"));
        caps.push("source.http.checksum");
    }
    if let Some(f) = filename {
        attrs.insert("http.filename".into(), f.into());
    }
    source(url.to_string(), attrs, None, caps)
}

/// Merges states (`MergeOp`, BuildKit ≥ 0.10 with the `mergeop` cap): later ones win.
pub fn merge(states: Vec<State>) -> State {
    State {
        node: Arc::new(Node {
            kind: OpKind::Merge,
            inputs: states,
            platform: None,
            meta: Meta {
                name: None,
                caps: vec!["mergeop"],
            },
        }),
        index: 0,
    }
}

/// Network mode of an exec op.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Network {
    /// The builder's default (sandboxed, with internet access).
    Default,
    /// The host's network: reaches loopback services; needs `--network host` / `network.host`.
    Host,
    None,
}

#[derive(Clone, Debug)]
enum MountSource {
    Input(usize),
    Scratch,
    Tmpfs,
    /// A BuildKit cache mount: a directory kept by the builder across builds under `id`,
    /// shared by concurrent ops (not an input: its content is not part of any cache key).
    Cache {
        id: String,
    },
    /// A BuildKit secret (`docker build --secret id=ID,src=FILE`), as a read-only file.
    Secret {
        id: String,
        optional: bool,
    },
}

#[derive(Clone, Debug)]
struct MountSpec {
    dest: String,
    source: MountSource,
    selector: String,
    readonly: bool,
    /// Whether the mount's final content is an output of the op.
    output: bool,
}

#[derive(Clone, Debug)]
struct ExecSpec {
    args: Vec<String>,
    env: Vec<String>,
    cwd: String,
    user: String,
    network: Network,
    /// Empty: BuildKit's default (`buildkitsandbox`).
    hostname: String,
    mounts: Vec<MountSpec>,
    valid_exit_codes: Vec<i32>,
}

/// An exec op under construction.
#[derive(Clone, Debug)]
pub struct Exec {
    spec: ExecSpec,
    inputs: Vec<State>,
    platform: Option<Platform>,
    name: Option<String>,
    root_output: bool,
}

impl Exec {
    /// Runs `args` with `root` as `/` (read-write, its result an output).
    pub fn new<I, S>(root: State, args: I) -> Exec
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        Exec {
            spec: ExecSpec {
                args: args.into_iter().map(Into::into).collect(),
                env: vec![
                    "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".into(),
                ],
                cwd: "/".into(),
                user: String::new(),
                network: Network::Default,
                hostname: String::new(),
                mounts: vec![MountSpec {
                    dest: "/".into(),
                    source: MountSource::Input(0),
                    selector: String::new(),
                    readonly: false,
                    output: true,
                }],
                valid_exit_codes: vec![],
            },
            inputs: vec![root],
            platform: None,
            name: None,
            root_output: true,
        }
    }

    /// Makes the root filesystem read-only and not an output (the op only produces its mounts).
    pub fn readonly_root(mut self) -> Exec {
        self.spec.mounts[0].readonly = true;
        self.spec.mounts[0].output = false;
        self.root_output = false;
        self
    }

    pub fn env(mut self, key: &str, value: &str) -> Exec {
        self.spec
            .env
            .retain(|e| e.split_once('=').map(|(k, _)| k) != Some(key));
        self.spec.env.push(format!("{key}={value}"));
        self
    }

    pub fn network(mut self, network: Network) -> Exec {
        self.spec.network = network;
        self
    }

    /// The container's hostname (BuildKit ≥ 0.8; no cap names it). With one other than
    /// BuildKit's default, BuildKit writes the op a hosts file of its own.
    pub fn hostname(mut self, hostname: &str) -> Exec {
        self.spec.hostname = hostname.into();
        self
    }

    pub fn platform(mut self, platform: &Platform) -> Exec {
        self.platform = Some(platform.clone());
        self
    }

    pub fn named(mut self, name: impl Into<String>) -> Exec {
        self.name = Some(name.into());
        self
    }

    /// Mounts `state` (or a subdirectory of it, `selector`) at `dest`, read-only.
    pub fn mount_readonly(mut self, dest: &str, state: State, selector: &str) -> Exec {
        self.inputs.push(state);
        self.spec.mounts.push(MountSpec {
            dest: dest.into(),
            source: MountSource::Input(self.inputs.len() - 1),
            selector: selector.into(),
            readonly: true,
            output: false,
        });
        self
    }

    /// An empty writable mount at `dest`; what the command leaves there is an output.
    pub fn mount_scratch(mut self, dest: &str) -> Exec {
        self.spec.mounts.push(MountSpec {
            dest: dest.into(),
            source: MountSource::Scratch,
            selector: String::new(),
            readonly: false,
            output: true,
        });
        self
    }

    /// A tmpfs at `dest` (not an output).
    pub fn mount_tmpfs(mut self, dest: &str) -> Exec {
        self.spec.mounts.push(MountSpec {
            dest: dest.into(),
            source: MountSource::Tmpfs,
            selector: String::new(),
            readonly: false,
            output: false,
        });
        self
    }

    /// The builder's cache directory `id` at `dest`, read-write, shared with concurrent ops
    /// (not an output; its content is in no cache key, so an op must produce the same result
    /// whatever it holds).
    pub fn mount_cache(mut self, dest: &str, id: &str) -> Exec {
        self.spec.mounts.push(MountSpec {
            dest: dest.into(),
            source: MountSource::Cache { id: id.into() },
            selector: String::new(),
            readonly: false,
            output: false,
        });
        self
    }

    /// The build's secret `id` as a file at `dest` (mode 0400, not an output). Only the id is
    /// in the definition and the cache key; the content stays in the client's session.
    pub fn mount_secret(mut self, dest: &str, id: &str, optional: bool) -> Exec {
        self.spec.mounts.push(MountSpec {
            dest: dest.into(),
            source: MountSource::Secret {
                id: id.into(),
                optional,
            },
            selector: String::new(),
            readonly: true,
            output: false,
        });
        self
    }

    /// Finishes the op.
    pub fn run(self) -> ExecResult {
        let mut outputs = BTreeMap::new();
        let mut next = 0i64;
        for m in &self.spec.mounts {
            if m.output {
                outputs.insert(m.dest.clone(), next);
                next += 1;
            }
        }
        let caps = {
            let mut c = vec!["exec.meta.base"];
            if self.spec.network != Network::Default {
                c.push("exec.meta.network");
            }
            if self.spec.mounts.iter().any(|m| !m.selector.is_empty()) {
                c.push("exec.mount.selector");
            }
            if self
                .spec
                .mounts
                .iter()
                .any(|m| matches!(m.source, MountSource::Tmpfs))
            {
                c.push("exec.mount.tmpfs");
            }
            if self
                .spec
                .mounts
                .iter()
                .any(|m| matches!(m.source, MountSource::Secret { .. }))
            {
                c.push("exec.mount.secret");
            }
            if self
                .spec
                .mounts
                .iter()
                .any(|m| matches!(m.source, MountSource::Cache { .. }))
            {
                c.push("exec.mount.cache");
                c.push("exec.mount.cache.sharing");
            }
            c
        };
        let node = Arc::new(Node {
            kind: OpKind::Exec(self.spec),
            inputs: self.inputs,
            platform: self.platform,
            meta: Meta {
                name: self.name,
                caps,
            },
        });
        ExecResult { node, outputs }
    }
}

/// The outputs of an exec op.
#[derive(Clone, Debug)]
pub struct ExecResult {
    node: Arc<Node>,
    outputs: BTreeMap<String, i64>,
}

impl ExecResult {
    /// The root filesystem after the command.
    pub fn root(&self) -> State {
        self.mount("/")
    }

    /// The content of the writable mount at `dest` after the command.
    ///
    /// # Panics
    /// When `dest` is not a writable mount of the op (a programming error).
    pub fn mount(&self, dest: &str) -> State {
        let index = *self
            .outputs
            .get(dest)
            .unwrap_or_else(|| panic!("exec op has no output mount at {dest}"));
        State {
            node: self.node.clone(),
            index,
        }
    }
}

#[derive(Clone, Debug)]
enum FileActionSpec {
    Mkdir {
        path: String,
        mode: i32,
        parents: bool,
        timestamp: i64,
    },
    Mkfile {
        path: String,
        mode: i32,
        data: Vec<u8>,
        timestamp: i64,
    },
    Copy {
        src_input: usize,
        src: String,
        dest: String,
        opts: CopyOptions,
    },
}

/// Options of a copy action.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CopyOptions {
    /// Copy a directory's contents rather than the directory itself.
    pub contents_only: bool,
    /// Create the destination's parent directories.
    pub create_parents: bool,
    pub allow_wildcard: bool,
    /// Unix mode for the copied files, or -1 to keep.
    pub mode: Option<i32>,
    /// Fixed modification time (ns since the epoch), for reproducible trees.
    pub timestamp: Option<i64>,
    /// Unpack a tar archive source instead of copying it (Docker's `ADD` behaviour).
    pub unpack: bool,
}

/// A file op under construction: actions applied in order on top of `base` (or scratch).
#[derive(Clone, Debug)]
pub struct FileOp {
    base: Option<State>,
    sources: Vec<State>,
    actions: Vec<FileActionSpec>,
    name: Option<String>,
}

impl FileOp {
    /// Starts from `base`, or from an empty filesystem.
    pub fn on(base: Option<State>) -> FileOp {
        FileOp {
            base,
            sources: vec![],
            actions: vec![],
            name: None,
        }
    }

    pub fn named(mut self, name: impl Into<String>) -> FileOp {
        self.name = Some(name.into());
        self
    }

    pub fn mkdir(mut self, path: &str, mode: i32, parents: bool) -> FileOp {
        self.actions.push(FileActionSpec::Mkdir {
            path: path.into(),
            mode,
            parents,
            timestamp: -1,
        });
        self
    }

    pub fn mkfile(mut self, path: &str, mode: i32, data: impl Into<Vec<u8>>) -> FileOp {
        self.actions.push(FileActionSpec::Mkfile {
            path: path.into(),
            mode,
            data: data.into(),
            timestamp: -1,
        });
        self
    }

    /// Copies `src` from `from` to `dest` of the state being built.
    pub fn copy(mut self, from: &State, src: &str, dest: &str, opts: CopyOptions) -> FileOp {
        let src_input = match self.sources.iter().position(|s| same_state(s, from)) {
            Some(i) => i,
            None => {
                self.sources.push(from.clone());
                self.sources.len() - 1
            }
        };
        self.actions.push(FileActionSpec::Copy {
            src_input,
            src: src.into(),
            dest: dest.into(),
            opts,
        });
        self
    }

    pub fn is_empty(&self) -> bool {
        self.actions.is_empty()
    }

    /// Finishes the op; its result is the state after the last action.
    pub fn result(self) -> State {
        let mut inputs = Vec::new();
        if let Some(b) = &self.base {
            inputs.push(b.clone());
        }
        inputs.extend(self.sources.iter().cloned());
        let node = Node {
            kind: OpKind::File {
                actions: self.actions,
                has_base: self.base.is_some(),
            },
            inputs,
            platform: None,
            meta: Meta {
                name: self.name,
                caps: vec!["file.base"],
            },
        };
        State {
            node: Arc::new(node),
            index: 0,
        }
    }
}

fn same_state(a: &State, b: &State) -> bool {
    Arc::ptr_eq(&a.node, &b.node) && a.index == b.index
}

/// Errors marshalling a graph.
#[derive(Debug, thiserror::Error)]
pub enum MarshalError {
    #[error("a file op has no actions")]
    EmptyFileOp,
}

/// A marshalled graph: the `Definition` to solve, and the digest of its result op.
#[derive(Clone, Debug)]
pub struct Marshalled {
    pub definition: pb::Definition,
    /// `sha256:…` of the op producing the result.
    pub result_digest: String,
}

struct Marshaller {
    /// Digest → encoded op, in dependency order.
    ops: Vec<(String, Vec<u8>)>,
    seen: BTreeMap<String, ()>,
    metadata: BTreeMap<String, pb::OpMetadata>,
    memo: Vec<(Arc<Node>, String)>,
}

/// Marshals the graph that produces `result`.
pub fn marshal(result: &State) -> Result<Marshalled, MarshalError> {
    let mut m = Marshaller {
        ops: vec![],
        seen: BTreeMap::new(),
        metadata: BTreeMap::new(),
        memo: vec![],
    };
    let digest = m.node(&result.node)?;
    let bytes = terminal(&digest, result.index);
    let mut def: Vec<Vec<u8>> = m.ops.into_iter().map(|(_, b)| b).collect();
    def.push(bytes);
    Ok(Marshalled {
        definition: pb::Definition {
            def,
            metadata: m.metadata,
            source: None,
        },
        result_digest: digest,
    })
}

/// A definition's last entry: no op of its own, one input naming the result (output `index`
/// of the op `digest`).
pub fn terminal(digest: &str, index: i64) -> Vec<u8> {
    pb::Op {
        inputs: vec![pb::Input {
            digest: digest.to_string(),
            index,
        }],
        ..Default::default()
    }
    .encode_to_vec()
}

/// Marks every op of `def` that computes from other ops (exec, file, merge, diff) to be run
/// again rather than taken from BuildKit's cache (`docker build --no-cache`); sources are
/// resolved as usual (BuildKit reports them cached when it holds them).
pub fn ignore_cache(def: &mut pb::Definition) {
    for bytes in &def.def {
        let Ok(op) = pb::Op::decode(bytes.as_slice()) else {
            continue;
        };
        if matches!(
            op.op,
            Some(
                pb::op::Op::Exec(_)
                    | pb::op::Op::File(_)
                    | pb::op::Op::Merge(_)
                    | pb::op::Op::Diff(_)
            )
        ) {
            def.metadata
                .entry(digest_of(bytes))
                .or_default()
                .ignore_cache = true;
        }
    }
}

/// `sha256:<hex>` of bytes.
pub fn digest_of(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(bytes)))
}

impl Marshaller {
    fn node(&mut self, node: &Arc<Node>) -> Result<String, MarshalError> {
        if let Some((_, d)) = self.memo.iter().find(|(n, _)| Arc::ptr_eq(n, node)) {
            return Ok(d.clone());
        }
        if let OpKind::Foreign {
            ops,
            metadata,
            digest,
        } = &node.kind
        {
            for bytes in ops {
                let d = digest_of(bytes);
                if self.seen.insert(d.clone(), ()).is_none() {
                    self.ops.push((d, bytes.clone()));
                }
            }
            for bytes in ops {
                let d = digest_of(bytes);
                let m = metadata.get(&d).cloned().unwrap_or_default();
                self.metadata.entry(d).or_insert(m);
            }
            self.memo.push((node.clone(), digest.clone()));
            return Ok(digest.clone());
        }
        let mut inputs = Vec::with_capacity(node.inputs.len());
        for s in &node.inputs {
            let d = self.node(&s.node)?;
            inputs.push(pb::Input {
                digest: d,
                index: s.index,
            });
        }
        let op = match &node.kind {
            OpKind::Source { identifier, attrs } => pb::op::Op::Source(pb::SourceOp {
                identifier: identifier.clone(),
                attrs: attrs.clone(),
            }),
            OpKind::Exec(e) => pb::op::Op::Exec(exec_op(e)),
            OpKind::File { actions, has_base } => {
                if actions.is_empty() {
                    return Err(MarshalError::EmptyFileOp);
                }
                pb::op::Op::File(file_op(actions, *has_base, node.inputs.len()))
            }
            OpKind::Foreign { .. } => unreachable!("handled above"),
            OpKind::Merge => pb::op::Op::Merge(pb::MergeOp {
                inputs: (0..inputs.len() as i64)
                    .map(|input| pb::MergeInput { input })
                    .collect(),
            }),
        };
        let op = pb::Op {
            inputs,
            platform: node.platform.as_ref().map(pb_platform),
            constraints: None,
            op: Some(op),
        };
        let bytes = op.encode_to_vec();
        let digest = digest_of(&bytes);
        if self.seen.insert(digest.clone(), ()).is_none() {
            self.ops.push((digest.clone(), bytes));
        }
        // Every op gets metadata, even empty: Go's llb.NewDefinitionOp (a definition handed to
        // another frontend as an input) refuses ops without.
        let meta = &node.meta;
        let mut description = BTreeMap::new();
        if let Some(n) = &meta.name {
            description.insert("llb.customname".to_string(), n.clone());
        }
        self.metadata.insert(
            digest.clone(),
            pb::OpMetadata {
                description,
                caps: meta.caps.iter().map(|c| (c.to_string(), true)).collect(),
                ..Default::default()
            },
        );
        self.memo.push((node.clone(), digest.clone()));
        Ok(digest)
    }
}

fn exec_op(e: &ExecSpec) -> pb::ExecOp {
    let mut output = 0i64;
    let mounts = e
        .mounts
        .iter()
        .map(|m| {
            let out = if m.output {
                output += 1;
                output - 1
            } else {
                -1
            };
            let (input, mount_type, cache_opt) = match &m.source {
                MountSource::Input(i) => (*i as i64, pb::MountType::Bind as i32, None),
                MountSource::Scratch => (-1, pb::MountType::Bind as i32, None),
                MountSource::Tmpfs => (-1, pb::MountType::Tmpfs as i32, None),
                MountSource::Cache { id } => (
                    -1,
                    pb::MountType::Cache as i32,
                    Some(pb::CacheOpt {
                        id: id.clone(),
                        sharing: pb::CacheSharingOpt::Shared as i32,
                    }),
                ),
                MountSource::Secret { .. } => (-1, pb::MountType::Secret as i32, None),
            };
            let secret_opt = match &m.source {
                MountSource::Secret { id, optional } => Some(pb::SecretOpt {
                    id: id.clone(),
                    uid: 0,
                    gid: 0,
                    mode: 0o400,
                    optional: *optional,
                }),
                _ => None,
            };
            pb::Mount {
                input,
                selector: m.selector.clone(),
                dest: m.dest.clone(),
                output: out,
                readonly: m.readonly,
                mount_type,
                cache_opt,
                secret_opt,
                ..Default::default()
            }
        })
        .collect();
    pb::ExecOp {
        meta: Some(pb::Meta {
            args: e.args.clone(),
            env: e.env.clone(),
            cwd: e.cwd.clone(),
            user: e.user.clone(),
            hostname: e.hostname.clone(),
            valid_exit_codes: e.valid_exit_codes.clone(),
            ..Default::default()
        }),
        mounts,
        network: match e.network {
            Network::Default => pb::NetMode::Unset,
            Network::Host => pb::NetMode::Host,
            Network::None => pb::NetMode::None,
        } as i32,
        security: pb::SecurityMode::Sandbox as i32,
        ..Default::default()
    }
}

/// Lowers actions to `FileAction`s. Inputs are `[base?, sources…]`; an action's `input` is the
/// previous action's output (`inputs.len() + i - 1`) or, for the first, the base (or -1).
fn file_op(actions: &[FileActionSpec], has_base: bool, n_inputs: usize) -> pb::FileOp {
    let source_offset = if has_base { 1 } else { 0 };
    let actions = actions
        .iter()
        .enumerate()
        .map(|(i, a)| {
            let input = if i == 0 {
                if has_base { 0 } else { -1 }
            } else {
                (n_inputs + i - 1) as i64
            };
            let output = if i == actions.len() - 1 { 0 } else { -1 };
            let (secondary_input, action) = match a {
                FileActionSpec::Mkdir {
                    path,
                    mode,
                    parents,
                    timestamp,
                } => (
                    -1,
                    pb::file_action::Action::Mkdir(pb::FileActionMkDir {
                        path: path.clone(),
                        mode: *mode,
                        make_parents: *parents,
                        owner: None,
                        timestamp: *timestamp,
                    }),
                ),
                FileActionSpec::Mkfile {
                    path,
                    mode,
                    data,
                    timestamp,
                } => (
                    -1,
                    pb::file_action::Action::Mkfile(pb::FileActionMkFile {
                        path: path.clone(),
                        mode: *mode,
                        data: data.clone(),
                        owner: None,
                        timestamp: *timestamp,
                    }),
                ),
                FileActionSpec::Copy {
                    src_input,
                    src,
                    dest,
                    opts,
                } => (
                    (*src_input + source_offset) as i64,
                    pb::file_action::Action::Copy(pb::FileActionCopy {
                        src: src.clone(),
                        dest: dest.clone(),
                        owner: None,
                        mode: opts.mode.unwrap_or(-1),
                        follow_symlink: false,
                        dir_copy_contents: opts.contents_only,
                        attempt_unpack_docker_compatibility: opts.unpack,
                        create_dest_path: opts.create_parents,
                        allow_wildcard: opts.allow_wildcard,
                        allow_empty_wildcard: false,
                        timestamp: opts.timestamp.unwrap_or(-1),
                        ..Default::default()
                    }),
                ),
            };
            pb::FileAction {
                input,
                secondary_input,
                output,
                action: Some(action),
            }
        })
        .collect();
    pb::FileOp { actions }
}

/// Decodes a definition's ops (for tests and debugging).
pub fn decode(def: &pb::Definition) -> Vec<(String, pb::Op)> {
    def.def
        .iter()
        .map(|b| {
            (
                digest_of(b),
                pb::Op::decode(b.as_slice()).expect("our own bytes decode"),
            )
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn amd64() -> Platform {
        Platform::linux(kpbuild_oci::platform::Arch::Amd64)
    }

    #[test]
    fn equal_graphs_give_equal_bytes() {
        let build = || {
            let a = http("https://x.io/a", Some(&"a".repeat(64)), Some("a"));
            let b = http("https://x.io/b", None, None);
            FileOp::on(None)
                .copy(
                    &a,
                    "/a",
                    "/files/x.io/a",
                    CopyOptions {
                        create_parents: true,
                        ..Default::default()
                    },
                )
                .copy(
                    &b,
                    "/b",
                    "/files/x.io/b",
                    CopyOptions {
                        create_parents: true,
                        ..Default::default()
                    },
                )
                .named("files")
                .result()
        };
        let m1 = marshal(&build()).unwrap();
        let m2 = marshal(&build()).unwrap();
        assert_eq!(m1.definition.def, m2.definition.def);
        assert_eq!(m1.result_digest, m2.result_digest);
        // two sources, the file op, the terminal op
        assert_eq!(m1.definition.def.len(), 4);
    }

    #[test]
    fn terminal_op_is_last_and_points_at_the_result() {
        let out = Exec::new(
            image("docker.io/library/busybox:latest", &amd64()),
            ["/bin/true"],
        )
        .run()
        .root();
        let m = marshal(&out).unwrap();
        let ops = decode(&m.definition);
        let (_, last) = ops.last().unwrap();
        assert!(last.op.is_none());
        assert_eq!(
            last.inputs,
            vec![pb::Input {
                digest: m.result_digest.clone(),
                index: 0
            }]
        );
        let (d, first) = &ops[0];
        assert!(
            matches!(first.op, Some(pb::op::Op::Source(ref s)) if s.identifier == "docker-image://docker.io/library/busybox:latest")
        );
        assert_eq!(first.platform.as_ref().unwrap().architecture, "amd64");
        assert_eq!(ops[1].1.inputs[0].digest, *d);
    }

    #[test]
    fn secret_mounts_carry_the_id_only() {
        let out = Exec::new(image("kpbuild/frontend:dev", &amd64()), ["/kpbuild"])
            .readonly_root()
            .mount_secret("/run/auth/config.json", "registry-auth", false)
            .mount_scratch("/out")
            .run()
            .mount("/out");
        let m = marshal(&out).unwrap();
        let exec = decode(&m.definition)
            .into_iter()
            .find_map(|(_, op)| match op.op {
                Some(pb::op::Op::Exec(e)) => Some(e),
                _ => None,
            })
            .unwrap();
        let secret = exec
            .mounts
            .iter()
            .find(|m| m.dest == "/run/auth/config.json")
            .unwrap();
        assert_eq!(secret.mount_type, pb::MountType::Secret as i32);
        assert_eq!(secret.output, -1, "a secret is never an output");
        let opt = secret.secret_opt.as_ref().unwrap();
        assert_eq!(
            (opt.id.as_str(), opt.mode, opt.optional),
            ("registry-auth", 0o400, false)
        );
        let scratch = exec.mounts.iter().find(|m| m.dest == "/out").unwrap();
        assert_eq!(
            scratch.output, 0,
            "the scratch mount stays the first output"
        );
    }

    #[test]
    fn exec_outputs_and_mounts() {
        let tool = image("kpbuild/frontend:dev", &amd64());
        let data = local("context", BTreeMap::new());
        let r = Exec::new(tool, ["/kpbuild", "worker"])
            .readonly_root()
            .mount_readonly("/in", data, "sub/dir")
            .mount_scratch("/out")
            .network(Network::Host)
            .named("sync images")
            .run();
        let m = marshal(&r.mount("/out")).unwrap();
        let ops = decode(&m.definition);
        let exec = ops
            .iter()
            .find_map(|(_, op)| {
                if let Some(pb::op::Op::Exec(e)) = &op.op {
                    Some(e.clone())
                } else {
                    None
                }
            })
            .unwrap();
        assert_eq!(exec.network, pb::NetMode::Host as i32);
        let out = exec.mounts.iter().find(|m| m.dest == "/out").unwrap();
        assert_eq!((out.input, out.output, out.readonly), (-1, 0, false));
        let root = &exec.mounts[0];
        assert_eq!((root.input, root.output, root.readonly), (0, -1, true));
        let input = exec.mounts.iter().find(|m| m.dest == "/in").unwrap();
        assert_eq!(
            (input.input, input.selector.as_str(), input.readonly),
            (1, "sub/dir", true)
        );
        let meta = &m.definition.metadata[&m.result_digest];
        assert_eq!(meta.description["llb.customname"], "sync images");
        assert!(meta.caps.contains_key("exec.meta.network"));
        let terminal = &ops.last().unwrap().1;
        assert_eq!(
            terminal.inputs[0].index, 0,
            "the /out mount is the exec op's first output"
        );
    }

    #[test]
    fn file_op_chains_actions_over_base_and_sources() {
        let base = image("x", &amd64());
        let a = http("https://x.io/a", None, None);
        let out = FileOp::on(Some(base))
            .mkdir("/d", 0o755, true)
            .copy(&a, "/a", "/d/a", CopyOptions::default())
            .mkfile("/d/b", 0o644, "hi")
            .result();
        let m = marshal(&out).unwrap();
        let ops = decode(&m.definition);
        let file = ops
            .iter()
            .find_map(|(_, op)| {
                if let Some(pb::op::Op::File(f)) = &op.op {
                    Some((op.inputs.len(), f.clone()))
                } else {
                    None
                }
            })
            .unwrap();
        let (n_inputs, f) = file;
        assert_eq!(n_inputs, 2);
        let io: Vec<(i64, i64, i64)> = f
            .actions
            .iter()
            .map(|a| (a.input, a.secondary_input, a.output))
            .collect();
        // mkdir on base(0); copy from source(1) onto action 0's output (2); mkfile on action 1 (3).
        assert_eq!(io, vec![(0, -1, -1), (2, 1, -1), (3, -1, 0)]);
    }

    #[test]
    fn file_op_without_base_starts_from_scratch() {
        let a = http("https://x.io/a", None, None);
        let out = FileOp::on(None)
            .copy(&a, "/a", "/a", CopyOptions::default())
            .result();
        let m = marshal(&out).unwrap();
        let ops = decode(&m.definition);
        let f = ops
            .iter()
            .find_map(|(_, op)| {
                if let Some(pb::op::Op::File(f)) = &op.op {
                    Some(f.clone())
                } else {
                    None
                }
            })
            .unwrap();
        assert_eq!(
            (
                f.actions[0].input,
                f.actions[0].secondary_input,
                f.actions[0].output
            ),
            (-1, 0, 0)
        );
        assert_eq!(ops.last().unwrap().1.inputs[0].index, 0);
    }

    #[test]
    fn foreign_definitions_embed_verbatim() {
        let inner = Exec::new(image("x", &amd64()), ["/bin/true"]).run().root();
        let m = marshal(&inner).unwrap();
        let state = from_definition(&m.definition).unwrap();
        let outer = FileOp::on(None)
            .copy(&state, "/etc", "/etc", CopyOptions::default())
            .result();
        let m2 = marshal(&outer).unwrap();
        // the inner ops (not its terminal) come first, unchanged
        let n = m.definition.def.len() - 1;
        assert_eq!(&m2.definition.def[..n], &m.definition.def[..n]);
        let ops = decode(&m2.definition);
        let file = ops
            .iter()
            .find(|(_, o)| matches!(o.op, Some(pb::op::Op::File(_))))
            .unwrap();
        assert_eq!(file.1.inputs[0].digest, m.result_digest);
    }

    #[test]
    fn http_source_is_encoded_as_go_encodes_it() {
        // BuildKit's client/llb: Op{source(3){identifier(1), attrs(2){key(1), value(2)}},
        // constraints(11){}} — no platform for an HTTP source.
        let m = marshal(&http_go_encoded("http://c", "context")).unwrap();
        let mut want = vec![0x1a, 0x24, 0x0a, 0x08];
        want.extend(b"http://c");
        want.extend([0x12, 0x18, 0x0a, 0x0d]);
        want.extend(b"http.filename");
        want.extend([0x12, 0x07]);
        want.extend(b"context");
        want.extend([0x5a, 0x00]);
        assert_eq!(m.definition.def[0], want);
        assert!(
            m.definition.metadata.contains_key(&digest_of(&want)),
            "every op has metadata"
        );
    }

    #[test]
    fn shared_inputs_are_marshalled_once() {
        let a = http("https://x.io/a", None, None);
        let one = FileOp::on(None)
            .copy(&a, "/a", "/1", CopyOptions::default())
            .result();
        let two = FileOp::on(Some(one))
            .copy(&a, "/a", "/2", CopyOptions::default())
            .result();
        let m = marshal(&two).unwrap();
        let sources = decode(&m.definition)
            .iter()
            .filter(|(_, op)| matches!(op.op, Some(pb::op::Op::Source(_))))
            .count();
        assert_eq!(sources, 1);
    }

    #[test]
    fn no_cache_marks_every_computing_op_but_not_sources() {
        let a = http("https://x.io/a", Some(&"a".repeat(64)), Some("a"));
        let b = FileOp::on(None).mkfile("/b", 0o644, b"b".to_vec()).result();
        let mut def = marshal(&merge(vec![a, b])).unwrap().definition;
        ignore_cache(&mut def);
        let mut kinds: Vec<(&str, bool)> = decode(&def)
            .into_iter()
            .filter_map(|(d, op)| {
                let kind = match op.op? {
                    pb::op::Op::Source(_) => "source",
                    pb::op::Op::File(_) => "file",
                    pb::op::Op::Merge(_) => "merge",
                    _ => "other",
                };
                Some((kind, def.metadata.get(&d).is_some_and(|m| m.ignore_cache)))
            })
            .collect();
        kinds.sort();
        assert_eq!(
            kinds,
            [("file", true), ("merge", true), ("source", false)],
            "{kinds:?}"
        );
    }
}
