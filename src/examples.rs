//! Example App Store Connect events built into the binary, for `send --example` and documentation.

/// Names accepted by `send --example`.
pub const NAMES: &[&str] = &[
    "webhook-ping",
    "build-upload-complete",
    "build-upload-failed",
    "app-version-waiting-for-review",
    "app-version-in-review",
    "app-version-developer-rejected",
    "app-version-ready-for-review",
    "app-version-prepare-for-submission",
    "app-version-pending-developer-release",
    "app-version-ready-for-distribution",
];

macro_rules! fixture {
    ($name:literal) => {
        include_bytes!(concat!("../tests/fixtures/asc/events/", $name, ".json"))
    };
}

/// The body of a built-in example, byte for byte as Apple sends it.
pub fn body(name: &str) -> Option<&'static [u8]> {
    Some(match name {
        "webhook-ping" => fixture!("webhook-ping"),
        "build-upload-complete" => fixture!("build-upload-complete"),
        "build-upload-failed" => fixture!("build-upload-failed"),
        "app-version-waiting-for-review" => fixture!("app-version-waiting-for-review"),
        "app-version-in-review" => fixture!("app-version-in-review"),
        "app-version-developer-rejected" => fixture!("app-version-developer-rejected"),
        "app-version-ready-for-review" => fixture!("app-version-ready-for-review"),
        "app-version-prepare-for-submission" => fixture!("app-version-prepare-for-submission"),
        "app-version-pending-developer-release" => {
            fixture!("app-version-pending-developer-release")
        }
        "app-version-ready-for-distribution" => fixture!("app-version-ready-for-distribution"),
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_named_example_exists_and_is_an_event() {
        for name in NAMES {
            let raw = body(name).unwrap_or_else(|| panic!("{name} missing"));
            crate::asc::event::WebhookEvent::parse(bytes::Bytes::from_static(raw)).unwrap();
        }
        assert!(body("nope").is_none());
    }
}
