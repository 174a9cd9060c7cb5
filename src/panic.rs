//! The task boundary: a panic in a connection's work never goes silent.
//!
//! Nothing on the request path should panic on input (see
//! `docs/security.md`), but if something does, the connection's task must not
//! just vanish with a reset the client cannot explain. [`CatchUnwind`] runs a
//! future and turns a panic inside it into an `Err`, so the connection can
//! answer 502 (if it had not started answering), be counted and closed.
//!
//! The panic hook installed by [`install_hook`] keeps the message and place
//! of a panic raised inside a [`CatchUnwind`] for the catcher to log once,
//! with the connection's context; other panics go to the previous hook.

use std::any::Any;
use std::cell::{Cell, RefCell};
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::Once;
use std::task::{Context, Poll};

thread_local! {
    /// Inside a `CatchUnwind` poll on this thread.
    static GUARDED: Cell<bool> = const { Cell::new(false) };
    /// What the hook saw of the last guarded panic on this thread.
    static LAST: RefCell<Option<String>> = const { RefCell::new(None) };
}

/// Installs the hook once per process; later calls do nothing.
pub fn install_hook() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if GUARDED.with(Cell::get) {
                let place = info
                    .location()
                    .map_or_else(String::new, |l| format!(" at {}:{}", l.file(), l.line()));
                let text = format!("{}{place}", message(info.payload()));
                LAST.with(|last| *last.borrow_mut() = Some(text));
            } else {
                previous(info);
            }
        }));
    });
}

/// The panic's message and place, as the hook saw it (or its payload).
pub fn describe(payload: &(dyn Any + Send)) -> String {
    LAST.with(|last| last.borrow_mut().take())
        .unwrap_or_else(|| message(payload).to_owned())
}

fn message(payload: &(dyn Any + Send)) -> &str {
    payload
        .downcast_ref::<&str>()
        .copied()
        .or_else(|| payload.downcast_ref::<String>().map(String::as_str))
        .unwrap_or("panic with a non-text payload")
}

pin_project_lite::pin_project! {
    /// Runs `F`; a panic while polling it ends it with `Err(payload)`.
    pub struct CatchUnwind<F> {
        #[pin]
        inner: F,
    }
}

impl<F> CatchUnwind<F> {
    pub fn new(inner: F) -> Self {
        CatchUnwind { inner }
    }
}

impl<F: Future> Future for CatchUnwind<F> {
    type Output = Result<F::Output, Box<dyn Any + Send>>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let inner = self.project().inner;
        let outer = GUARDED.with(|g| g.replace(true));
        // Unwind safety: after a panic the future is never polled again; the
        // caller only reads plain fields of the connection to answer and close.
        let result = std::panic::catch_unwind(AssertUnwindSafe(|| inner.poll(cx)));
        GUARDED.with(|g| g.set(outer));
        match result {
            Ok(Poll::Ready(out)) => Poll::Ready(Ok(out)),
            Ok(Poll::Pending) => Poll::Pending,
            Err(payload) => Poll::Ready(Err(payload)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_panic_becomes_an_error_with_its_place() {
        install_hook();
        let ok = CatchUnwind::new(async { 7 }).await;
        assert_eq!(ok.ok(), Some(7));
        let err = CatchUnwind::new(async {
            tokio::task::yield_now().await;
            if std::hint::black_box(true) {
                panic!("boom {}", 42);
            }
        })
        .await
        .unwrap_err();
        let text = describe(&*err);
        assert!(text.starts_with("boom 42 at src/panic.rs:"), "{text}");
        // Taken once.
        assert_eq!(describe(&*err), "boom 42");
    }
}
