//! What every reconciler shares, in two lifetimes: [`Process`] (the client, settings, metrics, the Event
//! recorder, the clients routes' actions act as) is built once per process; [`Context`] adds what one
//! leadership term remembers (the watch-fed stores, the delivery index and the memories, each a small
//! type of its own module below) and is built anew at the start of each term.

pub mod asc_clients;
pub mod backoffs;
pub mod caught_up;
pub mod copies;
pub mod enrichments;
pub mod holds;
pub mod job_facts;
pub mod nudges;
pub mod pruned;
pub mod route_secret_facts;
pub mod stores;
pub mod webhook_secrets;
pub mod written_asc;

pub use asc_clients::{AscClients, CredentialProblem, read_key};
pub use backoffs::Backoffs;
pub use caught_up::CaughtUp;
pub use copies::DeliveryCopies;
pub use enrichments::Enrichments;
pub use holds::Holds;
pub use job_facts::{JobFact, JobFacts};
pub use nudges::Nudges;
pub use pruned::PrunedEvents;
pub use route_secret_facts::{RouteSecretFacts, SecretFacts};
pub use stores::Stores;
pub use webhook_secrets::{WebhookSecret, WebhookSecrets};
pub use written_asc::WrittenAscStatus;

use super::delivery_index::DeliveryIndex;
use super::event_recorder::Recorder;
use super::impersonation::{ActionClients, Identity, ImpersonationError};
use super::resource_kinds::ResourceKinds;
use crate::actions::egress::DenyList;
use crate::actions::http::ActionHttp;
use crate::asc::api::AscClientOptions;
use crate::asc::origins::AllowedOrigins;
use crate::metrics::Metrics;
use crate::receiver::handoff::Handoff;
use crate::receiver::secret_cache::SecretId;
use crate::receiver::store::DeliveryStore;
use crate::resources::WebhookRoute;
use crate::retry::Backoff;
use kube::runtime::events::{Event, EventType, Reporter};
use kube::{Client, Resource};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{broadcast, watch};

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
    /// How often routes that are not Ready and not-ready credentials are re-checked without a watched
    /// change.
    pub recheck_interval: Duration,
    /// How often a Ready route's Secrets (and its webhook secret) are read again without a sign of
    /// change (jittered): the safety net behind the Secret watch.
    pub secret_recheck_interval: Duration,
    /// Reconciles running at once, per controller.
    pub max_concurrent_reconciles: u16,
    /// How often a registered App Store Connect webhook is read back to repair changes made there
    /// (shortened per route by up to 20 % so reads spread out).
    pub webhook_resync_interval: Duration,
    /// How long after a ping `WebhookVerified` stays `Unknown` before it turns `False`.
    pub webhook_verify_timeout: Duration,
    /// How long after the request a test ping not yet received is first requested again (each later
    /// re-send waits twice as long as the one before).
    pub webhook_ping_resend_after: Duration,
    /// Re-sends of one test ping at most (all before the verify timeout).
    pub webhook_ping_resends: i32,
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
    /// How changed Secrets are noticed.
    pub secret_access: crate::cli::SecretAccess,
    /// Label selector narrowing the Secret metadata watch (empty: every Secret in scope).
    pub secret_watch_selector: String,
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
            webhook_ping_resend_after: Duration::from_secs(30),
            webhook_ping_resends: 3,
            webhook_release_timeout: Duration::from_secs(10 * 60),
            catch_up_lookback: Duration::from_secs(24 * 3600),
            asc_origins: AllowedOrigins::default(),
            http_deny: crate::actions::egress::parse_deny_cidrs(
                crate::actions::egress::DEFAULT_DENY_CIDRS,
            )
            .unwrap_or_default(),
            default_service_account: None,
            secret_access: crate::cli::SecretAccess::Watch,
            secret_watch_selector: String::new(),
        }
    }
}

impl Settings {
    /// The retry backoff, from base and longest delay.
    pub fn retry_backoff(&self) -> Backoff {
        Backoff {
            base: self.retry_base_delay,
            max: self.retry_max_delay,
        }
    }
}

/// What lives as long as the process and is shared by every leadership term: nothing in it describes the
/// cluster, so nothing in it can go stale between terms.
pub struct Process {
    /// Kubernetes client.
    pub client: Client,
    /// Metrics.
    pub metrics: Metrics,
    /// Settings.
    pub settings: Settings,
    /// HTTP client for HTTP actions, behind the egress guard.
    pub http: ActionHttp,
    /// Where catch-up records deliveries: the receiver's way, with the receiver's limits.
    pub delivery_store: DeliveryStore,
    /// The receiver's recoveries from unready, when the operator wired them.
    ready_again: Option<watch::Receiver<u64>>,
    /// The Secrets this replica's receiver found missing or changed, when the operator wired them.
    secret_observations: Option<broadcast::Sender<SecretId>>,
    /// The deliveries this process's receiver and catch-up just stored, as the API server returned them.
    handoff: Handoff,
    recorder: Recorder,
    actions: ActionClients,
}

impl Process {
    /// The process part, publishing Events as `reporter`.
    pub fn new(
        client: Client,
        metrics: Metrics,
        settings: Settings,
        reporter: Reporter,
        delivery_store: DeliveryStore,
    ) -> Result<Self, reqwest::Error> {
        Ok(Process {
            delivery_store,
            recorder: Recorder::new(client.clone(), reporter),
            actions: ActionClients::operator_only(client.clone()),
            http: crate::actions::http::client(settings.http_deny.clone())?,
            ready_again: None,
            secret_observations: None,
            handoff: Handoff::default(),
            client,
            metrics,
            settings,
        })
    }

    /// Uses `actions` for the routes' actions (see [`Process::action_client`]).
    pub fn with_action_clients(mut self, actions: ActionClients) -> Self {
        self.actions = actions;
        self
    }

    /// Hands the controllers the receiver's recoveries from unready.
    pub fn with_ready_again(mut self, recoveries: watch::Receiver<u64>) -> Self {
        self.ready_again = Some(recoveries);
        self
    }

    /// The receiver's recoveries from unready, when the operator wired them.
    pub fn ready_again(&self) -> Option<watch::Receiver<u64>> {
        self.ready_again.clone()
    }

    /// Lets each term's delivery controller start from what this process's receiver and catch-up stored
    /// (the same `handoff` their delivery sinks fill).
    pub fn with_handoff(mut self, handoff: Handoff) -> Self {
        self.handoff = handoff;
        self
    }

    /// Hands the controllers the Secrets this replica's receiver finds missing, back or changed.
    pub fn with_secret_observations(mut self, observations: broadcast::Sender<SecretId>) -> Self {
        self.secret_observations = Some(observations);
        self
    }

    /// The Secrets this replica's receiver found missing or changed, when the operator wired them.
    pub fn secret_observations(&self) -> Option<broadcast::Receiver<SecretId>> {
        self.secret_observations
            .as_ref()
            .map(broadcast::Sender::subscribe)
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
            note: Some(crate::text::truncate(&note, 1000)),
            action: "Reconcile".to_owned(),
            secondary: None,
        };
        if let Err(e) = self.recorder.publish(&event, &obj.object_ref(&())).await {
            tracing::debug!(error = %e, reason, "could not publish Event");
        }
    }
}

/// One leadership term's state on top of the process's: the watch-fed stores, the delivery index and the
/// leader's memories (everything in them can be lost at any time; watches and reads rebuild it). Built
/// at the start of each term and dropped at its end: a replica leading again after another replica led
/// meanwhile must not act on what its first term last saw. Reads through to [`Process`].
pub struct Context {
    process: Arc<Process>,
    /// Summaries of every delivery by route, fed by a watch (the route controller counts from it).
    pub deliveries: DeliveryIndex,
    /// The kinds resource actions create: discovery results and one watch per kind in use.
    pub resource_kinds: ResourceKinds,
    /// The watch-fed stores of credentials, routes and unfinished deliveries.
    pub stores: Stores,
    /// Deliveries pruned in this term.
    pub pruned: PrunedEvents,
    /// What the Job watch last showed of each managed Job.
    pub job_facts: JobFacts,
    /// The full copy of each unfinished delivery as last read or written, so passes need not read it.
    pub copies: DeliveryCopies,
    /// What was last read about each route's Secrets.
    pub route_secrets: RouteSecretFacts,
    /// App Store Connect API clients per credential.
    pub asc_clients: AscClients,
    /// Consecutive failed reconciles per object.
    pub backoffs: Backoffs,
    /// Enrichment per delivery, so HTTP retries of one delivery do not call App Store Connect again.
    pub enrichments: Enrichments,
    /// Objects held back until their backoff ends.
    pub holds: Holds,
    /// Routes this term made its catch-up pass for.
    pub caught_up: CaughtUp,
    /// What the App Store Connect webhook reconciler last wrote for each route in this term.
    pub written_asc: WrittenAscStatus,
    /// The webhook secrets the App Store Connect webhook reconciler last read in this term.
    pub webhook_secrets: WebhookSecrets,
    /// The `reconcile-requested-at` values each controller answered in this term.
    pub nudges: Nudges,
}

impl Context {
    /// A fresh term over `process`, reading the term's watches through `stores`.
    pub fn for_term(process: Arc<Process>, stores: Stores) -> Self {
        let settings = &process.settings;
        Context {
            deliveries: DeliveryIndex::default(),
            resource_kinds: Default::default(),
            stores,
            pruned: PrunedEvents::default(),
            job_facts: JobFacts::default(),
            copies: DeliveryCopies::with_handoff(process.handoff.clone()),
            route_secrets: RouteSecretFacts::new(settings_idle(settings)),
            asc_clients: AscClients::new(
                process.client.clone(),
                settings.asc_origins.clone(),
                settings.asc.clone(),
            ),
            backoffs: Backoffs::new(settings.retry_backoff()),
            enrichments: Enrichments::default(),
            holds: Holds::default(),
            caught_up: CaughtUp::default(),
            written_asc: WrittenAscStatus::default(),
            webhook_secrets: WebhookSecrets::new(settings_idle(settings)),
            nudges: Nudges::default(),
            process,
        }
    }
}

impl std::ops::Deref for Context {
    type Target = Process;

    fn deref(&self) -> &Process {
        &self.process
    }
}

/// Route facts unused for twice the slow re-check belong to a route that is gone.
fn settings_idle(settings: &Settings) -> Duration {
    settings
        .secret_recheck_interval
        .max(settings.recheck_interval)
        .saturating_mul(2)
        .max(Duration::from_secs(60))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn route_facts_outlive_twice_the_slowest_recheck_and_a_minute_at_least() {
        let mut settings = Settings {
            secret_recheck_interval: Duration::from_secs(3600),
            recheck_interval: Duration::from_secs(30),
            ..Settings::default()
        };
        assert_eq!(settings_idle(&settings), Duration::from_secs(7200));
        settings.secret_recheck_interval = Duration::from_secs(1);
        settings.recheck_interval = Duration::from_secs(2);
        assert_eq!(settings_idle(&settings), Duration::from_secs(60));
    }
}
