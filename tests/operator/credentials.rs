//! `AscCredential` against the fake API server: each way a key can be wrong shows up as a reason a person
//! can act on, and fixing the Secret makes the credential ready without a restart.

use crate::harness::*;
use crate::world::test_key_pem;
use asc_webhook_operator::resources::{AscCredential, Condition};
use std::time::Duration;
use testkit::asc_mock::{TEST_ISSUER_ID, TEST_KEY_ID};

async fn credential(api: &testkit::apiserver::FakeApiServer, name: &str, extra: &str) {
    let yaml = format!(
        "apiVersion: asc.webhooks.dev/v1alpha1\nkind: AscCredential\nmetadata: {{name: {name}, namespace: {NS}}}\nspec:\n  keyId: {TEST_KEY_ID}\n  privateKeySecretRef: {{name: {name}-key, key: AuthKey.p8}}\n{extra}"
    );
    create_yaml::<AscCredential>(api, &yaml).await;
}

async fn ready_of(
    api: &testkit::apiserver::FakeApiServer,
    name: &str,
    want_status: &str,
    want_reason: &str,
) -> AscCredential {
    eventually(
        &format!("{name} is Ready={want_status} ({want_reason})"),
        Duration::from_secs(15),
        || {
            let c: Option<AscCredential> = api
                .get_object("asccredentials", NS, name)
                .map(|v| serde_json::from_value(v).unwrap());
            async move {
                let c = c?;
                let r: &Condition = c
                    .status
                    .as_ref()?
                    .conditions
                    .iter()
                    .find(|c| c.type_ == "Ready")?;
                (r.status == want_status && r.reason == want_reason).then_some(c)
            }
        },
    )
    .await
}

#[tokio::test]
async fn missing_secret_bad_pem_and_good_keys_each_get_their_reason() {
    let api = fake_api().await;
    credential(&api, "missing", "").await;
    credential(&api, "garbled", "").await;
    put_secret(
        &api,
        "garbled-key",
        &[(
            "AuthKey.p8",
            "-----BEGIN PRIVATE KEY-----\nnot a key\n-----END PRIVATE KEY-----\n",
        )],
    )
    .await;
    credential(&api, "team", &format!("  issuerId: {TEST_ISSUER_ID}\n")).await;
    put_secret(&api, "team-key", &[("AuthKey.p8", &test_key_pem())]).await;
    credential(&api, "solo", "").await;
    put_secret(&api, "solo-key", &[("AuthKey.p8", &test_key_pem())]).await;
    let op = Operator::start(&api, &[]).await;

    let missing = ready_of(&api, "missing", "False", "SecretNotFound").await;
    let cond = &missing.status.as_ref().unwrap().conditions[0];
    assert!(cond.message.contains("missing-key"), "{}", cond.message);
    assert_eq!(cond.observed_generation, Some(1));
    ready_of(&api, "garbled", "False", "KeyInvalid").await;
    let team = ready_of(&api, "team", "True", "KeyUsable").await;
    assert_eq!(team.status.unwrap().key_type.as_deref(), Some("Team"));
    let solo = ready_of(&api, "solo", "True", "KeyUsable").await;
    assert_eq!(solo.status.unwrap().key_type.as_deref(), Some("Individual"));

    let status_text = api
        .list_objects("asccredentials", Some(NS))
        .iter()
        .map(|c| c["status"].to_string())
        .collect::<String>();
    for line in test_key_pem().lines().filter(|l| !l.starts_with("-----")) {
        assert!(!status_text.contains(line), "the key leaked into a status");
    }
    op.stop().await;
}

#[tokio::test]
async fn secret_fixed_later_makes_the_credential_ready_without_a_restart() {
    let api = fake_api().await;
    credential(&api, "team", &format!("  issuerId: {TEST_ISSUER_ID}\n")).await;
    let op = Operator::start(&api, &["--recheck-interval", "500ms"]).await;
    let before = ready_of(&api, "team", "False", "SecretNotFound").await;
    let flipped_from = before.status.unwrap().conditions[0]
        .last_transition_time
        .clone();
    put_secret(&api, "team-key", &[("AuthKey.p8", &test_key_pem())]).await;
    let after = ready_of(&api, "team", "True", "KeyUsable").await;
    assert_ne!(
        after.status.unwrap().conditions[0].last_transition_time,
        "",
        "{flipped_from}"
    );
    op.stop().await;
}

#[tokio::test]
async fn verification_call_is_recorded_and_a_revoked_key_shows_up() {
    let api = fake_api().await;
    let asc = asc_mock().await;
    credential(
        &api,
        "team",
        &format!(
            "  issuerId: {TEST_ISSUER_ID}\n  apiUrl: {}\n  verifyIntervalMinutes: 60\n",
            asc.url()
        ),
    )
    .await;
    put_secret(&api, "team-key", &[("AuthKey.p8", &test_key_pem())]).await;
    let origin = origin_flags(&asc);
    let op = Operator::start(&api, &flags(&[], &origin)).await;
    let verified = eventually(
        "the credential is verified",
        Duration::from_secs(15),
        || {
            let c: Option<AscCredential> = api
                .get_object("asccredentials", NS, "team")
                .map(|v| serde_json::from_value(v).unwrap());
            async move {
                c?.status.filter(|s| {
                    s.conditions
                        .iter()
                        .any(|c| c.type_ == "Verified" && c.status == "True")
                })
            }
        },
    )
    .await;
    assert!(verified.last_verified_time.is_some());
    assert!(
        asc.requests()
            .iter()
            .any(|r| r.path.starts_with("/v1/apps") && r.auth.is_accepted()),
        "the mock accepted the token"
    );
    op.stop().await;

    // A new generation re-verifies; the key is now refused.
    asc.inject_always(testkit::asc_mock::Fault::Unauthorized);
    let patch = serde_json::json!({"spec": {"verifyIntervalMinutes": 30}});
    kube::Api::<AscCredential>::namespaced(api.client(), NS)
        .patch(
            "team",
            &Default::default(),
            &kube::api::Patch::Merge(&patch),
        )
        .await
        .unwrap();
    let op = Operator::start(&api, &flags(&[], &origin)).await;
    let refused = eventually("the revoked key shows up", Duration::from_secs(15), || {
        let c: Option<AscCredential> = api
            .get_object("asccredentials", NS, "team")
            .map(|v| serde_json::from_value(v).unwrap());
        async move {
            c?.status?
                .conditions
                .into_iter()
                .find(|c| c.type_ == "Verified" && c.status == "False")
        }
    })
    .await;
    assert!(refused.message.contains("401"), "{}", refused.message);
    op.stop().await;
}

#[tokio::test]
async fn a_credential_pointing_at_a_foreign_api_url_is_not_ready_and_gets_no_request() {
    let api = fake_api().await;
    // A server that would happily accept the token: the operator must never send it one.
    let foreign = asc_mock().await;
    credential(
        &api,
        "borrowed",
        &format!(
            "  issuerId: {TEST_ISSUER_ID}\n  apiUrl: {}\n  verifyIntervalMinutes: 1\n",
            foreign.url()
        ),
    )
    .await;
    put_secret(&api, "borrowed-key", &[("AuthKey.p8", &test_key_pem())]).await;
    let op = Operator::start(&api, &["--recheck-interval", "200ms"]).await;
    let refused = ready_of(&api, "borrowed", "False", "ApiUrlNotAllowed").await;
    let cond = &refused.status.as_ref().unwrap().conditions[0];
    assert!(cond.message.contains(&foreign.url()), "{}", cond.message);
    assert!(
        refused
            .status
            .as_ref()
            .unwrap()
            .conditions
            .iter()
            .all(|c| c.type_ != "Verified"),
        "no verification was attempted"
    );
    // Several re-checks later, still nothing reached the foreign server.
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert!(
        foreign.requests().is_empty(),
        "the foreign server was called: {:?}",
        foreign.requests()
    );
    op.stop().await;

    // Allowed explicitly, the same credential verifies against it.
    let origin = origin_flags(&foreign);
    let op = Operator::start(&api, &flags(&[], &origin)).await;
    ready_of(&api, "borrowed", "True", "KeyUsable").await;
    op.stop().await;
}
