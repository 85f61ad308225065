//! Giving freed memory back to the system.
//!
//! glibc's allocator keeps the pages of freed blocks mapped: the high-water mark of the initial lists
//! (every route, credential and unfinished delivery arrives as JSON and is parsed into trees before the
//! caches keep their slim copies) and of a burst of events stays resident long after the memory was
//! freed. `malloc_trim(0)` returns free pages of every arena to the kernel; it costs a few milliseconds and
//! is called when the caches have synced and then every [`RELEASE_INTERVAL`]: the start-up lists, the
//! route controller's first pass over every route and a burst of events each leave megabytes free but
//! mapped, and a minute is long enough for that to be the footprint a memory limit sees. Other allocators (musl's, in the static
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

/// How often freed pages are given back. `malloc_trim` takes a few milliseconds with a heap of tens of
/// MiB, so this costs well under 0.1 % of a core.
pub const RELEASE_INTERVAL: std::time::Duration = std::time::Duration::from_secs(10);

/// Returns freed heap pages to the kernel, where the allocator keeps them otherwise.
pub fn release_free_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: `malloc_trim` only walks the allocator's own free lists under its locks; it has no
    // preconditions and never touches memory that is in use.
    unsafe {
        libc::malloc_trim(0);
    }
}
