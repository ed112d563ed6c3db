//! Jobs: each compute, backfill and refresh is recorded as it waits, runs and ends.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use super::AppState;
use super::{Result, ServiceError};
use crate::clock::Clock;
use crate::model::JobsQuery;
use crate::store::{JobFilter, JobKind, JobRow, JobStatus, Store};

pub const DEFAULT_LIMIT: i64 = 100;
pub const MAX_LIMIT: i64 = 1000;
/// Heartbeats a job may miss (each one lease period apart) before it counts as abandoned.
pub const MISSED_HEARTBEATS: u32 = 3;

/// Fail the jobs whose replica stopped beating: it died, and nobody else will finish them.
/// A heartbeat comes every `lease` (the scheduler's lease period).
pub async fn fail_abandoned(store: &Store, clock: &Clock, lease: std::time::Duration) {
    let silence = lease * MISSED_HEARTBEATS;
    let cutoff = clock.now() - chrono::Duration::from_std(silence).unwrap_or_default();
    match store.fail_abandoned_jobs(cutoff, clock.now()).await {
        Ok(0) => {}
        Ok(n) => tracing::warn!(jobs = n, "marked jobs failed: their replica stopped"),
        Err(e) => tracing::warn!(error = %e, "could not check for abandoned jobs"),
    }
}

pub async fn list(store: &Store, query: &JobsQuery) -> Result<Vec<JobRow>> {
    let limit = query.limit.unwrap_or(DEFAULT_LIMIT);
    if !(1..=MAX_LIMIT).contains(&limit) {
        return Err(ServiceError::Invalid(format!(
            "limit must be between 1 and {MAX_LIMIT}"
        )));
    }
    let status = match query.status.as_deref() {
        None => None,
        Some("queued") => Some(JobStatus::Queued),
        Some("running") => Some(JobStatus::Running),
        Some("succeeded") => Some(JobStatus::Succeeded),
        Some("failed") => Some(JobStatus::Failed),
        Some(other) => {
            return Err(ServiceError::Invalid(format!(
                "status must be queued, running, succeeded or failed, not '{other}'"
            )))
        }
    };
    let rows = store
        .list_jobs(&JobFilter {
            feature_id: query.feature_id,
            status,
            limit,
        })
        .await?;
    Ok(rows)
}

/// A job being recorded; clones share it. When the last clone goes before `finish` (its
/// request went away mid-compute), it is recorded as failed, so no job stays running forever
/// because a client hung up.
#[derive(Clone)]
pub struct Tracked(Arc<Inner>);

struct Inner {
    state: AppState,
    id: i64,
    running: AtomicBool,
    finished: AtomicBool,
}

impl Tracked {
    /// Record a queued job; `version_id` is `None` when a first compute will create it.
    pub async fn queue(
        state: &AppState,
        kind: JobKind,
        feature_id: i64,
        version_id: Option<i64>,
        version: &str,
    ) -> Result<Tracked> {
        let id = state
            .store
            .queue_job(kind, feature_id, version_id, version, state.clock.now())
            .await?;
        let tracked = Tracked(Arc::new(Inner {
            state: state.clone(),
            id,
            running: AtomicBool::new(false),
            finished: AtomicBool::new(false),
        }));
        tracked.beat(state.config.scheduler_lease);
        Ok(tracked)
    }

    /// Tell the database every `period` that this replica still works on the job, until it
    /// ends; the scheduler fails jobs whose heartbeat stopped (see `fail_abandoned`).
    fn beat(&self, period: std::time::Duration) {
        let job = Arc::downgrade(&self.0);
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(period).await;
                let Some(job) = job.upgrade() else { return };
                if job.finished.load(Ordering::Acquire) {
                    return;
                }
                if let Err(e) = job
                    .state
                    .store
                    .job_heartbeat(job.id, job.state.clock.now())
                    .await
                {
                    tracing::warn!(job = job.id, error = %e, "could not record a job heartbeat");
                }
            }
        });
    }

    /// A worker took it (the first time only is recorded).
    pub async fn running(&self) {
        if self.0.running.swap(true, Ordering::AcqRel) {
            return;
        }
        if let Err(e) = self
            .0
            .state
            .store
            .job_running(self.0.id, self.0.state.clock.now())
            .await
        {
            tracing::warn!(job = self.0.id, error = %e, "could not record a job as running");
        }
    }

    pub fn id(&self) -> i64 {
        self.0.id
    }

    /// The publish that ended it recorded it succeeded (`PublishRequest::job`).
    pub fn finished_by_publish(&self) {
        self.0.finished.store(true, Ordering::Release);
    }

    /// Record how it ended (the first call only): a failure keeps the words its client got.
    pub async fn finish<T>(&self, outcome: &Result<T>, version_id: Option<i64>) {
        if self.0.finished.swap(true, Ordering::AcqRel) {
            return;
        }
        let (status, error) = match outcome {
            Ok(_) => (JobStatus::Succeeded, None),
            Err(e) => (JobStatus::Failed, Some(e.public_detail())),
        };
        let recorded = self
            .0
            .state
            .store
            .job_finished(
                self.0.id,
                status,
                version_id,
                error.as_deref(),
                self.0.state.clock.now(),
            )
            .await;
        if let Err(e) = recorded {
            tracing::warn!(job = self.0.id, error = %e, "could not record how a job ended");
        }
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        if *self.finished.get_mut() {
            return;
        }
        let (state, id) = (self.state.clone(), self.id);
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(async move {
                let error = "the request went away before the job finished";
                let _ = state
                    .store
                    .job_finished(id, JobStatus::Failed, None, Some(error), state.clock.now())
                    .await;
            });
        }
    }
}
