//! The examples as written (with `appStoreConnect` and a generated secret) register their own webhook,
//! and an event App Store Connect sends through it runs the route's rules.

use super::*;
use crate::examples::EXAMPLES;
use crate::recorder::Recorder;
use crate::world::load_example_as;
use asc_webhook_operator::asc::webhooks::subscription_name;

#[tokio::test]
async fn every_example_registers_its_own_webhook_with_a_generated_secret() {
    for name in EXAMPLES {
        let api = fake_api().await;
        let mock = asc_mock().await;
        let hooks = Recorder::start().await;
        load_example_as(&api, name, &mock, &hooks, true).await;
        // The kinds the pipeline examples create.
        crate::resource_actions::load_pipeline_crds(&api);
        // The route controller reads Secrets rarely; one that reads before the Secret is generated
        // sees it on its next re-check.
        let op = start_reachable(&api, &mock, &["--recheck-interval", "1s"]).await;
        let routes = api.list_objects("webhookroutes", Some(NS));
        let route_name = routes[0]["metadata"]["name"].as_str().unwrap().to_owned();
        let name = &route_name.as_str();
        let route = wait_condition(&api, name, "WebhookVerified", "True", "PingReceived").await;
        wait_condition(&api, name, "Ready", "True", "Ready").await;
        let w = mock.webhook(&webhook_id(&route)).unwrap();
        let mut wanted: Vec<String> = route
            .spec
            .rules
            .iter()
            .flat_map(|r| r.filter.clone().unwrap_or_default().event_types)
            .map(|t| subscription_name(&t).unwrap().to_owned())
            .collect();
        wanted.sort();
        wanted.dedup();
        assert_eq!(w.event_types, wanted, "{name}");
        // The secret Apple signs with is the one the operator generated into the route's Secret.
        let secret: k8s_openapi::api::core::v1::Secret = serde_json::from_value(
            api.get_object("secrets", NS, &route.spec.secret_ref.name)
                .unwrap(),
        )
        .unwrap();
        let value = &secret.data.unwrap()[&route.spec.secret_ref.key].0;
        assert_eq!(w.secret.as_bytes(), value.as_slice(), "{name}");
        assert_eq!(value.len(), 64, "{name}");

        if route_name == "submit-after-processing" {
            let sent = mock
                .send_event(&w.id, &fixture_for_mock("build-upload-complete", &mock))
                .await
                .expect("subscribed");
            assert_eq!(sent.response_status, Some(202), "{sent:?}");
            eventually("the submission Job exists", WAIT, || {
                let n = jobs(&api).len();
                async move { (n == 1).then_some(()) }
            })
            .await;
        }
        op.stop().await;
    }
}
