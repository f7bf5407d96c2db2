#!/usr/bin/env python3
"""pockityd as replicas: three processes on one database (PostgreSQL, or one
SQLite file on one machine) behind a round-robin reverse proxy, so that
consecutive requests land on different replicas. The main story walks through
the proxy (sign-up with a mailed code, login, a paid tier approved, a key, a
session, 16 threads racing reservations), then one replica is killed and the
proxy fails over while the story goes on: a Stripe webhook delivered to both
survivors at once applies once, reconciliation asked of both at once corrects
once, a key revoked or a login ended on one replica is refused by the other at
once, and each notification is mailed once. Login, sign-up and code-resend
rate limits are counted across replicas."""

import http.client
import os
import random
import secrets
import sys
import threading
import time
import unittest
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tools"))

from harness import Daemon, require_services, s3_put_bytes  # noqa: E402
from provider_standin import ProviderStandin  # noqa: E402
from test_mail import Sink, aiosmtpd_missing, code_of  # noqa: E402
from test_payments import stripe_event, stripe_header  # noqa: E402

REPLICAS = 3
MAX_ATTEMPTS = 4  # auth.login_max_attempts of every replica
STRIPE_KEY = "sk_test_" + secrets.token_hex(8)
STRIPE_WHSEC = "whsec_" + secrets.token_hex(16)
PROXY_BODY_MAX = 2 << 20
HOP_BY_HOP = {"connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "te",
              "trailer", "trailers", "transfer-encoding", "upgrade", "host", "content-length"}


# ---- the load balancer ----

class _ProxyServer(ThreadingHTTPServer):
    # The race's 16 clients connect at once: socketserver's backlog of 5 would
    # overflow and the kernel reset some connections before the proxy saw them.
    request_queue_size = 128
    daemon_threads = True


class Proxy:
    """A round-robin HTTP reverse proxy in a thread: each request goes to the
    next backend in turn; a backend that refuses the connection is skipped and
    the request tried on the next one (safe: nothing reached it). Forwards
    method, path, headers and body; tells which backend answered in
    X-Replica (its index). Connects from source_ip, so that pockityd sees that
    address as the client (any 127.x.y.z is loopback on Linux)."""

    def __init__(self, backends, source_ip="127.0.0.1", start=0):
        self.backends = list(backends)  # (host, port)
        self.source_ip = source_ip
        self.lock = threading.Lock()
        self.next = start % len(self.backends)
        self.served = [0] * len(self.backends)
        self.failovers = 0
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, fmt, *args):  # quiet
                pass

            def forward(self):
                proxy.forward(self)

            do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = forward

        self.server = _ProxyServer(("127.0.0.1", 0), Handler)
        self.url = "http://127.0.0.1:%d" % self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()

    def _pick(self):
        with self.lock:
            i = self.next
            self.next = (self.next + 1) % len(self.backends)
            return i

    def forward(self, h):
        length = int(h.headers.get("Content-Length") or 0)
        if length < 0 or length > PROXY_BODY_MAX:
            return self._reply(h, 413, [], b"", None)
        body = h.rfile.read(length) if length else None
        headers = [(k, v) for k, v in h.headers.items() if k.lower() not in HOP_BY_HOP]
        headers.append(("X-Forwarded-For", h.client_address[0]))
        first = self._pick()
        for n in range(len(self.backends)):
            i = (first + n) % len(self.backends)
            host, port = self.backends[i]
            conn = http.client.HTTPConnection(host, port, timeout=180,
                                              source_address=(self.source_ip, 0))
            try:
                conn.putrequest(h.command, h.path, skip_accept_encoding=True)
                for k, v in headers:
                    conn.putheader(k, v)
                if body is not None:
                    conn.putheader("Content-Length", str(len(body)))
                conn.endheaders(body)
            except ConnectionRefusedError:
                conn.close()
                with self.lock:
                    self.failovers += 1
                continue
            except OSError:
                conn.close()
                return self._reply(h, 502, [], b"", i)
            try:
                resp = conn.getresponse()
                payload = resp.read()
                out = [(k, v) for k, v in resp.getheaders() if k.lower() not in HOP_BY_HOP]
                status = resp.status
            except (OSError, http.client.HTTPException):
                # The request may have been applied: not ours to repeat.
                return self._reply(h, 502, [], b"", i)
            finally:
                conn.close()
            with self.lock:
                self.served[i] += 1
            return self._reply(h, status, out, payload, i)
        return self._reply(h, 502, [], b"", None)

    @staticmethod
    def _reply(h, status, headers, payload, replica):
        h.send_response_only(status)
        for k, v in headers:
            h.send_header(k, v)
        if replica is not None:
            h.send_header("X-Replica", str(replica))
        h.send_header("Content-Length", str(len(payload)))
        h.send_header("Connection", "close")
        h.end_headers()
        if h.command != "HEAD":
            h.wfile.write(payload)


class Client:
    """Requests to a base URL, with Daemon.request's interface."""

    request = Daemon.request

    def __init__(self, url):
        self.url = url


def replica_of(r):
    return int(r.headers.get("X-Replica", "-1"))


# ---- the tests ----

class ReplicasTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        require_services()
        cls.mail_why = aiosmtpd_missing()
        cls.sink = None if cls.mail_why else Sink()
        if cls.mail_why:
            print("note: mail checks skipped: " + cls.mail_why)
        cls.standin = ProviderStandin(stripe_key=STRIPE_KEY).start()
        settings = dict(server__public_url="https://pockity.example",
                        stripe__api_base=cls.standin.url, stripe__secret_key=STRIPE_KEY,
                        stripe__webhook_secret=STRIPE_WHSEC,
                        auth__login_max_attempts=MAX_ATTEMPTS,
                        reconcile__interval=0, reconcile__list_rate=1000, sweep_interval=1)
        if cls.sink:
            settings.update(smtp__url="smtp://127.0.0.1:%d" % cls.sink.port,
                            smtp__from="Pockity Tests <no-reply@pockity.test>")
        cls.daemons = []
        try:
            first = Daemon(**settings)
            cls.daemons.append(first)
            for _ in range(REPLICAS - 1):
                cls.daemons.append(Daemon(db_url=first.db_url, token_secret=first.token_secret,
                                          root_prefix=first.root_prefix, **settings))
        except Exception:
            cls._teardown()
            raise
        cls.proxy = Proxy([("127.0.0.1", d.port) for d in cls.daemons])
        cls.lb = Client(cls.proxy.url)

    @classmethod
    def _teardown(cls):
        for d in cls.daemons:
            d.stop()
        cls.standin.stop()
        if cls.sink:
            cls.sink.close()

    @classmethod
    def tearDownClass(cls):
        cls.proxy.close()
        cls._teardown()
        for d in cls.daemons:
            log = d.log()
            assert STRIPE_KEY not in log and STRIPE_WHSEC not in log, "a secret reached the log"
            assert "internal_error" not in log, "a replica answered 500:\n" + log[-3000:]

    # -- helpers --

    def expect(self, r, status, code=None):
        self.assertEqual(r.status, status, r)
        if code:
            self.assertEqual(r.body["error"]["code"], code, r)
        return r.body

    def alternating(self, responses):
        """Consecutive responses came from different replicas."""
        replicas = [replica_of(r) for r in responses]
        self.assertNotIn(-1, replicas)
        for a, b in zip(replicas, replicas[1:]):
            self.assertNotEqual(a, b, replicas)

    def register(self, via):
        email = "user-%s@example.com" % secrets.token_hex(6)
        password = "password-" + secrets.token_hex(6)
        r = via.request("POST", "/v1/auth/register",
                        {"email": email, "password": password, "name": "Replica User"})
        self.expect(r, 201)
        return r, email, password

    def login(self, via, email, password, status=200):
        r = via.request("POST", "/v1/auth/login", {"email": email, "password": password})
        self.expect(r, status)
        return r

    def admin(self):
        email = "admin-%s@example.com" % secrets.token_hex(4)
        password = "admin-password-" + secrets.token_hex(4)
        r = self.daemons[0].run("--create-admin", email, input=password + "\n")
        self.assertEqual(r.returncode, 0, r.stderr)
        return self.login(self.lb, email, password).body["token"], email

    def audit_count(self, admin, action, target_id):
        r = self.lb.request("GET", "/v1/admin/audit?limit=1000&action=%s&target_id=%s"
                            % (action, target_id), token=admin)
        return len(self.expect(r, 200)["entries"])

    def at_once(self, calls):
        """Run the calls (functions of no argument) together; their results in order."""
        results = [None] * len(calls)
        barrier = threading.Barrier(len(calls))

        def run(i):
            barrier.wait()
            results[i] = calls[i]()

        threads = [threading.Thread(target=run, args=(i,)) for i in range(len(calls))]
        for t in threads:
            t.start()
        for t in threads:
            t.join(300)
        self.assertFalse(any(t.is_alive() for t in threads), "requests hung")
        return results

    def live(self):
        return [d for d in self.daemons if d.proc.poll() is None]

    # -- rate limits --

    def test_login_rate_limits_count_across_replicas(self):
        # Distinct client addresses per proxy: the address scope of one part
        # must not lock out the others.
        base = random.randrange(2, 200)
        p = [Proxy([("127.0.0.1", d.port) for d in self.live()],
                   source_ip="127.0.%d.%d" % (base, i + 1), start=i) for i in range(4)]
        try:
            via = [Client(x.url) for x in p]
            _, x_email, x_password = self.register(via[0])
            _, y_email, y_password = self.register(via[0])

            # The account scope: failures from two addresses over all replicas.
            fails = [self.login(via[i // 2], x_email, "wrong-" + x_password, 401)
                     for i in range(MAX_ATTEMPTS)]
            self.alternating(fails[:2])
            self.alternating(fails[2:])
            self.assertEqual({replica_of(r) for r in fails}, set(range(len(self.live()))))
            for _ in range(len(self.live())):  # on every replica, right password or not
                r = self.login(via[2], x_email, x_password, 429)
                self.assertEqual(r.body["error"]["code"], "rate_limited")
                self.assertGreater(int(r.headers["Retry-After"]), 0)
            # The address that met the locked account was not charged.
            self.login(via[2], y_email, y_password)

            # The address scope: failures on unknown accounts, spread over replicas.
            fails = [self.login(via[3], "nobody-%s@example.com" % secrets.token_hex(4),
                                "whatever-password", 401) for _ in range(MAX_ATTEMPTS)]
            self.alternating(fails)
            r = self.login(via[3], y_email, y_password, 429)
            self.assertEqual(r.body["error"]["code"], "rate_limited")
            self.login(via[2], y_email, y_password)  # another address is fine
        finally:
            for x in p:
                x.close()

    def test_code_resends_count_across_replicas(self):
        if not self.sink:
            self.skipTest(self.mail_why)
        r, email, password = self.register(self.lb)
        token = self.login(self.lb, email, password).body["token"]
        sends = [self.lb.request("POST", "/v1/auth/verify/resend", token=token)
                 for _ in range(2)]
        for s in sends:
            self.expect(s, 200)
        self.alternating(sends)
        for _ in range(len(self.live())):  # the sign-up's code counted too: 3 in all
            r = self.lb.request("POST", "/v1/auth/verify/resend", token=token)
            self.expect(r, 429, "rate_limited")
        self.assertEqual(len(self.sink.wait(email, "verification code", 3)), 3)
        time.sleep(0.5)
        self.assertEqual(len(self.sink.to(email, "verification code")), 3)

    # -- the story --

    def test_story(self):
        lb, daemons = self.lb, self.daemons
        self.assertEqual(len(self.live()), REPLICAS)
        for d in daemons:
            self.assertEqual(self.expect(d.request("GET", "/healthz"), 200)["status"], "ok")

        # Sign-up, the mailed code, login: each step on another replica.
        reg, email, password = self.register(lb)
        user_id = reg.body["user"]["id"]
        login = self.login(lb, email, password)
        token = login.body["token"]
        me = [lb.request("GET", "/v1/me", token=token) for _ in range(REPLICAS)]
        for r in me:
            self.assertEqual(self.expect(r, 200)["user"]["id"], user_id)
        self.alternating([reg, login] + me)
        self.assertEqual({replica_of(r) for r in me}, set(range(REPLICAS)))
        if self.sink:
            first = code_of(self.sink.wait(email, "verification code")[-1][2])
            self.expect(lb.request("POST", "/v1/auth/verify/resend", token=token), 200)
            msgs = self.sink.wait(email, "verification code", 2)
            second = code_of(msgs[-1][2])
            if first != second:  # the new code replaced the first, everywhere
                self.expect(lb.request("POST", "/v1/auth/verify", {"code": first},
                                       token=token), 400, "invalid_request")
            r = lb.request("POST", "/v1/auth/verify", {"code": second}, token=token)
            self.assertTrue(self.expect(r, 200)["user"]["email_verified"])
            self.expect(lb.request("POST", "/v1/auth/verify", {"code": second}, token=token),
                        409, "conflict")

        # A paid tier that needs approval, a pending pocket, approved once.
        admin, admin_email = self.admin()
        tid = "rp-" + secrets.token_hex(4)
        self.expect(lb.request("POST", "/v1/admin/tiers",
                               {"id": tid, "name": "Replicated", "max_bytes": 20000,
                                "max_objects": 30, "price_minor": 500, "currency": "USD",
                                "needs_approval": True}, token=admin), 201)
        name = "replicated-" + secrets.token_hex(3)
        pocket = self.expect(lb.request("POST", "/v1/pockets", {"name": name, "tier": tid},
                                        token=token), 201)
        self.assertEqual(pocket["status"], "pending")
        trq = pocket["pending_request"]["id"]
        a, b = daemons[0], daemons[1]
        decisions = self.at_once([
            lambda d=d: d.request("POST", "/v1/admin/tier-requests/%s/approve" % trq,
                                  {"comment": "ok"}, token=admin) for d in (a, b)])
        self.assertEqual(sorted(r.status for r in decisions), [200, 409], decisions)
        self.assertEqual(self.audit_count(admin, "tier_request.approve", trq), 1)
        states = [lb.request("GET", "/v1/pockets/" + pocket["id"], token=token)
                  for _ in range(REPLICAS)]
        for r in states:
            self.assertEqual((r.body["status"], r.body["tier"]["id"]), ("active", tid), r)
        invoices = self.expect(lb.request("GET", "/v1/invoices?status=open", token=token),
                               200)["invoices"]
        self.assertEqual([(i["kind"], i["total_minor"], i["currency"]) for i in invoices],
                         [("subscription", 500, "USD")])
        invoice = invoices[0]["id"]

        # A key and a mount session.
        key = self.expect(lb.request("POST", "/v1/pockets/%s/keys" % pocket["id"],
                                     {"name": "laptop", "access": "rw"}, token=token), 201)
        sessions = [lb.request("POST", "/v1/session", token=key["key"]) for _ in range(2)]
        for r in sessions:
            self.assertEqual(self.expect(r, 200)["prefix"], pocket["prefix"])
        self.alternating(sessions)
        creds = sessions[0].body

        # 16 threads race reservations through the proxy.
        self.race(pocket["id"], token, key["key"], 20000, 30)

        # A replica dies; the proxy fails over and the story goes on.
        served = list(self.proxy.served)
        self.assertTrue(all(n > 0 for n in served), served)
        victim = daemons[2]
        victim.proc.kill()
        victim.proc.wait()
        failovers = self.proxy.failovers
        for _ in range(2 * REPLICAS):
            r = lb.request("GET", "/healthz")
            self.assertEqual(self.expect(r, 200)["status"], "ok")
            self.assertNotEqual(replica_of(r), 2)
        self.assertGreater(self.proxy.failovers, failovers)
        for r in [lb.request("GET", "/v1/pockets/" + pocket["id"], token=token)
                  for _ in range(4)]:
            self.expect(r, 200)

        # Stripe: paying through the proxy, the webhook delivered to both
        # survivors at once applies once.
        self.expect(lb.request("POST", "/v1/invoices/%s/pay" % invoice, {"provider": "stripe"},
                               token=token), 200)
        sid = self.standin.requests("stripe")[-1]["response"]["id"]
        body = stripe_event(sid, invoice, 500)
        hdrs = {"Content-Type": "application/json",
                "Stripe-Signature": stripe_header(body, STRIPE_WHSEC)}
        results = self.at_once([lambda d=d: d.request("POST", "/v1/webhooks/stripe", raw=body,
                                                      headers=hdrs) for d in (a, b) * 4])
        self.assertEqual([r.status for r in results], [200] * 8, results)
        paid = [r for r in results if r.body.get("status") == "paid"]
        dups = [r for r in results if r.body.get("duplicate") is True]
        self.assertEqual((len(paid), len(dups)), (1, 7), results)
        for _ in range(2):  # a later replay through the balancer, on each survivor
            r = lb.request("POST", "/v1/webhooks/stripe", raw=body, headers=hdrs)
            self.assertIs(self.expect(r, 200).get("duplicate"), True, r)
        inv = self.expect(lb.request("GET", "/v1/invoices/" + invoice, token=token), 200)
        self.assertEqual((inv["status"], inv["provider"]), ("paid", "stripe"))
        self.assertEqual(self.audit_count(admin, "invoice.paid", invoice), 1)

        # Reconciliation asked of both survivors at once: one correction. The
        # race's objects never reached S3; these did, bypassing the ledger.
        sizes = [3, 50, 7, 400, 1]
        for i, size in enumerate(sizes):
            self.assertEqual(s3_put_bytes(creds, pocket["prefix"] + "direct/%d" % i,
                                          b"d" * size), 0)
        # A pass leaves ledger rows written in the second it starts for the next
        # pass (an upload may be committing): let the race's last commits age.
        time.sleep(1.1)
        results = self.at_once([
            lambda d=d: d.request("POST", "/v1/admin/reconcile", {"pocket_id": pocket["id"]},
                                  token=admin, timeout=120) for d in (a, b, a, b)])
        self.assertEqual([r.status for r in results], [200] * 4, results)
        corrections = [c for r in results for c in r.body["corrections"]]
        self.assertEqual(len(corrections), 1, results)
        self.assertEqual(corrections[0]["after"], {"bytes": sum(sizes), "objects": len(sizes)})
        self.assertEqual(self.audit_count(admin, "usage.correct", pocket["id"]), 1)
        for d in (a, b):
            r = d.request("GET", "/v1/pockets/" + pocket["id"], token=token)
            self.assertEqual(self.expect(r, 200)["usage"],
                             {"bytes": sum(sizes), "objects": len(sizes)})

        # A key revoked on one replica is refused by the other at once.
        self.expect(a.request("DELETE", "/v1/keys/" + key["id"], token=token), 204)
        for r in (b.request("POST", "/v1/session", token=key["key"]),
                  b.request("GET", "/v1/usage", token=key["key"]),
                  lb.request("POST", "/v1/session", token=key["key"]),
                  lb.request("POST", "/v1/session", token=key["key"])):
            self.expect(r, 401, "unauthenticated")

        # A login ended on one replica is refused by the other at once.
        self.expect(b.request("POST", "/v1/auth/logout", token=token), 204)
        for r in (a.request("GET", "/v1/me", token=token),
                  lb.request("GET", "/v1/me", token=token),
                  lb.request("GET", "/v1/me", token=token)):
            self.expect(r, 401, "unauthenticated")
        self.expect(lb.request("GET", "/v1/me", token=admin), 200)  # others unaffected

        # Each notification mailed once, though every replica runs the outbox
        # (the admins' "needs a decision" mail goes at most once: dropped when
        # the decision came before a replica's outbox ran, else sent once).
        if self.sink:
            expected = ["Pocket '%s' now has the tier" % name, "Invoice %s:" % invoice]
            for subject in expected:
                self.sink.wait(email, subject)
            time.sleep(3)  # more rounds of both survivors' jobs
            for subject in expected:
                self.assertEqual(len(self.sink.to(email, subject)), 1, subject)
            to_admin = self.sink.to(admin_email)
            self.assertLessEqual(len(to_admin), 1, to_admin)
            self.assertEqual(len(self.sink.to(admin_email, "needs a decision")), len(to_admin))

    def race(self, pocket_id, token, key, max_bytes, max_objects, threads=16, steps=20):
        """Reservations, commits and releases from many threads through the
        proxy; used + reserved never above the quota, and the totals end exact
        on every replica."""
        violations, errors, final = [], [], [dict() for _ in range(threads)]
        counts = {"granted": 0, "refused": 0}
        lock = threading.Lock()

        def check(body, where):
            if not body or "usage" not in body:
                return
            u, r = body["usage"], body["reserved"]
            if u["bytes"] + r["bytes"] > max_bytes or u["objects"] + r["objects"] > max_objects:
                violations.append((where, u, r))
            if min(u["bytes"], u["objects"], r["bytes"], r["objects"]) < 0:
                violations.append((where, "negative", u, r))

        def worker(n):
            rnd, lb = random.Random(n), self.lb
            try:
                for step in range(steps):
                    k = "t%d/k%d" % (n, rnd.randrange(4))
                    size = rnd.randrange(0, 3000)
                    r = lb.request("POST", "/v1/reservations", {"key": k, "bytes": size},
                                   token=key)
                    if r.status == 507:
                        with lock:
                            counts["refused"] += 1
                        if final[n] and rnd.random() < 0.5:
                            victim = rnd.choice(sorted(final[n]))
                            dr = lb.request("POST", "/v1/objects/deleted", {"keys": [victim]},
                                            token=key)
                            if dr.status != 200:
                                errors.append(("deleted", dr))
                            del final[n][victim]
                            check(dr.body, "deleted")
                        continue
                    if r.status != 201:
                        errors.append(("reserve", r))
                        continue
                    with lock:
                        counts["granted"] += 1
                    check(r.body, "reserve")
                    rid = r.body["id"]
                    if rnd.random() < 0.75:
                        c = lb.request("POST", "/v1/reservations/%s/commit" % rid,
                                       {"bytes": size, "etag": "\"e%d\"" % step}, token=key)
                        if c.status != 200:
                            errors.append(("commit", c))
                            continue
                        final[n][k] = size
                        check(c.body, "commit")
                    else:
                        c = lb.request("DELETE", "/v1/reservations/" + rid, token=key)
                        if c.status != 204:
                            errors.append(("release", c))
                    if step % 5 == 0:
                        check(lb.request("GET", "/v1/usage", token=key).body, "usage")
            except Exception as e:  # reported by the main thread
                errors.append(("exception", repr(e)))

        ts = [threading.Thread(target=worker, args=(n,)) for n in range(threads)]
        for t in ts:
            t.start()
        for t in ts:
            t.join(300)
        self.assertFalse(any(t.is_alive() for t in ts), "workers hung")
        self.assertEqual(errors, [])
        self.assertEqual(violations, [])
        self.assertGreater(counts["granted"], 0)
        self.assertGreater(counts["refused"], 0, "the quota was never reached: test too weak")
        want = {"bytes": sum(sum(f.values()) for f in final),
                "objects": sum(len(f) for f in final)}
        for d in self.live():
            s = self.expect(d.request("GET", "/v1/pockets/" + pocket_id, token=token), 200)
            self.assertEqual(s["usage"], want)
            self.assertEqual(s["reserved"], {"bytes": 0, "objects": 0})


if __name__ == "__main__":
    require_services()
    unittest.main(verbosity=2)
