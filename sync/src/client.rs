//! A thin registry client on `reqwest` (rustls): manifests as exact bytes, blobs as streams,
//! retries with backoff, jitter and `Retry-After`, and the authentication a registry asks for
//! (anonymous, basic, bearer token) with credentials from the Docker config file.
//!
//! Plain http is used for loopback registries and for hosts named `--insecure`, as Docker
//! does: https is tried first without certificate checks, then http.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use reqwest::header::{ACCEPT, CONTENT_TYPE, RETRY_AFTER, WWW_AUTHENTICATE};
use reqwest::{RequestBuilder, Response, StatusCode};
use tokio::sync::OnceCell;

use kpbuild_oci::image_ref::DOCKER_HUB;
use kpbuild_oci::media_type::MANIFEST_ACCEPT;
use kpbuild_oci::registry_layout::Digest;

use crate::auth::{self, Challenge, Credential};
use crate::error::HttpError;
use crate::retry::{RetryPolicy, parse_retry_after, retryable_error, retryable_status};

/// A retry about to happen, for progress output.
#[derive(Debug, Clone)]
pub struct RetryEvent {
    pub url: String,
    /// 1 for the first retry.
    pub attempt: u32,
    pub delay: Duration,
    pub reason: String,
}

/// Called before each retry sleep.
pub(crate) type RetryHook = Arc<dyn Fn(&RetryEvent) + Send + Sync>;

/// Client settings.
#[derive(Clone)]
pub struct ClientConfig {
    /// Registries (host[:port]) reached without TLS verification, or over plain http.
    pub insecure: Vec<String>,
    pub retry: RetryPolicy,
    /// Connections kept open per host; at least the number of concurrent transfers.
    pub pool_per_host: usize,
    /// How long a response may send nothing before the request is given up (and retried).
    pub read_timeout: Duration,
    pub on_retry: Option<RetryHook>,
}

impl Default for ClientConfig {
    fn default() -> Self {
        ClientConfig {
            insecure: Vec::new(),
            retry: RetryPolicy::default(),
            pool_per_host: 16,
            read_timeout: Duration::from_secs(120),
            on_retry: None,
        }
    }
}

/// A manifest as the registry sent it.
#[derive(Debug, Clone)]
pub(crate) struct ManifestResponse {
    pub bytes: Bytes,
    pub content_type: Option<String>,
    /// The `Docker-Content-Digest` header, when sent.
    pub digest_header: Option<String>,
    pub url: String,
}

#[derive(Clone)]
enum Authorization {
    Basic(String, String),
    Bearer(String),
}

impl Authorization {
    fn apply(&self, rb: RequestBuilder) -> RequestBuilder {
        match self {
            Authorization::Basic(u, p) => rb.basic_auth(u, Some(p)),
            Authorization::Bearer(t) => rb.bearer_auth(t),
        }
    }
}

/// What is known of one registry: where it answers and how it wants to be authenticated.
struct Endpoint {
    registry: String,
    base: String,
    http: reqwest::Client,
    challenge: Mutex<Option<Challenge>>,
    creds: OnceCell<Option<Credential>>,
    /// scope → bearer token
    tokens: tokio::sync::Mutex<HashMap<String, String>>,
}

/// The registry client. Cheap to share behind an `Arc`.
pub(crate) struct RegistryClient {
    secure: reqwest::Client,
    insecure: reqwest::Client,
    cfg: ClientConfig,
    endpoints: Mutex<HashMap<String, Arc<OnceCell<Arc<Endpoint>>>>>,
}

/// The host that serves a registry's API (`docker.io` is served by `registry-1.docker.io`).
pub(crate) fn api_host(registry: &str) -> &str {
    if registry == DOCKER_HUB {
        "registry-1.docker.io"
    } else {
        registry
    }
}

/// Whether a registry host is on the loopback interface (Docker treats those as insecure).
pub(crate) fn is_loopback(registry: &str) -> bool {
    let host = if let Some(rest) = registry.strip_prefix('[') {
        rest.split(']').next().unwrap_or("")
    } else {
        registry.split(':').next().unwrap_or("")
    };
    host == "localhost"
        || host == "::1"
        || host
            .parse::<std::net::Ipv4Addr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// An error and its causes on one line.
pub(crate) fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        let m = c.to_string();
        if !s.contains(&m) {
            s.push_str(": ");
            s.push_str(&m);
        }
        cur = c.source();
    }
    s
}

/// The `errors` of a registry's JSON error body, as `CODE: message`; else the body's start.
fn error_detail(body: &[u8]) -> String {
    #[derive(serde::Deserialize)]
    struct E {
        #[serde(default)]
        code: String,
        #[serde(default)]
        message: String,
    }
    #[derive(serde::Deserialize)]
    struct Body {
        errors: Vec<E>,
    }
    if let Ok(b) = serde_json::from_slice::<Body>(body) {
        return b
            .errors
            .iter()
            .map(|e| format!("{}: {}", e.code, e.message))
            .collect::<Vec<_>>()
            .join("; ");
    }
    let text = String::from_utf8_lossy(body);
    let text = text.trim();
    text.chars().take(200).collect()
}

impl RegistryClient {
    /// Builds a client. Installs rustls' ring provider if none is installed yet.
    pub fn new(cfg: ClientConfig) -> Result<RegistryClient, String> {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let build = |accept_invalid: bool| {
            reqwest::Client::builder()
                .user_agent(concat!("kpbuild/", env!("CARGO_PKG_VERSION")))
                .connect_timeout(Duration::from_secs(30))
                .read_timeout(cfg.read_timeout)
                .pool_max_idle_per_host(cfg.pool_per_host.max(1))
                .tls_danger_accept_invalid_certs(accept_invalid)
                .build()
                .map_err(|e| error_chain(&e))
        };
        Ok(RegistryClient {
            secure: build(false)?,
            insecure: build(true)?,
            cfg,
            endpoints: Mutex::new(HashMap::new()),
        })
    }

    /// The retry policy in force.
    pub(crate) fn retry_policy(&self) -> RetryPolicy {
        self.cfg.retry
    }

    /// Reports a retry to the hook, if any.
    pub(crate) fn report_retry(&self, ev: RetryEvent) {
        if let Some(h) = &self.cfg.on_retry {
            h(&ev);
        }
    }

    /// Sends a request built by `build`, again after a backoff on 5xx, 429, 408 and
    /// transport errors. A retryable status on the last attempt is returned as a response.
    async fn send_retrying(
        &self,
        url: &str,
        build: impl Fn() -> RequestBuilder,
    ) -> Result<Response, HttpError> {
        let policy = self.cfg.retry;
        let mut attempt = 0u32;
        loop {
            match build().send().await {
                Ok(resp) if retryable_status(resp.status()) && attempt < policy.retries => {
                    let ra = resp
                        .headers()
                        .get(RETRY_AFTER)
                        .and_then(|v| v.to_str().ok())
                        .and_then(|v| parse_retry_after(v, SystemTime::now()));
                    let delay = policy.delay(attempt, ra);
                    attempt += 1;
                    self.report_retry(RetryEvent {
                        url: url.to_string(),
                        attempt,
                        delay,
                        reason: format!("HTTP {}", resp.status()),
                    });
                    drop(resp);
                    tokio::time::sleep(delay).await;
                }
                Ok(resp) => return Ok(resp),
                Err(e) if retryable_error(&e) && attempt < policy.retries => {
                    let delay = policy.backoff(attempt);
                    attempt += 1;
                    self.report_retry(RetryEvent {
                        url: url.to_string(),
                        attempt,
                        delay,
                        reason: error_chain(&e),
                    });
                    tokio::time::sleep(delay).await;
                }
                Err(e) => {
                    return Err(HttpError::Transport {
                        url: url.to_string(),
                        attempts: attempt + 1,
                        message: error_chain(&e),
                    });
                }
            }
        }
    }

    async fn endpoint(&self, registry: &str) -> Result<Arc<Endpoint>, HttpError> {
        let cell = {
            let mut map = self.endpoints.lock().unwrap();
            map.entry(registry.to_string()).or_default().clone()
        };
        cell.get_or_try_init(|| self.probe(registry)).await.cloned()
    }

    /// Finds the scheme and the authentication scheme of a registry with `GET /v2/`.
    async fn probe(&self, registry: &str) -> Result<Arc<Endpoint>, HttpError> {
        let host = api_host(registry);
        let insecure = is_loopback(registry) || self.cfg.insecure.iter().any(|h| h == registry);
        let mut found: Option<(String, reqwest::Client, Response)> = None;
        if insecure {
            // https without verification first, once; then plain http.
            let base = format!("https://{host}");
            let probe = self
                .insecure
                .get(format!("{base}/v2/"))
                .timeout(Duration::from_secs(5))
                .send()
                .await;
            if let Ok(resp) = probe {
                found = Some((base, self.insecure.clone(), resp));
            }
        }
        let (base, http, resp) = match found {
            Some(f) => f,
            None => {
                let base = if insecure {
                    format!("http://{host}")
                } else {
                    format!("https://{host}")
                };
                let url = format!("{base}/v2/");
                let resp = self.send_retrying(&url, || self.secure.get(&url)).await?;
                (base, self.secure.clone(), resp)
            }
        };
        let challenge = if resp.status() == StatusCode::UNAUTHORIZED {
            resp.headers()
                .get(WWW_AUTHENTICATE)
                .and_then(|v| v.to_str().ok())
                .and_then(auth::parse_challenge)
        } else {
            None
        };
        Ok(Arc::new(Endpoint {
            registry: registry.to_string(),
            base,
            http,
            challenge: Mutex::new(challenge),
            creds: OnceCell::new(),
            tokens: tokio::sync::Mutex::new(HashMap::new()),
        }))
    }

    async fn credentials(&self, ep: &Endpoint) -> Result<Option<Credential>, HttpError> {
        let c = ep
            .creds
            .get_or_try_init(|| async { auth::credentials_for(&ep.registry) })
            .await?;
        Ok(c.clone())
    }

    fn no_credentials(ep: &Endpoint, url: &str) -> HttpError {
        HttpError::NoCredentials {
            url: url.to_string(),
            registry: ep.registry.clone(),
            config: auth::docker_config_path()
                .map(|p| p.display().to_string())
                .unwrap_or_else(|| "none: neither DOCKER_CONFIG nor HOME is set".into()),
        }
    }

    /// The authorization to send for `repo` on `ep`, getting a token when needed.
    async fn authorization(
        &self,
        ep: &Endpoint,
        repo: &str,
        url: &str,
        fresh: bool,
    ) -> Result<Option<Authorization>, HttpError> {
        let challenge = ep.challenge.lock().unwrap().clone();
        match challenge {
            None => Ok(None),
            Some(Challenge::Basic { .. }) => match self.credentials(ep).await? {
                Some(Credential::UserPassword { username, password }) => {
                    Ok(Some(Authorization::Basic(username, password)))
                }
                Some(Credential::IdentityToken(_)) => Err(HttpError::Denied {
                    url: url.to_string(),
                    registry: ep.registry.clone(),
                    status: 401,
                    detail: "the registry asks for basic auth but the Docker config has only an identity token".into(),
                }),
                None => Err(Self::no_credentials(ep, url)),
            },
            Some(Challenge::Bearer { realm, service, .. }) => {
                let scope = format!("repository:{repo}:pull");
                let mut tokens = ep.tokens.lock().await;
                if !fresh && let Some(t) = tokens.get(&scope) {
                    return Ok(Some(Authorization::Bearer(t.clone())));
                }
                let token = self
                    .fetch_token(ep, &realm, service.as_deref(), &scope)
                    .await?;
                tokens.insert(scope, token.clone());
                Ok(Some(Authorization::Bearer(token)))
            }
        }
    }

    /// The token dance: `GET realm?service=…&scope=…`, with basic credentials when known
    /// (anonymous otherwise); an identity token is exchanged with the OAuth2 form.
    async fn fetch_token(
        &self,
        ep: &Endpoint,
        realm: &str,
        service: Option<&str>,
        scope: &str,
    ) -> Result<String, HttpError> {
        let fail = |message: String| HttpError::Token {
            registry: ep.registry.clone(),
            realm: realm.to_string(),
            message,
        };
        let mut url = reqwest::Url::parse(realm).map_err(|e| fail(format!("bad realm: {e}")))?;
        let creds = self.credentials(ep).await?;
        let resp = match &creds {
            Some(Credential::IdentityToken(refresh)) => {
                let mut form = reqwest::Url::parse("http://x/").unwrap();
                {
                    let mut q = form.query_pairs_mut();
                    q.append_pair("grant_type", "refresh_token");
                    q.append_pair("refresh_token", refresh);
                    q.append_pair("client_id", "kpbuild");
                    q.append_pair("scope", scope);
                    if let Some(s) = service {
                        q.append_pair("service", s);
                    }
                }
                let body = form.query().unwrap_or("").to_string();
                let u = url.to_string();
                self.send_retrying(&u, || {
                    ep.http
                        .post(url.clone())
                        .header(CONTENT_TYPE, "application/x-www-form-urlencoded")
                        .body(body.clone())
                })
                .await?
            }
            other => {
                {
                    let mut q = url.query_pairs_mut();
                    if let Some(s) = service {
                        q.append_pair("service", s);
                    }
                    q.append_pair("scope", scope);
                }
                let u = url.to_string();
                self.send_retrying(&u, || {
                    let rb = ep.http.get(url.clone());
                    match other {
                        Some(Credential::UserPassword { username, password }) => {
                            rb.basic_auth(username, Some(password))
                        }
                        _ => rb,
                    }
                })
                .await?
            }
        };
        let status = resp.status();
        let body = resp.bytes().await.map_err(|e| fail(error_chain(&e)))?;
        if status == StatusCode::UNAUTHORIZED || status == StatusCode::FORBIDDEN {
            return Err(HttpError::Denied {
                url: realm.to_string(),
                registry: ep.registry.clone(),
                status: status.as_u16(),
                detail: error_detail(&body),
            });
        }
        if !status.is_success() {
            return Err(fail(format!("HTTP {status}: {}", error_detail(&body))));
        }
        #[derive(serde::Deserialize)]
        struct Tok {
            #[serde(default)]
            token: Option<String>,
            #[serde(default)]
            access_token: Option<String>,
        }
        let t: Tok = serde_json::from_slice(&body)
            .map_err(|e| fail(format!("token response is not JSON: {e}")))?;
        t.token
            .filter(|t| !t.is_empty())
            .or(t.access_token)
            .ok_or_else(|| fail("token response has no token".into()))
    }

    /// GET `path` (after `/v2/`) of `repo` on `registry`, authenticated, retried; a 401
    /// with a bearer challenge gets one fresh token and one more try. Non-2xx statuses
    /// become errors.
    async fn get(
        &self,
        registry: &str,
        repo: &str,
        path: &str,
        accept: Option<&str>,
    ) -> Result<(Response, String), HttpError> {
        let ep = self.endpoint(registry).await?;
        let url = format!("{}/v2/{repo}/{path}", ep.base);
        let mut fresh = false;
        loop {
            let authz = self.authorization(&ep, repo, &url, fresh).await?;
            let resp = self
                .send_retrying(&url, || {
                    let mut rb = ep.http.get(&url);
                    if let Some(a) = accept {
                        rb = rb.header(ACCEPT, a);
                    }
                    match &authz {
                        Some(a) => a.apply(rb),
                        None => rb,
                    }
                })
                .await?;
            let status = resp.status();
            if status.is_success() {
                return Ok((resp, url));
            }
            if status == StatusCode::UNAUTHORIZED && !fresh {
                // The challenge may be new (first contact was anonymous-ok, or the token
                // expired): take it and try once more.
                let ch = resp
                    .headers()
                    .get(WWW_AUTHENTICATE)
                    .and_then(|v| v.to_str().ok())
                    .and_then(auth::parse_challenge);
                if ch.is_some() {
                    *ep.challenge.lock().unwrap() = ch;
                    fresh = true;
                    continue;
                }
            }
            let body = resp.bytes().await.unwrap_or_default();
            let detail = error_detail(&body);
            return Err(match status {
                StatusCode::NOT_FOUND => HttpError::NotFound { url, detail },
                StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => {
                    let has_creds = matches!(self.credentials(&ep).await, Ok(Some(_)));
                    if has_creds {
                        HttpError::Denied {
                            url,
                            registry: ep.registry.clone(),
                            status: status.as_u16(),
                            detail,
                        }
                    } else {
                        Self::no_credentials(&ep, &url)
                    }
                }
                s => HttpError::Status {
                    url,
                    status: s.as_u16(),
                    detail,
                },
            });
        }
    }

    /// Fetches a manifest (`reference` is a tag or `sha256:…`) as its exact bytes.
    pub(crate) async fn get_manifest(
        &self,
        registry: &str,
        repo: &str,
        reference: &str,
    ) -> Result<ManifestResponse, HttpError> {
        let policy = self.cfg.retry;
        let mut attempt = 0;
        loop {
            let (resp, url) = self
                .get(
                    registry,
                    repo,
                    &format!("manifests/{reference}"),
                    Some(MANIFEST_ACCEPT),
                )
                .await?;
            let header = |n: &str| {
                resp.headers()
                    .get(n)
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_string)
            };
            let content_type = header(CONTENT_TYPE.as_str());
            let digest_header = header("docker-content-digest");
            match resp.bytes().await {
                Ok(bytes) => {
                    return Ok(ManifestResponse {
                        bytes,
                        content_type,
                        digest_header,
                        url,
                    });
                }
                Err(e) if attempt < policy.retries => {
                    let delay = policy.backoff(attempt);
                    attempt += 1;
                    self.report_retry(RetryEvent {
                        url,
                        attempt,
                        delay,
                        reason: error_chain(&e),
                    });
                    tokio::time::sleep(delay).await;
                }
                Err(e) => {
                    return Err(HttpError::Transport {
                        url,
                        attempts: attempt + 1,
                        message: error_chain(&e),
                    });
                }
            }
        }
    }

    /// Starts fetching a blob: a successful response whose body is to be streamed.
    pub(crate) async fn get_blob(
        &self,
        registry: &str,
        repo: &str,
        digest: &Digest,
    ) -> Result<(Response, String), HttpError> {
        self.get(registry, repo, &format!("blobs/{digest}"), None)
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_detection() {
        for h in [
            "127.0.0.1",
            "127.0.0.1:5000",
            "127.1.2.3:1",
            "localhost",
            "localhost:5000",
            "[::1]:5000",
        ] {
            assert!(is_loopback(h), "{h}");
        }
        for h in [
            "quay.io",
            "10.0.0.1:5000",
            "localhost.example.com",
            "[fe80::1]:5000",
            "128.0.0.1",
        ] {
            assert!(!is_loopback(h), "{h}");
        }
    }

    #[test]
    fn docker_hub_api_host() {
        assert_eq!(api_host("docker.io"), "registry-1.docker.io");
        assert_eq!(api_host("quay.io"), "quay.io");
    }

    #[test]
    fn registry_error_bodies() {
        let body =
            br#"{"errors":[{"code":"MANIFEST_UNKNOWN","message":"manifest unknown","detail":{}}]}"#;
        assert_eq!(error_detail(body), "MANIFEST_UNKNOWN: manifest unknown");
        assert_eq!(error_detail(b"  plain text\n"), "plain text");
        assert_eq!(error_detail(&[b'x'; 500]).len(), 200);
    }
}
