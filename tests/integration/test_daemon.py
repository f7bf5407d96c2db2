"""pockityd as a process: start-up errors, health, metrics, the audit log,
routing errors, hostile HTTP, and a graceful stop."""

import json
import os
import socket
import subprocess
import threading
import time
import unittest

import harness
from harness import Daemon

harness.require_services()


class DaemonTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.d = Daemon()

    @classmethod
    def tearDownClass(cls):
        cls.d.stop()

    def test_healthz(self):
        r = self.d.request("GET", "/healthz")
        self.assertEqual(r.status, 200, r)
        self.assertEqual(r.body["status"], "ok")
        self.assertEqual(r.body["database"], "ok")
        self.assertEqual(r.body["s3"], "ok")
        self.assertTrue(r.headers.get("X-Request-Id"))

    def test_metrics(self):
        self.d.request("GET", "/healthz")
        self.d.request("GET", "/v1/nothing-here")
        r = self.d.request("GET", "/metrics")
        self.assertEqual(r.status, 200)
        text = r.raw.decode()
        self.assertIn("text/plain", r.headers["Content-Type"])
        for name in ("pockityd_http_requests_total", "pockityd_http_request_duration_seconds_bucket",
                     "pockityd_sessions_issued_total", "pockityd_reservations_total",
                     "pockityd_db_errors_total"):
            self.assertIn(name, text)
        ok = [l for l in text.splitlines()
              if l.startswith("pockityd_http_requests_total{") and 'route="/healthz"' in l
              and 'status="200"' in l]
        self.assertEqual(len(ok), 1, text)
        self.assertGreaterEqual(float(ok[0].rsplit(" ", 1)[1]), 1)

    def test_unknown_route_and_method(self):
        r = self.d.request("GET", "/v1/no/such/route")
        self.assertEqual(r.status, 404)
        self.assertEqual(r.body["error"]["code"], "not_found")
        r = self.d.request("DELETE", "/healthz")
        self.assertEqual(r.status, 405)
        self.assertEqual(r.body["error"]["code"], "method_not_allowed")
        self.assertIn("GET", r.headers.get("Allow", ""))

    def test_audit_needs_admin(self):
        r = self.d.request("GET", "/v1/admin/audit")
        self.assertEqual(r.status, 401)
        self.assertEqual(r.body["error"]["code"], "unauthenticated")
        token, *_ = self.d.new_user()
        r = self.d.request("GET", "/v1/admin/audit", token=token)
        self.assertEqual(r.status, 403)
        self.assertEqual(r.body["error"]["code"], "forbidden")
        r = self.d.request("GET", "/v1/admin/audit", token="pks_forged.123.abc")
        self.assertEqual(r.status, 401)

    def test_audit_log_follows(self):
        admin = self.d.admin_token()
        r = self.d.request("GET", "/v1/admin/audit?limit=1000", token=admin)
        self.assertEqual(r.status, 200, r)
        actions = [e["action"] for e in r.body["entries"]]
        self.assertIn("user.create_admin", actions)
        last = r.body["last_id"]
        self.d.new_user()  # registers: one more entry
        r = self.d.request("GET", "/v1/admin/audit?since=%d" % last, token=admin)
        self.assertEqual(r.status, 200)
        self.assertTrue(r.body["entries"], r)
        self.assertTrue(all(e["id"] > last for e in r.body["entries"]))
        self.assertIn("user.register", [e["action"] for e in r.body["entries"]])
        for bad in ("limit=0", "limit=5000", "since=-1", "since=abc", "limit="):
            r = self.d.request("GET", "/v1/admin/audit?" + bad, token=admin)
            self.assertEqual(r.status, 400, bad)
            self.assertEqual(r.body["error"]["code"], "invalid_request")

    def test_create_admin_twice_promotes(self):
        email = "twice-%d@example.com" % os.getpid()
        r = self.d.run("--create-admin", email, input="first-password-1\n")
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertIn("created", r.stdout)
        r = self.d.run("--create-admin", email, input="second-password-2\n")
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertIn("updated", r.stdout)
        self.d.login(email, "second-password-2")
        r = self.d.run("--create-admin", "not-an-email", input="whatever-password\n")
        self.assertEqual(r.returncode, 1)
        self.assertIn("invalid email", r.stderr)
        r = self.d.run("--create-admin", "short@example.com", input="short\n")
        self.assertEqual(r.returncode, 1)
        r = self.d.run("--create-admin", "none@example.com", input="")
        self.assertEqual(r.returncode, 1)
        self.assertIn("no password", r.stderr)

    def test_hostile_http(self):
        # garbage, an over-long header block, a client that leaves mid-body:
        # the daemon answers or closes, and keeps serving
        for payload in (b"GARBAGE\r\n\r\n", b"GET /" + b"a" * 100000 + b" HTTP/1.1\r\n\r\n",
                        b"POST /v1/auth/login HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{\"em",
                        b"GET /healthz HTTP/1.1\r\nHost: x\r\nX: " + b"y" * 200000 + b"\r\n\r\n"):
            s = socket.create_connection(("127.0.0.1", self.d.port), timeout=10)
            try:
                s.sendall(payload)
                s.shutdown(socket.SHUT_WR)
                data = s.recv(1024)
                if data:
                    status = int(data.split(b" ")[1])
                    self.assertTrue(400 <= status < 500, data[:100])
            except OSError:
                pass  # the daemon may close first: reset, broken pipe, not connected
            finally:
                s.close()
        self.assertEqual(self.d.request("GET", "/healthz").status, 200)

    def test_body_too_large(self):
        # The announced length alone is refused, before any of the body is read
        # (sending the body would race the daemon closing the connection).
        s = socket.create_connection(("127.0.0.1", self.d.port), timeout=10)
        try:
            s.sendall(b"POST /v1/auth/login HTTP/1.1\r\nHost: x\r\n"
                      b"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n"
                      % (2 << 20))
            data = b""
            while b"\r\n\r\n" not in data or not data.rstrip().endswith(b"}"):
                chunk = s.recv(65536)
                if not chunk:
                    break
                data += chunk
        finally:
            s.close()
        head, _, body = data.partition(b"\r\n\r\n")
        self.assertEqual(int(head.split(b" ")[1]), 413, head)
        self.assertEqual(json.loads(body)["error"]["code"], "payload_too_large")
        self.assertEqual(self.d.request("GET", "/healthz").status, 200)


class StartupTest(unittest.TestCase):
    def run_pockityd(self, *args, env=None):
        return subprocess.run([harness.build_path("pockityd", "pockityd")] + list(args),
                              capture_output=True, text=True, timeout=30, env=env,
                              stdin=subprocess.DEVNULL)

    def test_usage_version_help(self):
        r = self.run_pockityd("--version")
        self.assertEqual(r.returncode, 0)
        self.assertTrue(r.stdout.startswith("pockityd "))
        r = self.run_pockityd("--help")
        self.assertEqual(r.returncode, 0)
        self.assertIn("--config", r.stdout)
        r = self.run_pockityd()
        self.assertEqual(r.returncode, 2)
        self.assertIn("usage:", r.stderr)
        r = self.run_pockityd("--bogus")
        self.assertEqual(r.returncode, 2)

    def test_bad_config(self):
        r = self.run_pockityd("--config", "/nonexistent.ini")
        self.assertEqual(r.returncode, 1)
        self.assertIn("cannot open '/nonexistent.ini'", r.stderr)
        d = Daemon()
        try:
            with open(d.config) as f:
                text = f.read()
            bad = d.config + ".bad"
            with open(bad, "w") as f:
                f.write(text.replace("[server]", "[server]\nthreadz = 4"))
            r = self.run_pockityd("--config", bad, env=d.env)
            self.assertEqual(r.returncode, 1)
            self.assertIn("unknown key 'threadz'", r.stderr)
            with open(bad, "w") as f:
                f.write(text.replace("url = ", "url = mysql://nope/"))
            r = self.run_pockityd("--config", bad, env=d.env)
            self.assertEqual(r.returncode, 1)
            self.assertIn("database", r.stderr)
        finally:
            d.stop()

    def test_graceful_stop_and_restart(self):
        d = Daemon()
        try:
            # requests in flight while SIGTERM arrives still complete
            results = []

            def hammer():
                for _ in range(20):
                    try:
                        results.append(d.request("GET", "/healthz").status)
                    except OSError:
                        results.append("closed")
            threads = [threading.Thread(target=hammer) for _ in range(4)]
            for t in threads:
                t.start()
            time.sleep(0.2)
            self.assertEqual(d.stop(), 0)
            for t in threads:
                t.join()
            self.assertIn(200, results)
            self.assertTrue(all(r in (200, 503, "closed") for r in results), results)
            self.assertIn("stopped", d.log())
            # the same database serves again after a restart (migrations idempotent)
            d.start()
            self.assertEqual(d.request("GET", "/healthz").status, 200)
        finally:
            d.stop()

    def test_secrets_not_logged(self):
        d = Daemon()
        try:
            token, _, email, password = d.new_user()
            d.request("GET", "/v1/me", token=token)
            d.request("POST", "/v1/auth/login", {"email": email, "password": "wrong-password-x"})
        finally:
            d.stop()
        log = d.log()
        for secret in (password, token, d.token_secret, os.environ["POCKITY_S3_SECRET_KEY"]):
            self.assertNotIn(secret, log)
        self.assertIn("/v1/auth/login", log)


if __name__ == "__main__":
    unittest.main(verbosity=2)
