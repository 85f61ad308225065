//! A local HTTP endpoint standing in for Slack and Jira: records every request and answers from a script
//! (a queue of status codes, then 200).

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, Uri};
use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

#[derive(Debug, Clone)]
pub struct Recorded {
    pub method: String,
    pub path: String,
    pub headers: HeaderMap,
    pub body: String,
}

impl Recorded {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body)
            .unwrap_or_else(|e| panic!("body is not JSON ({e}): {}", self.body))
    }
}

#[derive(Default)]
struct Inner {
    requests: Vec<Recorded>,
    script: VecDeque<u16>,
    always: Option<u16>,
}

#[derive(Clone)]
pub struct Recorder {
    pub url: String,
    inner: Arc<Mutex<Inner>>,
}

impl Recorder {
    pub async fn start() -> Recorder {
        let inner = Arc::new(Mutex::new(Inner::default()));
        let app = axum::Router::new()
            .fallback(record)
            .with_state(inner.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        Recorder { url, inner }
    }

    /// Answer the next requests with these codes, then 200.
    pub fn script(&self, codes: &[u16]) {
        self.inner
            .lock()
            .unwrap()
            .script
            .extend(codes.iter().copied());
    }

    /// Answer every request with `code`.
    pub fn always(&self, code: u16) {
        self.inner.lock().unwrap().always = Some(code);
    }

    pub fn requests(&self) -> Vec<Recorded> {
        self.inner.lock().unwrap().requests.clone()
    }

    pub fn to(&self, path: &str) -> Vec<Recorded> {
        self.requests()
            .into_iter()
            .filter(|r| r.path == path)
            .collect()
    }
}

async fn record(
    State(inner): State<Arc<Mutex<Inner>>>,
    method: axum::http::Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> StatusCode {
    let mut inner = inner.lock().unwrap();
    inner.requests.push(Recorded {
        method: method.to_string(),
        path: uri.path().to_owned(),
        headers,
        body: String::from_utf8_lossy(&body).into_owned(),
    });
    let code = inner
        .always
        .or_else(|| inner.script.pop_front())
        .unwrap_or(200);
    StatusCode::from_u16(code).unwrap()
}
