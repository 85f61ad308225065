//! Leader election through a `coordination.k8s.io` Lease (the `kube-lease-manager` crate, which renews
//! with server-side apply and tolerates clock skew). Only the leader runs controllers; every replica
//! keeps receiving webhooks, so losing the leader never loses an event.
//!
//! Fencing: each replica applies the Lease under its own field manager, so two replicas taking a
//! released Lease at once conflict (409) and one loses; with one shared manager server-side apply lets
//! both writes through and both believe they lead. A replica that loses the Lease stops its controllers
//! within the renew deadline (the lease's grace) or, as controller-runtime does, exits: a former leader
//! still reconciling would run side effects twice. The same holds when the renewal itself fails (the
//! API server down or out of reach): the Lease lapses a grace later whether or not this replica hears
//! about it, so it steps down then and there.

use kube::Client;
use kube_lease_manager::{LeaseManager, LeaseManagerBuilder, LeaseManagerError};
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

/// What this replica knows of the Lease, as its election task reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Lease {
    /// Another replica holds it (or nobody does yet).
    Following,
    /// This replica holds it and renews it.
    Leading,
    /// This replica held it and its renewal failed: the Lease runs out within the grace, and another
    /// replica that can reach the API server may take it then.
    RenewFailed,
}

/// How one manager's part of the election ended.
enum Ended {
    /// Shutdown: the Lease was released.
    Shutdown,
    /// A renewal failed while leading; the term was stopped, and a fresh manager joins the election.
    RenewFailed,
}

/// Longest wait between attempts to join the election again while the API server cannot be reached.
const REJOIN_MAX_DELAY: std::time::Duration = std::time::Duration::from_secs(10);

/// Runs `work(stop)` each time this replica becomes leader; `stop` is cancelled when leadership is lost or
/// `shutdown` fires. Returns after `shutdown`, releasing the lease so another replica takes over at once.
/// `leading` is 1 while `work` runs.
///
/// A leader whose renewal fails (the API server down or unreachable) steps down at once instead of
/// believing it leads until a renewal goes through: the Lease lapses a grace period later, and another
/// replica may lead from then on. The manager that failed knows no more than that, so a fresh one joins
/// the election once the API server answers again (and leads again if the Lease is still this replica's).
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
    // A first failure is the configuration's (no RBAC for Leases, say): reported, not retried.
    let mut manager = Some(build(&client, &settings, grace).await?);
    loop {
        let m = match manager.take() {
            Some(m) => m,
            None => match rejoin(&client, &settings, grace, &shutdown).await {
                Some(m) => m,
                None => break,
            },
        };
        let ended = elect(m, &settings, &shutdown, grace, &leading_gauge, &work).await;
        if matches!(ended, Ended::Shutdown) || shutdown.is_cancelled() {
            break;
        }
    }
    Ok(())
}

async fn build(
    client: &Client,
    settings: &LeaseSettings,
    grace: u64,
) -> Result<LeaseManager, LeaderError> {
    LeaseManagerBuilder::new(client.clone(), &settings.name)
        .with_namespace(&settings.namespace)
        .with_identity(&settings.identity)
        .with_duration(settings.duration_seconds)
        .with_grace(grace)
        .with_field_manager(field_manager(&settings.identity))
        .build()
        .await
        .map_err(LeaderError)
}

/// A fresh manager once the API server answers again; `None` on shutdown.
async fn rejoin(
    client: &Client,
    settings: &LeaseSettings,
    grace: u64,
    shutdown: &CancellationToken,
) -> Option<LeaseManager> {
    let mut delay = std::time::Duration::from_secs(1);
    loop {
        tokio::select! {
            built = build(client, settings, grace) => match built {
                Ok(m) => return Some(m),
                Err(e) => tracing::warn!(error = %e, retry_in = ?delay, "cannot rejoin the leader election yet"),
            },
            () = shutdown.cancelled() => return None,
        }
        tokio::select! {
            () = tokio::time::sleep(delay) => {}
            () = shutdown.cancelled() => return None,
        }
        delay = (delay * 2).min(REJOIN_MAX_DELAY);
    }
}

/// Follows the Lease with `manager` and reports what it finds, failed renewals included (the manager's
/// own `watch` retries those silently, so its holder would go on believing it leads). Ends, releasing
/// the Lease, when the receiver is dropped; ends without it after a failed renewal.
async fn follow(manager: LeaseManager, report: tokio::sync::watch::Sender<Lease>) {
    let mut delay = std::time::Duration::from_secs(1);
    loop {
        tokio::select! {
            biased;
            () = report.closed() => {
                if let Err(e) = manager.release().await {
                    tracing::warn!(error = %e, "could not release the lease");
                } else {
                    tracing::info!("lease released");
                }
                return;
            }
            changed = manager.changed() => match changed {
                Ok(leads) => {
                    delay = std::time::Duration::from_secs(1);
                    report.send_replace(if leads { Lease::Leading } else { Lease::Following });
                }
                Err(e) if *report.borrow() == Lease::Leading => {
                    tracing::warn!(error = %e, "could not renew the lease");
                    report.send_replace(Lease::RenewFailed);
                    return;
                }
                Err(e) => {
                    tracing::debug!(error = %e, retry_in = ?delay, "could not read the lease");
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(REJOIN_MAX_DELAY);
                }
            },
        }
    }
}

/// One manager's part of the election: wait to lead, lead, repeat, until shutdown or a failed renewal.
async fn elect(
    manager: LeaseManager,
    settings: &LeaseSettings,
    shutdown: &CancellationToken,
    grace: u64,
    leading_gauge: &Gauge,
    work: &impl Fn(CancellationToken) -> Work,
) -> Ended {
    let (report, mut lease) = tokio::sync::watch::channel(Lease::Following);
    let task = tokio::spawn(follow(manager, report));
    let ended = loop {
        // Wait to lead (or to be told to stop).
        let mut state = *lease.borrow_and_update();
        while state == Lease::Following {
            tokio::select! {
                changed = lease.changed() => if changed.is_err() { break },
                () = shutdown.cancelled() => break,
            }
            state = *lease.borrow_and_update();
        }
        if shutdown.is_cancelled() {
            break Ended::Shutdown;
        }
        if state != Lease::Leading {
            break Ended::RenewFailed;
        }
        lead_once(&mut lease, settings, shutdown, grace, leading_gauge, work).await;
        if shutdown.is_cancelled() {
            break Ended::Shutdown;
        }
        if *lease.borrow() == Lease::RenewFailed {
            break Ended::RenewFailed;
        }
    };
    drop(lease);
    if let Err(e) = task.await {
        tracing::warn!(error = %e, "lease task failed");
    }
    ended
}

/// One term as leader: runs `work` until leadership is lost, `shutdown` fires or `work` ends, then
/// stops it (within the grace when leadership was lost). Apart from `elect` so the election loop reads
/// as wait, lead, repeat.
async fn lead_once(
    lease: &mut tokio::sync::watch::Receiver<Lease>,
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
            changed = lease.changed() => {
                let now = *lease.borrow_and_update();
                if changed.is_err() || now != Lease::Leading {
                    if now == Lease::RenewFailed {
                        tracing::warn!(identity = %settings.identity, "could not renew the lease; stepping down before it runs out");
                    } else {
                        tracing::warn!(identity = %settings.identity, "lost leadership; stopping controllers");
                    }
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
