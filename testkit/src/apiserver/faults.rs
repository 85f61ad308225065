//! Fault injection rules and the request log.

use std::time::Duration;

/// What a request does, in the API server's vocabulary.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Verb {
    Get,
    List,
    Watch,
    Create,
    Update,
    Patch,
    Delete,
    DeleteCollection,
    /// `/version`, `/api`, `/apis` and the group/version resource lists.
    Discovery,
}

impl Verb {
    pub fn is_write(self) -> bool {
        matches!(
            self,
            Verb::Create | Verb::Update | Verb::Patch | Verb::Delete | Verb::DeleteCollection
        )
    }
}

/// How an injected fault answers.
#[derive(Debug, Clone, PartialEq)]
pub enum Fault {
    /// A `Status` failure with this HTTP code and the reason the real server pairs with it
    /// (500 `InternalError`, 503 `ServiceUnavailable`, 429 `TooManyRequests`, …). Note that
    /// kube's default client retries 429/503/504 on its own (up to 15 times).
    Status(u16),
    /// A `Status` failure with this code and message, for refusals whose wording clients branch on
    /// (a ResourceQuota's 403 `exceeded quota: …`, etcd's `request is too large`).
    StatusMessage(u16, String),
    /// What the real server does when a request overruns its deadline: after
    /// [`super::FakeApiServerOptions::timeout_fault_delay`], a 504 `Timeout` status.
    Timeout,
    /// Waits, then closes the connection without answering.
    Hang(Duration),
    /// Closes the connection at once without answering.
    Drop,
    /// Holds the request this long, then serves it normally: one client's write arriving late, so a
    /// race between clients can be staged (the request is not marked as injected).
    Delay(Duration),
}

/// Which requests a fault applies to, and how many times. Requests are matched in the order
/// rules were added; each match uses up one of the rule's `times`.
#[derive(Debug, Clone)]
pub struct FaultRule {
    pub fault: Fault,
    pub times: usize,
    pub verb: Option<Verb>,
    /// Resource plural, e.g. `webhookdeliveries`.
    pub resource: Option<String>,
    /// `"status"` to target only status writes; `Some("")` for the main resource only.
    pub subresource: Option<String>,
    pub namespace: Option<String>,
    pub name: Option<String>,
}

impl FaultRule {
    /// A rule that fails the next matching request once; narrow it with the builder methods.
    pub fn new(fault: Fault) -> Self {
        Self {
            fault,
            times: 1,
            verb: None,
            resource: None,
            subresource: None,
            namespace: None,
            name: None,
        }
    }

    pub fn times(mut self, n: usize) -> Self {
        self.times = n;
        self
    }

    pub fn verb(mut self, verb: Verb) -> Self {
        self.verb = Some(verb);
        self
    }

    pub fn resource(mut self, plural: impl Into<String>) -> Self {
        self.resource = Some(plural.into());
        self
    }

    pub fn subresource(mut self, sub: impl Into<String>) -> Self {
        self.subresource = Some(sub.into());
        self
    }

    pub fn namespace(mut self, ns: impl Into<String>) -> Self {
        self.namespace = Some(ns.into());
        self
    }

    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.name = Some(name.into());
        self
    }

    pub(crate) fn matches(&self, r: &RequestRecord) -> bool {
        // Discovery is left alone unless asked for: a fault meant for "the next call" should hit
        // an API call, not the client's housekeeping.
        let verb_ok = match self.verb {
            Some(v) => v == r.verb,
            None => r.verb != Verb::Discovery,
        };
        verb_ok
            && self.resource.as_ref().is_none_or(|x| *x == r.resource)
            && self
                .subresource
                .as_ref()
                .is_none_or(|x| *x == r.subresource)
            && self
                .namespace
                .as_ref()
                .is_none_or(|x| Some(x) == r.namespace.as_ref())
            && self
                .name
                .as_ref()
                .is_none_or(|x| Some(x) == r.name.as_ref())
    }
}

/// One request as the server saw it.
#[derive(Debug, Clone, PartialEq)]
pub struct RequestRecord {
    pub method: String,
    pub path: String,
    pub query: String,
    pub verb: Verb,
    /// API group (`""` for core).
    pub group: String,
    /// Resource plural (`""` for discovery).
    pub resource: String,
    /// `"status"` or `""`.
    pub subresource: String,
    pub namespace: Option<String>,
    pub name: Option<String>,
    /// The `Content-Type` of the request (tells patch types apart).
    pub content_type: Option<String>,
    /// HTTP status answered; 0 when the connection was dropped without an answer.
    pub status: u16,
    /// Set when the answer came from an injected fault.
    pub injected: bool,
    /// The `Impersonate-User` the request carried, if any.
    pub impersonated_user: Option<String>,
    /// The `User-Agent` the request carried, if any.
    pub user_agent: Option<String>,
}

impl RequestRecord {
    /// Who sent the request, as the real server's audit log and APF tell clients apart: the identity it
    /// acted as (`Impersonate-User`), else its `User-Agent`, else `unknown`.
    pub fn client(&self) -> &str {
        self.impersonated_user
            .as_deref()
            .or(self.user_agent.as_deref())
            .unwrap_or("unknown")
    }
}

#[derive(Default)]
pub(crate) struct Faults {
    pub rules: Vec<FaultRule>,
}

impl Faults {
    /// Consumes one use of the first rule matching `r`.
    pub fn take(&mut self, r: &RequestRecord) -> Option<Fault> {
        let i = self
            .rules
            .iter()
            .position(|rule| rule.times > 0 && rule.matches(r))?;
        let rule = &mut self.rules[i];
        rule.times -= 1;
        let fault = rule.fault.clone();
        if rule.times == 0 {
            self.rules.remove(i);
        }
        Some(fault)
    }
}
