//! Registry authentication: `WWW-Authenticate` challenges and credentials from the Docker
//! config file.

use std::collections::BTreeMap;
use std::path::PathBuf;

use docker_credential::{CredentialRetrievalError, DockerCredential};

/// A challenge a registry answered 401 with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Challenge {
    /// HTTP basic authentication.
    Basic { realm: String },
    /// The token dance: get a bearer token from `realm` for `service` and a scope.
    Bearer {
        realm: String,
        service: Option<String>,
        scope: Option<String>,
    },
}

/// Parses a `WWW-Authenticate` header value: `Bearer realm="…",service="…",scope="…"` or
/// `Basic realm="…"`. Returns `None` for other schemes or a malformed value.
pub(crate) fn parse_challenge(value: &str) -> Option<Challenge> {
    let value = value.trim();
    let (scheme, rest) = match value.find(char::is_whitespace) {
        Some(i) => (&value[..i], value[i..].trim_start()),
        None => (value, ""),
    };
    let params = parse_params(rest)?;
    let get = |k: &str| params.get(k).cloned();
    if scheme.eq_ignore_ascii_case("basic") {
        Some(Challenge::Basic {
            realm: get("realm").unwrap_or_default(),
        })
    } else if scheme.eq_ignore_ascii_case("bearer") {
        Some(Challenge::Bearer {
            realm: get("realm")?,
            service: get("service"),
            scope: get("scope"),
        })
    } else {
        None
    }
}

/// `k1="v1", k2=v2` → map with lower-case keys; quoted values may hold commas and `\"`.
fn parse_params(s: &str) -> Option<BTreeMap<String, String>> {
    let mut out = BTreeMap::new();
    let b = s.as_bytes();
    let mut i = 0;
    while i < b.len() {
        while i < b.len() && (b[i] == b',' || b[i].is_ascii_whitespace()) {
            i += 1;
        }
        if i >= b.len() {
            break;
        }
        let k0 = i;
        while i < b.len() && b[i] != b'=' && b[i] != b',' {
            i += 1;
        }
        if i >= b.len() || b[i] != b'=' {
            return None;
        }
        let key = s[k0..i].trim().to_ascii_lowercase();
        i += 1;
        let mut val = String::new();
        if i < b.len() && b[i] == b'"' {
            i += 1;
            loop {
                if i >= b.len() {
                    return None; // unterminated quote
                }
                match b[i] {
                    b'"' => {
                        i += 1;
                        break;
                    }
                    b'\\' if i + 1 < b.len() => {
                        val.push(b[i + 1] as char);
                        i += 2;
                    }
                    _ => {
                        // Values are ASCII in practice; keep any UTF-8 intact.
                        let ch = s[i..].chars().next()?;
                        val.push(ch);
                        i += ch.len_utf8();
                    }
                }
            }
        } else {
            let v0 = i;
            while i < b.len() && b[i] != b',' {
                i += 1;
            }
            val = s[v0..i].trim().to_string();
        }
        out.insert(key, val);
    }
    Some(out)
}

/// Credentials for one registry.
#[derive(Clone, PartialEq, Eq)]
pub(crate) enum Credential {
    /// Username and password (basic auth, or for the token endpoint).
    UserPassword { username: String, password: String },
    /// An identity (refresh) token, as `docker login` stores for some registries.
    IdentityToken(String),
}

impl std::fmt::Debug for Credential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Credential::UserPassword { username, .. } => {
                write!(f, "UserPassword({username:?}, <redacted>)")
            }
            Credential::IdentityToken(_) => write!(f, "IdentityToken(<redacted>)"),
        }
    }
}

/// The Docker config file consulted: `$DOCKER_CONFIG/config.json`, else
/// `~/.docker/config.json`.
pub(crate) fn docker_config_path() -> Option<PathBuf> {
    if let Some(d) = std::env::var_os("DOCKER_CONFIG") {
        return Some(PathBuf::from(d).join("config.json"));
    }
    std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".docker/config.json"))
}

/// The key `docker login` stores a registry's credentials under.
pub(crate) fn docker_config_key(registry: &str) -> String {
    if registry == kpbuild_oci::image_ref::DOCKER_HUB {
        "https://index.docker.io/v1/".to_string()
    } else {
        registry.to_string()
    }
}

/// Why credentials could not be read.
#[derive(Debug, Clone, thiserror::Error)]
#[error("cannot read credentials for {registry} from the Docker config file {path}: {message}")]
pub struct CredentialError {
    pub registry: String,
    pub path: String,
    pub message: String,
}

/// Looks up credentials for `registry` in the Docker config file (including credential
/// helpers it names). `Ok(None)` when there is no file or no entry for the registry.
pub(crate) fn credentials_for(registry: &str) -> Result<Option<Credential>, CredentialError> {
    let Some(path) = docker_config_path() else {
        return Ok(None);
    };
    if !path.exists() {
        return Ok(None);
    }
    match docker_credential::get_credential(&docker_config_key(registry)) {
        Ok(DockerCredential::UsernamePassword(username, password)) => {
            Ok(Some(Credential::UserPassword { username, password }))
        }
        Ok(DockerCredential::IdentityToken(t)) => Ok(Some(Credential::IdentityToken(t))),
        Err(CredentialRetrievalError::NoCredentialConfigured) => Ok(None),
        Err(e) => Err(CredentialError {
            registry: registry.to_string(),
            path: path.display().to_string(),
            message: e.to_string(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bearer_challenge() {
        let c = parse_challenge(
            r#"Bearer realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:library/nginx:pull""#,
        )
        .unwrap();
        assert_eq!(
            c,
            Challenge::Bearer {
                realm: "https://auth.docker.io/token".into(),
                service: Some("registry.docker.io".into()),
                scope: Some("repository:library/nginx:pull".into()),
            }
        );
        // Scope lists with commas inside quotes, spaces after commas, escapes, unquoted.
        let c = parse_challenge(
            r#"bearer  realm="http://127.0.0.1:1/t", scope="repository:a:pull,push",error=insufficient_scope, service="x\"y""#,
        )
        .unwrap();
        assert_eq!(
            c,
            Challenge::Bearer {
                realm: "http://127.0.0.1:1/t".into(),
                service: Some("x\"y".into()),
                scope: Some("repository:a:pull,push".into()),
            }
        );
    }

    #[test]
    fn basic_and_unknown_challenges() {
        assert_eq!(
            parse_challenge(r#"Basic realm="basic-realm""#),
            Some(Challenge::Basic {
                realm: "basic-realm".into()
            })
        );
        assert_eq!(
            parse_challenge("Basic"),
            Some(Challenge::Basic { realm: "".into() })
        );
        assert_eq!(parse_challenge(r#"Negotiate abc"#), None);
        assert_eq!(parse_challenge(r#"Bearer service="x""#), None); // no realm
        assert_eq!(parse_challenge(r#"Bearer realm="unterminated"#), None);
    }

    #[test]
    fn config_keys() {
        assert_eq!(
            docker_config_key("docker.io"),
            "https://index.docker.io/v1/"
        );
        assert_eq!(docker_config_key("127.0.0.1:5000"), "127.0.0.1:5000");
    }

    #[test]
    fn credential_debug_hides_secrets() {
        let c = Credential::UserPassword {
            username: "u".into(),
            password: "hunter2".into(),
        };
        assert!(!format!("{c:?}").contains("hunter2"));
        assert!(!format!("{:?}", Credential::IdentityToken("tok".into())).contains("tok"));
    }
}
