//! Webhook secrets, cached. A flood of requests must never become a flood of API calls, yet a rotated
//! secret must apply within seconds:
//! - a secret is read at most once per `ttl` per Secret, by one caller while the others wait for its result;
//! - a missing Secret or a failed read is remembered for one second, so an outage is not hammered;
//! - when a signature fails, the receiver asks for a re-read ([`SecretCache::reread_after_mismatch`]; of
//!   a value read less than a second ago, once it is a second old) and verifies once more: a rotation
//!   applies on the first request signed with the new secret, and a flood of bad signatures costs at most
//!   one read per second;
//! - when a re-read finds a different value, the one it replaces is kept in memory (never written anywhere)
//!   so the receiver can accept deliveries already in flight for a grace period
//!   ([`SecretCache::previous`]). Each replica knows only what it read itself: a replica started after a
//!   rotation never saw the old value and accepts only the new one.
//! - a Secret found missing, back, or changed is reported ([`SecretCache::observations`]), so the
//!   controllers on this replica correct the route's status at once instead of on their next re-check:
//!   the receiver answering 503 "secret not configured" and a `Ready` route never disagree for long, even
//!   with `--secret-access get`. Only changes are reported, so a flood of requests reports nothing.

use super::backend::{SecretSource, SecretSourceError};
use crate::metrics::{Metrics, OutcomeLabels};
use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How long a missing Secret or a failed read is remembered.
const NEGATIVE_TTL: Duration = Duration::from_secs(1);

/// Secret bytes that never print.
#[derive(Clone)]
pub struct SecretBytes(Arc<[u8]>);

impl SecretBytes {
    /// The bytes, for HMAC keys and the like. Never log them.
    pub fn expose(&self) -> &[u8] {
        &self.0
    }
}

impl fmt::Debug for SecretBytes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SecretBytes(<redacted>)")
    }
}

/// Why a secret value is not available.
#[derive(Debug, Clone, thiserror::Error)]
pub enum SecretLookupError {
    /// The Secret does not exist.
    #[error("Secret {namespace}/{name} not found")]
    SecretNotFound {
        /// Namespace.
        namespace: String,
        /// Secret name.
        name: String,
    },
    /// The Secret exists but lacks the key.
    #[error("Secret {namespace}/{name} has no key {key:?}")]
    KeyNotFound {
        /// Namespace.
        namespace: String,
        /// Secret name.
        name: String,
        /// The missing key.
        key: String,
    },
    /// The API server could not be asked.
    #[error("{0}")]
    Unavailable(String),
}

/// A Secret by namespace and name, made once per route: the cache is keyed by it without building a key
/// per request.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct SecretId {
    /// `namespace/name` (neither may contain `/`).
    id: Arc<str>,
    slash: usize,
}

impl SecretId {
    /// The Secret `namespace/name`.
    pub fn new(namespace: &str, name: &str) -> Self {
        SecretId {
            id: Arc::from(format!("{namespace}/{name}")),
            slash: namespace.len(),
        }
    }

    /// The Secret's namespace.
    pub fn namespace(&self) -> &str {
        &self.id[..self.slash]
    }

    /// The Secret's name.
    pub fn name(&self) -> &str {
        &self.id[self.slash + 1..]
    }
}

/// A Secret's data with each value ready to hand out (cloning an `Arc`, not copying the bytes).
type Values = Arc<BTreeMap<String, SecretBytes>>;

#[derive(Clone)]
enum Fetched {
    Data(Values),
    Missing,
    Failed(String),
}

struct Entry {
    fetched: Fetched,
    at: Instant,
    /// The last value read successfully (a failed read in between must not hide a rotation).
    last_data: Option<Values>,
    /// The value the last change replaced, and when this cache first saw the change.
    previous: Option<(Values, Instant)>,
}

/// One Secret's entry. The lock is held across a read, so concurrent lookups of one Secret make one read
/// (single flight) and the others find its result.
type Slot = Arc<tokio::sync::Mutex<Option<Entry>>>;

/// Secrets whose entries are kept; past this the least used are dropped (and read again when needed).
const CAPACITY: u64 = 10_000;
/// A Secret no request asked for this long is forgotten, rotation history included: that outlasts any
/// sensible `--secret-rotation-grace`.
const IDLE: Duration = Duration::from_secs(24 * 3600);

/// Cached reads of Secrets through a [`SecretSource`].
pub struct SecretCache {
    source: Arc<dyn SecretSource>,
    ttl: Duration,
    slots: moka::sync::Cache<Arc<str>, Slot>,
    metrics: Metrics,
    observations: tokio::sync::broadcast::Sender<SecretId>,
}

/// Observations held for a slow subscriber; past that it skips the oldest (the re-checks cover them).
const OBSERVATIONS: usize = 256;

impl SecretCache {
    /// A cache that trusts a read for `ttl`.
    pub fn new(source: Arc<dyn SecretSource>, ttl: Duration, metrics: Metrics) -> Self {
        SecretCache {
            source,
            ttl,
            slots: moka::sync::Cache::builder()
                .max_capacity(CAPACITY)
                .time_to_idle(IDLE)
                .build(),
            metrics,
            observations: tokio::sync::broadcast::channel(OBSERVATIONS).0,
        }
    }

    /// Where the Secrets found missing, back, or changed are reported (nothing is sent while no one
    /// subscribed).
    pub fn observations(&self) -> tokio::sync::broadcast::Sender<SecretId> {
        self.observations.clone()
    }

    /// The value of `key` in Secret `secret`, read through the cache.
    pub async fn get(
        &self,
        secret: &SecretId,
        key: &str,
    ) -> Result<SecretBytes, SecretLookupError> {
        self.lookup(secret, key, None).await
    }

    /// Re-reads the Secret after a signature failed against the cached value: at once when that value was
    /// read at least `min_age` ago, else as soon as it is that old, unless another caller re-read it in
    /// the meantime. A rotation that lands just after a read is then not refused for up to `min_age`
    /// (the first request signed with the new secret, often the operator's own verifying ping, would be
    /// lost), and a flood of bad signatures still costs at most one read per `min_age`.
    pub async fn reread_after_mismatch(
        &self,
        secret: &SecretId,
        key: &str,
        min_age: Duration,
    ) -> Result<SecretBytes, SecretLookupError> {
        let read_at = self.slot(secret).lock().await.as_ref().map(|e| e.at);
        if let Some(at) = read_at {
            tokio::time::sleep_until((at + min_age).into()).await;
        }
        self.lookup(secret, key, Some(min_age)).await
    }

    async fn lookup(
        &self,
        secret: &SecretId,
        key: &str,
        refresh_older_than: Option<Duration>,
    ) -> Result<SecretBytes, SecretLookupError> {
        let slot = self.slot(secret);
        let mut entry = slot.lock().await;
        let fresh = entry.as_ref().is_some_and(|e| {
            let ttl = match e.fetched {
                Fetched::Data(_) => refresh_older_than.map_or(self.ttl, |m| m.min(self.ttl)),
                Fetched::Missing | Fetched::Failed(_) => NEGATIVE_TTL,
            };
            e.at.elapsed() < ttl
        });
        if !fresh {
            let fetched = self.fetch(secret).await;
            let old = entry.take();
            if changed(old.as_ref(), &fetched) {
                // No subscriber (no controllers on this replica) is not an error.
                let _ = self.observations.send(secret.clone());
            }
            *entry = Some(replace(old, fetched));
        }
        let fetched = entry.as_ref().map(|e| e.fetched.clone());
        drop(entry);
        let (namespace, name) = (secret.namespace(), secret.name());
        match fetched {
            Some(Fetched::Data(data)) => {
                data.get(key)
                    .cloned()
                    .ok_or_else(|| SecretLookupError::KeyNotFound {
                        namespace: namespace.to_owned(),
                        name: name.to_owned(),
                        key: key.to_owned(),
                    })
            }
            Some(Fetched::Missing) => Err(SecretLookupError::SecretNotFound {
                namespace: namespace.to_owned(),
                name: name.to_owned(),
            }),
            Some(Fetched::Failed(msg)) => Err(SecretLookupError::Unavailable(msg)),
            None => Err(SecretLookupError::Unavailable(
                "secret cache entry vanished".into(),
            )),
        }
    }

    async fn fetch(&self, secret: &SecretId) -> Fetched {
        let (namespace, name) = (secret.namespace(), secret.name());
        let fetched = match self.source.secret(namespace, name).await {
            // Empty values count as absent keys, as before: an empty HMAC key proves nothing.
            Ok(Some(data)) => Fetched::Data(Arc::new(
                data.into_iter()
                    .filter(|(_, v)| !v.is_empty())
                    .map(|(k, v)| (k, SecretBytes(Arc::from(v))))
                    .collect(),
            )),
            Ok(None) => Fetched::Missing,
            Err(SecretSourceError::Unavailable { .. }) => Fetched::Failed(format!(
                "cannot read Secret {namespace}/{name}: API server unavailable"
            )),
        };
        let outcome = match fetched {
            Fetched::Data(_) => "ok",
            Fetched::Missing => "missing",
            Fetched::Failed(_) => "error",
        };
        self.metrics
            .secret_fetches
            .get_or_create(&OutcomeLabels { outcome })
            .inc();
        fetched
    }

    /// The value of `key` that the last change of Secret `secret` replaced, if this cache saw that
    /// change less than `grace` ago and the value differs from the current one. Makes no API call.
    pub async fn previous(
        &self,
        secret: &SecretId,
        key: &str,
        grace: Duration,
    ) -> Option<SecretBytes> {
        let slot = self.slots.get(&*secret.id)?;
        let entry = slot.lock().await;
        let entry = entry.as_ref()?;
        let (old, since) = entry.previous.as_ref()?;
        if since.elapsed() >= grace {
            return None;
        }
        let old = old.get(key)?;
        let current = entry.last_data.as_ref().and_then(|d| d.get(key));
        (current.map(SecretBytes::expose) != Some(old.expose())).then(|| old.clone())
    }

    fn slot(&self, secret: &SecretId) -> Slot {
        match self.slots.get(&*secret.id) {
            Some(slot) => slot,
            None => self.slots.get_with(secret.id.clone(), Slot::default),
        }
    }
}

/// The entry after a read: a changed value keeps the one it replaced, for the rotation grace.
fn replace(old: Option<Entry>, fetched: Fetched) -> Entry {
    let now = Instant::now();
    let (mut last_data, mut previous) = old.map(|e| (e.last_data, e.previous)).unwrap_or_default();
    if let Fetched::Data(new) = &fetched {
        if let Some(old) = last_data.as_ref().filter(|old| !same(old, new)) {
            previous = Some((old.clone(), now));
        }
        last_data = Some(new.clone());
    }
    Entry {
        fetched,
        at: now,
        last_data,
        previous,
    }
}

/// Whether a read tells something new about the Secret: found missing (at first or after it existed),
/// back, or with other values. A failed read tells nothing.
fn changed(old: Option<&Entry>, fetched: &Fetched) -> bool {
    match (old, fetched) {
        (_, Fetched::Failed(_)) => false,
        (None, Fetched::Missing) => true,
        (None, Fetched::Data(_)) => false,
        (Some(old), Fetched::Missing) => {
            old.last_data.is_some() && !matches!(old.fetched, Fetched::Missing)
        }
        (Some(old), Fetched::Data(new)) => match (&old.fetched, &old.last_data) {
            (Fetched::Missing, _) => true,
            (_, Some(last)) => !same(last, new),
            (_, None) => false,
        },
    }
}

fn same(a: &Values, b: &Values) -> bool {
    a.len() == b.len()
        && a.iter()
            .zip(b.iter())
            .all(|((ka, va), (kb, vb))| ka == kb && va.expose() == vb.expose())
}

#[cfg(test)]
mod tests {
    use super::super::backend::SecretData;
    use super::*;
    use futures::future::BoxFuture;
    use std::sync::Mutex;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[derive(Default)]
    struct Counting {
        value: Mutex<Option<Vec<u8>>>,
        reads: AtomicUsize,
    }

    impl SecretSource for Counting {
        fn secret<'a>(
            &'a self,
            _: &'a str,
            _: &'a str,
        ) -> BoxFuture<'a, Result<Option<SecretData>, SecretSourceError>> {
            Box::pin(async move {
                self.reads.fetch_add(1, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(20)).await;
                let v = self.value.lock().unwrap().clone();
                Ok(v.map(|v| BTreeMap::from([("secret".to_owned(), v)])))
            })
        }
    }

    fn hook() -> SecretId {
        SecretId::new("ns", "hook")
    }

    fn cache(source: Arc<Counting>, ttl: Duration) -> SecretCache {
        SecretCache::new(source, ttl, Metrics::new())
    }

    #[tokio::test]
    async fn a_flood_of_lookups_reads_the_secret_once() {
        let source = Arc::new(Counting::default());
        *source.value.lock().unwrap() = Some(b"s1".to_vec());
        let cache = Arc::new(cache(source.clone(), Duration::from_secs(30)));
        let lookups = (0..200).map(|_| {
            let cache = cache.clone();
            tokio::spawn(async move {
                cache
                    .get(&hook(), "secret")
                    .await
                    .unwrap()
                    .expose()
                    .to_vec()
            })
        });
        for r in futures::future::join_all(lookups).await {
            assert_eq!(r.unwrap(), b"s1");
        }
        assert_eq!(source.reads.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn a_value_read_just_before_a_rotation_is_read_again_once_old_enough_and_only_once() {
        let source = Arc::new(Counting::default());
        *source.value.lock().unwrap() = Some(b"old".to_vec());
        let cache = cache(source.clone(), Duration::from_secs(30));
        cache.get(&hook(), "secret").await.unwrap();
        *source.value.lock().unwrap() = Some(b"new".to_vec());
        let min_age = Duration::from_millis(200);
        let id = hook();
        let rereads = (0..3).map(|_| cache.reread_after_mismatch(&id, "secret", min_age));
        for r in futures::future::join_all(rereads).await {
            assert_eq!(r.unwrap().expose(), b"new");
        }
        assert_eq!(
            source.reads.load(Ordering::SeqCst),
            2,
            "one re-read for all three"
        );
    }

    #[tokio::test]
    async fn missing_secret_and_missing_key_are_told_apart() {
        let source = Arc::new(Counting::default());
        let cache = cache(source.clone(), Duration::from_secs(30));
        assert!(matches!(
            cache.get(&hook(), "secret").await,
            Err(SecretLookupError::SecretNotFound { .. })
        ));
        *source.value.lock().unwrap() = Some(b"x".to_vec());
        // The miss is remembered briefly, so an outage or a typo is not hammered.
        assert!(matches!(
            cache.get(&hook(), "secret").await,
            Err(SecretLookupError::SecretNotFound { .. })
        ));
        assert_eq!(source.reads.load(Ordering::SeqCst), 1);
        let fresh = cache
            .reread_after_mismatch(&hook(), "other", Duration::ZERO)
            .await;
        assert!(
            matches!(fresh, Err(SecretLookupError::SecretNotFound { .. })),
            "negative entries keep their 1 s"
        );
    }

    #[tokio::test]
    async fn the_replaced_value_is_kept_only_for_the_grace_period() {
        let source = Arc::new(Counting::default());
        *source.value.lock().unwrap() = Some(b"old".to_vec());
        let cache = cache(source.clone(), Duration::from_secs(30));
        let grace = Duration::from_millis(300);
        cache.get(&hook(), "secret").await.unwrap();
        assert!(
            cache.previous(&hook(), "secret", grace).await.is_none(),
            "nothing was replaced yet"
        );
        *source.value.lock().unwrap() = Some(b"new".to_vec());
        let fresh = cache
            .reread_after_mismatch(&hook(), "secret", Duration::ZERO)
            .await
            .unwrap();
        assert_eq!(fresh.expose(), b"new");
        let old = cache.previous(&hook(), "secret", grace).await.unwrap();
        assert_eq!(old.expose(), b"old");
        // The same value read again is not a change: the old one stays the previous one.
        cache
            .reread_after_mismatch(&hook(), "secret", Duration::ZERO)
            .await
            .unwrap();
        assert_eq!(
            cache
                .previous(&hook(), "secret", grace)
                .await
                .unwrap()
                .expose(),
            b"old"
        );
        assert!(
            cache
                .previous(&hook(), "secret", Duration::ZERO)
                .await
                .is_none(),
            "past the grace period the old value is refused"
        );
        assert!(cache.previous(&hook(), "other-key", grace).await.is_none());
    }

    #[tokio::test]
    async fn a_secret_found_missing_back_or_changed_is_reported_once_per_change() {
        let source = Arc::new(Counting::default());
        *source.value.lock().unwrap() = Some(b"s1".to_vec());
        let cache = cache(source.clone(), Duration::ZERO);
        let mut seen = cache.observations().subscribe();
        // A zero TTL reads on every lookup; a miss is kept for NEGATIVE_TTL, so wait that out.
        let read = || async {
            let _ = cache.get(&hook(), "secret").await;
            tokio::time::sleep(NEGATIVE_TTL).await;
        };
        read().await;
        assert!(
            seen.try_recv().is_err(),
            "a first successful read is no news"
        );
        read().await;
        assert!(seen.try_recv().is_err(), "the same value again is no news");
        *source.value.lock().unwrap() = None;
        read().await;
        assert_eq!(seen.try_recv().unwrap(), hook(), "deleted");
        read().await;
        assert!(seen.try_recv().is_err(), "still missing is no news");
        *source.value.lock().unwrap() = Some(b"s2".to_vec());
        read().await;
        assert_eq!(seen.try_recv().unwrap(), hook(), "back");
        *source.value.lock().unwrap() = Some(b"s3".to_vec());
        read().await;
        assert_eq!(seen.try_recv().unwrap(), hook(), "rotated");
        assert!(seen.try_recv().is_err());
    }

    struct ByNamespace;
    impl SecretSource for ByNamespace {
        fn secret<'a>(
            &'a self,
            namespace: &'a str,
            name: &'a str,
        ) -> BoxFuture<'a, Result<Option<SecretData>, SecretSourceError>> {
            let value = format!("{namespace}:{name}").into_bytes();
            Box::pin(async move { Ok(Some(SecretData::from([("secret".to_owned(), value)]))) })
        }
    }

    #[tokio::test]
    async fn secrets_are_told_apart_by_namespace_and_name() {
        let cache = SecretCache::new(
            Arc::new(ByNamespace),
            Duration::from_secs(30),
            Metrics::new(),
        );
        for (ns, name) in [("a", "b-c"), ("a-b", "c"), ("a", "b")] {
            let id = SecretId::new(ns, name);
            assert_eq!((id.namespace(), id.name()), (ns, name));
            let got = cache.get(&id, "secret").await.unwrap();
            assert_eq!(got.expose(), format!("{ns}:{name}").as_bytes());
        }
    }

    #[test]
    fn secret_bytes_never_print() {
        let s = SecretBytes(Arc::from(&b"hunter2"[..]));
        assert!(!format!("{s:?}").contains("hunter2"));
    }
}
