//! Giving freed memory back to the system.
//!
//! glibc's allocator keeps the pages of freed blocks mapped: the high-water mark of the initial lists
//! (every route, credential and unfinished delivery arrives as JSON and is parsed into trees before the
//! caches keep their slim copies) and of a burst of events stays resident long after the memory was
//! freed. `malloc_trim(0)` returns free pages of every arena to the kernel; it costs a few milliseconds and
//! is called when the caches have synced and then once a minute. Other allocators (musl's, in the static
//! image) return memory on their own, so elsewhere this does nothing.

/// Returns freed heap pages to the kernel, where the allocator keeps them otherwise.
pub fn release_free_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: `malloc_trim` only walks the allocator's own free lists under its locks; it has no
    // preconditions and never touches memory that is in use.
    unsafe {
        libc::malloc_trim(0);
    }
}
