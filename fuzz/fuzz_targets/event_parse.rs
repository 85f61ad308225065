#![no_main]

use libfuzzer_sys::fuzz_target;
use std::sync::LazyLock;

/// `FUZZ_UTF8_ONLY=1` skips inputs that are not UTF-8. It let a run look for other bugs while the finding
/// `fuzz/regressions/event_parse/invalid-utf8-in-unknown-field` (fixed since; see BENCHMARKS.md) was open,
/// and can serve the same way for the next finding of that kind. Leave it unset normally.
static UTF8_ONLY: LazyLock<bool> = LazyLock::new(|| std::env::var_os("FUZZ_UTF8_ONLY").is_some());

fuzz_target!(|data: &[u8]| {
    if *UTF8_ONLY && std::str::from_utf8(data).is_err() {
        return;
    }
    let _ = asc_webhook_operator_fuzz::event_parse(data);
});
