#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = asc_webhook_operator_fuzz::signature_header(data);
});
