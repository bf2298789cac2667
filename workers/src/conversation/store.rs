//! The conversation's storage in the object's SQLite: its state and messages written in one
//! synchronous step, the turn records, the owner, the first-come turn queue, and the
//! engine's changes applied to it ([`crate::provider::ConversationStore`]).

use super::*;

/// A first-come, first-served async lock: turns run one at a time, in arrival order.
#[derive(Default)]
pub(super) struct TurnQueue {
    busy: Cell<bool>,
    waiting: RefCell<VecDeque<oneshot::Sender<()>>>,
}

pub(super) struct TurnGuard {
    inner: Rc<Inner>,
}

impl TurnQueue {
    pub(super) async fn acquire(inner: &Rc<Inner>) -> TurnGuard {
        let queue = &inner.turns;
        if queue.busy.replace(true) {
            let (tx, rx) = oneshot::channel();
            queue.waiting.borrow_mut().push_back(tx);
            // The guard that wakes us hands the lock over without releasing it.
            let _ = rx.await;
        }
        TurnGuard {
            inner: inner.clone(),
        }
    }
}

impl Drop for TurnGuard {
    fn drop(&mut self) {
        let queue = &self.inner.turns;
        loop {
            let next = queue.waiting.borrow_mut().pop_front();
            match next {
                // A waiter whose request went away cannot take the lock: try the next one.
                Some(tx) => {
                    if tx.send(()).is_ok() {
                        return;
                    }
                }
                None => {
                    queue.busy.set(false);
                    return;
                }
            }
        }
    }
}

/// Held while a chat turn is under way: the inbox updates it asks for wait until the last
/// hold is released, then go as one.
pub(super) struct InboxHold {
    inner: Rc<Inner>,
}

impl InboxHold {
    pub(super) fn new(inner: &Rc<Inner>) -> Self {
        inner.inbox_hold.set(inner.inbox_hold.get() + 1);
        Self {
            inner: inner.clone(),
        }
    }
}

impl Drop for InboxHold {
    fn drop(&mut self) {
        let held = self.inner.inbox_hold.get().saturating_sub(1);
        self.inner.inbox_hold.set(held);
        if held == 0 && self.inner.inbox_dirty.replace(false) {
            self.inner.update_inbox();
        }
    }
}

impl Inner {
    pub(super) fn load(&self) -> Result<Option<Conversation>, ApiError> {
        if let Some(c) = self.conversation.borrow().as_ref() {
            return Ok(Some(c.clone()));
        }
        let cursor = self
            .sql
            .exec("SELECT state FROM conversation WHERE id = 0", None)
            .map_err(internal)?;
        let Some(row) = cursor.raw().next() else {
            return Ok(None);
        };
        let row = row.map_err(internal)?;
        let Some(SqlStorageValue::Blob(bytes)) = row.into_iter().next() else {
            return Err(ApiError::internal("conversation state is not a blob"));
        };
        let mut c = Conversation::decode(&bytes).map_err(internal)?;
        // Conversations stored before the owner moved into the state keep it in its own
        // table: read it into the state, which is what every check looks at.
        if c.owner().is_none()
            && let Some(owner) = self.owner_row()?
        {
            c.set_owner(&owner);
        }
        *self.conversation.borrow_mut() = Some(c.clone());
        Ok(Some(c))
    }

    /// Applies `change` (which records one message) to the conversation and persists the
    /// message together with the new state, in one synchronous step (so atomically), then
    /// reports its events. Nothing changes if either fails.
    pub(super) fn record(
        &self,
        conversation: Conversation,
        config: &TenantConfig,
        change: impl FnOnce(&mut Conversation) -> Result<kefu_engine::Recorded, ApiError>,
    ) -> Result<Message, ApiError> {
        let changed = self.record_changed(conversation, config, |c| {
            let r = change(c)?;
            Ok(Changed {
                messages: vec![r.message],
                events: r.events,
            })
        })?;
        changed
            .messages
            .into_iter()
            .next()
            .ok_or_else(|| ApiError::internal("the change recorded no message"))
    }

    /// Applies a handoff or agent `change` and persists every message it recorded together
    /// with the new state, in one synchronous step. Nothing changes if either fails.
    pub(super) fn record_changed(
        &self,
        mut conversation: Conversation,
        config: &TenantConfig,
        change: impl FnOnce(&mut Conversation) -> Result<Changed, ApiError>,
    ) -> Result<Changed, ApiError> {
        let changed = change(&mut conversation)?;
        let tenant = conversation.tenant().clone();
        let write = || -> worker::Result<()> {
            for message in &changed.messages {
                let created_at = i64::try_from(message.created_at.as_millis()).unwrap_or(i64::MAX);
                self.sql.exec(
                    "INSERT INTO messages (seq, role, body, created_at) VALUES (?, ?, ?, ?)",
                    vec![
                        i64::from(message.seq).into(),
                        message.role.as_str().into(),
                        message.encode().into(),
                        created_at.into(),
                    ],
                )?;
            }
            self.sql.exec(
                "INSERT INTO conversation (id, state) VALUES (0, ?) ON CONFLICT (id) DO UPDATE SET state = excluded.state",
                vec![conversation.encode().into()],
            )?;
            Ok(())
        };
        match write() {
            Ok(()) => {
                *self.conversation.borrow_mut() = Some(conversation);
                // Messages are the transcript's, and each chat turn has its own line: a line
                // per message would double what the logs say, and `console.log` is among the
                // costliest calls a turn makes inside workerd (`make profile`). Spin logs none.
                for e in &changed.events {
                    if !matches!(e, kefu_engine::Event::MessageCreated { .. }) {
                        log("info", e.to_json());
                    }
                }
                self.emit(&tenant, config, &changed.events);
                self.play_to_plugins(&tenant, config, &changed.events);
                self.update_inbox();
                for m in &changed.messages {
                    self.broadcast(&LiveUpdate::message(m), m.role == kefu_engine::Role::Note);
                }
                let status_moved = changed.events.iter().any(|e| {
                    matches!(
                        e,
                        kefu_engine::Event::StatusChanged { .. }
                            | kefu_engine::Event::Assigned { .. }
                    )
                });
                let status = status_moved
                    .then(|| self.conversation.borrow().as_ref().map(LiveUpdate::status))
                    .flatten();
                if let Some(update) = status {
                    self.broadcast(&update, false);
                }
                Ok(changed)
            }
            Err(e) => {
                *self.conversation.borrow_mut() = None;
                Err(ApiError::internal(format!(
                    "storing the change failed: {e}"
                )))
            }
        }
    }

    /// Tells the tenant's inbox where this conversation stands now (after the answer). While
    /// a chat turn is under way it waits for the turn's end ([`InboxHold`]): a turn's
    /// visitor message and reply reach the inbox in one call, not one each.
    pub(super) fn update_inbox(&self) {
        if self.inbox_hold.get() > 0 {
            self.inbox_dirty.set(true);
            return;
        }
        let Some(snapshot) = self.conversation.borrow().clone() else {
            return;
        };
        let visitor = self.owner().ok().flatten();
        if let Some(rest) = crate::inbox::touch(&self.env, &snapshot, visitor.as_deref()) {
            self.state.wait_until(rest);
        }
    }

    /// Hands stored events to the tenant's webhooks, after the visitor's answer (never in
    /// its way), and only when the tenant has an enabled endpoint.
    pub(super) fn emit(
        &self,
        tenant: &TenantId,
        config: &TenantConfig,
        events: &[kefu_engine::Event],
    ) {
        if events.is_empty() || !config.webhooks.iter().any(|w| w.enabled) {
            return;
        }
        let (env, tenant, config, events) = (
            self.env.clone(),
            tenant.clone(),
            config.clone(),
            events.to_vec(),
        );
        self.state.wait_until(async move {
            crate::webhooks::emit(&env, &tenant, &config, &events).await
        });
    }

    /// Plays stored events to the tenant's plugins that observe events (`on-event`), after
    /// the answer (never in its way), and applies what they ask for (a tag, a message, a
    /// handoff) like any change. Events of the plugins' own actions are not played again.
    pub(super) fn play_to_plugins(
        &self,
        tenant: &TenantId,
        config: &TenantConfig,
        events: &[kefu_engine::Event],
    ) {
        if self.hearing.get() || events.is_empty() || !config.plugins.iter().any(|p| p.enabled) {
            return;
        }
        let Some(me) = self.me.upgrade() else { return };
        let (tenant, config, events) = (tenant.clone(), config.clone(), events.to_vec());
        self.state
            .wait_until(async move { me.hear(&tenant, &config, events).await });
    }

    /// Whether a reader may see (or a visitor act on) the conversation: agents (`notes`)
    /// always; a visitor when it is anonymous or theirs (`visitor`: their verified id, empty
    /// or absent without one).
    pub(super) fn check_reader(
        &self,
        notes: bool,
        visitor: Option<String>,
    ) -> Result<(), ApiError> {
        if notes {
            return Ok(());
        }
        let visitor = visitor.filter(|v| !v.is_empty());
        kefu_engine::identity::may_continue(self.owner()?.as_deref(), visitor.as_deref())
            .map_err(|e| api::identity_error(&e))
    }

    /// The verified visitor the conversation belongs to, if any.
    pub(super) fn owner(&self) -> Result<Option<String>, ApiError> {
        Ok(self.load()?.and_then(|c| c.owner().map(str::to_owned)))
    }

    /// The owner as conversations stored it before it moved into the state.
    pub(super) fn owner_row(&self) -> Result<Option<String>, ApiError> {
        let cursor = self
            .sql
            .exec("SELECT visitor FROM owner WHERE id = 0", None)
            .map_err(internal)?;
        for row in cursor.raw() {
            if let Some(SqlStorageValue::String(v)) = row.map_err(internal)?.into_iter().next() {
                return Ok(Some(v));
            }
        }
        Ok(None)
    }

    /// Every stored turn record, by visitor message (records stored before turn records
    /// existed read as their attempts).
    pub(super) fn records(&self) -> Result<Vec<TurnRecord>, ApiError> {
        let cursor = self
            .sql
            .exec("SELECT seq, trace FROM traces ORDER BY seq", None)
            .map_err(internal)?;
        let mut out = Vec::new();
        for row in cursor.raw() {
            let row = row.map_err(internal)?;
            if let [
                SqlStorageValue::Integer(seq),
                SqlStorageValue::String(trace),
            ] = row.as_slice()
                && let Some(record) = u32::try_from(*seq)
                    .ok()
                    .and_then(|seq| TurnRecord::from_stored(seq, trace))
            {
                out.push(record);
            }
        }
        Ok(out)
    }

    /// Completes a visitor turn's record (the state it changed, how it ended) and stores it.
    /// Stores a visitor turn's record (complete: the engine's chat turn filled it in).
    pub(super) fn store_record(&self, record: TurnRecord) {
        if let Err(e) = self.sql.exec(
            "INSERT INTO traces (seq, trace) VALUES (?, ?) ON CONFLICT (seq) DO UPDATE SET trace = excluded.trace",
            vec![i64::from(record.seq).into(), record.to_stored().into()],
        ) {
            log(
                "error",
                json!({"msg": "turn record not stored", "seq": record.seq, "error": e.to_string()}),
            );
        }
    }

    pub(super) fn transcript(&self) -> Result<Vec<Message>, ApiError> {
        let cursor = self
            .sql
            .exec("SELECT body FROM messages ORDER BY seq", None)
            .map_err(internal)?;
        let mut out = Vec::new();
        for row in cursor.raw() {
            let row = row.map_err(internal)?;
            match row.into_iter().next() {
                Some(SqlStorageValue::Blob(bytes)) => {
                    out.push(Message::decode(&bytes).map_err(internal)?)
                }
                _ => return Err(ApiError::internal("transcript row is not a blob")),
            }
        }
        Ok(out)
    }
}

impl provider::ConversationStore for Rc<Inner> {
    fn await_turn(&self) -> LocalBoxFuture<'_, provider::TurnSlot> {
        Box::pin(async move {
            let guard = TurnQueue::acquire(self).await;
            (Box::new(guard) as Box<dyn core::any::Any>, self.load())
        })
    }

    fn apply(
        &self,
        change: &kefu_engine::chat::Change,
        config: &TenantConfig,
    ) -> Result<kefu_engine::chat::Applied, ApiError> {
        let latest = self.load()?.ok_or_else(ApiError::conversation_not_found)?;
        let mut effect = None;
        // A plugin's own actions are not played to plugins again, so plugins cannot loop.
        let hearing = !change.heard_by_plugins();
        if hearing {
            self.hearing.set(true);
        }
        let recorded = self.record_changed(latest, config, |c| {
            let e = change.apply(c, now(), config)?;
            let changed = Changed {
                messages: e.messages.clone(),
                events: e.events.clone(),
            };
            effect = Some(e);
            Ok(changed)
        });
        if hearing {
            self.hearing.set(false);
        }
        recorded?;
        let conversation = self
            .conversation
            .borrow()
            .clone()
            .ok_or_else(ApiError::conversation_not_found)?;
        Ok(kefu_engine::chat::Applied {
            conversation,
            effect: effect.unwrap_or_default(),
        })
    }

    fn store_record(&self, record: TurnRecord) {
        Inner::store_record(self, record);
    }

    fn read(&self) -> Result<Option<(Conversation, Vec<Message>)>, ApiError> {
        match self.load()? {
            Some(c) => Ok(Some((c, self.transcript()?))),
            None => Ok(None),
        }
    }
}
