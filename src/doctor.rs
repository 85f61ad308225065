//! `asc-webhook-operator doctor -n NS ROUTE`: proves a route's Apple edge from the user's own machine.
//!
//! Read-only. With the user's kubeconfig it reads the route, its `AscCredential` and the key's Secret,
//! mints the route's token, then makes each call the operator makes for that route against the
//! credential's API: the app, the app's webhooks (does one carry the route's `status.url`?), the first
//! page of the delivery log with exactly the catch-up query, and the object of the route's last delivery.
//! One line per call: the request, the HTTP status, Apple's error text and what to change.

use std::fmt;
use std::time::Duration;

use kube::api::ListParams;
use kube::{Api, Client, ResourceExt};
use serde_json::Value;

use crate::asc::api::{ApiError, AscClient, AscClientOptions};
use crate::asc::origins::AllowedOrigins;
use crate::asc::token::{ApiKey, TokenSource};
use crate::asc::webhook_deliveries::{DeliveryFilter, parse_page};
use crate::cli::DoctorArgs;
use crate::controllers::asc_webhook::catch_up;
use crate::controllers::context::read_key;
use crate::resources::{AscCredential, WebhookDelivery, WebhookRoute};

/// Why the checks could not start (nothing was asked of Apple yet).
#[derive(Debug, thiserror::Error)]
pub enum DoctorError {
    /// No kubeconfig or in-cluster configuration.
    #[error("could not configure a Kubernetes client from the kubeconfig")]
    Config(#[source] kube::Error),
    /// Reading from the API server failed (RBAC, connection).
    #[error("reading {what} from the API server failed")]
    Api {
        /// What was read.
        what: String,
        /// The failure.
        #[source]
        source: kube::Error,
    },
    /// The route or its credential cannot be used as they are.
    #[error("{0}")]
    Setup(String),
}

/// The outcome of one check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// The call worked.
    Ok,
    /// Apple refused, or the answer shows a problem.
    Fail,
    /// Not checked (nothing to check yet).
    Skip,
    /// Works, but likely not as meant (a `match` value no documented event has).
    Warn,
}

/// One call and what it showed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Check {
    /// The outcome.
    pub verdict: Verdict,
    /// The request, e.g. `GET /v1/apps/123`.
    pub request: String,
    /// The HTTP status, when there was an answer.
    pub status: Option<u16>,
    /// Apple's error code and text, when it sent one.
    pub apple: Option<String>,
    /// What the answer showed, and on a failure what to change.
    pub note: String,
}

impl fmt::Display for Check {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let verdict = match self.verdict {
            Verdict::Ok => "OK  ",
            Verdict::Fail => "FAIL",
            Verdict::Skip => "SKIP",
            Verdict::Warn => "WARN",
        };
        let status = self.status.map_or("-".to_owned(), |s| s.to_string());
        write!(f, "{verdict} {} -> {status}: {}", self.request, self.note)?;
        if let Some(apple) = &self.apple {
            write!(f, " (Apple: {apple})")?;
        }
        Ok(())
    }
}

/// Every check, in the order made.
#[derive(Debug, Clone, Default)]
pub struct Report {
    /// The checks.
    pub checks: Vec<Check>,
}

impl Report {
    /// Whether nothing failed.
    pub fn passed(&self) -> bool {
        self.checks.iter().all(|c| c.verdict != Verdict::Fail)
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for c in &self.checks {
            writeln!(f, "{c}")?;
        }
        Ok(())
    }
}

/// What `doctor` checks, besides the cluster.
#[derive(Debug, Clone)]
pub struct Options {
    /// The route's namespace.
    pub namespace: String,
    /// The route.
    pub route: String,
    /// Scoped tokens, as the operator is run (`--asc-token-scope`).
    pub scoped_tokens: bool,
    /// Origins a credential may name, as the operator is run (`--asc-api-origins`).
    pub origins: AllowedOrigins,
    /// The first catch-up pass's lookback (`--catch-up-lookback`).
    pub lookback: Duration,
}

impl From<&DoctorArgs> for Options {
    fn from(a: &DoctorArgs) -> Self {
        Options {
            namespace: a.namespace.clone(),
            route: a.route.clone(),
            scoped_tokens: a.asc_token_scope.is_on(),
            origins: AllowedOrigins::new(a.asc_api_origins.iter().cloned()),
            lookback: a.catch_up_lookback,
        }
    }
}

/// Runs the subcommand with the kubeconfig's client.
pub async fn run(args: &DoctorArgs) -> Result<Report, DoctorError> {
    let client = Client::try_default().await.map_err(DoctorError::Config)?;
    diagnose(client, &Options::from(args)).await
}

/// The route, the credential's name and the client the operator would use for it.
struct Setup {
    route: WebhookRoute,
    app_id: String,
    credential: String,
    client: AscClient,
}

async fn read<K>(api: &Api<K>, what: String, name: &str) -> Result<K, DoctorError>
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + fmt::Debug,
{
    match api.get_opt(name).await {
        Ok(Some(k)) => Ok(k),
        Ok(None) => Err(DoctorError::Setup(format!("{what} does not exist"))),
        Err(source) => Err(DoctorError::Api { what, source }),
    }
}

async fn setup(kube: &Client, o: &Options) -> Result<Setup, DoctorError> {
    let ns = o.namespace.as_str();
    let what = format!("WebhookRoute {ns}/{}", o.route);
    let route: WebhookRoute =
        read(&Api::namespaced(kube.clone(), ns), what.clone(), &o.route).await?;
    let (Some(asc), Some(cred_ref)) = (&route.spec.app_store_connect, &route.spec.credential_ref)
    else {
        return Err(DoctorError::Setup(format!(
            "{what} has no spec.appStoreConnect and credentialRef: the operator makes no App Store Connect call for it"
        )));
    };
    let credential = format!("AscCredential {ns}/{}", cred_ref.name);
    let cred: AscCredential = read(
        &Api::namespaced(kube.clone(), ns),
        credential.clone(),
        &cred_ref.name,
    )
    .await?;
    o.origins
        .check(cred.spec.api_url())
        .map_err(|m| DoctorError::Setup(format!("{credential}: {m}")))?;
    let (_, pem) = read_key(kube, ns, &cred.spec.private_key_secret_ref)
        .await
        .map_err(|p| DoctorError::Setup(format!("{credential}: {p}")))?;
    let key = ApiKey::from_pem(cred.spec.key_id.clone(), cred.spec.issuer_id.clone(), &pem)
        .map_err(|e| DoctorError::Setup(format!("{credential}: KeyInvalid: {e}")))?;
    let options = AscClientOptions {
        max_attempts: 2,
        scoped_tokens: o.scoped_tokens,
        ..AscClientOptions::default()
    };
    let client = AscClient::with_options(cred.spec.api_url(), TokenSource::new(key), options)
        .map_err(|e| DoctorError::Setup(format!("{credential}: {e}")))?;
    Ok(Setup {
        app_id: asc.app_id.clone(),
        route,
        credential,
        client,
    })
}

/// Reads the route and its credential with `kube`, then makes each App Store Connect call.
pub async fn diagnose(kube: Client, o: &Options) -> Result<Report, DoctorError> {
    let s = setup(&kube, o).await?;
    let mut checks = vec![rule_filters(&s.route), token(&s).await];
    checks.push(app(&s).await);
    let (check, found) = webhooks(&s).await;
    checks.push(check);
    checks.push(delivery_log(&s, found, o.lookback).await);
    checks.push(last_instance(&s, &kube).await);
    Ok(Report { checks })
}

/// The rules' `match` values that no documented event has (typos, or types Apple added since).
fn rule_filters(route: &WebhookRoute) -> Check {
    let unknown = crate::controllers::match_lint::unknown_values(route);
    Check {
        verdict: if unknown.is_empty() {
            Verdict::Ok
        } else {
            Verdict::Warn
        },
        request: "spec.rules[].match".into(),
        status: None,
        apple: None,
        note: if unknown.is_empty() {
            "every event type and state named is documented".into()
        } else {
            crate::controllers::match_lint::describe(&unknown)
        },
    }
}

async fn token(s: &Setup) -> Check {
    let key = s.client.tokens().key();
    let request = format!("mint ES256 token (kid {})", key.key_id());
    match s.client.tokens().token().await {
        Ok(_) => ok(request, None, format!("{} signs tokens", s.credential)),
        Err(e) => Check {
            verdict: Verdict::Fail,
            request,
            status: None,
            apple: None,
            note: format!(
                "{e}: paste the .p8 file unchanged into the Secret of {}",
                s.credential
            ),
        },
    }
}

fn ok(request: String, status: Option<u16>, note: String) -> Check {
    Check {
        verdict: Verdict::Ok,
        request,
        status,
        apple: None,
        note,
    }
}

async fn app(s: &Setup) -> Check {
    let path = format!("/v1/apps/{}", s.app_id);
    match s.client.get_json(&path).await {
        Ok(doc) => {
            let name = doc.pointer("/data/attributes/name").and_then(Value::as_str);
            let bundle = doc
                .pointer("/data/attributes/bundleId")
                .and_then(Value::as_str);
            let note = format!("app {:?} ({})", name.unwrap_or("?"), bundle.unwrap_or("?"));
            ok(format!("GET {path}"), Some(200), note)
        }
        Err(e) => failed(
            format!("GET {path}"),
            &e,
            s,
            &format!(
                "no app {} for this key's team: check spec.appStoreConnect.appId",
                s.app_id
            ),
        ),
    }
}

/// The webhook of the route found in the app's list, if any.
struct Found {
    id: String,
}

async fn webhooks(s: &Setup) -> (Check, Option<Found>) {
    let path = format!("/v1/apps/{}/webhooks?limit=200", s.app_id);
    let request = format!("GET {path}");
    let doc = match s.client.get_json(&path).await {
        Ok(doc) => doc,
        Err(e) => {
            let not_found = format!("no app {}: check spec.appStoreConnect.appId", s.app_id);
            return (failed(request, &e, s, &not_found), None);
        }
    };
    let status = s.route.status.as_ref();
    let url = status.and_then(|st| st.url.clone()).unwrap_or_default();
    let recorded = status
        .and_then(|st| st.app_store_connect.as_ref())
        .and_then(|a| a.webhook_id.clone());
    let listed = doc
        .get("data")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let ours = listed.iter().find(|w| {
        !url.is_empty()
            && w.pointer("/attributes/url").and_then(Value::as_str) == Some(url.as_str())
    });
    let fail = |note: String| Check {
        verdict: Verdict::Fail,
        request: request.clone(),
        status: Some(200),
        apple: None,
        note,
    };
    let Some(w) = ours else {
        let note = match (&recorded, url.is_empty()) {
            (_, true) => {
                "the route has no status.url yet: run the operator with --public-url".to_owned()
            }
            (Some(id), false) => format!(
                "webhook {id} (in the route's status) is gone from App Store Connect, and none of the app's {} \
                 webhooks has {url}: it was deleted there; the operator registers a new one at its next \
                 resync (--webhook-resync-interval), or now if you edit the route",
                listed.len()
            ),
            (None, false) => format!(
                "none of the app's {} webhooks has {url}: see the route's WebhookRegistered condition",
                listed.len()
            ),
        };
        return (fail(note), None);
    };
    let id = w["id"].as_str().unwrap_or_default().to_owned();
    if w.pointer("/attributes/enabled").and_then(Value::as_bool) != Some(true) {
        let note = format!(
            "webhook {id} has this route's URL but is disabled: enable it in App Store Connect"
        );
        return (fail(note), Some(Found { id }));
    }
    let note = format!("webhook {id} has this route's URL {url} and is enabled");
    (ok(request, Some(200), note), Some(Found { id }))
}

async fn delivery_log(s: &Setup, found: Option<Found>, lookback: Duration) -> Check {
    let Some(Found { id }) = found else {
        return skip(
            "GET /v1/webhooks/{id}/deliveries",
            "no webhook of this route to read the log of",
        );
    };
    let now = jiff::Timestamp::now();
    let catch_up = s
        .route
        .status
        .as_ref()
        .and_then(|st| st.app_store_connect.as_ref())
        .and_then(|a| a.catch_up.as_ref());
    let from = catch_up::read_from(catch_up, now, lookback);
    // Exactly the first request of the next catch-up pass.
    let (since, before) = catch_up::windows(from.start, now)[0];
    let filter = DeliveryFilter {
        created_since: Some(crate::time::format_ts(since)),
        created_before: before.map(crate::time::format_ts),
        ..DeliveryFilter::default()
    };
    let path = filter.first_page(&id);
    let request = format!("GET {path}");
    match s.client.get_json(&path).await {
        Ok(doc) => match parse_page(&doc) {
            Ok(page) => {
                let undelivered = page
                    .deliveries
                    .iter()
                    .filter(|d| d.state.undelivered())
                    .count();
                let note = format!(
                    "{} entries on the first page, {undelivered} FAILED or PENDING, {} not understood",
                    page.deliveries.len() + page.skipped.len(),
                    page.skipped.len()
                );
                ok(request, Some(200), note)
            }
            Err(e) => Check {
                verdict: Verdict::Fail,
                request,
                status: Some(200),
                apple: None,
                note: format!("{e}: Apple's answer is not a delivery-log page"),
            },
        },
        Err(e) => failed(
            request,
            &e,
            s,
            &format!("webhook {id} is gone from App Store Connect"),
        ),
    }
}

fn skip(request: &str, note: &str) -> Check {
    Check {
        verdict: Verdict::Skip,
        request: request.to_owned(),
        status: None,
        apple: None,
        note: note.to_owned(),
    }
}

async fn last_instance(s: &Setup, kube: &Client) -> Check {
    let ns = s.route.namespace().unwrap_or_default();
    let api: Api<WebhookDelivery> = Api::namespaced(kube.clone(), &ns);
    let list = match api.list(&ListParams::default()).await {
        Ok(l) => l.items,
        Err(e) => {
            return skip(
                "GET {instance}",
                &format!("could not list webhookdeliveries: {e}"),
            );
        }
    };
    let route = s.route.name_any();
    let last = list
        .into_iter()
        .filter(|d| d.spec.route == route && d.spec.instance.is_some())
        .max_by(|a, b| a.spec.received_at.cmp(&b.spec.received_at));
    let Some(i) = last.and_then(|d| d.spec.instance) else {
        return skip(
            "GET {instance}",
            "the route has no delivery naming an App Store Connect object yet",
        );
    };
    let request = match s.client.instance_url(&i.type_, &i.id, i.url.as_deref()) {
        Ok(url) => format!("GET {url}"),
        Err(e) => return skip("GET {instance}", &e.to_string()),
    };
    match s
        .client
        .fetch_instance_of(&i.type_, &i.id, i.url.as_deref())
        .await
    {
        Ok(_) => ok(
            request,
            Some(200),
            format!("{} {} (enrichment works)", i.type_, i.id),
        ),
        Err(e) => {
            let gone = format!(
                "{} {} is gone, or belongs to another team than the key",
                i.type_, i.id
            );
            failed(request, &e, s, &gone)
        }
    }
}

/// The HTTP status of a failed call, when it got one.
fn http_status(e: &ApiError) -> Option<u16> {
    match e {
        ApiError::Unauthorized { .. } | ApiError::TokenScopeRefused { .. } => Some(401),
        ApiError::Forbidden { .. } => Some(403),
        ApiError::NotFound { .. } => Some(404),
        ApiError::Status { status, .. } => Some(*status),
        ApiError::GaveUp { last, .. } => http_status(last),
        _ => None,
    }
}

/// Apple's error code and text of a failed call.
fn apple_text(e: &ApiError) -> Option<String> {
    match e {
        ApiError::Unauthorized { asc_message }
        | ApiError::TokenScopeRefused { asc_message, .. }
        | ApiError::Forbidden { asc_message }
        | ApiError::NotFound { asc_message, .. }
        | ApiError::Status { asc_message, .. } => asc_message.clone(),
        ApiError::GaveUp { last, .. } => apple_text(last),
        _ => None,
    }
}

/// What to change after `e`; `not_found` says what a 404 means for this call.
fn fix(e: &ApiError, s: &Setup, not_found: &str) -> String {
    match e {
        ApiError::TokenScopeRefused { scope, .. } => format!(
            "Apple refused the token scoped to {scope:?} while the key works unscoped: run the operator with \
             --asc-token-scope=off (chart value ascApi.tokenScope: false)"
        ),
        ApiError::Unauthorized { .. } => format!(
            "the token was refused: check keyId and issuerId of {} against Users and Access → Integrations, \
             and that the key is not revoked",
            s.credential
        ),
        ApiError::Forbidden { .. } => format!(
            "the key may not do this: give it the Admin or App Manager role and access to app {}",
            s.app_id
        ),
        ApiError::NotFound { .. } => not_found.to_owned(),
        ApiError::Status { status: 400, .. } => {
            "Apple refused the request's parameters (its text names which)".to_owned()
        }
        ApiError::Status { .. } | ApiError::GaveUp { .. } | ApiError::Transport { .. } => {
            format!("App Store Connect is unavailable or rate-limiting ({e}): try again later")
        }
        _ => e.to_string(),
    }
}

fn failed(request: String, e: &ApiError, s: &Setup, not_found: &str) -> Check {
    Check {
        verdict: Verdict::Fail,
        request,
        status: http_status(e),
        apple: apple_text(e),
        note: fix(e, s, not_found),
    }
}
