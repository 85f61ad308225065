//! Status conditions, shaped like `metav1.Condition`, and the one rule every controller follows when
//! writing them: `lastTransitionTime` moves only when `status` flips.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// `status` value of a condition that holds.
pub const TRUE: &str = "True";
/// `status` value of a condition that does not hold.
pub const FALSE: &str = "False";
/// `status` value when the controller cannot tell yet.
pub const UNKNOWN: &str = "Unknown";

/// One aspect of a resource's state, as `kubectl describe` and Argo CD read it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Condition {
    /// Kind of condition, e.g. `Ready`.
    #[serde(rename = "type")]
    pub type_: String,
    /// `True`, `False` or `Unknown`.
    pub status: String,
    /// One CamelCase word a person can look up in the README's troubleshooting table.
    pub reason: String,
    /// What happened and what to do about it, for a person.
    #[serde(default)]
    pub message: String,
    /// When `status` last changed (RFC 3339).
    pub last_transition_time: String,
    /// The `metadata.generation` this condition was computed from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
}

impl Condition {
    /// A condition observed now; `lastTransitionTime` is settled by [`merge`].
    pub fn new(type_: &str, holds: bool, reason: &str, message: impl Into<String>) -> Self {
        Condition {
            type_: type_.to_owned(),
            status: if holds { TRUE } else { FALSE }.to_owned(),
            reason: reason.to_owned(),
            message: message.into(),
            last_transition_time: String::new(),
            observed_generation: None,
        }
    }

    /// Whether this condition's status is `True`.
    pub fn is_true(&self) -> bool {
        self.status == TRUE
    }
}

/// Merges freshly computed conditions into the previous ones: each keeps its old `lastTransitionTime` unless
/// its status flipped, and every condition carries `generation`. Conditions not recomputed are kept as they were.
pub fn merge(
    previous: &[Condition],
    fresh: Vec<Condition>,
    generation: Option<i64>,
    now: &str,
) -> Vec<Condition> {
    let mut out: Vec<Condition> = previous
        .iter()
        .filter(|p| !fresh.iter().any(|f| f.type_ == p.type_))
        .cloned()
        .collect();
    for mut c in fresh {
        c.observed_generation = generation;
        c.last_transition_time = match previous.iter().find(|p| p.type_ == c.type_) {
            Some(p) if p.status == c.status && !p.last_transition_time.is_empty() => {
                p.last_transition_time.clone()
            }
            _ => now.to_owned(),
        };
        out.push(c);
    }
    out.sort_by(|a, b| a.type_.cmp(&b.type_));
    out
}

/// Finds a condition by type.
pub fn find<'a>(conditions: &'a [Condition], type_: &str) -> Option<&'a Condition> {
    conditions.iter().find(|c| c.type_ == type_)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transition_time_stays_while_status_holds() {
        let first = merge(
            &[],
            vec![Condition::new("Ready", false, "SecretNotFound", "x")],
            Some(1),
            "t1",
        );
        assert_eq!(first[0].last_transition_time, "t1");
        let again = merge(
            &first,
            vec![Condition::new("Ready", false, "KeyInvalid", "y")],
            Some(2),
            "t2",
        );
        assert_eq!(again[0].last_transition_time, "t1");
        assert_eq!(again[0].reason, "KeyInvalid");
        assert_eq!(again[0].observed_generation, Some(2));
    }

    #[test]
    fn transition_time_moves_on_a_flip() {
        let first = merge(
            &[],
            vec![Condition::new("Ready", false, "A", "")],
            Some(1),
            "t1",
        );
        let flipped = merge(
            &first,
            vec![Condition::new("Ready", true, "B", "")],
            Some(1),
            "t2",
        );
        assert_eq!(flipped[0].last_transition_time, "t2");
        assert!(flipped[0].is_true());
    }

    #[test]
    fn conditions_not_recomputed_are_kept() {
        let first = merge(
            &[],
            vec![Condition::new("Verified", true, "A", "")],
            Some(1),
            "t1",
        );
        let next = merge(
            &first,
            vec![Condition::new("Ready", true, "B", "")],
            Some(1),
            "t2",
        );
        assert_eq!(next.len(), 2);
        assert!(find(&next, "Verified").is_some());
    }
}
