//! What the benchmarks share: in-memory backends for the real receiver, the bare axum handler it is
//! compared with, and signed request bodies made from a fixture with a fresh `data.id`.
//!
//! A directory module (not `benches/support.rs`) so cargo does not take it for a benchmark of its own.
#![allow(dead_code)] // each benchmark uses a different part

use asc_webhook_operator::receiver::backend::{SecretData, SecretSourceError};
use asc_webhook_operator::receiver::routes::RouteTable;
use asc_webhook_operator::receiver::{DeliverySink, Recorded, SecretSource, SinkError};
use asc_webhook_operator::resources::{
    SecretKeySelector, WebhookDelivery, WebhookRoute, WebhookRouteSpec,
};
use axum::Router;
use axum::extract::Path as UrlPath;
use axum::http::StatusCode;
use axum::routing::post;
use bytes::Bytes;
use futures::FutureExt;
use futures::future::BoxFuture;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::Path;
use std::sync::Mutex;

/// The webhook secret of every benchmark route (the one the signature fixtures use).
pub const SECRET: &[u8] = b"k3tSx0mJ7vQ2pL9wR4zN8cF1bH6dY5aE";
/// What a forger signs with.
pub const WRONG_SECRET: &[u8] = b"not-the-secret-apple-was-given";
/// The route every request goes to.
pub const NAMESPACE: &str = "ios";
/// The route every request goes to.
pub const ROUTE: &str = "release";

/// The directory of the event fixtures.
pub fn events_dir() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/asc/events")
}

/// Routes in the receiver's own table, as the operator's watch fills it.
pub type MemRoutes = RouteTable;

/// Secrets in a `HashMap`.
pub struct MemSecrets(HashMap<(String, String), SecretData>);

impl SecretSource for MemSecrets {
    fn secret<'a>(
        &'a self,
        namespace: &'a str,
        name: &'a str,
    ) -> BoxFuture<'a, Result<Option<SecretData>, SecretSourceError>> {
        let found = self
            .0
            .get(&(namespace.to_owned(), name.to_owned()))
            .cloned();
        futures::future::ready(Ok(found)).boxed()
    }
}

/// Delivery names in a set: the first insert is `Created`, any later one `Duplicate`, like the API
/// server's AlreadyExists on a deterministic name.
pub struct MemSink(Mutex<HashSet<String>>);

impl Default for MemSink {
    fn default() -> Self {
        // Room for a long run up front: growing a set of several hundred thousand names holds the lock for
        // milliseconds, a latency spike of this stand-in that a real API server does not have.
        MemSink(Mutex::new(HashSet::with_capacity(1 << 20)))
    }
}

impl MemSink {
    /// Deliveries stored.
    pub fn len(&self) -> usize {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).len()
    }
}

impl DeliverySink for MemSink {
    fn record(&self, delivery: WebhookDelivery) -> BoxFuture<'_, Result<Recorded, SinkError>> {
        let name = delivery.metadata.name.unwrap_or_default();
        let new = self
            .0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(name);
        let recorded = if new {
            Recorded::Created
        } else {
            Recorded::Duplicate
        };
        futures::future::ready(Ok(recorded)).boxed()
    }
}

/// A route of `namespace/name` whose secret is `asc-webhook/secret` in its own namespace.
pub fn route(namespace: &str, name: &str, uid: usize) -> WebhookRoute {
    let mut r = WebhookRoute::new(
        name,
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
    r.metadata.namespace = Some(namespace.into());
    r.metadata.uid = Some(format!("00000000-0000-4000-8000-{uid:012x}"));
    r
}

/// `count` routes (`ios/release` among them) and one webhook Secret per namespace.
pub fn backends(count: usize) -> (MemRoutes, MemSecrets) {
    let routes = RouteTable::default();
    let mut secrets = HashMap::new();
    let mut add = |ns: String, name: String, uid: usize| {
        secrets.insert(
            (ns.clone(), "asc-webhook".to_owned()),
            BTreeMap::from([("secret".to_owned(), SECRET.to_vec())]),
        );
        routes.insert(&route(&ns, &name, uid));
    };
    add(NAMESPACE.into(), ROUTE.into(), 0);
    for i in 1..count.max(1) {
        add(format!("team-{}", i % 100), format!("route-{i}"), i);
    }
    (routes, MemSecrets(secrets))
}

/// The baseline: same path, path extracted and body read, 200 with no body. The HTTP stack and nothing
/// else.
pub fn bare_router() -> Router {
    Router::new().route(
        "/hooks/{namespace}/{route}",
        post(
            |UrlPath((_namespace, _route)): UrlPath<(String, String)>, _body: Bytes| async {
                StatusCode::OK
            },
        ),
    )
}

/// A fixture split around its `data.id` string, so each request gets Apple's exact layout with a new id.
pub struct BodyTemplate {
    prefix: Vec<u8>,
    suffix: Vec<u8>,
}

impl BodyTemplate {
    /// The template of the fixture `name` (without `.json`).
    pub fn fixture(name: &str) -> BodyTemplate {
        let raw = std::fs::read(events_dir().join(format!("{name}.json")))
            .unwrap_or_else(|e| panic!("fixture {name}: {e}"));
        BodyTemplate::from_bytes(&raw)
    }

    /// Splits `raw` around the one occurrence of its `data.id` string.
    pub fn from_bytes(raw: &[u8]) -> BodyTemplate {
        let value: serde_json::Value = serde_json::from_slice(raw).expect("fixture is JSON");
        let id = value
            .pointer("/data/id")
            .and_then(|v| v.as_str())
            .expect("fixture has data.id");
        let needle = format!("\"{id}\"");
        let positions: Vec<usize> = raw
            .windows(needle.len())
            .enumerate()
            .filter(|(_, w)| *w == needle.as_bytes())
            .map(|(i, _)| i)
            .collect();
        assert_eq!(positions.len(), 1, "data.id must occur exactly once");
        let at = positions[0] + 1;
        BodyTemplate {
            prefix: raw[..at].to_vec(),
            suffix: raw[at + id.len()..].to_vec(),
        }
    }

    /// The body with `data.id` set to `id`.
    pub fn body(&self, id: &str) -> Bytes {
        let mut out = Vec::with_capacity(self.prefix.len() + id.len() + self.suffix.len());
        out.extend_from_slice(&self.prefix);
        out.extend_from_slice(id.as_bytes());
        out.extend_from_slice(&self.suffix);
        Bytes::from(out)
    }
}

/// A UUID-shaped event id, distinct for each `n`.
pub fn event_id(n: u64) -> String {
    format!("00000000-0000-4000-8000-{n:012x}")
}
