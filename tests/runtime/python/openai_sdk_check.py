"""Drives Kefu's OpenAI-compatible API with the official `openai` Python SDK.

Usage: openai_sdk_check.py BASE_URL API_KEY

Checks, in both modes, that the SDK parses Kefu's answers unchanged: a whole completion
(content, finish reason, usage, response headers naming the target), a stream with
`stream_options.include_usage` (deltas that concatenate to the reply, a finish reason, a
final usage chunk), `models.list()`, and that a wrong key raises the SDK's
AuthenticationError. Prints one JSON line of findings and exits non-zero on any failure.
"""

import json
import sys

import openai


def main() -> int:
    base_url, api_key = sys.argv[1], sys.argv[2]
    client = openai.OpenAI(base_url=f"{base_url}/v1", api_key=api_key, max_retries=0, timeout=30)
    found = {}

    raw = client.chat.completions.with_raw_response.create(
        model="kefu",
        messages=[
            {"role": "system", "content": "You are a test."},
            {"role": "user", "content": "hello from the sdk"},
        ],
    )
    completion = raw.parse()
    text = completion.choices[0].message.content
    assert text.startswith("Echo: hello from the sdk"), text
    assert completion.choices[0].finish_reason == "stop", completion.choices[0].finish_reason
    assert completion.usage.total_tokens > 0, completion.usage
    assert raw.headers.get("x-kefu-target"), dict(raw.headers)
    assert raw.headers.get("x-kefu-attempts") == "1", dict(raw.headers)
    found["json"] = {"text": text, "target": raw.headers["x-kefu-target"]}

    stream = client.chat.completions.create(
        model="kefu",
        messages=[{"role": "user", "content": "stream please"}],
        stream=True,
        stream_options={"include_usage": True},
    )
    pieces, finish, usage = [], None, None
    for chunk in stream:
        if chunk.usage is not None:
            usage = chunk.usage
        for choice in chunk.choices:
            if choice.delta.content:
                pieces.append(choice.delta.content)
            if choice.finish_reason:
                finish = choice.finish_reason
    streamed = "".join(pieces)
    assert streamed.startswith("Echo: stream please"), streamed
    assert len(pieces) >= 2, pieces
    assert finish == "stop", finish
    assert usage is not None and usage.completion_tokens > 0, usage
    found["stream"] = {"text": streamed, "chunks": len(pieces)}

    models = [m.id for m in client.models.list()]
    assert "kefu" in models, models
    found["models"] = models

    bad = openai.OpenAI(base_url=f"{base_url}/v1", api_key=api_key[:-1] + "x", max_retries=0)
    try:
        bad.chat.completions.create(model="kefu", messages=[{"role": "user", "content": "hi"}])
        raise AssertionError("a wrong key was accepted")
    except openai.AuthenticationError as e:
        found["wrong_key"] = e.status_code

    print(json.dumps(found))
    return 0


if __name__ == "__main__":
    sys.exit(main())
