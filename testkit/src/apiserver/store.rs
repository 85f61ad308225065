//! The object store: objects by type/namespace/name, the global resourceVersion counter, the
//! bounded event history watches resume from, and garbage collection of dependents.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Arc, OnceLock};

use bytes::Bytes;
use serde_json::{Value, json};
use tokio::sync::broadcast;

use super::registry::Registry;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum EventType {
    Added,
    Modified,
    Deleted,
}

impl EventType {
    pub fn as_str(self) -> &'static str {
        match self {
            EventType::Added => "ADDED",
            EventType::Modified => "MODIFIED",
            EventType::Deleted => "DELETED",
        }
    }
}

#[derive(Debug)]
pub(crate) struct StoredEvent {
    pub rv: u64,
    pub storage_key: String,
    pub namespace: String,
    pub etype: EventType,
    pub object: Arc<Value>,
    /// The previous state, so a watch with a selector can turn "stopped matching" into DELETED.
    pub old: Option<Arc<Value>>,
    json: OnceLock<Bytes>,
}

impl StoredEvent {
    /// The object serialised once and shared by every watcher that needs the stored form.
    pub fn object_json(&self) -> Bytes {
        self.json
            .get_or_init(|| Bytes::from(serde_json::to_vec(&*self.object).unwrap_or_default()))
            .clone()
    }
}

pub(crate) type ObjKey = (String, String);

pub(crate) struct Store {
    pub registry: Registry,
    rv: u64,
    objects: HashMap<String, BTreeMap<ObjKey, Arc<Value>>>,
    uids: HashMap<String, (String, ObjKey)>,
    history: VecDeque<Arc<StoredEvent>>,
    history_limit: usize,
    /// Events at or below this resourceVersion are no longer in the history.
    floor: u64,
    pub tx: broadcast::Sender<Arc<StoredEvent>>,
    rng: u64,
}

pub(crate) fn meta_str<'a>(obj: &'a Value, field: &str) -> Option<&'a str> {
    obj.get("metadata")
        .and_then(|m| m.get(field))
        .and_then(Value::as_str)
}

pub(crate) fn now_rfc3339() -> String {
    jiff::Timestamp::now()
        .strftime("%Y-%m-%dT%H:%M:%SZ")
        .to_string()
}

fn has_finalizers(obj: &Value) -> bool {
    obj.pointer("/metadata/finalizers")
        .and_then(Value::as_array)
        .is_some_and(|f| !f.is_empty())
}

fn owner_uids(obj: &Value) -> impl Iterator<Item = &str> {
    obj.pointer("/metadata/ownerReferences")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|r| r.get("uid").and_then(Value::as_str))
}

impl Store {
    pub fn new(history_limit: usize, channel_capacity: usize) -> Self {
        let (tx, _) = broadcast::channel(channel_capacity.max(16));
        let seed = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0x9e37_79b9_7f4a_7c15);
        Self {
            registry: Registry::with_builtins(),
            rv: 1,
            objects: HashMap::new(),
            uids: HashMap::new(),
            history: VecDeque::new(),
            history_limit: history_limit.max(1),
            floor: 1,
            tx,
            rng: seed | 1,
        }
    }

    pub fn rv(&self) -> u64 {
        self.rv
    }

    pub fn floor(&self) -> u64 {
        self.floor
    }

    fn next_random(&mut self) -> u64 {
        // xorshift64*: enough to make names and uids unique, no crypto needed.
        self.rng ^= self.rng >> 12;
        self.rng ^= self.rng << 25;
        self.rng ^= self.rng >> 27;
        self.rng.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    pub fn new_uid(&mut self) -> String {
        let a = self.next_random();
        let b = self.next_random();
        format!(
            "{:08x}-{:04x}-4{:03x}-{:04x}-{:012x}",
            a >> 32,
            (a >> 16) & 0xffff,
            a & 0xfff,
            0x8000 | (b >> 48 & 0x3fff),
            b & 0xffff_ffff_ffff
        )
    }

    /// The 5-character suffix `generateName` gets, from the same alphabet as the real server.
    pub fn name_suffix(&mut self) -> String {
        const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
        let mut r = self.next_random();
        (0..5)
            .map(|_| {
                let c = ALPHABET[(r % ALPHABET.len() as u64) as usize] as char;
                r /= ALPHABET.len() as u64;
                c
            })
            .collect()
    }

    pub fn get(&self, key: &str, ns: &str, name: &str) -> Option<Arc<Value>> {
        self.objects
            .get(key)
            .and_then(|m| m.get(&(ns.to_string(), name.to_string())))
            .cloned()
    }

    pub fn exists_uid(&self, uid: &str) -> bool {
        self.uids.contains_key(uid)
    }

    /// Objects of one type, ordered by namespace then name; `ns = None` means all namespaces.
    pub fn list<'a>(
        &'a self,
        key: &str,
        ns: Option<&'a str>,
    ) -> Box<dyn Iterator<Item = (&'a ObjKey, &'a Arc<Value>)> + 'a> {
        let Some(m) = self.objects.get(key) else {
            return Box::new(std::iter::empty());
        };
        match ns {
            Some(ns) => Box::new(
                m.range((ns.to_string(), String::new())..)
                    .take_while(move |((n, _), _)| n == ns),
            ),
            None => Box::new(m.iter()),
        }
    }

    /// History events newer than `rv`, or `None` if some of them were already dropped.
    pub fn events_since(&self, rv: u64) -> Option<Vec<Arc<StoredEvent>>> {
        if rv < self.floor {
            return None;
        }
        let start = self.history.partition_point(|e| e.rv <= rv);
        Some(self.history.range(start..).cloned().collect())
    }

    /// Forgets all history, like an etcd compaction: any watch or continue token from before
    /// now gets `410 Expired`.
    pub fn compact(&mut self) {
        self.history.clear();
        self.floor = self.rv;
    }

    fn record(
        &mut self,
        key: &str,
        ns: &str,
        etype: EventType,
        object: Arc<Value>,
        old: Option<Arc<Value>>,
    ) {
        let ev = Arc::new(StoredEvent {
            rv: self.rv,
            storage_key: key.to_string(),
            namespace: ns.to_string(),
            etype,
            object,
            old,
            json: OnceLock::new(),
        });
        if self.history.len() >= self.history_limit
            && let Some(dropped) = self.history.pop_front()
        {
            self.floor = dropped.rv;
        }
        self.history.push_back(ev.clone());
        // No receivers is fine: nobody is watching.
        let _ = self.tx.send(ev);
    }

    /// Stores `obj` under a fresh resourceVersion and emits ADDED or MODIFIED.
    pub fn put(&mut self, key: &str, mut obj: Value) -> Arc<Value> {
        self.rv += 1;
        obj["metadata"]["resourceVersion"] = json!(self.rv.to_string());
        let ns = meta_str(&obj, "namespace").unwrap_or_default().to_string();
        let name = meta_str(&obj, "name").unwrap_or_default().to_string();
        let uid = meta_str(&obj, "uid").unwrap_or_default().to_string();
        let obj = Arc::new(obj);
        let okey = (ns.clone(), name);
        let old = self
            .objects
            .entry(key.to_string())
            .or_default()
            .insert(okey.clone(), obj.clone());
        if !uid.is_empty() {
            self.uids.insert(uid, (key.to_string(), okey));
        }
        let etype = if old.is_some() {
            EventType::Modified
        } else {
            EventType::Added
        };
        self.record(key, &ns, etype, obj.clone(), old);
        obj
    }

    /// Removes an object for good (emitting DELETED with its final state at a new
    /// resourceVersion), then garbage-collects its dependents.
    /// `last` replaces the stored state in the DELETED event (an update that drops the final
    /// finalizer deletes the object in the same step, as the real registry does).
    pub fn remove(
        &mut self,
        key: &str,
        ns: &str,
        name: &str,
        last: Option<Value>,
        orphan: bool,
    ) -> Option<Arc<Value>> {
        let removed = self.remove_one(key, ns, name, last)?;
        if key == "/namespaces" {
            self.delete_namespace_contents(name);
        }
        if let Some(uid) = meta_str(&removed, "uid") {
            if orphan {
                self.orphan_dependents(uid);
            } else {
                self.collect_garbage(uid.to_string());
            }
        }
        Some(removed)
    }

    fn remove_one(
        &mut self,
        key: &str,
        ns: &str,
        name: &str,
        last: Option<Value>,
    ) -> Option<Arc<Value>> {
        let okey = (ns.to_string(), name.to_string());
        let old = self.objects.get_mut(key)?.remove(&okey)?;
        if let Some(uid) = meta_str(&old, "uid") {
            self.uids.remove(uid);
        }
        self.rv += 1;
        let mut last = last.unwrap_or_else(|| (*old).clone());
        last["metadata"]["resourceVersion"] = json!(self.rv.to_string());
        let last = Arc::new(last);
        self.record(key, ns, EventType::Deleted, last.clone(), Some(old));
        Some(last)
    }

    /// Marks an object as being deleted (it has finalizers). Returns the new state.
    pub fn mark_deleting(&mut self, key: &str, obj: &Value) -> Arc<Value> {
        let mut o = obj.clone();
        if o.pointer("/metadata/deletionTimestamp").is_some() {
            return Arc::new(o);
        }
        o["metadata"]["deletionTimestamp"] = json!(now_rfc3339());
        o["metadata"]["deletionGracePeriodSeconds"] = json!(0);
        if let Some(g) = o.pointer("/metadata/generation").and_then(Value::as_i64) {
            o["metadata"]["generation"] = json!(g + 1);
        }
        self.put(key, o)
    }

    fn dependents_of(&self, uid: &str) -> Vec<(String, ObjKey, Arc<Value>)> {
        let mut out = Vec::new();
        for (key, objs) in &self.objects {
            for (okey, obj) in objs {
                if owner_uids(obj).any(|u| u == uid) {
                    out.push((key.clone(), okey.clone(), obj.clone()));
                }
            }
        }
        out
    }

    /// Background-propagation garbage collection, done synchronously: a dependent whose owners
    /// are all gone is deleted (or marked deleting if it has finalizers), recursively.
    fn collect_garbage(&mut self, uid: String) {
        let mut work = vec![uid];
        while let Some(uid) = work.pop() {
            for (key, (ns, name), obj) in self.dependents_of(&uid) {
                if owner_uids(&obj).any(|u| u != uid && self.exists_uid(u)) {
                    continue;
                }
                if has_finalizers(&obj) {
                    self.mark_deleting(&key, &obj);
                } else if let Some(gone) = self.remove_one(&key, &ns, &name, None)
                    && let Some(u) = meta_str(&gone, "uid")
                {
                    work.push(u.to_string());
                }
            }
        }
    }

    pub fn orphan_dependents(&mut self, uid: &str) {
        for (key, _, obj) in self.dependents_of(uid) {
            let mut o = (*obj).clone();
            if let Some(refs) = o
                .pointer_mut("/metadata/ownerReferences")
                .and_then(Value::as_array_mut)
            {
                refs.retain(|r| r.get("uid").and_then(Value::as_str) != Some(uid));
            }
            self.put(&key, o);
        }
    }

    fn delete_namespace_contents(&mut self, ns: &str) {
        let keys: Vec<String> = self.objects.keys().cloned().collect();
        for key in keys {
            let victims: Vec<(String, Arc<Value>)> = self
                .list(&key, Some(ns))
                .map(|((_, name), o)| (name.clone(), o.clone()))
                .collect();
            for (name, obj) in victims {
                if has_finalizers(&obj) {
                    self.mark_deleting(&key, &obj);
                } else {
                    self.remove(&key, ns, &name, None, false);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn obj(name: &str, uid: &str, owner: Option<&str>, finalizers: bool) -> Value {
        let mut o = json!({"metadata": {"name": name, "namespace": "ns", "uid": uid}});
        if let Some(owner) = owner {
            o["metadata"]["ownerReferences"] =
                json!([{"uid": owner, "name": "x", "kind": "K", "apiVersion": "v1"}]);
        }
        if finalizers {
            o["metadata"]["finalizers"] = json!(["f"]);
        }
        o
    }

    #[test]
    fn history_floor_and_cascade() {
        let mut s = Store::new(3, 64);
        s.put("/a", obj("root", "u1", None, false));
        s.put("/b", obj("child", "u2", Some("u1"), false));
        s.put("/b", obj("grandchild", "u3", Some("u2"), false));
        s.put("/b", obj("held", "u4", Some("u1"), true));
        assert!(
            s.events_since(1).is_none(),
            "oldest event fell out of a 3-event history"
        );
        assert_eq!(s.events_since(s.rv()).map(|v| v.len()), Some(0));
        s.remove("/a", "ns", "root", None, false);
        assert!(s.get("/b", "ns", "child").is_none());
        assert!(s.get("/b", "ns", "grandchild").is_none());
        let held = s.get("/b", "ns", "held").expect("finalizer keeps it");
        assert!(held.pointer("/metadata/deletionTimestamp").is_some());
        assert_eq!(s.uid_len(), 1);
    }

    impl Store {
        fn uid_len(&self) -> usize {
            self.uids.len()
        }
    }
}
