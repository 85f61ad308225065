//! Release timing: how long Apple takes with build uploads and app versions, folded from the state
//! changes the route's events report into `status.releaseTiming`. Pure.
//!
//! The fold is re-run over every delivery the route still holds at each route reconcile, on top of the
//! timing already in status (which keeps what pruned deliveries said). So it must give the same answer
//! however often an event is folded (idempotent), in whatever order events arrive (catch-up brings old
//! ones late), and it never makes a duration negative: states are ordered by their time, a state
//! change whose `from` names the state before it follows that state even when clocks disagree, and a
//! duration is only known once the next state says it came from this one — a missed event in between
//! leaves the duration open until catch-up recovers it, instead of counting review time as waiting.

pub mod metrics;
pub mod observe;

use crate::resources::release_timing::{
    ITEM_LIMIT, ItemKind, ReleaseTiming, STATE_LIMIT, StateSpan, TimeSource, TimedItem,
};
use crate::resources::seen_events::{EventKey, SeenEvents};
use jiff::Timestamp;
use std::collections::HashSet;

/// One state change of one build upload or app version, as a delivery reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Observation {
    /// Build or version.
    pub kind: ItemKind,
    /// The App Store Connect id of the instance.
    pub id: String,
    /// The state entered.
    pub state: String,
    /// The state left, as the event says.
    pub from: Option<String>,
    /// When the state was entered.
    pub at: Timestamp,
    /// Where `at` comes from.
    pub source: TimeSource,
    /// Version and build number, when enrichment fetched them.
    pub name: Option<String>,
    /// For a build reaching `COMPLETE` whose delivery finished: the actions it started.
    pub actions_started: Option<i32>,
}

/// Build states that end processing.
pub const BUILD_DONE: [&str; 2] = ["COMPLETE", "FAILED"];

/// States after which nothing is waited for any more: the in-flight gauge leaves these out.
pub const AT_REST: [&str; 8] = [
    "COMPLETE",
    "FAILED",
    "READY_FOR_DISTRIBUTION",
    "READY_FOR_SALE",
    "REPLACED_WITH_NEW_VERSION",
    "REMOVED_FROM_SALE",
    "DEVELOPER_REMOVED_FROM_SALE",
    "REMOVED_FROM_APP_STORE",
];

/// Whether `state` looks like one of Apple's state names: the states become metric labels, so anything
/// else (never seen from Apple) is not timed.
pub fn is_state_name(state: &str) -> bool {
    !state.is_empty()
        && state.len() <= 64
        && state.starts_with(|c: char| c.is_ascii_uppercase())
        && state
            .chars()
            .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_')
}

/// `ts` as stored in `enteredAt`/`since`: milliseconds kept, so durations of seconds stay exact.
pub fn format_at(ts: Timestamp) -> String {
    ts.strftime("%Y-%m-%dT%H:%M:%S%.3fZ").to_string()
}

#[derive(Debug, Clone)]
struct Span {
    state: String,
    at: Timestamp,
    source: TimeSource,
    from: Option<String>,
}

#[derive(Debug, Clone)]
struct Item {
    kind: ItemKind,
    id: String,
    name: Option<String>,
    spans: Vec<Span>,
    actions_started: Option<i32>,
    seconds_saved: Option<i64>,
}

impl Item {
    fn from_status(t: &TimedItem) -> Option<Item> {
        let spans = t
            .states
            .iter()
            .filter_map(|s| {
                Some(Span {
                    state: s.state.clone(),
                    at: crate::time::parse_ts(&s.entered_at)?,
                    source: s.time_source,
                    from: s.from.clone(),
                })
            })
            .collect::<Vec<_>>();
        (!spans.is_empty()).then(|| Item {
            kind: t.kind,
            id: t.id.clone(),
            name: (t.title != t.id).then(|| t.title.clone()),
            spans,
            actions_started: t.actions_started,
            seconds_saved: t.seconds_saved,
        })
    }

    fn new(o: &Observation) -> Item {
        Item {
            kind: o.kind,
            id: o.id.clone(),
            name: None,
            spans: Vec::new(),
            actions_started: None,
            seconds_saved: None,
        }
    }

    fn last_at(&self) -> Timestamp {
        self.spans.last().map_or(Timestamp::UNIX_EPOCH, |s| s.at)
    }

    fn add(&mut self, o: &Observation) {
        if o.name.is_some() {
            self.name.clone_from(&o.name);
        }
        if let Some(n) = o.actions_started {
            self.actions_started = Some(self.actions_started.map_or(n, |m| m.max(n)));
        }
        if self
            .spans
            .iter()
            .any(|s| s.state == o.state && s.at == o.at)
        {
            return;
        }
        self.spans.push(Span {
            state: o.state.clone(),
            at: o.at,
            source: o.source,
            from: o.from.clone(),
        });
        self.spans.sort_by_key(|s| s.at);
        follow_chains(&mut self.spans);
        // The same state twice in a row is one stay (an event seen again with another time): the
        // earlier entry is when it began.
        self.spans
            .dedup_by(|later, earlier| later.state == earlier.state);
        let excess = self.spans.len().saturating_sub(STATE_LIMIT);
        self.spans.drain(..excess);
    }

    /// Index of the first `COMPLETE` or `FAILED` of a build, after a state before it.
    fn done_at(&self) -> Option<usize> {
        if self.kind != ItemKind::Build {
            return None;
        }
        self.spans
            .iter()
            .position(|s| BUILD_DONE.contains(&s.state.as_str()))
            .filter(|i| *i > 0)
    }

    fn processing_seconds(&self) -> Option<i64> {
        let done = self.done_at()?;
        Some(whole_seconds(self.spans[0].at, self.spans[done].at))
    }

    /// Fixes `seconds_saved` once processing time and the actions of `COMPLETE` are both known;
    /// answers the seconds newly saved.
    fn settle_savings(&mut self) -> i64 {
        if self.seconds_saved.is_some() {
            return 0;
        }
        let complete = self
            .done_at()
            .is_some_and(|i| self.spans[i].state == "COMPLETE");
        match (complete, self.processing_seconds(), self.actions_started) {
            (true, Some(p), Some(n)) => {
                let saved = p.saturating_mul(i64::from(n.max(0)));
                self.seconds_saved = Some(saved);
                saved
            }
            _ => 0,
        }
    }

    fn to_status(&self) -> TimedItem {
        let last = self.spans.last();
        let states = self
            .spans
            .iter()
            .enumerate()
            .map(|(i, s)| StateSpan {
                state: s.state.clone(),
                entered_at: format_at(s.at),
                time_source: s.source,
                from: s.from.clone(),
                seconds: self
                    .spans
                    .get(i + 1)
                    .filter(|next| follows(next, s))
                    .map(|next| whole_seconds(s.at, next.at)),
            })
            .collect();
        TimedItem {
            kind: self.kind,
            id: self.id.clone(),
            title: self.name.clone().unwrap_or_else(|| self.id.clone()),
            state: last.map(|s| s.state.clone()).unwrap_or_default(),
            since: last.map(|s| format_at(s.at)).unwrap_or_default(),
            processing_seconds: self.processing_seconds(),
            actions_started: self.actions_started,
            seconds_saved: self.seconds_saved,
            states,
        }
    }
}

/// Whether `next` says it came from `prev` (an event without `from` is taken at its word).
fn follows(next: &Span, prev: &Span) -> bool {
    next.from.as_deref().is_none_or(|f| f == prev.state)
}

/// Puts a state change right after the one it says it came from when clocks put it first (a receipt
/// time and Apple's time a second apart): the order of states wins over the order of times.
fn follow_chains(spans: &mut [Span]) {
    for _ in 0..spans.len() {
        let mut swapped = false;
        for i in 0..spans.len().saturating_sub(1) {
            let (a, b) = (&spans[i], &spans[i + 1]);
            let inverted = a.from.as_deref() == Some(b.state.as_str())
                && b.from.as_deref() != Some(a.state.as_str());
            if inverted {
                spans.swap(i, i + 1);
                swapped = true;
            }
        }
        if !swapped {
            return;
        }
    }
}

/// Whole seconds from `a` to `b`, never negative.
fn whole_seconds(a: Timestamp, b: Timestamp) -> i64 {
    b.duration_since(a).as_secs().max(0)
}

/// Seconds from `a` to `b` with their milliseconds, never negative.
fn exact_seconds(a: Timestamp, b: Timestamp) -> f64 {
    b.duration_since(a).as_secs_f64().max(0.0)
}

/// `previous` with `observations` folded in: each item's states in order with the durations now known,
/// the most recently changed [`ITEM_LIMIT`] items, and the runner time saved. Folding an observation
/// again changes nothing; an observation older than every item kept when the list is full is of an
/// item already dropped, and is left out.
pub fn fold<'a>(
    previous: &ReleaseTiming,
    observations: impl IntoIterator<Item = &'a Observation>,
) -> ReleaseTiming {
    let mut items: Vec<Item> = previous
        .items
        .iter()
        .filter_map(Item::from_status)
        .collect();
    for o in observations {
        if !is_state_name(&o.state) || o.id.is_empty() {
            continue;
        }
        if let Some(item) = items.iter_mut().find(|i| i.kind == o.kind && i.id == o.id) {
            item.add(o);
            continue;
        }
        if items.len() >= ITEM_LIMIT && items.iter().all(|i| i.last_at() >= o.at) {
            continue;
        }
        let mut item = Item::new(o);
        item.add(o);
        items.push(item);
    }
    items.sort_by(|a, b| b.last_at().cmp(&a.last_at()).then_with(|| a.id.cmp(&b.id)));
    items.truncate(ITEM_LIMIT);
    let saved: i64 = items.iter_mut().map(Item::settle_savings).sum();
    ReleaseTiming {
        items: items.iter().map(Item::to_status).collect(),
        runner_seconds_saved: previous.runner_seconds_saved.saturating_add(saved),
    }
}

/// [`fold`] over the observations of the deliveries named, leaving out those whose event `seen` (the
/// route's `status.seenEvents`) holds: an event that came back after its first delivery was pruned was
/// folded before that pruning.
pub fn fold_deliveries<'a>(
    previous: &ReleaseTiming,
    seen: &SeenEvents,
    deliveries: impl IntoIterator<Item = (&'a str, &'a Observation)>,
) -> ReleaseTiming {
    let seen: HashSet<&str> = seen.keys().iter().map(EventKey::as_str).collect();
    let fresh = deliveries
        .into_iter()
        .filter(|(name, _)| !seen.contains(crate::naming::event_key_of(name)))
        .map(|(_, o)| o);
    fold(previous, fresh)
}

/// Something the status learned that a metric counts once.
#[derive(Debug, Clone, PartialEq)]
pub enum Learned {
    /// An app version left `state` after `seconds`.
    VersionState {
        /// The state left.
        state: String,
        /// Time spent in it.
        seconds: f64,
    },
    /// A build finished processing (`result`: `COMPLETE` or `FAILED`) after `seconds`.
    BuildProcessed {
        /// `COMPLETE` or `FAILED`.
        result: String,
        /// From the first state seen to the result.
        seconds: f64,
    },
    /// Runner seconds saved by a build's actions.
    Saved {
        /// Processing seconds times actions started.
        seconds: i64,
    },
}

fn at(s: &StateSpan) -> Option<Timestamp> {
    crate::time::parse_ts(&s.entered_at)
}

/// What `next` knows that `previous` did not: durations that became known, builds that finished
/// processing, savings fixed. The metrics observe exactly these after `next` is written, so a
/// reconcile that writes nothing new, a restart or a new leader re-reading the status counts nothing
/// twice.
pub fn learned(previous: &ReleaseTiming, next: &ReleaseTiming) -> Vec<Learned> {
    let mut out = Vec::new();
    for item in &next.items {
        let before = previous
            .items
            .iter()
            .find(|p| p.kind == item.kind && p.id == item.id);
        if item.kind == ItemKind::Version {
            out.extend(version_states_learned(item, before));
        }
        if item.processing_seconds.is_some()
            && before.is_none_or(|b| b.processing_seconds.is_none())
            && let Some(l) = processed(item)
        {
            out.push(l);
        }
        if let Some(s) = item.seconds_saved
            && before.is_none_or(|b| b.seconds_saved.is_none())
        {
            out.push(Learned::Saved { seconds: s });
        }
    }
    out
}

fn version_states_learned(item: &TimedItem, before: Option<&TimedItem>) -> Vec<Learned> {
    let known_before = |s: &StateSpan| {
        before.is_some_and(|b| {
            b.states
                .iter()
                .any(|p| p.state == s.state && p.entered_at == s.entered_at && p.seconds.is_some())
        })
    };
    item.states
        .windows(2)
        .filter(|w| w[0].seconds.is_some() && !known_before(&w[0]))
        .filter_map(|w| {
            Some(Learned::VersionState {
                state: w[0].state.clone(),
                seconds: exact_seconds(at(&w[0])?, at(&w[1])?),
            })
        })
        .collect()
}

fn processed(item: &TimedItem) -> Option<Learned> {
    let first = item.states.first()?;
    if BUILD_DONE.contains(&first.state.as_str()) {
        return None;
    }
    let done = item
        .states
        .iter()
        .skip(1)
        .find(|s| BUILD_DONE.contains(&s.state.as_str()))?;
    Some(Learned::BuildProcessed {
        result: done.state.clone(),
        seconds: exact_seconds(at(first)?, at(done)?),
    })
}

/// Items not at rest, as `(kind, state, seconds in it by now)`: the longest per kind and state.
pub fn in_flight(timing: &ReleaseTiming, now: Timestamp) -> Vec<(ItemKind, String, f64)> {
    let mut out: Vec<(ItemKind, String, f64)> = Vec::new();
    for item in &timing.items {
        if AT_REST.contains(&item.state.as_str()) || !is_state_name(&item.state) {
            continue;
        }
        let Some(since) = crate::time::parse_ts(&item.since) else {
            continue;
        };
        let seconds = exact_seconds(since, now);
        match out
            .iter_mut()
            .find(|(k, s, _)| *k == item.kind && *s == item.state)
        {
            Some(entry) => entry.2 = entry.2.max(seconds),
            None => out.push((item.kind, item.state.clone(), seconds)),
        }
    }
    out
}

#[cfg(test)]
mod tests;
