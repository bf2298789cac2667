//! The Spin benchmark's baselines, on the same Spin as Kefu's component (`kefu-load spin`):
//!
//! - **pass-through**: every request is forwarded to the `upstream` variable's origin (the
//!   mock provider) unchanged, and what came back is the answer; against it Kefu's gateway,
//!   so the runtime's own cost (an instance per request, an outbound request) cancels out.
//! - **SQLite chat** (`POST /api/v1/chat`, `GET /api/v1/conversations/{id}`): the least a
//!   Spin chat API with state can do, the Spin twin of `tests/bench/do-chat-host.mjs`: store
//!   the visitor's message in Spin's SQLite, read the last 20 messages back as the prompt,
//!   call the provider (OpenAI shape), store the reply, answer JSON. Against it Kefu's chat
//!   turn.
//!
//! `GET /healthz` is answered here, so a runner can tell when it serves.

// spin-sdk's macro writes the component's `#[export_name]` exports.
#[allow(unsafe_code)]
mod entry {
    use spin_sdk::http::{Method, Request, Response, send};
    use spin_sdk::http_component;

    #[http_component]
    async fn handle(req: Request) -> anyhow::Result<Response> {
        let upstream = spin_sdk::variables::get("upstream")?;
        match (req.method(), req.path()) {
            (_, "/healthz") => Ok(Response::new(200, "ok")),
            (Method::Post, "/api/v1/chat") => super::chat::turn(&upstream, req.body()).await,
            (Method::Get, path) if path.starts_with("/api/v1/conversations/") => {
                super::chat::transcript(&path["/api/v1/conversations/".len()..])
            }
            _ => forward(&upstream, req).await,
        }
    }

    /// Forwards the request (method, path and query, content type, authorization, body).
    async fn forward(upstream: &str, req: Request) -> anyhow::Result<Response> {
        let path = req.path_and_query().unwrap_or("/");
        let mut out = Request::builder();
        out.method(req.method().clone())
            .uri(format!("{upstream}{path}"))
            .body(req.body().to_vec());
        for name in ["content-type", "authorization"] {
            if let Some(v) = req.header(name).and_then(|v| v.as_str()) {
                out.header(name, v);
            }
        }
        Ok(send(out.build()).await?)
    }
}

/// The SQLite chat baseline.
mod chat {
    use serde_json::{Value, json};
    use spin_sdk::http::{Method, Request, Response, send};
    use spin_sdk::sqlite::{Connection, Value as Sql};

    fn json_response(status: u16, body: &Value) -> Response {
        Response::builder()
            .status(status)
            .header("content-type", "application/json")
            .body(body.to_string())
            .build()
    }

    fn now_ms() -> i64 {
        let t = wasi::clocks::wall_clock::now();
        i64::try_from(t.seconds).unwrap_or(0) * 1000 + i64::from(t.nanoseconds / 1_000_000)
    }

    fn open() -> anyhow::Result<Connection> {
        let db = Connection::open_default()?;
        db.execute(
            "CREATE TABLE IF NOT EXISTS bench_messages (conversation TEXT NOT NULL, \
             seq INTEGER NOT NULL, role TEXT NOT NULL, text TEXT NOT NULL, \
             created_at INTEGER NOT NULL, PRIMARY KEY (conversation, seq))",
            &[],
        )?;
        Ok(db)
    }

    fn store(db: &Connection, id: &str, role: &str, text: &str) -> anyhow::Result<Value> {
        let created_at = now_ms();
        let seq: i64 = db
            .execute(
                "INSERT INTO bench_messages (conversation, seq, role, text, created_at) \
                 SELECT ?, COALESCE(MAX(seq), 0) + 1, ?, ?, ? FROM bench_messages \
                 WHERE conversation = ? RETURNING seq",
                &[
                    Sql::Text(id.to_owned()),
                    Sql::Text(role.to_owned()),
                    Sql::Text(text.to_owned()),
                    Sql::Integer(created_at),
                    Sql::Text(id.to_owned()),
                ],
            )?
            .rows()
            .next()
            .and_then(|r| r.get::<i64>("seq"))
            .unwrap_or(0);
        Ok(
            json!({"seq": seq, "role": role, "parts": [{"type": "text", "text": text}], "created_at": created_at}),
        )
    }

    /// One chat turn: store, prompt, provider call, store, answer.
    pub(crate) async fn turn(upstream: &str, body: &[u8]) -> anyhow::Result<Response> {
        let Ok(input) = serde_json::from_slice::<Value>(body) else {
            return Ok(json_response(
                400,
                &json!({"error": {"code": "invalid_json"}}),
            ));
        };
        let Some(text) = input["message"].as_str().filter(|t| !t.trim().is_empty()) else {
            return Ok(json_response(
                400,
                &json!({"error": {"code": "missing_field"}}),
            ));
        };
        let id = match input["conversation_id"].as_str() {
            Some(id) => id.to_owned(),
            None => format!(
                "{:016x}{:016x}",
                wasi::random::random::get_random_u64(),
                wasi::random::random::get_random_u64()
            ),
        };
        let db = open()?;
        let message = store(&db, &id, "visitor", text)?;
        let mut history: Vec<Value> = db
            .execute(
                "SELECT role, text FROM bench_messages WHERE conversation = ? \
                 ORDER BY seq DESC LIMIT 20",
                &[Sql::Text(id.clone())],
            )?
            .rows()
            .map(|r| {
                let role = if r.get::<&str>("role") == Some("visitor") {
                    "user"
                } else {
                    "assistant"
                };
                json!({"role": role, "content": r.get::<&str>("text").unwrap_or_default()})
            })
            .collect();
        history.reverse();
        let request = Request::builder()
            .method(Method::Post)
            .uri(format!("{upstream}/v1/chat/completions"))
            .header("content-type", "application/json")
            .body(json!({"model": "mock-gpt", "messages": history}).to_string())
            .build();
        let resp: Response = send(request).await?;
        if *resp.status() != 200 {
            return Ok(json_response(
                502,
                &json!({"error": {"code": "provider_error"}}),
            ));
        }
        let answer: Value = serde_json::from_slice(resp.body())?;
        let reply_text = answer["choices"][0]["message"]["content"]
            .as_str()
            .unwrap_or_default();
        let reply = store(&db, &id, "bot", reply_text)?;
        Ok(json_response(
            200,
            &json!({"conversation_id": id, "message": message, "reply": reply, "usage": answer["usage"]}),
        ))
    }

    /// The stored messages of one conversation.
    pub(crate) fn transcript(id: &str) -> anyhow::Result<Response> {
        let db = open()?;
        let messages: Vec<Value> = db
            .execute(
                "SELECT seq, role, text FROM bench_messages WHERE conversation = ? ORDER BY seq",
                &[Sql::Text(id.to_owned())],
            )?
            .rows()
            .map(|r| {
                json!({"seq": r.get::<i64>("seq"), "role": r.get::<&str>("role"), "text": r.get::<&str>("text")})
            })
            .collect();
        Ok(json_response(200, &json!({"id": id, "messages": messages})))
    }
}
