//! Watch streams: newline-delimited `{"type", "object"}` JSON over a chunked response, fed
//! from the history (to resume from a resourceVersion) and then from the live broadcast.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use serde_json::{Value, json};
use tokio::sync::{broadcast, mpsc, watch};

use super::error::ApiError;
use super::registry::ResourceType;
use super::selectors::{FieldSelector, LabelSelector};
use super::store::{EventType, Store, StoredEvent};

pub(crate) enum Start {
    /// Synthetic ADDED events for the current state, then changes (`resourceVersion` unset or
    /// "0", or `sendInitialEvents=true`).
    CurrentState,
    /// Changes after this resourceVersion.
    After(u64),
}

pub(crate) struct WatchSpec {
    pub rt: Arc<ResourceType>,
    pub ns: Option<String>,
    pub labels: LabelSelector,
    pub fields: FieldSelector,
    pub start: Start,
    pub initial_events_end_bookmark: bool,
    pub bookmarks: bool,
    pub bookmark_interval: Duration,
    pub timeout: Duration,
    pub metadata_only: bool,
    /// Live events are held this long before they are sent.
    pub delay: Arc<parking_lot::Mutex<Duration>>,
}

pub(crate) type Chunks = mpsc::Receiver<Result<Bytes, Infallible>>;

impl WatchSpec {
    fn matches(&self, obj: &Value) -> bool {
        self.labels.matches(obj) && self.fields.matches(obj)
    }

    fn needs_rewrite(&self, obj: &Value) -> bool {
        self.metadata_only
            || obj.get("apiVersion").and_then(Value::as_str) != Some(self.rt.api_version().as_str())
    }

    fn line(&self, etype: &str, object_json: Bytes) -> Bytes {
        let mut out = Vec::with_capacity(object_json.len() + 32);
        out.extend_from_slice(b"{\"type\":\"");
        out.extend_from_slice(etype.as_bytes());
        out.extend_from_slice(b"\",\"object\":");
        out.extend_from_slice(&object_json);
        out.extend_from_slice(b"}\n");
        Bytes::from(out)
    }

    fn object_line(&self, etype: EventType, obj: &Value, cached: Option<Bytes>) -> Bytes {
        let json = match cached {
            Some(c) if !self.needs_rewrite(obj) => c,
            _ => Bytes::from(
                serde_json::to_vec(&present(obj, &self.rt, self.metadata_only)).unwrap_or_default(),
            ),
        };
        self.line(etype.as_str(), json)
    }

    fn bookmark(&self, rv: u64, initial_end: bool) -> Bytes {
        let mut meta = json!({ "resourceVersion": rv.to_string() });
        if initial_end {
            meta["annotations"] = json!({ "k8s.io/initial-events-end": "true" });
        }
        let obj =
            json!({ "kind": self.rt.kind, "apiVersion": self.rt.api_version(), "metadata": meta });
        self.line("BOOKMARK", Bytes::from(obj.to_string()))
    }

    /// The event this watcher sees for a store event, if any. With a selector, an object that
    /// stops (starts) matching is reported as DELETED (ADDED), as the real watch cache does.
    fn render(&self, ev: &StoredEvent) -> Option<Bytes> {
        if ev.storage_key != self.rt.storage_key()
            || self.ns.as_ref().is_some_and(|ns| *ns != ev.namespace)
        {
            return None;
        }
        let now = self.matches(&ev.object);
        let before = ev.old.as_ref().is_some_and(|o| self.matches(o));
        let etype = match ev.etype {
            EventType::Added => now.then_some(EventType::Added),
            EventType::Modified => match (before, now) {
                (true, true) => Some(EventType::Modified),
                (false, true) => Some(EventType::Added),
                (true, false) => Some(EventType::Deleted),
                (false, false) => None,
            },
            EventType::Deleted => (now || before).then_some(EventType::Deleted),
        }?;
        Some(self.object_line(etype, &ev.object, Some(ev.object_json())))
    }
}

/// The object as served for `rt`'s version (and as `PartialObjectMetadata` if asked).
pub(crate) fn present(obj: &Value, rt: &ResourceType, metadata_only: bool) -> Value {
    if metadata_only {
        return json!({
            "apiVersion": "meta.k8s.io/v1",
            "kind": "PartialObjectMetadata",
            "metadata": obj.get("metadata").cloned().unwrap_or(json!({})),
        });
    }
    let mut o = obj.clone();
    o["apiVersion"] = json!(rt.api_version());
    o
}

pub(crate) fn error_line(err: &ApiError) -> Bytes {
    Bytes::from(format!(
        "{}\n",
        json!({ "type": "ERROR", "object": err.to_status() })
    ))
}

/// What ends a watch stream besides its timeout: the connection being cut (`kill`) or every watch being
/// dropped while connections stay up (`dropped`).
pub(crate) struct Ends {
    pub kill: watch::Receiver<u64>,
    pub dropped: watch::Receiver<u64>,
}

/// Starts a watch. Must be called with the store locked, so the history read and the broadcast
/// subscription line up with no gap and no duplicate.
pub(crate) fn start(store: &Store, spec: WatchSpec, ends: Ends) -> Chunks {
    let (tx, rx) = mpsc::channel(256);
    let rx_events = store.tx.subscribe();
    let mut initial = Vec::new();
    let start_rv = store.rv();
    match spec.start {
        Start::CurrentState => {
            let ns = spec.ns.as_deref();
            let key = spec.rt.storage_key();
            let pinned = spec.fields.pinned_name().map(str::to_string);
            for (_, obj) in store.list(&key, ns) {
                if pinned
                    .as_deref()
                    .is_some_and(|n| super::store::meta_str(obj, "name") != Some(n))
                {
                    continue;
                }
                if spec.matches(obj) {
                    initial.push(spec.object_line(EventType::Added, obj, None));
                }
            }
            if spec.initial_events_end_bookmark {
                initial.push(spec.bookmark(start_rv, true));
            }
        }
        Start::After(rv) => match store.events_since(rv) {
            Some(events) => initial.extend(events.iter().filter_map(|e| spec.render(e))),
            None => {
                let err = ApiError::expired(format!(
                    "too old resource version: {rv} ({})",
                    store.floor() + 1
                ));
                initial.push(error_line(&err));
                let _ = tx.try_send(Ok(initial.concat().into()));
                return rx;
            }
        },
    }
    // Live events pass through a queue that releases each one `delay` after it happened, in order.
    let (late_tx, late_rx) = mpsc::unbounded_channel();
    tokio::spawn(release_late(late_rx, tx.clone()));
    tokio::spawn(pump(spec, tx, late_tx, initial, rx_events, start_rv, ends));
    rx
}

async fn release_late(
    mut queue: mpsc::UnboundedReceiver<(tokio::time::Instant, Bytes)>,
    tx: mpsc::Sender<Result<Bytes, Infallible>>,
) {
    while let Some((due, line)) = queue.recv().await {
        tokio::time::sleep_until(due).await;
        if tx.send(Ok(line)).await.is_err() {
            return;
        }
    }
}

async fn pump(
    spec: WatchSpec,
    tx: mpsc::Sender<Result<Bytes, Infallible>>,
    late: mpsc::UnboundedSender<(tokio::time::Instant, Bytes)>,
    initial: Vec<Bytes>,
    mut events: broadcast::Receiver<Arc<StoredEvent>>,
    start_rv: u64,
    ends: Ends,
) {
    let Ends {
        mut kill,
        mut dropped,
    } = ends;
    for line in initial {
        if tx.send(Ok(line)).await.is_err() {
            return;
        }
    }
    let deadline = tokio::time::sleep(spec.timeout);
    tokio::pin!(deadline);
    let mut ticker = tokio::time::interval(spec.bookmark_interval);
    ticker.tick().await;
    let mut last_rv = start_rv;
    loop {
        // Biased so that a disconnect that happened "before" a write wins over that write's
        // event, even when both are ready by the time this task runs.
        let line = tokio::select! {
            biased;
            _ = kill.changed() => return,
            _ = dropped.changed() => return,
            _ = &mut deadline => return,
            _ = tx.closed() => return,
            _ = ticker.tick(), if spec.bookmarks => Some(spec.bookmark(last_rv, false)),
            ev = events.recv() => match ev {
                Ok(ev) if ev.rv <= last_rv => None,
                Ok(ev) => {
                    last_rv = ev.rv;
                    spec.render(&ev)
                }
                Err(broadcast::error::RecvError::Lagged(_)) => {
                    // Too slow a reader: end it the way the real server ends a watch whose
                    // position fell out of the cache, so the client relists.
                    let err = ApiError::expired(format!("too old resource version: {last_rv}"));
                    let _ = tx.send(Ok(error_line(&err))).await;
                    return;
                }
                Err(broadcast::error::RecvError::Closed) => return,
            },
        };
        let Some(line) = line else { continue };
        let delay = *spec.delay.lock();
        if late
            .send((tokio::time::Instant::now() + delay, line))
            .is_err()
        {
            return;
        }
    }
}
