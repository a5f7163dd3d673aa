//! The LLBBridge (gateway) client, spoken over the frontend process's stdin/stdout.
//!
//! BuildKit starts the frontend image's entrypoint with the gRPC stream on stdio, options in
//! `BUILDKIT_FRONTEND_OPT_<n>` variables and the session in `BUILDKIT_SESSION_ID`. Nothing
//! else may be written to stdout; stderr goes to the daemon's log.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;

use bollard_buildkit_proto::google::rpc::Status;
use bollard_buildkit_proto::moby::buildkit::v1::frontend as fe;
use bollard_buildkit_proto::pb;
use fe::llb_bridge_client::LlbBridgeClient;
use hyper_util::rt::TokioIo;
use tonic::transport::{Channel, Endpoint, Uri};

use crate::bridge::{Bridge, BuildInfo, DirEntry, GatewayError, RefId};
use crate::llb::{Platform, pb_platform};

impl GatewayError {
    fn call(call: &'static str, status: tonic::Status) -> Self {
        GatewayError::Call {
            call,
            message: status.message().to_string(),
        }
    }
}

impl BuildInfo {
    /// Reads the options BuildKit passes in the environment.
    pub fn from_env() -> BuildInfo {
        let mut opts = BTreeMap::new();
        for (k, v) in std::env::vars() {
            if k.starts_with("BUILDKIT_FRONTEND_OPT_")
                && let Some((key, value)) = v.split_once('=')
            {
                opts.insert(key.to_string(), value.to_string());
            }
        }
        let session_id = std::env::var("BUILDKIT_SESSION_ID").unwrap_or_default();
        let workers = std::env::var("BUILDKIT_WORKERS").ok();
        BuildInfo {
            opts,
            session_id,
            worker_platform: workers.as_deref().and_then(first_worker_platform),
            buildkit_version: workers.as_deref().and_then(first_worker_version),
            ..Default::default()
        }
    }
}

/// The first platform of the first worker in `BUILDKIT_WORKERS`.
fn first_worker_platform(json: &str) -> Option<Platform> {
    let v: serde_json::Value = serde_json::from_str(json).ok()?;
    let p = v.get(0)?.get("platforms")?.get(0)?;
    let field = |k: &str, upper: &str| {
        p.get(k)
            .or_else(|| p.get(upper))
            .and_then(|v| v.as_str())
            .map(str::to_string)
    };
    Some(Platform {
        os: field("os", "OS")?,
        architecture: field("architecture", "Architecture")?,
        variant: field("variant", "Variant").filter(|v| !v.is_empty()),
    })
}

/// The BuildKit version of the first worker in `BUILDKIT_WORKERS`, when it says.
fn first_worker_version(json: &str) -> Option<String> {
    let v: serde_json::Value = serde_json::from_str(json).ok()?;
    let version = v.get(0)?.get("buildkitVersion")?.get("version")?.as_str()?;
    (!version.is_empty()).then(|| version.to_string())
}

/// A connected gateway client.
pub struct Gateway {
    client: LlbBridgeClient<Channel>,
    pub info: BuildInfo,
}

impl Gateway {
    /// A Solve of `definition` returning its ref (an array of refs where BuildKit can);
    /// `evaluate`: computed before the call returns, not when the result is first used.
    fn solve_request(&self, definition: pb::Definition, evaluate: bool) -> fe::SolveRequest {
        fe::SolveRequest {
            definition: Some(definition),
            evaluate,
            allow_result_return: true,
            allow_result_array_ref: self.info.api_caps.contains("proto.refarray"),
            ..Default::default()
        }
    }

    /// Connects over stdio and pings for capabilities.
    pub async fn connect(mut info: BuildInfo) -> Result<Gateway, GatewayError> {
        let io = Mutex::new(Some(tokio::io::join(
            tokio::io::stdin(),
            tokio::io::stdout(),
        )));
        let channel = Endpoint::from_static("http://buildkit.invalid")
            .connect_with_connector(tower::service_fn(move |_: Uri| {
                let taken = io.lock().expect("stdio lock").take();
                async move {
                    taken.map(TokioIo::new).ok_or_else(|| {
                        std::io::Error::other("the stdio stream can be connected only once")
                    })
                }
            }))
            .await?;
        let mut client = LlbBridgeClient::new(channel).max_decoding_message_size(64 << 20);
        let pong = client
            .ping(fe::PingRequest {})
            .await
            .map_err(|s| GatewayError::call("Ping", s))?
            .into_inner();
        info.llb_caps = pong.llb_caps.iter().map(|c| c.id.clone()).collect();
        info.api_caps = pong
            .frontend_api_caps
            .iter()
            .map(|c| c.id.clone())
            .collect();
        if let Some(v) = pong
            .workers
            .iter()
            .filter_map(|w| w.buildkit_version.as_ref())
            .map(|v| v.version.clone())
            .find(|v| !v.is_empty())
        {
            info.buildkit_version = Some(v);
        }
        Ok(Gateway { client, info })
    }

    /// Returns a single ref (or none, for an empty result) with metadata.
    pub async fn return_ref(
        &mut self,
        ref_id: Option<String>,
        metadata: HashMap<String, Vec<u8>>,
    ) -> Result<(), GatewayError> {
        let result = fe::Result {
            metadata,
            result: Some(if self.info.api_caps.contains("proto.refarray") {
                fe::result::Result::Ref(fe::Ref {
                    id: ref_id.unwrap_or_default(),
                    def: None,
                })
            } else {
                fe::result::Result::RefDeprecated(ref_id.unwrap_or_default())
            }),
            ..Default::default()
        };
        self.do_return(fe::ReturnRequest {
            result: Some(result),
            error: None,
        })
        .await
    }

    /// Returns one ref per key (a platform's id, as in the `refs.platforms` entry of
    /// `metadata`: [`crate::run::per_platform_result`]), for multi-platform exporters.
    pub async fn return_refs(
        &mut self,
        refs: Vec<(String, String)>,
        metadata: HashMap<String, Vec<u8>>,
    ) -> Result<(), GatewayError> {
        let result = if self.info.api_caps.contains("proto.refarray") {
            fe::result::Result::Refs(fe::RefMap {
                refs: refs
                    .into_iter()
                    .map(|(id, ref_id)| {
                        (
                            id,
                            fe::Ref {
                                id: ref_id,
                                def: None,
                            },
                        )
                    })
                    .collect(),
            })
        } else {
            fe::result::Result::RefsDeprecated(fe::RefMapDeprecated {
                refs: refs.into_iter().collect(),
            })
        };
        let result = fe::Result {
            metadata,
            result: Some(result),
            ..Default::default()
        };
        self.do_return(fe::ReturnRequest {
            result: Some(result),
            error: None,
        })
        .await
    }

    /// Ends the build with an error the user will read.
    pub async fn return_error(&mut self, message: &str) -> Result<(), GatewayError> {
        let status = Status {
            code: 2,
            message: message.to_string(),
            details: vec![],
        };
        self.do_return(fe::ReturnRequest {
            result: None,
            error: Some(status),
        })
        .await
    }

    async fn do_return(&mut self, req: fe::ReturnRequest) -> Result<(), GatewayError> {
        self.client
            .r#return(req)
            .await
            .map_err(|s| GatewayError::call("Return", s))?;
        Ok(())
    }
}

/// Go's `os.ModeDir` in fsutil's `Stat.mode`.
const MODE_DIR: u32 = 1 << 31;

impl Bridge for Gateway {
    fn info(&self) -> &BuildInfo {
        &self.info
    }

    /// Solves a definition and returns the result's ref id.
    async fn solve(&mut self, definition: pb::Definition) -> Result<RefId, GatewayError> {
        let req = self.solve_request(definition, false);
        let resp = self
            .client
            .solve(req)
            .await
            .map_err(|s| GatewayError::call("Solve", s))?
            .into_inner();
        #[allow(deprecated)]
        let legacy = resp.r#ref.clone();
        let id = match resp.result.and_then(|r| r.result) {
            Some(fe::result::Result::Ref(r)) => r.id,
            Some(fe::result::Result::RefDeprecated(id)) => id,
            _ => legacy,
        };
        Ok(id)
    }

    async fn evaluate(
        &mut self,
        definitions: Vec<pb::Definition>,
        window: usize,
    ) -> Result<(), GatewayError> {
        use futures_util::{StreamExt, TryStreamExt};
        let requests: Vec<fe::SolveRequest> = definitions
            .into_iter()
            .map(|d| self.solve_request(d, true))
            .collect();
        let client = self.client.clone();
        futures_util::stream::iter(requests.into_iter().map(|req| {
            // One HTTP/2 connection carries the concurrent calls.
            let mut client = client.clone();
            async move {
                client
                    .solve(req)
                    .await
                    .map(|_| ())
                    .map_err(|s| GatewayError::call("Solve", s))
            }
        }))
        .buffer_unordered(window.max(1))
        .try_collect::<Vec<()>>()
        .await
        .map(|_| ())
    }

    /// Solves with another frontend (BuildKit's own `dockerfile.v0`): returns the result's
    /// definition (to use it as a state of our graph) and the result's metadata
    /// (`containerimage.config`, …).
    async fn solve_frontend(
        &mut self,
        frontend: &str,
        opts: HashMap<String, String>,
        inputs: HashMap<String, pb::Definition>,
    ) -> Result<(Option<pb::Definition>, HashMap<String, Vec<u8>>), GatewayError> {
        let req = fe::SolveRequest {
            frontend: frontend.to_string(),
            frontend_opt: opts,
            frontend_inputs: inputs,
            allow_result_return: true,
            allow_result_array_ref: self.info.api_caps.contains("proto.refarray"),
            ..Default::default()
        };
        let resp = self
            .client
            .solve(req)
            .await
            .map_err(|s| GatewayError::call("Solve", s))?
            .into_inner();
        let result = resp.result.unwrap_or_default();
        let def = match result.result {
            Some(fe::result::Result::Ref(r)) => r.def,
            _ => None,
        };
        Ok((def, result.metadata))
    }

    /// The inputs the caller handed to this frontend (`context`, `dockerfile`), as definitions:
    /// a Dockerfile frontend forwarding through `# syntax=` passes what it already loaded.
    async fn inputs(&mut self) -> Result<HashMap<String, pb::Definition>, GatewayError> {
        if !self.info.api_caps.contains("frontend.inputs") {
            return Ok(HashMap::new());
        }
        Ok(self
            .client
            .inputs(fe::InputsRequest {})
            .await
            .map_err(|s| GatewayError::call("Inputs", s))?
            .into_inner()
            .definitions)
    }

    /// Reads a whole file of a solved ref.
    async fn read_file(&mut self, ref_id: &RefId, path: &str) -> Result<Vec<u8>, GatewayError> {
        let req = fe::ReadFileRequest {
            r#ref: ref_id.to_string(),
            file_path: path.to_string(),
            ..Default::default()
        };
        Ok(self
            .client
            .read_file(req)
            .await
            .map_err(|s| GatewayError::call("ReadFile", s))?
            .into_inner()
            .data)
    }

    /// Lists a directory of a solved ref.
    async fn read_dir(
        &mut self,
        ref_id: &RefId,
        path: &str,
    ) -> Result<Vec<DirEntry>, GatewayError> {
        let req = fe::ReadDirRequest {
            r#ref: ref_id.to_string(),
            dir_path: path.to_string(),
            ..Default::default()
        };
        Ok(self
            .client
            .read_dir(req)
            .await
            .map_err(|s| GatewayError::call("ReadDir", s))?
            .into_inner()
            .entries
            .into_iter()
            .map(|e| DirEntry {
                name: e.path.rsplit('/').next().unwrap_or(&e.path).to_string(),
                is_dir: e.mode & MODE_DIR != 0,
            })
            .collect())
    }

    /// Resolves an image reference to its (root) manifest digest and the platform's config,
    /// always asking the registry: Docker's image store would answer for images it holds
    /// locally, without a digest.
    async fn resolve_image(
        &mut self,
        reference: &str,
        platform: &Platform,
    ) -> Result<(String, Vec<u8>), GatewayError> {
        let req = fe::ResolveImageConfigRequest {
            r#ref: reference.to_string(),
            platform: Some(pb_platform(platform)),
            resolve_mode: "pull".into(),
            log_name: format!("resolve {reference}"),
            session_id: self.info.session_id.clone(),
            ..Default::default()
        };
        let resp = self
            .client
            .resolve_image_config(req)
            .await
            .map_err(|s| GatewayError::call("ResolveImageConfig", s))?
            .into_inner();
        Ok((resp.digest, resp.config))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn worker_platform_from_env_json() {
        let json = r#"[{"id":"x","labels":{},"platforms":[{"architecture":"amd64","os":"linux"},{"architecture":"386","os":"linux"}]}]"#;
        assert_eq!(
            first_worker_platform(json)
                .map(|p| p.to_string())
                .as_deref(),
            Some("linux/amd64")
        );
        assert_eq!(first_worker_platform("nonsense"), None);
        assert_eq!(first_worker_version(json), None);
        let json = r#"[{"id":"x","platforms":[],"buildkitVersion":{"package":"github.com/moby/buildkit","version":"v0.32.2"}}]"#;
        assert_eq!(first_worker_version(json).as_deref(), Some("v0.32.2"));
    }
}
