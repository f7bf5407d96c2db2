"""Quota reservations and the usage ledger, end to end: grants and refusals at
the byte and object limits, overwrites, commits counted once, releases,
deletions, the sweep of expired reservations, and 16 threads racing one small
quota (on PostgreSQL across two pockityd processes sharing the database)."""

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
    """A pocket on a small tier with an rw key, and helpers over its API."""

    def __init__(self, d, max_bytes=1000, max_objects=3):
        self.d = d
        self.token, _, _, _ = d.new_user()
        self.pocket = d.new_pocket(self.token, tier=new_tier(d, max_bytes, max_objects))
        self.id = self.pocket["id"]
        self.key = d.new_key(self.token, self.id)["key"]

    def reserve(self, key, size, via=None):
        return (via or self.d).request("POST", "/v1/reservations", {"key": key, "bytes": size},
                                       token=self.key)

    def commit(self, rid, size, etag="\"etag\"", via=None):
        return (via or self.d).request("POST", "/v1/reservations/%s/commit" % rid,
                                       {"bytes": size, "etag": etag}, token=self.key)

    def release(self, rid, via=None):
        return (via or self.d).request("DELETE", "/v1/reservations/" + rid, token=self.key)

    def deleted(self, keys):
        return self.d.request("POST", "/v1/objects/deleted", {"keys": keys}, token=self.key)

    def state(self, via=None):
        r = (via or self.d).request("GET", "/v1/pockets/" + self.id, token=self.token)
        assert r.status == 200, r
        return r.body

    def totals(self):
        s = self.state()
        return (s["usage"]["bytes"], s["usage"]["objects"], s["reserved"]["bytes"],
                s["reserved"]["objects"])


class ReservationsTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.d = Daemon()

    @classmethod
    def tearDownClass(cls):
        cls.d.stop()

    def test_byte_limit(self):
        p = Pocket(self.d, max_bytes=1000, max_objects=100)
        r = p.reserve("a", 1000)
        self.assertEqual(r.status, 201, r)
        self.assertTrue(r.body["id"].startswith("rsv_"))
        self.assertEqual((r.body["key"], r.body["bytes"], r.body["reserved_bytes"],
                          r.body["reserved_objects"]), ("a", 1000, 1000, 1))
        self.assertAlmostEqual(r.body["expires_at"], time.time() + 3600, delta=10)
        self.assertEqual(r.body["reserved"], {"bytes": 1000, "objects": 1})
        first = r.body["id"]
        # Full: even one byte more is refused, and nothing changes.
        r = p.reserve("b", 1)
        self.assertEqual(r.status, 507, r)
        self.assertEqual(r.body["error"]["code"], "quota_exceeded")
        msg = r.body["error"]["message"]
        for part in ("needs 1 more bytes", "uses 0 bytes", "1000 bytes and 1 objects reserved",
                     "allows 1000 bytes"):
            self.assertIn(part, msg)
        # An empty file needs no bytes but still an object: fits.
        r = p.reserve("empty", 0)
        self.assertEqual(r.status, 201, r)
        self.assertEqual(p.totals(), (0, 0, 1000, 2))
        self.assertEqual(p.release(first).status, 204)
        self.assertEqual(p.totals(), (0, 0, 0, 1))
        r = p.reserve("b", 999)
        self.assertEqual(r.status, 201, r)
        r2 = p.reserve("c", 2)
        self.assertEqual(r2.status, 507, r2)
        r2 = p.reserve("c", 1)
        self.assertEqual(r2.status, 201, r2)
        self.assertEqual(p.totals(), (0, 0, 1000, 3))
        # Committed bytes count the same as reserved ones.
        self.assertEqual(p.commit(r.body["id"], 999).status, 200)
        self.assertEqual(p.totals(), (999, 1, 1, 2))
        self.assertEqual(p.reserve("d", 1).status, 507)

    def test_object_limit(self):
        p = Pocket(self.d, max_bytes=10 ** 6, max_objects=3)
        ids = []
        for i in range(3):
            r = p.reserve("f%d" % i, 10)
            self.assertEqual(r.status, 201, r)
            ids.append(r.body["id"])
        r = p.reserve("f3", 0)
        self.assertEqual(r.status, 507, r)
        self.assertIn("1 more objects", r.body["error"]["message"])
        for rid in ids:
            self.assertEqual(p.commit(rid, 10).status, 200)
        self.assertEqual(p.totals(), (30, 3, 0, 0))
        # Overwriting an existing object needs no new object.
        r = p.reserve("f0", 20)
        self.assertEqual(r.status, 201, r)
        self.assertEqual((r.body["reserved_bytes"], r.body["reserved_objects"]), (10, 0))
        self.assertEqual(p.reserve("f4", 1).status, 507)
        self.assertEqual(p.release(r.body["id"]).status, 204)
        # Deleting one makes room.
        r = p.deleted(["f1"])
        self.assertEqual(r.status, 200, r)
        self.assertEqual(p.reserve("f4", 1).status, 201)

    def test_overwrite_reserves_only_growth(self):
        p = Pocket(self.d, max_bytes=1000, max_objects=10)
        r = p.reserve("x", 400)
        self.assertEqual(p.commit(r.body["id"], 400, "\"a\"").status, 200)
        self.assertEqual(p.totals(), (400, 1, 0, 0))
        r = p.reserve("x", 500)
        self.assertEqual((r.status, r.body["reserved_bytes"], r.body["reserved_objects"]),
                         (201, 100, 0))
        grow = r.body["id"]
        r = p.reserve("x", 300)
        self.assertEqual((r.status, r.body["reserved_bytes"], r.body["reserved_objects"]),
                         (201, 0, 0))
        shrink = r.body["id"]
        # 400 used + 100 reserved: a 600-byte overwrite needs 200 more and fits,
        # a 1001-byte one does not.
        self.assertEqual(p.reserve("x", 1001).status, 507)
        self.assertEqual(p.commit(grow, 500, "\"b\"").status, 200)
        self.assertEqual(p.totals(), (500, 1, 0, 0))
        r = p.commit(shrink, 300, "\"c\"")
        self.assertEqual(r.status, 200, r)
        self.assertEqual(r.body["usage"], {"bytes": 300, "objects": 1})
        self.assertEqual(r.body["reserved"], {"bytes": 0, "objects": 0})
        self.assertEqual(r.body["quota"], {"max_bytes": 1000, "max_objects": 10})

    def test_commit_counts_once(self):
        p = Pocket(self.d, max_bytes=1000, max_objects=10)
        r = p.reserve("dup", 100)
        rid = r.body["id"]
        self.assertEqual(p.commit(rid, 100).status, 200)
        r = p.commit(rid, 100)
        self.assertEqual(r.status, 404, r)
        self.assertEqual(r.body["error"]["code"], "not_found")
        self.assertEqual(p.totals(), (100, 1, 0, 0))
        # The same upload reported under a second reservation counts once too.
        r = p.reserve("dup", 100)
        self.assertEqual((r.body["reserved_bytes"], r.body["reserved_objects"]), (0, 0))
        self.assertEqual(p.commit(r.body["id"], 100).status, 200)
        self.assertEqual(p.totals(), (100, 1, 0, 0))
        # A commit smaller than reserved frees the rest.
        r = p.reserve("small", 500)
        self.assertEqual(p.totals(), (100, 1, 500, 1))
        self.assertEqual(p.commit(r.body["id"], 7).status, 200)
        self.assertEqual(p.totals(), (107, 2, 0, 0))
        # Released after a commit: gone.
        self.assertEqual(p.release(rid).status, 404)

    def test_release(self):
        p = Pocket(self.d)
        r = p.reserve("r", 10)
        rid = r.body["id"]
        self.assertEqual(p.totals(), (0, 0, 10, 1))
        self.assertEqual(p.release(rid).status, 204)
        self.assertEqual(p.totals(), (0, 0, 0, 0))
        r = p.release(rid)
        self.assertEqual(r.status, 404, r)
        self.assertEqual(p.commit(rid, 10).status, 404)
        self.assertEqual(p.totals(), (0, 0, 0, 0))
        for bad in ("rsv_" + "a" * 20, "nope", "rsv_" + "A" * 20, "%C3%28"):
            self.assertEqual(p.release(bad).status, 404, bad)
            self.assertEqual(p.commit(bad, 1).status, 404, bad)

    def test_deleted_objects(self):
        p = Pocket(self.d, max_bytes=1000, max_objects=10)
        for k, n in (("a", 10), ("b", 20), ("dir/c é", 30)):
            r = p.reserve(k, n)
            self.assertEqual(p.commit(r.body["id"], n).status, 200)
        self.assertEqual(p.totals(), (60, 3, 0, 0))
        r = p.deleted(["a", "dir/c é", "never-existed", "a"])
        self.assertEqual(r.status, 200, r)
        self.assertEqual(r.body["deleted"], 2)
        self.assertEqual(r.body["usage"], {"bytes": 20, "objects": 1})
        r = p.deleted(["a"])
        self.assertEqual((r.status, r.body["deleted"]), (200, 0))
        r = p.deleted([])
        self.assertEqual((r.status, r.body["deleted"]), (200, 0))
        self.assertEqual(p.totals(), (20, 1, 0, 0))
        # A deleted key is a new object again.
        r = p.reserve("a", 5)
        self.assertEqual((r.body["reserved_bytes"], r.body["reserved_objects"]), (5, 1))
        self.assertEqual(p.commit(r.body["id"], 5).status, 200)
        self.assertEqual(p.totals(), (25, 2, 0, 0))

    def test_bad_input(self):
        p = Pocket(self.d)
        plen = len(p.pocket["prefix"])
        bad = [
            {}, {"key": "a"}, {"bytes": 1}, {"key": "", "bytes": 1}, {"key": "a", "bytes": -1},
            {"key": "a", "bytes": TIB5 + 1}, {"key": "a", "bytes": "1"}, {"key": 1, "bytes": 1},
            {"key": "a", "bytes": 1.5}, {"key": "a", "bytes": 1, "etag": "x"},
            {"key": "k" * (1025 - plen), "bytes": 1}, {"key": "k" * 1025, "bytes": 1},
        ]
        for body in bad:
            r = self.d.request("POST", "/v1/reservations", body, token=p.key)
            self.assertEqual(r.status, 400, (body, r))
            self.assertEqual(r.body["error"]["code"], "invalid_request")
        r = self.d.request("POST", "/v1/reservations", raw=b'{"key":"a\\u0000b","bytes":1}',
                           token=p.key, headers={"Content-Type": "application/json"})
        self.assertEqual(r.status, 400, r)
        r = self.d.request("POST", "/v1/reservations", raw=b'{"key":"\xff","bytes":1}',
                           token=p.key, headers={"Content-Type": "application/json"})
        self.assertEqual(r.status, 400, r)
        # The longest key that fits, and a 5 TiB object on a 1000-byte quota.
        self.assertEqual(p.reserve("k" * (1024 - plen), 1).status, 201)
        self.assertEqual(p.reserve("huge", TIB5).status, 507)
        # Without a key, with a login token instead of a key.
        self.assertEqual(self.d.request("POST", "/v1/reservations",
                                        {"key": "a", "bytes": 1}).status, 401)
        self.assertEqual(self.d.request("POST", "/v1/reservations", {"key": "a", "bytes": 1},
                                        token=p.token).status, 401)

        r = p.reserve("c", 1)
        rid = r.body["id"]
        for body in ({}, {"bytes": 1}, {"etag": "e"}, {"bytes": -1, "etag": "e"},
                     {"bytes": 1, "etag": ""}, {"bytes": 1, "etag": "e" * 129},
                     {"bytes": 1, "etag": "e", "key": "other"}, {"bytes": TIB5 + 1, "etag": "e"}):
            r = self.d.request("POST", "/v1/reservations/%s/commit" % rid, body, token=p.key)
            self.assertEqual(r.status, 400, (body, r))
        self.assertEqual(p.commit(rid, 1, "e" * 128).status, 200)

        for body in ({}, {"keys": "a"}, {"keys": [1]}, {"keys": [""]}, {"keys": ["a", None]},
                     {"keys": ["k" * (1025 - plen)]}, {"keys": ["a"] * 1001},
                     {"keys": ["a"], "more": 1}):
            r = self.d.request("POST", "/v1/objects/deleted", body, token=p.key)
            self.assertEqual(r.status, 400, (str(body)[:80], r))
        r = p.deleted(["a"] * 1000)
        self.assertEqual((r.status, r.body["deleted"]), (200, 0))
        self.assertEqual(p.totals(), (1, 1, 1, 1))

    def test_metrics(self):
        p = Pocket(self.d, max_bytes=10, max_objects=10)

        def count(result):
            text = self.d.request("GET", "/metrics").raw.decode()
            line = 'pockityd_reservations_total{result="%s"} ' % result
            return int(next(l for l in text.splitlines() if l.startswith(line)).split()[-1])

        granted, refused = count("granted"), count("refused")
        p.reserve("a", 10)
        p.reserve("b", 1)
        self.assertEqual((count("granted"), count("refused")), (granted + 1, refused + 1))


class SweepTest(unittest.TestCase):
    def test_expired_reservations_are_released(self):
        with Daemon(reservation_ttl=10, sweep_interval=1) as d:
            p = Pocket(d, max_bytes=100, max_objects=5)
            r = p.reserve("old", 100)
            self.assertEqual(r.status, 201, r)
            old = r.body["id"]
            self.assertLessEqual(r.body["expires_at"], time.time() + 11)
            self.assertEqual(p.reserve("other", 1).status, 507)
            time.sleep(5)
            r = p.reserve("young", 0)
            self.assertEqual(r.status, 201, r)
            young = r.body["id"]
            deadline = time.time() + 20
            while time.time() < deadline and p.totals()[2] != 0:
                time.sleep(0.5)
            # The expired one is gone; the younger one stays until its own time.
            self.assertEqual(p.totals(), (0, 0, 0, 1))
            self.assertEqual(p.commit(old, 100).status, 404)
            self.assertEqual(p.release(old).status, 404)
            self.assertEqual(p.reserve("new", 100).status, 201)
            self.assertEqual(p.commit(young, 0).status, 200)


class ConcurrencyTest(unittest.TestCase):
    """16 threads race for a small quota; after every step, and at the end,
    used + reserved never exceeds the quota, and the final totals are exactly
    what the committed objects add up to."""

    THREADS = 16
    STEPS = 25
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
            used_b, used_o = body["usage"]["bytes"], body["usage"]["objects"]
            res_b, res_o = body["reserved"]["bytes"], body["reserved"]["objects"]
            if used_b + res_b > self.MAX_BYTES or used_o + res_o > self.MAX_OBJECTS:
                violations.append((where, body["usage"], body["reserved"]))
            if min(used_b, used_o, res_b, res_o) < 0:
                violations.append((where, "negative", body["usage"], body["reserved"]))

        def worker(n):
            rnd = random.Random(n)
            via = daemons[n % len(daemons)]
            try:
                for step in range(self.STEPS):
                    key = "t%d/k%d" % (n, rnd.randrange(4))
                    size = rnd.randrange(0, 3000)
                    r = p.reserve(key, size, via=via)
                    if r.status == 507:
                        with lock:
                            counts["refused"] += 1
                        # Free some room now and then, as a user would.
                        if final[n] and rnd.random() < 0.5:
                            victim = rnd.choice(sorted(final[n]))
                            d = via.request("POST", "/v1/objects/deleted", {"keys": [victim]},
                                            token=p.key)
                            if d.status != 200:
                                errors.append(("deleted", d))
                            del final[n][victim]
                            check(d.body, "deleted")
                        continue
                    if r.status != 201:
                        errors.append(("reserve", r))
                        continue
                    with lock:
                        counts["granted"] += 1
                    check(r.body, "reserve")
                    if rnd.random() < 0.75:
                        c = p.commit(r.body["id"], size, via=via)
                        if c.status != 200:
                            errors.append(("commit", c))
                            continue
                        final[n][key] = size
                        check(c.body, "commit")
                    else:
                        c = p.release(r.body["id"], via=via)
                        if c.status != 204:
                            errors.append(("release", c))
                    if step % 5 == 0:
                        check(p.state(via=via), "state")
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
        return counts

    def test_race_one_daemon(self):
        with Daemon() as d:
            self.race([d])

    @unittest.skipUnless(backend() == "postgres", "two replicas need a shared PostgreSQL")
    def test_race_two_daemons(self):
        with Daemon() as d1:
            with Daemon(db_url=d1.db_url, token_secret=d1.token_secret,
                        root_prefix=d1.root_prefix) as d2:
                self.race([d1, d2])


if __name__ == "__main__":
    require_services()
    unittest.main(verbosity=2)
