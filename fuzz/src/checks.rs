//! The checks behind the fuzz targets, as plain functions. Each one takes arbitrary bytes, runs the code
//! under test on them and panics if a property is broken; the return value says which way the input went,
//! so replaying the committed seeds can also assert the expected outcome.
//!
//! Used twice: by the cargo-fuzz targets in `fuzz/fuzz_targets/` (through `fuzz/src/lib.rs`) and, under
//! `cargo test`, by `tests/operator/fuzz_corpus.rs`, which replays every committed seed and regression input
//! through the same functions. Depends only on the operator's library, `bytes` and `serde_json`.

use asc_webhook_operator::asc::event::{EventType, WebhookEvent};
use asc_webhook_operator::asc::signature::{self, SignatureError};
use asc_webhook_operator::controllers::matching::{EventFacts, filter_matches, matching_rules};
use asc_webhook_operator::naming;
use asc_webhook_operator::receiver::record::build_delivery;
use asc_webhook_operator::resources::route::{EnrichPolicy, EventFilter, Rule};
use asc_webhook_operator::resources::{SecretKeySelector, WebhookRoute, WebhookRouteSpec};
use bytes::Bytes;
use serde_json::Value;
use std::sync::LazyLock;

const SCHEME: &str = "hmacsha256=";

/// Splits `header\nsecret\nbody`; missing parts are empty. The body keeps every byte after the second
/// newline, so a seed is a signature vector written out as text.
fn split_signature_input(data: &[u8]) -> (&[u8], &[u8], &[u8]) {
    let mut parts = data.splitn(3, |b| *b == b'\n');
    let header = parts.next().unwrap_or_default();
    let secret = parts.next().unwrap_or_default();
    let body = parts.next().unwrap_or_default();
    (header, secret, body)
}

fn hex_value(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}

/// An independent reading of the header grammar: optional surrounding whitespace, `hmacsha256=` in any
/// ASCII case, then exactly 64 hex digits in any case.
fn oracle_digest(header: &str) -> Option<[u8; 32]> {
    let t = header.trim().as_bytes();
    if t.len() != SCHEME.len() + 64 || !t[..SCHEME.len()].eq_ignore_ascii_case(SCHEME.as_bytes()) {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, pair) in t[SCHEME.len()..].chunks(2).enumerate() {
        out[i] = (hex_value(pair[0])? << 4) | hex_value(pair[1])?;
    }
    Some(out)
}

/// `signature_header`: `parse_header` and `verify` on an arbitrary header, secret and body.
///
/// Properties: `parse_header` agrees with the independent grammar above (and says `Missing` exactly for a
/// blank header); `verify` succeeds exactly when the header's digest is the HMAC of this body with this
/// secret, and otherwise names the right reason; `sign` produces Apple's lowercase form, which verifies in
/// either case and stops verifying when the body changes. Returns whether the given header verified.
pub fn signature_header(data: &[u8]) -> bool {
    let (header, secret, body) = split_signature_input(data);
    let header = String::from_utf8_lossy(header);

    let parsed = signature::parse_header(&header);
    let oracle = oracle_digest(&header);
    match (&parsed, oracle) {
        (Ok(d), Some(o)) => assert_eq!(*d, o, "parse_header digest differs for {header:?}"),
        (Err(SignatureError::Missing), None) => {
            assert!(header.trim().is_empty(), "{header:?} called missing")
        }
        (Err(SignatureError::Malformed), None) => {
            assert!(!header.trim().is_empty(), "blank header called malformed")
        }
        (other, o) => panic!("parse_header({header:?}) = {other:?}, grammar says {o:?}"),
    }

    let signed = signature::sign(secret, body);
    assert!(signed.starts_with(SCHEME), "{signed}");
    assert_eq!(signed.len(), SCHEME.len() + 64, "{signed}");
    assert!(
        signed[SCHEME.len()..]
            .bytes()
            .all(|c| c.is_ascii_digit() || (b'a'..=b'f').contains(&c)),
        "sign must give lowercase hex: {signed}"
    );
    let expected = oracle_digest(&signed).expect("sign's own output parses");
    assert_eq!(signature::verify(secret, body, Some(&signed)), Ok(()));
    assert_eq!(
        signature::verify(secret, body, Some(&signed.to_ascii_uppercase())),
        Ok(())
    );
    assert_eq!(
        signature::verify(secret, body, None),
        Err(SignatureError::Missing)
    );
    if let Some((last, rest)) = body.split_last() {
        let mut changed = rest.to_vec();
        changed.push(last ^ 0x01);
        assert_eq!(
            signature::verify(secret, &changed, Some(&signed)),
            Err(SignatureError::Mismatch),
            "a changed body byte must not verify"
        );
    }

    let verdict = signature::verify(secret, body, Some(&header));
    let want = match oracle {
        None if header.trim().is_empty() => Err(SignatureError::Missing),
        None => Err(SignatureError::Malformed),
        Some(d) if d == expected => Ok(()),
        Some(_) => Err(SignatureError::Mismatch),
    };
    assert_eq!(verdict, want, "verify disagrees for header {header:?}");
    verdict.is_ok()
}

static ROUTE: LazyLock<WebhookRoute> = LazyLock::new(|| {
    let mut route = WebhookRoute::new(
        "release",
        WebhookRouteSpec {
            service_account_name: None,
            secret_ref: SecretKeySelector {
                name: "asc-webhook".into(),
                key: "secret".into(),
                namespace: None,
            },
            credential_ref: None,
            rules: vec![],
            delivery_history_limit: None,
            app_store_connect: None,
            suspend: false,
        },
    );
    route.metadata.namespace = Some("ios".into());
    route.metadata.uid = Some("7d3c1e4a-2f4e-4b9d-8c5f-1a2b3c4d5e6f".into());
    route
});

/// A Kubernetes label value: empty, or at most 63 of `[A-Za-z0-9._-]` beginning and ending alphanumeric.
fn is_label_value(s: &str) -> bool {
    s.is_empty()
        || (s.len() <= 63
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
            && s.as_bytes()[0].is_ascii_alphanumeric()
            && s.as_bytes()[s.len() - 1].is_ascii_alphanumeric())
}

/// A DNS-1123 subdomain, the rule for object names.
fn is_object_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 253
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'-' | b'.'))
        && s.as_bytes()[0].is_ascii_alphanumeric()
        && s.as_bytes()[s.len() - 1].is_ascii_alphanumeric()
}

/// `event_parse`: `WebhookEvent::parse` on arbitrary bytes.
///
/// Properties: never panics; an accepted body comes back byte for byte (`raw`, `raw_str`, so it must be
/// UTF-8) and is JSON whose `data.id`/`data.type` are what the event reports; a `newState`/`oldState` string is the event's
/// state; and the `WebhookDelivery` built from it has a valid, deterministic name, valid label values and the
/// payload untouched. Returns whether the body was accepted as an event.
pub fn event_parse(data: &[u8]) -> bool {
    let event = match WebhookEvent::parse(Bytes::copy_from_slice(data)) {
        Ok(event) => event,
        Err(e) => {
            assert!(!e.to_string().is_empty(), "a refusal must give its reason");
            return false;
        }
    };
    assert_eq!(event.raw().as_ref(), data, "raw bytes must round-trip");
    assert_eq!(
        event.raw_str().as_bytes(),
        data,
        "an accepted body is UTF-8 and raw_str returns all of it"
    );

    let value: Value = match serde_json::from_slice(data) {
        Ok(value) => value,
        Err(e) => {
            // The event parser skips fields it does not know without decoding them, so a `\uD800` escape
            // (a lone surrogate: allowed by the JSON grammar, refused by serde_json's string decoder) in such
            // a field passes. Harmless: nothing decodes those fields later. Anything else is a finding.
            let why = e.to_string();
            assert!(
                why.contains("escape") || why.contains("unicode code point"),
                "accepted body is not JSON: {why}"
            );
            return true;
        }
    };
    let id = value.pointer("/data/id").and_then(Value::as_str);
    assert_eq!(id, Some(event.id.as_str()), "data.id");
    assert!(!event.id.trim().is_empty(), "blank id accepted");
    let kind = value
        .pointer("/data/type")
        .and_then(Value::as_str)
        .expect("data.type is a string");
    assert!(!kind.trim().is_empty(), "blank type accepted");
    assert!(
        event.event_type.matches(kind),
        "{kind:?} vs {:?}",
        event.event_type
    );
    if let EventType::Other(s) = &event.event_type {
        assert_eq!(s, kind, "unknown types are kept verbatim");
    }
    for (key, got) in [
        ("newState", &event.new_state),
        ("oldState", &event.old_state),
    ] {
        let sent = value
            .pointer(&format!("/data/attributes/{key}"))
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty());
        if let Some(sent) = sent {
            assert_eq!(got.as_deref(), Some(sent), "{key}");
        }
        if let Some(got) = got {
            assert!(!got.is_empty(), "empty {key} reported as a state");
        }
    }

    let delivery = build_delivery(&ROUTE, &event, None, "2026-01-01T00:00:00Z");
    let name = delivery.metadata.name.as_deref().unwrap_or_default();
    assert_eq!(name, naming::delivery_name("release", &event.id));
    assert!(is_object_name(name), "invalid delivery name {name:?}");
    for (k, v) in delivery.metadata.labels.iter().flatten() {
        assert!(
            is_label_value(v),
            "label {k}={v:?} is not a valid label value"
        );
    }
    assert_eq!(delivery.spec.payload.as_bytes(), data, "payload altered");
    assert_eq!(delivery.spec.event_id, event.id);
    assert!(delivery.metadata.owner_references.is_some());
    true
}

/// The SCREAMING_SNAKE subscription spelling of a camelCase type name.
fn screaming_snake(camel: &str) -> String {
    let mut out = String::with_capacity(camel.len() + 8);
    for (i, c) in camel.chars().enumerate() {
        if i > 0 && c.is_ascii_uppercase() {
            out.push('_');
        }
        out.push(c.to_ascii_uppercase());
    }
    out
}

/// Underscores dropped, ASCII case folded: the one notion of "same type name".
fn normalized(s: &str) -> Vec<u8> {
    s.bytes()
        .filter(|c| *c != b'_')
        .map(|c| c.to_ascii_lowercase())
        .collect()
}

/// A filter list from one line: empty line, empty list; otherwise the comma-separated entries.
fn list(line: Option<&str>) -> Vec<String> {
    match line {
        None | Some("") => Vec::new(),
        Some(l) => l.split(',').map(str::to_owned).collect(),
    }
}

/// `rule_matching`: the delivery controller's rule matching (`controllers::matching`) on an arbitrary event
/// and filter, written as up to six lines (lossy UTF-8; missing lines are empty):
/// `event type \n filter types \n new state \n old state \n filter new states \n filter old states`, lists
/// comma-separated.
///
/// Properties: `EventType` matches its own spelling, Apple's camelCase name and the SCREAMING_SNAKE
/// subscription name, and `parse(a).matches(b)` holds exactly when the names are equal ignoring underscores
/// and ASCII case, in both directions. `filter_matches` agrees with the matching rule of docs/RESOURCES.md, restated
/// independently: an empty type list takes every type but pings, otherwise one entry must name the type in
/// either spelling; each state list is empty or names the state (ASCII case ignored); a filter written with
/// the other spelling of the type decides the same; `matching_rules` keeps exactly the matching rules, in
/// order. Returns whether the filter selects the event.
pub fn rule_matching(data: &[u8]) -> bool {
    let text = String::from_utf8_lossy(data);
    let mut lines = text.split('\n');
    let a = lines.next().unwrap_or_default();
    let b = lines.next();
    let new_state = lines.next().filter(|l| !l.is_empty());
    let old_state = lines.next().filter(|l| !l.is_empty());
    let new_states = list(lines.next());
    let old_states = list(lines.next());

    let parsed = EventType::parse(a);
    assert!(parsed.matches(a), "{a:?} does not match itself");
    assert!(parsed.matches(parsed.as_str()));
    let snake = screaming_snake(parsed.as_str());
    assert!(parsed.matches(&snake), "{parsed:?} vs {snake:?}");
    assert_eq!(parsed.to_string(), parsed.as_str());
    if !matches!(parsed, EventType::Other(_)) {
        assert_eq!(EventType::parse(&snake), parsed, "{snake:?}");
        assert_eq!(EventType::parse(parsed.as_str()), parsed);
    }
    for entry in b
        .map(|b| b.split(',').collect::<Vec<_>>())
        .unwrap_or_default()
    {
        let matched = parsed.matches(entry);
        assert_eq!(
            matched,
            normalized(a) == normalized(entry),
            "{a:?} vs filter {entry:?}"
        );
        assert_eq!(matched, EventType::parse(entry).matches(a), "not symmetric");
    }

    let filter = EventFilter {
        event_types: list(b),
        new_states,
        old_states,
    };
    let facts = EventFacts {
        event_type: a,
        new_state,
        old_state,
    };
    let got = filter_matches(&filter, facts);

    let ping = normalized(a) == normalized("webhookPingCreated");
    let type_ok = if filter.event_types.is_empty() {
        !ping
    } else {
        filter
            .event_types
            .iter()
            .any(|t| normalized(t) == normalized(a))
    };
    let state_ok = |wanted: &[String], actual: Option<&str>| {
        wanted.is_empty()
            || actual.is_some_and(|s| wanted.iter().any(|w| w.eq_ignore_ascii_case(s)))
    };
    let want = type_ok
        && state_ok(&filter.new_states, new_state)
        && state_ok(&filter.old_states, old_state);
    assert_eq!(got, want, "filter {filter:?} on {facts:?}");

    // The other spelling of the event's own type in the filter decides the same.
    let respelled = EventFilter {
        event_types: filter
            .event_types
            .iter()
            .map(|t| {
                if normalized(t) == normalized(a) {
                    screaming_snake(parsed.as_str())
                } else {
                    t.clone()
                }
            })
            .collect(),
        ..filter.clone()
    };
    assert_eq!(
        filter_matches(&respelled, facts),
        got,
        "spelling changed the match"
    );

    let rule = |name: &str, filter: EventFilter| Rule {
        name: name.into(),
        filter: Some(filter),
        enrich: EnrichPolicy::Never,
        when: None,
        job: None,
        http: None,
        resource: None,
    };
    let rules = [
        rule("first", filter.clone()),
        // Names no event: a type that no spelling of `a` equals.
        rule(
            "never",
            EventFilter {
                event_types: vec![format!("{a}x")],
                ..EventFilter::default()
            },
        ),
        rule("again", filter),
    ];
    let names: Vec<&str> = matching_rules(&rules, facts)
        .iter()
        .map(|r| r.name.as_str())
        .collect();
    let expected: &[&str] = if got { &["first", "again"] } else { &[] };
    assert_eq!(names, expected);
    got
}
