"""A webhook receiver for the runtime tests: verifies Kefu's webhooks with the official
Standard Webhooks library (an implementation independent of Kefu's) and records them.

Usage: webhook_receiver.py PORT SECRET
  PORT    the loopback port to listen on (0: any free one)
  SECRET  the endpoints' signing secret (whsec_...)

Prints "listening http://127.0.0.1:PORT" once it serves. Loopback only.

Every POST is verified (headers and body, with `standardwebhooks`), recorded, and answered
by its path:
  /fail-twice   503 to the first two POSTs on this path (whatever their message), then 200
  /gone         410 Gone (the sender must stop sending here)
  /status/NNN   status NNN
  anything else 200
A POST that fails verification is answered 400 (and recorded as not verified). A query
parameter `delay_ms=N` makes the answer wait N ms (at most 20 000), to play a slow receiver.

GET /received answers every recorded POST, oldest first, as JSON:
  [{"path", "query", "webhook_id", "webhook_timestamp", "verified", "error", "answered",
    "payload", "received_at_ms"}]
"""

import json
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

from standardwebhooks.webhooks import Webhook

MAX_BODY = 1 << 20

lock = threading.Lock()
received = []
posts_by_path = {}


def answer_for(path, nth):
    """The status for the nth (0-based) POST on this path."""
    if path == "/fail-twice":
        return 503 if nth < 2 else 200
    if path == "/gone":
        return 410
    if path.startswith("/status/"):
        try:
            code = int(path[len("/status/"):])
            if 200 <= code <= 599:
                return code
        except ValueError:
            pass
    return 200


class Handler(BaseHTTPRequestHandler):
    webhook = None  # set in main()
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):  # quiet
        pass

    def send_json(self, status, body):
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self):
        if urlsplit(self.path).path == "/received":
            with lock:
                snapshot = list(received)
            self.send_json(200, snapshot)
        else:
            self.send_json(404, {"error": "not found"})

    def do_POST(self):
        url = urlsplit(self.path)
        length = int(self.headers.get("content-length") or 0)
        body = self.rfile.read(min(length, MAX_BODY))
        headers = {k.lower(): v for k, v in self.headers.items()}
        verified, error, payload = False, None, None
        try:
            payload = self.webhook.verify(body, headers)
            verified = True
        except Exception as e:  # the library's verification errors and malformed headers
            error = f"{type(e).__name__}: {e}"
            try:
                payload = json.loads(body)
            except ValueError:
                payload = None
        with lock:
            nth = posts_by_path.get(url.path, 0)
            posts_by_path[url.path] = nth + 1
            status = answer_for(url.path, nth) if verified else 400
            received.append(
                {
                    "path": url.path,
                    "query": url.query,
                    "webhook_id": headers.get("webhook-id"),
                    "webhook_timestamp": headers.get("webhook-timestamp"),
                    "verified": verified,
                    "error": error,
                    "answered": status,
                    "payload": payload,
                    "received_at_ms": int(time.time() * 1000),
                }
            )
        delay = parse_qs(url.query).get("delay_ms", ["0"])[0]
        try:
            time.sleep(min(max(int(delay), 0), 20_000) / 1000)
        except ValueError:
            pass
        self.send_json(status, {"ok": 200 <= status < 300})


def main():
    if len(sys.argv) != 3:
        print(__doc__, file=sys.stderr)
        sys.exit(2)
    port, secret = int(sys.argv[1]), sys.argv[2]
    Handler.webhook = Webhook(secret)
    server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
    server.daemon_threads = True
    print(f"listening http://127.0.0.1:{server.server_address[1]}", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
