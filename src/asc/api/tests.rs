use super::*;
use crate::asc::token::ApiKey;
use crate::resources::names::DEFAULT_API_URL;
use std::time::Instant;
use testkit::asc_mock::{AscMock, AscMockOptions, Fault, MockKeyKind};

const PEM: &[u8] = include_bytes!(concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/fixtures/asc/keys/AuthKey_TEST2K9Q7X.p8"
));
const ISSUER: &str = "69a6de70-03db-47e3-e053-5b8c7c11a4d1";
const COMPLETE_UPLOAD: &str = "/v1/buildUploads/3f1c2a9e-7b44-4d2e-9a51-0c8e2f6d1b77";

fn fast_options() -> AscClientOptions {
    AscClientOptions {
        base_delay: Duration::from_millis(10),
        max_delay: Duration::from_millis(50),
        request_timeout: Duration::from_secs(5),
        ..AscClientOptions::default()
    }
}

fn client_for(api_url: &str, issuer: Option<&str>) -> AscClient {
    let key = ApiKey::from_pem("TEST2K9Q7X", issuer.map(str::to_owned), PEM).unwrap();
    AscClient::with_options(api_url, TokenSource::new(key), fast_options()).unwrap()
}

async fn setup() -> (AscMock, AscClient) {
    let mock = AscMock::start(AscMockOptions::default()).await.unwrap();
    let client = client_for(&mock.url(), Some(ISSUER));
    (mock, client)
}

#[tokio::test]
async fn verify_succeeds_for_team_and_individual_keys() {
    let (mock, team) = setup().await;
    team.verify().await.unwrap();
    client_for(&mock.url(), None).verify().await.unwrap();
    let kinds: Vec<_> = mock.requests().iter().map(|r| r.auth.key_kind()).collect();
    assert_eq!(
        kinds,
        [Some(MockKeyKind::Team), Some(MockKeyKind::Individual)]
    );
    assert_eq!(mock.requests()[0].path, "/v1/apps?limit=1");
}

#[tokio::test]
async fn links_on_other_origins_are_refused_without_a_request() {
    let (mock, client) = setup().await;
    let port = mock.addr().port();
    let other_port = if port == 1 { 2 } else { port - 1 };
    for link in [
        format!("https://api.appstoreconnect.apple.com{COMPLETE_UPLOAD}"),
        format!("https://127.0.0.1:{port}{COMPLETE_UPLOAD}"),
        format!("http://127.0.0.1:{other_port}{COMPLETE_UPLOAD}"),
        format!("http://localhost:{port}{COMPLETE_UPLOAD}"),
        format!("http://user:hunter2@127.0.0.1:{port}{COMPLETE_UPLOAD}"),
    ] {
        let err = client.fetch_instance(&link).await.unwrap_err();
        assert!(matches!(err, ApiError::ForeignOrigin { .. }), "{link}");
        assert!(!err.to_string().contains("hunter2"));
    }
    let err = client.get_json("//evil.example/v1/apps").await.unwrap_err();
    assert!(matches!(err, ApiError::ForeignOrigin { .. }), "{err:?}");
    assert_eq!(mock.requests(), []);
    assert_eq!(client.tokens().minted(), 0, "no token for a refused URL");
}

#[tokio::test]
async fn plain_http_link_is_refused_when_api_url_is_https() {
    let client = client_for(DEFAULT_API_URL, Some(ISSUER));
    let err = client
        .fetch_instance(&format!(
            "http://api.appstoreconnect.apple.com{COMPLETE_UPLOAD}"
        ))
        .await
        .unwrap_err();
    assert!(
        err.to_string()
            .contains("only https://api.appstoreconnect.apple.com"),
        "{err}"
    );
}

#[test]
fn api_url_must_be_http_or_https() {
    let key = ApiKey::from_pem("TEST2K9Q7X", None, PEM).unwrap();
    let err = AscClient::new("ftp://example.com", TokenSource::new(key.clone())).unwrap_err();
    assert!(matches!(err, ApiError::UnsupportedScheme { .. }));
    let err = AscClient::new("not a url", TokenSource::new(key)).unwrap_err();
    assert!(matches!(err, ApiError::InvalidUrl { .. }));
}

#[tokio::test]
async fn rate_limit_with_retry_after_is_honoured_then_succeeds() {
    let (mock, client) = setup().await;
    mock.inject(
        Fault::TooManyRequests {
            retry_after_secs: 1,
        },
        1,
    );
    let started = Instant::now();
    let doc = client
        .fetch_instance(&format!("{}{COMPLETE_UPLOAD}", mock.url()))
        .await
        .unwrap();
    // A lower bound only: the client waited at least what the server asked for.
    assert!(started.elapsed() >= Duration::from_secs(1));
    assert_eq!(doc["data"]["id"], "3f1c2a9e-7b44-4d2e-9a51-0c8e2f6d1b77");
    let statuses: Vec<_> = mock.requests().iter().map(|r| r.status).collect();
    assert_eq!(statuses, [Some(429), Some(200)]);
}

#[tokio::test]
async fn server_errors_forever_end_after_bounded_attempts() {
    let (mock, client) = setup().await;
    mock.inject_always(Fault::InternalServerError);
    let err = client.get_json(COMPLETE_UPLOAD).await.unwrap_err();
    let ApiError::GaveUp { attempts: 4, last } = &err else {
        panic!("{err:?}")
    };
    assert!(
        matches!(**last, ApiError::Status { status: 500, .. }),
        "{last:?}"
    );
    assert!(last.to_string().contains("UNEXPECTED_ERROR"), "{last}");
    assert_eq!(mock.requests().len(), 4);
    assert_eq!(client.tokens().minted(), 1, "retries reuse the token");
}

#[tokio::test]
async fn unavailable_then_ok_is_retried() {
    let (mock, client) = setup().await;
    mock.inject(
        Fault::ServiceUnavailable {
            retry_after_secs: None,
        },
        2,
    );
    client.get_json(COMPLETE_UPLOAD).await.unwrap();
    assert_eq!(mock.requests().len(), 3);
}

#[tokio::test]
async fn unauthorized_is_not_retried_and_says_what_to_check() {
    let (mock, client) = setup().await;
    // The call, and the unscoped check that tells a refused key from a refused scope.
    mock.inject(Fault::Unauthorized, 2);
    let err = client.get_json(COMPLETE_UPLOAD).await.unwrap_err();
    assert!(matches!(err, ApiError::Unauthorized { .. }), "{err:?}");
    let text = err.to_string();
    assert!(
        text.contains("keyId/issuerId") && text.contains("NOT_AUTH"),
        "{text}"
    );
    let paths: Vec<String> = mock.requests().into_iter().map(|r| r.path).collect();
    assert_eq!(paths, [COMPLETE_UPLOAD, "/v1/apps?limit=1"], "not retried");
    client.get_json(COMPLETE_UPLOAD).await.unwrap();
    assert_eq!(client.tokens().minted(), 3, "a refused token is not reused");
}

#[tokio::test]
async fn forbidden_and_not_found_are_distinct_and_not_retried() {
    let (mock, client) = setup().await;
    mock.inject(Fault::Forbidden, 1);
    let err = client.get_json(COMPLETE_UPLOAD).await.unwrap_err();
    assert!(matches!(err, ApiError::Forbidden { .. }), "{err:?}");
    let err = client
        .get_json("/v1/buildUploads/00000000-0000-0000-0000-000000000000")
        .await
        .unwrap_err();
    assert!(matches!(err, ApiError::NotFound { .. }), "{err:?}");
    assert!(err.to_string().contains("(404)"));
    assert_eq!(mock.requests().len(), 2);
}

#[tokio::test]
async fn slow_response_times_out_and_is_retried() {
    let mock = AscMock::start(AscMockOptions::default()).await.unwrap();
    let mut client = client_for(&mock.url(), Some(ISSUER));
    client.options.request_timeout = Duration::from_millis(300);
    client = AscClient::with_options(&mock.url(), client.tokens, client.options).unwrap();
    mock.inject(Fault::Delay(Duration::from_secs(3)), 1);
    client.get_json(COMPLETE_UPLOAD).await.unwrap();
    assert_eq!(mock.requests().len(), 2);
    assert_eq!(mock.requests()[0].status, None, "first attempt abandoned");
}

#[tokio::test]
async fn connection_refused_ends_in_transport_error_after_retries() {
    let mock = AscMock::start(AscMockOptions::default()).await.unwrap();
    let url = mock.url();
    mock.shutdown().await;
    let err = client_for(&url, Some(ISSUER))
        .get_json("/v1/apps")
        .await
        .unwrap_err();
    let ApiError::GaveUp { attempts: 4, last } = &err else {
        panic!("{err:?}")
    };
    assert!(matches!(**last, ApiError::Transport { .. }), "{last:?}");
}

#[test]
fn asc_error_message_is_extracted_and_shortened() {
    let detail = "d".repeat(1000);
    let body = serde_json::json!({"errors": [{"code": "X", "title": "t", "detail": detail}]});
    let message = asc_error_message(body.to_string().as_bytes()).unwrap();
    assert!(message.starts_with("X: ddd") && message.ends_with('…'));
    assert_eq!(message.chars().count(), 301);
    assert_eq!(asc_error_message(b"<html>"), None);
}

#[tokio::test]
async fn each_call_gets_a_token_of_minutes_scoped_to_its_one_get() {
    let (mock, client) = setup().await;
    let url = format!("{}{COMPLETE_UPLOAD}", mock.url());
    client.fetch_instance(&url).await.unwrap();
    client.verify().await.unwrap();
    let log = mock.requests();
    assert!(log.iter().all(|r| r.auth.is_accepted()), "{log:?}");
    assert_eq!(
        log[0].token.scope,
        Some(vec![format!("GET {COMPLETE_UPLOAD}")])
    );
    assert_eq!(log[1].token.scope, Some(vec!["GET /v1/apps".to_owned()]));
    for r in &log {
        let lifetime = r.token.lifetime_secs.unwrap();
        assert!(
            lifetime <= 6 * 60,
            "{lifetime} s is more than a few minutes"
        );
    }
    assert_eq!(client.tokens().minted(), 2, "one token per call");
}

#[test]
fn a_scope_is_written_raw_without_paging_parameters() {
    let url = Url::parse(
        "https://api.appstoreconnect.apple.com/v1/webhooks/w/deliveries?filter%5BcreatedDateGreaterThanOrEqualTo%5D=2026-12-01T10%3A00%3A00Z&include=event&limit=200&cursor=abc",
    )
    .unwrap();
    assert_eq!(
        scope_of(&url),
        "GET /v1/webhooks/w/deliveries?filter[createdDateGreaterThanOrEqualTo]=2026-12-01T10:00:00Z&include=event"
    );
    let apps = Url::parse("https://x.example/v1/apps?filter%5Bplatform%5D=IOS%2CMAC_OS").unwrap();
    assert_eq!(scope_of(&apps), "GET /v1/apps?filter[platform]=IOS,MAC_OS");
}

/// Every GET the operator makes (a delivery-log page and the next one, a webhook list, a credential
/// check, an instance) carries a scope in Apple's documented form: nothing percent-encoded, no paging.
#[tokio::test]
async fn no_scope_sent_is_percent_encoded_or_names_a_page() {
    use crate::asc::webhook_deliveries::DeliveryFilter;
    use crate::asc::webhooks::Webhooks;
    let (mock, client) = setup().await;
    let hooks = Webhooks::new(&client);
    let id = mock.add_webhook(testkit::asc_mock::MockWebhook::build_uploads_at(
        "http://127.0.0.1:9/hook",
    ));
    let payload = br#"{"data":{"type":"buildUploadStateUpdated","id":"e"}}"#;
    // Within the window asked for whatever the day: a fixed date falls out of it once a day has passed.
    let now = jiff::Timestamp::now();
    for n in 0..3 {
        let at = crate::time::format_ts(now - jiff::SignedDuration::from_secs(60 + n));
        mock.log_delivery(&id, payload, testkit::asc_mock::DeliveryState::Failed, &at);
    }
    let since = crate::time::format_ts(now - jiff::SignedDuration::from_hours(24));
    let filter = DeliveryFilter {
        created_since: Some(since),
        limit: 2,
        ..Default::default()
    };
    let first = hooks.deliveries_page(&id, &filter, None).await.unwrap();
    let next = first.next.expect("a second page");
    hooks
        .deliveries_page(&id, &filter, Some(&next))
        .await
        .unwrap();
    hooks.list_for_app("1234567890").await.unwrap();
    client.verify().await.unwrap();
    let log = mock.requests();
    assert!(log.iter().all(|r| r.auth.is_accepted()), "{log:?}");
    assert!(log.len() >= 4, "{log:?}");
    for r in &log {
        for scope in r.token.scope.as_deref().unwrap_or_default() {
            for bad in ["%5B", "%5D", "%2C", "limit=", "cursor="] {
                assert!(!scope.contains(bad), "{scope} contains {bad}");
            }
        }
    }
}

#[tokio::test]
async fn a_refused_scope_is_told_apart_from_a_refused_key_and_names_the_switch() {
    let (mock, client) = setup().await;
    mock.refuse_scoped_tokens(true);
    let err = client.get_json(COMPLETE_UPLOAD).await.unwrap_err();
    let ApiError::TokenScopeRefused { scope, .. } = &err else {
        panic!("{err:?}");
    };
    assert_eq!(scope, &format!("GET {COMPLETE_UPLOAD}"));
    let text = err.to_string();
    assert!(text.contains("--asc-token-scope=off"), "{text}");
    assert!(text.contains("ASC_TOKEN_SCOPE"), "{text}");
    let wrong_issuer = client_for(&mock.url(), Some("00000000-0000-0000-0000-000000000000"));
    let err = wrong_issuer.get_json(COMPLETE_UPLOAD).await.unwrap_err();
    assert!(
        matches!(err, ApiError::Unauthorized { .. }),
        "a key refused unscoped too is a key problem: {err:?}"
    );
}

#[tokio::test]
async fn with_scoped_tokens_off_every_call_carries_an_unscoped_token() {
    let mock = AscMock::start(AscMockOptions::default()).await.unwrap();
    mock.refuse_scoped_tokens(true);
    let key = ApiKey::from_pem("TEST2K9Q7X", Some(ISSUER.to_owned()), PEM).unwrap();
    let options = AscClientOptions {
        scoped_tokens: false,
        ..fast_options()
    };
    let client = AscClient::with_options(&mock.url(), TokenSource::new(key), options).unwrap();
    client.get_json(COMPLETE_UPLOAD).await.unwrap();
    client.verify().await.unwrap();
    assert!(mock.requests().iter().all(|r| r.token.scope.is_none()));
    assert_eq!(
        client.tokens().minted(),
        1,
        "one unscoped token serves both"
    );
}

#[test]
fn an_instance_url_is_built_when_missing_joined_when_relative_and_moved_off_apples_other_host() {
    let client = client_for("https://api.appstoreconnect.apple.com", Some(ISSUER));
    let url = |kind: &str, id: &str, link: Option<&str>| {
        client.instance_url(kind, id, link).unwrap().to_string()
    };
    assert_eq!(
        url("appStoreVersions", "v-1", None),
        "https://api.appstoreconnect.apple.com/v1/appStoreVersions/v-1"
    );
    assert_eq!(
        url("builds", "a/b", Some("")),
        "https://api.appstoreconnect.apple.com/v1/builds/a%2Fb",
        "an id cannot add path segments"
    );
    assert_eq!(
        url("x", "y", Some("/v1/backgroundAssetVersions/7")),
        "https://api.appstoreconnect.apple.com/v1/backgroundAssetVersions/7"
    );
    assert_eq!(
        url(
            "x",
            "y",
            Some(
                "https://api-appstoreconnect.itunes.apple.com/v1/alternativeDistributionPackages/p"
            )
        ),
        "https://api.appstoreconnect.apple.com/v1/alternativeDistributionPackages/p"
    );
    assert_eq!(
        url("x", "y", Some("https://evil.example/v1/x")),
        "https://evil.example/v1/x",
        "left as is: the origin check refuses it when fetched"
    );
}

#[tokio::test]
async fn a_foreign_instance_link_is_still_refused_before_any_token_is_minted() {
    let (mock, client) = setup().await;
    let err = client
        .fetch_instance_of("x", "y", Some("https://evil.example/v1/x"))
        .await
        .unwrap_err();
    assert!(matches!(err, ApiError::ForeignOrigin { .. }), "{err:?}");
    assert!(mock.requests().is_empty());
    assert_eq!(client.tokens().minted(), 0);
}
