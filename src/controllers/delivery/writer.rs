//! The status writes of one pass, each conditional on the version the pass last read or wrote.

use crate::controllers::context::Context;
use crate::controllers::{Error, status};
use crate::resources::WebhookDelivery;
use crate::resources::delivery::{ActionState, Phase, WebhookDeliveryStatus};
use crate::resources::route::Rule;
use kube::{Api, ResourceExt};

/// Status writes of one pass, each conditional on the version the pass last read or wrote.
pub struct Writer<'a> {
    api: Api<WebhookDelivery>,
    name: String,
    resource_version: Option<String>,
    written: WebhookDeliveryStatus,
    ctx: &'a Context,
    delivery: &'a WebhookDelivery,
}

impl<'a> Writer<'a> {
    /// The writer of a pass over `delivery` as read, whose status was `written`.
    pub fn new(
        ctx: &'a Context,
        delivery: &'a WebhookDelivery,
        written: WebhookDeliveryStatus,
    ) -> Self {
        Writer {
            api: deliveries(ctx, delivery),
            name: delivery.name_any(),
            resource_version: delivery.resource_version(),
            written,
            ctx,
            delivery,
        }
    }

    /// Writes `st` if it differs from what is stored. `Ok(false)`: the object changed underneath.
    pub async fn save(&mut self, st: &WebhookDeliveryStatus) -> Result<bool, Error> {
        if *st == self.written {
            return Ok(true);
        }
        let applied =
            status::apply_if_unchanged(&self.api, &self.name, self.resource_version.as_deref(), st)
                .await
                .map_err(Error::Kube)?;
        let Some(obj) = applied else {
            return Ok(false);
        };
        self.ctx
            .copies
            .wrote(self.resource_version.as_deref(), &obj);
        self.resource_version = obj.resource_version();
        if st.phase == Phase::Failed && self.written.phase != Phase::Failed {
            let why = st
                .message
                .clone()
                .unwrap_or_else(|| "an action failed".into());
            self.ctx
                .event(self.delivery, true, "DeliveryFailed", why)
                .await;
        }
        self.written = st.clone();
        Ok(true)
    }
}

/// Writes an HTTP attempt's outcome. Should the write lose to a newer version (nothing but this pass
/// should write while an attempt is in flight, but a status edit by a person can), the outcome is carried
/// over to a fresh read of the delivery rather than dropped.
pub async fn save_outcome(
    ctx: &Context,
    w: &mut Writer<'_>,
    st: &mut WebhookDeliveryStatus,
    rule: &Rule,
) -> Result<bool, Error> {
    if w.save(st).await? {
        return Ok(true);
    }
    let Some(outcome) = st.actions.iter().find(|a| a.rule == rule.name).cloned() else {
        return Ok(false);
    };
    let Some(fresh) = w.api.get_opt(&w.name).await.map_err(Error::Kube)? else {
        return Ok(false);
    };
    ctx.copies.read(&fresh);
    let mut fresh_st = fresh.status.clone().unwrap_or_default();
    match fresh_st.actions.iter_mut().find(|a| a.rule == rule.name) {
        Some(a) if a.state == ActionState::InFlight && a.attempts == outcome.attempts => {
            *a = outcome;
        }
        _ => return Ok(false),
    }
    ctx.metrics.stale_writes.inc();
    w.resource_version = fresh.resource_version();
    w.written = fresh.status.unwrap_or_default();
    *st = fresh_st;
    w.save(st).await
}

/// The deliveries of `d`'s namespace.
pub fn deliveries(ctx: &Context, d: &WebhookDelivery) -> Api<WebhookDelivery> {
    Api::namespaced(ctx.client.clone(), &d.namespace().unwrap_or_default())
}
