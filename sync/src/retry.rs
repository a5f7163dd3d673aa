//! When and how long to wait before trying a request again.

use std::time::{Duration, SystemTime};

use reqwest::StatusCode;

/// Retry policy: exponential backoff with jitter, and `Retry-After` honoured.
#[derive(Debug, Clone, Copy)]
pub struct RetryPolicy {
    /// Tries after the first one.
    pub retries: u32,
    /// Delay before the first retry (before jitter).
    pub base: Duration,
    /// Upper bound of any computed delay.
    pub max: Duration,
    /// Upper bound of a delay a server asks for with `Retry-After`.
    pub max_retry_after: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            retries: 5,
            base: Duration::from_millis(250),
            max: Duration::from_secs(15),
            max_retry_after: Duration::from_secs(120),
        }
    }
}

/// Fetches again after bytes that did not verify (wrong sha256 or size): at most this many
/// times, however many retries transport errors get — a server whose stored bytes are wrong
/// sends them wrong every time.
pub(crate) const MAX_VERIFY_RETRIES: u32 = 2;

impl RetryPolicy {
    /// The delay before retry number `attempt` (0 for the first retry): half of
    /// `base·2^attempt` (capped at `max`) plus a random part of up to the other half.
    pub(crate) fn backoff(&self, attempt: u32) -> Duration {
        let exp = self
            .base
            .saturating_mul(1u32.checked_shl(attempt.min(20)).unwrap_or(u32::MAX))
            .min(self.max);
        let half = exp / 2;
        let jitter_ms = fastrand::u64(0..=half.as_millis() as u64);
        half + Duration::from_millis(jitter_ms)
    }

    /// Retries allowed after bytes that did not verify.
    pub(crate) fn verify_retries(&self) -> u32 {
        self.retries.min(MAX_VERIFY_RETRIES)
    }

    /// The delay before a retry, given the server's `Retry-After` value if any.
    pub fn delay(&self, attempt: u32, retry_after: Option<Duration>) -> Duration {
        match retry_after {
            Some(d) => d.min(self.max_retry_after),
            None => self.backoff(attempt),
        }
    }
}

/// Whether a response status is worth another try: 408, 429 and the 5xx family
/// (except 501 Not Implemented and 505, which will not change) — the rule the file fetcher
/// uses too ([`crate::download::decide::transient_status`]).
pub(crate) fn retryable_status(s: StatusCode) -> bool {
    crate::download::decide::transient_status(s.as_u16())
}

/// Whether a transport error is worth another try (refused, reset, timed out, cut short).
pub(crate) fn retryable_error(e: &reqwest::Error) -> bool {
    e.is_connect() || e.is_timeout() || e.is_request() || e.is_body() || e.is_decode()
}

/// Parses a `Retry-After` value: delta-seconds or an HTTP date (relative to `now`).
pub(crate) fn parse_retry_after(value: &str, now: SystemTime) -> Option<Duration> {
    let v = value.trim();
    if let Ok(secs) = v.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let when = httpdate::parse_http_date(v).ok()?;
    Some(when.duration_since(now).unwrap_or(Duration::ZERO))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_with_jitter_and_is_capped() {
        let p = RetryPolicy {
            retries: 5,
            base: Duration::from_millis(100),
            max: Duration::from_secs(1),
            max_retry_after: Duration::from_secs(5),
        };
        for _ in 0..200 {
            let d0 = p.backoff(0);
            assert!(
                d0 >= Duration::from_millis(50) && d0 <= Duration::from_millis(100),
                "{d0:?}"
            );
            let d2 = p.backoff(2);
            assert!(
                d2 >= Duration::from_millis(200) && d2 <= Duration::from_millis(400),
                "{d2:?}"
            );
            let d30 = p.backoff(30);
            assert!(
                d30 >= Duration::from_millis(500) && d30 <= Duration::from_secs(1),
                "{d30:?}"
            );
        }
        // Jitter: not every delay is the same.
        let set: std::collections::BTreeSet<_> = (0..50).map(|_| p.backoff(3)).collect();
        assert!(set.len() > 1);
        // Retry-After wins over backoff, within its own cap.
        assert_eq!(
            p.delay(0, Some(Duration::from_secs(3))),
            Duration::from_secs(3)
        );
        assert_eq!(
            p.delay(0, Some(Duration::from_secs(300))),
            Duration::from_secs(5)
        );
    }

    #[test]
    fn retry_after_forms() {
        let now = httpdate::parse_http_date("Wed, 21 Oct 2026 07:28:00 GMT").unwrap();
        assert_eq!(parse_retry_after("7", now), Some(Duration::from_secs(7)));
        assert_eq!(parse_retry_after(" 0 ", now), Some(Duration::ZERO));
        assert_eq!(
            parse_retry_after("Wed, 21 Oct 2026 07:28:30 GMT", now),
            Some(Duration::from_secs(30))
        );
        // A date in the past means now.
        assert_eq!(
            parse_retry_after("Wed, 21 Oct 2026 07:00:00 GMT", now),
            Some(Duration::ZERO)
        );
        assert_eq!(parse_retry_after("soon", now), None);
        assert_eq!(parse_retry_after("-3", now), None);
    }

    #[test]
    fn which_statuses_are_retried() {
        for s in [429u16, 408, 500, 502, 503, 504] {
            assert!(retryable_status(StatusCode::from_u16(s).unwrap()), "{s}");
        }
        for s in [200u16, 400, 401, 403, 404, 501, 505] {
            assert!(!retryable_status(StatusCode::from_u16(s).unwrap()), "{s}");
        }
    }
}
