//! Leader election through a `coordination.k8s.io` Lease (the `kube-lease-manager` crate, which renews
//! with server-side apply and tolerates clock skew). Only the leader runs controllers; every replica
//! keeps receiving webhooks, so losing the leader never loses an event.
//!
//! Fencing: each replica applies the Lease under its own field manager, so two replicas taking a
//! released Lease at once conflict (409) and one loses; with one shared manager server-side apply lets
//! both writes through and both believe they lead. A replica that loses the Lease stops its controllers
//! within the renew deadline (the lease's grace) or, as controller-runtime does, exits: a former leader
//! still reconciling would run side effects twice.

use kube::Client;
use kube_lease_manager::{LeaseManagerBuilder, LeaseManagerError};
use prometheus_client::metrics::gauge::Gauge;
use std::future::Future;
use std::pin::Pin;
use tokio_util::sync::CancellationToken;

/// Lease settings.
#[derive(Debug, Clone)]
pub struct LeaseSettings {
    /// Lease name.
    pub name: String,
    /// Lease namespace.
    pub namespace: String,
    /// This replica's identity.
    pub identity: String,
    /// Seconds the lease stays valid without renewal.
    pub duration_seconds: u64,
}

/// Why leader election could not start.
#[derive(Debug, thiserror::Error)]
#[error("leader election failed: {0}")]
pub struct LeaderError(#[source] LeaseManagerError);

type Work = Pin<Box<dyn Future<Output = ()> + Send>>;

/// The Lease field manager of the replica `identity` (at most 128 characters, the API server's limit).
pub fn field_manager(identity: &str) -> String {
    let mut name = format!(
        "{}-lease-{identity}",
        crate::resources::names::FIELD_MANAGER
    );
    if name.len() > 128 {
        let mut end = 128;
        while !name.is_char_boundary(end) {
            end -= 1;
        }
        name.truncate(end);
    }
    name
}

/// Runs `work(stop)` each time this replica becomes leader; `stop` is cancelled when leadership is lost or
/// `shutdown` fires. Returns after `shutdown`, releasing the lease so another replica takes over at once.
/// `leading` is 1 while `work` runs.
pub async fn run_while_leader<F>(
    client: Client,
    settings: LeaseSettings,
    shutdown: CancellationToken,
    leading_gauge: Gauge,
    work: F,
) -> Result<(), LeaderError>
where
    F: Fn(CancellationToken) -> Work,
{
    let grace = (settings.duration_seconds / 3).max(1);
    let manager = LeaseManagerBuilder::new(client, &settings.name)
        .with_namespace(&settings.namespace)
        .with_identity(&settings.identity)
        .with_duration(settings.duration_seconds)
        .with_grace(grace)
        .with_field_manager(field_manager(&settings.identity))
        .build()
        .await
        .map_err(LeaderError)?;
    let (mut leading, task) = manager.watch().await;
    loop {
        // Wait to lead (or to be told to stop).
        while !*leading.borrow_and_update() {
            tokio::select! {
                changed = leading.changed() => if changed.is_err() { break },
                _ = shutdown.cancelled() => break,
            }
        }
        if shutdown.is_cancelled() {
            break;
        }
        lead_once(
            &mut leading,
            &settings,
            &shutdown,
            grace,
            &leading_gauge,
            &work,
        )
        .await;
        if shutdown.is_cancelled() {
            break;
        }
    }
    drop(leading);
    match task.await {
        Ok(Ok(_)) => tracing::info!("lease released"),
        Ok(Err(e)) => tracing::warn!(error = %e, "could not release the lease"),
        Err(e) => tracing::warn!(error = %e, "lease task failed"),
    }
    Ok(())
}

/// One term as leader: runs `work` until leadership is lost, `shutdown` fires or `work` ends, then
/// stops it (within the grace when leadership was lost). Apart from `run_while_leader` so the election
/// loop reads as wait, lead, repeat.
async fn lead_once(
    leading: &mut tokio::sync::watch::Receiver<bool>,
    settings: &LeaseSettings,
    shutdown: &CancellationToken,
    grace: u64,
    leading_gauge: &Gauge,
    work: &impl Fn(CancellationToken) -> Work,
) {
    tracing::info!(identity = %settings.identity, lease = %settings.name, "became leader; starting controllers");
    let stop = shutdown.child_token();
    let mut running = tokio::spawn(work(stop.clone()));
    leading_gauge.set(1);
    let mut finished = false;
    let mut lost = false;
    loop {
        tokio::select! {
            changed = leading.changed() => {
                if changed.is_err() || !*leading.borrow_and_update() {
                    tracing::warn!(identity = %settings.identity, "lost leadership; stopping controllers");
                    lost = true;
                    break;
                }
            }
            _ = shutdown.cancelled() => break,
            _ = &mut running => {
                finished = true;
                break;
            }
        }
    }
    stop.cancel();
    // A JoinHandle must not be polled again once it has completed.
    if !finished {
        if lost {
            // Another replica may already lead: stop before it starts its own side effects.
            let deadline = std::time::Duration::from_secs(grace);
            if tokio::time::timeout(deadline, &mut running).await.is_err() {
                tracing::error!(identity = %settings.identity, deadline = ?deadline, "controllers did not stop within the renew deadline after losing leadership; exiting so that only the leader acts");
                std::process::exit(1);
            }
        } else {
            let _ = running.await;
        }
    }
    leading_gauge.set(0);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_replica_has_its_own_field_manager_within_the_length_limit() {
        assert_eq!(field_manager("pod-a"), "asc-webhook-operator-lease-pod-a");
        assert_ne!(field_manager("pod-a"), field_manager("pod-b"));
        assert_eq!(field_manager(&"é".repeat(100)).len(), 127);
    }
}
