//! The one retry policy of outbound HTTP — App Store Connect API calls (webhook configuration included)
//! and HTTP actions: exponential backoff with jitter, and a server's `Retry-After` honoured within a cap.
//!
//! The App Store Connect client retries within one call (driven by `backon` over [`Backoff::delays`]);
//! HTTP actions are sent once per attempt and the delivery controller requeues with [`Backoff::delay`].
//! Both wait at least what the server asked for, never more than their cap: a server asking for hours
//! must not park a reconcile or a delivery that long.

use http::HeaderMap;
use http::header::RETRY_AFTER;
use std::time::{Duration, SystemTime};

/// Exponential backoff: `base`, doubling per attempt, capped at `max`, plus up to 20 % jitter (within
/// the cap) so a burst of failures does not retry in lockstep.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    /// The first delay.
    pub base: Duration,
    /// The largest delay.
    pub max: Duration,
}

impl Backoff {
    /// The delay before the `attempt`-th retry (1-based).
    pub fn delay(&self, attempt: u32) -> Duration {
        let exp = self
            .base
            .saturating_mul(1u32 << attempt.saturating_sub(1).min(20));
        let capped = exp.min(self.max);
        let jitter = capped.mul_f64(rand::random::<f64>() * 0.2);
        capped.saturating_add(jitter).min(self.max.max(self.base))
    }

    /// The delays of `retries` retries, for `backon`.
    pub fn delays(self, retries: usize) -> impl Iterator<Item = Duration> + Send + Sync + Unpin {
        (1..=u32::try_from(retries).unwrap_or(u32::MAX)).map(move |n| self.delay(n))
    }
}

/// The delay to wait: what the backoff computed, or longer if the server asked for longer, but never
/// longer than `cap`.
pub fn honour(computed: Duration, asked: Option<Duration>, cap: Duration) -> Duration {
    asked.map_or(computed, |asked| asked.min(cap).max(computed))
}

/// The `Retry-After` of a response, as a delay from now.
pub fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    let value = headers.get(RETRY_AFTER)?.to_str().ok()?;
    parse_retry_after(value, SystemTime::now())
}

/// A `Retry-After` value (RFC 9110 §10.2.3) as a delay from `now`: delta-seconds (`120`), or an
/// HTTP-date (`Wed, 21 Oct 2015 07:28:00 GMT`, and the obsolete RFC 850 and asctime forms recipients must
/// accept). A date in the past means "now" (zero); anything else is ignored.
pub fn parse_retry_after(value: &str, now: SystemTime) -> Option<Duration> {
    let value = value.trim();
    if !value.is_empty() && value.bytes().all(|b| b.is_ascii_digit()) {
        // More digits than a u64 holds is still "a very long time": the cap applies, not "ignore".
        return Some(Duration::from_secs(value.parse().unwrap_or(u64::MAX)));
    }
    let at = httpdate::parse_http_date(value).ok()?;
    Some(at.duration_since(now).unwrap_or(Duration::ZERO))
}

/// A delay in whole seconds, rounded up (a server asking for 1.2 s more must not be called after 1 s).
pub fn whole_seconds(d: Duration) -> u64 {
    d.as_secs() + u64::from(d.subsec_nanos() > 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> SystemTime {
        httpdate::parse_http_date(s).unwrap()
    }

    #[test]
    fn retry_after_reads_delta_seconds() {
        let now = SystemTime::now();
        assert_eq!(
            parse_retry_after("120", now),
            Some(Duration::from_secs(120))
        );
        assert_eq!(parse_retry_after(" 0 ", now), Some(Duration::ZERO));
        assert_eq!(
            parse_retry_after("99999999999999999999999", now),
            Some(Duration::from_secs(u64::MAX)),
            "too many digits is a long time, left to the cap"
        );
        for bad in ["", "-5", "1.5", "soon", "12 s"] {
            assert_eq!(parse_retry_after(bad, now), None, "{bad:?}");
        }
    }

    #[test]
    fn retry_after_reads_an_http_date_in_all_three_forms() {
        let now = at("Sun, 06 Nov 1994 08:49:00 GMT");
        for form in [
            "Sun, 06 Nov 1994 08:49:37 GMT",
            "Sunday, 06-Nov-94 08:49:37 GMT",
            "Sun Nov  6 08:49:37 1994",
        ] {
            assert_eq!(
                parse_retry_after(form, now),
                Some(Duration::from_secs(37)),
                "{form}"
            );
        }
        assert_eq!(
            parse_retry_after("Sun, 06 Nov 1994 08:48:00 GMT", now),
            Some(Duration::ZERO),
            "a date in the past means now"
        );
        assert_eq!(
            parse_retry_after("Sun, 06 Nov 1994 08:49:37 CET", now),
            None
        );
    }

    #[test]
    fn a_server_is_waited_for_at_least_as_asked_but_never_past_the_cap() {
        let cap = Duration::from_secs(60);
        let computed = Duration::from_secs(2);
        assert_eq!(honour(computed, None, cap), computed);
        assert_eq!(
            honour(computed, Some(Duration::from_secs(1)), cap),
            computed
        );
        assert_eq!(
            honour(computed, Some(Duration::from_secs(30)), cap),
            Duration::from_secs(30)
        );
        assert_eq!(
            honour(computed, Some(Duration::from_secs(u64::MAX)), cap),
            cap
        );
    }

    #[test]
    fn backoff_doubles_with_bounded_jitter_and_is_capped() {
        let b = Backoff {
            base: Duration::from_secs(1),
            max: Duration::from_secs(10),
        };
        assert!(b.delay(1) >= Duration::from_secs(1) && b.delay(1) < Duration::from_millis(1201));
        assert!(b.delay(3) >= Duration::from_secs(4));
        assert!(b.delay(30) <= Duration::from_secs(10));
        let delays: Vec<_> = b.delays(3).collect();
        assert_eq!(delays.len(), 3);
        assert!(delays[2] >= Duration::from_secs(4));
    }

    #[test]
    fn seconds_round_up() {
        assert_eq!(whole_seconds(Duration::from_millis(1200)), 2);
        assert_eq!(whole_seconds(Duration::from_secs(3)), 3);
    }
}
