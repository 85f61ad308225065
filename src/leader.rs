//! Leader election through a `coordination.k8s.io` Lease (the `kube-lease-manager` crate, which renews
//! with server-side apply and tolerates clock skew). Only the leader runs controllers; every replica
//! keeps receiving webhooks, so losing the leader never loses an event.

use kube::Client;
use kube_lease_manager::{LeaseManagerBuilder, LeaseManagerError};
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

/// Runs `work(stop)` each time this replica becomes leader; `stop` is cancelled when leadership is lost or
/// `shutdown` fires. Returns after `shutdown`, releasing the lease so another replica takes over at once.
pub async fn run_while_leader<F>(
    client: Client,
    settings: LeaseSettings,
    shutdown: CancellationToken,
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
        .with_field_manager(crate::resources::FIELD_MANAGER)
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
        tracing::info!(identity = %settings.identity, lease = %settings.name, "became leader; starting controllers");
        let stop = shutdown.child_token();
        let mut running = tokio::spawn(work(stop.clone()));
        let mut finished = false;
        loop {
            tokio::select! {
                changed = leading.changed() => {
                    if changed.is_err() || !*leading.borrow_and_update() {
                        tracing::warn!(identity = %settings.identity, "lost leadership; stopping controllers");
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
            let _ = running.await;
        }
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
