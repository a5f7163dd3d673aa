//! The trusted comment of a kpbuild signature: one line minisign signs together with the
//! signature (a changed comment fails verification) and shows after verifying it
//! (`Trusted comment: …`). It names what the signature vouches for:
//!
//! ```text
//! timestamp:1733630000 file:kubeplay.lock.json bundle:kubeplay version:v0.1.0 platform:linux/amd64 lock-sha256:<64 hex>
//! ```
//!
//! Fields in this order, `key:value` separated by one space, like minisign's own default
//! (`timestamp:… file:…`), so that a shell reading `minisign -V -Q`'s output can match one with
//! `grep`. The signature of the lock and the signature of the archive holding it carry the same
//! [`Subject`] (the archive's names the lock inside it); only `file` differs. Values hold no
//! white space, so the line splits back into the same fields.

use std::fmt;

/// What a signature vouches for: a bundle, and the exact lock that describes its content.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Subject {
    pub bundle: String,
    pub version: String,
    pub platform: String,
    /// sha256 (64 lower-case hex digits) of `kubeplay.lock.json`.
    pub lock_sha256: String,
}

impl Subject {
    /// How `self` (what a signature names) differs from `other` (what is there), field by
    /// field (`version v0.2.0, not v0.1.0`); empty when they are the same.
    pub fn differences(&self, other: &Subject) -> Vec<String> {
        [
            ("bundle", &self.bundle, &other.bundle),
            ("version", &self.version, &other.version),
            ("platform", &self.platform, &other.platform),
            ("lock sha256", &self.lock_sha256, &other.lock_sha256),
        ]
        .into_iter()
        .filter(|(_, a, b)| a != b)
        .map(|(what, a, b)| format!("{what} {a}, not {b}"))
        .collect()
    }
}

impl fmt::Display for Subject {
    /// `kubeplay v0.1.0 linux/amd64 (lock sha256 …)`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} {} {} (lock sha256 {})",
            self.bundle, self.version, self.platform, self.lock_sha256
        )
    }
}

/// A kpbuild signature's trusted comment.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TrustedComment {
    /// When it was signed (seconds since the epoch).
    pub timestamp: u64,
    /// The name of the signed file (`kubeplay.lock.json`, `kubeplay-v0.1.0-linux-amd64.tar.zst`).
    pub file: String,
    pub subject: Subject,
}

/// The keys of the fields, in their order.
pub const KEYS: [&str; 6] = [
    "timestamp",
    "file",
    "bundle",
    "version",
    "platform",
    "lock-sha256",
];

/// A trusted comment that cannot be written or read as kpbuild's.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CommentError {
    #[error("{key} {value:?} is empty or holds white space or control characters")]
    BadValue { key: &'static str, value: String },
    #[error("lock-sha256 {0:?} is not 64 lower-case hex digits")]
    BadDigest(String),
    #[error("timestamp {0:?} is not a number of seconds")]
    BadTimestamp(String),
    #[error("not kpbuild's trusted comment (fields {expected}): {comment:?}")]
    NotKpbuild { expected: String, comment: String },
}

fn value(key: &'static str, v: &str) -> Result<(), CommentError> {
    if v.is_empty() || v.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(CommentError::BadValue {
            key,
            value: v.to_string(),
        });
    }
    Ok(())
}

fn digest(v: &str) -> Result<(), CommentError> {
    if v.len() != 64
        || !v
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    {
        return Err(CommentError::BadDigest(v.to_string()));
    }
    Ok(())
}

impl TrustedComment {
    /// A comment for `file` of `subject` signed at `timestamp`, its values checked.
    pub fn new(
        timestamp: u64,
        file: impl Into<String>,
        subject: Subject,
    ) -> Result<TrustedComment, CommentError> {
        let c = TrustedComment {
            timestamp,
            file: file.into(),
            subject,
        };
        c.check()?;
        Ok(c)
    }

    fn check(&self) -> Result<(), CommentError> {
        value("file", &self.file)?;
        value("bundle", &self.subject.bundle)?;
        value("version", &self.subject.version)?;
        value("platform", &self.subject.platform)?;
        digest(&self.subject.lock_sha256)
    }

    /// Reads a comment back: exactly [`KEYS`], in order.
    pub fn parse(line: &str) -> Result<TrustedComment, CommentError> {
        let not_ours = || CommentError::NotKpbuild {
            expected: KEYS.map(|k| format!("{k}:…")).join(" "),
            comment: line.to_string(),
        };
        let fields: Vec<&str> = line.split(' ').collect();
        if fields.len() != KEYS.len() {
            return Err(not_ours());
        }
        let mut values = Vec::with_capacity(KEYS.len());
        for (field, key) in fields.iter().zip(KEYS) {
            match field.split_once(':') {
                Some((k, v)) if k == key => values.push(v),
                _ => return Err(not_ours()),
            }
        }
        let timestamp = values[0]
            .parse()
            .map_err(|_| CommentError::BadTimestamp(values[0].to_string()))?;
        TrustedComment::new(
            timestamp,
            values[1],
            Subject {
                bundle: values[2].to_string(),
                version: values[3].to_string(),
                platform: values[4].to_string(),
                lock_sha256: values[5].to_string(),
            },
        )
    }
}

impl fmt::Display for TrustedComment {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = &self.subject;
        let values = [
            &self.timestamp.to_string(),
            &self.file,
            &s.bundle,
            &s.version,
            &s.platform,
            &s.lock_sha256,
        ];
        for (i, (k, v)) in KEYS.iter().zip(values).enumerate() {
            if i > 0 {
                f.write_str(" ")?;
            }
            write!(f, "{k}:{v}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) fn subject() -> Subject {
        Subject {
            bundle: "kubeplay".into(),
            version: "v0.1.0".into(),
            platform: "linux/amd64".into(),
            lock_sha256: "ab".repeat(32),
        }
    }

    #[test]
    fn the_line_is_fixed_and_reads_back() {
        let c = TrustedComment::new(1733630000, "kubeplay.lock.json", subject()).unwrap();
        let line = c.to_string();
        assert_eq!(
            line,
            format!(
                "timestamp:1733630000 file:kubeplay.lock.json bundle:kubeplay version:v0.1.0 \
                 platform:linux/amd64 lock-sha256:{}",
                "ab".repeat(32)
            )
        );
        assert_eq!(TrustedComment::parse(&line).unwrap(), c);
    }

    #[test]
    fn values_that_would_split_the_line_are_refused() {
        let mut s = subject();
        s.version = "v0.1.0 bundle:other".into();
        let e = TrustedComment::new(0, "f", s).unwrap_err();
        assert!(
            matches!(e, CommentError::BadValue { key: "version", .. }),
            "{e}"
        );
        assert!(TrustedComment::new(0, "", subject()).is_err());
        let mut s = subject();
        s.lock_sha256 = "AB".repeat(32);
        assert_eq!(
            TrustedComment::new(0, "f", s).unwrap_err(),
            CommentError::BadDigest("AB".repeat(32))
        );
    }

    #[test]
    fn other_comments_are_not_kpbuilds() {
        // minisign's own default, and ours with a field missing or out of order.
        for line in [
            "timestamp:1733630000\tfile:kubeplay.lock.json\thashed",
            "timestamp:1 file:f bundle:b version:v platform:p",
            "file:f timestamp:1 bundle:b version:v platform:p lock-sha256:00",
        ] {
            let e = TrustedComment::parse(line).unwrap_err();
            assert!(matches!(e, CommentError::NotKpbuild { .. }), "{line}: {e}");
        }
        let e = TrustedComment::parse(&format!(
            "timestamp:x file:f bundle:b version:v platform:p lock-sha256:{}",
            "0".repeat(64)
        ))
        .unwrap_err();
        assert_eq!(e, CommentError::BadTimestamp("x".into()));
    }

    #[test]
    fn differences_name_each_field() {
        let mut other = subject();
        other.version = "v0.2.0".into();
        other.lock_sha256 = "cd".repeat(32);
        assert_eq!(
            subject().differences(&other),
            [
                "version v0.1.0, not v0.2.0".to_string(),
                format!("lock sha256 {}, not {}", "ab".repeat(32), "cd".repeat(32)),
            ]
        );
        assert!(subject().differences(&subject()).is_empty());
    }
}
