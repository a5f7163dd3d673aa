//! The pure decisions of kpbuild's file fetcher (its I/O is [`super`]): what a
//! response to a (possibly ranged) request means — take the body, append it, try again, drop
//! what is held, or give up on this location — and the report of a file that could not be
//! fetched, naming the URL, the bundle path, every location tried and what came back.

use std::fmt;

/// What to do with a response to a request for a file, `held` bytes of which are already
/// written (the request asked for `Range: bytes=<held>-` when `held > 0`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Reply {
    /// The whole file follows: write it from the start (dropping the bytes held).
    Whole,
    /// The rest of the file follows, from `held`: append it.
    Rest,
    /// A status that may change (5xx but 501/505, 429, 408): the same location again, later.
    Retry,
    /// The range does not fit what is held (416, or a `Content-Range` starting elsewhere):
    /// drop what is held and ask again for the whole file.
    Restart,
    /// A status that will not change (404, 403, 410, …): this location has no such file.
    NextLocation,
}

/// Whether an HTTP status is worth another try at the same location: 408, 429 and the 5xx
/// family except 501 Not Implemented and 505.
pub(crate) fn transient_status(status: u16) -> bool {
    status == 408
        || status == 429
        || ((500..600).contains(&status) && status != 501 && status != 505)
}

/// What a response with `status` (and its `Content-Range`, if any) means when `held` bytes
/// are already written.
pub(crate) fn classify(status: u16, held: u64, content_range: Option<&str>) -> Reply {
    match status {
        200 => Reply::Whole,
        206 => match content_range.and_then(range_start) {
            Some(start) if start == held => Reply::Rest,
            _ => Reply::Restart,
        },
        416 => Reply::Restart,
        s if transient_status(s) => Reply::Retry,
        _ => Reply::NextLocation,
    }
}

/// The first byte of a `Content-Range: bytes START-END/TOTAL` value.
pub(crate) fn range_start(value: &str) -> Option<u64> {
    let rest = value.trim().strip_prefix("bytes")?.trim_start();
    let (range, _total) = rest.split_once('/')?;
    let (start, end) = range.split_once('-')?;
    let (start, end) = (
        start.trim().parse::<u64>().ok()?,
        end.trim().parse::<u64>().ok()?,
    );
    (start <= end).then_some(start)
}

/// The `Range` header asking for the rest of a file from `held`, when anything is held.
pub(crate) fn range_header(held: u64) -> Option<String> {
    (held > 0).then(|| format!("bytes={held}-"))
}

/// What one try of one location came back with.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// An HTTP status that is not success, with the size of its body.
    Status { status: u16, bytes: u64 },
    /// The connection failed or broke, after `bytes` of the body.
    Transport { message: String, bytes: u64 },
    /// The whole body arrived but its digest is not the pin.
    Mismatch {
        algorithm: String,
        got: String,
        bytes: u64,
    },
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Outcome::Status { status, bytes } => write!(f, "HTTP {status} ({bytes} bytes)"),
            Outcome::Transport { message, bytes } if *bytes > 0 => {
                write!(f, "{message} after {bytes} bytes")
            }
            Outcome::Transport { message, .. } => f.write_str(message),
            Outcome::Mismatch {
                algorithm,
                got,
                bytes,
            } => write!(f, "{bytes} bytes with {algorithm} {got}, not the pin"),
        }
    }
}

/// One location of a file and every try of it, in order.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Tried {
    pub url: String,
    pub outcomes: Vec<Outcome>,
    /// Why this location was left: a status that will not change, retries used up, …
    pub verdict: String,
}

/// A file that could not be fetched from any of its locations.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FetchFailure {
    /// The upstream URL (what the bundle lays the file out by).
    pub url: String,
    /// The file's path in the bundle.
    pub path: String,
    /// `sha256:<hex>` or `sha512:<hex>`, when pinned.
    pub pin: Option<String>,
    pub tried: Vec<Tried>,
}

impl FetchFailure {
    /// The advice that fits what came back.
    fn hint(&self) -> &'static str {
        let all = || self.tried.iter().flat_map(|t| &t.outcomes);
        if all().any(|o| matches!(o, Outcome::Mismatch { .. }))
            && all().all(|o| !matches!(o, Outcome::Transport { .. }))
        {
            "the locations serve other bytes than the pin: check the pin (kubespray's checksums or the spec's sha256) and the mirror's copy"
        } else if all().all(|o| {
            matches!(
                o,
                Outcome::Status {
                    status: 404 | 410,
                    ..
                }
            )
        }) {
            "no location has the file: check the URL, the version variables and the mirror's copy"
        } else {
            "the locations kept failing: check them, add a mirror, or build again later (files already fetched are kept)"
        }
    }
}

impl fmt::Display for FetchFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} (bundle path {}", self.url, self.path)?;
        if let Some(p) = &self.pin {
            write!(f, ", pin {p}")?;
        }
        write!(f, ") could not be fetched;")?;
        for t in &self.tried {
            // Runs of the same outcome once, with their count: `HTTP 503 (80 bytes) x6`.
            let mut list: Vec<(String, usize)> = Vec::new();
            for o in &t.outcomes {
                let o = o.to_string();
                match list.last_mut() {
                    Some((last, n)) if *last == o => *n += 1,
                    _ => list.push((o, 1)),
                }
            }
            let list: Vec<String> = list
                .into_iter()
                .map(|(o, n)| if n > 1 { format!("{o} x{n}") } else { o })
                .collect();
            write!(
                f,
                " {} tried {} time{}: {} ({});",
                t.url,
                t.outcomes.len(),
                if t.outcomes.len() == 1 { "" } else { "s" },
                list.join(", "),
                t.verdict
            )?;
        }
        write!(f, " {}", self.hint())
    }
}

impl std::error::Error for FetchFailure {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replies() {
        assert_eq!(classify(200, 0, None), Reply::Whole);
        // A server that ignores the range sends everything: start over.
        assert_eq!(classify(200, 4096, None), Reply::Whole);
        assert_eq!(
            classify(206, 4096, Some("bytes 4096-9999/10000")),
            Reply::Rest
        );
        assert_eq!(
            classify(206, 4096, Some("bytes 0-9999/10000")),
            Reply::Restart
        );
        assert_eq!(classify(206, 4096, Some("bytes 4096-9999/*")), Reply::Rest);
        assert_eq!(classify(206, 4096, None), Reply::Restart);
        assert_eq!(classify(416, 4096, None), Reply::Restart);
        for s in [500, 502, 503, 504, 429, 408] {
            assert_eq!(classify(s, 0, None), Reply::Retry, "{s}");
        }
        for s in [404, 403, 410, 401, 400, 501, 505, 301] {
            assert_eq!(classify(s, 0, None), Reply::NextLocation, "{s}");
        }
    }

    #[test]
    fn content_ranges() {
        assert_eq!(range_start("bytes 10-20/30"), Some(10));
        assert_eq!(range_start("bytes  0-0/1"), Some(0));
        assert_eq!(range_start("bytes 20-10/30"), None);
        assert_eq!(range_start("bytes */30"), None);
        assert_eq!(range_start("items 1-2/3"), None);
        assert_eq!(range_header(0), None);
        assert_eq!(range_header(512).as_deref(), Some("bytes=512-"));
    }

    #[test]
    fn failures_name_the_file_every_location_and_what_came_back() {
        let f = FetchFailure {
            url: "https://dl.k8s.io/v1/kubelet".into(),
            path: "resources/nginx/files/dl.k8s.io/v1/kubelet".into(),
            pin: Some(format!("sha256:{}", "a".repeat(64))),
            tried: vec![
                Tried {
                    url: "http://m1/dl.k8s.io/v1/kubelet".into(),
                    outcomes: vec![
                        Outcome::Status {
                            status: 503,
                            bytes: 53,
                        },
                        Outcome::Status {
                            status: 503,
                            bytes: 53,
                        },
                        Outcome::Transport {
                            message: "connection reset".into(),
                            bytes: 1000,
                        },
                    ],
                    verdict: "retries used up".into(),
                },
                Tried {
                    url: "https://dl.k8s.io/v1/kubelet".into(),
                    outcomes: vec![Outcome::Status {
                        status: 404,
                        bytes: 9,
                    }],
                    verdict: "HTTP 404 will not change".into(),
                },
            ],
        };
        let s = f.to_string();
        for want in [
            "https://dl.k8s.io/v1/kubelet (bundle path resources/nginx/files/dl.k8s.io/v1/kubelet, pin sha256:aaaa",
            "http://m1/dl.k8s.io/v1/kubelet tried 3 times: HTTP 503 (53 bytes) x2, connection reset after 1000 bytes (retries used up)",
            "https://dl.k8s.io/v1/kubelet tried 1 time: HTTP 404 (9 bytes)",
            "kept failing",
        ] {
            assert!(s.contains(want), "{want} not in {s}");
        }
        assert!(!s.contains('\n'), "one line, so BuildKit shows it whole");
        let wrong = FetchFailure {
            tried: vec![Tried {
                url: "http://m/x".into(),
                outcomes: vec![Outcome::Mismatch {
                    algorithm: "sha256".into(),
                    got: "b".repeat(64),
                    bytes: 10,
                }],
                verdict: "wrong bytes".into(),
            }],
            ..f.clone()
        };
        assert!(wrong.to_string().contains("check the pin"), "{wrong}");
        let missing = FetchFailure {
            tried: vec![f.tried[1].clone()],
            ..f
        };
        assert!(missing.to_string().contains("no location has the file"));
    }
}
