//! Captures every log line the in-process operators write, so tests can scan them for secrets.

use std::io::Write;
use std::sync::{Mutex, Once};

static LINES: Mutex<Vec<u8>> = Mutex::new(Vec::new());
static INIT: Once = Once::new();

struct Capture;

impl Write for Capture {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        LINES
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Installs the capturing subscriber once per test binary, at debug level for the operator.
pub fn init() {
    INIT.call_once(|| {
        let subscriber = tracing_subscriber::fmt()
            .json()
            .with_env_filter("asc_webhook_operator=debug,kube=info,warn")
            .with_writer(|| Capture)
            .finish();
        let _ = tracing::subscriber::set_global_default(subscriber);
    });
}

/// Everything logged so far.
pub fn captured() -> String {
    String::from_utf8_lossy(&LINES.lock().unwrap_or_else(|p| p.into_inner())).into_owned()
}
