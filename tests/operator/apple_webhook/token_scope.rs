//! Scoped tokens: an account that refuses the scope the operator writes gets a reason that names the
//! switch, and with the switch off the same route registers.

use super::*;

#[tokio::test]
async fn a_refused_scope_says_token_scope_refused_and_scope_off_registers_the_webhook() {
    let (api, mock) = world().await;
    mock.refuse_scoped_tokens(true);
    let op = start_reachable(&api, &mock, &[]).await;
    managed_route(&api, "release", "", RULES).await;
    let route = wait_condition(
        &api,
        "release",
        "WebhookRegistered",
        "False",
        "TokenScopeRefused",
    )
    .await;
    let message = condition(&route, "WebhookRegistered").unwrap().message;
    assert!(message.contains("--asc-token-scope=off"), "{message}");
    assert!(!message.contains("check keyId/issuerId"), "{message}");
    let url = op.url.clone();
    op.stop().await;

    let op = restart_reachable(&api, &mock, &url, &["--asc-token-scope", "off"]).await;
    registered_and_verified(&api, "release").await;
    let scoped = mock
        .requests()
        .into_iter()
        .filter(|r| r.auth.is_accepted() && r.token.scope.is_some())
        .count();
    assert_eq!(scoped, 0, "no accepted call carried a scope");
    op.stop().await;
}

#[tokio::test]
async fn a_credential_whose_scoped_check_is_refused_says_token_scope_refused() {
    let (api, mock) = world().await;
    mock.refuse_scoped_tokens(true);
    let op = start_reachable(&api, &mock, &[]).await;
    api.patch_object(
        "asccredentials",
        NS,
        "team",
        serde_json::json!({"spec": {"verifyIntervalMinutes": 60}}),
    )
    .unwrap();
    let verified = eventually("the credential's Verified condition", WAIT, || {
        let c = api.get_object("asccredentials", NS, "team");
        async move {
            let c: AscCredential = serde_json::from_value(c?).ok()?;
            let v = c
                .status?
                .conditions
                .into_iter()
                .find(|c| c.type_ == "Verified")?;
            (v.status == "False").then_some(v)
        }
    })
    .await;
    assert_eq!(verified.reason, "TokenScopeRefused", "{verified:?}");
    assert!(
        verified.message.contains("--asc-token-scope=off"),
        "{verified:?}"
    );
    op.stop().await;
}
