//! The stateful webhook endpoints, driven over HTTP with a token minted in the parent module.

use super::*;

async fn call(
    mock: &AscMock,
    method: reqwest::Method,
    path: &str,
    body: Option<Value>,
) -> (u16, Value) {
    let mut req = reqwest::Client::new()
        .request(method, format!("{}{path}", mock.url()))
        .bearer_auth(team_token());
    if let Some(b) = body {
        req = req
            .header("content-type", "application/json")
            .body(b.to_string());
    }
    let resp = req.send().await.unwrap();
    let status = resp.status().as_u16();
    let text = resp.text().await.unwrap();
    (status, serde_json::from_str(&text).unwrap_or(Value::Null))
}

fn create_body(url: &str, app: &str) -> Value {
    json!({"data": {"type": "webhooks",
        "attributes": {"name": "n", "url": url, "secret": "s3cret", "eventTypes": ["BUILD_UPLOAD_STATE_UPDATED"], "enabled": true},
        "relationships": {"app": {"data": {"type": "apps", "id": app}}}}})
}

#[tokio::test]
async fn create_read_patch_list_and_delete_with_apples_shapes() {
    let mock = mock().await;
    let (status, created) = call(
        &mock,
        reqwest::Method::POST,
        "/v1/webhooks",
        Some(create_body("https://h/x", "1234567890")),
    )
    .await;
    assert_eq!(status, 201, "{created}");
    let id = created["data"]["id"].as_str().unwrap().to_owned();
    assert!(
        created["data"]["attributes"].get("secret").is_none(),
        "the secret is write-only"
    );
    let (status, patched) = call(
        &mock,
        reqwest::Method::PATCH,
        &format!("/v1/webhooks/{id}"),
        Some(json!({"data": {"type": "webhooks", "id": id, "attributes": {"enabled": false, "secret": "new"}}})),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(patched["data"]["attributes"]["enabled"], false);
    assert_eq!(mock.webhook(&id).unwrap().secret, "new");
    let (status, list) = call(
        &mock,
        reqwest::Method::GET,
        "/v1/apps/1234567890/webhooks?limit=200",
        None,
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(list["data"].as_array().unwrap().len(), 1);
    let (status, _) = call(
        &mock,
        reqwest::Method::DELETE,
        &format!("/v1/webhooks/{id}"),
        None,
    )
    .await;
    assert_eq!(status, 204);
    let (status, gone) = call(
        &mock,
        reqwest::Method::GET,
        &format!("/v1/webhooks/{id}"),
        None,
    )
    .await;
    assert_eq!(status, 404);
    assert_eq!(gone["errors"][0]["code"], "NOT_FOUND");
}

#[tokio::test]
async fn apples_refusals_come_with_their_error_bodies() {
    let mock = mock().await;
    let (status, body) = call(
        &mock,
        reqwest::Method::POST,
        "/v1/webhooks",
        Some(create_body("https://h/x", "42")),
    )
    .await;
    assert_eq!(
        (status, body["errors"][0]["code"].as_str()),
        (404, Some("NOT_FOUND"))
    );
    let mut bad = create_body("https://h/x", "1234567890");
    bad["data"]["attributes"]["eventTypes"] = json!(["buildUploadStateUpdated"]);
    let (status, body) = call(&mock, reqwest::Method::POST, "/v1/webhooks", Some(bad)).await;
    assert_eq!(status, 422, "{body}");
    let mut missing = create_body("https://h/x", "1234567890");
    missing["data"]["attributes"]
        .as_object_mut()
        .unwrap()
        .remove("secret");
    let (status, body) = call(&mock, reqwest::Method::POST, "/v1/webhooks", Some(missing)).await;
    assert_eq!(
        (status, body["errors"][0]["code"].as_str()),
        (422, Some("ENTITY_ERROR.ATTRIBUTE.REQUIRED"))
    );
    for i in 0..10 {
        let (status, _) = call(
            &mock,
            reqwest::Method::POST,
            "/v1/webhooks",
            Some(create_body(&format!("https://h/{i}"), "1234567890")),
        )
        .await;
        assert_eq!(status, 201);
    }
    let (status, body) = call(
        &mock,
        reqwest::Method::POST,
        "/v1/webhooks",
        Some(create_body("https://h/11", "1234567890")),
    )
    .await;
    assert_eq!(
        (status, body["errors"][0]["code"].as_str()),
        (409, Some("ENTITY_ERROR.LIMIT_REACHED"))
    );
    let (_, page) = call(
        &mock,
        reqwest::Method::GET,
        "/v1/apps/1234567890/webhooks?limit=4",
        None,
    )
    .await;
    assert_eq!(page["data"].as_array().unwrap().len(), 4);
    let next = page["links"]["next"].as_str().unwrap();
    assert!(next.starts_with(&mock.url()), "{next}");
}

#[tokio::test]
async fn a_ping_is_signed_with_the_current_secret_and_logged_by_outcome() {
    let mock = mock().await;
    // A receiver that accepts only the right signature.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    let app = axum::Router::new().route(
        "/hook",
        axum::routing::post(|headers: HeaderMap, body: Bytes| async move {
            let ok = headers
                .get("x-apple-signature")
                .and_then(|v| v.to_str().ok())
                == Some(crate::asc_mock::deliveries::sign("s3cret", &body).as_str());
            if ok {
                StatusCode::ACCEPTED
            } else {
                StatusCode::UNAUTHORIZED
            }
        }),
    );
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    let (_, created) = call(
        &mock,
        reqwest::Method::POST,
        "/v1/webhooks",
        Some(create_body(&url, "1234567890")),
    )
    .await;
    let id = created["data"]["id"].as_str().unwrap().to_owned();
    let (status, _) = call(
        &mock,
        reqwest::Method::POST,
        "/v1/webhookPings",
        Some(json!({"data": {"type": "webhookPings", "relationships": {"webhook": {"data": {"type": "webhooks", "id": id}}}}})),
    )
    .await;
    assert_eq!(status, 201);
    let deadline = Instant::now() + Duration::from_secs(5);
    while mock.deliveries().is_empty() {
        assert!(Instant::now() < deadline, "the ping was never delivered");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let ping = &mock.deliveries()[0];
    assert!(ping.event.ping);
    assert_eq!(
        (ping.state, ping.response_status),
        (DeliveryState::Succeeded, Some(202))
    );
    // An event signed before the secret changes keeps that signature; one sent after is signed with
    // the new secret, which this receiver does not know: refused, and the log says so.
    let body = br#"{"data":{"type":"buildUploadStateUpdated","id":"e1"}}"#;
    let early = mock.sign_event(&id, body).unwrap();
    mock.edit_webhook(&id, |w| w.secret = "rotated".into());
    let delivered = mock.deliver(&early).await;
    assert_eq!(delivered.response_status, Some(202));
    let failed = mock.send_event(&id, body).await.unwrap();
    assert_eq!(
        (failed.state, failed.response_status),
        (DeliveryState::Failed, Some(401))
    );
    let (_, log) = call(
        &mock,
        reqwest::Method::GET,
        &format!("/v1/webhooks/{id}/deliveries?include=event"),
        None,
    )
    .await;
    let states: Vec<&Value> = log["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| &d["attributes"]["deliveryState"])
        .collect();
    assert_eq!(
        states,
        [&json!("SUCCEEDED"), &json!("SUCCEEDED"), &json!("FAILED")],
        "{log}"
    );
    assert_eq!(
        log["included"][1]["attributes"]["eventType"], "BUILD_UPLOAD_STATE_UPDATED",
        "the log spells event types as subscriptions do"
    );
}

#[tokio::test]
async fn the_delivery_log_refuses_what_apple_refuses_and_serves_either_order() {
    let mock = mock().await;
    mock.add_app("1234567890");
    let id = mock.add_webhook(crate::asc_mock::MockWebhook::build_uploads_at(
        "http://127.0.0.1:9/x",
    ));
    let body = br#"{"data":{"type":"buildUploadStateUpdated","id":"e"}}"#;
    let old = jiff::Timestamp::now() - jiff::SignedDuration::from_hours(30);
    let new = jiff::Timestamp::now() - jiff::SignedDuration::from_hours(1);
    mock.log_delivery(&id, body, DeliveryState::Succeeded, &new.to_string());
    mock.log_delivery(&id, body, DeliveryState::Failed, &old.to_string());
    let path = |q: &str| format!("/v1/webhooks/{id}/deliveries?include=event{q}");

    let (status, refused) = call(
        &mock,
        reqwest::Method::GET,
        &path("&filter[deliveryState]=FAILED"),
        None,
    )
    .await;
    assert_eq!(status, 400);
    assert_eq!(refused["errors"][0]["code"], "PARAMETER_ERROR.INVALID");
    assert_eq!(
        refused["errors"][0]["source"]["parameter"],
        "filter[deliveryState]"
    );
    let too_old = jiff::Timestamp::now() - jiff::SignedDuration::from_hours(11 * 24);
    let (status, refused) = call(
        &mock,
        reqwest::Method::GET,
        &path(&format!(
            "&filter[createdDateGreaterThanOrEqualTo]={too_old}"
        )),
        None,
    )
    .await;
    assert_eq!(status, 400, "{refused}");
    assert_eq!(
        refused["errors"][0]["source"]["parameter"],
        "filter[createdDateGreaterThanOrEqualTo]"
    );

    let order = |log: &Value| -> Vec<String> {
        log["data"]
            .as_array()
            .unwrap()
            .iter()
            .map(|d| {
                d["attributes"]["deliveryState"]
                    .as_str()
                    .unwrap()
                    .to_owned()
            })
            .collect()
    };
    let (_, oldest_first) = call(&mock, reqwest::Method::GET, &path(""), None).await;
    assert_eq!(order(&oldest_first), ["FAILED", "SUCCEEDED"]);
    mock.set_log_order(crate::asc_mock::LogOrder::NewestFirst);
    let (_, newest_first) = call(&mock, reqwest::Method::GET, &path(""), None).await;
    assert_eq!(order(&newest_first), ["SUCCEEDED", "FAILED"]);
}
