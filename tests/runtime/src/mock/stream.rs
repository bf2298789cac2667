//! Scripted response bodies: streams with pauses, broken lines, mid-stream errors and cuts.

use std::collections::VecDeque;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, StreamBody};
use hyper::body::Frame;

use super::directives::Directives;
use super::{Body, BoxError};

/// One step of a scripted response body.
pub(crate) enum Step {
    Sleep(Duration),
    Send(Bytes),
    /// End the body with an error: hyper then drops the connection without the final empty
    /// chunk, so the client sees a broken body rather than a clean end.
    Abort,
}

/// A streamed answer in a format's framing, before faults are applied.
#[derive(Debug, Default)]
pub(crate) struct StreamPlan {
    /// Frames before the first content delta (role chunk, `message_start`, …).
    pub head: Vec<Bytes>,
    /// One frame per content delta (a word, or a tool-call argument fragment).
    pub content: Vec<Bytes>,
    /// Frames after the content (finish, usage, `[DONE]`, `message_stop`, …).
    pub tail: Vec<Bytes>,
    /// A frame with broken JSON (`malformed=1`).
    pub broken: Bytes,
    /// An in-stream error frame (`overload_mid_stream=1`).
    pub mid_error: Bytes,
}

impl StreamPlan {
    /// The steps for this plan under `d`: pauses before content frames, a stall, a broken
    /// frame or an error after the first, a cut after `cut_after`.
    pub(crate) fn steps(self, d: &Directives) -> Vec<Step> {
        let pause = d.chunk_delay_ms.map(Duration::from_millis);
        let mut steps: Vec<Step> = self.head.into_iter().map(Step::Send).collect();
        for (n, frame) in self.content.into_iter().enumerate() {
            if let Some(pause) = pause {
                steps.push(Step::Sleep(pause));
            }
            steps.push(Step::Send(frame));
            if n == 0 {
                if let Some(ms) = d.stall_ms {
                    steps.push(Step::Sleep(Duration::from_millis(ms)));
                }
                if d.malformed {
                    steps.push(Step::Send(self.broken.clone()));
                }
                if d.overload_mid_stream {
                    steps.push(Step::Send(self.mid_error));
                    return steps;
                }
            }
            if d.cut_after == Some(n + 1) {
                steps.push(Step::Abort);
                return steps;
            }
        }
        if let Some(pause) = pause
            && !self.tail.is_empty()
        {
            steps.push(Step::Sleep(pause));
        }
        steps.extend(self.tail.into_iter().map(Step::Send));
        steps
    }
}

/// `data: <json>\n\n`.
pub(crate) fn data_frame(json: &[u8]) -> Bytes {
    let mut out = Vec::with_capacity(json.len() + 8);
    out.extend_from_slice(b"data: ");
    out.extend_from_slice(json);
    out.extend_from_slice(b"\n\n");
    out.into()
}

/// `event: <name>\ndata: <json>\n\n`.
pub(crate) fn event_frame(name: &str, json: &[u8]) -> Bytes {
    let mut out = Vec::with_capacity(json.len() + name.len() + 16);
    out.extend_from_slice(b"event: ");
    out.extend_from_slice(name.as_bytes());
    out.extend_from_slice(b"\ndata: ");
    out.extend_from_slice(json);
    out.extend_from_slice(b"\n\n");
    out.into()
}

/// The first half of `json`, cut on a character boundary: JSON that never closes.
pub(crate) fn broken_json(json: &[u8]) -> &[u8] {
    let mut half = json.len() / 2;
    while half > 0 && (json[half] & 0b1100_0000) == 0b1000_0000 {
        half -= 1;
    }
    &json[..half]
}

pub(crate) fn stepped_body(steps: Vec<Step>) -> Body {
    let mut steps: VecDeque<Step> = steps.into();
    // Give hyper a chance to flush what was sent before the abort tears the connection down:
    // a body error discards whatever is still in its write buffer.
    if let Some(i) = steps.iter().position(|s| matches!(s, Step::Abort)) {
        steps.insert(i, Step::Sleep(Duration::from_millis(10)));
    }
    let stream = futures::stream::unfold(steps, |mut steps| async move {
        loop {
            match steps.pop_front()? {
                Step::Sleep(d) => tokio::time::sleep(d).await,
                Step::Send(bytes) => return Some((Ok(Frame::data(bytes)), steps)),
                Step::Abort => {
                    steps.clear();
                    let err: BoxError = "mock provider: connection cut on purpose".into();
                    return Some((Err(err), steps));
                }
            }
        }
    });
    StreamBody::new(stream).boxed_unsync()
}
