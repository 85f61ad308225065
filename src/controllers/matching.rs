//! Which rules of a route an event triggers. Pure: the delivery controller and the benchmarks call it.

use crate::asc::event::EventType;
use crate::resources::route::{EventFilter, Rule};

/// The facts of an event that filters look at.
#[derive(Debug, Clone, Copy)]
pub struct EventFacts<'a> {
    /// `data.type` as Apple sent it.
    pub event_type: &'a str,
    /// The normalised new state.
    pub new_state: Option<&'a str>,
    /// The normalised old state.
    pub old_state: Option<&'a str>,
}

/// Whether `filter` selects the event. Empty lists match anything, except that an empty type list does not
/// match pings: a ping only proves the webhook works and should not start a release pipeline.
pub fn filter_matches(filter: &EventFilter, facts: EventFacts<'_>) -> bool {
    let event_type = EventType::parse(facts.event_type);
    let type_ok = if filter.event_types.is_empty() {
        event_type != EventType::WebhookPing
    } else {
        filter.event_types.iter().any(|t| event_type.matches(t))
    };
    type_ok
        && state_matches(&filter.new_states, facts.new_state)
        && state_matches(&filter.old_states, facts.old_state)
}

fn state_matches(wanted: &[String], actual: Option<&str>) -> bool {
    wanted.is_empty() || actual.is_some_and(|a| wanted.iter().any(|w| w.eq_ignore_ascii_case(a)))
}

/// The rules that `facts` trigger, in the route's order.
pub fn matching_rules<'r>(rules: &'r [Rule], facts: EventFacts<'_>) -> Vec<&'r Rule> {
    rules
        .iter()
        // A rule whose filter could not be read matches nothing: acting on every event is the one outcome
        // worse than acting on none. The route controller reports it as `InvalidRule`.
        .filter(|r| r.filter.as_ref().is_some_and(|f| filter_matches(f, facts)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resources::route::EnrichPolicy;

    fn rule(name: &str, types: &[&str], new: &[&str], old: &[&str]) -> Rule {
        Rule {
            name: name.into(),
            filter: Some(EventFilter {
                event_types: types.iter().map(|s| s.to_string()).collect(),
                new_states: new.iter().map(|s| s.to_string()).collect(),
                old_states: old.iter().map(|s| s.to_string()).collect(),
            }),
            enrich: EnrichPolicy::Optional,
            when: None,
            job: None,
            http: None,
            resource: None,
        }
    }

    fn facts<'a>(t: &'a str, new: Option<&'a str>, old: Option<&'a str>) -> EventFacts<'a> {
        EventFacts {
            event_type: t,
            new_state: new,
            old_state: old,
        }
    }

    #[test]
    fn both_spellings_of_a_type_match() {
        let rules = [
            rule("a", &["BUILD_UPLOAD_STATE_UPDATED"], &[], &[]),
            rule("b", &["buildUploadStateUpdated"], &[], &[]),
        ];
        let m = matching_rules(
            &rules,
            facts("buildUploadStateUpdated", Some("COMPLETE"), None),
        );
        assert_eq!(m.len(), 2);
    }

    #[test]
    fn new_state_filter_applies_across_event_families() {
        let rules = [rule("fail", &[], &["FAILED", "REJECTED"], &[])];
        assert_eq!(
            matching_rules(
                &rules,
                facts("buildUploadStateUpdated", Some("FAILED"), None)
            )
            .len(),
            1
        );
        assert_eq!(
            matching_rules(
                &rules,
                facts(
                    "appStoreVersionAppVersionStateUpdated",
                    Some("REJECTED"),
                    None
                )
            )
            .len(),
            1
        );
        assert!(
            matching_rules(
                &rules,
                facts("buildUploadStateUpdated", Some("COMPLETE"), None)
            )
            .is_empty()
        );
        assert!(
            matching_rules(
                &rules,
                facts("betaFeedbackCrashSubmissionCreated", None, None)
            )
            .is_empty()
        );
    }

    #[test]
    fn old_state_filter_narrows_the_match() {
        let rules = [rule(
            "r",
            &[],
            &["READY_FOR_DISTRIBUTION"],
            &["PENDING_DEVELOPER_RELEASE"],
        )];
        assert_eq!(
            matching_rules(
                &rules,
                facts(
                    "x",
                    Some("READY_FOR_DISTRIBUTION"),
                    Some("PENDING_DEVELOPER_RELEASE")
                )
            )
            .len(),
            1
        );
        assert!(
            matching_rules(
                &rules,
                facts(
                    "x",
                    Some("READY_FOR_DISTRIBUTION"),
                    Some("PROCESSING_FOR_DISTRIBUTION")
                )
            )
            .is_empty()
        );
        assert!(
            matching_rules(&rules, facts("x", Some("READY_FOR_DISTRIBUTION"), None)).is_empty()
        );
    }

    #[test]
    fn empty_filter_matches_everything_but_pings() {
        let rules = [rule("all", &[], &[], &[])];
        assert_eq!(
            matching_rules(&rules, facts("somethingAppleAddsNext", None, None)).len(),
            1
        );
        assert!(matching_rules(&rules, facts("webhookPingCreated", None, None)).is_empty());
        let pings = [rule("ping", &["WEBHOOK_PING_CREATED"], &[], &[])];
        assert_eq!(
            matching_rules(&pings, facts("webhookPingCreated", None, None)).len(),
            1
        );
    }

    #[test]
    fn a_rule_without_a_readable_filter_matches_nothing() {
        let mut r = rule("lost", &[], &[], &[]);
        r.filter = None;
        assert!(
            matching_rules(&[r], facts("buildUploadStateUpdated", Some("FAILED"), None)).is_empty()
        );
    }

    #[test]
    fn unknown_state_matches_only_when_named() {
        let rules = [rule("r", &[], &["BRAND_NEW_STATE"], &[])];
        assert_eq!(
            matching_rules(&rules, facts("x", Some("BRAND_NEW_STATE"), None)).len(),
            1
        );
        assert!(matching_rules(&rules, facts("x", Some("OTHER"), None)).is_empty());
    }
}
