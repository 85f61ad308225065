//! HTTP layer: URL → (verb, resource) routing, query parameters, content types, and the
//! translation of store results into responses.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use base64::Engine as _;
use bytes::Bytes;
use http::{HeaderMap, Method, Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use serde_json::{Value, json};

use super::Shared;
use super::authz;
use super::ctx::Ctx;
use super::error::ApiError;
use super::faults::{Fault, RequestRecord, Verb};
use super::fields::Scope;
use super::ops::{self, DeleteOpts, Deleted, PatchKind};
use super::registry::ResourceType;
use super::selectors::{FieldSelector, LabelSelector};
use super::store::{Store, meta_str};
use super::watch::{self, Start, WatchSpec, present};

/// The real server's request body limit.
const MAX_BODY: usize = 3 * 1024 * 1024;

/// Tells the connection task to close the connection without answering.
pub(crate) struct DropConnection;

enum Route {
    Version,
    Api,
    Apis,
    ApiGroup(String),
    GroupVersion(String, String),
    Resource,
    Unknown,
}

type Query = HashMap<String, String>;

fn parse_query(q: &str) -> Query {
    form_urlencoded::parse(q.as_bytes())
        .filter(|(k, _)| !k.is_empty())
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect()
}

fn flag(q: &Query, key: &str) -> bool {
    q.get(key).is_some_and(|v| v == "true" || v == "1")
}

/// Fills in `rec` (verb, group, resource, namespace, name) from the request line.
fn route(method: &Method, path: &str, q: &Query, rec: &mut RequestRecord) -> Route {
    let segs: Vec<&str> = path
        .trim_matches('/')
        .split('/')
        .filter(|s| !s.is_empty())
        .collect();
    let (group, version, rest): (&str, &str, &[&str]) = match segs.as_slice() {
        ["version"] => return Route::Version,
        ["api"] => return Route::Api,
        ["apis"] => return Route::Apis,
        ["api", v] => return Route::GroupVersion(String::new(), v.to_string()),
        ["apis", g] => return Route::ApiGroup(g.to_string()),
        ["apis", g, v] => return Route::GroupVersion(g.to_string(), v.to_string()),
        ["api", v, rest @ ..] => ("", v, rest),
        ["apis", g, v, rest @ ..] => (g, v, rest),
        _ => return Route::Unknown,
    };
    let namespaced = rest.first() == Some(&"namespaces")
        && rest.len() >= 3
        && !(rest.len() == 3 && matches!(rest[2], "status" | "finalize"));
    let (ns, rest) = if namespaced {
        (Some(rest[1]), &rest[2..])
    } else {
        (None, rest)
    };
    if rest.is_empty() || rest.len() > 3 {
        return Route::Unknown;
    }
    rec.group = group.to_string();
    rec.resource = rest[0].to_string();
    rec.name = rest.get(1).map(|s| s.to_string());
    rec.subresource = rest.get(2).map(|s| s.to_string()).unwrap_or_default();
    rec.namespace = ns.map(str::to_string);
    rec.verb = match (method.as_str(), rec.name.is_some()) {
        ("GET", true) => Verb::Get,
        ("GET", false) if flag(q, "watch") => Verb::Watch,
        ("GET", false) => Verb::List,
        ("POST", _) => Verb::Create,
        ("PUT", _) => Verb::Update,
        ("PATCH", _) => Verb::Patch,
        ("DELETE", true) => Verb::Delete,
        ("DELETE", false) => Verb::DeleteCollection,
        _ => return Route::Unknown,
    };
    let _ = version;
    Route::Resource
}

fn version_of(path: &str) -> (String, String) {
    let segs: Vec<&str> = path.trim_matches('/').split('/').collect();
    match segs.as_slice() {
        ["api", v, ..] => (String::new(), v.to_string()),
        ["apis", g, v, ..] => (g.to_string(), v.to_string()),
        _ => (String::new(), String::new()),
    }
}

pub(crate) fn json_response(status: u16, v: &Value) -> Response<Body> {
    let mut r = Response::new(Body::from(serde_json::to_vec(v).unwrap_or_default()));
    *r.status_mut() = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/json"),
    );
    r
}

fn error_response(e: &ApiError) -> Response<Body> {
    json_response(e.code, &e.to_status())
}

/// Entry point for every request on every connection.
pub(crate) async fn serve(
    shared: Arc<Shared>,
    req: Request<Incoming>,
) -> Result<Response<Body>, DropConnection> {
    let (parts, body) = req.into_parts();
    let path = parts.uri.path().to_string();
    let query_str = parts.uri.query().unwrap_or_default().to_string();
    let q = parse_query(&query_str);
    let mut rec = RequestRecord {
        method: parts.method.to_string(),
        path: path.clone(),
        query: query_str,
        verb: Verb::Discovery,
        group: String::new(),
        resource: String::new(),
        subresource: String::new(),
        namespace: None,
        name: None,
        content_type: parts
            .headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string),
        status: 0,
        injected: false,
        impersonated_user: None,
        user_agent: parts
            .headers
            .get(header::USER_AGENT)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string),
    };
    let route = route(&parts.method, &path, &q, &mut rec);
    let user = authz::impersonated(&parts.headers);
    rec.impersonated_user = user.as_ref().map(|u| u.name.clone());

    let mut paused = shared.paused.subscribe();
    while *paused.borrow_and_update() {
        if paused.changed().await.is_err() {
            break;
        }
    }
    let jitter = *shared.latency_jitter.lock();
    let mut latency = *shared.latency.lock() + jitter.mul_f64(shared.next_unit_random());
    if rec.verb.is_write() {
        latency += *shared.write_latency.lock();
    }
    if !latency.is_zero() {
        tokio::time::sleep(latency).await;
    }

    let taken = shared.faults.lock().take(&rec);
    let fault = match taken {
        Some(Fault::Delay(d)) => {
            tokio::time::sleep(d).await;
            None
        }
        fault => fault,
    };
    if let Some(fault) = fault {
        rec.injected = true;
        let outcome = match fault {
            Fault::Status(code) => Ok(error_response(&ApiError::for_code(code))),
            Fault::StatusMessage(code, message) => {
                let mut e = ApiError::for_code(code);
                e.message = message;
                Ok(error_response(&e))
            }
            Fault::Timeout => {
                tokio::time::sleep(shared.opts.timeout_fault_delay).await;
                Ok(error_response(&ApiError::for_code(504)))
            }
            Fault::Hang(d) => {
                tokio::time::sleep(d).await;
                Err(DropConnection)
            }
            Fault::Drop => Err(DropConnection),
            Fault::Delay(_) => unreachable!("served above"),
        };
        rec.status = outcome.as_ref().map(|r| r.status().as_u16()).unwrap_or(0);
        shared.record(rec);
        return outcome;
    }

    if shared.opts.authorization
        && let Some(user) = &user
    {
        let decision = authz::authorize(&shared.store.lock(), user, &rec);
        if let Err(e) = decision {
            let resp = error_response(&e);
            rec.status = resp.status().as_u16();
            shared.record(rec);
            return Ok(resp);
        }
    }

    let result = match route {
        Route::Resource => resource_request(&shared, &rec, &q, &parts.headers, body).await,
        Route::Unknown => Err(ApiError::no_route()),
        other => discovery(&shared, other),
    };
    let resp = result.unwrap_or_else(|e| error_response(&e));
    rec.status = resp.status().as_u16();
    shared.record(rec);
    Ok(resp)
}

fn discovery(shared: &Shared, route: Route) -> Result<Response<Body>, ApiError> {
    let store = shared.store.lock();
    let reg = &store.registry;
    let v = match route {
        Route::Version => json!({
            "major": "1", "minor": "33", "gitVersion": "v1.33.0-testkit", "gitCommit": "",
            "gitTreeState": "clean", "buildDate": "2025-01-01T00:00:00Z", "goVersion": "go1.24",
            "compiler": "gc", "platform": "linux/amd64",
        }),
        Route::Api => reg.api_versions(&shared.addr.to_string()),
        Route::Apis => reg.api_group_list(),
        Route::ApiGroup(g) => reg.api_group(&g).ok_or_else(ApiError::no_route)?,
        Route::GroupVersion(g, v) => reg.resource_list(&g, &v).ok_or_else(ApiError::no_route)?,
        Route::Resource | Route::Unknown => return Err(ApiError::no_route()),
    };
    Ok(json_response(200, &v))
}

async fn read_body(body: Incoming) -> Result<Bytes, ApiError> {
    Limited::new(body, MAX_BODY)
        .collect()
        .await
        .map(|c| c.to_bytes())
        .map_err(
            |e| match e.downcast_ref::<http_body_util::LengthLimitError>() {
                Some(_) => ApiError::new(
                    413,
                    "RequestEntityTooLarge",
                    format!("Request entity too large: limit is {MAX_BODY}"),
                ),
                None => ApiError::bad_request(format!("failed to read request body: {e}")),
            },
        )
}

fn parse_json(bytes: &[u8]) -> Result<Value, ApiError> {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Ok(json!({}));
    }
    serde_json::from_slice(bytes)
        .map_err(|e| ApiError::bad_request(format!("error decoding request body: {e}")))
}

fn header_str(h: &HeaderMap, name: header::HeaderName) -> &str {
    h.get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
}

/// The manager recorded for non-apply writes when no `fieldManager` is given: the client's
/// User-Agent up to the first `/`, as the real server does.
fn default_manager(h: &HeaderMap) -> String {
    let ua = header_str(h, header::USER_AGENT);
    let m = ua.split('/').next().unwrap_or_default();
    if m.is_empty() {
        "unknown".to_string()
    } else {
        m.to_string()
    }
}

async fn resource_request(
    shared: &Shared,
    rec: &RequestRecord,
    q: &Query,
    headers: &HeaderMap,
    body: Incoming,
) -> Result<Response<Body>, ApiError> {
    let (group, version) = version_of(&rec.path);
    let rt = shared
        .store
        .lock()
        .registry
        .get(&group, &version, &rec.resource)
        .ok_or_else(ApiError::no_route)?;
    let scope = match rec.subresource.as_str() {
        "" => Scope::Main {
            has_status: rt.status_subresource,
        },
        "status" if rt.status_subresource => Scope::Status,
        _ => return Err(ApiError::no_route()),
    };
    let all_namespaces = rt.namespaced && rec.namespace.is_none();
    if (!rt.namespaced && rec.namespace.is_some())
        || (all_namespaces && !matches!(rec.verb, Verb::List | Verb::Watch))
    {
        return Err(ApiError::no_route());
    }
    if scope == Scope::Status && !matches!(rec.verb, Verb::Get | Verb::Update | Verb::Patch) {
        return Err(ApiError::method_not_allowed());
    }
    let metadata_only = header_str(headers, header::ACCEPT).contains("as=PartialObjectMetadata");
    let ctx = Ctx {
        rt: rt.clone(),
        ns: rec.namespace.clone().unwrap_or_default(),
        manager: q
            .get("fieldManager")
            .cloned()
            .unwrap_or_else(|| default_manager(headers)),
        dry_run: q.get("dryRun").is_some_and(|v| v == "All"),
        seed: false,
    };
    let name = rec.name.clone().unwrap_or_default();
    let ok = |code: u16, obj: &Value| json_response(code, &present(obj, &rt, metadata_only));
    match rec.verb {
        Verb::Get => {
            let obj = shared
                .store
                .lock()
                .get(&rt.storage_key(), &ctx.ns, &name)
                .ok_or_else(|| ApiError::not_found(ctx.target(&name)))?;
            Ok(ok(200, &obj))
        }
        Verb::List => list(
            &shared.store.lock(),
            &rt,
            rec.namespace.as_deref(),
            q,
            metadata_only,
        ),
        Verb::Watch => start_watch(shared, &rt, rec.namespace.clone(), q, metadata_only),
        Verb::Create => {
            if rec.name.is_some() {
                return Err(ApiError::method_not_allowed());
            }
            let body = parse_json(&read_body(body).await?)?;
            let obj = ops::create(&mut shared.store.lock(), &ctx, body)?;
            Ok(ok(201, &obj))
        }
        Verb::Update => {
            let body = parse_json(&read_body(body).await?)?;
            let obj = ops::update(&mut shared.store.lock(), &ctx, &name, body, scope)?;
            Ok(ok(200, &obj))
        }
        Verb::Patch => {
            let ct = header_str(headers, header::CONTENT_TYPE);
            let ct = ct.split(';').next().unwrap_or_default().trim();
            let kind = match ct {
                "application/merge-patch+json" => PatchKind::Merge,
                "application/strategic-merge-patch+json" => PatchKind::Strategic,
                "application/json-patch+json" => PatchKind::Json,
                "application/apply-patch+yaml" | "application/apply-patch+json" => {
                    PatchKind::Apply {
                        force: flag(q, "force"),
                    }
                }
                other => {
                    return Err(ApiError::unsupported_media(format!(
                        "the body of the request was in an unknown format - accepted media types include: application/json-patch+json, application/merge-patch+json, application/apply-patch+yaml (got {other:?})"
                    )));
                }
            };
            let raw = read_body(body).await?;
            let patch_body = match kind {
                PatchKind::Apply { .. } => {
                    if !q.contains_key("fieldManager") {
                        return Err(ApiError::invalid(
                            super::error::Target {
                                group: "meta.k8s.io",
                                kind: "PatchOptions",
                                name: "",
                            },
                            vec![(
                                "fieldManager".into(),
                                "Required value: is required for apply patch".into(),
                            )],
                        ));
                    }
                    serde_yaml::from_slice::<Value>(&raw)
                        .map_err(|e| ApiError::bad_request(format!("error decoding YAML: {e}")))?
                }
                _ => parse_json(&raw)?,
            };
            let (obj, created) = ops::patch(
                &mut shared.store.lock(),
                &ctx,
                &name,
                kind,
                &patch_body,
                scope,
            )?;
            Ok(ok(if created { 201 } else { 200 }, &obj))
        }
        Verb::Delete => {
            let opts = delete_opts(q, &parse_json(&read_body(body).await?)?);
            let outcome = ops::delete(&mut shared.store.lock(), &ctx, &name, &opts)?;
            Ok(match outcome {
                Deleted::Pending(obj) => ok(200, &obj),
                Deleted::Gone(obj) if rt.returns_deleted_object => ok(200, &obj),
                Deleted::Gone(obj) => json_response(200, &success_status(&rt, &obj)),
            })
        }
        Verb::DeleteCollection => {
            let opts = delete_opts(q, &parse_json(&read_body(body).await?)?);
            let mut store = shared.store.lock();
            let (labels, fields) = selectors(q)?;
            let names: Vec<String> = store
                .list(&rt.storage_key(), Some(&ctx.ns))
                .filter(|(_, o)| labels.matches(o) && fields.matches(o))
                .map(|((_, n), _)| n.clone())
                .collect();
            let mut items = Vec::new();
            for n in names {
                match ops::delete(&mut store, &ctx, &n, &opts)? {
                    Deleted::Pending(o) | Deleted::Gone(o) => {
                        items.push(present(&o, &rt, metadata_only))
                    }
                }
            }
            Ok(json_response(
                200,
                &json!({
                    "apiVersion": rt.api_version(), "kind": rt.list_kind,
                    "metadata": { "resourceVersion": store.rv().to_string() }, "items": items,
                }),
            ))
        }
        Verb::Discovery => Err(ApiError::no_route()),
    }
}

fn success_status(rt: &ResourceType, obj: &Value) -> Value {
    let mut details = json!({
        "name": meta_str(obj, "name").unwrap_or_default(),
        "kind": rt.plural,
        "uid": meta_str(obj, "uid").unwrap_or_default(),
    });
    if !rt.group.is_empty() {
        details["group"] = json!(rt.group);
    }
    json!({ "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "details": details })
}

fn delete_opts(q: &Query, body: &Value) -> DeleteOpts {
    let s = |v: Option<&Value>| v.and_then(Value::as_str).map(str::to_string);
    DeleteOpts {
        propagation: q
            .get("propagationPolicy")
            .cloned()
            .or_else(|| s(body.get("propagationPolicy")))
            .or_else(|| {
                // The legacy flag: orphanDependents=true means Orphan.
                (body.get("orphanDependents") == Some(&json!(true))).then(|| "Orphan".to_string())
            }),
        uid: s(body.pointer("/preconditions/uid")),
        resource_version: s(body.pointer("/preconditions/resourceVersion")),
    }
}

fn selectors(q: &Query) -> Result<(LabelSelector, FieldSelector), ApiError> {
    let labels = LabelSelector::parse(
        q.get("labelSelector")
            .map(String::as_str)
            .unwrap_or_default(),
    )
    .map_err(|e| ApiError::bad_request(format!("unable to parse requirement: {e}")))?;
    let fields = FieldSelector::parse(
        q.get("fieldSelector")
            .map(String::as_str)
            .unwrap_or_default(),
    )
    .map_err(ApiError::bad_request)?;
    Ok((labels, fields))
}

fn encode_continue(rv: u64, key: &(String, String)) -> String {
    let raw = json!({ "rv": rv, "ns": key.0, "name": key.1 }).to_string();
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(raw)
}

fn decode_continue(token: &str) -> Option<(u64, (String, String))> {
    let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(token)
        .ok()?;
    let v: Value = serde_json::from_slice(&raw).ok()?;
    Some((
        v.get("rv")?.as_u64()?,
        (
            v.get("ns")?.as_str()?.to_string(),
            v.get("name")?.as_str()?.to_string(),
        ),
    ))
}

/// Lists in namespace/name order. With `limit`, pages are cut by key and the continue token
/// remembers the first page's resourceVersion: pages are not a consistent snapshot, but a
/// watch from the returned resourceVersion replays whatever changed in between.
fn list(
    store: &Store,
    rt: &ResourceType,
    ns: Option<&str>,
    q: &Query,
    metadata_only: bool,
) -> Result<Response<Body>, ApiError> {
    let (labels, fields) = selectors(q)?;
    let limit = match q.get("limit").map(|l| l.parse::<usize>()) {
        Some(Ok(0)) | None => usize::MAX,
        Some(Ok(n)) => n,
        Some(Err(_)) => {
            return Err(ApiError::bad_request(
                "limit must be a non-negative integer",
            ));
        }
    };
    let (rv, after) = match q.get("continue").filter(|c| !c.is_empty()) {
        Some(token) => {
            let (rv, key) = decode_continue(token)
                .ok_or_else(|| ApiError::bad_request("invalid continue token"))?;
            if rv < store.floor() {
                return Err(ApiError::expired(
                    "The provided continue parameter is too old to display a consistent list result. You can start a new list without the continue parameter.",
                ));
            }
            (rv, Some(key))
        }
        None => {
            exact_read_in_history(store, q)?;
            (store.rv(), None)
        }
    };
    let mut items = Vec::new();
    let mut last_key = None;
    let mut more = false;
    let candidates = store
        .list(&rt.storage_key(), ns)
        .filter(|(k, _)| after.as_ref().is_none_or(|a| *k > a))
        .filter(|(_, o)| labels.matches(o) && fields.matches(o));
    for (k, obj) in candidates {
        if items.len() == limit {
            more = true;
            break;
        }
        items.push(present(obj, rt, metadata_only));
        last_key = Some(k.clone());
    }
    let mut meta = json!({ "resourceVersion": rv.to_string() });
    if more && let Some(k) = last_key {
        meta["continue"] = json!(encode_continue(rv, &k));
    }
    let (api_version, kind) = if metadata_only {
        (
            "meta.k8s.io/v1".to_string(),
            "PartialObjectMetadataList".to_string(),
        )
    } else {
        (rt.api_version(), rt.list_kind.clone())
    };
    Ok(json_response(
        200,
        &json!({ "apiVersion": api_version, "kind": kind, "metadata": meta, "items": items }),
    ))
}

/// A list of an exact version the history no longer holds is 410, as etcd answers a read below its
/// compaction (the real message: "too old resource version: 5 (12)").
fn exact_read_in_history(store: &Store, q: &Query) -> Result<(), ApiError> {
    if q.get("resourceVersionMatch").map(String::as_str) != Some("Exact") {
        return Ok(());
    }
    let rv = q.get("resourceVersion").map(String::as_str).unwrap_or("");
    let rv: u64 = rv
        .parse()
        .map_err(|_| ApiError::bad_request(format!("invalid resourceVersion {rv:?}")))?;
    if rv < store.floor() {
        return Err(ApiError::expired(format!(
            "too old resource version: {rv} ({})",
            store.floor() + 1
        )));
    }
    Ok(())
}

fn start_watch(
    shared: &Shared,
    rt: &Arc<ResourceType>,
    ns: Option<String>,
    q: &Query,
    metadata_only: bool,
) -> Result<Response<Body>, ApiError> {
    let (labels, fields) = selectors(q)?;
    let send_initial = flag(q, "sendInitialEvents");
    let start = match q.get("resourceVersion").map(String::as_str) {
        _ if send_initial => Start::CurrentState,
        None | Some("") | Some("0") => Start::CurrentState,
        Some(rv) => Start::After(
            rv.parse()
                .map_err(|_| ApiError::bad_request(format!("invalid resourceVersion {rv:?}")))?,
        ),
    };
    let timeout = q
        .get("timeoutSeconds")
        .and_then(|t| t.parse::<u64>().ok())
        .filter(|t| *t > 0)
        .map(Duration::from_secs)
        .unwrap_or(shared.opts.default_watch_timeout);
    let spec = WatchSpec {
        rt: rt.clone(),
        ns,
        labels,
        fields,
        start,
        initial_events_end_bookmark: send_initial,
        bookmarks: flag(q, "allowWatchBookmarks"),
        bookmark_interval: shared.opts.bookmark_interval,
        timeout,
        metadata_only,
        delay: shared.watch_delay.clone(),
    };
    let ends = watch::Ends {
        kill: shared.kill_tx.subscribe(),
        dropped: shared.drop_watches_tx.subscribe(),
    };
    let chunks = watch::start(&shared.store.lock(), spec, ends);
    let mut r = Response::new(Body::from_stream(
        tokio_stream::wrappers::ReceiverStream::new(chunks),
    ));
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/json"),
    );
    Ok(r)
}
