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
