use super::*;

const BUILD: &str = "3f1c2a9e-7b44-4d2e-9a51-0c8e2f6d1b77";
const VERSION: &str = "b8e5c7d1-2f6a-4e9b-8c3d-7a1f5e0b9c24";

fn obs(kind: ItemKind, id: &str, from: Option<&str>, state: &str, at: &str) -> Observation {
    Observation {
        kind,
        id: id.into(),
        state: state.into(),
        from: from.map(str::to_owned),
        at: at.parse().unwrap(),
        source: match kind {
            ItemKind::Build => TimeSource::Received,
            ItemKind::Version => TimeSource::Apple,
        },
        name: None,
        actions_started: None,
    }
}

fn build(from: Option<&str>, state: &str, at: &str) -> Observation {
    obs(ItemKind::Build, BUILD, from, state, at)
}

fn version(from: &str, state: &str, at: &str) -> Observation {
    obs(ItemKind::Version, VERSION, Some(from), state, at)
}

/// Upload → processing → complete (20 minutes), then review: 20 h waiting, 28 min in review, 4 days
/// pending the developer's release.
fn release() -> Vec<Observation> {
    let mut complete = build(Some("PROCESSING"), "COMPLETE", "2026-12-01T10:20:00.500Z");
    complete.actions_started = Some(2);
    vec![
        build(
            Some("AWAITING_UPLOAD"),
            "PROCESSING",
            "2026-12-01T10:00:00.250Z",
        ),
        complete,
        version(
            "READY_FOR_REVIEW",
            "WAITING_FOR_REVIEW",
            "2026-12-01T11:00:00Z",
        ),
        version("WAITING_FOR_REVIEW", "IN_REVIEW", "2026-12-02T07:00:00Z"),
        version(
            "IN_REVIEW",
            "PENDING_DEVELOPER_RELEASE",
            "2026-12-02T07:28:00Z",
        ),
        version(
            "PENDING_DEVELOPER_RELEASE",
            "READY_FOR_DISTRIBUTION",
            "2026-12-06T07:28:00Z",
        ),
    ]
}

fn folded(observations: &[Observation]) -> ReleaseTiming {
    fold(&ReleaseTiming::default(), observations)
}

fn item<'a>(t: &'a ReleaseTiming, id: &str) -> &'a TimedItem {
    t.items.iter().find(|i| i.id == id).unwrap()
}

fn seconds(t: &ReleaseTiming, id: &str) -> Vec<(String, Option<i64>)> {
    item(t, id)
        .states
        .iter()
        .map(|s| (s.state.clone(), s.seconds))
        .collect()
}

fn s(state: &str, seconds: Option<i64>) -> (String, Option<i64>) {
    (state.into(), seconds)
}

#[test]
fn a_release_in_order_gives_every_state_its_duration_and_the_build_its_processing_time() {
    let t = folded(&release());
    assert_eq!(
        seconds(&t, VERSION),
        vec![
            s("WAITING_FOR_REVIEW", Some(72_000)),
            s("IN_REVIEW", Some(1_680)),
            s("PENDING_DEVELOPER_RELEASE", Some(345_600)),
            s("READY_FOR_DISTRIBUTION", None),
        ]
    );
    let b = item(&t, BUILD);
    assert_eq!(b.processing_seconds, Some(1_200));
    assert_eq!(
        (b.state.as_str(), b.since.as_str()),
        ("COMPLETE", "2026-12-01T10:20:00.500Z")
    );
    assert_eq!(b.states[0].time_source, TimeSource::Received);
    assert_eq!(t.items[0].id, VERSION, "the most recently changed first");
    assert_eq!(t.items[0].since, "2026-12-06T07:28:00.000Z");
    assert_eq!(
        b.seconds_saved,
        Some(2_400),
        "20 minutes for each of two actions"
    );
    assert_eq!(t.runner_seconds_saved, 2_400);
}

#[test]
fn folding_the_same_events_again_changes_nothing_and_teaches_the_metrics_nothing() {
    let once = folded(&release());
    let twice = fold(&once, &release());
    assert_eq!(twice, once);
    assert!(learned(&once, &twice).is_empty());
    let doubled: Vec<Observation> = release().into_iter().chain(release()).collect();
    assert_eq!(folded(&doubled), once, "a duplicate within one pass too");
}

#[test]
fn events_in_any_order_give_the_same_durations() {
    let in_order = folded(&release());
    let mut reversed = release();
    reversed.reverse();
    assert_eq!(folded(&reversed), in_order);
    // One at a time, newest first, each fold on top of the status the last one wrote.
    let mut t = ReleaseTiming::default();
    for o in reversed.iter() {
        t = fold(&t, std::slice::from_ref(o));
    }
    assert_eq!(t, in_order);
}

#[test]
fn a_missed_event_leaves_the_state_before_it_open_until_catch_up_brings_it() {
    let mut events = release();
    let in_review = events.remove(3);
    let without = folded(&events);
    assert_eq!(
        seconds(&without, VERSION)[..2],
        [
            s("WAITING_FOR_REVIEW", None),
            s("PENDING_DEVELOPER_RELEASE", Some(345_600))
        ],
        "review time is not counted as waiting"
    );
    let caught_up = fold(&without, [&in_review]);
    assert_eq!(caught_up, folded(&release()));
    let states: Vec<Learned> = learned(&without, &caught_up);
    assert_eq!(
        states,
        vec![
            Learned::VersionState {
                state: "WAITING_FOR_REVIEW".into(),
                seconds: 72_000.0
            },
            Learned::VersionState {
                state: "IN_REVIEW".into(),
                seconds: 1_680.0
            },
        ],
        "the two durations the late event completed, and nothing learned before"
    );
}

#[test]
fn an_event_seen_again_with_a_later_receipt_time_is_one_stay() {
    let first = folded(&release()[..1]);
    let again = fold(
        &first,
        [&build(
            Some("AWAITING_UPLOAD"),
            "PROCESSING",
            "2026-12-01T10:05:00Z",
        )],
    );
    assert_eq!(again, first);
}

#[test]
fn clocks_that_disagree_never_count_backwards() {
    // COMPLETE recovered with Apple's log time, a second before our receipt time of PROCESSING.
    let mut complete = build(Some("PROCESSING"), "COMPLETE", "2026-12-01T10:00:00Z");
    complete.source = TimeSource::DeliveryLog;
    let t = folded(&[
        complete,
        build(
            Some("AWAITING_UPLOAD"),
            "PROCESSING",
            "2026-12-01T10:00:01Z",
        ),
    ]);
    let b = item(&t, BUILD);
    assert_eq!(b.state, "COMPLETE", "the order of states wins");
    assert_eq!(b.processing_seconds, Some(0));
    assert_eq!(
        seconds(&t, BUILD),
        vec![s("PROCESSING", Some(0)), s("COMPLETE", None)]
    );
    match &learned(&ReleaseTiming::default(), &t)[..] {
        [Learned::BuildProcessed { seconds, .. }] => assert_eq!(*seconds, 0.0),
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_restart_in_the_middle_of_review_loses_nothing() {
    let events = release();
    let before_restart = folded(&events[..4]);
    // What the API server keeps: the status as JSON. The deliveries before it may be pruned since.
    let stored: ReleaseTiming =
        serde_json::from_value(serde_json::to_value(&before_restart).unwrap()).unwrap();
    let after = fold(&stored, &events[4..]);
    assert_eq!(after, folded(&events));
    let learned_after = learned(&stored, &after);
    assert_eq!(
        learned_after,
        vec![
            Learned::VersionState {
                state: "IN_REVIEW".into(),
                seconds: 1_680.0
            },
            Learned::VersionState {
                state: "PENDING_DEVELOPER_RELEASE".into(),
                seconds: 345_600.0
            },
        ],
        "only what the status did not hold yet"
    );
}

#[test]
fn processing_time_is_learned_once_and_savings_are_fixed_once() {
    let t = folded(&release()[..1]);
    let mut complete = release().remove(1);
    complete.actions_started = None;
    let done = fold(&t, [&complete]);
    assert_eq!(
        item(&done, BUILD).seconds_saved,
        None,
        "the delivery is not over"
    );
    assert_eq!(
        learned(&t, &done),
        vec![Learned::BuildProcessed {
            result: "COMPLETE".into(),
            seconds: 1_200.25
        }]
    );
    complete.actions_started = Some(1);
    let counted = fold(&done, [&complete]);
    assert_eq!(
        learned(&done, &counted),
        vec![Learned::Saved { seconds: 1_200 }]
    );
    assert_eq!(counted.runner_seconds_saved, 1_200);
    complete.actions_started = Some(3);
    let later = fold(&counted, [&complete]);
    assert_eq!(later.runner_seconds_saved, 1_200, "counted once, as it was");
    assert!(learned(&counted, &later).is_empty());
}

#[test]
fn a_failed_build_saves_nothing() {
    let t = folded(&[
        build(
            Some("AWAITING_UPLOAD"),
            "PROCESSING",
            "2026-12-01T10:00:00Z",
        ),
        build(Some("PROCESSING"), "FAILED", "2026-12-01T10:03:00Z"),
    ]);
    assert_eq!(item(&t, BUILD).processing_seconds, Some(180));
    assert_eq!(t.runner_seconds_saved, 0);
    assert_eq!(
        learned(&ReleaseTiming::default(), &t),
        vec![Learned::BuildProcessed {
            result: "FAILED".into(),
            seconds: 180.0
        }]
    );
}

#[test]
fn only_the_ten_most_recently_changed_items_are_kept_and_a_dropped_one_stays_dropped() {
    let events: Vec<Observation> = (0..12)
        .map(|n| {
            obs(
                ItemKind::Build,
                &format!("b-{n:02}"),
                None,
                "PROCESSING",
                &format!("2026-12-01T10:{n:02}:00Z"),
            )
        })
        .collect();
    let t = folded(&events);
    assert_eq!(t.items.len(), ITEM_LIMIT);
    assert_eq!(t.items[0].id, "b-11");
    assert_eq!(t.items[9].id, "b-02");
    assert_eq!(
        fold(&t, &events),
        t,
        "the events of b-00 and b-01 bring nothing back"
    );
    let newer = obs(
        ItemKind::Build,
        "b-00",
        Some("PROCESSING"),
        "COMPLETE",
        "2026-12-01T11:00:00Z",
    );
    assert_eq!(fold(&t, [&newer]).items[0].id, "b-00", "a new change does");
}

#[test]
fn an_item_keeps_its_last_sixteen_states() {
    let events: Vec<Observation> = (0..20)
        .map(|n| {
            let (from, to) = if n % 2 == 0 {
                ("IN_REVIEW", "WAITING_FOR_REVIEW")
            } else {
                ("WAITING_FOR_REVIEW", "IN_REVIEW")
            };
            version(from, to, &format!("2026-12-01T10:{n:02}:00Z"))
        })
        .collect();
    let t = folded(&events);
    let states = &item(&t, VERSION).states;
    assert_eq!(states.len(), STATE_LIMIT);
    assert_eq!(states[0].entered_at, "2026-12-01T10:04:00.000Z");
    assert!(states[..15].iter().all(|s| s.seconds == Some(60)));
}

#[test]
fn a_state_that_is_not_an_apple_state_name_is_not_timed() {
    for bad in ["", "in_review", "IN REVIEW", "{{x}}", &"X".repeat(65)] {
        let t = folded(&[version("READY_FOR_REVIEW", bad, "2026-12-01T10:00:00Z")]);
        assert!(t.is_empty(), "{bad:?}");
    }
    assert!(is_state_name("WAITING_FOR_EXPORT_COMPLIANCE"));
}

#[test]
fn the_name_follows_enrichment_and_falls_back_to_the_id() {
    let mut events = release();
    assert_eq!(item(&folded(&events), VERSION).title, VERSION);
    events[3].name = Some("1.4.0".into());
    let t = folded(&events);
    assert_eq!(item(&t, VERSION).title, "1.4.0");
    assert_eq!(fold(&t, &release()), t, "a later event without it keeps it");
}

#[test]
fn in_flight_gives_the_longest_stay_per_state_and_leaves_finished_items_out() {
    let mut events = release();
    events.truncate(4);
    events.push(obs(
        ItemKind::Version,
        "other",
        Some("WAITING_FOR_REVIEW"),
        "IN_REVIEW",
        "2026-12-02T07:10:00Z",
    ));
    let t = folded(&events);
    let now: Timestamp = "2026-12-02T08:00:00Z".parse().unwrap();
    assert_eq!(
        in_flight(&t, now),
        vec![(ItemKind::Version, "IN_REVIEW".to_owned(), 3_600.0)],
        "the COMPLETE build is at rest; of two versions in review, the longer"
    );
}
