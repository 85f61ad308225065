use super::*;

#[test]
fn payload_spelling_becomes_the_subscription_name() {
    assert_eq!(
        subscription_name("buildUploadStateUpdated"),
        Some("BUILD_UPLOAD_STATE_UPDATED")
    );
    assert_eq!(
        subscription_name("BUILD_UPLOAD_STATE_UPDATED"),
        Some("BUILD_UPLOAD_STATE_UPDATED")
    );
    assert_eq!(
        subscription_name("appStoreVersionAppVersionStateUpdated"),
        Some("APP_STORE_VERSION_APP_VERSION_STATE_UPDATED")
    );
    assert_eq!(subscription_name("webhookPingCreated"), None);
    assert_eq!(subscription_name("noSuchThing"), None);
}

#[test]
fn a_change_lists_its_fields_and_never_prints_the_secret() {
    let c = WebhookChange {
        secret: Some("hunter2".into()),
        enabled: Some(false),
        ..Default::default()
    };
    assert_eq!(c.fields(), vec!["secret", "enabled"]);
    assert!(!format!("{c:?}").contains("hunter2"));
    assert_eq!(
        c.attributes(),
        json!({"secret": "hunter2", "enabled": false})
    );
    assert!(WebhookChange::default().is_empty());
}

fn status(code: u16, apple_code: &str, detail: &str) -> ApiError {
    ApiError::Status {
        status: code,
        url: "u".into(),
        asc_message: None,
        apple: Some(Box::new(super::super::api::AppleError {
            status: code.to_string(),
            code: apple_code.into(),
            title: String::new(),
            detail: detail.into(),
        })),
    }
}

#[test]
fn apple_errors_map_to_what_the_caller_does_next() {
    let e = classify(
        status(409, "ENTITY_ERROR", "url already used"),
        Some("1"),
        None,
    );
    assert!(
        matches!(&e, WebhookError::Rejected { status: 409, detail, .. } if detail == "url already used"),
        "{e:?}"
    );
    let e = classify(
        status(409, "ENTITY_ERROR.LIMIT_REACHED", "maximum of 10"),
        Some("1"),
        None,
    );
    assert!(matches!(e, WebhookError::LimitReached { .. }), "{e:?}");
    let e = classify(status(503, "X", ""), Some("1"), None);
    assert!(e.is_transient());
    let e = classify(
        ApiError::NotFound {
            url: "u".into(),
            asc_message: None,
        },
        Some("1"),
        None,
    );
    assert!(matches!(e, WebhookError::AppNotFound { .. }));
    let e = classify(ApiError::Forbidden { asc_message: None }, None, Some("w"));
    assert!(matches!(e, WebhookError::Forbidden(_)));
}

// Against the mock App Store Connect.

use crate::asc::api::{ApiError as Api, AscClientOptions};
use crate::asc::token::{ApiKey, TokenSource};
use std::time::Duration;
use testkit::asc_mock::{AscMock, AscMockOptions, Fault};

const PEM: &[u8] = include_bytes!(concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/fixtures/asc/keys/AuthKey_TEST2K9Q7X.p8"
));
const APP: &str = "1234567890";

async fn setup() -> (AscMock, AscClient) {
    let mock = AscMock::start(AscMockOptions::default()).await.unwrap();
    let key = ApiKey::from_pem(
        "TEST2K9Q7X",
        Some(testkit::asc_mock::TEST_ISSUER_ID.to_owned()),
        PEM,
    )
    .unwrap();
    let options = AscClientOptions {
        base_delay: Duration::from_millis(10),
        max_delay: Duration::from_millis(50),
        ..AscClientOptions::default()
    };
    let client = AscClient::with_options(&mock.url(), TokenSource::new(key), options).unwrap();
    (mock, client)
}

fn attributes(url: &str) -> WebhookAttributes {
    WebhookAttributes {
        name: "ios/release".into(),
        url: url.into(),
        event_types: vec!["BUILD_UPLOAD_STATE_UPDATED".into()],
        enabled: true,
    }
}

#[tokio::test]
async fn create_update_list_and_delete_round_trip() {
    let (mock, client) = setup().await;
    let hooks = Webhooks::new(&client);
    let created = hooks
        .create(APP, &attributes("https://h/a"), "s1")
        .await
        .unwrap();
    assert_eq!(created.attributes, attributes("https://h/a"));
    assert_eq!(mock.webhook(&created.id).unwrap().secret, "s1");
    let change = WebhookChange {
        secret: Some("s2".into()),
        enabled: Some(false),
        ..Default::default()
    };
    let updated = hooks.update(&created.id, &change).await.unwrap();
    assert!(!updated.attributes.enabled);
    assert_eq!(mock.webhook(&created.id).unwrap().secret, "s2");
    assert_eq!(hooks.list_for_app(APP).await.unwrap(), vec![updated]);
    assert!(hooks.delete(&created.id).await.unwrap());
    assert!(
        !hooks.delete(&created.id).await.unwrap(),
        "already gone is not an error"
    );
    assert_eq!(hooks.get(&created.id).await.unwrap(), None);
    assert!(matches!(
        hooks.update(&created.id, &change).await,
        Err(WebhookError::WebhookNotFound { .. })
    ));
}

#[tokio::test]
async fn a_post_is_not_retried_after_a_server_error_but_a_get_is() {
    let (mock, client) = setup().await;
    let hooks = Webhooks::new(&client);
    mock.inject(Fault::InternalServerError, 1);
    let err = hooks
        .create(APP, &attributes("https://h/a"), "s")
        .await
        .unwrap_err();
    assert!(err.is_transient(), "{err:?}");
    assert_eq!(
        mock.requests().len(),
        1,
        "Apple may have created it: never POST twice"
    );
    assert!(mock.webhooks().is_empty());
    mock.inject(Fault::InternalServerError, 1);
    assert!(hooks.list_for_app(APP).await.unwrap().is_empty());
    assert_eq!(mock.requests().len(), 3, "the GET was retried once");
}

#[tokio::test]
async fn a_post_is_retried_after_429_as_retry_after_asks() {
    let (mock, client) = setup().await;
    mock.inject(
        Fault::TooManyRequests {
            retry_after_secs: 1,
        },
        1,
    );
    let started = std::time::Instant::now();
    Webhooks::new(&client)
        .create(APP, &attributes("https://h/a"), "s")
        .await
        .unwrap();
    assert!(started.elapsed() >= Duration::from_secs(1));
    assert_eq!(mock.webhooks().len(), 1);
}

#[tokio::test]
async fn a_next_page_on_another_origin_is_refused_without_a_request() {
    let (mock, client) = setup().await;
    mock.insert_document(
        &format!("/v1/apps/{APP}/webhooks"),
        &json!({"data": [], "links": {"next": "https://evil.example/v1/apps/1/webhooks?cursor=1"}}),
    );
    let err = Webhooks::new(&client).list_for_app(APP).await.unwrap_err();
    assert!(
        matches!(err, WebhookError::Other(Api::ForeignOrigin { .. })),
        "{err:?}"
    );
    assert_eq!(mock.requests().len(), 1);
}

#[tokio::test]
async fn an_unknown_app_and_a_refused_key_are_told_apart() {
    let (mock, client) = setup().await;
    let hooks = Webhooks::new(&client);
    assert!(matches!(
        hooks.list_for_app("42").await,
        Err(WebhookError::AppNotFound { .. })
    ));
    mock.inject(Fault::Forbidden, 1);
    assert!(matches!(
        hooks.list_for_app(APP).await,
        Err(WebhookError::Forbidden(_))
    ));
}

#[tokio::test]
async fn failed_deliveries_are_listed_with_their_payload_and_can_be_redelivered() {
    use crate::asc::webhook_deliveries::{DeliveryFilter, DeliveryState};
    let (mock, client) = setup().await;
    let hooks = Webhooks::new(&client);
    // Nothing listens here yet: the first delivery fails.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    drop(listener);
    let w = hooks.create(APP, &attributes(&url), "s").await.unwrap();
    let payload = br#"{"data":{"type":"buildUploadStateUpdated","id":"e-1"}}"#;
    let sent = mock.send_event(&w.id, payload).await.unwrap();
    assert_eq!(sent.state, testkit::asc_mock::DeliveryState::Failed);
    let page = hooks
        .deliveries_page(&w.id, &DeliveryFilter::default(), None)
        .await
        .unwrap();
    assert_eq!(page.deliveries.len(), 1);
    assert_eq!(page.next, None);
    let failed = &page.deliveries[0];
    assert_eq!(failed.state, DeliveryState::Failed);
    assert_eq!(failed.event.payload.as_bytes(), payload.as_slice());
    // A receiver now listens: the redelivery goes through, signed with the current secret.
    let listener =
        tokio::net::TcpListener::bind(url.trim_start_matches("http://").trim_end_matches("/hook"))
            .await
            .unwrap();
    let app = axum::Router::new().route(
        "/hook",
        axum::routing::post(|| async { http::StatusCode::ACCEPTED }),
    );
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    let id = hooks.redeliver(&failed.id).await.unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    loop {
        if let Some(d) = mock.deliveries().into_iter().find(|d| d.id == id) {
            assert!(d.redelivery);
            assert_eq!(d.state, testkit::asc_mock::DeliveryState::Succeeded);
            assert_eq!(d.event.payload.as_bytes(), payload.as_slice());
            break;
        }
        assert!(std::time::Instant::now() < deadline, "no redelivery");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
