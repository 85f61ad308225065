//! Lease fencing, driven through the leader election itself (`leader::run_while_leader`) against the fake
//! API server: each contender records when its "controllers" start and stop, so two leaders at once show
//! as overlapping intervals instead of depending on a poll catching them.

use crate::harness::*;
use asc_webhook_operator::leader::{LeaseSettings, run_while_leader};
use prometheus_client::metrics::gauge::Gauge;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use testkit::apiserver::{FakeApiServer, Fault, FaultRule, Verb};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio_util::sync::CancellationToken;

const LEASE: &str = "fencing-lease";
const DURATION: u64 = 3;

/// When one contender ran its controllers; `to` stays `None` while they run.
#[derive(Debug, Clone, PartialEq)]
struct Interval {
    who: String,
    from: Instant,
    to: Option<Instant>,
}

type Log = Arc<Mutex<Vec<Interval>>>;

struct Contender {
    shutdown: CancellationToken,
    gauge: Gauge,
    task: tokio::task::JoinHandle<()>,
}

impl Contender {
    /// Joins the election as `identity`; its work runs until leadership is lost or it is stopped.
    fn join(api: &FakeApiServer, identity: &str, log: &Log) -> Contender {
        let settings = LeaseSettings {
            name: LEASE.into(),
            namespace: NS.into(),
            identity: identity.into(),
            duration_seconds: DURATION,
        };
        let (shutdown, gauge) = (CancellationToken::new(), Gauge::default());
        let (log, who) = (log.clone(), identity.to_owned());
        let work = move |stop: CancellationToken| -> Pin<Box<dyn Future<Output = ()> + Send>> {
            let (log, who) = (log.clone(), who.clone());
            Box::pin(async move {
                let at = {
                    let mut log = log.lock().unwrap();
                    log.push(Interval {
                        who,
                        from: Instant::now(),
                        to: None,
                    });
                    log.len() - 1
                };
                stop.cancelled().await;
                log.lock().unwrap()[at].to = Some(Instant::now());
            })
        };
        let election = run_while_leader(
            api.client(),
            settings,
            shutdown.clone(),
            gauge.clone(),
            work,
        );
        let task = tokio::spawn(async move { election.await.expect("leader election runs") });
        Contender {
            shutdown,
            gauge,
            task,
        }
    }

    /// Graceful stop: a leader releases the lease.
    async fn stop(self) {
        self.shutdown.cancel();
        tokio::time::timeout(Duration::from_secs(10), self.task)
            .await
            .expect("the election stops")
            .unwrap();
    }
}

/// Pairs of intervals of different contenders that share an instant.
fn overlaps(log: &[Interval]) -> Vec<(Interval, Interval)> {
    let now = Instant::now();
    let mut found = Vec::new();
    for (i, a) in log.iter().enumerate() {
        for b in &log[i + 1..] {
            let (a_to, b_to) = (a.to.unwrap_or(now), b.to.unwrap_or(now));
            if a.who != b.who && a.from < b_to && b.from < a_to {
                found.push((a.clone(), b.clone()));
            }
        }
    }
    found
}

fn lease_conflicts(api: &FakeApiServer) -> usize {
    api.count_requests(|r| r.verb == Verb::Patch && r.resource == "leases" && r.status == 409)
}

#[tokio::test]
async fn two_contenders_for_a_released_lease_never_lead_at_once() {
    let api = fake_api().await;
    let log: Log = Arc::default();
    const ROUNDS: usize = 8;
    for round in 0..ROUNDS {
        // Both contenders find the lease free; whichever sends its claim first has it held back, so the
        // other claims, confirms and starts leading before the late claim arrives. With one field manager
        // shared by all replicas that late claim would be accepted too, and both would lead until the first
        // one's next renewal.
        api.add_fault(
            FaultRule::new(Fault::Delay(Duration::from_millis(700)))
                .verb(Verb::Patch)
                .resource("leases"),
        );
        let conflicts = lease_conflicts(&api);
        let a = Contender::join(&api, &format!("round-{round}-a"), &log);
        let b = Contender::join(&api, &format!("round-{round}-b"), &log);
        eventually("a contender leads", Duration::from_secs(10), || {
            let led = log.lock().unwrap().len() > round;
            async move { led.then_some(()) }
        })
        .await;
        // Past the late claim and the winner's next renewal.
        tokio::time::sleep(Duration::from_millis(2_500)).await;
        assert_eq!(
            overlaps(&log.lock().unwrap()),
            Vec::new(),
            "round {round}: two contenders led at once"
        );
        assert!(
            lease_conflicts(&api) > conflicts,
            "round {round}: the late claim was refused"
        );
        assert_eq!(
            a.gauge.get() + b.gauge.get(),
            1,
            "round {round}: one contender reports leading"
        );
        a.stop().await;
        b.stop().await;
        api.clear_faults();
    }
    let log = log.lock().unwrap().clone();
    assert_eq!(log.len(), ROUNDS, "one leader per round: {log:?}");
    assert_eq!(overlaps(&log), Vec::new(), "two contenders led at once");
}

/// Overwrites the Lease as another holder that took it would leave it.
fn take_lease(api: &FakeApiServer, holder: &str) {
    let now = jiff::Timestamp::now().to_string();
    let mut lease = api
        .get_object("leases", NS, LEASE)
        .expect("the lease exists");
    // Unconditional, as the holder renews meanwhile.
    lease["metadata"]
        .as_object_mut()
        .unwrap()
        .remove("resourceVersion");
    lease["spec"] = serde_json::json!({
        "holderIdentity": holder, "acquireTime": now, "renewTime": now,
        "leaseDurationSeconds": 30, "leaseTransitions": 7,
    });
    api.put_object("leases", lease).expect("lease overwritten");
}

#[tokio::test]
async fn a_leader_whose_lease_is_taken_stops_its_controllers_within_the_renew_deadline() {
    let api = fake_api().await;
    let log: Log = Arc::default();
    let leader = Contender::join(&api, "holder", &log);
    eventually("the contender leads", Duration::from_secs(10), || {
        let led = !log.lock().unwrap().is_empty();
        async move { led.then_some(()) }
    })
    .await;
    // Leading for a while first, so the take-over does not fall right after a renewal.
    tokio::time::sleep(Duration::from_millis(1_300)).await;
    take_lease(&api, "usurper");
    let taken = Instant::now();
    let stopped = eventually(
        "the former leader stops its controllers",
        Duration::from_secs(DURATION + 2),
        || {
            let to = log.lock().unwrap()[0].to;
            async move { to }
        },
    )
    .await;
    assert!(
        stopped.duration_since(taken) <= Duration::from_secs(DURATION),
        "stopped {:?} after the lease was taken",
        stopped.duration_since(taken)
    );
    assert_eq!(leader.gauge.get(), 0, "it no longer reports leading");
    // It stays in the election as a follower rather than exiting: its controllers stopped in time.
    assert!(!leader.task.is_finished(), "the election keeps running");
    leader.stop().await;
}

#[tokio::test]
async fn a_leader_that_cannot_renew_through_an_outage_steps_down_by_its_renew_deadline_and_leads_again_after()
 {
    let api = fake_api().await;
    let log: Log = Arc::default();
    let leader = Contender::join(&api, "holder", &log);
    eventually("the contender leads", Duration::from_secs(10), || {
        let led = !log.lock().unwrap().is_empty();
        async move { led.then_some(()) }
    })
    .await;
    tokio::time::sleep(Duration::from_millis(1_300)).await;
    api.begin_outage().await;
    let down = Instant::now();
    // Its last renewal was before the outage, so its Lease runs out within DURATION of it; another replica
    // that still reached the API server could lead from then on.
    let stopped = eventually(
        "the leader steps down during the outage",
        Duration::from_secs(DURATION + 2),
        || {
            let to = log.lock().unwrap()[0].to;
            async move { to }
        },
    )
    .await;
    assert!(
        stopped.duration_since(down) < Duration::from_secs(DURATION),
        "stepped down {:?} into the outage",
        stopped.duration_since(down)
    );
    assert_eq!(leader.gauge.get(), 0, "it no longer reports leading");
    api.end_outage();
    eventually(
        "it leads again once the API server is back",
        Duration::from_secs(20),
        || {
            let log = log.lock().unwrap();
            let again = log.len() == 2 && log[1].to.is_none();
            async move { again.then_some(()) }
        },
    )
    .await;
    assert_eq!(leader.gauge.get(), 1);
    leader.stop().await;
}

/// Set in the child process of the test below: the kubeconfig of the parent's fake API server.
const CHILD_KUBECONFIG: &str = "ASC_TEST_STUBBORN_LEADER_KUBECONFIG";

/// What the child prints once it runs its controllers.
const LEADING: &str = "stubborn replica leads";

/// In the child process: leads with controllers that ignore the stop signal, as hung reconciles would.
async fn lead_stubbornly(kubeconfig: &str) {
    let config = kube::Config::from_custom_kubeconfig(
        kube::config::Kubeconfig::read_from(kubeconfig).unwrap(),
        &Default::default(),
    )
    .await
    .unwrap();
    let settings = LeaseSettings {
        name: LEASE.into(),
        namespace: NS.into(),
        identity: "stubborn".into(),
        duration_seconds: DURATION,
    };
    let work = |_stop: CancellationToken| -> Pin<Box<dyn Future<Output = ()> + Send>> {
        println!("{LEADING}");
        Box::pin(std::future::pending())
    };
    let client = kube::Client::try_from(config).unwrap();
    let _ = run_while_leader(
        client,
        settings,
        CancellationToken::new(),
        Gauge::default(),
        work,
    )
    .await;
}

#[tokio::test]
async fn a_leader_whose_controllers_do_not_stop_after_losing_the_lease_exits() {
    if let Ok(kubeconfig) = std::env::var(CHILD_KUBECONFIG) {
        return lead_stubbornly(&kubeconfig).await;
    }
    let api = fake_api().await;
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = dir.path().join("kubeconfig");
    api.write_kubeconfig(&kubeconfig).unwrap();
    let mut child = tokio::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "lease_fencing::a_leader_whose_controllers_do_not_stop_after_losing_the_lease_exits",
            "--nocapture",
        ])
        .env(CHILD_KUBECONFIG, &kubeconfig)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    tokio::time::timeout(Duration::from_secs(20), async {
        while let Some(line) = lines.next_line().await.unwrap() {
            if line.contains(LEADING) {
                return;
            }
        }
        panic!("the child ended before leading");
    })
    .await
    .expect("the child leads");
    take_lease(&api, "usurper");
    let taken = Instant::now();
    // It learns at its next renewal (within the lease duration), then gives its controllers the grace
    // period (a third of it) to stop before it exits.
    let deadline = Duration::from_secs(DURATION + DURATION / 3 + 2);
    let status = tokio::time::timeout(deadline, child.wait())
        .await
        .unwrap_or_else(|_| panic!("still running {deadline:?} after losing the lease"))
        .unwrap();
    assert_eq!(status.code(), Some(1), "exits with a failure ({status})");
    assert!(taken.elapsed() >= Duration::from_secs(DURATION / 3));
}
