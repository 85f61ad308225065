//! The command line: `run`, `crds`, `send`, `replay` and `doctor`. Every setting is a flag with an `ASC_*` environment fallback;
//! nothing else in the crate reads the environment.

use clap::{Args, Parser, Subcommand, ValueEnum};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

/// App Store Connect webhooks in, Kubernetes Jobs and HTTP calls out.
#[derive(Debug, Parser)]
#[command(
    name = "asc-webhook-operator",
    version,
    about,
    propagate_version = true
)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the operator: the webhook receiver on every replica, the controllers on the leader.
    Run(Box<RunArgs>),
    /// Print the CustomResourceDefinitions as multi-document YAML (or write one file each).
    Crds(CrdsArgs),
    /// Sign an event body as App Store Connect does and POST it to a route, to test it without Apple.
    Send(SendArgs),
    /// Run a delivery's matching rules once more (sets its `asc.webhooks.dev/replay` annotation with
    /// your kubeconfig's identity; needs get and patch on webhookdeliveries).
    Replay(ReplayArgs),
    /// Check a route's App Store Connect setup with your kubeconfig: mints its token and makes each call
    /// the operator makes for it (read-only), one line per call; exits non-zero on any refusal.
    Doctor(DoctorArgs),
}

/// Settings of `doctor`.
#[derive(Debug, Clone, Args)]
pub struct DoctorArgs {
    /// Namespace of the route.
    #[arg(
        short = 'n',
        long,
        env = "ASC_DOCTOR_NAMESPACE",
        default_value = "default"
    )]
    pub namespace: String,
    /// Name of the `WebhookRoute`.
    pub route: String,
    /// Scoped tokens, as the operator runs with (`run --asc-token-scope`).
    #[arg(long, env = "ASC_TOKEN_SCOPE", value_enum, default_value = "on")]
    pub asc_token_scope: Switch,
    /// Origins a credential may name as `apiUrl`, as the operator runs with (`run --asc-api-origins`).
    #[arg(long, env = "ASC_API_ORIGINS", value_delimiter = ',', default_value = crate::resources::names::DEFAULT_API_URL, value_parser = crate::asc::origins::parse_origin)]
    pub asc_api_origins: Vec<String>,
    /// The first catch-up pass's lookback, as the operator runs with (`run --catch-up-lookback`).
    #[arg(long, env = "ASC_CATCH_UP_LOOKBACK", default_value = "24h", value_parser = parse_duration)]
    pub catch_up_lookback: Duration,
}

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line, for log pipelines.
    Json,
}

/// A setting that is on or off (`on`/`off` on the command line and in the environment).
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Switch {
    /// Enabled.
    On,
    /// Disabled.
    Off,
}

impl Switch {
    /// Whether it is on.
    pub fn is_on(self) -> bool {
        self == Switch::On
    }
}

/// How the leader learns that a Secret a route or credential names changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum SecretAccess {
    /// Watch Secret metadata (name and `resourceVersion`, never values) in the watched namespaces, and
    /// read a named Secret by name when it changes: status follows within seconds, an idle route costs
    /// nothing. Needs `get`, `list` and `watch` on Secrets.
    Watch,
    /// Only read Secrets by name (`get`): a change is seen on the re-checks, at once when this replica's
    /// receiver finds a Secret missing or changed, and on the `asc.webhooks.dev/reconcile-requested-at`
    /// annotation.
    Get,
}

/// Settings of `run`.
#[derive(Debug, Clone, Args)]
pub struct RunArgs {
    /// Address of the public listener that App Store Connect posts to (`POST /hooks/{namespace}/{route}`).
    #[arg(long, env = "ASC_LISTEN_ADDR", default_value = "0.0.0.0:8080")]
    pub listen_addr: SocketAddr,
    /// Address of the admin listener: `/healthz`, `/readyz`, `/metrics`. Keep it off the Ingress.
    #[arg(long, env = "ASC_ADMIN_ADDR", default_value = "0.0.0.0:9090")]
    pub admin_addr: SocketAddr,
    /// The externally reachable base URL of the public listener (e.g. `https://asc-hooks.example.com`);
    /// each route's `status.url` is this plus `/hooks/{namespace}/{route}`.
    #[arg(long, env = "ASC_PUBLIC_URL")]
    pub public_url: Option<String>,
    /// Watch only this namespace (default: all namespaces).
    #[arg(long, env = "ASC_NAMESPACE")]
    pub namespace: Option<String>,
    /// Largest accepted request body, in bytes; larger ones get 413. App Store Connect's are about 1 KiB.
    #[arg(long, env = "ASC_MAX_BODY_BYTES", default_value_t = 64 * 1024)]
    pub max_body_bytes: usize,
    /// Request-body bytes all connections together may be receiving at once. A request reserves its
    /// `Content-Length` (chunked: `--max-body-bytes`) before its body is read; without room it gets 503
    /// with `Retry-After`, unread. An eighth is kept for bodies up to 16 KiB. At least `--max-body-bytes`.
    #[arg(long, env = "ASC_MAX_INFLIGHT_BODY_BYTES", default_value_t = 8 * 1024 * 1024)]
    pub max_inflight_body_bytes: usize,
    /// Connections the public listener serves at once; more are closed as they arrive.
    #[arg(long, env = "ASC_MAX_CONNECTIONS", default_value_t = 1024)]
    pub max_connections: usize,
    /// Time allowed for a request's headers to arrive on the public listener, counted from its first
    /// bytes; slower connections are closed.
    #[arg(long, env = "ASC_HEADER_READ_TIMEOUT", default_value = "10s", value_parser = parse_duration)]
    pub header_read_timeout: Duration,
    /// How long an idle kept-alive connection on the public listener is kept for its next request.
    /// Longer than the idle time of whatever sends to the receiver (nginx and AWS load balancers: 60 s;
    /// a Google Cloud load balancer: 600 s, so raise this past it), so that the sender, not the
    /// receiver, closes an idle connection: a POST sent on a connection the receiver is closing at that
    /// moment is lost on the way.
    #[arg(long, env = "ASC_KEEP_ALIVE_TIMEOUT", default_value = "75s", value_parser = parse_duration)]
    pub keep_alive_timeout: Duration,
    /// Largest object the API server stores, in bytes (etcd's `--max-request-bytes`, 1.5 MiB by
    /// default). An event whose WebhookDelivery would be larger gets 413 before anything is written.
    #[arg(long, env = "ASC_MAX_OBJECT_BYTES", default_value_t = 1_572_864)]
    pub max_object_bytes: usize,
    /// Time allowed to receive a whole request body; slower ones get 408.
    #[arg(long, env = "ASC_BODY_TIMEOUT", default_value = "10s", value_parser = parse_duration)]
    pub body_timeout: Duration,
    /// How long a webhook secret read from its Secret is trusted before it is read again. A signature that
    /// fails against a secret older than one second triggers an early re-read, so rotations apply at once.
    #[arg(long, env = "ASC_SECRET_CACHE_TTL", default_value = "5s", value_parser = parse_duration)]
    pub secret_cache_ttl: Duration,
    /// Failed signatures allowed per route per minute before the route answers 429.
    #[arg(long, env = "ASC_FAILED_SIGNATURES_PER_MINUTE", default_value_t = 30)]
    pub failed_signatures_per_minute: u32,
    /// Attempts per delivery before a transiently failing delivery is marked `Failed`.
    #[arg(long, env = "ASC_MAX_ATTEMPTS", default_value_t = 8)]
    pub max_attempts: i32,
    /// First retry delay; it doubles per attempt (with jitter) up to `--retry-max-delay`.
    #[arg(long, env = "ASC_RETRY_BASE_DELAY", default_value = "2s", value_parser = parse_duration)]
    pub retry_base_delay: Duration,
    /// Longest delay between retries.
    #[arg(long, env = "ASC_RETRY_MAX_DELAY", default_value = "5m", value_parser = parse_duration)]
    pub retry_max_delay: Duration,
    /// How often routes that are not Ready and not-ready credentials are re-checked without a watched
    /// change (what no watch shows: a missing ServiceAccount, and Secrets with `--secret-access get`).
    #[arg(long, env = "ASC_RECHECK_INTERVAL", default_value = "30s", value_parser = parse_duration)]
    pub recheck_interval: Duration,
    /// How often a Ready route's Secrets (its webhook secret too, with `appStoreConnect`) are read again
    /// without a sign of change (jittered by ±20 % so 1,000 routes do not read together): the safety net
    /// behind the Secret watch, and with `--secret-access get` the time a change can take. A change of
    /// the route's spec or of its `asc.webhooks.dev/reconcile-requested-at` annotation re-reads at once.
    #[arg(long, env = "ASC_SECRET_RECHECK_INTERVAL", default_value = "1h", value_parser = parse_duration)]
    pub secret_recheck_interval: Duration,
    /// How the leader learns of changed Secrets: `watch` (a metadata-only watch of Secrets; needs list and
    /// watch on Secrets) or `get` (reads by name only: least privilege, slower to notice).
    #[arg(long, env = "ASC_SECRET_ACCESS", value_enum, default_value = "watch")]
    pub secret_access: SecretAccess,
    /// With `--secret-access watch`: a label selector narrowing the Secret watch (e.g.
    /// `asc.webhooks.dev/watch=true`); Secrets outside it are noticed on the re-checks only. Empty: every
    /// Secret of the watched namespaces.
    #[arg(long, env = "ASC_SECRET_WATCH_SELECTOR", default_value = "")]
    pub secret_watch_selector: String,
    /// Reconciles running at once, per controller (each holds API connections while it runs).
    #[arg(long, env = "ASC_MAX_CONCURRENT_RECONCILES", default_value_t = 8)]
    pub max_concurrent_reconciles: u16,
    /// Idle connections to the API server each client keeps for the next request; more are closed as
    /// their requests end, so a burst's connections are not held afterwards.
    #[arg(long, env = "ASC_API_MAX_IDLE_CONNECTIONS", default_value_t = 8)]
    pub api_max_idle_connections: usize,
    /// An idle connection to the API server is closed after this long unused.
    #[arg(long, env = "ASC_API_IDLE_CONNECTION_TIMEOUT", default_value = "30s", value_parser = parse_duration)]
    pub api_idle_connection_timeout: Duration,
    /// Per-request timeout of App Store Connect API calls.
    #[arg(long, env = "ASC_API_TIMEOUT", default_value = "15s", value_parser = parse_duration)]
    pub asc_api_timeout: Duration,
    /// Attempts per App Store Connect API call (429, 5xx and connection errors are retried).
    #[arg(long, env = "ASC_API_MAX_ATTEMPTS", default_value_t = 4)]
    pub asc_api_max_attempts: usize,
    /// First delay between App Store Connect API retries (doubles each time; `Retry-After` wins).
    #[arg(long, env = "ASC_API_RETRY_BASE_DELAY", default_value = "500ms", value_parser = parse_duration)]
    pub asc_api_retry_base_delay: Duration,
    /// Whether each App Store Connect GET carries a token scoped to that one request (Apple's optional
    /// `scope` claim, written as Apple documents it: `GET /v1/apps?filter[platform]=IOS`). `off` sends
    /// unscoped tokens (still five minutes long), for an account where Apple refuses the scope: routes
    /// then say `TokenScopeRefused`.
    #[arg(long, env = "ASC_TOKEN_SCOPE", value_enum, default_value = "on")]
    pub asc_token_scope: Switch,
    /// How often a registered App Store Connect webhook is read back to repair changes made in App Store
    /// Connect (per route up to 20 % sooner, so reads spread out). Between reads an unchanged route makes
    /// no App Store Connect call.
    #[arg(long, env = "ASC_WEBHOOK_RESYNC_INTERVAL", default_value = "30m", value_parser = parse_duration)]
    pub webhook_resync_interval: Duration,
    /// How long after a test ping `WebhookVerified` stays `Unknown` before it turns `False`.
    #[arg(long, env = "ASC_WEBHOOK_VERIFY_TIMEOUT", default_value = "5m", value_parser = parse_duration)]
    pub webhook_verify_timeout: Duration,
    /// How long after a test ping was requested, with none received, it is requested again; each later
    /// re-send waits twice as long (30s: at 30 s, 90 s, 210 s). Apple does not document retrying a
    /// delivery that failed, so a ping lost on the way (a connection closed under it, a 503) would
    /// otherwise leave `WebhookVerified` `Unknown` until the timeout. 0 turns re-sends off.
    #[arg(long, env = "ASC_WEBHOOK_PING_RESEND_AFTER", default_value = "30s", value_parser = parse_duration)]
    pub webhook_ping_resend_after: Duration,
    /// Re-sends of one test ping at most; none is made at or after `--webhook-verify-timeout`.
    #[arg(long, env = "ASC_WEBHOOK_PING_RESENDS", default_value_t = 3, value_parser = clap::value_parser!(i32).range(0..=10))]
    pub webhook_ping_resends: i32,
    /// How long a deleted route waits for its App Store Connect webhook to be deleted (credential gone,
    /// API refusing) before its finalizer is released anyway, so namespace deletion never hangs.
    #[arg(long, env = "ASC_WEBHOOK_RELEASE_TIMEOUT", default_value = "10m", value_parser = parse_duration)]
    pub webhook_release_timeout: Duration,
    /// How far back the first catch-up pass after registration reads App Store Connect's delivery log
    /// for events that failed to arrive.
    #[arg(long, env = "ASC_CATCH_UP_LOOKBACK", default_value = "24h", value_parser = parse_duration)]
    pub catch_up_lookback: Duration,
    /// After a webhook secret changes, how long the receiver still accepts signatures made with the
    /// previous one (deliveries already in flight were signed with it). Only for routes whose webhook the
    /// operator manages (`spec.appStoreConnect`); 0 turns it off.
    #[arg(long, env = "ASC_SECRET_ROTATION_GRACE", default_value = "10m", value_parser = parse_duration)]
    pub secret_rotation_grace: Duration,
    /// Origins (`scheme://host[:port]`, comma-separated) that `AscCredential`s may name as `apiUrl`. A
    /// credential pointing anywhere else is not Ready (`ApiUrlNotAllowed`) and no token is minted for it,
    /// so nobody can point `apiUrl` at their own host and collect tokens minted from someone else's key.
    #[arg(long, env = "ASC_API_ORIGINS", value_delimiter = ',', default_value = crate::resources::names::DEFAULT_API_URL, value_parser = crate::asc::origins::parse_origin)]
    pub asc_api_origins: Vec<String>,
    /// Networks HTTP actions may not connect to (comma-separated CIDRs or addresses), checked on the
    /// resolved address at connect time; `none` allows everything. The pod's own addresses
    /// (`--pod-ips`) are added to any list but `none`. Private ranges are allowed unless listed.
    #[arg(long, env = "ASC_HTTP_ACTION_DENY_CIDRS", default_value = crate::actions::egress::DEFAULT_DENY_CIDRS, value_parser = crate::actions::egress::parse_deny_cidrs)]
    pub http_action_deny_cidrs: crate::actions::egress::DenyList,
    /// This pod's own addresses (comma-separated; the chart passes the downward API's `status.podIPs`),
    /// so HTTP actions cannot call the operator's own ports through them.
    #[arg(long, env = "ASC_POD_IPS", value_delimiter = ',')]
    pub pod_ips: Vec<std::net::IpAddr>,
    /// ServiceAccount (in the route's namespace) the operator impersonates for routes that name none in
    /// `spec.serviceAccountName`. Unset: such routes act with the operator's own identity, which suits a
    /// cluster with one team; set it when several teams share the cluster.
    #[arg(long, env = "ASC_DEFAULT_SERVICE_ACCOUNT")]
    pub default_service_account: Option<String>,
    /// Elect a leader through a Lease so only one replica runs the controllers (every replica receives).
    #[arg(long, env = "ASC_LEADER_ELECTION", default_value_t = false)]
    pub leader_election: bool,
    /// Name of the Lease used for leader election.
    #[arg(long, env = "ASC_LEASE_NAME", default_value = crate::resources::names::OPERATOR)]
    pub lease_name: String,
    /// Namespace of the Lease (usually the operator's own, from the downward API).
    #[arg(long, env = "ASC_LEASE_NAMESPACE", default_value = "default")]
    pub lease_namespace: String,
    /// This replica's identity in the Lease (usually the pod name).
    #[arg(long, env = "ASC_IDENTITY")]
    pub identity: Option<String>,
    /// Seconds a leader's Lease stays valid without renewal.
    #[arg(long, env = "ASC_LEASE_DURATION_SECONDS", default_value_t = 15)]
    pub lease_duration_seconds: u64,
    /// Log format.
    #[arg(long, env = "ASC_LOG_FORMAT", value_enum, default_value = "text")]
    pub log_format: LogFormat,
    /// Log filter, in `tracing` EnvFilter syntax.
    #[arg(long, env = "ASC_LOG", default_value = "info")]
    pub log_filter: String,
}

/// Settings of `crds`.
#[derive(Debug, Clone, Args)]
pub struct CrdsArgs {
    /// Write one file per CRD into this directory instead of printing them.
    #[arg(long)]
    pub out_dir: Option<PathBuf>,
}

/// Settings of `send`.
#[derive(Debug, Clone, Args)]
pub struct SendArgs {
    /// The route's URL, e.g. `https://asc-hooks.example.com/hooks/ios/release`.
    #[arg(long, env = "ASC_SEND_URL")]
    pub url: String,
    /// File holding the webhook secret (trailing newline ignored).
    #[arg(long, env = "ASC_SEND_SECRET_FILE")]
    pub secret_file: PathBuf,
    /// JSON body to send, byte for byte.
    #[arg(long, conflicts_with = "example", required_unless_present = "example")]
    pub event: Option<PathBuf>,
    /// A built-in example event.
    #[arg(long, value_parser = clap::builder::PossibleValuesParser::new(crate::examples::NAMES))]
    pub example: Option<String>,
    /// Request timeout.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    pub timeout: Duration,
}

/// Settings of `replay`.
#[derive(Debug, Clone, Args)]
pub struct ReplayArgs {
    /// Namespace of the delivery.
    #[arg(
        short = 'n',
        long,
        env = "ASC_REPLAY_NAMESPACE",
        default_value = "default"
    )]
    pub namespace: String,
    /// Name of the `WebhookDelivery` (`kubectl get webhookdeliveries -n NAMESPACE`).
    pub delivery: String,
    /// The annotation value to set (default: the next integer after the replays so far). The value
    /// a replay already ran for runs nothing again.
    #[arg(long, env = "ASC_REPLAY_VALUE")]
    pub value: Option<String>,
}

/// Parses `500ms`, `10s`, `5m` or `1h`; a bare number means seconds.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: u64 = num
        .parse()
        .map_err(|_| format!("`{s}` is not a duration like 500ms, 10s, 5m"))?;
    match unit {
        "ms" => Ok(Duration::from_millis(n)),
        "" | "s" => Ok(Duration::from_secs(n)),
        "m" => Ok(Duration::from_secs(n * 60)),
        "h" => Ok(Duration::from_secs(n * 3600)),
        _ => Err(format!("`{s}`: unknown unit `{unit}` (use ms, s, m or h)")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn durations_parse_with_units() {
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("10"), Ok(Duration::from_secs(10)));
        assert_eq!(parse_duration("5m"), Ok(Duration::from_secs(300)));
        assert!(parse_duration("5 parsecs").is_err());
        assert!(parse_duration("").is_err());
    }

    #[test]
    fn send_requires_an_event_or_an_example() {
        let err = Cli::try_parse_from(["x", "send", "--url", "http://h", "--secret-file", "f"])
            .unwrap_err();
        assert!(err.to_string().contains("--event"));
        let ok = Cli::try_parse_from([
            "x",
            "send",
            "--url",
            "u",
            "--secret-file",
            "f",
            "--example",
            "webhook-ping",
        ]);
        assert!(ok.is_ok());
    }

    #[test]
    fn replay_takes_a_namespace_and_a_delivery() {
        let cli = Cli::try_parse_from(["x", "replay", "-n", "ios", "release-abc"]).unwrap();
        let Command::Replay(args) = cli.command else {
            panic!("not replay");
        };
        assert_eq!(
            (args.namespace.as_str(), args.delivery.as_str(), args.value),
            ("ios", "release-abc", None)
        );
        assert!(
            Cli::try_parse_from(["x", "replay", "-n", "ios"]).is_err(),
            "the delivery is required"
        );
    }
}
