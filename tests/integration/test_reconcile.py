#!/usr/bin/env python3
"""Reconciliation against the real RGW with events off: objects written and
deleted directly with session credentials are corrected after one pass (with
audit rows and drift metrics), an over-quota pocket gets read+delete sessions,
abandoned multipart uploads are aborted, a pocket being deleted is emptied,
a pocket of several listing pages is corrected row by row, and two pockityd processes reconciling one database at once give one result."""

import hashlib
import os
import secrets
import subprocess
import tempfile
import threading
import time
import unittest

from harness import Daemon, build_path, require_services, s3_put_bytes, s3tool
from test_events import RawS3


def new_tier(d, max_bytes, max_objects):
    tid = "t-" + secrets.token_hex(4)
    r = d.request("POST", "/v1/admin/tiers",
                  {"id": tid, "name": tid, "max_bytes": max_bytes, "max_objects": max_objects,
                   "needs_approval": False}, token=d.admin_token())
    assert r.status == 201, r
    return tid


class ReconcileTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        require_services()
        # interval 0: passes run only on demand, so the tests decide when
        cls.d = Daemon(reconcile__interval="0", reconcile__list_rate="1000",
                       reconcile__multipart_max_age="2")
        cls.raw = RawS3()

    @classmethod
    def tearDownClass(cls):
        cls.d.stop()

    def setUp(self):
        self.admin = self.d.admin_token()

    def make_pocket(self, max_bytes=1 << 30, max_objects=1000):
        token, _, _, _ = self.d.new_user()
        pocket = self.d.new_pocket(token, tier=new_tier(self.d, max_bytes, max_objects))
        key = self.d.new_key(token, pocket["id"])["key"]
        return token, pocket, key

    def session(self, key, status=200):
        r = self.d.request("POST", "/v1/session", token=key)
        self.assertEqual(r.status, status, r)
        return r.body

    def state(self, token, pocket, via=None):
        r = (via or self.d).request("GET", "/v1/pockets/" + pocket["id"], token=token)
        self.assertEqual(r.status, 200, r)
        return r.body

    def usage(self, token, pocket):
        u = self.state(token, pocket)["usage"]
        return u["bytes"], u["objects"]

    def reconcile(self, pocket=None, via=None):
        r = (via or self.d).request("POST", "/v1/admin/reconcile",
                                    {"pocket_id": pocket["id"]} if pocket else None,
                                    token=(via or self.d).admin_token())
        self.assertEqual(r.status, 200, r)
        return r.body

    def metric(self, name):
        for line in self.d.request("GET", "/metrics").raw.decode().splitlines():
            if line.startswith(name + " "):
                return int(float(line.split()[1]))
        return 0

    def audits(self, pocket_id, action="usage.correct"):
        r = self.d.request("GET", "/v1/admin/audit?target_type=pocket&target_id=%s&action=%s"
                           % (pocket_id, action), token=self.admin)
        self.assertEqual(r.status, 200, r)
        return r.body["entries"]

    def test_direct_writes_corrected_by_one_pass(self):
        token, pocket, key = self.make_pocket()
        s, prefix = self.session(key), pocket["prefix"]
        drift_before = self.metric("pockityd_usage_drift_keys_total")
        for name, size in (("a", 100), ("dir/b", 20), ("c d+e", 3), ("gone", 7)):
            self.assertEqual(s3_put_bytes(s, prefix + name, b"x" * size), 0)
        self.assertEqual(self.usage(token, pocket), (0, 0))  # events are off
        rep = self.reconcile(pocket)
        self.assertEqual(rep["pockets"], 1, rep)
        self.assertEqual(rep["corrections"], [{"pocket_id": pocket["id"],
                                               "before": {"bytes": 0, "objects": 0},
                                               "after": {"bytes": 130, "objects": 4},
                                               "keys": 4}])
        self.assertEqual(self.usage(token, pocket), (130, 4))
        self.assertEqual(self.metric("pockityd_usage_drift_keys_total"), drift_before + 4)
        entries = self.audits(pocket["id"])
        self.assertEqual(len(entries), 1, entries)
        detail = entries[0]["detail"]
        self.assertEqual((detail["before"], detail["after"]),
                         ({"bytes": 0, "objects": 0}, {"bytes": 130, "objects": 4}))
        # nothing to correct the second time
        time.sleep(1.1)  # rows written in the pass's first second are left alone
        rep = self.reconcile(pocket)
        self.assertEqual(rep["corrections"], [], rep)
        # deletions and an overwrite, out of band
        self.assertEqual(s3tool(s, "rm", prefix + "gone")[0], 0)
        self.assertEqual(s3_put_bytes(s, prefix + "a", b"y" * 10), 0)
        rep = self.reconcile(pocket)
        self.assertEqual(rep["corrections"][0]["after"], {"bytes": 33, "objects": 3}, rep)
        self.assertEqual(rep["corrections"][0]["keys"], 2, rep)
        self.assertEqual(self.usage(token, pocket), (33, 3))
        self.assertEqual(len(self.audits(pocket["id"])), 2)

    def ledger(self, pocket):
        rows = self.d.sql("SELECT key, size, etag, deleted FROM objects WHERE pocket_id = %s",
                          (pocket["id"],))
        return {k: (int(size), etag.strip('"') if etag else None, int(deleted))  # psql: NULL is ""
                for k, size, etag, deleted in rows}

    def test_page_of_every_kind_of_correction(self):
        """One page mixing new keys, overwrites (one of another size, one of
        the same), deletions and busy keys (reserved: a new one, an overwrite
        and a deletion), checked row by row and in the totals; the busy ones
        are corrected by the pass after their reservations go."""
        token, pocket, key = self.make_pocket()
        s, prefix = self.session(key), pocket["prefix"]
        md5 = lambda b: hashlib.md5(b).hexdigest()
        first = {"a": b"a" * 100, "b": b"b" * 20, "c": b"c" * 3, "d": b"d" * 7, "e": b"e" * 50}
        for name, body in first.items():
            self.assertEqual(s3_put_bytes(s, prefix + name, body), 0)
        self.reconcile(pocket)
        self.assertEqual(self.ledger(pocket),
                         {k: (len(b), md5(b), 0) for k, b in first.items()})
        time.sleep(1.1)  # rows of the first pass's second would look busy
        held = []
        for name, size in (("d", 1), ("e", 60), ("h", 40)):
            r = self.d.request("POST", "/v1/reservations", {"key": name, "bytes": size},
                               token=key)
            self.assertEqual(r.status, 201, r)
            held.append(r.body["id"])
        self.assertEqual(s3tool(s, "rm", prefix + "d")[0], 0)
        self.assertEqual(s3_put_bytes(s, prefix + "e", b"E" * 60), 0)
        self.assertEqual(s3_put_bytes(s, prefix + "h", b"h" * 40), 0)
        self.assertEqual(s3_put_bytes(s, prefix + "a", b"A" * 10), 0)
        self.assertEqual(s3_put_bytes(s, prefix + "b", b"B" * 20), 0)
        self.assertEqual(s3tool(s, "rm", prefix + "c")[0], 0)
        self.assertEqual(s3_put_bytes(s, prefix + "f", b"f" * 5), 0)
        self.assertEqual(s3_put_bytes(s, prefix + "g", b""), 0)
        rep = self.reconcile(pocket)
        self.assertEqual(rep["corrections"], [{"pocket_id": pocket["id"],
                                               "before": {"bytes": 180, "objects": 5},
                                               "after": {"bytes": 92, "objects": 6},
                                               "keys": 4}])
        want = {"a": (10, md5(b"A" * 10), 0),
                "b": (20, md5(first["b"]), 0),  # the same size: not a correction
                "c": (0, None, 1),
                "d": (7, md5(first["d"]), 0),  # busy: left alone
                "e": (50, md5(first["e"]), 0),  # busy
                "f": (5, md5(b"f" * 5), 0),
                "g": (0, md5(b""), 0)}  # "h": busy, not there yet
        self.assertEqual(self.ledger(pocket), want)
        self.assertEqual(self.usage(token, pocket), (92, 6))
        for rid in held:
            r = self.d.request("DELETE", "/v1/reservations/" + rid, token=key)
            self.assertIn(r.status, (200, 204), r)
        time.sleep(1.1)
        rep = self.reconcile(pocket)
        self.assertEqual(rep["corrections"][0]["after"], {"bytes": 135, "objects": 6}, rep)
        self.assertEqual(rep["corrections"][0]["keys"], 3, rep)
        want.update({"d": (0, None, 1), "e": (60, md5(b"E" * 60), 0),
                     "h": (40, md5(b"h" * 40), 0)})
        self.assertEqual(self.ledger(pocket), want)
        self.assertEqual(self.usage(token, pocket), (135, 6))
        self.assertEqual(self.state(token, pocket)["reserved"], {"bytes": 0, "objects": 0})

    def test_pages_of_corrections(self):
        """A pocket of 2,300 objects (three listing pages, each listed while
        the one before is written): the first pass inserts every key; after
        deletions and overwrites at the pages' edges and ghost rows between
        them, the second pass leaves the ledger equal to S3, row by row."""
        token, pocket, key = self.make_pocket(max_objects=5000)
        prefix = pocket["prefix"]
        names = ["k%04d" % i for i in range(2300)]
        size = lambda i: i % 13
        with tempfile.TemporaryDirectory() as tmp:
            for i, name in enumerate(names):
                with open(os.path.join(tmp, name), "wb") as f:
                    f.write(b"x" * size(i))
            subprocess.run([build_path("bench", "s3bench"), "put-files", prefix, tmp, "8"],
                           check=True, capture_output=True, timeout=300)
        md5 = lambda b: hashlib.md5(b).hexdigest()
        want = {name: (size(i), md5(b"x" * size(i)), 0) for i, name in enumerate(names)}
        total = sum(size(i) for i in range(len(names)))
        rep = self.reconcile(pocket)
        self.assertEqual(rep["failed"], 0, rep)
        self.assertEqual(rep["corrections"][0]["keys"], 2300, rep)
        self.assertEqual(self.ledger(pocket), want)
        self.assertEqual(self.usage(token, pocket), (total, 2300))
        time.sleep(1.1)  # rows of the first pass's second would look busy
        s = self.session(key)
        for name in ("k0000", "k0999", "k1000", "k1999", "k2000", "k2299"):
            self.assertEqual(s3tool(s, "rm", prefix + name)[0], 0)
            want[name] = (0, None, 1)
        # the second pass's pages end at k1002 and k2004 (1000 keys each)
        for name in ("k0998", "k1001", "k1002", "k1003", "k2004", "k2298"):
            self.assertEqual(s3_put_bytes(s, prefix + name, b"y" * 100), 0)
            want[name] = (100, md5(b"y" * 100), 0)
        # in the ledger, never in S3: between pages too
        ghosts = ("k0999a", "k1000a", "k1002a", "k2004a", "k2299a", "zz")
        for name in ghosts:
            self.d.sql("INSERT INTO objects (pocket_id, key, size, etag, deleted, updated_at)"
                       " VALUES (%s, %s, 5, NULL, 0, 0)", (pocket["id"], name))
            want[name] = (0, None, 1)
        rep = self.reconcile(pocket)
        self.assertEqual(rep["failed"], 0, rep)
        self.assertEqual(rep["corrections"][0]["keys"], 6 + 6 + len(ghosts), rep)
        self.assertEqual(self.ledger(pocket), want)
        live = [v for v in want.values() if not v[2]]
        self.assertEqual(self.usage(token, pocket), (sum(v[0] for v in live), len(live)))

    def test_reservation_in_flight_is_left_alone(self):
        token, pocket, key = self.make_pocket()
        s, prefix = self.session(key), pocket["prefix"]
        r = self.d.request("POST", "/v1/reservations", {"key": "busy", "bytes": 50}, token=key)
        self.assertEqual(r.status, 201, r)
        self.assertEqual(s3_put_bytes(s, prefix + "busy", b"z" * 50), 0)
        self.reconcile(pocket)
        self.assertEqual(self.usage(token, pocket), (0, 0))  # corrected on a later pass
        r = self.d.request("POST", "/v1/reservations/%s/commit" % r.body["id"],
                           {"bytes": 50, "etag": "\"e\""}, token=key)
        self.assertEqual(r.status, 200, r)
        self.assertEqual(self.usage(token, pocket), (50, 1))
        time.sleep(1.1)
        self.assertEqual(self.reconcile(pocket)["corrections"], [])
        self.assertEqual(self.state(token, pocket)["reserved"], {"bytes": 0, "objects": 0})

    def test_over_quota_pocket_is_read_only_until_back_under(self):
        token, pocket, key = self.make_pocket(max_bytes=100, max_objects=10)
        s, prefix = self.session(key), pocket["prefix"]
        self.assertEqual(s["access"], "rw")
        # credentials allow writes: S3 takes more than the tier allows
        self.assertEqual(s3_put_bytes(s, prefix + "big", b"b" * 150), 0)
        self.reconcile(pocket)
        st = self.state(token, pocket)
        self.assertEqual(st["usage"], {"bytes": 150, "objects": 1})
        self.assertEqual(st["restriction"]["code"], "over_quota", st)
        # the next session may read and delete, never write
        s2 = self.session(key)
        self.assertEqual(s3_put_bytes(s2, prefix + "more", b"m"), 3)
        self.assertEqual(s3tool(s2, "head", prefix + "big")[0], 0)
        r = self.d.request("POST", "/v1/reservations", {"key": "x", "bytes": 1}, token=key)
        self.assertIn(r.status, (403, 507), r)
        self.assertEqual(s3tool(s2, "rm", prefix + "big")[0], 0)
        time.sleep(1.1)  # rows written in the same second as a pass are left to the next
        self.reconcile(pocket)
        st = self.state(token, pocket)
        self.assertIsNone(st["restriction"], st)
        s3 = self.session(key)
        self.assertEqual(s3_put_bytes(s3, prefix + "small", b"s"), 0)

    def test_abandoned_multipart_upload_is_aborted(self):
        token, pocket, key = self.make_pocket()
        s, prefix = self.session(key), pocket["prefix"]
        RawS3(s).create_upload(prefix + "abandoned")
        self.assertEqual(len(self.raw.list_uploads(prefix)), 1)
        rep = self.reconcile(pocket)  # younger than multipart_max_age (2 s): kept
        self.assertEqual(rep["uploads_aborted"], 0, rep)
        time.sleep(3)
        rep = self.reconcile(pocket)
        self.assertEqual(rep["uploads_aborted"], 1, rep)
        self.assertEqual(self.raw.list_uploads(prefix), [])

    def test_deleting_pocket_is_emptied(self):
        token, pocket, key = self.make_pocket()
        s, prefix = self.session(key), pocket["prefix"]
        for i in range(5):
            self.assertEqual(s3_put_bytes(s, prefix + "f%d" % i, b"d" * 10), 0)
        RawS3(s).create_upload(prefix + "partial")
        self.reconcile(pocket)
        self.assertEqual(self.usage(token, pocket), (50, 5))
        # another user cannot delete it; its owner can, once
        other, _, _, _ = self.d.new_user()
        path = "/v1/pockets/" + pocket["id"]
        self.assertEqual(self.d.request("DELETE", path, token=other).status, 404)
        r = self.d.request("DELETE", path, token=token)
        self.assertEqual((r.status, r.body["status"]), (202, "deleting"), r)
        self.assertEqual(self.d.request("DELETE", path, token=token).status, 409)
        self.assertEqual(len(self.audits(pocket["id"], "pocket.delete")), 1)
        r = self.d.request("POST", "/v1/reservations", {"key": "late", "bytes": 1}, token=key)
        self.assertEqual(r.status, 401, r)  # its keys are revoked
        rep = self.reconcile(pocket)
        self.assertEqual((rep["objects_purged"], rep["uploads_aborted"]), (5, 1), rep)
        self.assertEqual(self.raw.list_keys(prefix), [])
        self.assertEqual(self.raw.list_uploads(prefix), [])
        self.assertEqual(self.usage(token, pocket), (0, 0))
        self.assertEqual(len(self.audits(pocket["id"], "pocket.purge")), 1)
        self.session(key, 401)

    def test_bad_requests(self):
        token, pocket, _ = self.make_pocket()
        path = "/v1/admin/reconcile"
        self.assertEqual(self.d.request("POST", path, {}).status, 401)
        self.assertEqual(self.d.request("POST", path, {}, token=token).status, 403)
        for body, status in (({"pocket_id": "pkt_nosuchpocket"}, 404),
                             ({"pocket_id": "../../etc"}, 404),
                             ({"pocket_id": ""}, 400), ({"pocket_id": 5}, 400),
                             ({"pocket": pocket["id"]}, 400), ({"pocket_id": "x" * 65}, 400)):
            r = self.d.request("POST", path, body, token=self.admin)
            self.assertEqual(r.status, status, (body, r))
        r = self.d.request("POST", path, raw=b"[1]", token=self.admin,
                           headers={"Content-Type": "application/json"})
        self.assertEqual(r.status, 400, r)
        rep = self.reconcile()  # every pocket
        self.assertGreaterEqual(rep["pockets"], 1)
        self.assertEqual(rep["failed"], 0, rep)


class ReplicasTest(unittest.TestCase):
    def test_two_replicas_reconcile_at_once(self):
        require_services()
        a = Daemon(reconcile__interval="0", reconcile__list_rate="5")
        try:
            b = Daemon(db_url=a.db_url, token_secret=a.token_secret, root_prefix=a.root_prefix,
                       reconcile__interval="0", reconcile__list_rate="5")
        except Exception:
            a.stop()
            raise
        try:
            token, _, _, _ = a.new_user()
            pocket = a.new_pocket(token)
            key = a.new_key(token, pocket["id"])["key"]
            s = a.request("POST", "/v1/session", token=key).body
            for i in range(12):
                self.assertEqual(s3_put_bytes(s, pocket["prefix"] + "r%d" % i, b"r" * (i + 1)), 0)
            results = []

            def run(d):
                results.append(d.request("POST", "/v1/admin/reconcile",
                                         {"pocket_id": pocket["id"]}, token=d.admin_token(),
                                         timeout=120))

            a.admin_token(), b.admin_token()
            threads = [threading.Thread(target=run, args=(d,)) for d in (a, b, a, b)]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            self.assertEqual([r.status for r in results], [200] * 4, results)
            corrections = [c for r in results for c in r.body["corrections"]]
            self.assertEqual(len(corrections), 1, results)
            self.assertEqual(corrections[0]["after"], {"bytes": 78, "objects": 12})
            self.assertEqual(corrections[0]["keys"], 12)
            r = b.request("GET", "/v1/pockets/" + pocket["id"], token=token)
            self.assertEqual(r.body["usage"], {"bytes": 78, "objects": 12})
            rows = a.sql("SELECT COUNT(*) FROM audit_log WHERE action = 'usage.correct'"
                         " AND target_id = %s", (pocket["id"],))
            self.assertEqual(int(rows[0][0]), 1)
            rows = a.sql("SELECT COUNT(*) FROM objects WHERE pocket_id = %s AND deleted = 0",
                         (pocket["id"],))
            self.assertEqual(int(rows[0][0]), 12)
        finally:
            b.stop()
            a.stop()


if __name__ == "__main__":
    require_services()
    unittest.main()
