//! Conversations and configurations in Spin key-value (the `default` store), made safe for
//! concurrent instances with the store's compare-and-swap.
//!
//! Keys:
//! - `tenant:<id>`: the tenant's configuration document (as on Workers' KV);
//! - `conv:<id>`: the conversation's state ([`Conversation::encode`]);
//! - `conv:<id>:m:<seq>`: each message ([`Message::encode`]), zero-padded so keys sort.
//!
//! **The guarantee.** Every change to a conversation is a read–modify–swap of `conv:<id>`:
//! two messages posted together on different instances both read the same state, one swap
//! wins, and the other reads again and retries — so each message gets its own sequence
//! number in one order and none is lost. A message's row is written after its swap, by the
//! only writer that holds its number; should an instance die between the two writes, the
//! message is still in the state's window and the transcript falls back to it.
//!
//! The compare-and-swap always runs against a value read first (`current`) of a key that
//! exists. A conversation is created only under an id the component has just drawn (128
//! random bits; a client can continue a conversation, never name a new one), so no two
//! instances create the same key — which matters because Spin's SQLite-backed store swaps
//! an absent key unconditionally.
//!
//! **Its limits, beside Workers'.** On Workers one Durable Object runs a conversation's turns
//! one after another; on Spin each request runs on its own, so two turns of one conversation
//! may run at the same time (each sees the messages stored before it started; their replies
//! are both stored, in the order they finish).
//!
//! A tenant's gateway state (breakers, quotas, usage) and webhook outbox are documents of
//! their own, changed the same way: see [`crate::shared`], [`crate::gateway`] and
//! [`crate::webhooks`] for their guarantees.

use kefu_engine::api::ApiError;
use kefu_engine::{Conversation, ConversationId, Message, TenantConfig, TenantId};
use spin_sdk::wit::wasi::keyvalue::atomics::{self, CasError};
use spin_sdk::wit::wasi::keyvalue::store::{self, Bucket};

/// How often a change is retried when another instance changed the conversation first.
const MAX_SWAPS: usize = 64;

fn internal(what: &str, e: impl std::fmt::Debug) -> ApiError {
    ApiError::internal(format!("{what}: {e:?}"))
}

/// The component's key-value store.
pub struct Kv {
    bucket: Bucket,
}

fn state_key(id: &ConversationId) -> String {
    format!("conv:{}", id.as_str())
}

fn message_key(id: &ConversationId, seq: u32) -> String {
    format!("conv:{}:m:{seq:010}", id.as_str())
}

impl Kv {
    /// Opens the `default` store (the manifest must grant it).
    pub fn open() -> Result<Self, ApiError> {
        let bucket = store::open("default").map_err(|e| internal("opening key-value", e))?;
        Ok(Self { bucket })
    }

    /// The store itself, for the per-tenant documents of [`crate::shared`].
    pub fn bucket(&self) -> &Bucket {
        &self.bucket
    }

    /// A value as text, if the key exists.
    pub fn get_text(&self, key: &str) -> Result<Option<String>, ApiError> {
        let bytes = self
            .bucket
            .get(key)
            .map_err(|e| internal("reading key-value", e))?;
        Ok(bytes.map(|b| String::from_utf8_lossy(&b).into_owned()))
    }

    /// Stores a cache entry (a failure only costs a later re-read, so it is not reported).
    pub fn set_text(&self, key: &str, value: &str) {
        let _ = self.bucket.set(key, value.as_bytes());
    }

    /// Notes that `who` (`visitor` or `agent`) is typing in the conversation until
    /// `until_ms`; live-update streams pass it on ([`Kv::typing`]).
    pub fn set_typing(
        &self,
        id: &ConversationId,
        who: &str,
        until_ms: u64,
    ) -> Result<(), ApiError> {
        self.bucket
            .set(
                &format!("conv:{}:typing:{who}", id.as_str()),
                &until_ms.to_le_bytes(),
            )
            .map_err(|e| internal("storing typing", e))
    }

    /// Until when `who` is typing in the conversation, if they said so.
    pub fn typing(&self, id: &ConversationId, who: &str) -> Option<u64> {
        let bytes = self
            .bucket
            .get(&format!("conv:{}:typing:{who}", id.as_str()))
            .ok()??;
        Some(u64::from_le_bytes(bytes.get(..8)?.try_into().ok()?))
    }

    /// Applies configuration writes in order ([`kefu_engine::config_history`]).
    pub fn apply(&self, ops: Vec<kefu_engine::config_history::KvOp>) -> Result<(), ApiError> {
        use kefu_engine::config_history::KvOp;
        for op in ops {
            match op {
                KvOp::Put(key, value) => self
                    .bucket
                    .set(&key, value.as_bytes())
                    .map_err(|e| internal("writing key-value", e))?,
                // Only frees space: a failure is harmless.
                KvOp::Delete(key) => {
                    let _ = self.bucket.delete(&key);
                }
            }
        }
        Ok(())
    }

    /// The tenant's stored configuration document, if any.
    pub fn config_document(&self, tenant: &TenantId) -> Result<Option<String>, ApiError> {
        self.get_text(&kefu_engine::config_history::document_key(tenant))
    }

    /// The conversation, if it exists under `tenant` (another tenant's does not exist).
    pub fn load(
        &self,
        id: &ConversationId,
        tenant: &TenantId,
    ) -> Result<Option<Conversation>, ApiError> {
        let Some(bytes) = self
            .bucket
            .get(&state_key(id))
            .map_err(|e| internal("reading the conversation", e))?
        else {
            return Ok(None);
        };
        let c = Conversation::decode(&bytes).map_err(|e| internal("decoding", e))?;
        Ok((c.tenant() == tenant).then_some(c))
    }

    /// Applies `change` to the conversation (a new one when it does not exist and `create`
    /// holds) and stores the result with compare-and-swap, retrying on a concurrent change;
    /// then writes the messages the change recorded. `change` may run several times, on the
    /// state as it then is; it returns the messages it recorded and a value for the caller.
    pub fn change<T>(
        &self,
        id: &ConversationId,
        tenant: &TenantId,
        create: Option<kefu_engine::Timestamp>,
        mut change: impl FnMut(&mut Conversation) -> Result<(Vec<Message>, T), ApiError>,
    ) -> Result<(Conversation, Vec<Message>, T, bool), ApiError> {
        let key = state_key(id);
        for _ in 0..MAX_SWAPS {
            // Events the change stages count only once its swap wins.
            crate::webhooks::discard_staged();
            let cas = atomics::Cas::new(&self.bucket, &key)
                .map_err(|e| internal("reading the conversation", e))?;
            let current = cas
                .current()
                .map_err(|e| internal("reading the conversation", e))?;
            let (mut conversation, created) = match current {
                Some(bytes) => {
                    let c = Conversation::decode(&bytes).map_err(|e| internal("decoding", e))?;
                    if c.tenant() != tenant {
                        return Err(ApiError::conversation_not_found());
                    }
                    (c, false)
                }
                None => match create {
                    Some(now) => (Conversation::new(id.clone(), tenant.clone(), now), true),
                    None => return Err(ApiError::conversation_not_found()),
                },
            };
            let (messages, value) = change(&mut conversation)?;
            match atomics::swap(cas, &conversation.encode()) {
                Ok(()) => {
                    for m in &messages {
                        self.bucket
                            .set(&message_key(id, m.seq), &m.encode())
                            .map_err(|e| internal("storing a message", e))?;
                    }
                    crate::inbox::touch(&conversation);
                    crate::webhooks::commit_staged(tenant);
                    return Ok((conversation, messages, value, created));
                }
                Err(CasError::CasFailed(_)) => continue,
                Err(CasError::StoreError(e)) => {
                    return Err(internal("storing the conversation", e));
                }
            }
        }
        Err(ApiError::new(
            503,
            "conversation_busy",
            "the conversation changed too often to store this; try again",
        ))
    }

    /// Every message of the conversation, in order.
    pub fn transcript(&self, conversation: &Conversation) -> Result<Vec<Message>, ApiError> {
        self.messages_after(conversation, 0)
    }

    /// The conversation's messages after sequence number `after`, in order.
    pub fn messages_after(
        &self,
        conversation: &Conversation,
        after: u32,
    ) -> Result<Vec<Message>, ApiError> {
        let id = conversation.id();
        let mut out = Vec::new();
        for seq in after.saturating_add(1)..=conversation.message_count() {
            let stored = self
                .bucket
                .get(&message_key(id, seq))
                .map_err(|e| internal("reading a message", e))?;
            let message = match stored {
                Some(bytes) => Some(Message::decode(&bytes).map_err(|e| internal("decoding", e))?),
                // Written to the state but not (yet) as a row: the window has it.
                None => conversation.window().iter().find(|m| m.seq == seq).cloned(),
            };
            out.extend(message);
        }
        Ok(out)
    }
}

/// The tenant's configuration: its stored document, else the built-in default from the
/// component's variables (`provider_base_url`, `model`).
pub fn config(kv: &Kv, tenant: &TenantId) -> Result<TenantConfig, ApiError> {
    let config = match kv.config_document(tenant)? {
        Some(json) => kefu_engine::api::stored_config(tenant, &json)?,
        // No stored document: the built-in configuration, for the tenants the deployment
        // opens (`404 tenant_not_found` for any other name).
        None => crate::deployment().builtin_config(tenant)?,
    };
    // A request to a tenant with webhooks also retries its due deliveries, after answering;
    // one with plugins has its stored events heard by them (the config read once, here).
    crate::webhooks::touched(tenant, &config);
    Ok(config)
}
