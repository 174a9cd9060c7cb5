//! A deadline that moves with every request but rarely far.
//!
//! Each request on a kept-alive connection sets two deadlines (its head's,
//! its response's), each a little later than the last. A fresh tokio timer
//! per deadline is a registration in the timer wheel and a removal, under
//! the driver's lock, twice per request, and it showed in the profile. This
//! timer is armed once per connection and moved only when the wanted
//! deadline is earlier than the armed one or later by more than `slack`
//! (nginx does the same with its lazy timers). Kept early, it may fire
//! before the wanted deadline: then the clock is checked and it is re-armed
//! exactly, so a deadline is never cut short.

use std::future::Future as _;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::time::{Instant, Sleep};

/// How far the timer may stay armed before the wanted deadline.
const SLACK: Duration = Duration::from_secs(1);

/// A reusable timer for one deadline at a time (one word while unarmed).
#[derive(Default)]
pub struct LazyTimer {
    sleep: Option<Pin<Box<Sleep>>>,
}

impl LazyTimer {
    pub const fn new() -> Self {
        LazyTimer { sleep: None }
    }

    /// Ready once `deadline` has passed. Arms (or moves) the timer as needed.
    pub fn poll_until(&mut self, cx: &mut Context<'_>, deadline: Instant) -> Poll<()> {
        let slack = SLACK;
        let sleep = self
            .sleep
            .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
        let armed = sleep.deadline();
        if armed > deadline || armed + slack < deadline {
            sleep.as_mut().reset(deadline);
        }
        loop {
            match sleep.as_mut().poll(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(()) if Instant::now() >= deadline => return Poll::Ready(()),
                // Fired at the earlier, kept deadline: wait out the rest.
                Poll::Ready(()) => sleep.as_mut().reset(deadline),
            }
        }
    }

    /// Waits until `deadline` (see `poll_until`).
    #[cfg(test)]
    pub async fn until(&mut self, deadline: Instant) {
        std::future::poll_fn(|cx| self.poll_until(cx, deadline)).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn fires_at_the_wanted_deadline_never_before() {
        let mut t = LazyTimer::new();
        let start = Instant::now();
        t.until(start + Duration::from_secs(2)).await;
        assert_eq!(Instant::now(), start + Duration::from_secs(2));
        // A later deadline within the slack keeps the armed one, which fires
        // early: the wait still lasts to the wanted deadline.
        let now = Instant::now();
        let mut t = LazyTimer::new();
        poll_once(&mut t, now + Duration::from_secs(10)).await;
        let wanted = now + Duration::from_millis(10_500);
        t.until(wanted).await;
        assert_eq!(Instant::now(), wanted);
        // An earlier deadline moves it.
        let now = Instant::now();
        t.until(now + Duration::from_millis(100)).await;
        assert_eq!(Instant::now(), now + Duration::from_millis(100));
    }

    /// Polls `t` once for `deadline` (arming or moving it), then lets go.
    async fn poll_once(t: &mut LazyTimer, deadline: Instant) {
        std::future::poll_fn(|cx| {
            let _ = t.poll_until(cx, deadline);
            Poll::Ready(())
        })
        .await
    }

    #[tokio::test(start_paused = true)]
    async fn small_moves_do_not_rearm() {
        let mut t = LazyTimer::new();
        let start = Instant::now();
        let armed = |t: &LazyTimer| t.sleep.as_ref().map(|s| s.deadline());
        poll_once(&mut t, start + Duration::from_secs(10)).await;
        poll_once(&mut t, start + Duration::from_millis(10_400)).await;
        assert_eq!(armed(&t), Some(start + Duration::from_secs(10)), "kept");
        poll_once(&mut t, start + Duration::from_millis(11_500)).await;
        assert_eq!(
            armed(&t),
            Some(start + Duration::from_millis(11_500)),
            "moved: past the slack"
        );
        poll_once(&mut t, start + Duration::from_secs(5)).await;
        assert_eq!(
            armed(&t),
            Some(start + Duration::from_secs(5)),
            "moved: earlier"
        );
    }
}
