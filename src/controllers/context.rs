//! What every reconciler shares: the client, settings, metrics, the Event recorder, App Store Connect
//! clients per credential, and the per-object failure counts behind the retry backoff.

use super::delivery::jobs::JobFact;
use super::delivery_index::DeliveryIndex;
use super::impersonation::{ActionClients, Identity, ImpersonationError};
use super::route::SecretFacts;
use crate::actions::egress::DenyList;
use crate::actions::http::ActionHttp;
use crate::asc::api::{AscClient, AscClientOptions};
use crate::asc::enrich::Enrichment;
use crate::asc::origins::AllowedOrigins;
use crate::asc::token::{ApiKey, TokenSource};
use crate::metrics::Metrics;
use crate::resources::{AscCredential, SecretKeySelector, WebhookDelivery, WebhookRoute};
use k8s_openapi::api::core::v1::Secret;
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::runtime::reflector::Store;
use kube::{Api, Client, Resource, ResourceExt};
use std::collections::HashMap;
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

/// Settings of the controllers, from the command line.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Base of each route's `status.url`.
    pub public_url: Option<String>,
    /// Processing passes before a transiently failing delivery is marked `Failed`.
    pub max_attempts: i32,
    /// First retry delay.
    pub retry_base_delay: Duration,
    /// Longest retry delay.
    pub retry_max_delay: Duration,
    /// Options of App Store Connect API clients.
    pub asc: AscClientOptions,
    /// How often routes and not-ready credentials are re-checked without a watched change (Secrets are
    /// read by name, not watched).
    pub recheck_interval: Duration,
    /// How often a Ready route's Secrets are read again (jittered).
    pub secret_recheck_interval: Duration,
    /// Reconciles running at once, per controller.
    pub max_concurrent_reconciles: u16,
    /// How often a registered App Store Connect webhook is read back to repair changes made there
    /// (shortened per route by up to 20 % so reads spread out).
    pub webhook_resync_interval: Duration,
    /// How long after a ping `WebhookVerified` stays `Unknown` before it turns `False`.
    pub webhook_verify_timeout: Duration,
    /// How long a deleted route waits for its App Store Connect webhook to be deleted before it is
    /// released anyway.
    pub webhook_release_timeout: Duration,
    /// How far back the first catch-up pass after registration reads App Store Connect's delivery log.
    pub catch_up_lookback: Duration,
    /// Origins credentials may send tokens to.
    pub asc_origins: AllowedOrigins,
    /// Addresses HTTP actions may not connect to (the pod's own included).
    pub http_deny: DenyList,
    /// The ServiceAccount impersonated for routes that name none; `None` acts as the operator itself.
    pub default_service_account: Option<String>,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            public_url: None,
            max_attempts: 8,
            retry_base_delay: Duration::from_secs(2),
            retry_max_delay: Duration::from_secs(300),
            asc: AscClientOptions::default(),
            recheck_interval: Duration::from_secs(30),
            secret_recheck_interval: Duration::from_secs(3600),
            max_concurrent_reconciles: 8,
            webhook_resync_interval: Duration::from_secs(30 * 60),
            webhook_verify_timeout: Duration::from_secs(5 * 60),
            webhook_release_timeout: Duration::from_secs(10 * 60),
            catch_up_lookback: Duration::from_secs(24 * 3600),
            asc_origins: AllowedOrigins::default(),
            http_deny: crate::actions::egress::parse_deny_cidrs(
                crate::actions::egress::DEFAULT_DENY_CIDRS,
            )
            .unwrap_or_default(),
            default_service_account: None,
        }
    }
}

impl Settings {
    /// Exponential backoff for the `attempt`-th retry (1-based), with up to 20 % jitter so a burst of
    /// failures does not retry in lockstep.
    pub fn backoff(&self, attempt: u32) -> Duration {
        crate::retry::Backoff {
            base: self.retry_base_delay,
            max: self.retry_max_delay,
        }
        .delay(attempt)
    }
}

/// What the App Store Connect webhook reconciler last wrote for a route: `status.appStoreConnect` and
/// its conditions.
pub type WrittenAsc = (
    Option<crate::resources::route_asc::AppStoreConnectStatus>,
    Vec<crate::resources::Condition>,
);

/// Why a credential cannot serve API calls right now.
#[derive(Debug, Clone, thiserror::Error)]
pub enum CredentialProblem {
    /// Any reason, with whether trying again later may help.
    #[error("{reason}: {message}")]
    Unusable {
        /// Condition reason, e.g. `SecretNotFound`.
        reason: &'static str,
        /// For a person.
        message: String,
        /// Whether a retry may succeed without a change by the user (API server trouble).
        transient: bool,
    },
}

/// What a usable credential gives the delivery controller.
#[derive(Clone)]
pub struct ResolvedCredential {
    /// The API client (tokens cached inside).
    pub client: AscClient,
    /// The credential, as read.
    pub credential: AscCredential,
}

#[derive(Clone)]
struct CachedClient {
    fingerprint: String,
    client: AscClient,
}

/// State shared by the reconcilers.
pub struct Context {
    /// Kubernetes client.
    pub client: Client,
    /// Metrics.
    pub metrics: Metrics,
    /// Settings.
    pub settings: Settings,
    /// HTTP client for HTTP actions, behind the egress guard.
    pub http: ActionHttp,
    /// Summaries of every delivery by route, fed by a watch (the route controller counts from it).
    pub deliveries: DeliveryIndex,
    /// The kinds resource actions create: discovery results and one watch per kind in use.
    pub resource_kinds: super::resource_kinds::ResourceKinds,
    credentials: OnceLock<Store<AscCredential>>,
    routes: OnceLock<Store<WebhookRoute>>,
    unfinished: OnceLock<Store<WebhookDelivery>>,
    /// Deliveries pruned by this leader, by `namespace/name`: catch-up re-reads Apple's log with an overlap,
    /// and an event whose delivery was recorded and then pruned must not be recorded (and run) again.
    pruned: moka::sync::Cache<String, ()>,
    /// What the Job watch last showed of each managed Job, by `namespace/name`.
    job_facts: moka::sync::Cache<String, JobFact>,
    /// When a pass first found a Job missing that the Job watch had not shown deleted.
    jobs_missing: moka::sync::Cache<String, std::time::Instant>,
    route_facts: moka::sync::Cache<String, SecretFacts>,
    recorder: Recorder,
    actions: ActionClients,
    /// API clients per credential (their tokens inside); a credential unused for a day is forgotten.
    asc_clients: moka::sync::Cache<(String, String), CachedClient>,
    /// Consecutive failed reconciles per object; an object that stops failing (or is deleted) ages out.
    failures: moka::sync::Cache<String, u32>,
    /// Enrichment per delivery uid, so HTTP retries of one delivery do not call App Store Connect again.
    enrichments: moka::sync::Cache<String, Enrichment>,
    holds: Mutex<HashMap<String, (u64, std::time::Instant)>>,
    /// Routes this process made its start-up catch-up pass for. Bounded like `route_facts`: past that
    /// many routes, a forgotten one gets one more (idempotent) pass.
    caught_up: moka::sync::Cache<String, ()>,
    ready_again: OnceLock<tokio::sync::watch::Receiver<u64>>,
    written_asc: Mutex<HashMap<String, WrittenAsc>>,
}

/// Enrichments kept in memory, so HTTP retries of one delivery do not call App Store Connect again.
const ENRICHMENT_CACHE: u64 = 1024;

impl Context {
    /// A context publishing Events as `reporter`.
    pub fn new(
        client: Client,
        metrics: Metrics,
        settings: Settings,
        reporter: Reporter,
    ) -> Result<Self, reqwest::Error> {
        let idle = settings_idle(&settings);
        Ok(Context {
            recorder: Recorder::new(client.clone(), reporter),
            actions: ActionClients::operator_only(client.clone()),
            http: crate::actions::http::client(settings.http_deny.clone())?,
            client,
            metrics,
            settings,
            deliveries: DeliveryIndex::default(),
            resource_kinds: Default::default(),
            credentials: OnceLock::new(),
            routes: OnceLock::new(),
            // A day covers the catch-up overlap and lookback many times over; 100,000 names are ~10 MiB.
            pruned: moka::sync::Cache::builder()
                .max_capacity(100_000)
                .time_to_live(Duration::from_secs(24 * 3600))
                .build(),
            unfinished: OnceLock::new(),
            ready_again: OnceLock::new(),
            // Outlives a Job's TTL deletion long enough for its delivery to read the outcome.
            job_facts: moka::sync::Cache::builder()
                .max_capacity(50_000)
                .time_to_live(Duration::from_secs(3600))
                .build(),
            jobs_missing: moka::sync::Cache::builder()
                .max_capacity(50_000)
                .time_to_live(Duration::from_secs(3600))
                .build(),
            // Bounded by the routes that exist; entries of deleted routes age out.
            route_facts: moka::sync::Cache::builder()
                .max_capacity(100_000)
                .time_to_idle(idle)
                .build(),
            asc_clients: moka::sync::Cache::builder()
                .max_capacity(10_000)
                .time_to_idle(Duration::from_secs(24 * 3600))
                .build(),
            failures: moka::sync::Cache::builder()
                .max_capacity(100_000)
                .time_to_idle(Duration::from_secs(3600))
                .build(),
            enrichments: moka::sync::Cache::builder()
                .max_capacity(ENRICHMENT_CACHE)
                .time_to_live(Duration::from_secs(3600))
                .build(),
            holds: Mutex::new(HashMap::new()),
            caught_up: moka::sync::Cache::builder().max_capacity(100_000).build(),
            written_asc: Mutex::new(HashMap::new()),
        })
    }

    /// Uses `actions` for the routes' actions (see [`Context::action_client`]).
    pub fn with_action_clients(mut self, actions: ActionClients) -> Self {
        self.actions = actions;
        self
    }

    /// Whom `route`'s actions run as.
    pub fn action_identity(&self, route: &WebhookRoute) -> Identity {
        Identity::for_route(route, self.settings.default_service_account.as_deref())
    }

    /// The client for `route`'s actions — creating its Jobs, reading its HTTP actions' Secrets — acting as
    /// the route's ServiceAccount (or the default one), so a route can do only what that account may.
    pub fn action_client(&self, route: &WebhookRoute) -> Result<Client, ImpersonationError> {
        self.actions.client_for(&self.action_identity(route))
    }

    /// The watched credentials, once the controllers started.
    pub fn credentials(&self) -> Option<&Store<AscCredential>> {
        self.credentials.get()
    }

    /// Hands the route controller the credential store (once; later calls are ignored).
    pub fn set_credentials(&self, store: Store<AscCredential>) {
        let _ = self.credentials.set(store);
    }

    /// The route controller's cache of routes, once the controllers started.
    pub fn routes(&self) -> Option<&Store<WebhookRoute>> {
        self.routes.get()
    }

    /// Hands the controllers the receiver's recoveries from unready (once; later calls are ignored).
    pub fn set_ready_again(&self, recoveries: tokio::sync::watch::Receiver<u64>) {
        let _ = self.ready_again.set(recoveries);
    }

    /// The receiver's recoveries from unready, when the operator wired them.
    pub fn ready_again(&self) -> Option<tokio::sync::watch::Receiver<u64>> {
        self.ready_again.get().cloned()
    }

    /// Forgets which routes this process caught up, so each makes a pass on its next reconcile.
    pub fn forget_caught_up(&self) {
        self.caught_up.invalidate_all();
    }

    /// Hands the delivery controller the route store (once; later calls are ignored).
    pub fn set_routes(&self, store: Store<WebhookRoute>) {
        let _ = self.routes.set(store);
    }

    /// The delivery controller's cache of unfinished deliveries, once the controllers started.
    pub fn unfinished_deliveries(&self) -> Option<&Store<WebhookDelivery>> {
        self.unfinished.get()
    }

    /// Installs the delivery controller's cache (once).
    pub fn set_unfinished_deliveries(&self, store: Store<WebhookDelivery>) {
        let _ = self.unfinished.set(store);
    }

    /// Remembers that delivery `namespace/name` was pruned.
    pub fn remember_pruned(&self, namespace: &str, name: &str) {
        self.pruned.insert(format!("{namespace}/{name}"), ());
    }

    /// Whether this leader pruned delivery `namespace/name` (within the last day).
    pub fn was_pruned(&self, namespace: &str, name: &str) -> bool {
        self.pruned.contains_key(&format!("{namespace}/{name}"))
    }

    /// What the Job watch last showed of Job `namespace/name`.
    pub fn job_fact(&self, namespace: &str, name: &str) -> Option<JobFact> {
        self.job_facts.get(&format!("{namespace}/{name}"))
    }

    /// Remembers what the Job watch shows of `job`; `deleted`: its deletion event (the Job's last state).
    pub fn remember_job(&self, job: &k8s_openapi::api::batch::v1::Job, deleted: bool) {
        let key = format!("{}/{}", job.namespace().unwrap_or_default(), job.name_any());
        self.job_facts
            .insert(key, super::delivery::jobs::fact_of(job, deleted));
    }

    /// How long Job `namespace/name` has been found missing without the Job watch showing its deletion
    /// (zero the first time).
    pub fn job_missing_for(&self, namespace: &str, name: &str) -> Duration {
        self.jobs_missing
            .get_with(format!("{namespace}/{name}"), std::time::Instant::now)
            .elapsed()
    }

    /// What was last read about `route`'s Secrets.
    pub fn route_facts(&self, route: &WebhookRoute) -> Option<SecretFacts> {
        self.route_facts.get(&facts_key(route))
    }

    /// Remembers what was read about `route`'s Secrets.
    pub fn remember_route_facts(&self, route: &WebhookRoute, facts: SecretFacts) {
        self.route_facts.insert(facts_key(route), facts);
    }

    /// Forgets what was read about `route`'s Secrets, so the next route reconcile reads them again (the
    /// operator itself just created one).
    pub fn forget_route_facts(&self, route: &WebhookRoute) {
        self.route_facts.invalidate(&facts_key(route));
    }

    /// Publishes an Event about `obj`; a failure to publish is logged, never fatal.
    pub async fn event<K: Resource<DynamicType = ()>>(
        &self,
        obj: &K,
        warning: bool,
        reason: &str,
        note: String,
    ) {
        let event = Event {
            type_: if warning {
                EventType::Warning
            } else {
                EventType::Normal
            },
            reason: reason.to_owned(),
            note: Some(truncate(&note, 1000)),
            action: "Reconcile".to_owned(),
            secondary: None,
        };
        if let Err(e) = self.recorder.publish(&event, &obj.object_ref(&())).await {
            tracing::debug!(error = %e, reason, "could not publish Event");
        }
    }

    /// Counts a failed reconcile of `key` and returns the delay before the next try.
    pub fn record_failure(&self, key: &str) -> Duration {
        let n = self
            .failures
            .entry(key.to_owned())
            .and_upsert_with(|n| n.map_or(1, |e| e.into_value().saturating_add(1)))
            .into_value();
        self.settings.backoff(n).min(Duration::from_secs(60))
    }

    /// Forgets the failures of `key` after a successful reconcile.
    pub fn record_success(&self, key: &str) {
        self.failures.invalidate(key);
    }

    /// Holds `key` back until `until` while its inputs keep the `fingerprint`: a reconcile triggered by
    /// the failure's own status write must not call an external API again before its backoff ends.
    pub fn hold(&self, key: &str, fingerprint: u64, until: std::time::Instant) {
        let mut holds = self.holds.lock().unwrap_or_else(|p| p.into_inner());
        holds.retain(|_, (_, t)| *t > std::time::Instant::now());
        holds.insert(key.to_owned(), (fingerprint, until));
    }

    /// How long `key` is still held back, if its inputs still have the held `fingerprint`.
    pub fn held(&self, key: &str, fingerprint: u64) -> Option<Duration> {
        let holds = self.holds.lock().unwrap_or_else(|p| p.into_inner());
        let (f, until) = holds.get(key)?;
        (*f == fingerprint)
            .then(|| until.checked_duration_since(std::time::Instant::now()))
            .flatten()
            .filter(|d| !d.is_zero())
    }

    /// Whether this process already made a catch-up pass for `key` (each process makes one at start).
    pub fn caught_up(&self, key: &str) -> bool {
        self.caught_up.contains_key(key)
    }

    /// Notes a catch-up pass for `key`.
    pub fn mark_caught_up(&self, key: &str) {
        self.caught_up.insert(key.to_owned(), ());
    }

    /// The `status.appStoreConnect` this process last wrote for route `uid`. Only the leader writes it,
    /// so this is the truth even when a reconcile starts from a cached route that predates the write.
    pub fn written_asc(&self, uid: &str) -> Option<WrittenAsc> {
        self.written_asc
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(uid)
            .cloned()
    }

    /// Remembers (or, with `None`, forgets) what was written for route `uid`.
    pub fn remember_asc(&self, uid: &str, status: Option<WrittenAsc>) {
        let mut m = self.written_asc.lock().unwrap_or_else(|p| p.into_inner());
        match status {
            Some(s) => {
                m.insert(uid.to_owned(), s);
            }
            None => {
                m.remove(uid);
            }
        }
    }

    /// Ends the hold on `key`.
    pub fn release_hold(&self, key: &str) {
        self.holds
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(key);
    }

    /// The enrichment fetched earlier for `d` by this process, if any.
    pub fn cached_enrichment(&self, d: &WebhookDelivery) -> Option<Enrichment> {
        let uid = d.uid()?;
        self.enrichments.get(&uid)
    }

    /// Remembers the enrichment of `d` (bounded, and for an hour at most).
    pub fn cache_enrichment(&self, d: &WebhookDelivery, e: &Enrichment) {
        let Some(uid) = d.uid() else { return };
        self.enrichments.insert(uid, e.clone());
    }

    /// Resolves the credential `name` in `namespace` into an API client, reusing the cached client (and so
    /// its tokens) while neither the credential nor its Secret changed.
    pub async fn asc_client(
        &self,
        namespace: &str,
        name: &str,
    ) -> Result<ResolvedCredential, CredentialProblem> {
        let creds: Api<AscCredential> = Api::namespaced(self.client.clone(), namespace);
        let credential = match creds.get_opt(name).await {
            Ok(Some(c)) => c,
            Ok(None) => {
                return Err(unusable(
                    "CredentialNotFound",
                    format!("AscCredential {namespace}/{name} does not exist"),
                    false,
                ));
            }
            Err(e) => {
                return Err(unusable(
                    "ApiServerUnavailable",
                    format!("cannot read AscCredential {namespace}/{name}: {e}"),
                    true,
                ));
            }
        };
        // Before the key is read: a refused origin never gets a token minted for it.
        self.settings
            .asc_origins
            .check(credential.spec.api_url())
            .map_err(|m| unusable("ApiUrlNotAllowed", m, false))?;
        let (secret, pem) = read_key(
            &self.client,
            namespace,
            &credential.spec.private_key_secret_ref,
        )
        .await?;
        let fingerprint = format!(
            "{}/{}/{}",
            credential.metadata.generation.unwrap_or_default(),
            credential.uid().unwrap_or_default(),
            secret.resource_version().unwrap_or_default()
        );
        let key = (namespace.to_owned(), name.to_owned());
        if let Some(cached) = self.asc_clients.get(&key)
            && cached.fingerprint == fingerprint
        {
            return Ok(ResolvedCredential {
                client: cached.client.clone(),
                credential,
            });
        }
        let api_key = ApiKey::from_pem(
            credential.spec.key_id.clone(),
            credential.spec.issuer_id.clone(),
            &pem,
        )
        .map_err(|e| unusable("KeyInvalid", e.to_string(), false))?;
        let client = AscClient::with_options(
            credential.spec.api_url(),
            TokenSource::new(api_key),
            self.settings.asc.clone(),
        )
        .map_err(|e| unusable("InvalidApiUrl", e.to_string(), false))?;
        self.asc_clients.insert(
            key,
            CachedClient {
                fingerprint,
                client: client.clone(),
            },
        );
        Ok(ResolvedCredential { client, credential })
    }
}

fn facts_key(route: &WebhookRoute) -> String {
    route.uid().unwrap_or_else(|| {
        format!(
            "{}/{}",
            route.namespace().unwrap_or_default(),
            route.name_any()
        )
    })
}

/// Route facts unused for twice the slow re-check belong to a route that is gone.
fn settings_idle(settings: &Settings) -> Duration {
    settings
        .secret_recheck_interval
        .max(settings.recheck_interval)
        .saturating_mul(2)
        .max(Duration::from_secs(60))
}

/// Reads the private key of a credential from its Secret.
pub async fn read_key(
    client: &Client,
    namespace: &str,
    selector: &SecretKeySelector,
) -> Result<(Secret, Vec<u8>), CredentialProblem> {
    if crate::resources::common::crosses_namespace(selector.namespace.as_deref(), namespace) {
        return Err(unusable(
            "CrossNamespaceReference",
            format!("privateKeySecretRef must stay in namespace {namespace}"),
            false,
        ));
    }
    let secrets: Api<Secret> = Api::namespaced(client.clone(), namespace);
    let secret = match secrets.get_opt(&selector.name).await {
        Ok(Some(s)) => s,
        Ok(None) => {
            return Err(unusable(
                "SecretNotFound",
                format!("Secret {namespace}/{} does not exist", selector.name),
                false,
            ));
        }
        Err(e) => {
            return Err(unusable(
                "ApiServerUnavailable",
                format!("cannot read Secret {namespace}/{}: {e}", selector.name),
                true,
            ));
        }
    };
    let pem = secret
        .data
        .as_ref()
        .and_then(|d| d.get(&selector.key))
        .map(|b| b.0.clone())
        .filter(|b| !b.is_empty())
        .ok_or_else(|| {
            unusable(
                "SecretKeyNotFound",
                format!(
                    "Secret {namespace}/{} has no key {:?}",
                    selector.name, selector.key
                ),
                false,
            )
        })?;
    Ok((secret, pem))
}

fn unusable(reason: &'static str, message: String, transient: bool) -> CredentialProblem {
    CredentialProblem::Unusable {
        reason,
        message,
        transient,
    }
}

/// Cuts `s` to at most `max` bytes on a character boundary.
pub fn truncate(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_owned();
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &s[..end])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn truncation_respects_characters() {
        assert_eq!(truncate("héllo", 2), "h…");
        assert_eq!(truncate("ok", 10), "ok");
    }
}
