//! The CRDs, generated from the Rust types. `crds/` holds the committed copies; a test fails when they drift.

use super::{AscCredential, WebhookDelivery, WebhookRoute};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::CustomResourceExt;

/// Every CRD the operator serves, with the file name it is committed under in `crds/`.
pub fn all() -> Vec<(&'static str, CustomResourceDefinition)> {
    vec![
        ("asccredentials.yaml", AscCredential::crd()),
        ("webhookroutes.yaml", WebhookRoute::crd()),
        ("webhookdeliveries.yaml", WebhookDelivery::crd()),
    ]
}

/// One CRD as a YAML document.
pub fn to_yaml(crd: &CustomResourceDefinition) -> Result<String, serde_yaml::Error> {
    serde_yaml::to_string(crd)
}

/// Every CRD as one multi-document YAML stream, as `asc-webhook-operator crds` prints it.
pub fn all_yaml() -> Result<String, serde_yaml::Error> {
    let mut out = String::new();
    for (_, crd) in all() {
        out.push_str("---\n");
        out.push_str(&to_yaml(&crd)?);
    }
    Ok(out)
}

/// Why the CRDs could not be printed or written.
#[derive(Debug, thiserror::Error)]
pub enum CrdsError {
    /// Serialization failed (a bug in the types).
    #[error("cannot serialize CRD: {0}")]
    Yaml(#[from] serde_yaml::Error),
    /// Writing a file failed.
    #[error("cannot write {path}: {source}")]
    Write {
        /// The file.
        path: String,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
}

/// Prints every CRD to stdout, or writes one file each into `out_dir`.
pub fn print_or_write(out_dir: Option<&std::path::Path>) -> Result<(), CrdsError> {
    let Some(dir) = out_dir else {
        print!("{}", all_yaml()?);
        return Ok(());
    };
    for (file, crd) in all() {
        let path = dir.join(file);
        std::fs::write(&path, to_yaml(&crd)?).map_err(|source| CrdsError::Write {
            path: path.display().to_string(),
            source,
        })?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/crds");

    #[test]
    fn committed_crds_match_the_types() {
        for (file, crd) in all() {
            let committed = std::fs::read_to_string(format!("{DIR}/{file}")).unwrap_or_else(|e| {
                panic!("crds/{file} missing ({e}); run `cargo run -- crds --out-dir crds`")
            });
            assert!(
                committed == to_yaml(&crd).unwrap(),
                "crds/{file} is stale: run `cargo run -- crds --out-dir crds` and commit the result"
            );
        }
    }

    #[test]
    fn every_crd_fits_client_side_apply_with_room_to_spare() {
        for (file, crd) in all() {
            let size = to_yaml(&crd).unwrap().len();
            assert!(
                size < 64 * 1024,
                "{file} is {size} bytes; client-side apply breaks at 256 KiB"
            );
        }
    }

    #[test]
    fn printed_stream_holds_every_crd_once() {
        let yaml = all_yaml().unwrap();
        assert_eq!(yaml.matches("kind: CustomResourceDefinition").count(), 3);
        for name in ["asccredentials", "webhookroutes", "webhookdeliveries"] {
            assert!(
                yaml.contains(&format!("name: {name}.asc.webhooks.dev")),
                "{name}"
            );
        }
    }
}
