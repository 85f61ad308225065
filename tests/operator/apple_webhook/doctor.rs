//! `doctor` against the mock: all green for a good route; a key with the wrong issuer, a webhook deleted
//! in App Store Connect and a refused token scope each fail the line of the call, saying what to change.

use super::*;
use asc_webhook_operator::asc::origins::{AllowedOrigins, parse_origin};
use asc_webhook_operator::doctor::{Options, Report, Verdict, diagnose};

fn options(mock: &AscMock, scoped_tokens: bool) -> Options {
    Options {
        namespace: NS.to_owned(),
        route: "release".to_owned(),
        scoped_tokens,
        origins: AllowedOrigins::new([parse_origin(&mock.url()).unwrap()]),
        lookback: Duration::from_secs(24 * 3600),
    }
}

async fn doctor(api: &FakeApiServer, mock: &AscMock, scoped_tokens: bool) -> Report {
    let report = diagnose(api.client(), &options(mock, scoped_tokens))
        .await
        .unwrap();
    println!("{report}");
    report
}

fn line<'a>(report: &'a Report, request: &str) -> &'a asc_webhook_operator::doctor::Check {
    report
        .checks
        .iter()
        .find(|c| c.request.starts_with(request))
        .unwrap_or_else(|| panic!("no {request} line in\n{report}"))
}

#[tokio::test]
async fn doctor_is_green_for_a_good_route_and_names_the_call_and_fix_of_each_refusal() {
    let (api, mock) = world().await;
    let op = start_reachable(&api, &mock, &[]).await;
    managed_route(&api, "release", "", RULES).await;
    let id = webhook_id(&registered_and_verified(&api, "release").await);
    let sent = mock
        .send_event(&id, &fixture_for_mock("build-upload-complete", &mock))
        .await;
    assert_eq!(sent.unwrap().response_status, Some(202));
    eventually("the delivery is recorded", WAIT, || {
        let n = deliveries(&api).len();
        async move { (n >= 1).then_some(()) }
    })
    .await;
    op.stop().await;

    let good = doctor(&api, &mock, true).await;
    assert!(good.passed(), "{good}");
    assert_eq!(good.checks.len(), 6, "{good}");
    assert!(
        good.checks.iter().all(|c| c.verdict == Verdict::Ok),
        "{good}"
    );
    let log = line(&good, &format!("GET /v1/webhooks/{id}/deliveries"));
    assert!(!log.request.contains("deliveryState"), "{log}");
    assert!(
        line(&good, "GET http").note.contains("buildUploads"),
        "{good}"
    );

    mock.refuse_scoped_tokens(true);
    let refused = doctor(&api, &mock, true).await;
    assert!(!refused.passed());
    let app = line(&refused, "GET /v1/apps/1234567890");
    assert_eq!(
        (app.verdict, app.status),
        (Verdict::Fail, Some(401)),
        "{app}"
    );
    assert!(app.note.contains("--asc-token-scope=off"), "{app}");
    assert!(
        doctor(&api, &mock, false).await.passed(),
        "unscoped tokens work"
    );
    mock.refuse_scoped_tokens(false);

    assert!(mock.delete_webhook(&id));
    let revoked = doctor(&api, &mock, true).await;
    let hooks = line(&revoked, "GET /v1/apps/1234567890/webhooks");
    assert_eq!(hooks.verdict, Verdict::Fail, "{revoked}");
    assert!(
        hooks.note.contains(&format!("webhook {id}")) && hooks.note.contains("resync"),
        "{hooks}"
    );
    assert_eq!(line(&revoked, "GET /v1/webhooks/").verdict, Verdict::Skip);

    api.patch_object(
        "asccredentials",
        NS,
        "team",
        serde_json::json!({"spec": {"issuerId": "00000000-0000-0000-0000-000000000000"}}),
    )
    .unwrap();
    let wrong_issuer = doctor(&api, &mock, true).await;
    assert_eq!(
        line(&wrong_issuer, "mint").verdict,
        Verdict::Ok,
        "a token mints: only Apple can tell"
    );
    let app = line(&wrong_issuer, "GET /v1/apps/1234567890");
    assert_eq!(
        (app.verdict, app.status),
        (Verdict::Fail, Some(401)),
        "{app}"
    );
    assert!(
        app.note.contains("issuerId") && app.note.contains("AscCredential ios/team"),
        "{app}"
    );
    assert!(
        app.apple
            .as_deref()
            .unwrap_or_default()
            .contains("NOT_AUTHORIZED"),
        "{app}"
    );
}

#[tokio::test]
async fn doctor_warns_of_a_match_value_no_documented_event_has_and_names_the_nearest() {
    let (api, mock) = world().await;
    let typo = "    - name: submit\n      match: {eventTypes: [buildUploadStateUpdatedd], newStates: [COMPLET]}\n      http: {urlSecretRef: {name: slack, key: url}}\n";
    managed_route(&api, "release", "", typo).await;
    let report = doctor(&api, &mock, true).await;
    let rules = line(&report, "spec.rules[].match");
    assert_eq!(rules.verdict, Verdict::Warn, "{report}");
    for named in [
        "\"buildUploadStateUpdatedd\"",
        "\"buildUploadStateUpdated\"",
        "\"COMPLET\"",
        "\"COMPLETE\"",
    ] {
        assert!(rules.note.contains(named), "{rules}");
    }
    assert!(rules.to_string().starts_with("WARN"), "{rules}");
}
