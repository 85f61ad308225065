//! The `AscCredential` controller: can the key mint a token (`Ready`), and — when asked — does App Store
//! Connect accept it (`Verified`)? The key and tokens are never written anywhere.
//!
//! The key's Secret is read on every reconcile: when the credential changes, when the Secret is seen to
//! change (`secret_watch`), every `--recheck-interval` (30 s) while not ready, and every 10 minutes while
//! ready. The `reconcile-requested-at` annotation re-reads and verifies at once.

use super::context::{Context, CredentialProblem, read_key};
use super::{Error, status};
use crate::asc::token::{ApiKey, KeyKind};
use crate::controllers::next_look::Next;
use crate::resources::conditions::{self, Condition};
use crate::resources::{AscCredential, AscCredentialStatus};
use kube::{Api, ResourceExt};
use std::sync::Arc;
use std::time::Duration;

/// This controller's name in [`crate::controllers::context::Nudges`].
const NUDGE: &str = "credential";

/// How often a ready credential without verification is re-checked (a revoked Secret shows up).
pub const READY_RECHECK: Duration = Duration::from_secs(600);

/// The result of reading and using the key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyCheck {
    /// The key parsed and minted a token.
    Usable(KeyKind),
    /// It did not; `reason` is the condition reason.
    Unusable {
        /// Condition reason.
        reason: String,
        /// For a person.
        message: String,
    },
}

/// The status for a key check and an optional verification result (a refusal as its `Verified`
/// reason and message). Pure.
pub fn desired_status(
    previous: Option<&AscCredentialStatus>,
    generation: Option<i64>,
    check: &KeyCheck,
    verification: Option<Result<(), (&'static str, String)>>,
    now: &str,
) -> AscCredentialStatus {
    let prev = previous.cloned().unwrap_or_default();
    let ready = match check {
        KeyCheck::Usable(kind) => Condition::new(
            "Ready",
            true,
            "KeyUsable",
            format!("{} key parses and mints ES256 tokens", kind_name(*kind)),
        ),
        KeyCheck::Unusable { reason, message } => {
            Condition::new("Ready", false, reason, message.clone())
        }
    };
    let mut fresh = vec![ready];
    let mut last_verified_time = prev.last_verified_time.clone();
    match verification {
        Some(Ok(())) => {
            fresh.push(Condition::new(
                "Verified",
                true,
                "ApiAccepted",
                "App Store Connect accepted a token from this key",
            ));
            last_verified_time = Some(now.to_owned());
        }
        Some(Err((reason, message))) => {
            fresh.push(Condition::new("Verified", false, reason, message))
        }
        None => {}
    }
    let mut conditions = conditions::merge(&prev.conditions, fresh, generation, now);
    if !matches!(check, KeyCheck::Usable(_)) {
        conditions.retain(|c| c.type_ != "Verified");
    }
    AscCredentialStatus {
        conditions,
        key_type: match check {
            KeyCheck::Usable(kind) => Some(kind_name(*kind).to_owned()),
            KeyCheck::Unusable { .. } => None,
        },
        last_verified_time,
        observed_generation: generation,
    }
}

fn kind_name(kind: KeyKind) -> &'static str {
    match kind {
        KeyKind::Team => "Team",
        KeyKind::Individual => "Individual",
    }
}

/// The `Verified` reason for a refused verification call: a refused token scope is told apart, as its
/// fix is a flag of the operator, not the key.
fn refusal_reason(e: &crate::asc::api::ApiError) -> &'static str {
    match e {
        crate::asc::api::ApiError::TokenScopeRefused { .. } => "TokenScopeRefused",
        _ => "ApiRefused",
    }
}

/// Whether a verification call is due: never verified for this generation, or the last success is older
/// than the interval. A failing verification is retried on the not-ready schedule.
pub fn verification_due(
    status: Option<&AscCredentialStatus>,
    generation: Option<i64>,
    interval: Duration,
    now: jiff::Timestamp,
) -> bool {
    let Some(s) = status else { return true };
    let Some(verified) = conditions::find(&s.conditions, "Verified") else {
        return true;
    };
    if verified.observed_generation != generation || !verified.is_true() {
        return true;
    }
    let last = s
        .last_verified_time
        .as_deref()
        .and_then(crate::time::parse_ts);
    last.is_none_or(|t| now.duration_since(t).as_secs() >= interval.as_secs() as i64)
}

/// Whether the credential's key is usable: its origin allowed, its Secret readable, a token minted
/// with it. Trouble reading the Secret that may pass is an error (retried with backoff).
async fn check_key(
    ctx: &Context,
    cred: &AscCredential,
    namespace: &str,
) -> Result<KeyCheck, Error> {
    let origin_check = ctx.settings.asc_origins.check(cred.spec.api_url());
    let key = match origin_check {
        // The key is not even read for a refused origin: no token is minted for it.
        Err(message) => Err(CredentialProblem::Unusable {
            reason: "ApiUrlNotAllowed",
            message,
            transient: false,
        }),
        Ok(()) => read_key(&ctx.client, namespace, &cred.spec.private_key_secret_ref).await,
    };
    Ok(match key {
        Err(
            problem @ CredentialProblem::Unusable {
                transient: true, ..
            },
        ) => return Err(Error::Credential(problem)),
        Err(CredentialProblem::Unusable {
            reason, message, ..
        }) => KeyCheck::Unusable {
            reason: reason.to_owned(),
            message,
        },
        Ok((_, pem)) => {
            match ApiKey::from_pem(cred.spec.key_id.clone(), cred.spec.issuer_id.clone(), &pem)
                .and_then(|k| k.mint_at(jiff::Timestamp::now()).map(|_| k.kind()))
            {
                Ok(kind) => KeyCheck::Usable(kind),
                Err(e) => KeyCheck::Unusable {
                    reason: "KeyInvalid".into(),
                    message: e.to_string(),
                },
            }
        }
    })
}

/// Reconciles one credential.
pub async fn reconcile(cred: Arc<AscCredential>, ctx: Arc<Context>) -> Result<Next, Error> {
    let namespace = cred.namespace().unwrap_or_default();
    let name = cred.name_any();
    let generation = cred.metadata.generation;
    let now = crate::time::now_rfc3339();

    // This reconcile runs when the credential or its Secret changed: others resolve it afresh.
    ctx.asc_clients.forget(&namespace, &name);
    let check = check_key(&ctx, &cred, &namespace).await?;
    // A person asked for a fresh look (`reconcile-requested-at`): the key was just read; verify it now.
    let nudged = ctx.nudges.pending(NUDGE, cred.as_ref());

    let interval = cred
        .spec
        .verify_interval_minutes
        .and_then(|m| u64::try_from(m).ok())
        .map(|m| Duration::from_secs(m * 60));
    let verification = match (&check, interval) {
        (KeyCheck::Usable(_), Some(interval))
            if nudged
                || verification_due(
                    cred.status.as_ref(),
                    generation,
                    interval,
                    jiff::Timestamp::now(),
                ) =>
        {
            Some(match ctx.asc_clients.resolve(&namespace, &name).await {
                Ok(resolved) => resolved
                    .client
                    .verify()
                    .await
                    .map_err(|e| (refusal_reason(&e), crate::text::error_chain(&e))),
                Err(e) => Err(("ApiRefused", e.to_string())),
            })
        }
        _ => None,
    };

    let new_status = desired_status(cred.status.as_ref(), generation, &check, verification, &now);
    if cred.status.as_ref() != Some(&new_status) {
        let was_ready = cred
            .status
            .as_ref()
            .and_then(|s| conditions::find(&s.conditions, "Ready"))
            .map(Condition::is_true);
        let api: Api<AscCredential> = Api::namespaced(ctx.client.clone(), &namespace);
        status::apply(&api, &name, &new_status)
            .await
            .map_err(Error::Kube)?;
        if let KeyCheck::Unusable { reason, message } = &check
            && was_ready != Some(false)
        {
            ctx.event(cred.as_ref(), true, reason, message.clone())
                .await;
        }
    }

    ctx.nudges.answered(NUDGE, cred.as_ref());
    let ready = matches!(check, KeyCheck::Usable(_));
    let verified_ok =
        conditions::find(&new_status.conditions, "Verified").is_none_or(Condition::is_true);
    Ok(Next::After(match (ready && verified_ok, interval) {
        (false, _) => ctx.settings.recheck_interval,
        (true, Some(i)) => i.min(READY_RECHECK),
        (true, None) => READY_RECHECK,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_secret_is_not_ready_with_its_reason() {
        let s = desired_status(
            None,
            Some(1),
            &KeyCheck::Unusable {
                reason: "SecretNotFound".into(),
                message: "Secret ios/k does not exist".into(),
            },
            None,
            "t1",
        );
        let ready = conditions::find(&s.conditions, "Ready").unwrap();
        assert_eq!(
            (ready.status.as_str(), ready.reason.as_str()),
            ("False", "SecretNotFound")
        );
        assert_eq!(ready.observed_generation, Some(1));
        assert_eq!(s.key_type, None);
    }

    #[test]
    fn fixed_secret_flips_ready_and_moves_the_transition_time() {
        let bad = desired_status(
            None,
            Some(1),
            &KeyCheck::Unusable {
                reason: "KeyInvalid".into(),
                message: "x".into(),
            },
            None,
            "t1",
        );
        let good = desired_status(
            Some(&bad),
            Some(1),
            &KeyCheck::Usable(KeyKind::Team),
            None,
            "t2",
        );
        let ready = conditions::find(&good.conditions, "Ready").unwrap();
        assert!(ready.is_true());
        assert_eq!(ready.last_transition_time, "t2");
        assert_eq!(good.key_type.as_deref(), Some("Team"));
        let again = desired_status(
            Some(&good),
            Some(1),
            &KeyCheck::Usable(KeyKind::Team),
            None,
            "t3",
        );
        assert_eq!(
            again, good,
            "an unchanged check must produce an identical status (no write, no event loop)"
        );
    }

    #[test]
    fn verification_is_recorded_as_its_own_condition() {
        let ok = desired_status(
            None,
            Some(2),
            &KeyCheck::Usable(KeyKind::Individual),
            Some(Ok(())),
            "t1",
        );
        assert!(
            conditions::find(&ok.conditions, "Verified")
                .unwrap()
                .is_true()
        );
        assert_eq!(ok.last_verified_time.as_deref(), Some("t1"));
        let revoked = desired_status(
            Some(&ok),
            Some(2),
            &KeyCheck::Usable(KeyKind::Individual),
            Some(Err(("ApiRefused", "401".into()))),
            "t2",
        );
        let v = conditions::find(&revoked.conditions, "Verified").unwrap();
        assert_eq!(
            (v.status.as_str(), v.reason.as_str()),
            ("False", "ApiRefused")
        );
        assert!(
            conditions::find(&revoked.conditions, "Ready")
                .unwrap()
                .is_true()
        );
        let scope = crate::asc::api::ApiError::TokenScopeRefused {
            scope: "GET /v1/apps".into(),
            asc_message: None,
        };
        assert_eq!(refusal_reason(&scope), "TokenScopeRefused");
        assert_eq!(
            refusal_reason(&crate::asc::api::ApiError::Unauthorized { asc_message: None }),
            "ApiRefused"
        );
    }

    #[test]
    fn verification_runs_when_never_done_or_stale() {
        let now = jiff::Timestamp::now();
        let hour = Duration::from_secs(3600);
        assert!(verification_due(None, Some(1), hour, now));
        let fresh = desired_status(
            None,
            Some(1),
            &KeyCheck::Usable(KeyKind::Team),
            Some(Ok(())),
            &crate::time::format_ts(now),
        );
        assert!(!verification_due(Some(&fresh), Some(1), hour, now));
        assert!(
            verification_due(Some(&fresh), Some(2), hour, now),
            "a spec change re-verifies"
        );
        let later = now
            .checked_add(jiff::SignedDuration::from_secs(3601))
            .unwrap();
        assert!(verification_due(Some(&fresh), Some(1), hour, later));
    }
}
