//! Documents every instance of the component shares — a tenant's gateway ledger, its usage
//! totals, its webhook outbox — stored as JSON in Spin key-value, each change a
//! read–modify–compare-and-swap retried (with a little random backoff) when another instance
//! changed the document first. No change is lost and none is applied twice; under heavy
//! contention a change that still loses after [`MAX_SWAPS`] tries fails with `503` rather
//! than writing blindly.
//!
//! **Creating a document.** Spin's SQLite-backed store swaps an *absent* key
//! unconditionally, so two instances creating the same document at once could both "win".
//! A document is therefore created by exactly one instance: the one whose atomic increment
//! of the key's creation counter (`<key>:created`) returns 1 writes the empty document;
//! every other instance waits for it to appear and only swaps once it exists. Should the
//! creator stall for longer than [`CREATE_WAIT_MS`] between its increment and its write
//! (it died, say), a waiting instance writes the empty document itself; a creator that then
//! wakes would overwrite what was changed in that window — the one case in which a change
//! can be lost, bounded by the changes of a new tenant's first [`CREATE_WAIT_MS`].

use kefu_engine::api::ApiError;
use serde::Serialize;
use serde::de::DeserializeOwned;
use spin_sdk::wit::wasi::keyvalue::atomics::{self, CasError};
use spin_sdk::wit::wasi::keyvalue::store::Bucket;

use crate::log;

/// How often a change is tried before it gives up (`503`).
pub const MAX_SWAPS: u32 = 200;
/// How long an instance waits for another to create a document before creating it itself.
pub const CREATE_WAIT_MS: u64 = 200;

fn internal(what: &str, e: impl std::fmt::Debug) -> ApiError {
    ApiError::internal(format!("{what}: {e:?}"))
}

fn sleep_ms(ms: u64) {
    wasi::clocks::monotonic_clock::subscribe_duration(ms * 1_000_000).block();
}

/// The document at `key`, or the empty one when there is none yet (nothing is written).
pub fn read<D: DeserializeOwned + Default>(bucket: &Bucket, key: &str) -> Result<D, ApiError> {
    match bucket
        .get(key)
        .map_err(|e| internal("reading key-value", e))?
    {
        Some(bytes) => serde_json::from_slice(&bytes).map_err(|e| internal(key, e)),
        None => Ok(D::default()),
    }
}

/// Makes sure the document at `key` exists (see the module's note on creation).
fn ensure<D: Serialize + Default>(bucket: &Bucket, key: &str) -> Result<(), ApiError> {
    let exists = |b: &Bucket| b.exists(key).map_err(|e| internal("reading key-value", e));
    if exists(bucket)? {
        return Ok(());
    }
    let empty = serde_json::to_vec(&D::default()).map_err(|e| internal(key, e))?;
    let n = atomics::increment(bucket, &format!("{key}:created"), 1)
        .map_err(|e| internal("counting key-value creations", e))?;
    if n == 1 {
        return bucket
            .set(key, &empty)
            .map_err(|e| internal("creating a key-value document", e));
    }
    let mut waited = 0;
    while waited < CREATE_WAIT_MS {
        sleep_ms(2);
        waited += 2;
        if exists(bucket)? {
            return Ok(());
        }
    }
    log(
        "warn",
        serde_json::json!({"msg": "key-value document created by a waiter: its creator stalled", "key": key}),
    );
    bucket
        .set(key, &empty)
        .map_err(|e| internal("creating a key-value document", e))
}

/// Applies `change` to the document at `key` and stores it with compare-and-swap, retrying
/// on a concurrent change; `change` may run several times, each time on the document as it
/// then is. It returns a value for the caller and whether to write (a change that decided
/// nothing needs changing — or refused — writes nothing).
pub fn update<D, T>(
    bucket: &Bucket,
    key: &str,
    mut change: impl FnMut(&mut D) -> Result<(T, bool), ApiError>,
) -> Result<T, ApiError>
where
    D: Serialize + DeserializeOwned + Default,
{
    for attempt in 0..MAX_SWAPS {
        let cas = atomics::Cas::new(bucket, key).map_err(|e| internal("reading key-value", e))?;
        let current = cas
            .current()
            .map_err(|e| internal("reading key-value", e))?;
        let Some(bytes) = current else {
            // Never swap an absent key (see above): create it, then read it again.
            ensure::<D>(bucket, key)?;
            continue;
        };
        let mut doc: D = serde_json::from_slice(&bytes).map_err(|e| internal(key, e))?;
        let (value, write) = change(&mut doc)?;
        if !write {
            return Ok(value);
        }
        let bytes = serde_json::to_vec(&doc).map_err(|e| internal(key, e))?;
        match atomics::swap(cas, &bytes) {
            Ok(()) => return Ok(value),
            Err(CasError::CasFailed(_)) => {
                // Spread the losers out so the next round has fewer of them.
                let cap = 1u64 << attempt.min(4);
                sleep_ms(wasi::random::random::get_random_u64() % (cap + 1));
            }
            Err(CasError::StoreError(e)) => return Err(internal("storing key-value", e)),
        }
    }
    Err(ApiError::new(
        503,
        "tenant_state_busy",
        "the tenant's shared state changed too often to store this; try again",
    ))
}
