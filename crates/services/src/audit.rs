//! The audit log of requests through the Kubernetes API proxy: each
//! finished request is handed over without waiting (the proxy never waits
//! for the database), written in batches by one task per replica, kept for
//! the retention, and, for log collectors, emitted on the `audit` log
//! target (off unless `RUST_LOG` names it, e.g. `RUST_LOG=info,audit=info`).

use std::time::Duration;

use glagent_store::{NewAuditEvent, Store, Timestamp};
use parking_lot::Mutex;
use tokio::sync::{Notify, mpsc};

/// Events waiting for the writer at most; beyond, new ones are counted
/// and reported, not queued (a database that is gone must not grow kas's
/// memory without bound).
const QUEUE: usize = 20_000;
/// Events written per transaction at most.
const BATCH: usize = 500;
/// How long the writer gathers events after the first of a batch: one
/// transaction a second at most while requests trickle in, instead of
/// one per request.
const GATHER: Duration = Duration::from_secs(1);
/// How often events older than the retention are forgotten.
const PURGE_EVERY: Duration = Duration::from_secs(3600);

/// The replica's audit log.
pub struct AuditLog {
    sender: mpsc::Sender<NewAuditEvent>,
    receiver: Mutex<Option<mpsc::Receiver<NewAuditEvent>>>,
    /// Told when a batch's worth is waiting: the writer sleeps through
    /// its gathering instead of being woken by every event.
    batch_waiting: Notify,
    dropped: std::sync::atomic::AtomicU64,
}

impl Default for AuditLog {
    fn default() -> AuditLog {
        let (sender, receiver) = mpsc::channel(QUEUE);
        AuditLog {
            sender,
            receiver: Mutex::new(Some(receiver)),
            batch_waiting: Notify::new(),
            dropped: Default::default(),
        }
    }
}

impl AuditLog {
    /// Records a finished request: a log line on the `audit` target now,
    /// the database row with the next batch.
    pub fn record(&self, event: NewAuditEvent) {
        tracing::info!(
            target: "audit",
            agent_id = event.agent_id,
            started_at = %event.started_at,
            credential = %event.credential,
            user_id = event.user_id,
            username = %event.username,
            project_id = event.project_id,
            pipeline_id = event.pipeline_id,
            job_id = event.job_id,
            impersonated = event.impersonated.as_deref(),
            verb = %event.verb,
            path = %event.path,
            status = event.status,
            duration_ms = event.duration_us as f64 / 1000.0,
            "proxied request"
        );
        if self.sender.try_send(event).is_ok() {
            // Cheap while nobody waits: the permit is only stored.
            if QUEUE - self.sender.capacity() >= BATCH {
                self.batch_waiting.notify_one();
            }
        } else {
            let dropped = self.dropped.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1;
            if dropped.is_power_of_two() {
                tracing::error!(
                    dropped,
                    "the audit log is behind (is the database reachable?): events not stored in the database"
                );
            }
        }
    }

    /// Writes events in batches and forgets those older than `retention`,
    /// until `stop` (after the last request has ended), then writes what
    /// is left. Only the first call gets the events.
    pub async fn write_until(&self, store: Store, retention: Duration, stop: impl Future<Output = ()>) {
        let Some(mut receiver) = self.receiver.lock().take() else {
            return;
        };
        let mut purge = tokio::time::interval(PURGE_EVERY);
        let mut batch = Vec::with_capacity(BATCH);
        let mut stop = std::pin::pin!(stop);
        let mut stopping = false;
        while !stopping {
            tokio::select! {
                () = &mut stop => stopping = true,
                received = receiver.recv_many(&mut batch, BATCH) => {
                    if received == 0 {
                        stopping = true;
                    } else if batch.len() < BATCH {
                        // The first event woke the writer; the others wait
                        // in the queue until a second has passed or a
                        // batch's worth is there.
                        tokio::select! {
                            () = tokio::time::sleep(GATHER) => {}
                            () = self.batch_waiting.notified() => {}
                            () = &mut stop => stopping = true,
                        }
                    }
                }
                _ = purge.tick() => match store.forget_audit_events_before(Timestamp::before_now(retention)).await {
                    Ok(0) => {}
                    Ok(forgotten) => tracing::info!(forgotten, "audit events past the retention forgotten"),
                    Err(error) => tracing::warn!(%error, "forgetting old audit events failed"),
                },
            }
            // Everything waiting, a batch at a time.
            loop {
                while batch.len() < BATCH {
                    let Ok(event) = receiver.try_recv() else { break };
                    batch.push(event);
                }
                if batch.is_empty() {
                    break;
                }
                write(&store, &mut batch).await;
            }
        }
    }
}

/// Writes a batch, retrying while the database is away; the batch is
/// empty afterwards.
async fn write(store: &Store, batch: &mut Vec<NewAuditEvent>) {
    if batch.is_empty() {
        return;
    }
    let mut wait = Duration::from_millis(100);
    for attempt in 1.. {
        match store.record_audit_events(batch).await {
            Ok(()) => break,
            Err(error) if attempt < 10 => {
                tracing::warn!(%error, events = batch.len(), "writing audit events failed; retrying");
                tokio::time::sleep(wait).await;
                wait = (wait * 2).min(Duration::from_secs(10));
            }
            Err(error) => {
                tracing::error!(%error, events = batch.len(), "audit events could not be stored");
                break;
            }
        }
    }
    batch.clear();
}
