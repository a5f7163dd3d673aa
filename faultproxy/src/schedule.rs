//! The seeded fault schedule: which request gets which fault, decided from the seed, the
//! request (method and target) and how many times that same request was seen before — so a
//! given seed faults the same requests whatever order concurrent requests arrive in, and a
//! retried request gets a fresh draw.

use std::fmt;
use std::str::FromStr;

/// What the proxy does to a request.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum FaultKind {
    /// Answer `500 Internal Server Error` without asking upstream.
    Status500,
    /// Answer `502 Bad Gateway`.
    Status502,
    /// Answer `503 Service Unavailable`.
    Status503,
    /// Answer `429 Too Many Requests` with `Retry-After`.
    Status429,
    /// Send part of the body, then reset the connection (TCP RST); with no body, reset
    /// before the response head.
    Reset,
    /// Send part of the body, then close the connection cleanly (FIN): fewer bytes than
    /// `Content-Length` says.
    Truncate,
    /// Send the whole body with one byte changed (same length).
    Wrong,
    /// Send part of the body, then pause (until the client gives up or the stall ends), then
    /// the rest.
    Stall,
}

impl FaultKind {
    /// Every kind, in a fixed order.
    pub const ALL: [FaultKind; 8] = [
        FaultKind::Status500,
        FaultKind::Status502,
        FaultKind::Status503,
        FaultKind::Status429,
        FaultKind::Reset,
        FaultKind::Truncate,
        FaultKind::Wrong,
        FaultKind::Stall,
    ];

    /// The name used on the command line, in logs and in stats.
    pub fn name(self) -> &'static str {
        match self {
            FaultKind::Status500 => "500",
            FaultKind::Status502 => "502",
            FaultKind::Status503 => "503",
            FaultKind::Status429 => "429",
            FaultKind::Reset => "reset",
            FaultKind::Truncate => "truncate",
            FaultKind::Wrong => "wrong",
            FaultKind::Stall => "stall",
        }
    }

    /// The status answered instead of forwarding, for the status kinds.
    pub fn status(self) -> Option<u16> {
        match self {
            FaultKind::Status500 => Some(500),
            FaultKind::Status502 => Some(502),
            FaultKind::Status503 => Some(503),
            FaultKind::Status429 => Some(429),
            _ => None,
        }
    }
}

impl fmt::Display for FaultKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for FaultKind {
    type Err = String;
    fn from_str(s: &str) -> Result<FaultKind, String> {
        FaultKind::ALL
            .into_iter()
            .find(|k| k.name() == s)
            .ok_or_else(|| {
                format!(
                    "unknown fault kind `{s}`; kinds: {}",
                    FaultKind::ALL.map(|k| k.name()).join(", ")
                )
            })
    }
}

/// Parses a comma-separated list of kinds (`500,503,reset`), or `all`.
pub fn parse_kinds(s: &str) -> Result<Vec<FaultKind>, String> {
    if s == "all" {
        return Ok(FaultKind::ALL.to_vec());
    }
    let kinds = s
        .split(',')
        .map(|k| k.trim().parse())
        .collect::<Result<Vec<_>, _>>()?;
    if kinds.is_empty() {
        return Err("no fault kinds given".into());
    }
    Ok(kinds)
}

/// Always fault requests whose target contains `contains`, with `kind` (every time, or only
/// the first time when `once`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AlwaysRule {
    pub contains: String,
    pub kind: FaultKind,
    pub once: bool,
}

impl FromStr for AlwaysRule {
    type Err = String;
    /// `SUBSTRING=KIND`, e.g. `/blobs/sha256:ab12=503`.
    fn from_str(s: &str) -> Result<AlwaysRule, String> {
        let (contains, kind) = s
            .rsplit_once('=')
            .ok_or_else(|| format!("`{s}` is not SUBSTRING=KIND (e.g. /blobs/sha256:ab=503)"))?;
        if contains.is_empty() {
            return Err(format!("`{s}`: the substring is empty"));
        }
        Ok(AlwaysRule {
            contains: contains.to_string(),
            kind: kind.parse()?,
            once: false,
        })
    }
}

/// A fault chosen for one request.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Fault {
    pub kind: FaultKind,
    /// Where in the body the fault strikes, as a fraction in [0.05, 0.95).
    pub at: f64,
    /// Chosen by an [`AlwaysRule`] rather than drawn.
    pub forced: bool,
}

impl Fault {
    /// The body offset the fault strikes at, for a body of `len` bytes (`len > 0`): always
    /// inside the body, so a truncation really truncates.
    pub fn offset(&self, len: u64) -> u64 {
        ((self.at * len as f64) as u64).min(len.saturating_sub(1))
    }
}

/// Which requests get faults.
#[derive(Clone, Debug)]
pub struct Schedule {
    pub seed: u64,
    /// Probability that a request gets a fault, in [0, 1].
    pub rate: f64,
    /// Kinds drawn from, equally likely.
    pub kinds: Vec<FaultKind>,
    /// Requests that get a given fault whatever the draw (checked first, in order).
    pub always: Vec<AlwaysRule>,
    /// When not empty, drawn faults apply only to targets containing one of these.
    pub only: Vec<String>,
}

const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;

fn fnv1a(mut h: u64, bytes: &[u8]) -> u64 {
    for &b in bytes {
        h ^= b as u64;
        h = h.wrapping_mul(FNV_PRIME);
    }
    h
}

/// splitmix64: a well-mixed 64-bit step.
fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// A uniform number in [0, 1) from 53 bits of `x`.
fn unit(x: u64) -> f64 {
    (x >> 11) as f64 / (1u64 << 53) as f64
}

impl Schedule {
    /// A schedule that never faults.
    pub fn none() -> Schedule {
        Schedule {
            seed: 0,
            rate: 0.0,
            kinds: FaultKind::ALL.to_vec(),
            always: Vec::new(),
            only: Vec::new(),
        }
    }

    /// The fault for the `occurrence`-th (0-based) time `method target` is seen, if any.
    pub fn decide(&self, method: &str, target: &str, occurrence: u64) -> Option<Fault> {
        let mut h = fnv1a(FNV_OFFSET, &self.seed.to_le_bytes());
        h = fnv1a(h, method.as_bytes());
        h = fnv1a(h, b" ");
        h = fnv1a(h, target.as_bytes());
        h = fnv1a(h, &occurrence.to_le_bytes());
        let r1 = mix(h);
        let r2 = mix(r1);
        let r3 = mix(r2);
        let at = 0.05 + 0.9 * unit(r3);
        if let Some(rule) = self
            .always
            .iter()
            .find(|r| target.contains(&r.contains) && (!r.once || occurrence == 0))
        {
            return Some(Fault {
                kind: rule.kind,
                at,
                forced: true,
            });
        }
        if self.kinds.is_empty() || self.rate <= 0.0 {
            return None;
        }
        if !self.only.is_empty() && !self.only.iter().any(|o| target.contains(o)) {
            return None;
        }
        if unit(r1) >= self.rate {
            return None;
        }
        let kind = self.kinds[(r2 % self.kinds.len() as u64) as usize];
        Some(Fault {
            kind,
            at,
            forced: false,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sched(rate: f64) -> Schedule {
        Schedule {
            seed: 42,
            rate,
            kinds: FaultKind::ALL.to_vec(),
            always: vec![],
            only: vec![],
        }
    }

    #[test]
    fn kinds_parse_and_print() {
        for k in FaultKind::ALL {
            assert_eq!(k.name().parse::<FaultKind>().unwrap(), k);
        }
        assert_eq!(parse_kinds("all").unwrap().len(), 8);
        assert_eq!(
            parse_kinds("503, reset").unwrap(),
            vec![FaultKind::Status503, FaultKind::Reset]
        );
        let e = parse_kinds("503,teapot").unwrap_err();
        assert!(e.contains("teapot") && e.contains("truncate"), "{e}");
        let r: AlwaysRule = "/blobs/sha256:ab=wrong".parse().unwrap();
        assert_eq!(r.contains, "/blobs/sha256:ab");
        assert_eq!(r.kind, FaultKind::Wrong);
        assert!("nokind".parse::<AlwaysRule>().is_err());
        assert!("=503".parse::<AlwaysRule>().is_err());
    }

    #[test]
    fn decisions_are_a_function_of_seed_request_and_occurrence() {
        let s = sched(0.3);
        let a: Vec<_> = (0..200)
            .map(|i| s.decide("GET", &format!("/v2/x/blobs/{i}"), 0))
            .collect();
        let b: Vec<_> = (0..200)
            .rev()
            .map(|i| s.decide("GET", &format!("/v2/x/blobs/{i}"), 0))
            .rev()
            .collect();
        assert_eq!(a, b, "order of asking does not matter");
        let other = Schedule {
            seed: 43,
            ..s.clone()
        };
        let c: Vec<_> = (0..200)
            .map(|i| other.decide("GET", &format!("/v2/x/blobs/{i}"), 0))
            .collect();
        assert_ne!(a, c, "another seed, another schedule");
        // A retry (next occurrence) is a fresh draw.
        let retried: Vec<_> = (0..200)
            .map(|i| s.decide("GET", &format!("/v2/x/blobs/{i}"), 1))
            .collect();
        assert_ne!(a, retried);
    }

    #[test]
    fn rate_is_respected_and_every_kind_is_drawn() {
        let s = sched(0.1);
        let n = 20_000;
        let faults: Vec<Fault> = (0..n)
            .filter_map(|i| s.decide("GET", &format!("/p/{i}"), 0))
            .collect();
        let share = faults.len() as f64 / n as f64;
        assert!((0.09..0.11).contains(&share), "{share}");
        for k in FaultKind::ALL {
            assert!(faults.iter().any(|f| f.kind == k), "{k} never drawn");
        }
        assert!(faults.iter().all(|f| (0.05..0.95).contains(&f.at)));
        assert!(sched(0.0).decide("GET", "/p", 0).is_none());
        assert!((0..100).all(|i| sched(1.0).decide("GET", &format!("/{i}"), 0).is_some()));
    }

    #[test]
    fn always_rules_and_only_filters() {
        let mut s = sched(0.0);
        s.always.push("/blobs/sha256:dead=503".parse().unwrap());
        let f = s.decide("GET", "/v2/a/blobs/sha256:deadbeef", 7).unwrap();
        assert_eq!((f.kind, f.forced), (FaultKind::Status503, true));
        let mut once: AlwaysRule = "/files/x=reset".parse().unwrap();
        once.once = true;
        s.always.push(once);
        assert_eq!(
            s.decide("GET", "/files/x", 0).unwrap().kind,
            FaultKind::Reset
        );
        assert!(
            s.decide("GET", "/files/x", 1).is_none(),
            "only the first time"
        );
        assert!(s.decide("GET", "/v2/a/blobs/sha256:beef", 0).is_none());
        let s = Schedule {
            only: vec!["/blobs/".into()],
            ..sched(1.0)
        };
        assert!(s.decide("GET", "/v2/a/manifests/v1", 0).is_none());
        assert!(s.decide("GET", "/v2/a/blobs/sha256:x", 0).is_some());
    }

    #[test]
    fn offsets_stay_inside_the_body() {
        let f = Fault {
            kind: FaultKind::Truncate,
            at: 0.94,
            forced: false,
        };
        assert_eq!(f.offset(1), 0);
        assert_eq!(f.offset(2), 1);
        assert_eq!(f.offset(1000), 940);
    }
}
