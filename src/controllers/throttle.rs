//! At most one trigger per key and interval: the first passes at once, the rest within the interval
//! fold into one that passes when it ends. Unlike a debounce (kube's `Config::debounce` waits for a quiet
//! spell, which a steady stream of events never leaves), a trigger is never held longer than the interval.
//!
//! What it is for: a route's status (its delivery counts) would otherwise be written once per change of
//! each of its deliveries, a write per delivery on the API server during a burst.

use futures::stream::{FuturesUnordered, Stream, StreamExt};
use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::hash::Hash;
use std::pin::Pin;
use std::time::{Duration, Instant};

/// What to do with one trigger.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Offer {
    /// Pass it now.
    Now,
    /// Hold it until then (the interval since the last one passed ends).
    At(Instant),
    /// One of its key is held already: this one folds into it.
    Folded,
}

/// The pure half: when each key last passed and which are held.
pub struct Gate<T> {
    every: Duration,
    last: HashMap<T, Instant>,
    held: HashSet<T>,
    prune_at: usize,
    /// When a key last passed.
    latest: Option<Instant>,
}

impl<T: Hash + Eq + Clone> Gate<T> {
    /// A gate letting one trigger per key through `every`.
    pub fn new(every: Duration) -> Self {
        Gate {
            every,
            last: HashMap::new(),
            held: HashSet::new(),
            prune_at: 1024,
            latest: None,
        }
    }

    /// What to do with a trigger for `key` arriving `now`.
    pub fn offer(&mut self, key: T, now: Instant) -> Offer {
        if self.held.contains(&key) {
            return Offer::Folded;
        }
        match self.last.get(&key) {
            Some(&t) if now < t + self.every => {
                self.held.insert(key);
                Offer::At(t + self.every)
            }
            _ => {
                self.passed(key, now);
                Offer::Now
            }
        }
    }

    /// A held trigger for `key` passes `now`.
    pub fn release(&mut self, key: T, now: Instant) {
        self.held.remove(&key);
        self.passed(key, now);
    }

    /// When every key it remembers will have been quiet for the interval (nothing remembered: `None`).
    pub fn quiet_at(&self) -> Option<Instant> {
        let latest = self.latest.filter(|_| !self.last.is_empty())?;
        Some(latest + self.every)
    }

    /// Forgets the keys quiet for the interval, and gives back the room a burst took once none is left:
    /// a start-up that touched every route would otherwise hold a key per route for the whole term.
    pub fn prune(&mut self, now: Instant) {
        let every = self.every;
        self.last.retain(|_, t| now.duration_since(*t) < every);
        if self.last.is_empty() {
            self.last.shrink_to_fit();
        }
        if self.held.is_empty() {
            self.held.shrink_to_fit();
        }
    }

    fn passed(&mut self, key: T, now: Instant) {
        self.latest = Some(now);
        self.last.insert(key, now);
        // Keys quiet for longer than the interval need no memory: their next trigger passes anyway.
        if self.last.len() > self.prune_at {
            let every = self.every;
            self.last.retain(|_, t| now.duration_since(*t) < every);
            self.prune_at = (self.last.len() * 2).max(1024);
        }
    }
}

/// Tokio's clock (which tests can pause), as the gate's.
fn now() -> Instant {
    tokio::time::Instant::now().into_std()
}

type Due<T> = Pin<Box<dyn Future<Output = T> + Send>>;

/// `input` with at most one item per key every `every` (see the module's comment); items of a key held
/// meanwhile pass once, when the interval ends.
pub fn per_key<T, S>(input: S, every: Duration) -> impl Stream<Item = T> + Send
where
    T: Hash + Eq + Clone + Send + 'static,
    S: Stream<Item = T> + Send + 'static,
{
    let state = (
        input.boxed().fuse(),
        Gate::new(every),
        FuturesUnordered::<Due<T>>::new(),
    );
    futures::stream::unfold(state, |(mut input, mut gate, mut due)| async move {
        loop {
            let quiet = gate.quiet_at();
            let quiet_until = tokio::time::Instant::from_std(quiet.unwrap_or_else(now));
            tokio::select! {
                item = input.next(), if !input.is_done() => match item {
                    Some(key) => match gate.offer(key.clone(), now()) {
                        Offer::Now => return Some((key, (input, gate, due))),
                        Offer::At(at) => due.push(Box::pin(async move {
                            tokio::time::sleep_until(tokio::time::Instant::from_std(at)).await;
                            key
                        })),
                        Offer::Folded => {}
                    },
                    None if due.is_empty() => return None,
                    None => {}
                },
                Some(key) = due.next(), if !due.is_empty() => {
                    gate.release(key.clone(), now());
                    return Some((key, (input, gate, due)));
                }
                () = tokio::time::sleep_until(quiet_until), if quiet.is_some() && !input.is_done() => {
                    gate.prune(now());
                }
                else => return None,
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECOND: Duration = Duration::from_secs(1);

    #[test]
    fn the_first_trigger_passes_and_the_rest_of_the_interval_folds_into_one() {
        let mut gate = Gate::new(SECOND);
        let t0 = Instant::now();
        assert_eq!(gate.offer("r", t0), Offer::Now);
        let end = t0 + SECOND;
        assert_eq!(gate.offer("r", t0 + SECOND / 10), Offer::At(end));
        for i in 2..10 {
            assert_eq!(gate.offer("r", t0 + SECOND * i / 10), Offer::Folded);
        }
        gate.release("r", end);
        assert_eq!(gate.offer("r", end + SECOND / 2), Offer::At(end + SECOND));
    }

    #[test]
    fn keys_do_not_hold_each_other_and_a_quiet_key_passes_at_once() {
        let mut gate = Gate::new(SECOND);
        let t0 = Instant::now();
        assert_eq!(gate.offer("a", t0), Offer::Now);
        assert_eq!(gate.offer("b", t0), Offer::Now);
        assert_eq!(gate.offer("a", t0 + SECOND * 2), Offer::Now);
    }

    #[test]
    fn memory_of_quiet_keys_is_dropped() {
        let mut gate = Gate::new(SECOND);
        let t0 = Instant::now();
        for i in 0..5000 {
            gate.offer(i, t0 + SECOND * 2 * i);
        }
        assert!(gate.last.len() <= 1025, "{}", gate.last.len());
    }

    #[test]
    fn a_quiet_gate_forgets_every_key_but_still_folds_a_recent_one() {
        let mut gate = Gate::new(SECOND);
        let t0 = Instant::now();
        for i in 0..1000 {
            gate.offer(i, t0);
        }
        assert_eq!(gate.quiet_at(), Some(t0 + SECOND));
        gate.offer(0, t0 + SECOND / 2);
        gate.prune(t0 + SECOND);
        assert_eq!(gate.last.len(), 0, "all quiet for the interval");
        assert_eq!(gate.quiet_at(), None);
        assert_eq!(gate.offer(1, t0 + SECOND * 2), Offer::Now);
        assert_eq!(gate.offer(1, t0 + SECOND * 2), Offer::At(t0 + SECOND * 3));
        gate.prune(t0 + SECOND * 2);
        assert_eq!(gate.offer(1, t0 + SECOND * 2), Offer::Folded);
    }

    #[tokio::test(start_paused = true)]
    async fn a_steady_stream_of_one_key_passes_once_per_interval() {
        let input = futures::stream::iter(0..100).then(|_| async {
            tokio::time::sleep(Duration::from_millis(50)).await;
            "route"
        });
        let started = tokio::time::Instant::now();
        let passed: Vec<_> = per_key(input, SECOND)
            .map(|k| (k, started.elapsed()))
            .collect()
            .await;
        // 5 s of triggers: one at once, then one at the end of each interval (the last after the input ends).
        assert!((5..=7).contains(&passed.len()), "{passed:?}");
        let last = passed.last().unwrap().1;
        assert!(
            last <= Duration::from_secs(6),
            "held no longer than the interval: {last:?}"
        );
    }
}
