//! `asc-webhook-operator run`: starts the receiver on every replica and the controllers on the leader,
//! then waits for SIGTERM and shuts down gracefully.

use crate::asc::api::AscClientOptions;
use crate::asc::origins::AllowedOrigins;
use crate::cli::RunArgs;
use crate::controllers::impersonation::ActionClients;
use crate::controllers::{self, Process, Settings};
use crate::leader::{self, LeaseSettings};
use crate::metrics::Metrics;
use crate::receiver::admin::{self, Readiness};
use crate::receiver::handoff::Handoff;
use crate::receiver::kube_backend::{KubeDeliveries, KubeSecrets};
use crate::receiver::serve::ServeLimits;
use crate::receiver::store::DeliveryStore;
use crate::receiver::{Receiver, ReceiverConfig};
use kube::Client;
use prometheus_client::metrics::gauge::Gauge;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// Why the operator stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// No kubeconfig or in-cluster configuration.
    #[error("cannot configure the Kubernetes client: {0}")]
    Client(#[source] kube::Error),
    /// A listener could not bind.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: std::net::SocketAddr,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The controllers' HTTP client could not be built.
    #[error("cannot build the HTTP client: {0}")]
    HttpClient(#[source] reqwest::Error),
    /// Leader election could not start.
    #[error(transparent)]
    Leader(#[from] leader::LeaderError),
    /// A server failed.
    #[error("server error: {0}")]
    Serve(#[source] std::io::Error),
    /// Settings that contradict each other.
    #[error("invalid settings: {0}")]
    Settings(String),
}

impl From<&RunArgs> for ReceiverConfig {
    fn from(a: &RunArgs) -> Self {
        ReceiverConfig {
            max_body_bytes: a.max_body_bytes,
            max_inflight_body_bytes: a.max_inflight_body_bytes,
            max_object_bytes: a.max_object_bytes,
            body_timeout: a.body_timeout,
            secret_cache_ttl: a.secret_cache_ttl,
            failed_signatures_per_minute: a.failed_signatures_per_minute,
            secret_rotation_grace: a.secret_rotation_grace,
        }
    }
}

impl From<&RunArgs> for Settings {
    fn from(a: &RunArgs) -> Self {
        Settings {
            public_url: a.public_url.clone(),
            max_attempts: a.max_attempts.max(1),
            retry_base_delay: a.retry_base_delay,
            retry_max_delay: a.retry_max_delay,
            recheck_interval: a.recheck_interval,
            secret_recheck_interval: a.secret_recheck_interval,
            max_concurrent_reconciles: a.max_concurrent_reconciles.max(1),
            webhook_resync_interval: a.webhook_resync_interval.max(Duration::from_secs(1)),
            webhook_verify_timeout: a.webhook_verify_timeout,
            webhook_ping_resend_after: a.webhook_ping_resend_after,
            webhook_ping_resends: a.webhook_ping_resends,
            webhook_release_timeout: a.webhook_release_timeout,
            catch_up_lookback: a.catch_up_lookback,
            asc: AscClientOptions {
                request_timeout: a.asc_api_timeout,
                max_attempts: a.asc_api_max_attempts.max(1),
                base_delay: a.asc_api_retry_base_delay,
                scoped_tokens: a.asc_token_scope.is_on(),
                ..AscClientOptions::default()
            },
            asc_origins: AllowedOrigins::new(a.asc_api_origins.iter().cloned()),
            http_deny: a.http_action_deny_cidrs.clone().with_addresses(&a.pod_ips),
            default_service_account: a
                .default_service_account
                .clone()
                .filter(|s| !s.trim().is_empty()),
            secret_access: a.secret_access,
            secret_watch_selector: a.secret_watch_selector.trim().to_owned(),
        }
    }
}
/// Runs until SIGTERM/SIGINT.
pub async fn run(args: RunArgs) -> Result<(), RunError> {
    let config = kube::Config::infer()
        .await
        .map_err(|e| RunError::Client(kube::Error::InferConfig(e)))?;
    let public = TcpListener::bind(args.listen_addr)
        .await
        .map_err(|source| RunError::Bind {
            addr: args.listen_addr,
            source,
        })?;
    let admin = TcpListener::bind(args.admin_addr)
        .await
        .map_err(|source| RunError::Bind {
            addr: args.admin_addr,
            source,
        })?;
    let shutdown = CancellationToken::new();
    tokio::spawn(forward_signals(shutdown.clone()));
    run_with(config, args, Listeners { public, admin }, shutdown).await
}

/// Already-bound listeners (tests bind port 0 and read the port back).
pub struct Listeners {
    /// The public listener (webhooks).
    pub public: TcpListener,
    /// The admin listener (health, metrics).
    pub admin: TcpListener,
}

/// Runs against the API server of `config` until `shutdown` is cancelled.
pub async fn run_with(
    config: kube::Config,
    args: RunArgs,
    listeners: Listeners,
    shutdown: CancellationToken,
) -> Result<(), RunError> {
    check_settings(&args)?;
    // Each client says who it is, so the API server's audit log and request counts tell the receiver's
    // writes from the controllers'.
    let mut config = config;
    config.headers.push(user_agent("controllers"));
    let pool = crate::api_client::Pool {
        max_idle: args.api_max_idle_connections,
        idle_timeout: args.api_idle_connection_timeout,
    };
    let client = crate::api_client::client(config.clone(), pool).map_err(RunError::Client)?;
    let receiver_client = receiver_client(&config, pool)?;
    let metrics = Metrics::new();
    let readiness = Readiness::default();

    let routes = crate::receiver::route_watch::start_route_table(
        &client,
        args.namespace.as_deref(),
        &readiness,
        &metrics,
        &shutdown,
    );

    // What the receiver and catch-up store, the delivery controller starts from without reading it back.
    let handoff = Handoff::default();
    let receiver = Receiver::new(
        routes.clone(),
        Arc::new(KubeSecrets::new(receiver_client.clone())),
        Arc::new(KubeDeliveries::new(receiver_client).with_handoff(handoff.clone())),
        ReceiverConfig::from(&args),
        metrics.clone(),
    );
    tokio::spawn(housekeeping(receiver.clone(), shutdown.clone()));

    let Listeners { public, admin } = listeners;
    tracing::info!(public = ?public.local_addr().ok(), admin = ?admin.local_addr().ok(), "listening");

    let public_server = crate::receiver::serve::serve(
        public,
        receiver.router(),
        ServeLimits {
            max_connections: args.max_connections,
            header_read_timeout: args.header_read_timeout,
            keep_alive_timeout: args.keep_alive_timeout,
        },
        metrics.clone(),
        shutdown.clone(),
    );
    let admin_server = axum::serve(admin, admin::router(metrics.clone(), readiness.clone()))
        .with_graceful_shutdown(shutdown.clone().cancelled_owned());
    let identity = replica_identity(&args);
    let process = controller_process(
        &client, &config, &metrics, &args, &identity, &readiness, &handoff,
    )?
    .with_secret_observations(receiver.secret_observations());
    let process = Arc::new(process);
    let leader_gauge = metrics
        .leader
        .get_or_create_owned(&crate::state_metrics::ReplicaLabels {
            replica: identity.clone(),
        });
    let controllers = run_controllers(process, client, args, identity, leader_gauge, shutdown);
    let ((), a, c) = tokio::join!(public_server, admin_server.into_future(), controllers);
    a.map_err(RunError::Serve)?;
    c?;
    tracing::info!("stopped");
    Ok(())
}

/// The receiver's own client: apart from `run_with` because its settings differ from the controllers'
/// on purpose (no retries, a short read timeout, its own user agent).
fn receiver_client(
    config: &kube::Config,
    pool: crate::api_client::Pool,
) -> Result<Client, RunError> {
    // The receiver answers Apple within seconds: it must not sit in the client's own retry loop while
    // the API server is down, but say 503 and let Apple (or `send`) come back.
    let mut receiver_config = config.clone();
    receiver_config.default_retry = false;
    receiver_config
        .headers
        .retain(|(name, _)| name != http::header::USER_AGENT);
    receiver_config.headers.push(user_agent("receiver"));
    receiver_config.read_timeout = Some(Duration::from_secs(5));
    crate::api_client::client(receiver_config, pool).map_err(RunError::Client)
}

/// This replica's name in the Lease and in Events: `--identity`, or the operator's name with a random
/// suffix so two replicas never share one.
fn replica_identity(args: &RunArgs) -> String {
    args.identity.clone().unwrap_or_else(|| {
        format!(
            "{}-{}",
            crate::resources::names::OPERATOR,
            hex::encode(rand::random::<[u8; 6]>())
        )
    })
}

/// What the controllers share for the whole process (each leadership term adds its own state), with the
/// Event reporter named after this replica and the deliveries this process stores handed over through
/// `handoff`; apart from `run_with` so the start-up sequence reads as steps.
fn controller_process(
    client: &Client,
    config: &kube::Config,
    metrics: &Metrics,
    args: &RunArgs,
    identity: &str,
    readiness: &Readiness,
    handoff: &Handoff,
) -> Result<Process, RunError> {
    let reporter = kube::runtime::events::Reporter {
        controller: crate::resources::names::OPERATOR.into(),
        instance: Some(identity.to_owned()),
    };
    Ok(Process::new(
        client.clone(),
        metrics.clone(),
        Settings::from(args),
        reporter,
        // Catch-up stores as the receiver does, handing what it stored over the same way.
        DeliveryStore::new(
            Arc::new(KubeDeliveries::new(client.clone()).with_handoff(handoff.clone())),
            ReceiverConfig::from(args).record_limits(),
        ),
    )
    .map_err(RunError::HttpClient)?
    .with_handoff(handoff.clone())
    .with_action_clients(ActionClients::from_config(client.clone(), config.clone()))
    .with_ready_again(readiness.recoveries()))
}

/// Every minute, forgets the receiver's quiet routes; when work has stopped, hands freed memory back.
async fn housekeeping(receiver: Arc<Receiver>, shutdown: CancellationToken) {
    let mut tick = tokio::time::interval(Duration::from_secs(60));
    let mut quiet_check = tokio::time::interval(crate::memory::QUIET_CHECK);
    let mut trims =
        crate::memory::TrimSchedule::new(crate::memory::work_done(), std::time::Instant::now());
    loop {
        tokio::select! {
            _ = tick.tick() => receiver.forget_quiet_routes(),
            _ = quiet_check.tick() => {
                if trims.due(crate::memory::work_done(), std::time::Instant::now()) {
                    crate::memory::release_free_memory();
                }
            }
            _ = shutdown.cancelled() => break,
        }
    }
}

/// The controllers: while this replica holds the Lease (with leader election), else until shutdown.
async fn run_controllers(
    process: Arc<Process>,
    client: Client,
    args: RunArgs,
    identity: String,
    leader_gauge: Gauge,
    shutdown: CancellationToken,
) -> Result<(), RunError> {
    let namespace = args.namespace.clone();
    if args.leader_election {
        let settings = LeaseSettings {
            name: args.lease_name.clone(),
            namespace: args.lease_namespace.clone(),
            identity,
            duration_seconds: args.lease_duration_seconds.max(2),
        };
        leader::run_while_leader(client, settings, shutdown, leader_gauge, move |stop| {
            Box::pin(controllers::run(
                process.clone(),
                namespace.clone(),
                stop.cancelled_owned(),
            ))
        })
        .await?;
    } else {
        leader_gauge.set(1);
        controllers::run(process, namespace, shutdown.cancelled_owned()).await;
        leader_gauge.set(0);
    }
    Ok(())
}

/// The `User-Agent` of the client of `part` (`asc-webhook-operator/<version> (receiver)`).
fn user_agent(part: &str) -> (http::HeaderName, http::HeaderValue) {
    let value = format!("{} ({part})", crate::resources::names::USER_AGENT);
    (
        http::header::USER_AGENT,
        http::HeaderValue::from_str(&value).unwrap_or(http::HeaderValue::from_static(
            crate::resources::names::USER_AGENT,
        )),
    )
}

/// Limits that cannot work together are refused at start, not discovered on the first request.
fn check_settings(a: &RunArgs) -> Result<(), RunError> {
    let budget = crate::receiver::budget::BodyBudget::new(a.max_inflight_body_bytes);
    if a.max_body_bytes > budget.largest_reservation() {
        return Err(RunError::Settings(format!(
            "--max-inflight-body-bytes ({}) leaves {} bytes for large bodies, less than --max-body-bytes ({}); a body that large could never be received",
            a.max_inflight_body_bytes,
            budget.largest_reservation(),
            a.max_body_bytes
        )));
    }
    if a.max_object_bytes <= crate::receiver::record::STORE_HEADROOM_BYTES {
        return Err(RunError::Settings(format!(
            "--max-object-bytes ({}) must be larger than {} bytes",
            a.max_object_bytes,
            crate::receiver::record::STORE_HEADROOM_BYTES
        )));
    }
    Ok(())
}

async fn forward_signals(shutdown: CancellationToken) {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(e) => {
                tracing::error!(error = %e, "cannot listen for SIGTERM");
                std::future::pending::<()>().await
            }
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
    tracing::info!("shutting down: no new requests, finishing those in flight");
    shutdown.cancel();
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::{Cli, Command};
    use clap::Parser;

    fn args(extra: &[&str]) -> RunArgs {
        let argv = ["asc-webhook-operator", "run"].iter().chain(extra).copied();
        match Cli::try_parse_from(argv).unwrap().command {
            Command::Run(a) => *a,
            _ => unreachable!(),
        }
    }

    #[test]
    fn limits_that_cannot_work_together_are_refused_at_start() {
        assert!(check_settings(&args(&[])).is_ok());
        let err = check_settings(&args(&[
            "--max-body-bytes",
            "1048576",
            "--max-inflight-body-bytes",
            "1048576",
        ]))
        .unwrap_err()
        .to_string();
        assert!(err.contains("--max-body-bytes"), "{err}");
        assert!(check_settings(&args(&["--max-object-bytes", "1000"])).is_err());
    }
}
