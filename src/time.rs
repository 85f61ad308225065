//! Timestamps as the resources store them: RFC 3339, UTC, whole seconds like the API server's own.

/// Now, e.g. `2026-11-27T10:50:00Z`.
pub fn now_rfc3339() -> String {
    format_ts(jiff::Timestamp::now())
}

/// Now with milliseconds, for `receivedAt`: events received within one second still have an order
/// (a resumed route runs what it held in that order).
pub fn receipt_now() -> String {
    jiff::Timestamp::now()
        .strftime("%Y-%m-%dT%H:%M:%S%.3fZ")
        .to_string()
}

/// `ts` in the resources' format.
pub fn format_ts(ts: jiff::Timestamp) -> String {
    ts.strftime("%Y-%m-%dT%H:%M:%SZ").to_string()
}

/// Parses an RFC 3339 timestamp written by [`format_ts`] or by the API server.
pub fn parse_ts(s: &str) -> Option<jiff::Timestamp> {
    s.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_round_trip() {
        let s = now_rfc3339();
        assert!(s.ends_with('Z') && s.len() == 20, "{s}");
        assert_eq!(format_ts(parse_ts(&s).unwrap()), s);
    }

    #[test]
    fn receipt_times_carry_milliseconds_and_parse() {
        let s = receipt_now();
        assert!(s.ends_with('Z') && s.len() == 24, "{s}");
        assert!(parse_ts(&s).is_some());
    }
}
