//! A timer for futures polled from JavaScript streams.
//!
//! `worker::Delay` keeps the waker of its first poll. Inside a response body that the
//! runtime pulls chunk by chunk, every pull polls with a new waker, so a `Delay` set up by
//! an earlier pull wakes a pull that is long gone, and a stream that waits only on timers
//! (heartbeats, a lifetime, a session check) never moves again. [`Sleep`] remembers the
//! waker of its latest poll, so whoever waits on it now is woken.

use std::cell::{Cell, RefCell};
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use worker::js_sys;
use worker::wasm_bindgen::JsCast;
use worker::wasm_bindgen::closure::Closure;

#[derive(Default)]
struct Shared {
    fired: Cell<bool>,
    waker: RefCell<Option<Waker>>,
}

/// Ready once `duration` has passed (the platform's `setTimeout`); cancelled when dropped.
pub(crate) struct Sleep {
    shared: Rc<Shared>,
    timeout_id: Option<i32>,
    // Kept alive until the timer fires or is cleared.
    _callback: Closure<dyn FnMut()>,
}

impl Sleep {
    /// A timer for `duration`.
    pub(crate) fn new(duration: Duration) -> Self {
        let shared = Rc::new(Shared::default());
        let on_fire = shared.clone();
        let callback = Closure::wrap(Box::new(move || {
            on_fire.fired.set(true);
            if let Some(waker) = on_fire.waker.borrow_mut().take() {
                waker.wake();
            }
        }) as Box<dyn FnMut()>);
        let global: worker::web_sys::WorkerGlobalScope = js_sys::global().unchecked_into();
        let ms = i32::try_from(duration.as_millis()).unwrap_or(i32::MAX);
        let timeout_id = global
            .set_timeout_with_callback_and_timeout_and_arguments_0(
                callback.as_ref().unchecked_ref(),
                ms,
            )
            .ok();
        if timeout_id.is_none() {
            // No timer could be set: ready at once rather than never.
            shared.fired.set(true);
        }
        Self {
            shared,
            timeout_id,
            _callback: callback,
        }
    }
}

impl Future for Sleep {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if self.shared.fired.get() {
            return Poll::Ready(());
        }
        *self.shared.waker.borrow_mut() = Some(cx.waker().clone());
        Poll::Pending
    }
}

impl Drop for Sleep {
    fn drop(&mut self) {
        if let (false, Some(id)) = (self.shared.fired.get(), self.timeout_id) {
            let global: worker::web_sys::WorkerGlobalScope = js_sys::global().unchecked_into();
            global.clear_timeout_with_handle(id);
        }
    }
}
