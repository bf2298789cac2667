//! The Spin benchmark's baseline: a pass-through component that forwards every request to
//! the `upstream` variable's origin (the mock provider) unchanged and answers with what came
//! back. Kefu's Spin component is measured against it on the same Spin (`kefu-load spin`),
//! so the runtime's own cost (routing a request into an instance, an outbound request)
//! cancels out and what remains is Kefu's.

// spin-sdk's macro writes the component's `#[export_name]` exports.
#[allow(unsafe_code)]
mod entry {
    use spin_sdk::http::{Request, Response, send};
    use spin_sdk::http_component;

    /// Forwards the request (method, path and query, content type, authorization, body) to
    /// `upstream`; answers `GET /healthz` itself, so a runner can tell when it serves.
    #[http_component]
    async fn forward(req: Request) -> anyhow::Result<Response> {
        if req.path() == "/healthz" {
            return Ok(Response::new(200, "ok"));
        }
        let upstream = spin_sdk::variables::get("upstream")?;
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
        let resp: Response = send(out.build()).await?;
        Ok(resp)
    }
}
