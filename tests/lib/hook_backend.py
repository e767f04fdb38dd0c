"""A backend for the hook tests (tests/hooks): an HTTP/1.1 server on a free
loopback port, in threads of the test process, that answers chorusd's proxy
hooks and receives its webhooks, and records every request.

The path says how to answer a proxy hook:
  /allow              {"result":{}}
  /modify             {"result":{"data":{"modified":<the data it got>}}}
  /refuse             {"error":{"code":"forbidden","message":"not on my watch"}}
  /disconnect         {"disconnect":{"code":4403,"reason":"banned"}}
  /slow?ms=N          waits N ms, then allows
  /status?code=N      answers status N with an empty JSON object
  /connect            {"result":{"user":"bob","info":{"role":"mod"},"channels":["news:hello"]}}
  /webhook            records the body; answers fail_next (then 200) with 500
"""

import hashlib
import hmac
import http.server
import json
import threading
import time
import urllib.parse


class Backend:
    def __init__(self):
        self.requests = []          # (path, parsed body, headers dict, raw body, status)
        self.lock = threading.Lock()
        self.fail_next = 0          # /webhook: answer this many with 500 first
        self.webhook_attempts = 0
        backend = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *a):
                pass

            def handle(self):
                try:
                    super().handle()
                except OSError:
                    pass  # chorusd closed a kept-alive connection (timeout, exit)

            def do_POST(self):
                n = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(n)
                url = urllib.parse.urlsplit(self.path)
                q = dict(urllib.parse.parse_qsl(url.query))
                try:
                    body = json.loads(raw)
                except ValueError:
                    body = None
                status, answer = backend.answer(url.path, q, body)
                with backend.lock:
                    backend.requests.append((url.path, body, dict(self.headers), raw, status))
                out = json.dumps(answer).encode()
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(out)))
                    self.end_headers()
                    self.wfile.write(out)
                except OSError:
                    pass  # chorusd gave up waiting (a timeout test): nobody to answer

        http.server.ThreadingHTTPServer.daemon_threads = True
        http.server.ThreadingHTTPServer.request_queue_size = 1024
        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.httpd.server_address[1]
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def url(self, path):
        return f"http://127.0.0.1:{self.port}{path}"

    def answer(self, path, q, body):
        if path == "/allow":
            return 200, {"result": {}}
        if path == "/modify":
            return 200, {"result": {"data": {"modified": (body or {}).get("data")}}}
        if path == "/refuse":
            return 200, {"error": {"code": "forbidden", "message": "not on my watch"}}
        if path == "/disconnect":
            return 200, {"disconnect": {"code": 4403, "reason": "banned"}}
        if path == "/slow":
            time.sleep(int(q.get("ms", "1000")) / 1000)
            return 200, {"result": {}}
        if path == "/status":
            return int(q.get("code", "500")), {}
        if path == "/connect":
            return 200, {"result": {"user": "bob", "info": {"role": "mod"},
                                    "channels": ["news:hello"]}}
        if path == "/webhook":
            with self.lock:
                self.webhook_attempts += 1
                if self.fail_next > 0:
                    self.fail_next -= 1
                    return 500, {}
            return 200, {}
        return 404, {}

    def seen(self, path):
        with self.lock:
            return [r for r in self.requests if r[0] == path]

    def webhook_events(self, secret=None):
        """Every event of every webhook POST answered 200, in arrival order.
        With a secret, each body's X-Chorus-Signature must verify."""
        out = []
        ok_bodies = self.seen("/webhook")
        for _, body, headers, raw, status in ok_bodies:
            if status != 200:
                continue
            if secret is not None:
                want = "sha256=" + hmac.new(secret.encode(), raw, hashlib.sha256).hexdigest()
                got = headers.get("X-Chorus-Signature")
                assert got == want, f"bad signature {got!r}, expected {want!r}"
            out.extend(body["events"])
        return out

    def close(self):
        self.httpd.shutdown()
