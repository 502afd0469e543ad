"""A webhook receiver for the e2e tests: checks every request's signature with the Standard
Webhooks library (PyPI standardwebhooks) and logs what it got, one JSON line per request.

    webhook_receiver.py PORT SECRETS_FILE LOG_FILE

SECRETS_FILE is JSON {"/path": "whsec_..."}, read at each request (the tests add a path once
they have subscribed it). What a path answers:
    /ok...     204
    /flaky...  503 for the first 3 requests of each webhook-id (to this path), then 200
    /bad...    400 for the first request of each webhook-id, then 200
    /throttled 429 with Retry-After: 1 for the first request of each webhook-id, then 200
    /slow...   200 after a second
Prints "ready" once it listens.
"""

import json
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from standardwebhooks.webhooks import Webhook, WebhookVerificationError

PORT = int(sys.argv[1])
SECRETS = sys.argv[2]
LOG = sys.argv[3]
lock = threading.Lock()
seen = {}


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("content-length", "0")))
        headers = {k.lower(): v for k, v in self.headers.items()}
        entry = {
            "path": self.path,
            "webhook_id": headers.get("webhook-id"),
            "content_type": headers.get("content-type"),
            "verified": False,
            "at": time.time(),
        }
        try:
            with open(SECRETS) as f:
                secret = json.load(f)[self.path]
            event = Webhook(secret).verify(body, headers)
            entry["verified"] = True
            entry["type"] = event["type"]
            entry["event_id"] = event["data"]["event_id"]
        except (KeyError, OSError, ValueError, WebhookVerificationError) as e:
            entry["error"] = f"{type(e).__name__}: {e}"
        with lock:
            key = (self.path, entry["webhook_id"])
            n = seen.get(key, 0) + 1
            seen[key] = n
        if self.path.startswith("/flaky"):
            status = 503 if n <= 3 else 200
        elif self.path.startswith("/bad"):
            status = 400 if n <= 1 else 200
        elif self.path.startswith("/throttled"):
            status = 429 if n <= 1 else 200
        elif self.path.startswith("/slow"):
            time.sleep(1)
            status = 200
        else:
            status = 204
        entry["status"] = status
        entry["call"] = n
        with lock, open(LOG, "a") as f:
            f.write(json.dumps(entry) + "\n")
        self.send_response(status)
        if status == 429:
            self.send_header("retry-after", "1")
        self.send_header("content-length", "0")
        self.end_headers()

    def log_message(self, *args):
        pass


server = ThreadingHTTPServer(("127.0.0.1", PORT), Handler)
print("ready", flush=True)
server.serve_forever()
