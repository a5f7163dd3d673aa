//! One request to one response: `/-/healthy`, the registry under `/v2/` (read-only pull side
//! of the OCI distribution spec, with the referrers API of 1.1) and the files under the nginx
//! root, as nginx serves them (`Range`, `Last-Modified`, a redirect to `dir/`, 403 for a
//! directory unless listings are asked for). Every refusal has a status and a body saying why:
//! the spec's JSON error body where the spec's table has a code for it, plain text otherwise.

use std::net::IpAddr;
use std::sync::Arc;

use crate::path::{self as spath, Found, Target};
use crate::range::{RangeAnswer, parse_range};
use crate::referrers;
use crate::registry::{self, ErrorCode, RegistryError, Route};
use hyper::header::{self, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};
use kpbuild_oci::media_type::OCI_INDEX;

use crate::body::{self, Check, ResponseBody};
use crate::server::{Role, State};

/// The health check path (both roles).
pub const HEALTHY: &str = "/-/healthy";

type Resp = Response<ResponseBody>;

/// Answers one request.
pub fn handle<B>(req: &Request<B>, state: &Arc<State>, role: Role, client: IpAddr) -> Resp {
    let path = req.uri().path();
    let head = req.method() == Method::HEAD;
    let mut resp = if path == HEALTHY {
        text(StatusCode::OK, "ok\n")
    } else if let Some(r) = registry_route(path) {
        let mut resp = match r {
            Ok(route) => registry(req, state, route),
            Err(_) => reg_error(&RegistryError {
                code: ErrorCode::NameInvalid,
                message: "the request path is not valid percent-encoded UTF-8".into(),
            }),
        };
        resp.headers_mut().insert(
            "docker-distribution-api-version",
            HeaderValue::from_static("registry/2.0"),
        );
        resp
    } else if role == Role::Registry {
        text(
            StatusCode::NOT_FOUND,
            "this address serves the registry only (/v2/)\n",
        )
    } else {
        files(req, state)
    };
    if head {
        // Same headers (Content-Length included), no body.
        *resp.body_mut() = body::empty();
    }
    if state.log_requests {
        let len = resp
            .headers()
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("-");
        eprintln!(
            "{client} \"{} {}\" {} {len}",
            req.method(),
            req.uri(),
            resp.status().as_u16()
        );
    }
    let (parts, b) = resp.into_parts();
    Response::from_parts(parts, body::counted(b, state, client))
}

/// `Some` when the path is the registry's (`/v2` or under `/v2/`), decoded.
fn registry_route(path: &str) -> Option<Result<Route, ()>> {
    if path != "/v2" && !path.starts_with("/v2/") {
        return None;
    }
    Some(
        percent_encoding::percent_decode_str(path)
            .decode_utf8()
            .map_err(|_| ())
            .and_then(|p| registry::route(&p).ok_or(())),
    )
}

fn text(status: StatusCode, body: impl Into<bytes::Bytes>) -> Resp {
    typed(status, body, "text/plain; charset=utf-8")
}

fn json(status: StatusCode, body: String) -> Resp {
    typed(status, body, "application/json")
}

fn typed(status: StatusCode, body: impl Into<bytes::Bytes>, content_type: &'static str) -> Resp {
    let body = body.into();
    let len = body.len();
    let mut r = Response::new(body::full(body));
    *r.status_mut() = status;
    r.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    r.headers_mut()
        .insert(header::CONTENT_LENGTH, HeaderValue::from(len));
    r
}

fn reg_error(e: &RegistryError) -> Resp {
    let status = StatusCode::from_u16(e.code.status()).unwrap_or(StatusCode::NOT_FOUND);
    let mut r = json(status, e.code.body(&e.message, ""));
    if e.code == ErrorCode::Unsupported {
        r.headers_mut()
            .insert(header::ALLOW, HeaderValue::from_static("GET, HEAD"));
    }
    r
}

fn query<'a>(req: &'a Request<impl Sized>, key: &str) -> Option<&'a str> {
    req.uri()
        .query()?
        .split('&')
        .find_map(|kv| kv.strip_prefix(key)?.strip_prefix('='))
}

fn registry<B>(req: &Request<B>, state: &Arc<State>, route: Route) -> Resp {
    if !matches!(*req.method(), Method::GET | Method::HEAD) {
        return reg_error(&RegistryError {
            code: ErrorCode::Unsupported,
            message: format!(
                "{} is not supported: kpbuild serve is a read-only registry (the bundle is what it serves)",
                req.method()
            ),
        });
    }
    let reg = &state.registry;
    match route {
        Route::Base => json(StatusCode::OK, "{}".into()),
        Route::Upload { .. } => reg_error(&RegistryError {
            code: ErrorCode::Unsupported,
            message: "pushes are not supported: kpbuild serve is a read-only registry".into(),
        }),
        // Not the spec's: no code of its table fits, so no JSON error body.
        Route::Unknown => text(
            StatusCode::NOT_FOUND,
            format!("no such registry API route: {}\n", req.uri().path()),
        ),
        Route::Catalog => {
            let all: Vec<&str> = reg.repositories().collect();
            let (items, more) = paginate(req, &all);
            let mut r = json(
                StatusCode::OK,
                serde_json::json!({ "repositories": items }).to_string(),
            );
            if more && let Some(last) = items.last() {
                link_next(&mut r, "/v2/_catalog", last, items.len());
            }
            r
        }
        Route::Tags { name } => match reg.tags(&name) {
            Err(e) => reg_error(&e),
            Ok(all) => {
                let (items, more) = paginate(req, &all);
                let mut r = json(
                    StatusCode::OK,
                    serde_json::json!({ "name": name, "tags": items }).to_string(),
                );
                if more && let Some(last) = items.last() {
                    link_next(&mut r, &format!("/v2/{name}/tags/list"), last, items.len());
                }
                r
            }
        },
        Route::Manifest { name, reference } => match reg.manifest(&name, &reference) {
            Err(e) => reg_error(&e),
            Ok(m) => {
                let etag = format!("\"{}\"", m.digest);
                if req
                    .headers()
                    .get(header::IF_NONE_MATCH)
                    .is_some_and(|v| v.as_bytes() == etag.as_bytes())
                {
                    let mut r = Response::new(body::empty());
                    *r.status_mut() = StatusCode::NOT_MODIFIED;
                    return r;
                }
                let mut r = Response::new(body::full(bytes::Bytes::from_owner(m.bytes.clone())));
                let h = r.headers_mut();
                h.insert(header::CONTENT_TYPE, HeaderValue::from_static(m.media_type));
                h.insert(header::CONTENT_LENGTH, HeaderValue::from(m.bytes.len()));
                h.insert("docker-content-digest", hv(&m.digest.to_string()));
                h.insert(header::ETAG, hv(&etag));
                r
            }
        },
        Route::Referrers { name, digest } => match reg.referrers(&name, &digest) {
            Err(e) => reg_error(&e),
            Ok(list) => {
                let filter = referrers::artifact_type_filter(req.uri().query());
                let listing = referrers::listing(list, filter.as_deref());
                let mut r = typed(StatusCode::OK, listing.bytes, OCI_INDEX);
                if listing.filtered {
                    r.headers_mut().insert(
                        referrers::FILTERS_APPLIED,
                        HeaderValue::from_static(referrers::ARTIFACT_TYPE),
                    );
                }
                r
            }
        },
        Route::Blob { name, digest } => match reg.blob(&name, &digest) {
            Err(e) => reg_error(&e),
            Ok((d, path)) => {
                if state.is_corrupt(&d) {
                    // A server-side fault: no code of the spec's table, no JSON error body.
                    return text(
                        StatusCode::INTERNAL_SERVER_ERROR,
                        format!(
                            "blob {d} does not hash to its name ({}); run `kpbuild verify` on the bundle\n",
                            path.display()
                        ),
                    );
                }
                // No symbolic link is followed on the way to a blob either.
                let rel = path
                    .strip_prefix(&state.registry_root)
                    .map(|p| p.to_string_lossy().into_owned())
                    .unwrap_or_default();
                let Ok(Found::File { file: f, len, .. }) =
                    spath::open_under(&state.registry_root, &rel)
                else {
                    return reg_error(&RegistryError {
                        code: ErrorCode::BlobUnknown,
                        message: format!(
                            "blob {d} is linked but its data is missing or a symbolic link"
                        ),
                    });
                };
                let check = (!state.is_verified(&d)).then(|| Check {
                    digest: d.clone(),
                    path: path.clone(),
                });
                let mut r = ranged(req, f, len, check, state, "application/octet-stream");
                let h = r.headers_mut();
                h.insert("docker-content-digest", hv(&d.to_string()));
                h.insert(header::ETAG, hv(&format!("\"{d}\"")));
                h.insert(
                    header::CACHE_CONTROL,
                    HeaderValue::from_static("max-age=31536000"),
                );
                r
            }
        },
    }
}

fn hv(s: &str) -> HeaderValue {
    HeaderValue::from_str(s).unwrap_or_else(|_| HeaderValue::from_static("invalid"))
}

fn paginate<'a, B>(req: &Request<B>, all: &[&'a str]) -> (Vec<&'a str>, bool) {
    let n = query(req, "n").and_then(|n| n.parse::<usize>().ok());
    let last = query(req, "last").map(|l| {
        percent_encoding::percent_decode_str(l)
            .decode_utf8_lossy()
            .into_owned()
    });
    registry::page(all, n, last.as_deref())
}

fn link_next(r: &mut Resp, path: &str, last: &str, n: usize) {
    r.headers_mut().insert(
        header::LINK,
        hv(&format!("<{path}?last={last}&n={n}>; rel=\"next\"")),
    );
}

/// A file body: 200 with all of it, 206 with the range asked, or 416.
fn ranged<B>(
    req: &Request<B>,
    f: std::fs::File,
    len: u64,
    check: Option<Check>,
    state: &Arc<State>,
    content_type: &'static str,
) -> Resp {
    let range = req
        .headers()
        .get(header::RANGE)
        .and_then(|v| v.to_str().ok());
    let head = req.method() == Method::HEAD;
    let (status, start, n, check) = match parse_range(range, len) {
        RangeAnswer::Full => (StatusCode::OK, 0, len, check),
        RangeAnswer::Partial { start, end } => {
            (StatusCode::PARTIAL_CONTENT, start, end - start + 1, None)
        }
        RangeAnswer::Unsatisfiable => {
            let mut r = Response::new(body::empty());
            *r.status_mut() = StatusCode::RANGE_NOT_SATISFIABLE;
            r.headers_mut()
                .insert(header::CONTENT_RANGE, hv(&format!("bytes */{len}")));
            return r;
        }
    };
    let b = if head || n == 0 {
        body::empty()
    } else {
        body::file(f, start, n, check, state.clone())
    };
    let mut r = Response::new(b);
    *r.status_mut() = status;
    let h = r.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    h.insert(header::CONTENT_LENGTH, HeaderValue::from(n));
    h.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    if status == StatusCode::PARTIAL_CONTENT {
        h.insert(
            header::CONTENT_RANGE,
            hv(&format!("bytes {start}-{}/{len}", start + n - 1)),
        );
    }
    r
}

fn files<B>(req: &Request<B>, state: &Arc<State>) -> Resp {
    if !matches!(*req.method(), Method::GET | Method::HEAD) {
        let mut r = text(
            StatusCode::METHOD_NOT_ALLOWED,
            "kpbuild serve is read-only: GET and HEAD only\n",
        );
        r.headers_mut()
            .insert(header::ALLOW, HeaderValue::from_static("GET, HEAD"));
        return r;
    }
    let target = match spath::request_target(req.uri().path()) {
        Ok(t) => t,
        Err(_) => return text(StatusCode::BAD_REQUEST, "bad request path\n"),
    };
    let (found, rel, slash) = match &target {
        Target::Root => (Found::Dir(state.files_root.clone()), String::new(), true),
        Target::Path { rel, dir } => match spath::open_under(&state.files_root, rel) {
            Ok(f) => (f, rel.clone(), *dir),
            Err(e) => {
                if state.log_requests {
                    eprintln!("kpbuild serve: refused {}: {e}", req.uri().path());
                }
                return text(StatusCode::NOT_FOUND, "not found\n");
            }
        },
    };
    match found {
        Found::Missing => text(StatusCode::NOT_FOUND, "not found\n"),
        Found::File { file, len, .. } if !slash => {
            let modified = file.metadata().ok().and_then(|m| m.modified().ok());
            let mut r = ranged(req, file, len, None, state, spath::content_type(&rel));
            if let Some(m) = modified {
                r.headers_mut()
                    .insert(header::LAST_MODIFIED, hv(&httpdate::fmt_http_date(m)));
            }
            r
        }
        Found::File { .. } => text(StatusCode::NOT_FOUND, "not found\n"),
        Found::Dir(_) if !slash => {
            let mut r = text(StatusCode::MOVED_PERMANENTLY, "moved\n");
            r.headers_mut()
                .insert(header::LOCATION, hv(&format!("/{rel}/")));
            r
        }
        Found::Dir(dir) if state.listings => match spath::list_dir(&dir) {
            Ok(names) => {
                let mut html = format!(
                    "<html><head><title>Index of /{rel}</title></head><body><h1>Index of /{rel}</h1><hr><pre><a href=\"../\">../</a>\n"
                );
                for n in names {
                    let href: String = percent_encoding::utf8_percent_encode(
                        &n,
                        percent_encoding::NON_ALPHANUMERIC,
                    )
                    .to_string()
                    .replace("%2F", "/")
                    .replace("%2E", ".")
                    .replace("%2D", "-")
                    .replace("%5F", "_");
                    let shown = n
                        .replace('&', "&amp;")
                        .replace('<', "&lt;")
                        .replace('>', "&gt;");
                    html.push_str(&format!("<a href=\"{href}\">{shown}</a>\n"));
                }
                html.push_str("</pre><hr></body></html>\n");
                let len = html.len();
                let mut r = Response::new(body::full(html));
                r.headers_mut()
                    .insert(header::CONTENT_TYPE, HeaderValue::from_static("text/html"));
                r.headers_mut()
                    .insert(header::CONTENT_LENGTH, HeaderValue::from(len));
                r
            }
            Err(_) => text(StatusCode::FORBIDDEN, "forbidden\n"),
        },
        Found::Dir(_) => text(
            StatusCode::FORBIDDEN,
            "directory listings are off (kpbuild serve --listings turns them on)\n",
        ),
    }
}
