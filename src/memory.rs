//! The allocator's settings, and giving freed memory back to the system.
//!
//! The binary allocates with jemalloc ([`Settings::JEMALLOC`]): one arena, no per-thread caches, and
//! freed pages given back instead of kept for reuse. With 1,000 routes that declare their Apple webhook
//! it holds the same live data in ~4 MiB less than glibc's malloc did with one arena and
//! `malloc_trim` (BENCHMARKS.md §4): glibc puts a header on every block and rounds small blocks up to
//! 32 bytes, and the caches are hundreds of thousands of small strings; jemalloc packs equal sizes into
//! slabs without headers, so the start-up burst leaves fewer half-used pages behind.
//!
//! Freed pages still wait for jemalloc's decay timer, which only runs while something allocates; so
//! [`release_free_memory`] purges them when the caches have synced, as soon as a stretch of work ends
//! (see [`TrimSchedule`]) and at least every [`RELEASE_INTERVAL`]: the start-up lists, the route
//! controller's first pass over every route and a burst of events each leave megabytes free, which would
//! otherwise be the footprint a memory limit sees.

/// Without jemalloc (`--no-default-features`), makes every thread allocate from one glibc heap
/// (`M_ARENA_MAX`), called before any thread starts: glibc gives each thread that meets contention an
/// arena of its own, each with its own free lists and high-water mark. With jemalloc, `narenas:1` in
/// [`Settings::JEMALLOC`] does the same and this does nothing.
pub fn limit_arenas() {
    #[cfg(all(not(feature = "jemalloc"), target_os = "linux", target_env = "gnu"))]
    // SAFETY: `mallopt` only sets an allocator parameter; called before other threads exist, nothing
    // allocates concurrently.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 1);
    }
}

/// A C string jemalloc reads before `main` (`malloc_conf`): a pointer to constant bytes.
#[repr(transparent)]
pub struct Settings(*const std::ffi::c_char);

// SAFETY: the pointer is to a constant, NUL-terminated string that is never written.
unsafe impl Sync for Settings {}

impl Settings {
    /// `narenas:1`: every thread allocates from one arena; each arena keeps its own free pages and
    /// high-water mark, and the operator waits on the network far more than it allocates.
    /// `tcache:false`: no per-thread caches of freed blocks (1.6 MiB more at idle with them, for
    /// allocation speed the operator does not need). `muzzy_decay_ms:0`: pages are returned with
    /// `MADV_DONTNEED`, which lowers the RSS at once, not lazily freed pages the kernel takes back only
    /// under pressure. `dirty_decay_ms:1000`: freed pages are kept a second for reuse within a burst.
    pub const JEMALLOC: Settings =
        Settings(c"narenas:1,tcache:false,dirty_decay_ms:1000,muzzy_decay_ms:0".as_ptr());
}

/// The longest time freed pages stay mapped. A purge takes well under a millisecond with a heap of tens
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

/// Returns freed heap pages to the kernel now, where jemalloc would keep them until its decay timer
/// runs at the next allocation (glibc's `malloc_trim` without jemalloc).
pub fn release_free_memory() {
    #[cfg(all(not(feature = "jemalloc"), target_os = "linux", target_env = "gnu"))]
    // SAFETY: `malloc_trim` only walks glibc's own free lists under its locks; it has no
    // preconditions and never touches memory that is in use.
    unsafe {
        libc::malloc_trim(0);
    }
    #[cfg(all(feature = "jemalloc", not(target_env = "msvc")))]
    // SAFETY: `arena.<MALLCTL_ARENAS_ALL>.purge` takes no arguments and reads or writes no memory of
    // ours; it purges unused pages of every arena under jemalloc's own locks.
    let failed = unsafe {
        tikv_jemalloc_sys::mallctl(
            c"arena.4096.purge".as_ptr(),
            std::ptr::null_mut(),
            std::ptr::null_mut(),
            std::ptr::null_mut(),
            0,
        )
    };
    #[cfg(all(feature = "jemalloc", not(target_env = "msvc")))]
    if failed != 0 {
        tracing::debug!(errno = failed, "jemalloc did not purge its free pages");
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
