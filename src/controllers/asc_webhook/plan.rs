//! The pure half of the App Store Connect webhook reconciler: what the webhook should look like, whether
//! App Store Connect needs to be asked at all, and which call brings it in line.

use crate::asc::webhooks::{
    EVENT_TYPES, MAX_WEBHOOKS_PER_APP, Webhook, WebhookAttributes, WebhookChange, subscription_name,
};
use crate::resources::WebhookRoute;
use crate::resources::route_asc::{AppStoreConnectStatus, RegisteredWebhook};
use kube::ResourceExt;
use std::collections::BTreeSet;
use std::time::Duration;

/// Why the webhook cannot be registered yet; the user has to change something.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Blocked {
    /// `WebhookRegistered` reason.
    pub reason: &'static str,
    /// What to fix.
    pub message: String,
}

fn blocked(reason: &'static str, message: impl Into<String>) -> Blocked {
    Blocked {
        reason,
        message: message.into(),
    }
}

/// The webhook the route asks for (all but the secret, which is read separately).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Desired {
    /// The app.
    pub app_id: String,
    /// Name, URL, event types (subscription names, sorted) and `enabled`.
    pub attributes: WebhookAttributes,
}

impl Desired {
    /// The attributes as status records them.
    pub fn registered(&self) -> RegisteredWebhook {
        RegisteredWebhook {
            name: self.attributes.name.clone(),
            url: self.attributes.url.clone(),
            event_types: self.attributes.event_types.clone(),
            enabled: self.attributes.enabled,
        }
    }
}

/// The route's receiver URL, exactly as the route controller writes `status.url`.
pub fn route_url(public_url: &str, route: &WebhookRoute) -> String {
    format!(
        "{}/hooks/{}/{}",
        public_url.trim_end_matches('/'),
        route.namespace().unwrap_or_default(),
        route.name_any()
    )
}

/// Whether App Store Connect may be given `url`: HTTPS, or plain HTTP to a loopback host (local clusters
/// and tests, where nothing crosses a network).
pub fn check_public_url(url: &str) -> Result<(), Blocked> {
    let parsed = url::Url::parse(url).map_err(|e| {
        blocked(
            "InsecurePublicUrl",
            format!("--public-url {url:?} is not a URL: {e}"),
        )
    })?;
    let loopback = match parsed.host() {
        Some(url::Host::Domain(d)) => d.eq_ignore_ascii_case("localhost"),
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        None => false,
    };
    match parsed.scheme() {
        "https" => Ok(()),
        "http" if loopback => Ok(()),
        _ => Err(blocked(
            "InsecurePublicUrl",
            format!(
                "the receiver URL {url} is not HTTPS; App Store Connect must only send signed events over \
                 TLS: set --public-url (chart value publicUrl) to the https:// address of the Ingress"
            ),
        )),
    }
}

/// Subscription names for the route: `spec.appStoreConnect.eventTypes`, or the union of the rules'
/// event types, with every type when a rule has none. Sorted and unique.
pub fn event_types(route: &WebhookRoute) -> Result<Vec<String>, Blocked> {
    let spec = &route.spec;
    let asc = spec.app_store_connect.as_ref();
    let explicit = asc.map(|a| a.event_types.clone()).unwrap_or_default();
    let written: Vec<(String, String)> = if !explicit.is_empty() {
        explicit
            .into_iter()
            .map(|t| (t, "spec.appStoreConnect.eventTypes".to_owned()))
            .collect()
    } else {
        let mut out = Vec::new();
        for rule in &spec.rules {
            let types = rule
                .filter
                .as_ref()
                .map(|f| f.event_types.clone())
                .unwrap_or_default();
            if types.is_empty() {
                return Ok(EVENT_TYPES.iter().map(|t| (*t).to_owned()).collect());
            }
            out.extend(
                types
                    .into_iter()
                    .map(|t| (t, format!("rule {}", rule.name))),
            );
        }
        out
    };
    let mut names = BTreeSet::new();
    for (t, from) in written {
        // Pings are sent to every webhook; they are not a subscription.
        if crate::asc::event::EventType::parse(&t) == crate::asc::event::EventType::WebhookPing {
            continue;
        }
        match subscription_name(&t) {
            Some(name) => {
                names.insert(name.to_owned());
            }
            None => {
                return Err(blocked(
                    "InvalidEventType",
                    format!(
                        "{from}: {t:?} is not an event type App Store Connect webhooks can subscribe to \
                         (one of {})",
                        EVENT_TYPES.join(", ")
                    ),
                ));
            }
        }
    }
    if names.is_empty() {
        return Err(blocked(
            "InvalidEventType",
            "no event type to subscribe to: set spec.appStoreConnect.eventTypes or add a rule",
        ));
    }
    Ok(names.into_iter().collect())
}

/// The webhook `route` asks for, or why it cannot be registered.
pub fn desired(route: &WebhookRoute, public_url: Option<&str>) -> Result<Desired, Blocked> {
    let Some(asc) = route.spec.app_store_connect.as_ref() else {
        return Err(blocked("NotRequested", "spec.appStoreConnect is not set"));
    };
    if route.spec.credential_ref.is_none() {
        return Err(blocked(
            "CredentialNotReady",
            "spec.appStoreConnect needs spec.credentialRef: an AscCredential whose key has the Account \
             Holder, Admin or App Manager role",
        ));
    }
    let Some(base) = public_url else {
        return Err(blocked(
            "NoPublicUrl",
            "the operator runs without --public-url (chart value publicUrl), so the route has no URL App \
             Store Connect could reach; registration waits until it is set",
        ));
    };
    let url = route_url(base, route);
    check_public_url(&url)?;
    let name = asc
        .name
        .clone()
        .filter(|n| !n.is_empty())
        .unwrap_or_else(|| {
            format!(
                "{}/{}",
                route.namespace().unwrap_or_default(),
                route.name_any()
            )
        });
    Ok(Desired {
        app_id: asc.app_id.clone(),
        attributes: WebhookAttributes {
            name,
            url,
            event_types: event_types(route)?,
            enabled: asc.enabled(),
        },
    })
}

/// A per-route fraction in [0, 1) from its uid, so re-reads of many routes spread out and each route
/// keeps its own steady schedule across restarts.
pub fn jitter_fraction(uid: &str) -> f64 {
    let h = uid.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    });
    (h % 10_000) as f64 / 10_000.0
}

/// When App Store Connect must be read again after `last_sync`: the interval shortened by up to 20 %.
pub fn read_interval(interval: Duration, uid: &str) -> Duration {
    interval.mul_f64(1.0 - 0.2 * jitter_fraction(uid))
}

/// What to do before any App Store Connect call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// Status shows the desired webhook registered with this Secret version, and the slow re-read is
    /// not due: no call at all. The next re-read is due after this long.
    Idle(Duration),
    /// Ask App Store Connect.
    Read,
}

/// Whether App Store Connect must be asked: only when something the route controls changed since the
/// last sync, or the slow re-read (which repairs changes made in App Store Connect) is due.
pub fn next_step(
    desired: &Desired,
    status: Option<&AppStoreConnectStatus>,
    secret_version: &str,
    now: jiff::Timestamp,
    read_every: Duration,
) -> Step {
    let Some(s) = status else { return Step::Read };
    let in_line = s.webhook_id.is_some()
        && s.app_id.as_deref() == Some(desired.app_id.as_str())
        && s.registered.as_ref() == Some(&desired.registered())
        && s.observed_secret_version.as_deref() == Some(secret_version);
    let last = s.last_sync_time.as_deref().and_then(crate::time::parse_ts);
    match (in_line, last) {
        (true, Some(last)) => {
            let since = now.duration_since(last);
            let since = Duration::try_from(since).unwrap_or(Duration::ZERO);
            match read_every.checked_sub(since) {
                Some(left) if !left.is_zero() => Step::Idle(left),
                _ => Step::Read,
            }
        }
        _ => Step::Read,
    }
}

/// The call that brings App Store Connect in line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Plan {
    /// No webhook for this route exists: create one.
    Create,
    /// A webhook exists (the recorded one, or one of the app with this route's URL, `adopted`); send
    /// `change`, plus the secret when `send_secret`.
    Patch {
        /// Its id.
        id: String,
        /// The differing readable attributes.
        change: WebhookChange,
        /// Whether the secret must be sent (the Secret changed, or the webhook was adopted and its
        /// secret is unknown).
        send_secret: bool,
        /// Found by URL rather than by the recorded id.
        adopted: bool,
    },
    /// It exists and matches.
    InSync {
        /// Its id.
        id: String,
        /// Found by URL rather than by the recorded id.
        adopted: bool,
    },
    /// None exists and the app already has Apple's maximum.
    LimitReached,
}

/// What differs between `desired` and `observed` (event types compared as sets).
pub fn diff(desired: &WebhookAttributes, observed: &WebhookAttributes) -> WebhookChange {
    let set = |v: &[String]| v.iter().cloned().collect::<BTreeSet<_>>();
    WebhookChange {
        name: (desired.name != observed.name).then(|| desired.name.clone()),
        url: (desired.url != observed.url).then(|| desired.url.clone()),
        secret: None,
        event_types: (set(&desired.event_types) != set(&observed.event_types))
            .then(|| desired.event_types.clone()),
        enabled: (desired.enabled != observed.enabled).then_some(desired.enabled),
    }
}

fn patch_or_in_sync(
    desired: &Desired,
    found: &Webhook,
    secret_changed: bool,
    adopted: bool,
) -> Plan {
    let change = diff(&desired.attributes, &found.attributes);
    let send_secret = secret_changed || adopted;
    if change.is_empty() && !send_secret {
        Plan::InSync {
            id: found.id.clone(),
            adopted,
        }
    } else {
        Plan::Patch {
            id: found.id.clone(),
            change,
            send_secret,
            adopted,
        }
    }
}

/// The plan once the recorded webhook was read (`by_id`: `Some(None)` = it is gone, `None` = there was
/// no id to read) and, when needed, the app's webhooks were listed.
pub fn plan(
    desired: &Desired,
    by_id: Option<Option<&Webhook>>,
    app_webhooks: &[Webhook],
    secret_changed: bool,
) -> Plan {
    if let Some(Some(found)) = by_id {
        return patch_or_in_sync(desired, found, secret_changed, false);
    }
    if let Some(same_url) = app_webhooks
        .iter()
        .find(|w| w.attributes.url == desired.attributes.url)
    {
        return patch_or_in_sync(desired, same_url, secret_changed, true);
    }
    if app_webhooks.len() >= MAX_WEBHOOKS_PER_APP {
        return Plan::LimitReached;
    }
    Plan::Create
}

#[cfg(test)]
#[path = "plan_tests.rs"]
mod tests;
