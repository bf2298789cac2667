//! Per-tenant batches gathered in an isolate: what many requests report to one tenant's
//! Durable Object (the gateway's settled turns, the inbox's changed conversations) waits here
//! for up to [`WAIT`] and travels in one request, so the object pays one request, one write
//! and one commit for the lot instead of one each.
//!
//! The batch's first entry is the one that sends it: [`Batches::add`] says whether an entry
//! started its tenant's batch, and [`send_later`] is the work that entry hands to the host for
//! after the answer (`waitUntil`): wait, then take the batch and send it. Later entries cost
//! their request nothing more.

use std::cell::RefCell;
use std::collections::HashMap;
use std::future::Future;
use std::thread::LocalKey;

use futures::future::LocalBoxFuture;

/// How long an isolate gathers a tenant's entries before they go: also the most an agent's
/// inbox or a tenant's usage lags behind a turn.
pub(crate) const WAIT: core::time::Duration = core::time::Duration::from_millis(250);

/// One isolate's waiting batches, per tenant. Kept in a `thread_local!` (an isolate runs its
/// requests on one thread), and named by its key in [`send_later`].
pub(crate) struct Batches<B> {
    pending: RefCell<HashMap<String, B>>,
}

impl<B> Default for Batches<B> {
    fn default() -> Self {
        Self {
            pending: RefCell::default(),
        }
    }
}

impl<B> Batches<B> {
    /// Adds `entry` to `tenant`'s batch with `add`, starting the batch from the entry with
    /// `start` when none waits. Returns whether this entry started the batch, and what `add`
    /// returned.
    pub(crate) fn add<E, R>(
        &self,
        tenant: &str,
        entry: E,
        start: impl FnOnce(&E) -> B,
        add: impl FnOnce(&mut B, E) -> R,
    ) -> (bool, R) {
        let mut pending = self.pending.borrow_mut();
        let first = !pending.contains_key(tenant);
        let batch = pending
            .entry(tenant.to_owned())
            .or_insert_with(|| start(&entry));
        (first, add(batch, entry))
    }

    /// Takes `tenant`'s waiting batch, if any: it is the taker's to send.
    pub(crate) fn take(&self, tenant: &str) -> Option<B> {
        self.pending.borrow_mut().remove(tenant)
    }
}

/// The work that sends `tenant`'s batch of `batches`: after [`WAIT`] (or at once, `wait`
/// false: a batch that filled up), whatever waits then goes to `send`. That may be more than
/// the batch this work was made for, or nothing, if another sender took it first.
pub(crate) fn send_later<B: 'static, F>(
    batches: &'static LocalKey<Batches<B>>,
    tenant: String,
    wait: bool,
    send: impl FnOnce(B) -> F + 'static,
) -> LocalBoxFuture<'static, ()>
where
    F: Future<Output = ()> + 'static,
{
    Box::pin(async move {
        if wait {
            worker::Delay::from(WAIT).await;
        }
        if let Some(batch) = batches.with(|b| b.take(&tenant)) {
            send(batch).await;
        }
    })
}
