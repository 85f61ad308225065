//! Deterministic names. A delivery's name is a function of its route and Apple's event id, and a Job's of
//! route, rule and event id: creating either twice is impossible because the API server refuses the
//! second create with AlreadyExists, across retries, restarts and replicas.

use sha2::{Digest, Sha256};

/// Longest object name the API server accepts for most kinds (DNS-1123 subdomain).
const MAX_SUBDOMAIN: usize = 253;
/// Jobs put their name into a pod label, which caps it at a DNS-1123 label.
const MAX_LABEL: usize = 63;

/// Hex digits of the hash that ends a delivery's name.
pub const EVENT_KEY_LEN: usize = 16;

/// Name of the `WebhookDelivery` for `event_id` received on `route`.
pub fn delivery_name(route: &str, event_id: &str) -> String {
    join(
        route,
        &digest(&[route, event_id], EVENT_KEY_LEN),
        MAX_SUBDOMAIN,
    )
}

/// The short key of the event a delivery records: the hash of route and event id that ends its name.
/// What the route's record of pruned events keeps (16 hex digits: 64 bits, so two events of one route
/// colliding is as likely as guessing a random 64-bit number).
pub fn event_key_of(delivery_name: &str) -> &str {
    let cut = delivery_name.len().saturating_sub(EVENT_KEY_LEN);
    delivery_name.get(cut..).unwrap_or(delivery_name)
}

/// Name of the Job that `rule` of `route` runs for `event_id`.
pub fn job_name(route: &str, rule: &str, event_id: &str) -> String {
    job_name_for_run(route, rule, event_id, 0)
}

/// Name of the Job that `rule` of `route` runs for `event_id` in run `replay` (0: the original run;
/// replays carry `r<n>` before the hash, so each replay makes new Jobs and a person sees which).
pub fn job_name_for_run(route: &str, rule: &str, event_id: &str, replay: i32) -> String {
    if replay <= 0 {
        return join(
            &format!("{route}-{rule}"),
            &digest(&[route, rule, event_id], 10),
            MAX_LABEL,
        );
    }
    let n = replay.to_string();
    join(
        &format!("{route}-{rule}"),
        &format!("r{n}-{}", digest(&[route, rule, event_id, &n], 10)),
        MAX_LABEL,
    )
}

/// Hex of SHA-256 over the parts, separated so `("a-b","c")` and `("a","b-c")` differ.
fn digest(parts: &[&str], hex_len: usize) -> String {
    let mut h = Sha256::new();
    for p in parts {
        h.update((p.len() as u64).to_be_bytes());
        h.update(p.as_bytes());
    }
    let mut out = hex::encode(h.finalize());
    out.truncate(hex_len);
    out
}

/// `prefix-hash`, the prefix shortened so the whole fits `max` and never ends in `-` or `.`.
fn join(prefix: &str, hash: &str, max: usize) -> String {
    let room = max - hash.len() - 1;
    let mut p: String = prefix.chars().take(room).collect();
    while p.ends_with(['-', '.']) {
        p.pop();
    }
    if p.is_empty() {
        hash.to_owned()
    } else {
        format!("{p}-{hash}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_event_on_same_route_gets_the_same_delivery_name() {
        assert_eq!(
            delivery_name("release", "e1"),
            delivery_name("release", "e1")
        );
        assert_ne!(
            delivery_name("release", "e1"),
            delivery_name("release", "e2")
        );
        assert_ne!(delivery_name("release", "e1"), delivery_name("other", "e1"));
        assert!(delivery_name("release", "e1").starts_with("release-"));
    }

    #[test]
    fn the_event_key_is_the_hash_that_ends_the_delivery_name() {
        let name = delivery_name(&"r".repeat(300), "e1");
        let key = event_key_of(&name);
        assert_eq!(key.len(), EVENT_KEY_LEN);
        assert!(name.ends_with(&format!("-{key}")));
        assert_ne!(key, event_key_of(&delivery_name(&"r".repeat(300), "e2")));
    }

    #[test]
    fn each_replay_gets_its_own_job_name_showing_its_count() {
        let long = "a".repeat(200);
        let original = job_name_for_run("release", "submit", "e1", 0);
        assert_eq!(original, job_name("release", "submit", "e1"));
        let first = job_name_for_run(&long, "submit", "e1", 1);
        let second = job_name_for_run(&long, "submit", "e1", 2);
        assert!(first.len() <= 63 && second.len() <= 63);
        assert_ne!(first, second);
        assert!(second.contains("-r2-"), "{second}");
        assert!(job_name_for_run("release", "submit", "e1", 12).starts_with("release-submit-r12-"));
    }

    #[test]
    fn job_names_fit_a_label_even_for_long_routes() {
        let long = "a".repeat(200);
        let name = job_name(&long, "submit", "e1");
        assert!(name.len() <= 63, "{}", name.len());
        assert_ne!(
            job_name(&long, "submit", "e1"),
            job_name(&long, "submit", "e2")
        );
        assert_ne!(job_name("r", "a-b", "e"), job_name("r-a", "b", "e"));
    }

    #[test]
    fn truncation_never_leaves_a_trailing_dash() {
        let route = format!("{}-{}", "a".repeat(51), "b".repeat(20));
        let name = job_name(&route, "x", "e");
        assert!(!name.contains("--"), "{name}");
        assert!(name.len() <= 63);
    }
}

/// A label value for `s`: itself when it is a valid label value, otherwise a shortened form with a hash,
/// so a long route name or an odd event type still labels its objects.
pub fn label_value(s: &str) -> String {
    let valid = s.len() <= MAX_LABEL
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
        && s.starts_with(|c: char| c.is_ascii_alphanumeric())
        && s.ends_with(|c: char| c.is_ascii_alphanumeric());
    if valid || s.is_empty() {
        return s.to_owned();
    }
    let cleaned: String = s
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.') {
                c
            } else {
                '-'
            }
        })
        .collect();
    let trimmed = cleaned.trim_start_matches(|c: char| !c.is_ascii_alphanumeric());
    join(trimmed, &digest(&[s], 8), MAX_LABEL)
}

#[cfg(test)]
mod label_tests {
    use super::label_value;

    #[test]
    fn valid_label_values_pass_through_and_others_are_made_valid() {
        assert_eq!(
            label_value("buildUploadStateUpdated"),
            "buildUploadStateUpdated"
        );
        let long = label_value(&"r".repeat(100));
        assert!(long.len() <= 63);
        let odd = label_value("weird type/with spaces");
        assert!(
            odd.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-'),
            "{odd}"
        );
        assert_ne!(label_value(&"r".repeat(100)), label_value(&"r".repeat(101)));
    }
}
