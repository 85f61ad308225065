use super::*;
use crate::resources::{SecretKeySelector, WebhookRouteSpec};
use http::{Request, Response};
use k8s_openapi::api::core::v1::Secret;
use kube::Api;
use kube::client::{Body, ConfigExt};

fn route(service_account: Option<&str>) -> WebhookRoute {
    let mut r = WebhookRoute::new(
        "release",
        WebhookRouteSpec {
            secret_ref: SecretKeySelector {
                name: "hook".into(),
                key: "secret".into(),
                namespace: None,
            },
            credential_ref: None,
            service_account_name: service_account.map(str::to_owned),
            rules: vec![],
            delivery_history_limit: None,
            app_store_connect: None,
            suspend: false,
        },
    );
    r.metadata.namespace = Some("ios".into());
    r
}

#[test]
fn a_route_acts_as_its_own_service_account_else_the_default_else_the_operator() {
    let sa = |n: &str| Identity::ServiceAccount {
        namespace: "ios".into(),
        name: n.into(),
    };
    assert_eq!(
        Identity::for_route(&route(Some("builder")), Some("actions")),
        sa("builder")
    );
    assert_eq!(
        Identity::for_route(&route(None), Some("actions")),
        sa("actions")
    );
    assert_eq!(Identity::for_route(&route(None), None), Identity::Operator);
    assert_eq!(
        sa("builder").username().as_deref(),
        Some("system:serviceaccount:ios:builder")
    );
    assert_eq!(Identity::Operator.username(), None);
}

/// A client whose every request goes to `service` through kube's own header layer for `config`, exactly
/// the headers `Client::try_from(config)` would add.
fn via_mock(service: tower_test::mock::Mock<Request<Body>, Response<Body>>) -> Arc<MakeClient> {
    Arc::new(move |config: kube::Config| {
        let layered = tower::ServiceBuilder::new()
            .layer(config.extra_headers_layer()?)
            .service(service.clone());
        Ok(Client::new(layered, "default"))
    })
}

fn not_found() -> Response<Body> {
    let status = serde_json::json!({"kind": "Status", "apiVersion": "v1", "status": "Failure",
        "reason": "NotFound", "code": 404, "message": "secrets \"h\" not found"});
    Response::builder()
        .status(404)
        .body(Body::from(serde_json::to_vec(&status).unwrap()))
        .unwrap()
}

#[tokio::test]
async fn a_service_accounts_requests_carry_impersonate_user_and_the_operators_none() {
    let (service, mut handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
    let operator = Client::new(service.clone(), "default");
    let config = kube::Config::new("http://apiserver.invalid".parse().unwrap());
    let clients = ActionClients::with_factory(operator, config, via_mock(service));
    let builder = Identity::ServiceAccount {
        namespace: "ios".into(),
        name: "builder".into(),
    };
    let verifier = tokio::spawn(async move {
        let mut seen = Vec::new();
        for _ in 0..3 {
            let (request, send) = handle.next_request().await.unwrap();
            let users: Vec<String> = request
                .headers()
                .get_all("impersonate-user")
                .iter()
                .map(|v| v.to_str().unwrap().to_owned())
                .collect();
            assert!(
                request.headers().get("impersonate-group").is_none(),
                "groups come from the API server, not from us"
            );
            seen.push((request.uri().path().to_owned(), users));
            send.send_response(not_found());
        }
        seen
    });
    for identity in [&builder, &Identity::Operator, &builder] {
        let secrets: Api<Secret> = Api::namespaced(clients.client_for(identity).unwrap(), "ios");
        assert!(secrets.get_opt("h").await.unwrap().is_none());
    }
    let seen = verifier.await.unwrap();
    let sa = vec!["system:serviceaccount:ios:builder".to_owned()];
    assert_eq!(seen[0].1, sa);
    assert!(
        seen[1].1.is_empty(),
        "the operator's own requests impersonate nobody"
    );
    assert_eq!(seen[2].1, sa);
    assert_eq!(seen[0].0, "/api/v1/namespaces/ios/secrets/h");
    assert_eq!(clients.cached(), 1, "one client per identity, reused");
}

#[tokio::test]
async fn without_a_configuration_a_service_account_cannot_be_impersonated() {
    let (service, _handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
    let clients = ActionClients::operator_only(Client::new(service, "default"));
    assert!(clients.client_for(&Identity::Operator).is_ok());
    let err = clients
        .client_for(&Identity::ServiceAccount {
            namespace: "ios".into(),
            name: "x".into(),
        })
        .err()
        .unwrap();
    assert!(matches!(err, ImpersonationError::NotConfigured(_)), "{err}");
}
