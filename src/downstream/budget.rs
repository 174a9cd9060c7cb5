//! The global budget for request body bytes held in memory.
//!
//! A body that does not arrive with its head is read into memory before it
//! is forwarded (`docs/config.md` says why), and a client may take up to
//! `timeouts.request_body` to send it. Without a bound across connections,
//! many slow clients each holding up to `limits.max_request_body` add up to
//! any amount of memory. Every connection that holds body bytes beyond its
//! first read takes them from this budget first, all at once; when none is
//! left it stops reading (TCP pushes back on the client) and waits, until
//! the body deadline, then gets a 503. Bytes go back when the request has
//! been answered.

use std::sync::Arc;

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, TryAcquireError};
use tokio::time::Instant;

/// Budget bytes per semaphore permit (permits are counted in u32).
const UNIT: usize = 1024;
/// What callers grow a body's buffer by, at least (buffers double).
pub const STEP: usize = 64 * 1024;

/// No budget was left for a body before its deadline.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Exhausted;

/// The bytes every pending request body may hold, in all.
pub struct BodyBudget {
    permits: Arc<Semaphore>,
    total: usize,
    held: Gauge,
    waits: Counter,
}

impl BodyBudget {
    /// `bytes` in all; `held` shows what is taken, `waits` counts bodies
    /// that had to wait for some.
    pub fn new(bytes: usize, held: Gauge, waits: Counter) -> Arc<Self> {
        let units = (bytes / UNIT).clamp(1, Semaphore::MAX_PERMITS);
        Arc::new(BodyBudget {
            permits: Arc::new(Semaphore::new(units)),
            total: units * UNIT,
            held,
            waits,
        })
    }

    /// The whole budget, in bytes.
    pub fn total(&self) -> usize {
        self.total
    }

    /// Makes `held` hold at least `bytes`, waiting until `deadline` if the
    /// budget is spent.
    pub async fn grow(
        self: &Arc<Self>,
        held: &mut Held,
        bytes: usize,
        deadline: Instant,
    ) -> Result<(), Exhausted> {
        if bytes <= held.bytes {
            return Ok(());
        }
        let units = (bytes - held.bytes).div_ceil(UNIT);
        let units = u32::try_from(units).map_err(|_| Exhausted)?;
        let permit = match self.permits.clone().try_acquire_many_owned(units) {
            Ok(permit) => permit,
            Err(TryAcquireError::Closed) => return Err(Exhausted),
            Err(TryAcquireError::NoPermits) => {
                self.waits.inc();
                let wait = self.permits.clone().acquire_many_owned(units);
                match tokio::time::timeout_at(deadline, wait).await {
                    Ok(Ok(permit)) => permit,
                    Ok(Err(_)) | Err(_) => return Err(Exhausted),
                }
            }
        };
        let added = units as usize * UNIT;
        self.held.inc_by(added as i64);
        held.bytes += added;
        match &mut held.permit {
            Some(p) => p.merge(permit),
            None => {
                held.permit = Some(permit);
                held.budget = Some(self.clone());
            }
        }
        Ok(())
    }
}

/// Budget bytes taken for one request's body, given back when dropped.
#[derive(Default)]
pub struct Held {
    permit: Option<OwnedSemaphorePermit>,
    budget: Option<Arc<BodyBudget>>,
    bytes: usize,
}

impl Held {
    /// Bytes held.
    pub fn bytes(&self) -> usize {
        self.bytes
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        if let Some(budget) = &self.budget {
            budget.held.dec_by(self.bytes as i64);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn budget(bytes: usize) -> (Arc<BodyBudget>, Gauge, Counter) {
        let (held, waits) = (Gauge::default(), Counter::default());
        (
            BodyBudget::new(bytes, held.clone(), waits.clone()),
            held,
            waits,
        )
    }

    #[tokio::test(start_paused = true)]
    async fn grows_in_steps_and_gives_back_on_drop() {
        let (b, gauge, _) = budget(4 * STEP);
        let soon = Instant::now() + Duration::from_secs(1);
        let mut held = Held::default();
        b.grow(&mut held, 10, soon).await.unwrap();
        assert_eq!(held.bytes(), UNIT, "whole units");
        b.grow(&mut held, STEP, soon).await.unwrap();
        assert_eq!(held.bytes(), STEP);
        b.grow(&mut held, STEP - 1, soon).await.unwrap();
        assert_eq!(held.bytes(), STEP, "already enough");
        b.grow(&mut held, 3 * STEP, soon).await.unwrap();
        assert_eq!(held.bytes(), 3 * STEP);
        assert_eq!(gauge.get(), 3 * STEP as i64);
        drop(held);
        assert_eq!(gauge.get(), 0);
        assert_eq!(b.permits.available_permits(), 4 * STEP / UNIT);
    }

    #[tokio::test(start_paused = true)]
    async fn waits_for_budget_then_gives_up_at_the_deadline() {
        let (b, _, waits) = budget(2 * STEP);
        let deadline = Instant::now() + Duration::from_secs(5);
        let mut first = Held::default();
        b.grow(&mut first, 2 * STEP, deadline).await.unwrap();
        let mut second = Held::default();
        // Nothing frees it: the wait ends at the deadline.
        assert_eq!(b.grow(&mut second, 1, deadline).await, Err(Exhausted));
        assert_eq!(waits.get(), 1);
        assert_eq!(Instant::now(), deadline);
        // Freed while waiting: the wait succeeds.
        let later = Instant::now() + Duration::from_secs(5);
        let b2 = b.clone();
        let waiter = tokio::spawn(async move {
            let mut held = Held::default();
            b2.grow(&mut held, STEP, later).await.map(|()| held.bytes())
        });
        tokio::time::sleep(Duration::from_secs(1)).await;
        drop(first);
        assert_eq!(waiter.await.unwrap(), Ok(STEP));
        assert_eq!(waits.get(), 2);
    }

    #[tokio::test(start_paused = true)]
    async fn more_than_the_whole_budget_is_never_granted() {
        let (b, _, _) = budget(STEP);
        let mut held = Held::default();
        let deadline = Instant::now() + Duration::from_millis(10);
        assert_eq!(b.grow(&mut held, 2 * STEP, deadline).await, Err(Exhausted));
        assert_eq!(held.bytes(), 0);
    }
}
