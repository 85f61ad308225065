//! The API server's `apiserver_request_total` samples, read from its `/metrics` text: the one parser
//! both real-server benchmarks count requests with.

/// One sample: a label's value by name (`""` when absent), and the sample's value.
pub struct Sample<'a> {
    labels: &'a str,
    pub value: f64,
}

impl Sample<'_> {
    pub fn label(&self, name: &str) -> String {
        self.labels
            .split("\",")
            .find_map(|kv| kv.strip_prefix(&format!("{name}=\"")))
            .map(|v| v.trim_end_matches('"').to_owned())
            .unwrap_or_default()
    }

    /// `resource` or `resource/subresource`; `""` for requests to paths that are not resources.
    pub fn resource(&self) -> String {
        let (resource, subresource) = (self.label("resource"), self.label("subresource"));
        if subresource.is_empty() || resource.is_empty() {
            resource
        } else {
            format!("{resource}/{subresource}")
        }
    }
}

/// Every `apiserver_request_total` sample of `text`.
pub fn samples(text: &str) -> impl Iterator<Item = Sample<'_>> {
    text.lines().filter_map(|line| {
        let rest = line.strip_prefix("apiserver_request_total{")?;
        let (labels, value) = rest.rsplit_once("} ")?;
        Some(Sample {
            labels,
            value: value.trim().parse().ok()?,
        })
    })
}
