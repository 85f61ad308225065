//! A mock App Store Connect API on `127.0.0.1:0`.
//!
//! It verifies every bearer token the way Apple does (ES256 signature against the test public key, `kid`,
//! `aud`, expiry, `exp - iat <= 1200`, `iss` for team keys or `sub: "user"` for individual keys, and — when
//! the token carries Apple's optional `scope` claim — that the request is one of the scoped operations),
//! serves JSON:API documents from a fixtures directory, injects faults on demand and logs every request,
//! so tests can assert what reached "Apple" (including that nothing did).
//!
//! Fixture files are named `<type>-<id>.json` and served at `/v1/<type>/<id>`; a file without a `-` is
//! served at `/v1/<name>`. `GET /v1/apps` answers a one-app list for cheap credential checks, and
//! `GET /v1/apps/{id}` each app the mock knows.

mod apple;
mod auth;
pub mod deliveries;
mod faults;
#[cfg(test)]
mod tests;
pub mod webhooks;

pub use deliveries::{DeliveryState, LogOrder, MockDelivery, MockEvent, SignedEvent};
pub use faults::Fault;
use faults::{fault_response, unauthorized};
pub use webhooks::MockWebhook;

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::State;
use axum::response::Response;
use bytes::Bytes;
use http::{HeaderMap, Method, StatusCode, Uri, header};
use serde_json::json;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use auth::Verifier;
pub use auth::{TokenFacts, raw_scope};

/// Key id of the test key in `tests/fixtures/asc/keys`.
pub const TEST_KEY_ID: &str = "TEST2K9Q7X";
/// Issuer id paired with the test key.
pub const TEST_ISSUER_ID: &str = "69a6de70-03db-47e3-e053-5b8c7c11a4d1";

/// The repository's `tests/fixtures/asc` directory.
pub fn fixtures_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/asc")
}

/// How to start an [`AscMock`]. `Default` uses the repository's fixtures and test key.
#[derive(Debug, Clone)]
pub struct AscMockOptions {
    /// Directory of `<type>-<id>.json` documents to serve.
    pub fixtures_dir: PathBuf,
    /// PEM file of the P-256 public key tokens must verify against.
    pub public_key_path: PathBuf,
    /// The only `kid` accepted.
    pub key_id: String,
    /// The only `iss` accepted for team keys.
    pub issuer_id: String,
}

impl Default for AscMockOptions {
    fn default() -> Self {
        let root = fixtures_root();
        AscMockOptions {
            fixtures_dir: root.join("api"),
            public_key_path: root.join("keys/AuthKey_TEST2K9Q7X.pub.pem"),
            key_id: TEST_KEY_ID.to_owned(),
            issuer_id: TEST_ISSUER_ID.to_owned(),
        }
    }
}

/// Why the mock could not start.
#[derive(Debug, thiserror::Error)]
pub enum AscMockError {
    /// A file (fixture or key) could not be read.
    #[error("reading {path}")]
    Read {
        /// The file or directory.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The public key file is not an EC public key PEM.
    #[error("{path} is not an EC public key PEM")]
    PublicKey {
        /// The key file.
        path: PathBuf,
        /// The parse error.
        #[source]
        source: jsonwebtoken::errors::Error,
    },
    /// A fixture is not valid JSON.
    #[error("fixture {path} is not JSON")]
    Fixture {
        /// The fixture file.
        path: PathBuf,
        /// The parse error.
        #[source]
        source: serde_json::Error,
    },
    /// Binding 127.0.0.1:0 failed.
    #[error("binding the mock's listener")]
    Bind(#[source] std::io::Error),
}

/// Which kind of key a verified token came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MockKeyKind {
    /// The token carried the known `iss`.
    Team,
    /// The token carried `sub: "user"` and no `iss`.
    Individual,
}

/// What the mock concluded about a request's token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuthOutcome {
    /// The token verified.
    Accepted(MockKeyKind),
    /// The token was refused, with the reason (for assertions; never sent to the client).
    Rejected(String),
}

impl AuthOutcome {
    /// Whether the token verified.
    pub fn is_accepted(&self) -> bool {
        matches!(self, AuthOutcome::Accepted(_))
    }

    /// The key kind, when the token verified.
    pub fn key_kind(&self) -> Option<MockKeyKind> {
        match self {
            AuthOutcome::Accepted(kind) => Some(*kind),
            AuthOutcome::Rejected(_) => None,
        }
    }
}

/// One request as the mock saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordedRequest {
    /// HTTP method.
    pub method: String,
    /// Path and query.
    pub path: String,
    /// Token verification result.
    pub auth: AuthOutcome,
    /// What the token said about itself, when it verified.
    pub token: TokenFacts,
    /// Status answered, or `None` if the client went away before the answer (e.g. a timeout during a
    /// [`Fault::Delay`]).
    pub status: Option<u16>,
}

#[derive(Debug)]
enum Remaining {
    Times(usize),
    Always,
}

/// Which requests a fault applies to: a method (or any) and text the path and query must contain.
#[derive(Debug, Clone)]
struct Matcher {
    method: Option<Method>,
    contains: String,
}

impl Matcher {
    fn any() -> Self {
        Matcher {
            method: None,
            contains: String::new(),
        }
    }

    fn matches(&self, method: &Method, path_and_query: &str) -> bool {
        self.method.as_ref().is_none_or(|m| m == method) && path_and_query.contains(&self.contains)
    }
}

struct Shared {
    verifier: Verifier,
    documents: Mutex<HashMap<String, Bytes>>,
    faults: Mutex<VecDeque<(Fault, Remaining, Matcher)>>,
    log: Mutex<Vec<RecordedRequest>>,
    webhooks: Mutex<webhooks::State>,
    deliveries: Mutex<Vec<MockDelivery>>,
    log_order: Mutex<deliveries::LogOrder>,
    refuse_scopes: std::sync::atomic::AtomicBool,
    base_url: std::sync::OnceLock<String>,
    sender: reqwest::Client,
    next_delivery: std::sync::atomic::AtomicU64,
    /// Ping deliveries still to lose (see [`AscMock::lose_ping_deliveries`]).
    lost_pings: std::sync::atomic::AtomicUsize,
}

/// Locks a mutex even if a panicking test thread poisoned it: the data stays meaningful for assertions.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// A running mock. Dropping it leaves the server running until the test runtime ends; call
/// [`AscMock::shutdown`] to stop it earlier.
pub struct AscMock {
    addr: SocketAddr,
    shared: Arc<Shared>,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<()>,
}

impl std::fmt::Debug for AscMock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AscMock")
            .field("addr", &self.addr)
            .finish_non_exhaustive()
    }
}

impl AscMock {
    /// Loads fixtures and the public key, binds `127.0.0.1:0` and starts serving.
    pub async fn start(options: AscMockOptions) -> Result<AscMock, AscMockError> {
        let read = |path: &Path| {
            std::fs::read(path).map_err(|source| AscMockError::Read {
                path: path.to_owned(),
                source,
            })
        };
        let public_key = read(&options.public_key_path)?;
        let key = jsonwebtoken::DecodingKey::from_ec_pem(&public_key).map_err(|source| {
            AscMockError::PublicKey {
                path: options.public_key_path.clone(),
                source,
            }
        })?;
        let documents = load_fixtures(&options.fixtures_dir)?;
        let shared = Arc::new(Shared {
            verifier: Verifier::new(key, options.key_id, options.issuer_id),
            documents: Mutex::new(documents),
            faults: Mutex::new(VecDeque::new()),
            log: Mutex::new(Vec::new()),
            webhooks: Mutex::new(webhooks::State::default()),
            deliveries: Mutex::new(Vec::new()),
            log_order: Mutex::new(deliveries::LogOrder::default()),
            refuse_scopes: std::sync::atomic::AtomicBool::new(false),
            base_url: std::sync::OnceLock::new(),
            sender: reqwest::Client::builder()
                .timeout(Duration::from_secs(5))
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .map_err(|e| AscMockError::Bind(std::io::Error::other(e)))?,
            next_delivery: std::sync::atomic::AtomicU64::new(1),
            lost_pings: std::sync::atomic::AtomicUsize::new(0),
        });

        let listener = tokio::net::TcpListener::bind(("127.0.0.1", 0))
            .await
            .map_err(AscMockError::Bind)?;
        let addr = listener.local_addr().map_err(AscMockError::Bind)?;
        let _ = shared.base_url.set(format!("http://{addr}"));
        let app = Router::new().fallback(handle).with_state(shared.clone());
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            let serve = axum::serve(listener, app).with_graceful_shutdown(async {
                let _ = stopped.await;
            });
            if let Err(err) = serve.await {
                tracing::warn!(error = %err, "ASC mock server stopped with an error");
            }
        });
        Ok(AscMock {
            addr,
            shared,
            stop: Some(stop),
            task,
        })
    }

    /// Base URL, e.g. `http://127.0.0.1:41234` (no trailing slash): use it as the credential's `apiUrl`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The bound address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Rewrites an `https://api.appstoreconnect.apple.com/...` link (as found in webhook payloads) to this
    /// mock's origin.
    pub fn rewrite(&self, apple_url: &str) -> String {
        match apple_url.strip_prefix("https://api.appstoreconnect.apple.com") {
            Some(rest) => format!("{}{rest}", self.url()),
            None => apple_url.to_owned(),
        }
    }

    /// The next `times` requests with a valid token get `fault` (queued after faults already injected).
    /// Requests with a bad token are answered 401 and do not consume faults, as on the real API.
    pub fn inject(&self, fault: Fault, times: usize) {
        if times > 0 {
            lock(&self.shared.faults).push_back((fault, Remaining::Times(times), Matcher::any()));
        }
    }

    /// Like [`inject`](Self::inject), for requests with `method` whose path and query contain `contains`
    /// only (e.g. `/v1/webhooks` for every webhook call, `cursor=` for a next page); other requests pass
    /// it by.
    pub fn inject_for(&self, method: Method, contains: &str, fault: Fault, times: usize) {
        if times > 0 {
            lock(&self.shared.faults).push_back((
                fault,
                Remaining::Times(times),
                Matcher {
                    method: Some(method),
                    contains: contains.to_owned(),
                },
            ));
        }
    }

    /// Every later request with a valid token gets `fault`, once the faults queued before it are used up.
    pub fn inject_always(&self, fault: Fault) {
        lock(&self.shared.faults).push_back((fault, Remaining::Always, Matcher::any()));
    }

    /// From now on, answers 401 to every token that carries a `scope` claim (unscoped ones still work),
    /// as an account would that does not accept the scope the operator writes.
    pub fn refuse_scoped_tokens(&self, refuse: bool) {
        self.shared
            .refuse_scopes
            .store(refuse, std::sync::atomic::Ordering::Relaxed);
    }

    /// Drops all pending faults.
    pub fn clear_faults(&self) {
        lock(&self.shared.faults).clear();
    }

    /// Serves `document` at `path` (e.g. `/v1/webhooks/abc/deliveries`), replacing any fixture there.
    pub fn insert_document(&self, path: &str, document: &serde_json::Value) {
        lock(&self.shared.documents).insert(path.to_owned(), Bytes::from(document.to_string()));
    }

    /// Every request received so far, oldest first.
    pub fn requests(&self) -> Vec<RecordedRequest> {
        lock(&self.shared.log).clone()
    }

    /// Stops accepting requests and waits (briefly) for the server to finish.
    pub async fn shutdown(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        // A request parked in a long Delay fault would hold graceful shutdown open; do not wait for it.
        if tokio::time::timeout(Duration::from_secs(2), &mut self.task)
            .await
            .is_err()
        {
            self.task.abort();
        }
    }
}

fn load_fixtures(dir: &Path) -> Result<HashMap<String, Bytes>, AscMockError> {
    let read_err = |path: &Path| {
        let path = path.to_owned();
        move |source| AscMockError::Read { path, source }
    };
    let mut documents = HashMap::new();
    for entry in std::fs::read_dir(dir).map_err(read_err(dir))? {
        let path = entry.map_err(read_err(dir))?.path();
        let Some(stem) = path
            .extension()
            .filter(|ext| *ext == "json")
            .and_then(|_| path.file_stem())
            .and_then(|s| s.to_str())
        else {
            continue;
        };
        let body = std::fs::read(&path).map_err(read_err(&path))?;
        serde_json::from_slice::<serde_json::Value>(&body).map_err(|source| {
            AscMockError::Fixture {
                path: path.clone(),
                source,
            }
        })?;
        // Resource types never contain '-', ids (UUIDs) do: split at the first one.
        let route = match stem.split_once('-') {
            Some((kind, id)) => format!("/v1/{kind}/{id}"),
            None => format!("/v1/{stem}"),
        };
        documents.insert(route, Bytes::from(body));
    }
    Ok(documents)
}

impl Shared {
    fn next_fault(&self, method: &Method, path: &str) -> Option<Fault> {
        let mut faults = lock(&self.faults);
        let index = faults
            .iter()
            .position(|(_, _, m)| m.matches(method, path))?;
        let (fault, remaining, _) = faults.get_mut(index)?;
        let fault = fault.clone();
        if let Remaining::Times(n) = remaining {
            *n -= 1;
            if *n == 0 {
                faults.remove(index);
            }
        }
        Some(fault)
    }

    async fn respond(
        self: &Arc<Self>,
        method: &Method,
        uri: &Uri,
        body: &[u8],
        auth: &AuthOutcome,
    ) -> Response {
        let path = uri.path();
        if !auth.is_accepted() {
            return unauthorized();
        }
        let path_and_query = uri.path_and_query().map_or(path, |pq| pq.as_str());
        if let Some(fault) = self.next_fault(method, path_and_query) {
            if let Fault::Delay(delay) = fault {
                tokio::time::sleep(delay).await;
            }
            if let Some(response) = fault_response(&fault) {
                return response;
            }
        }
        // A document a test put in place wins over the stateful fake.
        let inserted = (method == Method::GET)
            .then(|| lock(&self.documents).get(path).cloned())
            .flatten();
        if let Some(body) = inserted {
            return json_response(StatusCode::OK, body);
        }
        if webhooks::serves(path) {
            return self.webhook_call(method, path, uri.query().unwrap_or_default(), body);
        }
        if method != Method::GET {
            return error(
                StatusCode::METHOD_NOT_ALLOWED,
                "METHOD_NOT_ALLOWED",
                "The request method is not valid for this resource.",
                "",
            );
        }
        if path == "/v1/apps" {
            return json_response(StatusCode::OK, Bytes::from(apps_document().to_string()));
        }
        if let Some(id) = path
            .strip_prefix("/v1/apps/")
            .filter(|id| !id.contains('/'))
            && lock(&self.webhooks).apps.contains(id)
        {
            let mut app = apps_document()["data"][0].clone();
            app["id"] = json!(id);
            let doc = json!({"data": app, "links": {"self": format!("https://api.appstoreconnect.apple.com{path}")}});
            return json_response(StatusCode::OK, Bytes::from(doc.to_string()));
        }
        let document = lock(&self.documents).get(path).cloned();
        match document {
            Some(body) => json_response(StatusCode::OK, body),
            None => error(
                StatusCode::NOT_FOUND,
                "NOT_FOUND",
                "The specified resource does not exist",
                &format!("The path provided does not match a defined resource: {path}"),
            ),
        }
    }
}

async fn handle(
    State(shared): State<Arc<Shared>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let path_and_query = uri
        .path_and_query()
        .map_or_else(|| uri.path().to_owned(), |pq| pq.as_str().to_owned());
    let (mut auth, token) = shared
        .verifier
        .check(method.as_str(), &path_and_query, &headers);
    if token.scope.is_some()
        && shared
            .refuse_scopes
            .load(std::sync::atomic::Ordering::Relaxed)
    {
        auth = AuthOutcome::Rejected("this account refuses scoped tokens".into());
    }
    // Logged on arrival so requests the client abandons (timeouts) still count.
    let index = {
        let mut log = lock(&shared.log);
        log.push(RecordedRequest {
            method: method.to_string(),
            path: path_and_query,
            auth: auth.clone(),
            token,
            status: None,
        });
        log.len() - 1
    };
    let response = shared.respond(&method, &uri, &body, &auth).await;
    if let Some(entry) = lock(&shared.log).get_mut(index) {
        entry.status = Some(response.status().as_u16());
    }
    response
}

fn apps_document() -> serde_json::Value {
    json!({
        "data": [{
            "type": "apps",
            "id": "1234567890",
            "attributes": {
                "name": "Example",
                "bundleId": "com.example.app",
                "sku": "EXAMPLE",
                "primaryLocale": "en-US"
            }
        }],
        "links": { "self": "https://api.appstoreconnect.apple.com/v1/apps?limit=1" },
        "meta": { "paging": { "total": 1, "limit": 1 } }
    })
}

pub(crate) fn json_response(status: StatusCode, body: Bytes) -> Response {
    let mut response = Response::new(Body::from(body));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/json"),
    );
    response
}

pub(crate) fn error(status: StatusCode, code: &str, title: &str, detail: &str) -> Response {
    let body = json!({
        "errors": [{
            "id": format!("mock-{}", status.as_u16()),
            "status": status.as_u16().to_string(),
            "code": code,
            "title": title,
            "detail": detail,
        }]
    });
    json_response(status, Bytes::from(body.to_string()))
}
