#!/usr/bin/env python3
"""A local stand-in for the payment providers pockityd calls: Stripe (checkout
sessions), Razorpay (orders) and BTCPay Server (Greenfield invoices), answering
in their documented shapes and recording every request so tests can assert
what pockityd sent. Python stdlib only.

    s = ProviderStandin(); s.start()      # s.url -> http://127.0.0.1:PORT
    ... point stripe.api_base / razorpay.api_base / btcpay.url at s.url ...
    s.requests("stripe")                   # what arrived
    s.fail_next("stripe", 500)             # the next Stripe call answers 500
    s.btcpay_set(invoice_id, status="Settled")
    s.stop()

Run as a script it serves until interrupted and prints its URL.
"""

import base64
import json
import secrets
import sys
import threading
import time
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class ProviderStandin:
    def __init__(self, stripe_key="sk_test_standin", razorpay_key=("rzp_test_id", "rzp_secret"),
                 btcpay_key="btcpay-api-key", btcpay_store="store1"):
        self.stripe_key = stripe_key
        self.razorpay_key = razorpay_key
        self.btcpay_key = btcpay_key
        self.btcpay_store = btcpay_store
        self.lock = threading.Lock()
        self._requests = []
        self._failures = {}          # provider -> list of statuses (or "huge", "garbage")
        self._idempotent = {}        # Stripe Idempotency-Key -> response
        self.btcpay_invoices = {}    # id -> invoice dict
        self.server = None

    # -- control --

    def start(self):
        standin = self

        class Handler(_Handler):
            owner = standin

        self.server = _Server(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = "http://127.0.0.1:%d" % self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def stop(self):
        if self.server:
            self.server.shutdown()
            self.server.server_close()
            self.server = None

    def requests(self, provider=None):
        with self.lock:
            return [r for r in self._requests if provider is None or r["provider"] == provider]

    def clear(self):
        with self.lock:
            self._requests.clear()

    def fail_next(self, provider, how):
        """how: an HTTP status, "huge" (an over-long body) or "garbage" (not JSON)."""
        with self.lock:
            self._failures.setdefault(provider, []).append(how)

    def btcpay_set(self, invoice_id, **fields):
        with self.lock:
            self.btcpay_invoices[invoice_id].update(fields)

    def _take_failure(self, provider):
        with self.lock:
            queue = self._failures.get(provider)
            return queue.pop(0) if queue else None

    def _record(self, entry):
        with self.lock:
            self._requests.append(entry)


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request, client_address):
        # a client closing a kept-alive connection is not an error worth a traceback
        if not isinstance(sys.exc_info()[1], (ConnectionResetError, BrokenPipeError)):
            super().handle_error(request, client_address)


class _Handler(BaseHTTPRequestHandler):
    owner = None
    protocol_version = "HTTP/1.1"

    def log_message(self, fmt, *args):  # quiet
        pass

    def _send(self, status, payload):
        body = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        try:
            self.wfile.write(body)
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True  # the client gave up (e.g. its size cap)

    def _body(self):
        n = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(n) if n else b""

    def _provider(self, path):
        if path.startswith("/v1/checkout/"):
            return "stripe"
        if path.startswith("/v1/orders"):
            return "razorpay"
        if path.startswith("/api/v1/stores/"):
            return "btcpay"
        return "unknown"

    def _handle(self, method):
        path = urllib.parse.urlsplit(self.path).path
        raw = self._body()
        provider = self._provider(path)
        entry = {"provider": provider, "method": method, "path": path,
                 "headers": {k.lower(): v for k, v in self.headers.items()},
                 "body": raw.decode(errors="replace"), "form": None, "json": None,
                 "response": None}
        ctype = self.headers.get("Content-Type", "")
        if ctype.startswith("application/x-www-form-urlencoded"):
            entry["form"] = dict(urllib.parse.parse_qsl(entry["body"], keep_blank_values=True))
        elif ctype.startswith("application/json") and raw:
            try:
                entry["json"] = json.loads(raw)
            except ValueError:
                pass
        self.owner._record(entry)
        failure = self.owner._take_failure(provider)
        if failure == "huge":
            return self._send(200, b'{"id":"' + b"x" * (2 * 1024 * 1024) + b'"}')
        if failure == "garbage":
            return self._send(200, b"<html>not json</html>")
        if failure is not None:
            return self._send(failure, {"error": {"message": "stand-in failure %d" % failure}})
        handler = {"stripe": self._stripe, "razorpay": self._razorpay,
                   "btcpay": self._btcpay}.get(provider)
        if not handler:
            return self._send(404, {"error": {"message": "no such endpoint"}})
        return handler(method, path, entry)

    def do_POST(self):
        self._handle("POST")

    def do_GET(self):
        self._handle("GET")

    # -- Stripe: POST /v1/checkout/sessions --

    def _stripe(self, method, path, entry):
        auth = entry["headers"].get("authorization", "")
        if auth != "Bearer " + self.owner.stripe_key:
            return self._send(401, {"error": {"type": "invalid_request_error",
                                              "message": "Invalid API Key provided"}})
        if method != "POST" or path != "/v1/checkout/sessions" or entry["form"] is None:
            return self._send(400, {"error": {"message": "unexpected request"}})
        key = entry["headers"].get("idempotency-key")
        with self.owner.lock:
            if key and key in self.owner._idempotent:
                return self._send(200, self.owner._idempotent[key])
        f = entry["form"]
        sid = "cs_test_" + secrets.token_hex(12)
        session = {
            "id": sid, "object": "checkout.session", "mode": f.get("mode"),
            "url": "https://checkout.stripe.test/c/pay/" + sid,
            "amount_total": int(f.get("line_items[0][price_data][unit_amount]", "0")),
            "currency": f.get("line_items[0][price_data][currency]"),
            "client_reference_id": f.get("client_reference_id"),
            "metadata": {"invoice_id": f.get("metadata[invoice_id]")},
            "payment_status": "unpaid", "status": "open", "created": int(time.time()),
        }
        with self.owner.lock:
            if key:
                self.owner._idempotent[key] = session
        entry["response"] = session
        return self._send(200, session)

    # -- Razorpay: POST /v1/orders --

    def _razorpay(self, method, path, entry):
        kid, ksecret = self.owner.razorpay_key
        want = "Basic " + base64.b64encode(("%s:%s" % (kid, ksecret)).encode()).decode()
        if entry["headers"].get("authorization") != want:
            return self._send(401, {"error": {"code": "BAD_REQUEST_ERROR",
                                              "description": "Authentication failed"}})
        j = entry["json"]
        if method != "POST" or path != "/v1/orders" or not isinstance(j, dict):
            return self._send(400, {"error": {"code": "BAD_REQUEST_ERROR",
                                              "description": "unexpected request"}})
        order = {"id": "order_" + secrets.token_hex(7), "entity": "order",
                 "amount": j.get("amount"), "amount_paid": 0, "amount_due": j.get("amount"),
                 "currency": j.get("currency"), "receipt": j.get("receipt"),
                 "status": "created", "attempts": 0, "notes": j.get("notes", {}),
                 "created_at": int(time.time())}
        entry["response"] = order
        return self._send(200, order)

    # -- BTCPay Greenfield: POST/GET /api/v1/stores/{store}/invoices[/{id}] --

    def _btcpay(self, method, path, entry):
        if entry["headers"].get("authorization") != "token " + self.owner.btcpay_key:
            return self._send(401, {"code": "unauthenticated", "message": "bad API key"})
        parts = path.split("/")  # ['', 'api', 'v1', 'stores', STORE, 'invoices', (ID)]
        if len(parts) < 6 or parts[4] != self.owner.btcpay_store or parts[5] != "invoices":
            return self._send(404, {"code": "store-not-found", "message": "store not found"})
        if method == "POST" and len(parts) == 6:
            j = entry["json"]
            if not isinstance(j, dict) or not isinstance(j.get("amount"), str):
                return self._send(422, [{"path": "amount", "message": "amount is required"}])
            iid = secrets.token_urlsafe(16).replace("-", "A").replace("_", "B")
            inv = {"id": iid, "storeId": parts[4], "amount": j["amount"],
                   "currency": j.get("currency"), "type": "Standard",
                   "checkoutLink": self.owner.url + "/i/" + iid, "status": "New",
                   "additionalStatus": "None", "metadata": j.get("metadata", {}),
                   "createdTime": int(time.time())}
            with self.owner.lock:
                self.owner.btcpay_invoices[iid] = inv
            entry["response"] = inv
            return self._send(200, inv)
        if method == "GET" and len(parts) == 7:
            with self.owner.lock:
                inv = self.owner.btcpay_invoices.get(parts[6])
                inv = dict(inv) if inv else None
            if not inv:
                return self._send(404, {"code": "invoice-not-found",
                                        "message": "invoice not found"})
            return self._send(200, inv)
        return self._send(405, {"code": "method-not-allowed", "message": "unexpected request"})


if __name__ == "__main__":
    s = ProviderStandin().start()
    print(s.url, flush=True)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        s.stop()
        sys.exit(0)
