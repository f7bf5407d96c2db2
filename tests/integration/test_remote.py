"""The mount's client of pockityd (pockityfs/remote.c), end to end through
tests/remotetool: sessions, errors, quota calls and their retries, and quota
allowances (remotetool -a) against a real pockityd (and RGW); renewal,
validation, timeouts and the allowance protocol against a small fake
pockityd whose answers the test controls.
"""

import errno
import http.server
import json
import os
import secrets
import socket
import subprocess
import sys
import threading
import time
import unittest

import harness

D = None  # the shared daemon of this run (started in main)
TOOL = None


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ToolResult:
    def __init__(self, code, out, err, seconds):
        self.code, self.out, self.err, self.seconds = code, out, err, seconds

    def __repr__(self):
        return "<exit %d out=%r err=%r>" % (self.code, self.out, self.err)


def tool(url, key, *args, opts=(), timeout=60):
    """Run remotetool; assert the key never shows in its output."""
    env = dict(os.environ, POCKITY_KEY=key)
    t0 = time.monotonic()
    r = subprocess.run([TOOL] + list(opts) + [url] + [str(a) for a in args], env=env,
                       capture_output=True, text=True, timeout=timeout)
    res = ToolResult(r.returncode, r.stdout, r.stderr, time.monotonic() - t0)
    secret = key[-43:]  # the secret part of a real key (base64url of 32 bytes)
    for text in (r.stdout, r.stderr):
        assert key not in text and secret not in text, "the API key leaked: %r" % (res,)
    return res


class Base(unittest.TestCase):
    def expect_ok(self, res):
        self.assertEqual(res.code, 0, res)
        return res.out

    def expect_errno(self, res, code, *words):
        self.assertEqual(res.code, code, res)
        lines = res.err.strip().splitlines()
        self.assertTrue(lines and lines[-1].startswith("error: "), res)
        for w in words:
            self.assertIn(w, res.err, res)


# ---------------------------------------------------------------- real pockityd

class TestSession(Base):
    @classmethod
    def setUpClass(cls):
        cls.token = D.new_user()[0]
        cls.pocket = D.new_pocket(cls.token)

    def pocket_state(self):
        r = D.request("GET", "/v1/pockets/" + self.pocket["id"], token=self.token)
        self.assertEqual(r.status, 200, r)
        return r.body

    def test_session_rw(self):
        key = D.new_key(self.token, self.pocket["id"], "rw")["key"]
        s = json.loads(self.expect_ok(tool(D.url, key, "session")))
        self.assertEqual(s["access"], "rw")
        self.assertEqual(s["bucket"], os.environ["POCKITY_S3_BUCKET"])
        self.assertEqual(s["endpoint"], os.environ["POCKITY_S3_ENDPOINT"])
        self.assertEqual(s["prefix"], self.pocket["prefix"].rstrip("/") + "/")
        self.assertEqual(s["pocket_id"], self.pocket["id"])
        self.assertEqual(s["pocket_name"], self.pocket["name"])
        self.assertEqual(s["quota"], self.pocket["quota"])
        self.assertTrue(s["has_session_token"])
        self.assertGreater(s["expiration"], time.time() + 600)
        self.assertLess(s["expiration"], time.time() + 43200 + 60)
        self.assertEqual(self.expect_ok(tool(D.url, key, "access")).strip(), "rw")

    def test_session_ro(self):
        key = D.new_key(self.token, self.pocket["id"], "ro")["key"]
        s = json.loads(self.expect_ok(tool(D.url, key, "session")))
        self.assertEqual(s["access"], "ro")
        self.assertEqual(s["pocket_id"], self.pocket["id"])

    def test_bad_key(self):
        for key in ("pky_" + secrets.token_hex(20), "not-a-key-" + secrets.token_hex(8)):
            res = tool(D.url, key, "session")
            self.expect_errno(res, errno.EACCES, "API key")
            self.assertEqual(len(res.err.strip().splitlines()), 1, res)
            self.assertEqual(res.out, "")

    def test_key_with_spaces_is_refused_locally(self):
        self.expect_errno(tool(D.url, "pky_a b", "session"), errno.EINVAL, "malformed API key")

    def test_revoked_key(self):
        k = D.new_key(self.token, self.pocket["id"])
        self.expect_ok(tool(D.url, k["key"], "session"))
        r = D.request("DELETE", "/v1/keys/" + k["id"], token=self.token)
        self.assertEqual(r.status, 204, r)
        self.expect_errno(tool(D.url, k["key"], "session"), errno.EACCES, "revoked")

    def test_pending_pocket(self):
        tid = "gold-" + secrets.token_hex(3)
        r = D.request("POST", "/v1/admin/tiers",
                      {"id": tid, "name": "Gold " + tid, "max_bytes": 50 << 30,
                       "max_objects": 100000, "price_minor": 900, "currency": "EUR",
                       "needs_approval": True}, token=D.admin_token())
        self.assertEqual(r.status, 201, r)
        p = D.new_pocket(self.token, tier=tid)
        self.assertEqual(p["status"], "pending")
        key = D.new_key(self.token, p["id"])["key"]
        self.expect_errno(tool(D.url, key, "session"), errno.EPERM, "pending")

    def test_unreachable_server(self):
        res = tool("http://127.0.0.1:%d" % free_port(), "pky_whatever", "session")
        self.expect_errno(res, errno.ECONNREFUSED, "cannot reach pockityd")
        self.assertLess(res.seconds, 5)

    def test_malformed_url(self):
        for url in ("ftp://127.0.0.1/", "127.0.0.1:1", "", "http://u:p@127.0.0.1:1",
                    "http://127.0.0.1:1/?x=1"):
            res = tool(url, "pky_whatever", "session")
            self.expect_errno(res, errno.EINVAL, "server url")
            self.assertNotIn("u:p", res.err)

    def test_reserve_commit_release_deleted(self):
        key = D.new_key(self.token, self.pocket["id"])["key"]
        base = self.pocket_state()["usage"]
        rid = self.expect_ok(tool(D.url, key, "reserve", "dir/a file.txt", 1000)).strip()
        self.assertTrue(rid.startswith("rsv_"), rid)
        st = self.pocket_state()
        self.assertEqual(st["reserved"], {"bytes": 1000, "objects": 1})
        self.expect_ok(tool(D.url, key, "commit", rid, 700, '"0123456789abcdef"'))
        st = self.pocket_state()
        self.assertEqual(st["reserved"], {"bytes": 0, "objects": 0})
        self.assertEqual(st["usage"], {"bytes": base["bytes"] + 700,
                                       "objects": base["objects"] + 1})
        # committing twice: the reservation is gone
        self.expect_errno(tool(D.url, key, "commit", rid, 700, '"x"'), errno.ENOENT)

        rid2 = self.expect_ok(tool(D.url, key, "reserve", "dir/other", 5000)).strip()
        self.assertEqual(self.pocket_state()["reserved"], {"bytes": 5000, "objects": 1})
        self.expect_ok(tool(D.url, key, "release", rid2))
        self.assertEqual(self.pocket_state()["reserved"], {"bytes": 0, "objects": 0})
        self.expect_errno(tool(D.url, key, "release", rid2), errno.ENOENT)
        self.expect_errno(tool(D.url, key, "release", "rsv_" + "a" * 20), errno.ENOENT)
        self.expect_errno(tool(D.url, key, "release", "../etc"), errno.EINVAL)

        self.expect_ok(tool(D.url, key, "deleted", "dir/a file.txt", "never/written"))
        self.assertEqual(self.pocket_state()["usage"], base)

    def test_usage(self):
        key = D.new_key(self.token, self.pocket["id"])["key"]
        probe = D.request("GET", "/v1/usage", token=key)
        if probe.status == 404:
            self.skipTest("pockityd has no GET /v1/usage yet")
        rid = self.expect_ok(tool(D.url, key, "reserve", "usage/x", 321)).strip()
        try:
            u = json.loads(self.expect_ok(tool(D.url, key, "usage")))
            st = self.pocket_state()
            self.assertEqual(u["quota"], st["quota"])
            self.assertEqual(u["usage"], st["usage"])
            self.assertEqual(u["reserved"], st["reserved"])
            self.assertGreaterEqual(u["reserved"]["bytes"], 321)
        finally:
            self.expect_ok(tool(D.url, key, "release", rid))

    def test_quota_exceeded(self):
        key = D.new_key(self.token, self.pocket["id"])["key"]
        quota = self.pocket["quota"]["max_bytes"]
        self.expect_errno(tool(D.url, key, "reserve", "huge", quota + 1), errno.EDQUOT)
        self.assertEqual(self.pocket_state()["reserved"], {"bytes": 0, "objects": 0})

    def test_ro_key_cannot_reserve(self):
        key = D.new_key(self.token, self.pocket["id"], "ro")["key"]
        self.expect_errno(tool(D.url, key, "reserve", "k", 1), errno.EACCES)
        self.expect_errno(tool(D.url, key, "deleted", "k"), errno.EACCES)

    def test_refresh_is_shared_by_concurrent_callers(self):
        key = D.new_key(self.token, self.pocket["id"])["key"]

        def sessions():
            text = D.request("GET", "/metrics").raw.decode()
            for line in text.splitlines():
                if line.startswith("pockityd_sessions_issued_total "):
                    return int(float(line.split()[1]))
            self.skipTest("pockityd exports no pockityd_sessions_issued_total")

        before = sessions()
        out = self.expect_ok(tool(D.url, key, "refresh", 16, "list"))
        self.assertIn("list ok", out)
        # one for remote_open, one for 16 concurrent refreshes and the follow-up
        self.assertEqual(sessions() - before, 2)


class TestOutage(Base):
    """pockityd going away while a quota call is pending."""

    def test_reserve_waits_for_pockityd_to_come_back(self):
        port = free_port()
        d = harness.Daemon(port=port)
        try:
            token = d.new_user()[0]
            p = d.new_pocket(token)
            key = d.new_key(token, p["id"])["key"]
            env = dict(os.environ, POCKITY_KEY=key)
            proc = subprocess.Popen([TOOL, "-p", "-w", "30000", "-t", "2000", d.url, "reserve",
                                     "k", "42"], env=env, stdin=subprocess.PIPE,
                                    stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            try:
                self.assertEqual(proc.stdout.readline().strip(), "connected")
                self.assertEqual(d.stop(), 0)
                t0 = time.monotonic()
                proc.stdin.write("go\n")
                proc.stdin.flush()
                time.sleep(2.5)
                d.start()
                self.assertEqual(d.port, port)
                out, err = proc.communicate(timeout=40)
            finally:
                if proc.poll() is None:
                    proc.kill()
                    proc.communicate()
            self.assertEqual(proc.returncode, 0, err)
            self.assertGreater(time.monotonic() - t0, 2.5)
            self.assertTrue(out.strip().startswith("rsv_"), out)
            self.assertIn("retrying", err)
            self.assertNotIn(key[-43:], out + err)
            r = d.request("GET", "/v1/pockets/" + p["id"], token=token)
            self.assertEqual(r.body["reserved"], {"bytes": 42, "objects": 1})
        finally:
            d.stop()

    def test_reserve_gives_up_after_write_wait(self):
        d = harness.Daemon()
        try:
            token = d.new_user()[0]
            p = d.new_pocket(token)
            key = d.new_key(token, p["id"])["key"]
            env = dict(os.environ, POCKITY_KEY=key)
            proc = subprocess.Popen([TOOL, "-p", "-w", "1500", d.url, "reserve", "k", "1"],
                                    env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                    stderr=subprocess.PIPE, text=True)
            self.assertEqual(proc.stdout.readline().strip(), "connected")
            d.stop()
            t0 = time.monotonic()
            out, err = proc.communicate("go\n", timeout=30)
            elapsed = time.monotonic() - t0
            self.assertEqual(proc.returncode, errno.EIO, err)
            self.assertGreaterEqual(elapsed, 1.4)
            self.assertLess(elapsed, 6)
            self.assertIn("gave up", err)
        finally:
            d.stop()


# ---------------------------------------------------------------- allowances, real pockityd

def cycles(url, key, prefix, n, size, threads=1, batch=True):
    opts = ("-a",) if batch else ()
    res = tool(url, key, "cycles", prefix, n, size, threads, opts=opts, timeout=300)
    assert res.code == 0, res
    return json.loads(res.out)


def script(url, key, *ops, batch=True):
    res = tool(url, key, "script", *ops, opts=("-a",) if batch else (), timeout=120)
    assert res.code == 0, res
    return res.out.splitlines()


class TestAllowances(Base):
    """remote_reserve/commit/release with quota_batch on, against pockityd."""

    @classmethod
    def setUpClass(cls):
        cls.token = D.new_user()[0]
        probe_pocket = D.new_pocket(cls.token)
        probe = D.request("POST", "/v1/allowances", {"bytes": 1, "objects": 1},
                          token=D.new_key(cls.token, probe_pocket["id"])["key"])
        if probe.status == 404:
            raise unittest.SkipTest("pockityd has no /v1/allowances yet")

    def tier(self, max_bytes, max_objects):
        tid = "alw" + secrets.token_hex(3)
        r = D.request("POST", "/v1/admin/tiers",
                      {"id": tid, "name": tid, "max_bytes": max_bytes,
                       "max_objects": max_objects, "price_minor": 0, "currency": "USD",
                       "needs_approval": False}, token=D.admin_token())
        self.assertIn(r.status, (200, 201), r)
        return tid

    def pocket(self, tier="free"):
        p = D.new_pocket(self.token, tier=tier)
        return p, D.new_key(self.token, p["id"])["key"]

    def state(self, pocket):
        r = D.request("GET", "/v1/pockets/" + pocket["id"], token=self.token)
        self.assertEqual(r.status, 200, r)
        return r.body

    def allowances_granted(self):
        text = D.request("GET", "/metrics").raw.decode()
        for line in text.splitlines():
            if line.startswith("pockityd_allowances_total"):
                return int(float(line.split()[-1]))
        self.skipTest("pockityd exports no pockityd_allowances_total")

    def test_cycles_cost_a_handful_of_allowances(self):
        p, key = self.pocket()
        before = self.allowances_granted()
        out = cycles(D.url, key, "many/f", 200, 1000)
        self.assertEqual(out, {"ok": 200, "local": 200, "error": None})
        self.assertLessEqual(self.allowances_granted() - before, 3)
        st = self.state(p)
        self.assertEqual(st["usage"], {"bytes": 200 * 1000, "objects": 200})
        self.assertEqual(st["reserved"], {"bytes": 0, "objects": 0})  # given back at exit

    def test_threads_share_allowances(self):
        p, key = self.pocket()
        before = self.allowances_granted()
        out = cycles(D.url, key, "par/f", 400, 100, threads=8)
        self.assertEqual(out["ok"], 400, out)
        self.assertIsNone(out["error"])
        self.assertLessEqual(self.allowances_granted() - before, 4)
        st = self.state(p)
        self.assertEqual(st["usage"], {"bytes": 400 * 100, "objects": 400})
        self.assertEqual(st["reserved"], {"bytes": 0, "objects": 0})

    def test_overwrites_count_once(self):
        p, key = self.pocket()
        self.assertEqual(cycles(D.url, key, "same", 1, 500)["ok"], 1)
        # the same key again, larger: the ledger holds one object of the new size
        self.assertEqual(cycles(D.url, key, "same", 1, 800)["ok"], 1)
        st = self.state(p)
        self.assertEqual(st["usage"], {"bytes": 800, "objects": 1})
        self.assertEqual(st["reserved"], {"bytes": 0, "objects": 0})

    def test_edquot_where_the_exact_path_gives_it(self):
        tid = self.tier(20000, 1000)
        for batch in (False, True):
            p, key = self.pocket(tid)
            out = cycles(D.url, key, "q/f", 30, 1000, batch=batch)
            self.assertEqual(out["ok"], 20, (batch, out))
            self.assertEqual(out["error"], "EDQUOT", (batch, out))
            st = self.state(p)
            self.assertEqual(st["usage"], {"bytes": 20000, "objects": 20}, batch)
            self.assertEqual(st["reserved"], {"bytes": 0, "objects": 0}, batch)
        # the object quota too
        tid = self.tier(1 << 30, 12)
        for batch in (False, True):
            p, key = self.pocket(tid)
            out = cycles(D.url, key, "o/f", 30, 10, batch=batch)
            self.assertEqual((out["ok"], out["error"]), (12, "EDQUOT"), (batch, out))
            self.assertEqual(self.state(p)["usage"], {"bytes": 120, "objects": 12})

    def test_file_larger_than_an_allowance_takes_the_exact_path(self):
        tid = self.tier(1 << 20, 100)
        p, key = self.pocket(tid)
        # an allowance holds at most 1/8 of the free space: 200 KB goes exact
        lines = script(D.url, key, "r:big:200000", "c:0:200000", "r:small:100", "c:1:100")
        self.assertTrue(lines[0].startswith("rsv_"), lines)
        self.assertTrue(lines[2].startswith("local#"), lines)
        self.assertEqual(lines[1::2], ["committed", "committed"])
        lines = script(D.url, key, "r:huge:%d" % (2 << 20))
        self.assertEqual(lines, ["error EDQUOT"])
        st = self.state(p)
        self.assertEqual(st["usage"], {"bytes": 200100, "objects": 2})
        self.assertEqual(st["reserved"], {"bytes": 0, "objects": 0})

    def test_release_gives_the_charge_back_locally(self):
        tid = self.tier(80000, 1000)  # allowances of 10000 bytes
        p, key = self.pocket(tid)
        lines = script(D.url, key, "r:a:6000", "x:0", "r:b:6000", "c:1:6000", "x:0",
                       "c:0:6000", "u")
        self.assertTrue(lines[0].startswith("local#"), lines)
        self.assertEqual(lines[1], "released")
        self.assertTrue(lines[2].startswith("local#"), lines)
        self.assertEqual(lines[3], "committed")
        # a released or committed local id is gone
        self.assertEqual(lines[4:6], ["error ENOENT", "error ENOENT"])
        # what was released served b: one allowance held (after b's commit,
        # 10000 - 6000 left), the ledger counts only b
        self.assertEqual(lines[6], "reserved 4000 %d used 6000 1" % (125 - 1), lines)
        st = self.state(p)
        self.assertEqual(st["usage"], {"bytes": 6000, "objects": 1})
        self.assertEqual(st["reserved"], {"bytes": 0, "objects": 0})

    def test_deletion_waits_for_queued_commits(self):
        """Commits are sent in the background; a deletion reported right
        after must not land before them, or the ledger would count the
        deleted object again."""
        p, key = self.pocket()
        lines = script(D.url, key, "r:a:10", "c:0:10", "r:b:20", "c:1:20", "d:a", "u")
        self.assertEqual(lines[4], "deleted", lines)
        self.assertEqual(lines[5].split()[3:], ["used", "20", "1"], lines)
        st = self.state(p)
        self.assertEqual(st["usage"], {"bytes": 20, "objects": 1})

    def test_exact_commit_waits_for_queued_commits(self):
        """A file too big for an allowance goes the exact path; its commit
        must not overtake the queued commit of an earlier, smaller version
        of the same key, or the ledger would keep the old size."""
        p, key = self.pocket(self.tier(1 << 31, 1000))  # allowances of 64 MiB at most
        big = 200 << 20
        lines = script(D.url, key, "r:a:10", "c:0:10", "r:a:%d" % big, "c:1:%d" % big, "u")
        self.assertTrue(lines[0].startswith("local#"), lines)
        self.assertTrue(lines[2].startswith("rsv_"), lines)
        self.assertEqual(lines[4].split()[3:], ["used", str(big), "1"], lines)
        rows = D.sql("SELECT size FROM objects WHERE pocket_id = '%s' AND key = 'a'" % p["id"])
        self.assertEqual(rows, [[str(big)]])

    def test_uncommitted_charges_leave_the_allowance_to_expire(self):
        p, key = self.pocket()
        lines = script(D.url, key, "r:a:10", "r:b:10", "c:1:10")
        self.assertTrue(lines[0].startswith("local#"), lines)
        # a's charge is pending: the allowance is not given back (a commit
        # after a release would fail), the server's TTL reclaims it
        st = self.state(p)
        self.assertEqual(st["usage"], {"bytes": 10, "objects": 1})
        self.assertGreater(st["reserved"]["bytes"], 0)

    def test_bad_ids(self):
        p, key = self.pocket()
        lines = script(D.url, key, "r:a:1", "x:0", "x:0")
        self.assertEqual(lines[1:], ["released", "error ENOENT"])
        for bad in ("local#0", "local#x", "local#", "local#99999999999999999999"):
            self.expect_errno(tool(D.url, key, "release", bad, opts=("-a",)), errno.EINVAL)
        self.expect_errno(tool(D.url, key, "release", "local#7", opts=("-a",)), errno.ENOENT)
        self.expect_errno(tool(D.url, key, "commit", "local#7", 1, '"e"', opts=("-a",)),
                          errno.ENOENT)

    def test_ro_key_is_refused(self):
        p = D.new_pocket(self.token)
        key = D.new_key(self.token, p["id"], "ro")["key"]
        self.expect_errno(tool(D.url, key, "reserve", "k", 1, opts=("-a",)), errno.EACCES)


# ---------------------------------------------------------------- fake pockityd

def session_body(expires_in=900, **over):
    body = {"endpoint": "http://127.0.0.1:9", "region": "us-east-1", "bucket": "pockity",
            "prefix": "root/pkt_fake/", "access_key_id": "AKFAKE",
            "secret_access_key": "fake-secret-" + secrets.token_hex(4),
            "session_token": "fake-token", "expiration": int(time.time()) + expires_in,
            "access": "rw", "quota": {"max_bytes": 1000, "max_objects": 10},
            "usage": {"bytes": 1, "objects": 1}, "reserved": {"bytes": 0, "objects": 0},
            "pocket": {"id": "pkt_fake", "name": "fake", "status": "active"}}
    body.update(over)
    return body


class Fake:
    """A pockityd stand-in: routes[(method, path)] is a function (n, body) ->
    (status, payload, delay_s) where n counts calls of that route from 1;
    payload is a dict (sent as JSON), bytes, or None."""

    def __init__(self):
        self.routes = {}
        self.calls = {}
        self.lock = threading.Lock()
        fake = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *a):
                pass

            def handle_any(self):
                n = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(n) if n else b""
                route = (self.command, self.path)
                with fake.lock:
                    fake.calls[route] = fake.calls.get(route, 0) + 1
                    count = fake.calls[route]
                fn = fake.routes.get(route)
                status, payload, delay = fn(count, body) if fn else (404, None, 0)
                if delay:
                    time.sleep(delay)
                data = payload if isinstance(payload, bytes) else \
                    json.dumps(payload).encode() if payload is not None else b""
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                except OSError:
                    pass

            do_GET = do_POST = do_DELETE = handle_any

        class Server(http.server.ThreadingHTTPServer):
            def handle_error(self, request, client_address):
                pass  # a client that gave up mid-answer is part of the tests

        self.server = Server(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = "http://127.0.0.1:%d" % self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def count(self, method, path):
        with self.lock:
            return self.calls.get((method, path), 0)

    def close(self):
        self.server.shutdown()
        self.server.server_close()


SESSION = ("POST", "/v1/session")
KEY = "pky_fakeid.fakesecret" + "0123456789"


class TestFake(Base):
    def setUp(self):
        self.fake = Fake()

    def tearDown(self):
        self.fake.close()

    def test_renewal_at_two_thirds_of_the_lifetime(self):
        # 3 s credentials: renewed at about 2 s, 4 s; stopped at 5 s
        self.fake.routes[SESSION] = lambda n, b: (200, session_body(expires_in=3), 0)
        out = self.expect_ok(tool(self.fake.url, KEY, "renew-check", 5))
        self.assertIn(self.fake.count(*SESSION), (3, 4))
        self.assertLess(int(out.split()[2]), 1000, out)

    def test_renewal_backs_off_on_failure(self):
        def session(n, b):
            if n == 1:
                return 200, session_body(expires_in=3), 0
            return 503, {"error": {"code": "unavailable", "message": "sts down"}}, 0
        self.fake.routes[SESSION] = session
        res = tool(self.fake.url, KEY, "renew-check", 6)
        self.expect_ok(res)
        # attempts at about 2, 3, 5 s (1 s, then 2 s pauses): no busy loop
        self.assertIn(self.fake.count(*SESSION) - 1, (2, 3, 4))
        self.assertIn("sts down", res.err)

    def test_renewal_stops_promptly_during_a_hung_request(self):
        self.fake.routes[SESSION] = lambda n, b: (
            200, session_body(expires_in=3), 0 if n == 1 else 20)
        out = self.expect_ok(tool(self.fake.url, KEY, "renew-check", 3, opts=("-t", "30000")))
        self.assertLess(int(out.split()[2]), 2500, out)

    def test_concurrent_refreshes_make_one_request(self):
        self.fake.routes[SESSION] = lambda n, b: (200, session_body(), 0.2)
        self.expect_ok(tool(self.fake.url, KEY, "refresh", 16))
        self.assertEqual(self.fake.count(*SESSION), 2)

    def test_malformed_sessions(self):
        bad = [session_body(prefix="root/pkt_fake"), session_body(prefix="/root/x/"),
               session_body(expiration="soon"), session_body(access="admin"),
               session_body(endpoint="file:///etc/passwd"), session_body(bucket="a/b"),
               session_body(access_key_id=""), session_body(quota={"max_bytes": -1}),
               session_body(pocket=None), session_body(secret_access_key=7), [1, 2]]
        for body in bad:
            self.fake.routes[SESSION] = lambda n, b, body=body: (200, body, 0)
            self.expect_errno(tool(self.fake.url, KEY, "session"), errno.EPROTO, "malformed")
        for raw in (b"not json", b"{" + b" " * (2 << 20) + b"}", b""):
            self.fake.routes[SESSION] = lambda n, b, raw=raw: (200, raw, 0)
            self.expect_errno(tool(self.fake.url, KEY, "session"), errno.EPROTO, "pockityd")

    def test_not_pockityd(self):
        self.expect_errno(tool(self.fake.url, KEY, "session"), errno.EPROTO, "http 404")

    def test_server_message_never_echoes_the_key(self):
        self.fake.routes[SESSION] = lambda n, b: (
            401, {"error": {"code": "unauthenticated", "message": "bad key " + KEY}}, 0)
        res = tool(self.fake.url, KEY, "session")  # tool() asserts the key is absent
        self.expect_errno(res, errno.EACCES, "withheld")

    def test_authorization_header(self):
        seen = {}

        class Capture(http.server.BaseHTTPRequestHandler):
            def do_POST(self):
                seen["auth"] = self.headers.get("Authorization")
                seen["type"] = self.headers.get("Content-Type")
                self.send_response(401)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *a):
                pass

        srv = http.server.HTTPServer(("127.0.0.1", 0), Capture)
        t = threading.Thread(target=srv.handle_request, daemon=True)
        t.start()
        self.expect_errno(tool("http://127.0.0.1:%d/" % srv.server_address[1], KEY, "session"),
                          errno.EACCES)
        t.join(10)
        srv.server_close()
        self.assertEqual(seen.get("auth"), "Bearer " + KEY)

    def test_timeout(self):
        self.fake.routes[SESSION] = lambda n, b: (200, session_body(), 5)
        res = tool(self.fake.url, KEY, "session", opts=("-t", "700"))
        self.expect_errno(res, errno.ETIMEDOUT)
        self.assertLess(res.seconds, 3)

    def test_quota_calls_retry_on_503_but_not_on_4xx(self):
        self.fake.routes[SESSION] = lambda n, b: (200, session_body(), 0)
        reserve = ("POST", "/v1/reservations")
        self.fake.routes[reserve] = lambda n, b: (
            (503, {"error": {"code": "unavailable", "message": "busy"}}, 0) if n < 3 else
            (201, {"id": "rsv_abc", "key": json.loads(b)["key"], "bytes": 5,
                   "expires_at": 1}, 0))
        out = self.expect_ok(tool(self.fake.url, KEY, "reserve", "k", 5))
        self.assertEqual(out.strip(), "rsv_abc")
        self.assertEqual(self.fake.count(*reserve), 3)

        deleted = ("POST", "/v1/objects/deleted")
        self.fake.routes[deleted] = lambda n, b: (
            400, {"error": {"code": "invalid_request", "message": "nope"}}, 0)
        self.expect_errno(tool(self.fake.url, KEY, "deleted", "a"), errno.EINVAL)
        self.assertEqual(self.fake.count(*deleted), 1)

    def test_deleted_is_sent_in_batches(self):
        self.fake.routes[SESSION] = lambda n, b: (200, session_body(), 0)
        sizes = []
        deleted = ("POST", "/v1/objects/deleted")

        def on_deleted(n, b):
            sizes.append(len(json.loads(b)["keys"]))
            return 200, {"deleted": sizes[-1]}, 0
        self.fake.routes[deleted] = on_deleted
        keys = ["k%d" % i for i in range(2500)]
        self.expect_ok(tool(self.fake.url, KEY, "deleted", *keys))
        self.assertEqual(sizes, [1000, 1000, 500])

    def test_bad_reservation_answer(self):
        self.fake.routes[SESSION] = lambda n, b: (200, session_body(), 0)
        self.fake.routes[("POST", "/v1/reservations")] = lambda n, b: (
            201, {"id": "../../x", "bytes": 1}, 0)
        self.expect_errno(tool(self.fake.url, KEY, "reserve", "k", 1), errno.EIO)

    def test_usage_answer(self):
        self.fake.routes[SESSION] = lambda n, b: (200, session_body(), 0)
        figures = {"quota": {"max_bytes": 9, "max_objects": 8},
                   "usage": {"bytes": 7, "objects": 6}, "reserved": {"bytes": 5, "objects": 4}}
        self.fake.routes[("GET", "/v1/usage")] = lambda n, b: (200, figures, 0)
        self.assertEqual(json.loads(self.expect_ok(tool(self.fake.url, KEY, "usage"))), figures)
        self.fake.routes[("GET", "/v1/usage")] = lambda n, b: (200, {"quota": {}}, 0)
        self.expect_errno(tool(self.fake.url, KEY, "usage"), errno.EIO)


def totals(used_b=1, used_o=1, res_b=0, res_o=0, max_b=10 << 30, max_o=100000):
    return {"quota": {"max_bytes": max_b, "max_objects": max_o},
            "usage": {"bytes": used_b, "objects": used_o},
            "reserved": {"bytes": res_b, "objects": res_o}, "restriction": None}


class TestFakeAllowances(Base):
    """The allowance protocol as the client speaks it."""

    ALW = ("POST", "/v1/allowances")
    RSV = ("POST", "/v1/reservations")

    def setUp(self):
        self.fake = Fake()
        self.asked = []
        self.commits = []
        self.fake.routes[SESSION] = lambda n, b: (
            200, session_body(quota={"max_bytes": 10 << 30, "max_objects": 100000}), 0)
        self.grant("alw_one")
        self.fake.routes[self.RSV] = lambda n, b: (
            201, dict(totals(), id="rsv_%d" % n, key=json.loads(b)["key"], bytes=1,
                      expires_at=int(time.time()) + 3600), 0)

    def tearDown(self):
        self.fake.close()

    def grant(self, *ids, delay=0, commit_status=200, commit_delay=0):
        """POST /v1/allowances grants ids in turn; their commits (one by one
        or in batches) answer commit_status (a dict id -> status, or one
        status) after commit_delay seconds. self.commits lists (id, object)
        per object committed, self.batches the size of each request."""
        left = {}  # id -> [bytes, objects] the allowance has left
        self.batches = []

        def on_grant(n, body):
            req = json.loads(body)
            self.asked.append(req)
            aid = ids[min(n, len(ids)) - 1]
            with self.fake.lock:
                left[aid] = [req["bytes"], req["objects"]]
            return 201, dict(totals(), id=aid, bytes=req["bytes"], objects=req["objects"],
                             expires_at=int(time.time()) + 120), delay
        self.fake.routes[self.ALW] = on_grant
        for aid in ids:
            st = commit_status.get(aid, 200) if isinstance(commit_status, dict) else commit_status

            def on_commit(n, body, aid=aid, st=st, batch=False):
                req = json.loads(body)
                objs = req["objects"] if batch else [req]
                with self.fake.lock:
                    self.commits.extend((aid, o) for o in objs)
                    self.batches.append(len(objs) if batch else 0)
                if st != 200:
                    return st, {"error": {"code": "not_found", "message": "no allowance"}}, 0
                with self.fake.lock:
                    for o in objs:
                        lb, lo = left[aid]
                        left[aid] = [max(lb - o["bytes"], 0), max(lo - 1, 0)]
                    lb, lo = left[aid]
                body = dict(totals(), allowance={"id": aid, "bytes": lb, "objects": lo,
                                                 "expires_at": int(time.time()) + 120})
                if batch:
                    body["committed"] = len(objs)
                return 200, body, commit_delay
            self.fake.routes[("POST", "/v1/allowances/%s/commit" % aid)] = on_commit
            self.fake.routes[("POST", "/v1/allowances/%s/commits" % aid)] = \
                lambda n, b, f=on_commit: f(n, b, batch=True)
            self.fake.routes[("DELETE", "/v1/allowances/" + aid)] = lambda n, b: (
                200, totals(), 0)

    def run_cycles(self, n, size, threads=1):
        res = tool(self.fake.url, KEY, "cycles", "k", n, size, threads, opts=("-a",))
        self.assertEqual(res.code, 0, res)
        return json.loads(res.out)

    def test_one_allowance_serves_many_files(self):
        out = self.run_cycles(50, 1000)
        self.assertEqual(out, {"ok": 50, "local": 50, "error": None})
        self.assertEqual(self.asked, [{"bytes": 64 << 20, "objects": 256}])
        self.assertEqual(len(self.commits), 50)
        self.assertEqual(self.commits[7], ("alw_one", {"key": "k7", "bytes": 1000,
                                                      "etag": '"00000000000003e8"'}))
        self.assertEqual(self.fake.count(*self.RSV), 0)
        self.assertEqual(self.fake.count("DELETE", "/v1/allowances/alw_one"), 1)

    def test_option_off_is_the_exact_path(self):
        res = tool(self.fake.url, KEY, "cycles", "k", 3, 10)
        self.assertEqual(json.loads(res.out), {"ok": 0, "local": 0, "error": "ENOENT"})
        self.assertEqual(self.fake.count(*self.ALW), 0)
        self.assertEqual(self.fake.count(*self.RSV), 2)  # reserve, re-reserve after 404

    def test_allowance_sized_by_free_space(self):
        self.fake.routes[SESSION] = lambda n, b: (200, session_body(
            quota={"max_bytes": 80001, "max_objects": 100}, usage={"bytes": 1, "objects": 1},
            reserved={"bytes": 0, "objects": 20}), 0)
        self.assertEqual(self.run_cycles(1, 100)["local"], 1)
        self.assertEqual(self.asked, [{"bytes": 10000, "objects": 9}])

    def test_too_little_free_space_takes_the_exact_path(self):
        self.fake.routes[SESSION] = lambda n, b: (200, session_body(
            quota={"max_bytes": 8000, "max_objects": 100}), 0)
        self.fake.routes[("POST", "/v1/reservations/rsv_1/commit")] = lambda n, b: (
            200, totals(), 0)
        out = self.run_cycles(1, 1000)  # 1000 > 8000/8
        self.assertEqual(out, {"ok": 1, "local": 0, "error": None})
        self.assertEqual(self.fake.count(*self.ALW), 0)

    def test_refusal_means_exact_path_for_a_while(self):
        self.fake.routes[self.ALW] = lambda n, b: (
            507, {"error": {"code": "quota_exceeded", "message": "asked 64 MiB, 3 free"}}, 0)
        for i in range(1, 6):
            self.fake.routes[("POST", "/v1/reservations/rsv_%d/commit" % i)] = lambda n, b: (
                200, totals(), 0)
        out = self.run_cycles(5, 10)
        self.assertEqual(out, {"ok": 5, "local": 0, "error": None})
        self.assertEqual(self.fake.count(*self.ALW), 1)
        self.assertEqual(self.fake.count(*self.RSV), 5)

    def test_server_without_allowances(self):
        del self.fake.routes[self.ALW]  # 404
        self.fake.routes[("POST", "/v1/reservations/rsv_1/commit")] = lambda n, b: (
            200, totals(), 0)
        self.assertEqual(self.run_cycles(1, 10), {"ok": 1, "local": 0, "error": None})

    def test_malformed_grant_takes_the_exact_path(self):
        for bad in ({"id": "../x", "bytes": 1, "objects": 1, "expires_at": 9},
                    {"id": "rsv_abc", "bytes": 1, "objects": 1, "expires_at": 9},
                    {"id": "alw_abc", "bytes": -1, "objects": 1, "expires_at": 9},
                    {"id": "alw_abc", "bytes": 1, "objects": 1}):
            self.fake.routes[self.ALW] = lambda n, b, bad=bad: (201, bad, 0)
            res = tool(self.fake.url, KEY, "reserve", "k", 1, opts=("-a",))
            self.assertEqual(res.code, 0, res)
            self.assertTrue(res.out.startswith("rsv_"), res)
            self.assertIn("malformed", res.err)

    def exact_commits(self, n):
        """Serve the commits of exact reservations rsv_1..rsv_n; returns the
        keys reserved on the exact path, in order."""
        keys = []

        def reserve(n, body):
            keys.append(json.loads(body)["key"])
            return 201, dict(totals(), id="rsv_%d" % n, key=keys[-1], bytes=1,
                             expires_at=int(time.time()) + 3600), 0
        self.fake.routes[self.RSV] = reserve
        for i in range(1, n + 1):
            self.fake.routes[("POST", "/v1/reservations/rsv_%d/commit" % i)] = lambda n, b: (
                200, totals(), 0)
        return keys

    def test_commit_of_a_lost_allowance_falls_back(self):
        """The commit of a charge whose allowance the server no longer knows
        goes the exact path; the next file takes a new allowance."""
        self.grant("alw_one", "alw_two", commit_status={"alw_one": 404})
        exact = self.exact_commits(1)
        res = tool(self.fake.url, KEY, "script", "r:a:10", "c:0:10", "w", "r:b:10", "c:1:10",
                   "w", opts=("-a",))
        self.assertEqual(res.out.splitlines(), ["local#1", "committed", "settled", "local#2",
                                                "committed", "settled"], res)
        self.assertEqual([(aid, o["key"]) for aid, o in self.commits],
                         [("alw_one", "a"), ("alw_two", "b")])
        self.assertEqual(exact, ["a"])
        self.assertEqual(self.fake.count("POST", "/v1/reservations/rsv_1/commit"), 1)
        self.assertEqual(self.fake.count(*self.ALW), 2)
        self.assertEqual(self.fake.count("DELETE", "/v1/allowances/alw_one"), 0)
        self.assertEqual(self.fake.count("DELETE", "/v1/allowances/alw_two"), 1)

    def test_concurrent_reserves_wait_for_one_fetch(self):
        self.grant("alw_one", delay=0.5)
        out = self.run_cycles(64, 10, threads=16)
        self.assertEqual(out, {"ok": 64, "local": 64, "error": None})
        self.assertEqual(self.fake.count(*self.ALW), 1)

    def test_concurrent_commits_share_requests(self):
        """Commits that arrive while one is in flight go together: 16 threads
        commit 96 files in far fewer requests, each object exactly once, and
        a lone commit still takes the one-object route."""
        self.grant("alw_one", commit_delay=0.05)
        out = self.run_cycles(96, 10, threads=16)
        self.assertEqual(out, {"ok": 96, "local": 96, "error": None})
        self.assertEqual(sorted(o["key"] for _, o in self.commits),
                         sorted("k%d" % i for i in range(96)))
        self.assertTrue(all(o["bytes"] == 10 and o["etag"] for _, o in self.commits),
                        self.commits[:3])
        self.assertLessEqual(len(self.batches), 48, self.batches)
        self.assertGreater(max(self.batches), 1, self.batches)
        self.assertLessEqual(max(self.batches), 64, self.batches)
        self.batches.clear()
        self.assertEqual(self.run_cycles(1, 10)["ok"], 1)
        self.assertEqual(self.batches, [0])  # the one-object route

    def test_batch_commit_of_a_lost_allowance_falls_back(self):
        """A batch answered 404: each of its files is reserved and committed
        on the exact path; later files take a new allowance. Every file is
        reported exactly once."""
        self.grant("alw_one", "alw_two", commit_status={"alw_one": 404}, commit_delay=0.05)
        exact = self.exact_commits(32)
        out = self.run_cycles(32, 10, threads=8)
        self.assertEqual(out, {"ok": 32, "local": 32, "error": None})
        two = [o["key"] for aid, o in self.commits if aid == "alw_two"]
        self.assertGreater(len(exact), 0)
        self.assertEqual(sorted(two + exact), sorted("k%d" % i for i in range(32)))

    def test_pockityd_without_batched_commits(self):
        """A pockityd that answers 404 to .../commits but takes .../commit:
        the batch goes again one by one, the allowance stays alive, and
        later commits go one by one."""
        self.grant("alw_one", commit_delay=0.05)
        del self.fake.routes[("POST", "/v1/allowances/alw_one/commits")]
        out = self.run_cycles(48, 10, threads=8)
        self.assertEqual(out, {"ok": 48, "local": 48, "error": None})
        self.assertEqual(sorted(o["key"] for _, o in self.commits),
                         sorted("k%d" % i for i in range(48)))
        self.assertEqual(len(self.batches), 48)  # every one by one, through .../commit
        self.assertEqual(self.fake.count(*self.ALW), 1)  # never taken for dead
        self.assertEqual(self.fake.count(*self.RSV), 0)
        # one batch was tried (the threads queue while the first lingers), then no more
        self.assertEqual(self.fake.count("POST", "/v1/allowances/alw_one/commits"), 1)

    def test_release_and_pending_charges(self):
        res = tool(self.fake.url, KEY, "script", "r:a:10", "x:0", "r:b:10", opts=("-a",))
        self.assertEqual(res.out.splitlines(), ["local#1", "released", "local#2"], res)
        # b is neither committed nor released: the allowance is not given back
        self.assertEqual(self.fake.count("DELETE", "/v1/allowances/alw_one"), 0)
        res = tool(self.fake.url, KEY, "script", "r:a:10", "x:0", opts=("-a",))
        self.assertEqual(self.fake.count("DELETE", "/v1/allowances/alw_one"), 1)

    def test_commit_is_retried_on_503(self):
        def flaky(n, body):
            if n < 3:
                return 503, {"error": {"code": "unavailable", "message": "busy"}}, 0
            return 200, dict(totals(), allowance={"id": "alw_one", "bytes": 5, "objects": 5,
                                                  "expires_at": int(time.time()) + 99}), 0
        self.fake.routes[("POST", "/v1/allowances/alw_one/commit")] = flaky
        self.assertEqual(self.run_cycles(1, 10), {"ok": 1, "local": 1, "error": None})
        self.assertEqual(self.fake.count("POST", "/v1/allowances/alw_one/commit"), 3)

    def test_server_figure_lowers_what_is_left(self):
        # the server says only 15 bytes are left (a file grew past its charge):
        # the next 10-byte file fits, the one after needs a new allowance
        self.fake.routes[("POST", "/v1/allowances/alw_one/commit")] = lambda n, b: (
            200, dict(totals(), allowance={"id": "alw_one", "bytes": 15, "objects": 50,
                                           "expires_at": int(time.time()) + 99}), 0)
        res = tool(self.fake.url, KEY, "script", "r:a:10", "c:0:10", "w", "r:b:10", "c:1:10",
                   "w", "r:c:10", opts=("-a",))
        self.assertEqual(res.out.splitlines()[-1], "local#3", res)
        self.assertEqual(self.fake.count(*self.ALW), 2)

    def test_restricted_pocket_takes_the_exact_path(self):
        self.fake.routes[SESSION] = lambda n, b: (
            200, session_body(restriction={"code": "past_due"}), 0)
        self.fake.routes[self.RSV] = lambda n, b: (
            403, {"error": {"code": "read_only", "message": "payment past due"}}, 0)
        self.expect_errno(tool(self.fake.url, KEY, "reserve", "k", 1, opts=("-a",)),
                          errno.EROFS)
        self.assertEqual(self.fake.count(*self.ALW), 0)

    def test_idle_allowance_is_given_back_by_the_renewal_thread(self):
        deleted = []
        self.fake.routes[("DELETE", "/v1/allowances/alw_one")] = lambda n, b: (
            deleted.append(time.monotonic()) or (200, totals(), 0))
        t0 = time.monotonic()
        res = tool(self.fake.url, KEY, "script", "R", "r:a:10", "c:0:10", "s:13000",
                   opts=("-a",))
        t1 = time.monotonic()
        self.assertEqual(res.out.splitlines(), ["renewing", "local#1", "committed", "slept"], res)
        self.assertEqual(len(deleted), 1, res)
        # given back after 10 s without a charge, while the process still ran
        self.assertGreater(deleted[0] - t0, 9.5)
        self.assertGreater(t1 - deleted[0], 1)

    def test_restriction_is_learnt_while_an_allowance_is_held(self):
        usage = dict(totals(), restriction=None)
        self.fake.routes[("GET", "/v1/usage")] = lambda n, b: (200, usage, 0)
        self.fake.routes[("DELETE", "/v1/allowances/alw_one")] = lambda n, b: (200, usage, 0)
        self.fake.routes[self.RSV] = lambda n, b: (
            403, {"error": {"code": "read_only", "message": "payment past due"}}, 0)
        # the hold begins after the first file: the next one must not be
        # charged locally, the exact path gives the server's word
        threading.Timer(1.0, lambda: usage.update(restriction={"code": "past_due"})).start()
        res = tool(self.fake.url, KEY, "script", "R", "r:a:10", "c:0:10", "s:4500", "r:b:10",
                   opts=("-a",))
        self.assertEqual(res.out.splitlines(),
                         ["renewing", "local#1", "committed", "slept", "error EROFS"], res)
        self.assertGreater(self.fake.count("GET", "/v1/usage"), 0)
        # the allowance was given back once the restriction was known
        self.assertEqual(self.fake.count("DELETE", "/v1/allowances/alw_one"), 1)


def main():
    global D, TOOL
    harness.require_services()
    TOOL = harness.build_path("tests", "remotetool")
    D = harness.Daemon()
    ok = False
    try:
        prog = unittest.main(exit=False, verbosity=2)
        ok = prog.result.wasSuccessful()
        if D.proc.poll() is not None:
            print("pockityd died:\n" + D.log()[-4000:])
            ok = False
    finally:
        D.stop()
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
