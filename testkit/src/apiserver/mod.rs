//! An in-process, stateful fake Kubernetes API server.
//!
//! It speaks the real wire protocol over plain HTTP/1.1 on `127.0.0.1`, so an unmodified
//! `kube::Client`, `kube::runtime::watcher`, `reflector` and `Controller` — or the operator
//! binary itself via [`FakeApiServer::write_kubeconfig`] — run against it. State lives in memory
//! for as long as the [`FakeApiServer`] handle does.
//!
//! ```no_run
//! # async fn demo() {
//! use testkit::apiserver::{FakeApiServer, FakeApiServerOptions, Fault};
//! let server = FakeApiServer::start(FakeApiServerOptions::default().crd_dir("crds")).await;
//! let client = server.client();
//! let secrets: kube::Api<k8s_openapi::api::core::v1::Secret> = kube::Api::namespaced(client, "default");
//! server.fail_next(1, Fault::Status(500));
//! assert!(secrets.get("missing").await.is_err()); // the injected 500
//! assert!(server.get_object("secrets", "default", "missing").is_none());
//! # }
//! ```
//!
//! # Served surface
//! - Discovery: `/version`, `/api`, `/api/v1`, `/apis`, `/apis/{group}`, `/apis/{group}/{version}`
//!   (the classic documents; aggregated discovery `apidiscovery.k8s.io/v2` is not served).
//! - Types: every served version of every loaded CRD, plus core/v1 `secrets`, `configmaps`,
//!   `namespaces`, `pods`, `serviceaccounts`, `events`; `events.k8s.io/v1 events`;
//!   `rbac.authorization.k8s.io/v1 roles, rolebindings, clusterroles, clusterrolebindings`;
//!   `coordination.k8s.io/v1 leases`; `batch/v1 jobs`; `apiextensions.k8s.io/v1
//!   customresourcedefinitions` (creating one through the API registers it, and its status is
//!   set to `Established`). Status subresource: CRDs that declare it, jobs, pods, namespaces, CRDs.
//! - Verbs: get, list, watch, create, update (PUT), patch, delete, deletecollection, on
//!   namespaced paths, plus all-namespace list/watch; get/update/patch on `/status`.
//! - `dryRun=All` runs the whole write path without storing. `Accept: …;as=PartialObjectMetadata`
//!   (kube's `metadata_watcher`) gets `PartialObjectMetadata(List)` answers.
//!
//! # Semantics kept
//! - `resourceVersion` is one global counter; every stored write takes the next value. A
//!   write that changes nothing is not stored (no new version, no event), as in the real registry.
//! - Create: `generateName` (5-char suffix), `uid`, `creationTimestamp`, `generation: 1`;
//!   409 `AlreadyExists`; the body's `kind`/`apiVersion`/namespace must match the URL (400); a
//!   body that still carries `metadata.resourceVersion` gets the etcd store's 500
//!   ("resourceVersion should not be set on objects to be created").
//! - Update/patch: 409 `Conflict` when the body (or the patched result) carries a
//!   `metadata.resourceVersion` other than the stored one, or a different `uid`. A PUT without
//!   a resourceVersion is an unconditional update. PUT of a missing object is 404.
//! - `metadata.generation` is bumped when anything other than `metadata` (and `status`, for types
//!   with a status subresource) changes — including for Secrets and Leases, which the real server
//!   leaves without a generation.
//! - Status subresource: main-resource writes keep the stored `.status` (and create drops it);
//!   `/status` writes change only `.status`.
//! - Size limits: a request body over 3 MiB is a 413 `RequestEntityTooLarge` ("Request entity too large:
//!   limit is 3145728" on the real server); a stored object over etcd's default 1.5 MiB
//!   (`--max-request-bytes` 1572864, measured on the object's JSON) is refused as kube-apiserver passes
//!   etcd's refusal on: HTTP 500, a `Status` with an empty reason and the message
//!   `etcdserver: request is too large` (kubernetes/kubernetes#112152 asks for a 4xx; it is still a 500).
//!   Nothing is stored.
//! - Secrets: `stringData` is merged into `data` as base64; `data` must be valid base64 (400).
//! - Errors are `metav1.Status` bodies with `reason`, `code`, `message` and `details{name,group,kind}`.
//! - Patches: `merge-patch+json` (RFC 7386); `json-patch+json` (RFC 6902, where a `test` for `null`
//!   passes on a missing path, as in the Go library); `strategic-merge-patch+json` for built-ins only
//!   (415 for custom resources, as the real server), approximated: lists of objects keyed by
//!   `name`/`type`/`uid` merge by that key, `$patch: delete` removes an item, `metadata.finalizers`
//!   merges as a set with `$deleteFromPrimitiveList/finalizers`; other lists are replaced and other
//!   directives ignored (the real server uses per-field Go struct tags, e.g. `ports` by `containerPort`).
//! - Server-side apply (`apply-patch+yaml`; JSON bodies are YAML too): `fieldManager` is required
//!   (422); apply creates a missing object (201). Ownership is tracked per (manager, operation,
//!   subresource) in `metadata.managedFields` (`FieldsV1`, leaves only). Maps merge recursively;
//!   lists of objects whose items all carry `name`, `type` or `uid` are merged by that key
//!   (containers, env, conditions, ownerReferences); every other list is atomic. Applying a value
//!   for a field another manager owns with a different value is a 409 `Conflict` naming the manager
//!   and field, unless `force=true`, which takes the field over. Fields a manager applied before and
//!   now omits are removed unless another manager also owns them. Non-apply writes (`Update`) take
//!   ownership of the fields they change from everyone. Differences: a manager never conflicts with
//!   itself (even across Apply/Update entries); client-supplied `managedFields` are ignored; applied
//!   fields unknown to a CRD schema are pruned rather than rejected; an explicit `null` in an applied
//!   configuration removes the field. Non-apply writes without `fieldManager` are recorded under
//!   the User-Agent up to its first `/` (or `unknown`), as the real server does.
//! - Finalizers: delete of an object with finalizers sets `deletionTimestamp` (+ generation bump,
//!   MODIFIED event) and keeps it; the write that removes the last finalizer deletes it (one DELETED
//!   event). No new finalizers may be added while deleting (422). Delete preconditions (`uid`,
//!   `resourceVersion`) give 409.
//! - Garbage collection runs synchronously at deletion, background-style and recursively: an object
//!   whose `ownerReferences` all point at deleted uids is deleted (or marked deleting if it has
//!   finalizers). `propagationPolicy=Orphan` strips the owner reference from dependents instead;
//!   `Foreground` behaves like `Background`. Deleting a namespace deletes everything in it.
//! - Delete answers: custom resources get the object, built-ins a `Status{status: Success}`; an
//!   object held by finalizers is returned with its `deletionTimestamp`.
//! - Label selectors (`=`, `==`, `!=`, `in`, `notin`, `key`, `!key`) and field selectors (`=`, `==`,
//!   `!=` on any dotted path, e.g. `metadata.name`, `metadata.namespace`) on list, watch and
//!   deletecollection. The real server only allows a few field paths per type; this one allows all.
//! - List: items in namespace/name order, `metadata.resourceVersion` is the current global version.
//!   With `limit`, pages are cut by key and `continue` tokens carry the first page's version; pages
//!   are not a consistent snapshot (no MVCC), but a watch from that version replays everything that
//!   changed since, so list-then-watch converges. A continue token older than the history is 410.
//!   `resourceVersion` on list is otherwise ignored (the current state is served, which "NotOlderThan"
//!   allows), except `resourceVersionMatch=Exact` with a version older than the history: 410 `Expired`
//!   ("too old resource version"), as from a compacted etcd.
//! - Watch (`watch=true|1`): newline-delimited JSON over a chunked response. `resourceVersion` unset
//!   or `"0"` (or `sendInitialEvents=true`) starts with synthetic ADDED events for the current state
//!   (followed by a `k8s.io/initial-events-end` BOOKMARK when `sendInitialEvents=true`); otherwise
//!   events after that version are replayed from a bounded history
//!   ([`FakeApiServerOptions::history_limit`], 10 000 by default) and a version older than the
//!   history gets an ERROR event with a 410 `Expired` Status in the stream, as from the real watch
//!   cache. With selectors, an object that stops (starts) matching is sent as DELETED (ADDED).
//!   `allowWatchBookmarks=true` adds a BOOKMARK every [`FakeApiServerOptions::bookmark_interval`].
//!   `timeoutSeconds` ends the stream. A watcher that falls far behind gets 410 and is closed.
//! - Validation: custom resources are pruned (unknown fields dropped unless
//!   `x-kubernetes-preserve-unknown-fields`), defaulted (`default`) and validated against the served
//!   version's `openAPIV3Schema` (translation notes in `schema.rs`: `nullable`,
//!   `int-or-string`, boolean exclusive bounds handled; `format` ignored; CEL
//!   `x-kubernetes-validations`, list-type/map-keys are NOT enforced). Violations are 422 `Invalid`
//!   naming each field path. All kinds: `metadata.name` (or `generateName`) must be a DNS-1123
//!   subdomain; label keys/values and annotation keys must be well-formed.
//!
//! # Authorization
//! Off by default: every request is allowed. With [`FakeApiServerOptions::authorization`], requests
//! carrying `Impersonate-User` (and optionally `Impersonate-Group`) are decided by the RBAC objects in the
//! store — `roles`, `rolebindings`, `clusterroles`, `clusterrolebindings` of `rbac.authorization.k8s.io/v1`,
//! created like any other object — matching API group, resource (`jobs/status` for subresources), verb,
//! `resourceNames` and namespace, with `*` wildcards. A refusal is the real server's 403 Status, e.g.
//! `jobs.batch is forbidden: User "system:serviceaccount:ios:sa" cannot create resource "jobs" in API
//! group "batch" in the namespace "ios"`. A ServiceAccount user impersonated without groups gets
//! `system:serviceaccounts` and `system:serviceaccounts:<ns>`; every impersonated user is in
//! `system:authenticated`. Requests that impersonate nobody (the test's own client, an operator's own
//! identity) stay allowed, discovery is open, and whether the caller may impersonate is not checked.
//! [`RequestRecord::impersonated_user`] records who each request acted as, with authorization on or off.
//!
//! # Not modelled
//! Authentication, aggregated ClusterRoles and `nonResourceURLs` in RBAC, admission webhooks, aggregated
//! discovery, Table output, protobuf/CBOR, HTTP/2, watch-list `resourceVersionMatch` checks, `Exact`
//! list reads of a version still in the history (the current state is served), multi-version conversion beyond rewriting `apiVersion` (all versions share one
//! storage, like `conversion: None`), scale/other subresources, namespace existence checks (objects
//! may be created in namespaces that do not exist), controllers (Jobs never run — set their status
//! yourself with [`FakeApiServer::patch_object`]), defaulting of built-in types (e.g. Job selectors),
//! graceful deletion of pods, and the core/v1 ↔ events.k8s.io/v1 Event aliasing (two separate stores).
//!
//! YAML: the real API server never sees YAML from kubectl, Helm or Argo CD; they convert it to JSON
//! with YAML 1.1 rules (a bare `on` key becomes `"true"`). This server parses the YAML handed to
//! [`FakeApiServer::load_crds_from_yaml`] and `crd_dir` with a YAML 1.2 parser, which keeps `on` a
//! string: tests that load manifests meant for `kubectl apply` convert them with
//! [`crate::kubectl::Kubectl`] first.
//!
//! # Test hooks
//! Faults ([`FakeApiServer::fail_next`], [`FakeApiServer::add_fault`] with a [`FaultRule`]),
//! [`FakeApiServer::set_refuse_connections`], [`FakeApiServer::begin_outage`]/[`FakeApiServer::end_outage`]
//! (connections refused, then back on the same port with the watch history gone),
//! [`FakeApiServer::set_latency`], [`FakeApiServer::set_write_latency`] (writes wait as for etcd),
//! [`FakeApiServer::set_latency_jitter`],
//! [`FakeApiServer::set_watch_delay`] (watch events arrive late, as from a loaded watch cache),
//! [`FakeApiServer::pause`]/[`FakeApiServer::resume`], [`FakeApiServer::disconnect_all`],
//! [`FakeApiServer::drop_watches`], [`FakeApiServer::compact`] (old resourceVersions answer 410 Expired,
//! "too old resource version"); introspection ([`FakeApiServer::request_log`],
//! [`FakeApiServer::count_requests`], [`FakeApiServer::requests_by_client`]); direct store access ([`FakeApiServer::get_object`],
//! [`FakeApiServer::list_objects`], [`FakeApiServer::put_object`], [`FakeApiServer::patch_object`],
//! [`FakeApiServer::delete_object`]) that goes through the same write path, so watchers see it.
//! [`FakeApiServer::fail_next`] and rules without a verb skip discovery requests. Remember that
//! kube's default client retries 429/503/504 by itself (up to 15 times): build a client from
//! [`FakeApiServer::config`] with `default_retry = false` to observe each failure.

mod admission;
mod authz;
mod ctx;
mod error;
mod faults;
mod fields;
mod handlers;
mod ops;
mod outage;
mod patch;
mod registry;
mod schema;
mod selectors;
mod server;
mod store;
mod watch;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use parking_lot::Mutex;
use serde_json::Value;

pub use faults::{Fault, FaultRule, RequestRecord, Verb};

use ctx::Ctx;
use error::ApiError;
use faults::Faults;
use fields::Scope;
use ops::{DeleteOpts, PatchKind};
use server::{Settings, Shared, accept_loop};
use store::Store;

/// Start-up options. `Default` gives a server with only the built-in types.
#[derive(Debug, Clone)]
pub struct FakeApiServerOptions {
    /// Every `*.yaml`/`*.yml` file here is loaded as (multi-document) CRD YAML.
    pub crd_dir: Option<PathBuf>,
    /// More CRD YAML documents to load.
    pub crd_yaml: Vec<String>,
    /// Watch events kept for resuming watches; older versions get 410 Expired.
    pub history_limit: usize,
    /// How often a watch with `allowWatchBookmarks=true` gets a BOOKMARK.
    pub bookmark_interval: Duration,
    /// Watch duration when the client sends no `timeoutSeconds`.
    pub default_watch_timeout: Duration,
    /// How long a [`Fault::Timeout`] stalls before its 504.
    pub timeout_fault_delay: Duration,
    /// Namespace objects created at start.
    pub namespaces: Vec<String>,
    /// Decide impersonated requests with RBAC objects in the store (off: every request is allowed).
    /// See "Authorization" in the module docs.
    pub authorization: bool,
}

impl Default for FakeApiServerOptions {
    fn default() -> Self {
        Self {
            crd_dir: None,
            crd_yaml: Vec::new(),
            history_limit: 10_000,
            bookmark_interval: Duration::from_secs(1),
            default_watch_timeout: Duration::from_secs(1800),
            timeout_fault_delay: Duration::from_millis(500),
            namespaces: vec!["default".into()],
            authorization: false,
        }
    }
}

impl FakeApiServerOptions {
    pub fn crd_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.crd_dir = Some(dir.into());
        self
    }

    pub fn crd_yaml(mut self, yaml: impl Into<String>) -> Self {
        self.crd_yaml.push(yaml.into());
        self
    }

    pub fn history_limit(mut self, n: usize) -> Self {
        self.history_limit = n;
        self
    }

    pub fn bookmark_interval(mut self, d: Duration) -> Self {
        self.bookmark_interval = d;
        self
    }

    /// Turns RBAC on for impersonated requests.
    pub fn authorization(mut self, on: bool) -> Self {
        self.authorization = on;
        self
    }
}

#[derive(Debug, thiserror::Error)]
pub enum FakeApiServerError {
    #[error("binding the fake API server: {0}")]
    Bind(std::io::Error),
    #[error("reading {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("bad CRD YAML: {0}")]
    Crd(String),
    #[error("unknown resource {0:?}")]
    UnknownResource(String),
    #[error("API error {code} {reason}: {message}")]
    Api {
        code: u16,
        reason: String,
        message: String,
    },
}

impl From<ApiError> for FakeApiServerError {
    fn from(e: ApiError) -> Self {
        FakeApiServerError::Api {
            code: e.code,
            reason: e.reason.to_string(),
            message: e.message,
        }
    }
}

/// A running fake API server. Dropping it stops the server.
pub struct FakeApiServer {
    shared: Arc<Shared>,
}

fn yaml_documents(yaml: &str) -> Result<Vec<Value>, FakeApiServerError> {
    use serde::Deserialize as _;
    let mut out = Vec::new();
    for doc in serde_yaml::Deserializer::from_str(yaml) {
        let v = serde_yaml::Value::deserialize(doc)
            .map_err(|e| FakeApiServerError::Crd(e.to_string()))?;
        if v.is_null() {
            continue;
        }
        out.push(serde_json::to_value(v).map_err(|e| FakeApiServerError::Crd(e.to_string()))?);
    }
    Ok(out)
}

impl FakeApiServer {
    /// Starts the server on `127.0.0.1:0`. Panics if it cannot bind or a CRD fails to load,
    /// which in a test is the most useful thing to do.
    pub async fn start(opts: FakeApiServerOptions) -> Self {
        match Self::try_start(opts).await {
            Ok(s) => s,
            Err(e) => panic!("starting the fake API server: {e}"),
        }
    }

    pub async fn try_start(opts: FakeApiServerOptions) -> Result<Self, FakeApiServerError> {
        let listener = server::listen(SocketAddr::from(([127, 0, 0, 1], 0)))
            .map_err(FakeApiServerError::Bind)?;
        let addr = listener.local_addr().map_err(FakeApiServerError::Bind)?;
        let shared = Arc::new(Shared {
            store: Mutex::new(Store::new(opts.history_limit, opts.history_limit.max(1024))),
            opts: Settings {
                bookmark_interval: opts.bookmark_interval,
                default_watch_timeout: opts.default_watch_timeout,
                timeout_fault_delay: opts.timeout_fault_delay,
                authorization: opts.authorization,
            },
            faults: Mutex::new(Faults::default()),
            log: Mutex::new(Vec::new()),
            kill_tx: tokio::sync::watch::Sender::new(0),
            refuse: AtomicBool::new(false),
            latency: Mutex::new(Duration::ZERO),
            write_latency: Mutex::new(Duration::ZERO),
            drop_watches_tx: tokio::sync::watch::Sender::new(0),
            accept: Mutex::new(None),
            latency_jitter: Mutex::new(Duration::ZERO),
            jitter_rng: std::sync::atomic::AtomicU64::new(0x9e37_79b9_7f4a_7c15),
            watch_delay: Arc::new(Mutex::new(Duration::ZERO)),
            paused: tokio::sync::watch::Sender::new(false),
            addr,
        });
        *shared.accept.lock() = Some(tokio::spawn(accept_loop(listener, shared.clone())));
        let server = Self { shared };
        for ns in &opts.namespaces {
            server.put_object(
                "namespaces",
                serde_json::json!({ "metadata": { "name": ns } }),
            )?;
        }
        if let Some(dir) = &opts.crd_dir {
            server.load_crd_dir(dir)?;
        }
        for yaml in &opts.crd_yaml {
            server.load_crds_from_yaml(yaml)?;
        }
        Ok(server)
    }

    pub fn addr(&self) -> SocketAddr {
        self.shared.addr
    }

    /// `http://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("http://{}", self.shared.addr)
    }

    /// A kube config for this server: plain HTTP, namespace `default`, kube's default retry
    /// policy on (it retries 429/503/504; set `default_retry = false` to see every failure).
    pub fn config(&self) -> kube::Config {
        let uri = match self.url().parse::<http::Uri>() {
            Ok(u) => u,
            Err(e) => panic!("the fake API server URL is not a URI: {e}"),
        };
        kube::Config::new(uri)
    }

    pub fn client(&self) -> kube::Client {
        match kube::Client::try_from(self.config()) {
            Ok(c) => c,
            Err(e) => panic!("building a kube client for the fake API server: {e}"),
        }
    }

    /// Writes a kubeconfig pointing at this server, for a subprocess run with `KUBECONFIG`.
    pub fn write_kubeconfig(&self, path: impl AsRef<Path>) -> std::io::Result<()> {
        let yaml = format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: testkit\n  cluster:\n    server: {}\ncontexts:\n- name: testkit\n  context:\n    cluster: testkit\n    user: testkit\n    namespace: default\ncurrent-context: testkit\nusers:\n- name: testkit\n  user:\n    token: testkit\n",
            self.url()
        );
        std::fs::write(path, yaml)
    }

    /// Loads multi-document CRD YAML (documents of other kinds are skipped). Returns how many
    /// CRDs were loaded; loading one that exists replaces it.
    pub fn load_crds_from_yaml(&self, yaml: &str) -> Result<usize, FakeApiServerError> {
        let mut n = 0;
        for doc in yaml_documents(yaml)? {
            if doc.get("kind").and_then(Value::as_str) != Some("CustomResourceDefinition") {
                continue;
            }
            self.put_object("customresourcedefinitions.apiextensions.k8s.io", doc)
                .map_err(|e| FakeApiServerError::Crd(e.to_string()))?;
            n += 1;
        }
        Ok(n)
    }

    /// Loads every `*.yaml`/`*.yml` file in `dir`, in name order.
    pub fn load_crd_dir(&self, dir: impl AsRef<Path>) -> Result<usize, FakeApiServerError> {
        let dir = dir.as_ref();
        let io = |source| FakeApiServerError::Io {
            path: dir.to_path_buf(),
            source,
        };
        let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
            .map_err(io)?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "yaml" || x == "yml"))
            .collect();
        files.sort();
        let mut n = 0;
        for f in files {
            let text = std::fs::read_to_string(&f).map_err(|source| FakeApiServerError::Io {
                path: f.clone(),
                source,
            })?;
            n += self.load_crds_from_yaml(&text)?;
        }
        Ok(n)
    }

    // --- faults -------------------------------------------------------------------------

    /// The next `n` API requests (any verb except discovery) fail with `fault`.
    pub fn fail_next(&self, n: usize, fault: Fault) {
        self.add_fault(FaultRule::new(fault).times(n));
    }

    pub fn add_fault(&self, rule: FaultRule) {
        self.shared.faults.lock().rules.push(rule);
    }

    /// Injected faults not used up yet: 0 once every rule added has been taken as often as it says (a
    /// `Delay` is taken when the delayed request arrives, before it is served).
    pub fn faults_pending(&self) -> usize {
        self.shared
            .faults
            .lock()
            .rules
            .iter()
            .map(|r| r.times)
            .sum()
    }

    pub fn clear_faults(&self) {
        self.shared.faults.lock().rules.clear();
    }

    /// While on, new connections are closed as soon as they are accepted; turning it on also
    /// closes every open connection and watch stream, so clients have to reconnect.
    pub fn set_refuse_connections(&self, refuse: bool) {
        self.shared.refuse.store(refuse, Ordering::SeqCst);
        if refuse {
            self.shared.disconnect_all();
        }
    }

    /// Delay added before every request is handled (watch events are not delayed).
    pub fn set_latency(&self, latency: Duration) {
        *self.shared.latency.lock() = latency;
    }

    /// Adds a different delay to each request, uniformly up to `max`, on top of
    /// [`FakeApiServer::set_latency`]: as on a real API server, concurrent requests then finish in an
    /// order other than the one they were sent in (races between clients show up).
    pub fn set_latency_jitter(&self, max: Duration) {
        *self.shared.latency_jitter.lock() = max;
    }

    /// Delivers every live watch event `delay` after the write that caused it (order kept), as a
    /// loaded real API server's watch cache does: controllers then act on stale copies.
    pub fn set_watch_delay(&self, delay: Duration) {
        *self.shared.watch_delay.lock() = delay;
    }

    /// Holds every new request until [`Self::resume`].
    pub fn pause(&self) {
        self.shared.paused.send_replace(true);
    }

    pub fn resume(&self) {
        self.shared.paused.send_replace(false);
    }

    /// Closes every open connection and watch stream (like an API server restart), keeping the
    /// store.
    pub fn disconnect_all(&self) {
        self.shared.disconnect_all();
    }

    /// Drops the watch history, like an etcd compaction: resuming from any earlier version
    /// then gets 410 Expired.
    pub fn compact(&self) {
        self.shared.store.lock().compact();
    }

    // --- introspection ------------------------------------------------------------------

    pub fn request_log(&self) -> Vec<RequestRecord> {
        self.shared.log.lock().clone()
    }

    pub fn clear_request_log(&self) {
        self.shared.log.lock().clear();
    }

    pub fn count_requests(&self, filter: impl Fn(&RequestRecord) -> bool) -> usize {
        self.shared.log.lock().iter().filter(|r| filter(r)).count()
    }

    /// The current global resourceVersion.
    pub fn resource_version(&self) -> u64 {
        self.shared.store.lock().rv()
    }

    // --- direct store access ------------------------------------------------------------

    fn ctx(&self, store: &Store, resource: &str, ns: &str) -> Result<Ctx, FakeApiServerError> {
        let rt = store
            .registry
            .find(resource)
            .ok_or_else(|| FakeApiServerError::UnknownResource(resource.to_string()))?;
        let ns = if rt.namespaced {
            ns.to_string()
        } else {
            String::new()
        };
        Ok(Ctx {
            rt,
            ns,
            manager: "testkit".into(),
            dry_run: false,
            seed: true,
        })
    }

    /// `resource` is a plural (`"secrets"`) or `plural.group` (`"events.events.k8s.io"`); `ns`
    /// is ignored for cluster-scoped types.
    pub fn get_object(&self, resource: &str, ns: &str, name: &str) -> Option<Value> {
        let store = self.shared.store.lock();
        let rt = store.registry.find(resource)?;
        let ns = if rt.namespaced { ns } else { "" };
        store.get(&rt.storage_key(), ns, name).map(|o| (*o).clone())
    }

    /// Objects of a type, in one namespace or (`None`) all.
    pub fn list_objects(&self, resource: &str, ns: Option<&str>) -> Vec<Value> {
        let store = self.shared.store.lock();
        let Some(rt) = store.registry.find(resource) else {
            return Vec::new();
        };
        store
            .list(&rt.storage_key(), ns)
            .map(|(_, o)| (**o).clone())
            .collect()
    }

    /// Creates or replaces an object, `.status` included, through the normal write path
    /// (validation, events) without resourceVersion checks. The namespace comes from
    /// `metadata.namespace` (default `default`).
    pub fn put_object(&self, resource: &str, mut obj: Value) -> Result<Value, FakeApiServerError> {
        let mut store = self.shared.store.lock();
        let ns = store::meta_str(&obj, "namespace")
            .unwrap_or("default")
            .to_string();
        let ctx = self.ctx(&store, resource, &ns)?;
        if obj.get("apiVersion").is_none() && obj.is_object() {
            obj["apiVersion"] = Value::String(ctx.rt.api_version());
        }
        if obj.get("kind").is_none() && obj.is_object() {
            obj["kind"] = Value::String(ctx.rt.kind.clone());
        }
        let name = store::meta_str(&obj, "name")
            .unwrap_or_default()
            .to_string();
        let exists = store.get(&ctx.rt.storage_key(), &ctx.ns, &name).is_some();
        let stored = if exists {
            ops::update(
                &mut store,
                &ctx,
                &name,
                obj,
                Scope::Main { has_status: false },
            )?
        } else {
            ops::create(&mut store, &ctx, obj)?
        };
        Ok((*stored).clone())
    }

    /// Applies a JSON merge patch (`.status` included) through the normal write path.
    pub fn patch_object(
        &self,
        resource: &str,
        ns: &str,
        name: &str,
        merge_patch: Value,
    ) -> Result<Value, FakeApiServerError> {
        let mut store = self.shared.store.lock();
        let ctx = self.ctx(&store, resource, ns)?;
        let (obj, _) = ops::patch(
            &mut store,
            &ctx,
            name,
            PatchKind::Merge,
            &merge_patch,
            Scope::Main { has_status: false },
        )?;
        Ok((*obj).clone())
    }

    /// Deletes like an API call would (finalizers and garbage collection included).
    pub fn delete_object(
        &self,
        resource: &str,
        ns: &str,
        name: &str,
    ) -> Result<(), FakeApiServerError> {
        let mut store = self.shared.store.lock();
        let ctx = self.ctx(&store, resource, ns)?;
        ops::delete(&mut store, &ctx, name, &DeleteOpts::default())?;
        Ok(())
    }

    /// Stops accepting connections and closes the open ones. The store stays readable through
    /// this handle.
    pub fn shutdown(&self) {
        if let Some(accept) = self.shared.accept.lock().take() {
            accept.abort();
        }
        self.shared.disconnect_all();
    }
}

impl Drop for FakeApiServer {
    fn drop(&mut self) {
        self.shutdown();
    }
}
