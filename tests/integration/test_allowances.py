"""Quota allowances end to end: grants and refusals against the pocket's
reserved totals, commits that pay for growth (new keys, overwrites, growth
larger than what is left), release, expiry by the usage job's sweep, other
pockets' and read-only keys, bad input, metrics, and 16 threads racing one
small quota (on PostgreSQL also across two pockityd processes)."""

import random
import secrets
import threading
import time
import unittest

from harness import Daemon, backend, require_services

TIB5 = 5 << 40


def new_tier(d, max_bytes, max_objects):
    tid = "t-" + secrets.token_hex(4)
    r = d.request("POST", "/v1/admin/tiers",
                  {"id": tid, "name": tid, "max_bytes": max_bytes, "max_objects": max_objects,
                   "needs_approval": False}, token=d.admin_token())
    assert r.status == 201, r
    return tid


class Pocket:
    """A pocket on its own small tier with an rw key, and helpers over its API."""

    def __init__(self, d, max_bytes=1000, max_objects=10):
        self.d = d
        self.max_bytes, self.max_objects = max_bytes, max_objects
        self.token, _, _, _ = d.new_user()
        self.pocket = d.new_pocket(self.token, tier=new_tier(d, max_bytes, max_objects))
        self.id = self.pocket["id"]
        self.key = d.new_key(self.token, self.id)["key"]

    def grant(self, nbytes, objects, via=None, key=None):
        return (via or self.d).request("POST", "/v1/allowances",
                                       {"bytes": nbytes, "objects": objects},
                                       token=key or self.key)

    def commit(self, aid, key, size, etag="\"e\"", via=None, token=None):
        body = {"key": key, "bytes": size}
        if etag is not None:
            body["etag"] = etag
        return (via or self.d).request("POST", "/v1/allowances/%s/commit" % aid, body,
                                       token=token or self.key)

    def release(self, aid, via=None, token=None):
        return (via or self.d).request("DELETE", "/v1/allowances/" + aid,
                                       token=token or self.key)

    def reserve(self, key, size):
        return self.d.request("POST", "/v1/reservations", {"key": key, "bytes": size},
                              token=self.key)

    def state(self, via=None):
        r = (via or self.d).request("GET", "/v1/pockets/" + self.id, token=self.token)
        assert r.status == 200, r
        return r.body

    def totals(self):
        s = self.state()
        return (s["usage"]["bytes"], s["usage"]["objects"], s["reserved"]["bytes"],
                s["reserved"]["objects"])


def body_totals(body):
    return (body["usage"]["bytes"], body["usage"]["objects"], body["reserved"]["bytes"],
            body["reserved"]["objects"])


class AllowancesTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.d = Daemon()

    @classmethod
    def tearDownClass(cls):
        cls.d.stop()

    def test_grant_moves_reserved_and_refuses_what_does_not_fit(self):
        p = Pocket(self.d, max_bytes=1000, max_objects=10)
        r = p.grant(600, 4)
        self.assertEqual(r.status, 201, r)
        self.assertRegex(r.body["id"], r"^alw_[a-z2-7]{20}$")
        self.assertEqual((r.body["bytes"], r.body["objects"]), (600, 4))
        self.assertAlmostEqual(r.body["expires_at"], time.time() + 120, delta=10)
        self.assertEqual(body_totals(r.body), (0, 0, 600, 4))
        self.assertEqual(r.body["quota"], {"max_bytes": 1000, "max_objects": 10})
        self.assertIsNone(r.body["restriction"])
        self.assertEqual(p.totals(), (0, 0, 600, 4))
        # One byte too many, one object too many: refused, nothing changes.
        r = p.grant(401, 1)
        self.assertEqual(r.status, 507, r)
        self.assertEqual(r.body["error"]["code"], "quota_exceeded")
        for part in ("asks for 401 bytes and 1 objects", "400 bytes and 6 objects free",
                     "600 bytes and 4 objects reserved", "allows 1000 bytes and 10 objects"):
            self.assertIn(part, r.body["error"]["message"])
        self.assertEqual(p.grant(0, 7).status, 507)
        self.assertEqual(p.grant(TIB5, 100000).status, 507)
        self.assertEqual(p.totals(), (0, 0, 600, 4))
        # Exactly what is left fits; then the pocket is full for reservations too.
        r = p.grant(400, 6)
        self.assertEqual(r.status, 201, r)
        self.assertEqual(body_totals(r.body), (0, 0, 1000, 10))
        self.assertEqual(p.reserve("x", 0).status, 507)
        self.assertEqual(p.grant(0, 1).status, 507)
        self.assertEqual(p.release(r.body["id"]).status, 200)
        self.assertEqual(p.totals(), (0, 0, 600, 4))

    def test_commits_pay_for_growth(self):
        p = Pocket(self.d, max_bytes=1000, max_objects=10)
        r = p.grant(500, 3)
        aid, expires = r.body["id"], r.body["expires_at"]
        # New keys: used up, reserved down by the same.
        r = p.commit(aid, "a", 100)
        self.assertEqual(r.status, 200, r)
        self.assertEqual(r.body["allowance"]["id"], aid)
        self.assertEqual((r.body["allowance"]["bytes"], r.body["allowance"]["objects"]), (400, 2))
        self.assertGreaterEqual(r.body["allowance"]["expires_at"], expires)
        self.assertEqual(body_totals(r.body), (100, 1, 400, 2))
        r = p.commit(aid, "dir/b é", 50, etag=None)  # etag is optional
        self.assertEqual(r.status, 200, r)
        self.assertEqual(body_totals(r.body), (150, 2, 350, 1))
        # An overwrite pays only its growth, and no object.
        r = p.commit(aid, "a", 150, etag="\"a2\"")
        self.assertEqual(r.status, 200, r)
        self.assertEqual((r.body["allowance"]["bytes"], r.body["allowance"]["objects"]), (300, 1))
        self.assertEqual(body_totals(r.body), (200, 2, 300, 1))
        # A shrinking overwrite, and the same upload reported twice, pay nothing.
        r = p.commit(aid, "a", 20, etag="")
        self.assertEqual(r.status, 200, r)
        self.assertEqual((r.body["allowance"]["bytes"], r.body["allowance"]["objects"]), (300, 1))
        self.assertEqual(body_totals(r.body), (70, 2, 300, 1))
        r = p.commit(aid, "dir/b é", 50)
        self.assertEqual(body_totals(r.body), (70, 2, 300, 1))
        # Growth beyond what is left still counts in used; the allowance ends
        # at 0 and reserved never goes below 0.
        r = p.commit(aid, "big", 1000)
        self.assertEqual(r.status, 200, r)
        self.assertEqual((r.body["allowance"]["bytes"], r.body["allowance"]["objects"]), (0, 0))
        self.assertEqual(body_totals(r.body), (1070, 3, 0, 0))
        self.assertEqual(r.body["restriction"]["code"], "over_quota")
        r = p.commit(aid, "more", 5)
        self.assertEqual(r.status, 200, r)
        self.assertEqual((r.body["allowance"]["bytes"], r.body["allowance"]["objects"]), (0, 0))
        self.assertEqual(body_totals(r.body), (1075, 4, 0, 0))
        # Another allowance's reservation stays untouched by this one's commits.
        self.assertEqual(p.totals(), (1075, 4, 0, 0))
        self.assertEqual(p.release(aid).status, 200)
        self.assertEqual(p.totals(), (1075, 4, 0, 0))
        # The ledger holds what was committed.
        rows = self.d.sql("SELECT key, size, COALESCE(etag, '-') FROM objects"
                           " WHERE pocket_id = '%s'" % p.id)
        self.assertEqual(sorted(rows), [["a", "20", "-"], ["big", "1000", "\"e\""],
                                        ["dir/b é", "50", "\"e\""], ["more", "5", "\"e\""]])

    def test_batched_commits(self):
        """POST .../commits does what the same commits one by one would, in
        one transaction: growth paid while the allowance lasts, the rest used,
        a key repeated in the batch counted as an overwrite."""
        p = Pocket(self.d, max_bytes=1000, max_objects=10)
        aid = p.grant(300, 3).body["id"]
        objs = [{"key": "a", "bytes": 100, "etag": "\"a\""},
                {"key": "dir/b é", "bytes": 50},
                {"key": "a", "bytes": 150, "etag": ""},
                {"key": "c", "bytes": 100, "etag": "\"c\""},
                {"key": "d", "bytes": 10}]
        r = self.d.request("POST", "/v1/allowances/%s/commits" % aid, {"objects": objs},
                           token=p.key)
        self.assertEqual(r.status, 200, r)
        self.assertEqual(r.body["committed"], 5)
        self.assertEqual(r.body["allowance"]["id"], aid)
        # Paid: a 100 bytes and 1 object, b 50 and 1, a's growth 50, c 100
        # and 1 (the allowance is spent), d nothing: its 10 bytes and 1
        # object count in used only.
        self.assertEqual((r.body["allowance"]["bytes"], r.body["allowance"]["objects"]), (0, 0))
        self.assertEqual(body_totals(r.body), (310, 4, 0, 0))
        rows = self.d.sql("SELECT key, size, COALESCE(etag, '-') FROM objects"
                          " WHERE pocket_id = '%s'" % p.id)
        self.assertEqual(sorted(rows), [["a", "150", "-"], ["c", "100", "\"c\""],
                                        ["d", "10", "-"], ["dir/b é", "50", "-"]])

        # Bad input: 400 naming the entry, and nothing of the batch lands.
        aid = p.grant(100, 2).body["id"]
        plen = len(self.d.root_prefix) + len(p.id) + 2
        good = {"key": "ok", "bytes": 1}
        for body, name in (({}, "objects"), ({"objects": []}, "objects"),
                           ({"objects": {}}, "objects"), ({"objects": [good] * 257}, "objects"),
                           ({"objects": [good, 5]}, "objects[1]"),
                           ({"objects": [good, {"bytes": 1}]}, "objects[1].key"),
                           ({"objects": [good, {"key": "x", "bytes": -1}]}, "objects[1].bytes"),
                           ({"objects": [good, {"key": "x", "bytes": 1, "etag": 5}]},
                            "objects[1].etag"),
                           ({"objects": [good, good, {"key": "x", "bytes": 1, "more": 1}]},
                            "objects[2].more"),
                           ({"objects": [good, {"key": "k" * (1025 - plen), "bytes": 1}]},
                            "objects[1].key"),
                           ({"objects": [good], "more": 1}, "more")):
            r = self.d.request("POST", "/v1/allowances/%s/commits" % aid, body, token=p.key)
            self.assertEqual(r.status, 400, (str(body)[:80], r))
            self.assertEqual(r.body["error"]["code"], "invalid_request")
            self.assertIn("'%s'" % name, r.body["error"]["message"])
        self.assertEqual(p.totals(), (310, 4, 100, 2))
        # 256 objects fit; an unknown or other pocket's allowance is 404.
        many = [{"key": "m%03d" % i, "bytes": 0} for i in range(256)]
        r = self.d.request("POST", "/v1/allowances/%s/commits" % ("alw_" + "a" * 20),
                           {"objects": many}, token=p.key)
        self.assertEqual(r.status, 404, r)
        r = self.d.request("POST", "/v1/allowances/%s/commits" % aid, {"objects": many},
                           token=p.key)
        self.assertEqual(r.status, 200, r)
        self.assertEqual(body_totals(r.body), (310, 260, 100, 0))

    def test_commit_against_two_allowances(self):
        p = Pocket(self.d, max_bytes=1000, max_objects=10)
        a1 = p.grant(100, 1).body["id"]
        a2 = p.grant(200, 2).body["id"]
        self.assertEqual(p.totals(), (0, 0, 300, 3))
        r = p.commit(a2, "x", 150)
        self.assertEqual(body_totals(r.body), (150, 1, 150, 2))
        r = p.release(a1)
        self.assertEqual(r.status, 200, r)
        self.assertEqual(body_totals(r.body), (150, 1, 50, 1))
        self.assertEqual(p.release(a2).status, 200)
        self.assertEqual(p.totals(), (150, 1, 0, 0))

    def test_release(self):
        p = Pocket(self.d)
        aid = p.grant(300, 2).body["id"]
        self.assertEqual(p.commit(aid, "f", 100).status, 200)
        self.assertEqual(p.totals(), (100, 1, 200, 1))
        r = p.release(aid)
        self.assertEqual(r.status, 200, r)
        self.assertEqual(body_totals(r.body), (100, 1, 0, 0))
        self.assertEqual(r.body["quota"], {"max_bytes": 1000, "max_objects": 10})
        for r in (p.release(aid), p.commit(aid, "g", 1)):
            self.assertEqual(r.status, 404, r)
            self.assertEqual(r.body["error"]["code"], "not_found")
            self.assertIn(aid, r.body["error"]["message"])
        self.assertEqual(p.totals(), (100, 1, 0, 0))
        self.assertEqual(self.d.sql("SELECT COUNT(*) FROM allowances WHERE pocket_id = '%s'"
                             % p.id), [["0"]])
        # A well-formed id nobody was given.
        ghost = "alw_" + "a" * 20
        self.assertEqual(p.release(ghost).status, 404)
        self.assertEqual(p.commit(ghost, "g", 1).status, 404)

    def test_other_pocket_gets_404(self):
        mine, other = Pocket(self.d), Pocket(self.d)
        aid = mine.grant(100, 2).body["id"]
        r = other.commit(aid, "steal", 10)
        self.assertEqual(r.status, 404, r)
        self.assertEqual(other.release(aid).status, 404)
        self.assertEqual(mine.totals(), (0, 0, 100, 2))
        self.assertEqual(other.totals(), (0, 0, 0, 0))
        # A second key of the same pocket may use it.
        key2 = self.d.new_key(mine.token, mine.id)["key"]
        self.assertEqual(mine.commit(aid, "k", 10, token=key2).status, 200)
        self.assertEqual(mine.totals(), (10, 1, 90, 1))

    def test_read_only_key_and_other_principals(self):
        p = Pocket(self.d)
        ro = self.d.new_key(p.token, p.id, access="ro")["key"]
        aid = p.grant(100, 2).body["id"]
        for r in (p.grant(10, 1, key=ro), p.commit(aid, "x", 1, token=ro),
                  p.release(aid, token=ro)):
            self.assertEqual(r.status, 403, r)
            self.assertEqual(r.body["error"]["code"], "forbidden")
            self.assertIn("read-only", r.body["error"]["message"])
        self.assertEqual(p.totals(), (0, 0, 100, 2))
        # No key, or a login token instead of a key.
        self.assertEqual(self.d.request("POST", "/v1/allowances",
                                        {"bytes": 1, "objects": 1}).status, 401)
        self.assertEqual(p.grant(1, 1, key=p.token).status, 401)
        self.assertEqual(p.commit(aid, "x", 1, token=p.token).status, 401)
        self.assertEqual(p.release(aid, token=p.token).status, 401)
        self.assertEqual(p.totals(), (0, 0, 100, 2))

    def test_inactive_and_held_pockets_are_refused(self):
        p = Pocket(self.d)
        aid = p.grant(100, 2).body["id"]
        self.d.sql("UPDATE pockets SET hold = 'past_due' WHERE id = '%s'" % p.id)
        r = p.grant(10, 1)
        self.assertEqual(r.status, 403, r)
        self.assertEqual(r.body["error"]["code"], "read_only")
        self.assertIn("past due", r.body["error"]["message"])
        # What already landed is still recorded.
        self.assertEqual(p.commit(aid, "landed", 10).status, 200)
        self.d.sql("UPDATE pockets SET hold = NULL, status = 'suspended' WHERE id = '%s'" % p.id)
        r = p.grant(10, 1)
        self.assertEqual(r.status, 403, r)
        self.assertEqual(r.body["error"]["code"], "forbidden")
        self.assertEqual(r.body["error"]["message"], "pocket is suspended")
        self.assertEqual(p.totals(), (10, 1, 90, 1))
        self.assertEqual(p.release(aid).status, 200)
        self.assertEqual(p.totals(), (10, 1, 0, 0))

    def test_bad_input(self):
        p = Pocket(self.d)
        plen = len(p.pocket["prefix"])
        for body in ({}, {"bytes": 1}, {"objects": 1}, {"bytes": 1, "objects": 1, "key": "a"},
                     {"bytes": -1, "objects": 1}, {"bytes": TIB5 + 1, "objects": 1},
                     {"bytes": 1, "objects": 0}, {"bytes": 1, "objects": -1},
                     {"bytes": 1, "objects": 100001}, {"bytes": "1", "objects": 1},
                     {"bytes": 1.5, "objects": 1}, {"bytes": 1, "objects": True},
                     {"bytes": None, "objects": 1}, {"bytes": [1], "objects": 1}):
            r = self.d.request("POST", "/v1/allowances", body, token=p.key)
            self.assertEqual(r.status, 400, (body, r))
            self.assertEqual(r.body["error"]["code"], "invalid_request")
        for raw in (b'[1]', b'{"bytes": 1, "objects": 1', b'"x"',
                    b'{"bytes": 1, "objects": 1, "bytes": 2}'):
            r = self.d.request("POST", "/v1/allowances", raw=raw, token=p.key,
                               headers={"Content-Type": "application/json"})
            self.assertEqual(r.status, 400, (raw, r))
        self.assertEqual(p.totals(), (0, 0, 0, 0))

        aid = p.grant(1000, 10).body["id"]
        for body in ({}, {"bytes": 1}, {"key": "a"}, {"key": "", "bytes": 1},
                     {"key": 1, "bytes": 1}, {"key": "a", "bytes": -1},
                     {"key": "a", "bytes": TIB5 + 1}, {"key": "a", "bytes": "1"},
                     {"key": "a", "bytes": 1.5}, {"key": "a", "bytes": 1, "etag": "e" * 129},
                     {"key": "a", "bytes": 1, "etag": 5}, {"key": "a", "bytes": 1, "more": 1},
                     {"key": "k" * (1025 - plen), "bytes": 1},
                     {"key": "k" * 1025, "bytes": 1}):
            r = self.d.request("POST", "/v1/allowances/%s/commit" % aid, body, token=p.key)
            self.assertEqual(r.status, 400, (str(body)[:80], r))
            self.assertEqual(r.body["error"]["code"], "invalid_request")
        r = self.d.request("POST", "/v1/allowances/%s/commit" % aid,
                           raw=b'{"key":"a\\u0000b","bytes":1}', token=p.key,
                           headers={"Content-Type": "application/json"})
        self.assertEqual(r.status, 400, r)
        r = self.d.request("POST", "/v1/allowances/%s/commit" % aid,
                           raw=b'{"key":"\xff","bytes":1}', token=p.key,
                           headers={"Content-Type": "application/json"})
        self.assertEqual(r.status, 400, r)
        self.assertEqual(p.totals(), (0, 0, 1000, 10))

        # Malformed ids: 400, whatever they hold, and never echoed.
        for bad in ("nope", "alw_" + "A" * 20, "rsv_" + "a" * 20, "alw_" + "a" * 21,
                    "alw_" + "a" * 19, "alw_" + "1" * 20, "%C3%28", "%00", "alw_%20" + "a" * 19):
            for r in (p.commit(bad, "a", 1), p.release(bad)):
                self.assertEqual(r.status, 400, (bad, r))
                self.assertEqual(r.body["error"]["code"], "invalid_request")
        # A path segment past the router's limit never reaches the handler.
        for r in (p.commit("x" * 300, "a", 1), p.release("x" * 300)):
            self.assertEqual(r.status, 404, r)
        self.assertEqual(p.totals(), (0, 0, 1000, 10))

        # The longest key that fits, and a 5 TiB object (the allowance pays
        # what it has; the rest is used).
        r = p.commit(aid, "k" * (1024 - plen), 1, etag="e" * 128)
        self.assertEqual(r.status, 200, r)
        r = p.commit(aid, "huge", TIB5)
        self.assertEqual(r.status, 200, r)
        self.assertEqual(body_totals(r.body), (TIB5 + 1, 2, 0, 8))

    def test_metrics(self):
        p = Pocket(self.d, max_bytes=10, max_objects=10)

        def count(result):
            text = self.d.request("GET", "/metrics").raw.decode()
            line = 'pockityd_allowances_total{result="%s"} ' % result
            return next((int(l.split()[-1]) for l in text.splitlines() if l.startswith(line)), 0)

        granted, refused = count("granted"), count("refused")
        self.assertEqual(p.grant(10, 1).status, 201)
        self.assertEqual(p.grant(1, 1).status, 507)
        self.assertEqual(p.grant(-1, 1).status, 400)  # bad input counts as neither
        self.assertEqual((count("granted"), count("refused")), (granted + 1, refused + 1))


class SweepTest(unittest.TestCase):
    def test_expired_allowances_are_released(self):
        with Daemon(quota__allowance_ttl=10, sweep_interval=1) as d:
            p = Pocket(d, max_bytes=100, max_objects=5)
            r = p.grant(60, 2)
            self.assertEqual(r.status, 201, r)
            old = r.body["id"]
            self.assertLessEqual(r.body["expires_at"], time.time() + 11)
            young = p.grant(40, 3).body["id"]
            self.assertEqual(p.grant(0, 1).status, 507)
            time.sleep(5)
            # A commit keeps an allowance alive for another ttl.
            r = p.commit(young, "k", 10)
            self.assertEqual(r.status, 200, r)
            self.assertAlmostEqual(r.body["allowance"]["expires_at"], time.time() + 10, delta=2)
            deadline = time.time() + 15
            while time.time() < deadline and p.totals()[2] > 30:
                time.sleep(0.5)
            # The idle one is gone and gave back what it had; the young one stays.
            self.assertEqual(p.totals(), (10, 1, 30, 2))
            for r in (p.commit(old, "late", 1), p.release(old)):
                self.assertEqual(r.status, 404, r)
            self.assertEqual(p.totals(), (10, 1, 30, 2))
            self.assertEqual(p.grant(60, 2).status, 201)
            self.assertEqual(p.commit(young, "k2", 5).status, 200)
            self.assertIn("released 1 expired allowance(s)", d.log())


class ConcurrencyTest(unittest.TestCase):
    """16 threads take allowances on one small quota and commit against them as
    an honest mount does (never more than the allowance holds): after every
    answer used + reserved fits the quota, and at the end the totals are
    exactly what the committed objects add up to."""

    THREADS = 16
    STEPS = 12
    MAX_BYTES = 20000
    MAX_OBJECTS = 30

    def race(self, daemons):
        p = Pocket(daemons[0], max_bytes=self.MAX_BYTES, max_objects=self.MAX_OBJECTS)
        violations, errors = [], []
        final = [dict() for _ in range(self.THREADS)]  # per thread: key -> committed size
        counts = {"granted": 0, "refused": 0}
        lock = threading.Lock()

        def check(body, where):
            if body is None or "usage" not in body:
                return
            ub, uo, rb, ro = body_totals(body)
            if ub + rb > self.MAX_BYTES or uo + ro > self.MAX_OBJECTS:
                violations.append((where, body["usage"], body["reserved"]))
            if min(ub, uo, rb, ro) < 0:
                violations.append((where, "negative", body["usage"], body["reserved"]))

        def worker(n):
            rnd = random.Random(n)
            via = daemons[n % len(daemons)]
            try:
                for step in range(self.STEPS):
                    want_b, want_o = rnd.randrange(0, 4000), rnd.randrange(1, 4)
                    r = p.grant(want_b, want_o, via=via)
                    if r.status == 507:
                        with lock:
                            counts["refused"] += 1
                        if final[n] and rnd.random() < 0.6:
                            victim = rnd.choice(sorted(final[n]))
                            d = via.request("POST", "/v1/objects/deleted", {"keys": [victim]},
                                            token=p.key)
                            if d.status != 200:
                                errors.append(("deleted", d))
                            del final[n][victim]
                            check(d.body, "deleted")
                        continue
                    if r.status != 201:
                        errors.append(("grant", r))
                        continue
                    with lock:
                        counts["granted"] += 1
                    check(r.body, "grant")
                    aid, left_b, left_o = r.body["id"], want_b, want_o
                    # Spend it as a mount does: each file's full size from the
                    # local budget (an overwrite's growth is never more).
                    while left_o > 0 and rnd.random() < 0.85:
                        size = rnd.randrange(0, left_b + 1)
                        key = "t%d/k%d" % (n, rnd.randrange(5))
                        c = p.commit(aid, key, size, via=via)
                        if c.status != 200:
                            errors.append(("commit", c))
                            break
                        final[n][key] = size
                        left_b, left_o = left_b - size, left_o - 1
                        check(c.body, "commit")
                        if c.body["allowance"]["bytes"] < left_b or \
                                c.body["allowance"]["objects"] < left_o:
                            violations.append(("allowance below local budget", c.body))
                    c = p.release(aid, via=via)
                    if c.status != 200:
                        errors.append(("release", c))
                    check(c.body, "release")
            except Exception as e:  # reported by the main thread
                errors.append(("exception", repr(e)))

        threads = [threading.Thread(target=worker, args=(n,)) for n in range(self.THREADS)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(300)
        self.assertFalse(any(t.is_alive() for t in threads), "workers hung")
        self.assertEqual(errors, [])
        self.assertEqual(violations, [])
        self.assertGreater(counts["granted"], 0)
        self.assertGreater(counts["refused"], 0, "the quota was never reached: test too weak")
        want_bytes = sum(sum(f.values()) for f in final)
        want_objects = sum(len(f) for f in final)
        for d in daemons:
            state = p.state(via=d)
            self.assertEqual(state["usage"], {"bytes": want_bytes, "objects": want_objects})
            self.assertEqual(state["reserved"], {"bytes": 0, "objects": 0})

    def test_race_one_daemon(self):
        with Daemon() as d:
            self.race([d])

    @unittest.skipUnless(backend() == "postgres", "two replicas need a shared PostgreSQL")
    def test_race_two_daemons(self):
        with Daemon() as d1:
            with Daemon(db_url=d1.db_url, token_secret=d1.token_secret,
                        root_prefix=d1.root_prefix) as d2:
                self.race([d1, d2])

    def test_one_allowance_many_committers(self):
        """16 commits of 10 bytes race on one allowance of 100 bytes and 10
        objects: it pays for exactly ten of them, ends at 0, and the rest is
        used; reserved never goes below 0."""
        with Daemon() as d:
            p = Pocket(d, max_bytes=10000, max_objects=100)
            aid = p.grant(100, 10).body["id"]
            results = []

            def one(i):
                results.append(p.commit(aid, "f%d" % i, 10))

            threads = [threading.Thread(target=one, args=(i,)) for i in range(16)]
            for t in threads:
                t.start()
            for t in threads:
                t.join(60)
            self.assertEqual(sorted(r.status for r in results), [200] * 16, results)
            lefts = sorted((r.body["allowance"]["bytes"], r.body["allowance"]["objects"])
                           for r in results)
            self.assertEqual(lefts[:7], [(0, 0)] * 7)
            self.assertEqual(lefts[6:], [(10 * i, i) for i in range(10)])
            self.assertEqual(p.totals(), (160, 16, 0, 0))
            self.assertEqual(p.release(aid).status, 200)
            self.assertEqual(p.totals(), (160, 16, 0, 0))


if __name__ == "__main__":
    require_services()
    unittest.main(verbosity=2)
