//! What the Job watch last showed of each managed Job.

use crate::controllers::delivery::state::{self, Why};
use crate::resources::delivery::ActionState;
use k8s_openapi::api::batch::v1::Job;
use kube::ResourceExt;
use std::time::{Duration, Instant};

/// What the Job watch last showed of one Job.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobFact {
    /// Running, Succeeded or Failed, from its conditions.
    pub state: ActionState,
    /// Why it failed.
    pub why: Option<Why>,
    /// Seen in the watch's deletion event: this is the Job's last state.
    pub deleted: bool,
}

/// The fact of `job`, for the memory the Job watch feeds; `deleted`: from its deletion event.
pub fn fact_of(job: &Job, deleted: bool) -> JobFact {
    let (state, why) = state::job_outcome(job);
    JobFact {
        state,
        why,
        deleted,
    }
}

/// What the Job watch last showed of each managed Job, by `namespace/name`, and when a pass first found
/// a Job missing that the watch had not shown deleted.
pub struct JobFacts {
    seen: moka::sync::Cache<String, (JobFact, Instant)>,
    missing: moka::sync::Cache<String, Instant>,
}

impl Default for JobFacts {
    fn default() -> Self {
        // Outlives a Job's TTL deletion long enough for its delivery to read the outcome.
        JobFacts {
            seen: moka::sync::Cache::builder()
                .max_capacity(50_000)
                .time_to_live(Duration::from_secs(3600))
                .build(),
            missing: moka::sync::Cache::builder()
                .max_capacity(50_000)
                .time_to_live(Duration::from_secs(3600))
                .build(),
        }
    }
}

impl JobFacts {
    /// What the Job watch last showed of Job `namespace/name`.
    #[cfg(test)]
    pub fn get(&self, namespace: &str, name: &str) -> Option<JobFact> {
        self.get_with_age(namespace, name).map(|(f, _)| f)
    }

    /// What the Job watch last showed of Job `namespace/name`, and how long ago.
    pub fn get_with_age(&self, namespace: &str, name: &str) -> Option<(JobFact, Duration)> {
        self.seen
            .get(&format!("{namespace}/{name}"))
            .map(|(f, at)| (f, at.elapsed()))
    }

    /// Remembers what the Job watch shows of `job`; `deleted`: its deletion event (the Job's last state).
    pub fn remember(&self, job: &Job, deleted: bool) {
        let key = format!("{}/{}", job.namespace().unwrap_or_default(), job.name_any());
        self.seen
            .insert(key, (fact_of(job, deleted), Instant::now()));
    }

    /// How long Job `namespace/name` has been found missing without the Job watch showing its deletion
    /// (zero the first time).
    pub fn missing_for(&self, namespace: &str, name: &str) -> Duration {
        self.missing
            .get_with(format!("{namespace}/{name}"), Instant::now)
            .elapsed()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::batch::v1::{JobCondition, JobStatus};

    fn job(name: &str, condition: Option<&str>) -> Job {
        let mut job = Job::default();
        job.metadata.name = Some(name.into());
        job.metadata.namespace = Some("ns".into());
        job.status = condition.map(|c| JobStatus {
            conditions: Some(vec![JobCondition {
                type_: c.into(),
                status: "True".into(),
                ..Default::default()
            }]),
            ..Default::default()
        });
        job
    }

    #[test]
    fn the_last_shown_state_of_a_job_is_kept_by_namespace_and_name() {
        let facts = JobFacts::default();
        facts.remember(&job("j", None), false);
        assert_eq!(
            facts.get("ns", "j").map(|f| f.state),
            Some(ActionState::Running)
        );
        facts.remember(&job("j", Some("Complete")), true);
        let last = facts.get("ns", "j").expect("remembered");
        assert_eq!((last.state, last.deleted), (ActionState::Succeeded, true));
        assert_eq!(facts.get("other", "j"), None);
    }

    #[test]
    fn a_missing_job_counts_from_the_first_time_it_was_found_missing() {
        let facts = JobFacts::default();
        let first = facts.missing_for("ns", "j");
        std::thread::sleep(Duration::from_millis(5));
        assert!(facts.missing_for("ns", "j") > first);
    }
}
