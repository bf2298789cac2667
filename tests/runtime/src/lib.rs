//! Runtime tests for Kefu: the real host, spoken to over HTTP.
//!
//! The engine's own tests run in milliseconds against a simulator; this crate checks what
//! they cannot: that a host (the Cloudflare Worker on workerd, and the Spin application on
//! real Spin or, where no Spin CLI is found, the Spin test host) wires the engine to real
//! sockets, storage and a real provider connection.
//!
//! - [`mock`]: a mock LLM provider on loopback speaking OpenAI, Anthropic, Gemini, Workers AI
//!   and Mistral wire formats, whose behaviour (errors, latency,
//!   cut or malformed streams) is scripted by directives inside the visitor's message.
//! - [`worker`]: starts Kefu on workerd (through Miniflare), with tenant configs seeded
//!   into local KV, and stops the whole process group again.
//! - [`spin`]: starts Kefu's Spin application on real Spin (or the test host), says which,
//!   and lists by name every scenario that does not run on Spin, with why.
//! - [`scenarios`]: the checks, written once against a base URL so every host runs the same.
//! - [`body_limits`]: request bodies over their route's limit, declared or chunked: `413`,
//!   nothing stored.
//! - [`config`]: the versioned tenant configuration: validation, effect, rollback.
//! - [`gateway`]: the gateway's scenarios (fallback, breakers, quotas, the OpenAI SDK) and
//!   the tenant configurations they need.
//! - [`handoff`]: human handoff and the agent actions, end to end.
//! - [`knowledge`]: the knowledge base: ingestion, recall@3, grounding, no-answer fallback.
//! - [`load`]: load generation for the benchmarks: many keep-alive connections for a bounded
//!   time, percentiles, workerd's resident memory, the soak's plot.
//! - [`machine`]: the engine's chat-turn machine as both hosts drive it: tag-only rules, the
//!   same replay on both runtimes, replays admitted by quotas.
//! - [`pages`]: the web pages and their headers, from the Worker's assets and Spin's file server.
//! - [`plugin_routes`]: the operators' plugin routes (listing, test calls) on the Worker.
//! - [`plugins`]: plugins in chat turns, on both runtimes.
//! - [`replay`]: the replay/debug console's API: turn records, replay, export.
//! - [`retrieval`]: the retrieval benchmark: a bilingual help center and customer questions,
//!   searched through the engine's plans on SQLite FTS5, beside plain FTS5 baselines.
//! - [`security`]: the attack suite: every trust-boundary attack performed over HTTP, and
//!   refused, beside the legitimate path.
//! - [`sse`]: a small Server-Sent Events reader used by the scenarios and the mock's tests.

pub mod attachments;
pub mod body_limits;
pub mod config;
pub mod drafts;
pub mod gateway;
pub mod handoff;
pub mod knowledge;
pub mod load;
pub mod machine;
pub mod mock;
pub mod pages;
pub mod plugin_routes;
pub mod plugins;
pub mod replay;
pub mod retrieval;
pub mod scenarios;
pub mod security;
pub mod spin;
pub mod sse;
pub mod summary;
pub mod webhooks;
pub mod worker;
