//! How every watch of the operator retries, and how loudly.
//!
//! kube's watcher retries the moment it is polled again after an error, so a watch polled straight on
//! spins: with the API server down, one unguarded watch logged ≈ 15,000 lines a second. Each watch here
//! goes through [`retrying`]: after a failure it waits (exponential with jitter, capped at [`BACKOFF`]'s
//! 30 s) before the watcher tries again, except after 410 Expired ("too old resource version", what a
//! restarted API server answers a watch resumed from before), where re-listing at once is the only way
//! forward. The first watch that gets through again wakes every other one still waiting, so all of them
//! recover together rather than each at the end of its own, possibly 30-second, wait. While any watch
//! waits, [`probe_while_waiting`] asks the API server for its version every [`PROBE_INTERVAL`] (one
//! small request, however many watches wait) and wakes them all once it answers: after an outage the
//! watches are back within about that interval, not at the end of their backoff.
//!
//! Logging goes through a [`LogLimit`] per watch: at most [`LINES_PER_WINDOW`] lines per
//! [`WINDOW`], and the next line after a quiet spell says how many repeats were left out.

use crate::retry::Backoff;
use futures::{Stream, StreamExt};
use kube::runtime::watcher;
use std::sync::LazyLock;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};
use tokio::sync::Notify;

/// Objects per page of a watch's initial list (kube's default is 500): every page arrives as one body and
/// is parsed in full before the caches keep their slim copies, so a smaller page lowers the transient peak
/// of start-up and of every re-list, for a few more requests then.
pub const LIST_PAGE_SIZE: u32 = 100;

/// The retry policy of a failing watch: 0.5 s doubling to 30 s, with jitter.
pub const BACKOFF: Backoff = Backoff {
    base: Duration::from_millis(500),
    max: Duration::from_secs(30),
};

/// Lines a watch may log per [`WINDOW`].
pub const LINES_PER_WINDOW: u32 = 3;
/// The window of [`LINES_PER_WINDOW`].
pub const WINDOW: Duration = Duration::from_secs(60);

/// Rung when a watch that was failing gets through again, or the probe got an answer: the API server is
/// back. Process-wide: every watch of a process talks to the same API server.
static API_BACK: LazyLock<Notify> = LazyLock::new(Notify::new);
/// Watches waiting after a failure right now.
static WAITING: AtomicUsize = AtomicUsize::new(0);

/// How often [`probe_while_waiting`] asks whether the API server is back.
pub const PROBE_INTERVAL: Duration = Duration::from_secs(2);

/// While a watch waits after a failure, asks the API server for its version every [`PROBE_INTERVAL`] and
/// wakes every waiting watch once it answers. Returns when `shutdown` is cancelled.
pub async fn probe_while_waiting(
    client: kube::Client,
    shutdown: tokio_util::sync::CancellationToken,
) {
    loop {
        tokio::select! {
            () = tokio::time::sleep(PROBE_INTERVAL) => {}
            () = shutdown.cancelled() => return,
        }
        if WAITING.load(Ordering::Relaxed) > 0 && client.apiserver_version().await.is_ok() {
            tracing::debug!("API server answers again; waking the waiting watches");
            API_BACK.notify_waiters();
        }
    }
}

/// Counts one waiting watch for as long as it lives (a watch dropped mid-wait is no longer waiting).
struct Waiting;

impl Waiting {
    fn new() -> Self {
        WAITING.fetch_add(1, Ordering::Relaxed);
        Waiting
    }
}

impl Drop for Waiting {
    fn drop(&mut self) {
        WAITING.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Waits `wait`, or until the API server is known to be back.
async fn back_off(wait: Duration) {
    let _waiting = Waiting::new();
    tokio::select! {
        () = tokio::time::sleep(wait) => {}
        () = API_BACK.notified() => {}
    }
}

/// Whether `e` says the watch's resourceVersion is gone from the server's history (410 Expired).
pub fn is_expired(e: &watcher::Error) -> bool {
    match e {
        watcher::Error::WatchError(s) => s.code == 410,
        watcher::Error::InitialListFailed(kube::Error::Api(s))
        | watcher::Error::WatchStartFailed(kube::Error::Api(s))
        | watcher::Error::WatchFailed(kube::Error::Api(s)) => s.code == 410,
        _ => false,
    }
}

/// How long to wait after the `failures`-th consecutive failure, `e`: nothing after a first 410 (the
/// watcher re-lists on its next poll), else the backoff.
pub fn delay_after(e: &watcher::Error, failures: u32) -> Duration {
    if is_expired(e) && failures <= 1 {
        Duration::ZERO
    } else {
        BACKOFF.delay(failures)
    }
}

/// `stream` (a watcher, or anything built on one) with every error handed to `report` and followed by
/// a wait (see the module docs) instead of an immediate retry. Only items come out: no consumer has an
/// error left to handle (kube's runtime, which wants `Result`s, gets them with `.map(Ok)`).
pub fn retrying<S, T>(
    stream: S,
    report: impl FnMut(&watcher::Error) + Send + 'static,
) -> impl Stream<Item = T> + Send + 'static
where
    S: Stream<Item = Result<T, watcher::Error>> + Send + 'static,
    T: Send + 'static,
{
    let state = (Box::pin(stream), 0u32, report);
    futures::stream::unfold(state, |(mut stream, mut failures, mut report)| async move {
        loop {
            match stream.next().await? {
                Ok(item) => {
                    if failures > 0 {
                        API_BACK.notify_waiters();
                    }
                    return Some((item, (stream, 0, report)));
                }
                Err(e) => {
                    report(&e);
                    failures = failures.saturating_add(1);
                    let wait = delay_after(&e, failures);
                    if !wait.is_zero() {
                        back_off(wait).await;
                    }
                }
            }
        }
    })
}

/// What one watch does with its errors, whoever watches: counts each under `stream`, logs a few a minute
/// (with the count of those left out) at error with what to do when a person has to act (missing CRDs,
/// RBAC) and at warn otherwise, and hands each diagnosed problem to `on_problem` (the receiver turns one
/// that needs a person into unreadiness).
pub fn reporter<W, P>(
    stream: &'static str,
    watched: W,
    metrics: &crate::metrics::Metrics,
    mut on_problem: P,
) -> impl FnMut(&watcher::Error) + Send + 'static + use<W, P>
where
    W: Into<String>,
    P: FnMut(&crate::diagnose::WatchProblem) + Send + 'static,
{
    let watched: String = watched.into();
    let metrics = metrics.clone();
    let mut limit = LogLimit::default();
    move |e| {
        metrics
            .watch_errors
            .get_or_create(&crate::metrics::WatchLabels { stream })
            .inc();
        let problem = crate::diagnose::watch_problem(&watched, e);
        on_problem(&problem);
        let Admit::Log { suppressed } = limit.admit(Instant::now()) else {
            return;
        };
        if problem.needs_action() {
            tracing::error!(
                stream,
                %watched,
                problem = problem.message(),
                suppressed,
                "cannot watch; a person must act"
            );
        } else {
            tracing::warn!(stream, %watched, error = %e, suppressed, "{stream} watch interrupted; retrying with backoff");
        }
    }
}

/// The API of `K` in `namespace`, or in every namespace: what the operator watches (`--namespace`).
pub fn api<K>(client: &kube::Client, namespace: Option<&str>) -> kube::Api<K>
where
    K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>,
{
    match namespace {
        Some(ns) => kube::Api::namespaced(client.clone(), ns),
        None => kube::Api::all(client.clone()),
    }
}

/// What [`LogLimit::admit`] decided for one line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admit {
    /// Log it, saying that `suppressed` repeats were left out before it.
    Log { suppressed: u64 },
    /// Leave it out (it is counted).
    Suppress,
}

/// At most `lines` log lines per `window`, counting what was left out.
#[derive(Debug, Clone)]
pub struct LogLimit {
    lines: u32,
    window: Duration,
    window_start: Option<Instant>,
    logged: u32,
    suppressed: u64,
}

impl Default for LogLimit {
    fn default() -> Self {
        Self::new(LINES_PER_WINDOW, WINDOW)
    }
}

impl LogLimit {
    pub fn new(lines: u32, window: Duration) -> Self {
        Self {
            lines,
            window,
            window_start: None,
            logged: 0,
            suppressed: 0,
        }
    }

    /// Whether a line may be logged `now`.
    pub fn admit(&mut self, now: Instant) -> Admit {
        let expired = self
            .window_start
            .is_none_or(|start| now.duration_since(start) >= self.window);
        if expired {
            self.window_start = Some(now);
            self.logged = 0;
        }
        if self.logged >= self.lines {
            self.suppressed += 1;
            return Admit::Suppress;
        }
        self.logged += 1;
        Admit::Log {
            suppressed: std::mem::take(&mut self.suppressed),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kube::core::Status;

    fn expired() -> watcher::Error {
        watcher::Error::WatchError(Box::new(
            Status::failure("too old resource version: 5 (9)", "Expired").with_code(410),
        ))
    }

    fn refused() -> watcher::Error {
        watcher::Error::NoResourceVersion
    }

    #[test]
    fn a_first_410_relists_at_once_and_other_failures_back_off_to_the_cap() {
        assert_eq!(delay_after(&expired(), 1), Duration::ZERO);
        assert!(
            delay_after(&expired(), 2) >= BACKOFF.base,
            "repeated 410s back off"
        );
        assert!(delay_after(&refused(), 1) >= BACKOFF.base);
        assert!(delay_after(&refused(), 4) >= Duration::from_secs(4));
        assert!(delay_after(&refused(), 40) <= Duration::from_secs(30));
    }

    #[test]
    fn a_few_lines_per_window_then_the_count_of_what_was_left_out() {
        let mut limit = LogLimit::new(2, Duration::from_secs(60));
        let t0 = Instant::now();
        assert_eq!(limit.admit(t0), Admit::Log { suppressed: 0 });
        assert_eq!(limit.admit(t0), Admit::Log { suppressed: 0 });
        for _ in 0..1000 {
            assert_eq!(limit.admit(t0 + Duration::from_secs(1)), Admit::Suppress);
        }
        assert_eq!(
            limit.admit(t0 + Duration::from_secs(61)),
            Admit::Log { suppressed: 1000 }
        );
        assert_eq!(
            limit.admit(t0 + Duration::from_secs(62)),
            Admit::Log { suppressed: 0 }
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_failing_stream_waits_between_retries_and_items_pass_through() {
        let polls = std::sync::Arc::new(std::sync::atomic::AtomicU32::new(0));
        let counted = polls.clone();
        let endless_failures = futures::stream::repeat_with(move || {
            counted.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            Err::<u32, _>(refused())
        });
        let stream = retrying(
            futures::stream::iter([Ok(7)]).chain(endless_failures),
            |_| {},
        );
        tokio::pin!(stream);
        assert_eq!(stream.next().await, Some(7));
        let started = tokio::time::Instant::now();
        let _ = tokio::time::timeout(Duration::from_secs(60), stream.next()).await;
        assert!(started.elapsed() >= Duration::from_secs(60));
        let n = polls.load(std::sync::atomic::Ordering::Relaxed);
        assert!(
            (3..=9).contains(&n),
            "a minute of failures is a handful of retries, not a spin: {n}"
        );
    }
}
