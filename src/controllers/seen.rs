//! The route's record of events whose deliveries history pruning deleted (`status.seenEvents`).
//!
//! A delivery's name is what makes an event run once: a second create of the same name is refused. Once
//! pruning deletes the delivery that protection is gone, yet the event can come back: catch-up re-reads
//! Apple's log with an overlap (and from the lookback window after a lost checkpoint), and App Store
//! Connect can send an event again at any time. So pruning first writes the event's key into the route's
//! status, in the same write that counts the pruned delivery, and only then deletes it. The record
//! lives in the API server, so it outlives a restart and a leader change; catch-up skips what it holds,
//! and the delivery controller finishes a delivery it holds as `Duplicate` without running anything.
//!
//! Size: each entry is the 16 hex digits that end the delivery name, so 1,000 entries serialize to
//! 1,000 × 19 bytes (digits, quotes, comma) ≈ 19 KB, about 1.2 % of etcd's 1.5 MiB object limit, and a
//! list of strings without a list type is atomic under server-side apply, so `managedFields` names the
//! field once rather than each entry.

use crate::naming;
use crate::resources::WebhookRoute;
use crate::resources::seen_events::{EventKey, SeenEvents};

/// Entries kept; the oldest are forgotten first.
pub use crate::resources::seen_events::LIMIT;

/// `previous` with the keys of `pruned` (delivery names) added at the end, each once, at most [`LIMIT`]
/// entries (the oldest dropped). Pure.
pub fn remember<'a>(
    previous: &SeenEvents,
    pruned: impl IntoIterator<Item = &'a str>,
) -> SeenEvents {
    let mut out = previous.keys().to_vec();
    for key in pruned.into_iter().filter_map(key_of) {
        if !out.contains(&key) {
            out.push(key);
        }
    }
    let excess = out.len().saturating_sub(LIMIT);
    out.drain(..excess);
    SeenEvents::new(out)
}

/// Whether the route's record holds the event of delivery `name`. Pure.
pub fn holds(route: &WebhookRoute, name: &str) -> bool {
    key_of(name).is_some_and(|key| {
        route
            .status
            .as_ref()
            .is_some_and(|s| s.seen_events.contains(&key))
    })
}

/// The event key that ends delivery `name` (none for a name the operator did not make).
fn key_of(name: &str) -> Option<EventKey> {
    EventKey::parse(naming::event_key_of(name))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resources::route::WebhookRouteStatus;

    #[test]
    fn pruned_events_are_remembered_once_each_and_the_oldest_are_forgotten_past_the_limit() {
        let names: Vec<String> = (0..LIMIT + 5)
            .map(|n| naming::delivery_name("release", &format!("e-{n}")))
            .collect();
        let once = remember(
            &SeenEvents::default(),
            names[..3].iter().map(String::as_str),
        );
        let again = remember(&once, names[..3].iter().map(String::as_str));
        assert_eq!(once, again, "an event already held is not added twice");
        let all = remember(&again, names.iter().map(String::as_str));
        assert_eq!(all.len(), LIMIT);
        assert_eq!(
            all.keys()[0].as_str(),
            naming::event_key_of(&names[5]),
            "the oldest went first"
        );
        assert_eq!(
            all.keys()[LIMIT - 1].as_str(),
            naming::event_key_of(&names[LIMIT + 4])
        );

        let mut route = crate::receiver::record::tests::route();
        route.status = Some(WebhookRouteStatus {
            seen_events: all,
            ..Default::default()
        });
        assert!(holds(&route, &names[LIMIT + 4]));
        assert!(!holds(&route, &names[0]));
    }

    #[test]
    fn a_full_record_stays_far_below_the_object_limit() {
        let names: Vec<String> = (0..LIMIT)
            .map(|n| naming::delivery_name(&"r".repeat(253), &format!("event-{n}")))
            .collect();
        let status = WebhookRouteStatus {
            seen_events: remember(&SeenEvents::default(), names.iter().map(String::as_str)),
            ..Default::default()
        };
        let bytes = serde_json::to_vec(&status).unwrap().len();
        // 19 bytes an entry, plus the few other fields of an empty status.
        assert!(bytes <= LIMIT * 19 + 256, "{bytes} bytes");
        assert!(bytes * 50 < 1_572_864, "{bytes} bytes");
    }
}
