//! Version comparison as Ansible's `version` test does it (`loose`, `strict` and `semver`).

use std::cmp::Ordering;

/// A component of a loose version: Python's `LooseVersion` splits into numbers and strings.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Part {
    Num(u64),
    Text(String),
}

/// Errors comparing versions.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum VersionError {
    #[error("input version value cannot be empty")]
    EmptyValue,
    #[error("version to compare against cannot be empty")]
    EmptyVersion,
    #[error(
        "invalid operator `{0}` for the version test (use <, <=, >, >=, ==, != or lt, le, gt, ge, eq, ne)"
    )]
    Operator(String),
    #[error("`{0}` is not a valid {1} version")]
    Invalid(String, &'static str),
    #[error(
        "cannot compare `{0}` with `{1}`: a number meets text at the same position (as in Python's LooseVersion)"
    )]
    Incomparable(String, String),
    #[error("unknown version_type `{0}` (use loose, strict or semver)")]
    Type(String),
}

fn loose_parts(v: &str) -> Vec<Part> {
    let mut parts = Vec::new();
    let mut chars = v.chars().peekable();
    while let Some(&c) = chars.peek() {
        if c == '.' {
            chars.next();
        } else if c.is_ascii_digit() {
            let mut s = String::new();
            while let Some(&d) = chars.peek().filter(|d| d.is_ascii_digit()) {
                s.push(d);
                chars.next();
            }
            parts.push(s.parse().map(Part::Num).unwrap_or(Part::Text(s)));
        } else if c.is_ascii_lowercase() {
            let mut s = String::new();
            while let Some(&d) = chars.peek().filter(|d| d.is_ascii_lowercase()) {
                s.push(d);
                chars.next();
            }
            parts.push(Part::Text(s));
        } else {
            let mut s = String::new();
            while let Some(&d) = chars
                .peek()
                .filter(|d| !(d.is_ascii_digit() || d.is_ascii_lowercase() || **d == '.'))
            {
                s.push(d);
                chars.next();
            }
            parts.push(Part::Text(s));
        }
    }
    parts
}

fn cmp_loose(a: &str, b: &str) -> Result<Ordering, VersionError> {
    let (pa, pb) = (loose_parts(a), loose_parts(b));
    for (x, y) in pa.iter().zip(pb.iter()) {
        let ord = match (x, y) {
            (Part::Num(x), Part::Num(y)) => x.cmp(y),
            (Part::Text(x), Part::Text(y)) => x.cmp(y),
            _ => return Err(VersionError::Incomparable(a.into(), b.into())),
        };
        if ord != Ordering::Equal {
            return Ok(ord);
        }
    }
    Ok(pa.len().cmp(&pb.len()))
}

/// `StrictVersion`'s sort key: major, minor, patch and an optional pre-release (`a1`, `b2`).
type StrictKey = (u64, u64, u64, Option<(char, u64)>);

/// `StrictVersion`: `N.N[.N][(a|b)N]`.
fn strict_key(v: &str) -> Result<StrictKey, VersionError> {
    let bad = || VersionError::Invalid(v.into(), "strict");
    let (nums, pre) = match v.find(['a', 'b']) {
        Some(i) => (&v[..i], Some(&v[i..])),
        None => (v, None),
    };
    let n: Vec<u64> = nums
        .split('.')
        .map(|p| p.parse().map_err(|_| bad()))
        .collect::<Result<_, _>>()?;
    if !(2..=3).contains(&n.len()) {
        return Err(bad());
    }
    let pre = match pre {
        Some(p) => Some((
            p.chars().next().unwrap(),
            p[1..].parse().map_err(|_| bad())?,
        )),
        None => None,
    };
    Ok((n[0], n[1], n.get(2).copied().unwrap_or(0), pre))
}

fn cmp_strict(a: &str, b: &str) -> Result<Ordering, VersionError> {
    let (ka, kb) = (strict_key(a)?, strict_key(b)?);
    let base = (ka.0, ka.1, ka.2).cmp(&(kb.0, kb.1, kb.2));
    if base != Ordering::Equal {
        return Ok(base);
    }
    // A pre-release sorts before the release.
    Ok(match (ka.3, kb.3) {
        (None, None) => Ordering::Equal,
        (Some(_), None) => Ordering::Less,
        (None, Some(_)) => Ordering::Greater,
        (Some(x), Some(y)) => x.cmp(&y),
    })
}

fn cmp_semver(a: &str, b: &str) -> Result<Ordering, VersionError> {
    fn parse(v: &str) -> Result<(Vec<u64>, Vec<String>), VersionError> {
        let bad = || VersionError::Invalid(v.into(), "semantic");
        let v = v.split('+').next().unwrap_or(v);
        let (core, pre) = match v.split_once('-') {
            Some((c, p)) => (c, p.split('.').map(str::to_string).collect()),
            None => (v, vec![]),
        };
        let nums: Vec<u64> = core
            .split('.')
            .map(|p| p.parse().map_err(|_| bad()))
            .collect::<Result<_, _>>()?;
        if nums.len() != 3 {
            return Err(bad());
        }
        Ok((nums, pre))
    }
    let ((na, pa), (nb, pb)) = (parse(a)?, parse(b)?);
    let base = na.cmp(&nb);
    if base != Ordering::Equal {
        return Ok(base);
    }
    Ok(match (pa.is_empty(), pb.is_empty()) {
        (true, true) => Ordering::Equal,
        (false, true) => Ordering::Less,
        (true, false) => Ordering::Greater,
        (false, false) => {
            for (x, y) in pa.iter().zip(pb.iter()) {
                let ord = match (x.parse::<u64>(), y.parse::<u64>()) {
                    (Ok(x), Ok(y)) => x.cmp(&y),
                    (Ok(_), Err(_)) => Ordering::Less,
                    (Err(_), Ok(_)) => Ordering::Greater,
                    (Err(_), Err(_)) => x.cmp(y),
                };
                if ord != Ordering::Equal {
                    return Ok(ord);
                }
            }
            pa.len().cmp(&pb.len())
        }
    })
}

/// Ansible's `value is version(version, operator, strict=…, version_type=…)`.
pub(crate) fn version_test(
    value: &str,
    version: &str,
    operator: &str,
    version_type: &str,
) -> Result<bool, VersionError> {
    if value.is_empty() {
        return Err(VersionError::EmptyValue);
    }
    if version.is_empty() {
        return Err(VersionError::EmptyVersion);
    }
    let ord = match version_type {
        "loose" | "" => cmp_loose(value, version)?,
        "strict" => cmp_strict(value, version)?,
        "semver" | "semantic" => cmp_semver(value, version)?,
        other => return Err(VersionError::Type(other.into())),
    };
    Ok(match operator {
        "==" | "=" | "eq" => ord == Ordering::Equal,
        "!=" | "<>" | "ne" => ord != Ordering::Equal,
        "<" | "lt" => ord == Ordering::Less,
        "<=" | "le" => ord != Ordering::Greater,
        ">" | "gt" => ord == Ordering::Greater,
        ">=" | "ge" => ord != Ordering::Less,
        other => return Err(VersionError::Operator(other.into())),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loose_like_python() {
        assert!(version_test("1.32.8", "1.30.5", ">=", "loose").unwrap());
        assert!(version_test("1.10", "1.9", ">", "loose").unwrap());
        assert!(version_test("3.5.22", "3.6", "<", "loose").unwrap());
        assert!(version_test("v1.20.7", "v1.21", "<", "loose").unwrap());
        assert!(version_test("1.7.1", "1.7.1", "==", "loose").unwrap());
        assert!(
            version_test("1.7", "1.7.0", "<", "loose").unwrap(),
            "shorter sorts first, as LooseVersion"
        );
        assert!(matches!(
            version_test("v1.2", "1.2", "<", "loose"),
            Err(VersionError::Incomparable(..))
        ));
        assert!(matches!(
            version_test("1", "2", "~", "loose"),
            Err(VersionError::Operator(_))
        ));
        assert!(matches!(
            version_test("", "2", "<", "loose"),
            Err(VersionError::EmptyValue)
        ));
    }

    #[test]
    fn strict_and_semver() {
        assert!(version_test("1.2a1", "1.2", "<", "strict").unwrap());
        assert!(version_test("1.2.0", "1.2", "==", "strict").unwrap());
        assert!(version_test("1.0.0-rc.1", "1.0.0", "<", "semver").unwrap());
        assert!(version_test("1.0.0-alpha.2", "1.0.0-alpha.10", "<", "semver").unwrap());
        assert!(version_test("x.y", "1.0", "<", "strict").is_err());
    }
}
