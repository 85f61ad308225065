//! Changed Secrets, noticed within seconds and at no cost while nothing changes (docs/DECISIONS.md §4).
//!
//! With `--secret-access watch` (the default) the leader watches Secret *metadata* in its namespaces
//! (`PartialObjectMetadata`: names and `resourceVersion`, never a value; optionally narrowed by
//! `--secret-watch-selector`) and keeps nothing of it but the `resourceVersion` of the Secrets a route or
//! credential names. With either access, this replica's receiver reports the Secrets it found missing or
//! changed ([`crate::receiver::secret_cache`]). Either way the routes and credentials that name a changed
//! Secret forget what they read of it and are reconciled at once, so their status, and with
//! `appStoreConnect` the secret App Store Connect signs with, follow within seconds.

use super::Context;
use crate::cli::SecretAccess;
use crate::receiver::secret_cache::SecretId;
use crate::resources::{AscCredential, WebhookRoute};
use futures::channel::mpsc;
use futures::{SinkExt, StreamExt};
use k8s_openapi::api::core::v1::Secret;
use kube::Api;
use kube::ResourceExt;
use kube::core::PartialObjectMeta;
use kube::runtime::reflector::ObjectRef;
use kube::runtime::watcher;
use std::collections::{HashMap, HashSet};
use std::sync::Arc;

/// A Secret by namespace and name.
pub type SecretName = (String, String);

/// What the Secret watch showed, reduced to what [`Versions`] needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Seen {
    /// A (re-)list begins.
    Listing,
    /// A Secret of the list, with its `resourceVersion`.
    Listed(SecretName, String),
    /// The list is complete.
    ListDone,
    /// A Secret was created or changed.
    Applied(SecretName, String),
    /// A Secret was deleted.
    Deleted(SecretName),
}

/// The `resourceVersion` of each named Secret as last seen, to tell a change from a re-list that brings
/// the same Secret again. Holds only Secrets something names. Pure.
#[derive(Debug, Default)]
pub struct Versions {
    seen: HashMap<SecretName, String>,
    listing: Option<HashSet<SecretName>>,
    synced: bool,
}

impl Versions {
    /// The Secrets whose dependents must look again after `event`; `named` says whether a route or
    /// credential names a Secret. The first list changes nothing (every route and credential reads its
    /// Secrets on its first reconcile); a later re-list (after the watch was interrupted) reports what
    /// changed or vanished meanwhile.
    pub fn changed(&mut self, event: Seen, named: impl Fn(&SecretName) -> bool) -> Vec<SecretName> {
        match event {
            Seen::Listing => {
                self.listing = Some(HashSet::new());
                Vec::new()
            }
            Seen::Listed(secret, version) => {
                if let Some(listing) = self.listing.as_mut() {
                    listing.insert(secret.clone());
                }
                let changed = self.record(secret, version, &named);
                if self.synced { changed } else { Vec::new() }
            }
            Seen::ListDone => {
                let listing = self.listing.take().unwrap_or_default();
                let gone: Vec<SecretName> = self
                    .seen
                    .keys()
                    .filter(|s| !listing.contains(*s))
                    .cloned()
                    .collect();
                for s in &gone {
                    self.seen.remove(s);
                }
                let was_synced = std::mem::replace(&mut self.synced, true);
                if was_synced { gone } else { Vec::new() }
            }
            Seen::Applied(secret, version) => self.record(secret, version, &named),
            Seen::Deleted(secret) => {
                self.seen.remove(&secret);
                if named(&secret) {
                    vec![secret]
                } else {
                    Vec::new()
                }
            }
        }
    }

    fn record(
        &mut self,
        secret: SecretName,
        version: String,
        named: &impl Fn(&SecretName) -> bool,
    ) -> Vec<SecretName> {
        if !named(&secret) {
            self.seen.remove(&secret);
            return Vec::new();
        }
        if self.seen.get(&secret) == Some(&version) {
            return Vec::new();
        }
        self.seen.insert(secret.clone(), version);
        vec![secret]
    }
}

/// Whether `route` names Secret `name` (of its own namespace) anywhere. Allocates nothing: it runs for
/// every route on every Secret event.
pub fn route_names(route: &WebhookRoute, name: &str) -> bool {
    route.spec.secret_ref.name == name
        || route
            .spec
            .rules
            .iter()
            .filter_map(|r| r.http.as_ref())
            .any(|h| {
                h.url_secret_ref.name == name
                    || h.headers_secret_ref
                        .as_ref()
                        .is_some_and(|s| s.name == name)
            })
}

/// Whether `route` sends the Secret `name` to App Store Connect as its webhook secret.
pub fn webhook_secret_of(route: &WebhookRoute, name: &str) -> bool {
    route.spec.app_store_connect.is_some() && route.spec.secret_ref.name == name
}

/// Whether `cred`'s key is in Secret `name`.
pub fn credential_names(cred: &AscCredential, name: &str) -> bool {
    cred.spec.private_key_secret_ref.name == name
}

/// The wake-ups of the three controllers that read Secrets.
pub struct Wakeups {
    /// Routes whose readiness depends on a changed Secret.
    pub routes: mpsc::Receiver<ObjectRef<WebhookRoute>>,
    /// Routes whose App Store Connect webhook is signed with a changed Secret.
    pub webhooks: mpsc::Receiver<ObjectRef<WebhookRoute>>,
    /// Credentials whose key is in a changed Secret.
    pub credentials: mpsc::Receiver<ObjectRef<AscCredential>>,
}

struct Senders {
    routes: mpsc::Sender<ObjectRef<WebhookRoute>>,
    webhooks: mpsc::Sender<ObjectRef<WebhookRoute>>,
    credentials: mpsc::Sender<ObjectRef<AscCredential>>,
}

/// Wake-ups held per controller before the watch waits for it.
const BUFFER: usize = 1024;

/// Starts following Secrets for the controllers (the watch only with `--secret-access watch`); the task
/// runs until aborted.
pub fn start(ctx: &Arc<Context>, namespace: Option<&str>) -> (tokio::task::AbortHandle, Wakeups) {
    let (routes, routes_rx) = mpsc::channel(BUFFER);
    let (webhooks, webhooks_rx) = mpsc::channel(BUFFER);
    let (credentials, credentials_rx) = mpsc::channel(BUFFER);
    let senders = Senders {
        routes,
        webhooks,
        credentials,
    };
    let task = tokio::spawn(follow(ctx.clone(), namespace.map(str::to_owned), senders));
    (
        task.abort_handle(),
        Wakeups {
            routes: routes_rx,
            webhooks: webhooks_rx,
            credentials: credentials_rx,
        },
    )
}

/// What one event of either source becomes: the Secrets to wake dependents of.
enum Source {
    Watch(Seen),
    Receiver(SecretId),
}

async fn follow(ctx: Arc<Context>, namespace: Option<String>, mut senders: Senders) {
    let watch = match ctx.settings.secret_access {
        SecretAccess::Watch => metadata_events(&ctx, namespace.as_deref()).boxed(),
        SecretAccess::Get => futures::stream::pending().boxed(),
    };
    let observed = match ctx.secret_observations() {
        Some(rx) => tokio_stream_of(rx).boxed(),
        None => futures::stream::pending().boxed(),
    };
    let mut sources =
        futures::stream::select(watch.map(Source::Watch), observed.map(Source::Receiver));
    let mut versions = Versions::default();
    while let Some(source) = sources.next().await {
        let changed = match source {
            Source::Watch(seen) => versions.changed(seen, |s| is_named(&ctx, s)),
            Source::Receiver(id) => vec![(id.namespace().to_owned(), id.name().to_owned())],
        };
        for secret in changed {
            wake(&ctx, &secret, &mut senders).await;
        }
    }
}

/// The receiver's observations as a stream; a lagging subscriber skips what it missed (the re-checks
/// still cover it).
fn tokio_stream_of(
    rx: tokio::sync::broadcast::Receiver<SecretId>,
) -> impl futures::Stream<Item = SecretId> + Send {
    futures::stream::unfold(rx, |mut rx| async move {
        loop {
            match rx.recv().await {
                Ok(id) => return Some((id, rx)),
                Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => continue,
                Err(tokio::sync::broadcast::error::RecvError::Closed) => return None,
            }
        }
    })
}

/// The metadata watch of Secrets. Each event is reduced to name and version at once: a Secret's
/// annotations can hold its values (`kubectl apply` keeps a last-applied copy), and nothing of them is
/// kept.
fn metadata_events(
    ctx: &Context,
    namespace: Option<&str>,
) -> impl futures::Stream<Item = Seen> + Send + use<> {
    let api: Api<PartialObjectMeta<Secret>> = match namespace {
        Some(ns) => Api::namespaced(ctx.client.clone(), ns),
        None => Api::all(ctx.client.clone()),
    };
    let mut config = watcher::Config::default()
        .any_semantic()
        .page_size(super::LIST_PAGE_SIZE);
    if !ctx.settings.secret_watch_selector.is_empty() {
        config = config.labels(&ctx.settings.secret_watch_selector);
    }
    let events = watcher(api, config).map(|e| e.map(seen));
    crate::watch_retry::retrying(
        events,
        super::watch_reporter("secret-watch", "secrets", &ctx.metrics),
    )
}

fn seen(event: watcher::Event<PartialObjectMeta<Secret>>) -> Seen {
    let id = |s: &PartialObjectMeta<Secret>| (s.namespace().unwrap_or_default(), s.name_any());
    let version = |s: &PartialObjectMeta<Secret>| s.resource_version().unwrap_or_default();
    match event {
        watcher::Event::Init => Seen::Listing,
        watcher::Event::InitApply(s) => Seen::Listed(id(&s), version(&s)),
        watcher::Event::InitDone => Seen::ListDone,
        watcher::Event::Apply(s) => Seen::Applied(id(&s), version(&s)),
        watcher::Event::Delete(s) => Seen::Deleted(id(&s)),
    }
}

fn is_named(ctx: &Context, (namespace, name): &SecretName) -> bool {
    let in_ns = |ns: Option<String>| ns.as_deref() == Some(namespace.as_str());
    ctx.stores
        .routes
        .state()
        .iter()
        .any(|r| in_ns(r.namespace()) && route_names(r, name))
        || ctx
            .stores
            .credentials
            .state()
            .iter()
            .any(|c| in_ns(c.namespace()) && credential_names(c, name))
}

/// Makes everything that names `secret` forget what it read of it and look again now.
async fn wake(ctx: &Context, (namespace, name): &SecretName, senders: &mut Senders) {
    let in_ns = |ns: Option<String>| ns.as_deref() == Some(namespace.as_str());
    let routes = ctx.stores.routes.state();
    for route in routes.iter().filter(|r| in_ns(r.namespace())) {
        if route_names(route, name) {
            ctx.route_secrets.forget(route);
            // A controller that stopped needs no wake-up.
            let _ = senders.routes.send(super::queued(route.as_ref())).await;
        }
        if webhook_secret_of(route, name) {
            ctx.webhook_secrets.forget(route);
            let _ = senders.webhooks.send(super::queued(route.as_ref())).await;
        }
    }
    let creds = ctx.stores.credentials.state();
    for cred in creds
        .iter()
        .filter(|c| in_ns(c.namespace()) && credential_names(c, name))
    {
        let _ = senders.credentials.send(super::queued(cred.as_ref())).await;
    }
    tracing::debug!(%namespace, secret = %name, "Secret changed; its routes and credentials look again");
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(name: &str) -> SecretName {
        ("ns".into(), name.into())
    }

    fn named(secret: &SecretName) -> bool {
        secret.1 != "unrelated"
    }

    #[test]
    fn the_first_list_wakes_nothing_and_later_changes_wake_their_dependents() {
        let mut v = Versions::default();
        assert!(v.changed(Seen::Listing, named).is_empty());
        assert!(
            v.changed(Seen::Listed(s("hook"), "1".into()), named)
                .is_empty()
        );
        assert!(v.changed(Seen::ListDone, named).is_empty());
        assert_eq!(
            v.changed(Seen::Applied(s("hook"), "2".into()), named),
            vec![s("hook")]
        );
        assert!(
            v.changed(Seen::Applied(s("hook"), "2".into()), named)
                .is_empty(),
            "the same version again is no change"
        );
        assert!(
            v.changed(Seen::Applied(s("unrelated"), "3".into()), named)
                .is_empty()
        );
        assert_eq!(v.changed(Seen::Deleted(s("hook")), named), vec![s("hook")]);
        assert_eq!(
            v.changed(Seen::Applied(s("hook"), "4".into()), named),
            vec![s("hook")],
            "created again"
        );
    }

    #[test]
    fn a_relist_reports_what_changed_or_vanished_while_the_watch_was_down() {
        let mut v = Versions::default();
        for e in [
            Seen::Listing,
            Seen::Listed(s("hook"), "1".into()),
            Seen::Listed(s("slack"), "1".into()),
            Seen::Listed(s("key"), "1".into()),
            Seen::ListDone,
        ] {
            assert!(v.changed(e, named).is_empty());
        }
        assert!(v.changed(Seen::Listing, named).is_empty());
        assert!(
            v.changed(Seen::Listed(s("hook"), "1".into()), named)
                .is_empty()
        );
        assert_eq!(
            v.changed(Seen::Listed(s("slack"), "5".into()), named),
            vec![s("slack")]
        );
        assert_eq!(
            v.changed(Seen::ListDone, named),
            vec![s("key")],
            "deleted meanwhile"
        );
    }

    fn route(spec: serde_json::Value) -> WebhookRoute {
        serde_json::from_value(serde_json::json!({
            "apiVersion": "asc.webhooks.dev/v1alpha1", "kind": "WebhookRoute",
            "metadata": {"name": "r", "namespace": "ns"}, "spec": spec
        }))
        .unwrap()
    }

    #[test]
    fn a_route_names_its_webhook_secret_and_its_http_secrets() {
        let r = route(serde_json::json!({
            "secretRef": {"name": "hook", "key": "secret"},
            "rules": [{"name": "n", "match": {}, "http": {
                "urlSecretRef": {"name": "slack", "key": "url"},
                "headersSecretRef": {"name": "headers"}}}]
        }));
        for name in ["hook", "slack", "headers"] {
            assert!(route_names(&r, name), "{name}");
        }
        assert!(!route_names(&r, "other"));
        assert!(
            !webhook_secret_of(&r, "hook"),
            "not registered by the operator"
        );
        let managed = route(serde_json::json!({
            "secretRef": {"name": "hook", "key": "secret"}, "rules": [],
            "appStoreConnect": {"appId": "1"}
        }));
        assert!(webhook_secret_of(&managed, "hook"));
        assert!(!webhook_secret_of(&managed, "slack"));
    }
}
