//! Giving freed memory back to the system.
//!
//! glibc's allocator keeps the pages of freed blocks mapped: the high-water mark of the initial lists
//! (every route, credential and unfinished delivery arrives as JSON and is parsed into trees before the
//! caches keep their slim copies) and of a burst of events stays resident long after the memory was
//! freed. `malloc_trim(0)` returns free pages of every arena to the kernel; it costs a few milliseconds and
//! is called when the caches have synced, as soon as a stretch of work ends (see [`TrimSchedule`]) and
//! at least every [`RELEASE_INTERVAL`]: the start-up lists, the route controller's first pass over every
//! route and a burst of events each leave megabytes free but mapped, which would otherwise be the
//! footprint a memory limit sees. Other allocators (musl's, in the static
//! image) return memory on their own, so elsewhere this does nothing.

/// Makes every thread allocate from one heap (glibc's `M_ARENA_MAX`), called before any thread starts.
/// glibc gives each thread that meets contention a heap arena of its own (up to eight per core); each
/// arena keeps its own free lists and high-water mark, so the same live data costs several times the
/// memory once the tokio workers, the blocking pool and the runtime's timer thread have each allocated
/// through a burst. The operator waits on the network far more than it allocates, so one heap costs no
/// measurable throughput (BENCHMARKS.md §4).
pub fn limit_arenas() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: `mallopt` only sets an allocator parameter; called before other threads exist, nothing
    // allocates concurrently.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 1);
    }
}

/// The longest time freed pages stay mapped. `malloc_trim` takes a few milliseconds with a heap of tens
/// of MiB, so this costs well under 0.1 % of a core.
pub const RELEASE_INTERVAL: std::time::Duration = std::time::Duration::from_secs(10);

/// How often [`TrimSchedule`] looks whether work went quiet.
pub const QUIET_CHECK: std::time::Duration = std::time::Duration::from_secs(1);

/// Units of work done (reconciles, webhook requests) since start: what frees memory in bulk.
static WORK_DONE: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// Counts one unit of work (a reconcile, a webhook request), so its garbage is given back once work
/// pauses.
pub fn note_work() {
    WORK_DONE.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
}

/// Work counted so far.
pub fn work_done() -> u64 {
    WORK_DONE.load(std::sync::atomic::Ordering::Relaxed)
}

/// When to give freed pages back: one [`QUIET_CHECK`] after a stretch of work ends (the route
/// controller's first pass over a thousand routes, a burst of events), so its garbage is not the
/// footprint for the next [`RELEASE_INTERVAL`]; during long work at least every `RELEASE_INTERVAL`;
/// and never while nothing happens, where there is nothing to give back. Pure: fed the work counter and
/// the time.
#[derive(Debug)]
pub struct TrimSchedule {
    seen: u64,
    trimmed_at: u64,
    last_trim: std::time::Instant,
}

impl TrimSchedule {
    /// A schedule that has just trimmed.
    pub fn new(work_done: u64, now: std::time::Instant) -> Self {
        TrimSchedule {
            seen: work_done,
            trimmed_at: work_done,
            last_trim: now,
        }
    }

    /// Called every [`QUIET_CHECK`]: whether to trim now.
    pub fn due(&mut self, work_done: u64, now: std::time::Instant) -> bool {
        let quiet = work_done == self.seen;
        self.seen = work_done;
        let garbage = work_done != self.trimmed_at;
        let due = garbage && (quiet || now.duration_since(self.last_trim) >= RELEASE_INTERVAL);
        if due {
            self.trimmed_at = work_done;
            self.last_trim = now;
        }
        due
    }
}

/// Returns freed heap pages to the kernel, where the allocator keeps them otherwise.
pub fn release_free_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: `malloc_trim` only walks the allocator's own free lists under its locks; it has no
    // preconditions and never touches memory that is in use.
    unsafe {
        libc::malloc_trim(0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, Instant};

    #[test]
    fn memory_is_given_back_once_work_pauses_at_least_every_interval_while_it_goes_on_and_never_when_idle()
     {
        let t0 = Instant::now();
        let at = |s: u64| t0 + Duration::from_secs(s);
        let mut schedule = TrimSchedule::new(0, t0);
        assert!(!schedule.due(0, at(1)), "idle from the start");
        assert!(!schedule.due(500, at(2)), "work under way");
        assert!(!schedule.due(1000, at(3)), "still under way");
        assert!(schedule.due(1000, at(4)), "the first quiet second after it");
        assert!(!schedule.due(1000, at(5)), "nothing new to give back");
        assert!(
            !schedule.due(1000, at(60)),
            "idle for long: nothing to give back"
        );
        let mut busy = 1000;
        let mut trims = Vec::new();
        for s in 61..=85 {
            busy += 10;
            if schedule.due(busy, at(s)) {
                trims.push(s);
            }
        }
        assert_eq!(
            trims,
            [61, 71, 81],
            "long work: whenever an interval has passed since the last trim"
        );
        assert!(schedule.due(busy, at(86)), "and once more when it ends");
    }
}
