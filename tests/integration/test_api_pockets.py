#!/usr/bin/env python3
"""Integration tests of pockityd's tiers, pockets and tier-request routes (the
admin approval flow), against a real daemon and database (SQLite, or
PostgreSQL with POCKITY_TEST_BACKEND=postgres). Exit 0 only when all pass."""

import json
import os
import re
import secrets
import socket
import sys
import threading
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402

D = None  # the one daemon of this run (started in main)


def audit(action, target_id):
    """The audit rows (actor_type, actor_id, detail as JSON) of action on target_id."""
    rows = D.sql("SELECT actor_type, actor_id, detail FROM audit_log"
                    " WHERE action = %s AND target_id = %s ORDER BY id", (action, target_id))
    return [(r[0], r[1], json.loads(r[2])) for r in rows]


def post_oversized(path, token, size):
    """POST a JSON body of size bytes over a plain socket (the server may answer
    and close before it is all sent); returns the status code."""
    body = b'{"name": "' + b"a" * (size - 12) + b'"}'
    head = ("POST %s HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer %s\r\n"
            "Content-Type: application/json\r\nContent-Length: %d\r\n"
            "Connection: close\r\n\r\n" % (path, token, len(body))).encode()
    with socket.create_connection(("127.0.0.1", D.port), timeout=30) as s:
        s.sendall(head)
        try:
            s.sendall(body)
        except (BrokenPipeError, ConnectionResetError):
            pass
        answer = b""
        try:
            while b"\r\n" not in answer:
                chunk = s.recv(4096)
                if not chunk:
                    break
                answer += chunk
        except ConnectionResetError:
            pass
    return int(answer.split(b" ", 2)[1]) if answer.startswith(b"HTTP/1.1 ") else None


def tier_id(stem):
    return "%s-%s" % (stem, secrets.token_hex(3))


class Base(unittest.TestCase):
    def req(self, method, path, body=None, token=None, raw=None, headers=None):
        return D.request(method, path, body=body, token=token, raw=raw, headers=headers)

    def expect(self, r, status, code=None):
        self.assertEqual(r.status, status, r)
        if code is not None:
            self.assertIsInstance(r.body, dict, r)
            self.assertEqual(r.body["error"]["code"], code, r)
            self.assertTrue(r.body["error"]["message"], r)
        return r.body

    def admin(self):
        return D.admin_token()

    def user(self):
        token, user, _, _ = D.new_user()
        return token, user

    def make_tier(self, stem="t", needs_approval=False, max_bytes=10 << 30, max_objects=100000,
                  price_minor=500, currency="EUR"):
        tid = tier_id(stem)
        r = self.req("POST", "/v1/admin/tiers",
                     {"id": tid, "name": "Tier " + tid, "max_bytes": max_bytes,
                      "max_objects": max_objects, "price_minor": price_minor,
                      "currency": currency, "needs_approval": needs_approval},
                     token=self.admin())
        self.expect(r, 201)
        return tid

    def make_pocket(self, token, tier=None, name=None):
        body = {"name": name or "p-" + secrets.token_hex(4)}
        if tier:
            body["tier"] = tier
        return self.expect(self.req("POST", "/v1/pockets", body, token=token), 201)


class TestTiers(Base):
    def test_list_active_tiers(self):
        token, _ = self.user()
        tiers = self.expect(self.req("GET", "/v1/tiers", token=token), 200)["tiers"]
        free = [t for t in tiers if t["id"] == "free"]
        self.assertEqual(len(free), 1)
        self.assertEqual(free[0], {"id": "free", "name": "Free", "max_bytes": 1073741824,
                                   "max_objects": 10000, "price_minor": 0, "currency": "USD",
                                   "needs_approval": False})
        # a retired tier is not offered
        tid = self.make_tier()
        self.expect(self.req("PATCH", "/v1/admin/tiers/" + tid, {"active": False},
                             token=self.admin()), 200)
        ids = [t["id"] for t in self.req("GET", "/v1/tiers", token=token).body["tiers"]]
        self.assertNotIn(tid, ids)

    def test_tiers_need_a_login(self):
        self.expect(self.req("GET", "/v1/tiers"), 401, "unauthenticated")
        self.expect(self.req("GET", "/v1/tiers", token="pks_forged.token.value"), 401,
                    "unauthenticated")
        token, _ = self.user()
        self.expect(self.req("GET", "/v1/tiers", token=token[:-2] + "xx"), 401,
                    "unauthenticated")


class TestPockets(Base):
    def test_create_free_pocket(self):
        token, user = self.user()
        p = self.make_pocket(token, name="photos")
        self.assertRegex(p["id"], r"^pkt_[a-z2-7]{20}$")
        self.assertEqual(p["name"], "photos")
        self.assertEqual(p["status"], "active")
        self.assertEqual(p["tier"]["id"], "free")
        self.assertEqual(p["prefix"], "%s/%s/" % (D.root_prefix, p["id"]))
        self.assertEqual(p["usage"], {"bytes": 0, "objects": 0})
        self.assertEqual(p["reserved"], {"bytes": 0, "objects": 0})
        self.assertEqual(p["quota"], {"max_bytes": 1073741824, "max_objects": 10000})
        self.assertIsNone(p["pending_request"])
        self.assertIsInstance(p["created_at"], int)
        self.assertNotIn("owner_email", p)
        got = self.expect(self.req("GET", "/v1/pockets/" + p["id"], token=token), 200)
        self.assertEqual(got, p)
        listed = self.expect(self.req("GET", "/v1/pockets", token=token), 200)
        self.assertEqual(listed["pockets"], [p])
        self.assertIsNone(listed["next_offset"])
        rows = audit("pocket.create", p["id"])
        self.assertEqual(len(rows), 1)
        self.assertEqual(rows[0][0:2], ("user", user["id"]))
        self.assertEqual(rows[0][2]["name"], "photos")

    def test_name_rules(self):
        token, _ = self.user()
        self.make_pocket(token, name="A-z_0.9")
        self.make_pocket(token, name="n" * 64)
        bad = ["", "n" * 65, "a b", "a/b", ".", "..", "x'; DROP TABLE pockets; --",
               "caf\u00e9", "tab\there", "semi;colon", "quote\"s", "pct%41", "\u202e"]
        for name in bad:
            self.expect(self.req("POST", "/v1/pockets", {"name": name}, token=token), 400,
                        "invalid_request")
        # a NUL byte, escaped or raw, never reaches the database
        self.expect(self.req("POST", "/v1/pockets", raw='{"name":"a\\u0000b"}', token=token,
                             headers={"Content-Type": "application/json"}), 400,
                    "invalid_request")
        self.expect(self.req("POST", "/v1/pockets", raw=b'{"name":"a\x00b"}', token=token,
                             headers={"Content-Type": "application/json"}), 400,
                    "invalid_request")
        names = sorted(p["name"] for p in self.req("GET", "/v1/pockets", token=token)
                       .body["pockets"])
        self.assertEqual(names, ["A-z_0.9", "n" * 64])

    def test_duplicate_name(self):
        token, _ = self.user()
        self.make_pocket(token, name="docs")
        self.expect(self.req("POST", "/v1/pockets", {"name": "docs"}, token=token), 409,
                    "conflict")
        # names are per user
        other, _ = self.user()
        self.make_pocket(other, name="docs")
        self.assertEqual(len(self.req("GET", "/v1/pockets", token=token).body["pockets"]), 1)

    def test_tier_must_exist_and_be_active(self):
        token, _ = self.user()
        for tier in ["nope", "Bad Tier!", "x" * 33, "free'--"]:
            self.expect(self.req("POST", "/v1/pockets", {"name": "a", "tier": tier},
                                 token=token), 400, "invalid_request")
        tid = self.make_tier()
        self.expect(self.req("PATCH", "/v1/admin/tiers/" + tid, {"active": False},
                             token=self.admin()), 200)
        self.expect(self.req("POST", "/v1/pockets", {"name": "a", "tier": tid}, token=token),
                    400, "invalid_request")
        self.assertEqual(self.req("GET", "/v1/pockets", token=token).body["pockets"], [])

    def test_bad_bodies(self):
        token, _ = self.user()
        json_hdr = {"Content-Type": "application/json"}
        cases = [
            ("{", "malformed"),
            ('{"name": "a",}', "trailing comma"),
            ('["name"]', "not an object"),
            ('"name"', "a string"),
            ('{"name": 5}', "wrong type"),
            ('{"name": ["a"]}', "wrong type"),
            ('{"name": "a", "tier": 7}', "wrong type"),
            ('{"tier": "free"}', "missing name"),
            ('{"name": "a", "colour": "red"}', "unknown field"),
            ('{"name": "a", "name": "b"}', "duplicate key"),
            ("", "empty body"),
        ]
        for raw, why in cases:
            r = self.req("POST", "/v1/pockets", raw=raw, token=token, headers=json_hdr)
            self.assertEqual(r.status, 400, "%s: %r" % (why, r))
            self.assertEqual(r.body["error"]["code"], "invalid_request", why)
        # invalid UTF-8
        self.expect(self.req("POST", "/v1/pockets", raw=b'{"name": "a\xff\xfe"}', token=token,
                             headers=json_hdr), 400, "invalid_request")
        # oversized
        self.assertEqual(post_oversized("/v1/pockets", token, 2 << 20), 413)
        # very long but under the body cap
        self.expect(self.req("POST", "/v1/pockets", {"name": "a" * 100000}, token=token), 400,
                    "invalid_request")
        self.assertEqual(self.req("GET", "/v1/pockets", token=token).body["pockets"], [])

    def test_needs_a_login(self):
        self.expect(self.req("POST", "/v1/pockets", {"name": "a"}), 401, "unauthenticated")
        self.expect(self.req("GET", "/v1/pockets"), 401, "unauthenticated")
        self.expect(self.req("POST", "/v1/pockets", {"name": "a"}, token="garbage"), 401,
                    "unauthenticated")

    def test_other_users_pocket_is_not_found(self):
        owner, owner_user = self.user()
        p = self.make_pocket(owner)
        stranger, _ = self.user()
        self.expect(self.req("GET", "/v1/pockets/" + p["id"], token=stranger), 404, "not_found")
        self.expect(self.req("POST", "/v1/pockets/%s/tier-requests" % p["id"],
                             {"tier": "free"}, token=stranger), 404, "not_found")
        self.assertEqual(self.req("GET", "/v1/pockets", token=stranger).body["pockets"], [])
        # malformed ids are not found either, never an error of the database
        for bad in ["pkt_x", "nope", "pkt_" + "a" * 200, "%27%20OR%201%3D1", "pkt_%00"]:
            r = self.req("GET", "/v1/pockets/" + bad, token=owner)
            self.assertIn(r.status, (400, 404), r)
        # an administrator sees it, with its owner
        got = self.expect(self.req("GET", "/v1/pockets/" + p["id"], token=self.admin()), 200)
        self.assertEqual(got["id"], p["id"])
        self.assertEqual(got["user_id"], owner_user["id"])
        self.assertIn("@", got["owner_email"])

    def test_pocket_cap(self):
        token, _ = self.user()
        for i in range(100):
            self.make_pocket(token, name="p%03d" % i)
        r = self.req("POST", "/v1/pockets", {"name": "one-too-many"}, token=token)
        body = self.expect(r, 409, "conflict")
        self.assertIn("100", body["error"]["message"])
        page = self.req("GET", "/v1/pockets?limit=1000", token=token).body
        self.assertEqual(len(page["pockets"]), 100)

    def test_pagination(self):
        token, _ = self.user()
        made = [self.make_pocket(token, name="pg%d" % i)["id"] for i in range(3)]
        first = self.expect(self.req("GET", "/v1/pockets?limit=2", token=token), 200)
        self.assertEqual(len(first["pockets"]), 2)
        self.assertEqual(first["next_offset"], 2)
        rest = self.expect(self.req("GET", "/v1/pockets?limit=2&offset=2", token=token), 200)
        self.assertEqual(len(rest["pockets"]), 1)
        self.assertIsNone(rest["next_offset"])
        self.assertEqual(sorted(p["id"] for p in first["pockets"] + rest["pockets"]),
                         sorted(made))
        for query in ["limit=0", "limit=1001", "limit=abc", "limit=-1", "limit=", "limit=1e2",
                      "limit=99999999999999999999", "offset=-1", "offset=x", "offset=1.5"]:
            for path in ["/v1/pockets", "/v1/tiers", "/v1/tier-requests"]:
                self.expect(self.req("GET", path + "?" + query, token=token), 400,
                            "invalid_request")
            for path in ["/v1/admin/pockets", "/v1/admin/tiers", "/v1/admin/tier-requests"]:
                self.expect(self.req("GET", path + "?" + query, token=self.admin()), 400,
                            "invalid_request")
        self.expect(self.req("GET", "/v1/pockets?limit=1000&offset=0", token=token), 200)


class TestTierRequests(Base):
    def test_approval_flow(self):
        gold = self.make_tier("gold", needs_approval=True, max_bytes=50 << 30,
                              max_objects=500000)
        token, user = self.user()
        p = self.make_pocket(token, tier=gold, name="big")
        self.assertEqual(p["status"], "pending")
        self.assertEqual(p["tier"]["id"], gold)
        pending = p["pending_request"]
        self.assertIsNotNone(pending)
        self.assertIsNone(pending["from_tier"])
        self.assertEqual(pending["to_tier"], gold)
        rid = pending["id"]
        self.assertEqual(len(audit("tier_request.create", rid)), 1)

        mine = self.expect(self.req("GET", "/v1/tier-requests", token=token), 200)
        self.assertEqual([r["id"] for r in mine["tier_requests"]], [rid])
        self.assertEqual(mine["tier_requests"][0]["status"], "pending")
        self.assertNotIn("user_email", mine["tier_requests"][0])

        # only administrators see and decide requests
        self.expect(self.req("GET", "/v1/admin/tier-requests", token=token), 403, "forbidden")
        self.expect(self.req("POST", "/v1/admin/tier-requests/%s/approve" % rid, {},
                             token=token), 403, "forbidden")
        self.expect(self.req("GET", "/v1/admin/tier-requests"), 401, "unauthenticated")

        listed = self.expect(self.req("GET", "/v1/admin/tier-requests?status=pending",
                                      token=self.admin()), 200)["tier_requests"]
        mine = [r for r in listed if r["id"] == rid]
        self.assertEqual(len(mine), 1)
        self.assertTrue(all(r["status"] == "pending" for r in listed))
        self.assertEqual(mine[0]["pocket_name"], "big")
        self.assertEqual(mine[0]["user_email"], user["email"])
        self.assertEqual(mine[0]["pocket_id"], p["id"])

        r = self.expect(self.req("POST", "/v1/admin/tier-requests/%s/approve" % rid,
                                 {"comment": "welcome aboard"}, token=self.admin()), 200)
        self.assertEqual(r["status"], "approved")
        self.assertEqual(r["comment"], "welcome aboard")
        self.assertIsNotNone(r["decided_by"])
        self.assertIsInstance(r["decided_at"], int)
        self.assertEqual(r["pocket"]["status"], "active")
        got = self.expect(self.req("GET", "/v1/pockets/" + p["id"], token=token), 200)
        self.assertEqual(got["status"], "active")
        self.assertEqual(got["tier"]["id"], gold)
        self.assertEqual(got["quota"], {"max_bytes": 50 << 30, "max_objects": 500000})
        self.assertIsNone(got["pending_request"])
        rows = audit("tier_request.approve", rid)
        self.assertEqual(len(rows), 1)
        self.assertEqual(rows[0][0], "admin")
        self.assertEqual(rows[0][2]["comment"], "welcome aboard")

        # a decided request cannot be decided again
        self.expect(self.req("POST", "/v1/admin/tier-requests/%s/approve" % rid, {},
                             token=self.admin()), 409, "conflict")
        self.expect(self.req("POST", "/v1/admin/tier-requests/%s/reject" % rid, {},
                             token=self.admin()), 409, "conflict")
        self.assertEqual(len(audit("tier_request.approve", rid)), 1)
        approved = self.req("GET", "/v1/admin/tier-requests?status=approved",
                            token=self.admin()).body["tier_requests"]
        self.assertIn(rid, [x["id"] for x in approved])

    def test_reject_moves_a_new_pocket_to_free(self):
        gold = self.make_tier("gold", needs_approval=True)
        token, _ = self.user()
        p = self.make_pocket(token, tier=gold)
        rid = p["pending_request"]["id"]
        r = self.expect(self.req("POST", "/v1/admin/tier-requests/%s/reject" % rid,
                                 {"comment": "not this month"}, token=self.admin()), 200)
        self.assertEqual(r["status"], "rejected")
        self.assertEqual(r["comment"], "not this month")
        self.assertEqual(r["pocket"]["status"], "active")
        self.assertEqual(r["pocket"]["tier"]["id"], "free")
        rows = audit("tier_request.reject", rid)
        self.assertEqual(len(rows), 1)
        self.assertEqual(rows[0][2]["pocket_moved_to"], "free")
        self.expect(self.req("POST", "/v1/admin/tier-requests/%s/approve" % rid, {},
                             token=self.admin()), 409, "conflict")

    def test_reject_without_free_tier_keeps_pocket_pending(self):
        gold = self.make_tier("gold", needs_approval=True)
        token, _ = self.user()
        p = self.make_pocket(token, tier=gold)
        admin = self.admin()
        self.expect(self.req("PATCH", "/v1/admin/tiers/free", {"active": False}, token=admin),
                    200)
        try:
            r = self.expect(self.req("POST", "/v1/admin/tier-requests/%s/reject"
                                     % p["pending_request"]["id"], {}, token=admin), 200)
        finally:
            self.expect(self.req("PATCH", "/v1/admin/tiers/free", {"active": True},
                                 token=admin), 200)
        self.assertEqual(r["pocket"]["status"], "pending")
        self.assertIsNone(r["pocket"]["pending_request"])
        # the owner may ask again, also for the same tier, and get it approved
        again = self.expect(self.req("POST", "/v1/pockets/%s/tier-requests" % p["id"],
                                     {"tier": gold, "reason": "please"}, token=token), 201)
        self.assertEqual(again["status"], "pending")
        done = self.expect(self.req("POST", "/v1/admin/tier-requests/%s/approve" % again["id"],
                                    {}, token=admin), 200)
        self.assertEqual(done["pocket"]["status"], "active")
        self.assertEqual(done["pocket"]["tier"]["id"], gold)

    def test_change_tier(self):
        big = self.make_tier("big", needs_approval=False, max_bytes=5 << 30)
        gold = self.make_tier("gold", needs_approval=True)
        token, _ = self.user()
        p = self.make_pocket(token)
        path = "/v1/pockets/%s/tier-requests" % p["id"]
        self.expect(self.req("POST", path, {"tier": "free"}, token=token), 409, "conflict")

        # a tier without approval applies at once
        r = self.expect(self.req("POST", path, {"tier": big, "reason": "more room"},
                                 token=token), 201)
        self.assertEqual(r["status"], "approved")
        self.assertEqual(r["comment"], "automatic")
        self.assertIsNone(r["decided_by"])
        self.assertEqual(r["from_tier"], "free")
        self.assertEqual(r["to_tier"], big)
        self.assertEqual(r["reason"], "more room")
        self.assertEqual(r["pocket"]["tier"]["id"], big)
        self.assertEqual(r["pocket"]["quota"]["max_bytes"], 5 << 30)

        # one that needs approval waits; only one may be pending
        r = self.expect(self.req("POST", path, {"tier": gold}, token=token), 201)
        self.assertEqual(r["status"], "pending")
        self.assertEqual(r["from_tier"], big)
        self.assertEqual(r["pocket"]["tier"]["id"], big)
        self.assertEqual(r["pocket"]["pending_request"]["id"], r["id"])
        body = self.expect(self.req("POST", path, {"tier": "free"}, token=token), 409,
                           "conflict")
        self.assertIn("already pending", body["error"]["message"])

        # the owner can withdraw it, nobody else
        stranger, _ = self.user()
        cancel = "/v1/tier-requests/%s/cancel" % r["id"]
        self.expect(self.req("POST", cancel, token=stranger), 404, "not_found")
        c = self.expect(self.req("POST", cancel, token=token), 200)
        self.assertEqual(c["status"], "canceled")
        self.assertEqual(c["pocket"]["status"], "active")
        self.expect(self.req("POST", cancel, token=token), 409, "conflict")
        self.expect(self.req("POST", "/v1/admin/tier-requests/%s/approve" % r["id"], {},
                             token=self.admin()), 409, "conflict")
        self.assertEqual(self.req("GET", "/v1/pockets/" + p["id"], token=token)
                         .body["tier"]["id"], big)

        # newest first
        mine = self.req("GET", "/v1/tier-requests", token=token).body["tier_requests"]
        self.assertEqual(len(mine), 2)
        self.assertGreaterEqual(mine[0]["created_at"], mine[1]["created_at"])
        self.assertEqual({m["status"] for m in mine}, {"approved", "canceled"})

    def test_downgrade_below_usage_is_refused(self):
        tiny = self.make_tier("tiny", max_bytes=1000, max_objects=5)
        token, _ = self.user()
        p = self.make_pocket(token)
        D.sql("UPDATE pockets SET used_bytes = 5000, used_objects = 2 WHERE id = %s",
                 (p["id"],))
        path = "/v1/pockets/%s/tier-requests" % p["id"]
        self.expect(self.req("POST", path, {"tier": tiny}, token=token), 409, "conflict")
        D.sql("UPDATE pockets SET used_bytes = 10, used_objects = 9 WHERE id = %s",
                 (p["id"],))
        self.expect(self.req("POST", path, {"tier": tiny}, token=token), 409, "conflict")
        D.sql("UPDATE pockets SET used_bytes = 10, used_objects = 2 WHERE id = %s",
                 (p["id"],))
        r = self.expect(self.req("POST", path, {"tier": tiny}, token=token), 201)
        self.assertEqual(r["pocket"]["tier"]["id"], tiny)
        self.assertEqual(r["pocket"]["usage"], {"bytes": 10, "objects": 2})
        self.assertEqual(len(D.sql("SELECT id FROM tier_requests WHERE pocket_id = %s",
                                      (p["id"],))), 1)

    def test_approval_refused_when_usage_does_not_fit(self):
        small = self.make_tier("small", needs_approval=True, max_bytes=100)
        token, _ = self.user()
        p = self.make_pocket(token)
        r = self.expect(self.req("POST", "/v1/pockets/%s/tier-requests" % p["id"],
                                 {"tier": small}, token=token), 201)
        D.sql("UPDATE pockets SET used_bytes = 1000 WHERE id = %s", (p["id"],))
        self.expect(self.req("POST", "/v1/admin/tier-requests/%s/approve" % r["id"], {},
                             token=self.admin()), 409, "conflict")
        # nothing changed: the request is still pending, the pocket on free
        got = self.req("GET", "/v1/pockets/" + p["id"], token=token).body
        self.assertEqual(got["tier"]["id"], "free")
        self.assertEqual(got["pending_request"]["id"], r["id"])
        self.assertEqual(audit("tier_request.approve", r["id"]), [])

    def test_request_input(self):
        token, _ = self.user()
        p = self.make_pocket(token)
        path = "/v1/pockets/%s/tier-requests" % p["id"]
        gold = self.make_tier("gold", needs_approval=True)
        cases = [{}, {"tier": ""}, {"tier": 5}, {"tier": "nope"}, {"tier": "UPPER"},
                 {"tier": gold, "reason": "r" * 1001}, {"tier": gold, "reason": 3},
                 {"tier": gold, "reason": "bell\x07"}, {"tier": gold, "extra": 1}]
        for body in cases:
            self.expect(self.req("POST", path, body, token=token), 400, "invalid_request")
        self.expect(self.req("POST", path, raw="{nope", token=token,
                             headers={"Content-Type": "application/json"}), 400,
                    "invalid_request")
        self.assertEqual(self.req("GET", "/v1/tier-requests", token=token).body["tier_requests"],
                         [])
        # SQL metacharacters and multi-line text are stored as they are
        reason = "Robert'); DROP TABLE tier_requests;--\nline two \u00e9\u6f22"
        r = self.expect(self.req("POST", path, {"tier": gold, "reason": reason}, token=token),
                        201)
        self.assertEqual(r["reason"], reason)
        self.assertEqual(self.req("GET", "/v1/tier-requests", token=token)
                         .body["tier_requests"][0]["reason"], reason)
        # the decision's comment has the same rules
        admin = self.admin()
        for body in [{"comment": "c" * 1001}, {"comment": 1}, {"note": "x"}]:
            self.expect(self.req("POST", "/v1/admin/tier-requests/%s/approve" % r["id"], body,
                                 token=admin), 400, "invalid_request")
        for bad in ["nope", "trq_short", "trq_" + "a" * 20 + "x"]:
            self.expect(self.req("POST", "/v1/admin/tier-requests/%s/approve" % bad, {},
                                 token=admin), 404, "not_found")
        self.expect(self.req("POST", "/v1/admin/tier-requests/trq_%s/approve" % ("a" * 20), {},
                             token=admin), 404, "not_found")
        self.expect(self.req("GET", "/v1/admin/tier-requests?status=bogus", token=admin), 400,
                    "invalid_request")
        self.expect(self.req("GET", "/v1/tier-requests?status=pending%27--", token=token), 400,
                    "invalid_request")

    def test_concurrent_decisions(self):
        gold = self.make_tier("gold", needs_approval=True)
        token, _ = self.user()
        rid = self.make_pocket(token, tier=gold)["pending_request"]["id"]
        admin = self.admin()
        results = []

        def decide(verb):
            r = self.req("POST", "/v1/admin/tier-requests/%s/%s" % (rid, verb), {}, token=admin)
            results.append(r.status)

        threads = [threading.Thread(target=decide, args=("approve" if i % 2 else "reject",))
                   for i in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        self.assertEqual(sorted(results), [200] + [409] * 7, results)
        decided = len(audit("tier_request.approve", rid)) + len(audit("tier_request.reject", rid))
        self.assertEqual(decided, 1)


class TestAdminTiers(Base):
    def test_create_list_update(self):
        admin = self.admin()
        tid = tier_id("pro")
        body = {"id": tid, "name": "Pro", "max_bytes": 1 << 40, "max_objects": 10 ** 7,
                "price_minor": 1999, "currency": "EUR", "needs_approval": True}
        t = self.expect(self.req("POST", "/v1/admin/tiers", body, token=admin), 201)
        for k, v in body.items():
            self.assertEqual(t[k], v, k)
        self.assertTrue(t["active"])
        self.assertEqual(len(audit("tier.create", tid)), 1)
        self.expect(self.req("POST", "/v1/admin/tiers", body, token=admin), 409, "conflict")

        # defaults: USD, free of charge, no approval
        t2 = self.expect(self.req("POST", "/v1/admin/tiers",
                                  {"id": tid + "-b", "name": "B", "max_bytes": 0,
                                   "max_objects": 0}, token=admin), 201)
        self.assertEqual((t2["currency"], t2["price_minor"], t2["needs_approval"]),
                         ("USD", 0, False))

        u = self.expect(self.req("PATCH", "/v1/admin/tiers/" + tid,
                                 {"name": "Pro+", "price_minor": 2499, "needs_approval": False},
                                 token=admin), 200)
        self.assertEqual((u["name"], u["price_minor"], u["needs_approval"], u["max_bytes"]),
                         ("Pro+", 2499, False, 1 << 40))
        rows = audit("tier.update", tid)
        self.assertEqual(len(rows), 1)
        self.assertEqual(rows[0][2], {"name": "Pro+", "price_minor": 2499,
                                      "needs_approval": False})
        u = self.expect(self.req("PATCH", "/v1/admin/tiers/" + tid, {"active": False},
                                 token=admin), 200)
        self.assertFalse(u["active"])
        self.assertEqual(u["name"], "Pro+")

        listed = self.expect(self.req("GET", "/v1/admin/tiers", token=admin), 200)["tiers"]
        mine = [x for x in listed if x["id"] == tid]
        self.assertEqual(len(mine), 1)
        self.assertFalse(mine[0]["active"])
        self.assertEqual(mine[0]["pockets"], 0)
        self.assertIn("free", [x["id"] for x in listed])

    def test_create_input(self):
        admin = self.admin()
        good = {"id": tier_id("v"), "name": "V", "max_bytes": 1, "max_objects": 1,
                "price_minor": 0, "currency": "USD", "needs_approval": False}
        changes = [{"id": "Upper"}, {"id": "under_score"}, {"id": ""}, {"id": "x" * 33},
                   {"id": "a;b"}, {"id": 5}, {"name": ""}, {"name": "n" * 65},
                   {"name": "ctl\x01"}, {"max_bytes": -1}, {"max_objects": -5},
                   {"price_minor": -1}, {"max_bytes": "10"}, {"max_bytes": 1.5},
                   {"currency": "usd"}, {"currency": "EURO"}, {"currency": "E1R"},
                   {"needs_approval": "yes"}, {"needs_approval": 1}, {"active": "no"},
                   {"unknown": 1}, {"max_bytes": 2 ** 63}]
        for change in changes:
            body = dict(good, **change)
            self.expect(self.req("POST", "/v1/admin/tiers", body, token=admin), 400,
                        "invalid_request")
        for missing in ["id", "name", "max_bytes", "max_objects"]:
            body = {k: v for k, v in good.items() if k != missing}
            self.expect(self.req("POST", "/v1/admin/tiers", body, token=admin), 400,
                        "invalid_request")
        self.assertEqual(D.sql("SELECT id FROM tiers WHERE id = %s", (good["id"],)), [])
        self.expect(self.req("POST", "/v1/admin/tiers", good, token=admin), 201)

    def test_update_input(self):
        admin = self.admin()
        tid = self.make_tier()
        path = "/v1/admin/tiers/" + tid
        for body in [{}, {"id": "other"}, {"max_bytes": -1}, {"currency": "eur"},
                     {"active": 1}, {"name": ""}, {"bogus": True}]:
            self.expect(self.req("PATCH", path, body, token=admin), 400, "invalid_request")
        self.expect(self.req("PATCH", "/v1/admin/tiers/" + tier_id("none"), {"name": "x"},
                             token=admin), 404, "not_found")
        self.expect(self.req("PATCH", "/v1/admin/tiers/BAD%20ID", {"name": "x"}, token=admin),
                    404, "not_found")
        self.assertEqual(audit("tier.update", tid), [])

    def test_admin_only(self):
        token, _ = self.user()
        tid = self.make_tier()
        self.expect(self.req("GET", "/v1/admin/tiers", token=token), 403, "forbidden")
        self.expect(self.req("POST", "/v1/admin/tiers", {"id": "mine", "name": "m",
                                                         "max_bytes": 1, "max_objects": 1},
                             token=token), 403, "forbidden")
        self.expect(self.req("PATCH", "/v1/admin/tiers/" + tid, {"price_minor": 0},
                             token=token), 403, "forbidden")
        self.expect(self.req("GET", "/v1/admin/pockets", token=token), 403, "forbidden")
        self.expect(self.req("GET", "/v1/admin/tiers"), 401, "unauthenticated")


class TestAdminPockets(Base):
    def test_list_and_filter(self):
        admin = self.admin()
        token, user = self.user()
        p = self.make_pocket(token)
        other, _ = self.user()
        self.make_pocket(other)
        mine = self.expect(self.req("GET", "/v1/admin/pockets?user=" + user["id"],
                                    token=admin), 200)["pockets"]
        self.assertEqual([x["id"] for x in mine], [p["id"]])
        self.assertEqual(mine[0]["owner_email"], user["email"])
        self.assertEqual(mine[0]["usage"], {"bytes": 0, "objects": 0})
        everyone = self.expect(self.req("GET", "/v1/admin/pockets?limit=1000", token=admin),
                               200)["pockets"]
        self.assertGreaterEqual(len(everyone), 2)
        for q in ["user=%27%20OR%201=1", "user=", "status=gone", "user=" + "a" * 65]:
            self.expect(self.req("GET", "/v1/admin/pockets?" + q, token=admin), 400,
                        "invalid_request")
        self.assertEqual(self.req("GET", "/v1/admin/pockets?user=usr_nobody",
                                  token=admin).body["pockets"], [])

    def test_suspend_unsuspend(self):
        admin = self.admin()
        token, _ = self.user()
        p = self.make_pocket(token)
        base = "/v1/admin/pockets/%s/" % p["id"]
        self.expect(self.req("POST", base + "suspend", {}, token=token), 403, "forbidden")
        s = self.expect(self.req("POST", base + "suspend", {"reason": "abuse report"},
                                 token=admin), 200)
        self.assertEqual(s["status"], "suspended")
        self.assertEqual(self.req("GET", "/v1/pockets/" + p["id"], token=token)
                         .body["status"], "suspended")
        self.assertEqual(audit("pocket.suspend", p["id"])[0][2], {"reason": "abuse report"})
        self.expect(self.req("POST", base + "suspend", token=admin), 409, "conflict")
        suspended = self.req("GET", "/v1/admin/pockets?status=suspended&limit=1000",
                             token=admin).body["pockets"]
        self.assertIn(p["id"], [x["id"] for x in suspended])
        u = self.expect(self.req("POST", base + "unsuspend", token=admin), 200)
        self.assertEqual(u["status"], "active")
        self.expect(self.req("POST", base + "unsuspend", token=admin), 409, "conflict")
        self.assertEqual(len(audit("pocket.unsuspend", p["id"])), 1)
        self.expect(self.req("POST", base + "suspend", {"why": "x"}, token=admin), 400,
                    "invalid_request")
        self.expect(self.req("POST", base + "suspend", {"reason": "r" * 1001}, token=admin),
                    400, "invalid_request")
        self.expect(self.req("POST", "/v1/admin/pockets/pkt_%s/suspend" % ("a" * 20),
                             token=admin), 404, "not_found")
        self.expect(self.req("POST", "/v1/admin/pockets/bogus/suspend", token=admin), 404,
                    "not_found")

    def test_pending_pocket_cannot_be_unsuspended_into_active(self):
        gold = self.make_tier("gold", needs_approval=True)
        token, _ = self.user()
        p = self.make_pocket(token, tier=gold)
        admin = self.admin()
        self.expect(self.req("POST", "/v1/admin/pockets/%s/unsuspend" % p["id"], token=admin),
                    409, "conflict")
        self.expect(self.req("POST", "/v1/admin/pockets/%s/suspend" % p["id"], token=admin),
                    409, "conflict")
        self.assertEqual(self.req("GET", "/v1/pockets/" + p["id"], token=token)
                         .body["status"], "pending")


def main():
    global D
    harness.require_services()
    D = harness.Daemon()
    ok = alive = False
    try:
        prog = unittest.main(exit=False, verbosity=2)
        ok = prog.result.wasSuccessful()
        alive = D.proc.poll() is None
        if not alive:
            print("pockityd died:\n" + D.log()[-4000:])
    finally:
        status = D.stop()
    if status != 0:
        print("pockityd exited with status %s:\n%s" % (status, D.log()[-4000:]))
        ok = False
    # read after the stop, so leak reports at exit are in it
    log = D.log()
    if any(m in log for m in ("internal_error", "bug:", "runtime error:", "Sanitizer")):
        print("pockityd logged an internal error:\n" + log[-4000:])
        ok = False
    # no request of this run was answered with a 5xx
    five = [line for line in log.splitlines() if re.search(r" /v1/\S* 5\d\d ", line)]
    if five:
        print("requests answered 5xx:\n" + "\n".join(five[:20]))
        ok = False
    return 0 if ok and alive else 1


if __name__ == "__main__":
    sys.exit(main())
