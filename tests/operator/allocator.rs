//! The binary allocates the way its memory figures were measured (BENCHMARKS.md §4): jemalloc with one
//! arena, no per-thread caches and free pages returned with `MADV_DONTNEED`. A build that lost the
//! settings symbol would run with jemalloc's defaults (four arenas per core, thread caches) and several
//! MiB more at idle, with nothing else failing.

#[cfg(all(feature = "jemalloc", not(target_env = "msvc")))]
#[test]
fn the_binary_allocates_from_one_jemalloc_arena_without_thread_caches() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_asc-webhook-operator"))
        .arg("crds")
        // Adds to the binary's own settings: jemalloc prints its options and statistics at exit.
        .env("_RJEM_MALLOC_CONF", "stats_print:true")
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let stats = String::from_utf8_lossy(&out.stderr);
    for setting in [
        "opt.narenas: 1\n",
        "opt.tcache: false\n",
        "opt.muzzy_decay_ms: 0 ",
    ] {
        assert!(
            stats.contains(setting),
            "jemalloc runs without {setting:?}:\n{}",
            stats
                .lines()
                .filter(|l| l.contains("opt."))
                .collect::<Vec<_>>()
                .join("\n")
        );
    }
}
