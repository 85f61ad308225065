//! YAML as real tools read it. kubectl, Helm and Argo CD turn YAML into JSON with YAML 1.1 rules, where a
//! bare `on`, `yes`, `no`, `y` or `n` is a boolean; this crate's own YAML parser (and the fake API server's)
//! follows YAML 1.2. A test that loads a manifest meant for `kubectl apply` must see what kubectl would
//! send, so it converts through kubectl itself: `kubectl create --dry-run=client -o json -f -`.
//!
//! kubectl needs discovery even for a client-side dry run, so a [`Kubectl`] runs its own fake API server
//! (with the CRDs it is given) on a thread of its own: conversion then blocks the caller without needing
//! the caller's runtime, and works from synchronous and asynchronous tests alike.

use crate::apiserver::{FakeApiServer, FakeApiServerOptions};
use serde_json::Value;
use std::io::Write as _;
use std::path::PathBuf;
use std::process::{Command, Stdio};

/// The namespace of the kubeconfig's context. kubectl writes it into every namespaced object that names
/// none; the converter takes it out again, so a manifest converts to exactly what it says.
const UNSET_NAMESPACE: &str = "testkit-namespace-not-set";

fn kubeconfig_yaml(server: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: testkit\n  cluster:\n    server: {server}\ncontexts:\n- name: testkit\n  context:\n    cluster: testkit\n    user: testkit\n    namespace: {UNSET_NAMESPACE}\ncurrent-context: testkit\nusers:\n- name: testkit\n  user:\n    token: testkit\n"
    )
}

fn strip_injected_namespace(doc: &mut Value) {
    if let Some(meta) = doc.get_mut("metadata").and_then(Value::as_object_mut)
        && meta.get("namespace").and_then(Value::as_str) == Some(UNSET_NAMESPACE)
    {
        meta.remove("namespace");
    }
}

/// Why a conversion failed.
#[derive(Debug, thiserror::Error)]
pub enum KubectlError {
    /// kubectl could not be started.
    #[error(
        "cannot run {bin} ({source}): run the tests with `bash .ci/test`, which installs kubectl"
    )]
    Spawn {
        /// The binary tried.
        bin: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// kubectl refused the input.
    #[error("kubectl refused the manifest: {0}")]
    Refused(String),
    /// kubectl printed something that is not JSON.
    #[error("kubectl printed no JSON: {0}")]
    Output(String),
}

/// A kubectl bound to a private fake API server that knows the given CRDs.
pub struct Kubectl {
    bin: String,
    kubeconfig: PathBuf,
    _dir: tempfile::TempDir,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Kubectl {
    /// Starts the private API server with `crd_yaml` loaded. `bin` is the kubectl to run (`ASC_KUBECTL`
    /// in this project's tests, else `kubectl` from `PATH`). Panics when the server cannot start, which in
    /// a test is the most useful thing to do.
    pub fn start(bin: impl Into<String>, crd_yaml: Vec<String>) -> Kubectl {
        let dir = tempfile::tempdir().expect("temp dir for the kubeconfig");
        let kubeconfig = dir.path().join("kubeconfig");
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let path = kubeconfig.clone();
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("a runtime for the kubectl API server");
            rt.block_on(async move {
                let api = FakeApiServer::start(FakeApiServerOptions {
                    crd_yaml,
                    ..Default::default()
                })
                .await;
                let written = std::fs::write(&path, kubeconfig_yaml(&api.url()));
                let _ = ready_tx.send(written);
                let _ = stop_rx.await;
                drop(api);
            });
        });
        ready_rx
            .recv()
            .expect("the kubectl API server thread started")
            .expect("kubeconfig written");
        Kubectl {
            bin: bin.into(),
            kubeconfig,
            _dir: dir,
            stop: Some(stop_tx),
            thread: Some(thread),
        }
    }

    /// The documents of `yaml` (one or many), as the JSON kubectl would send to the API server.
    pub fn to_json(&self, yaml: &str) -> Result<Vec<Value>, KubectlError> {
        let mut child = Command::new(&self.bin)
            .args([
                "create",
                "--dry-run=client",
                "--validate=false",
                "-o",
                "json",
                "-f",
                "-",
            ])
            .env("KUBECONFIG", &self.kubeconfig)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|source| KubectlError::Spawn {
                bin: self.bin.clone(),
                source,
            })?;
        if let Some(mut stdin) = child.stdin.take() {
            stdin
                .write_all(yaml.as_bytes())
                .map_err(|e| KubectlError::Refused(e.to_string()))?;
        }
        let out = child
            .wait_with_output()
            .map_err(|e| KubectlError::Refused(e.to_string()))?;
        if !out.status.success() {
            return Err(KubectlError::Refused(
                String::from_utf8_lossy(&out.stderr).into_owned(),
            ));
        }
        let mut docs = Vec::new();
        let stream = serde_json::Deserializer::from_slice(&out.stdout).into_iter::<Value>();
        for v in stream {
            let v = v.map_err(|e| KubectlError::Output(e.to_string()))?;
            // Several documents come back as one `List`.
            if v.get("kind").and_then(Value::as_str) == Some("List")
                && let Some(Value::Array(items)) = v.get("items")
            {
                docs.extend(items.iter().cloned());
            } else {
                docs.push(v);
            }
        }
        docs.iter_mut().for_each(strip_injected_namespace);
        Ok(docs)
    }
}

impl Drop for Kubectl {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
