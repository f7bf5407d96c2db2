#!/usr/bin/env python3
"""Integration tests of pockityd's billing: subscriptions made by tier approvals,
proration, scheduled downgrades, the invoice state machine, the credit ledger,
and the renewal job (credit renewals, past due, restore on payment), against a
real daemon and database (SQLite, or PostgreSQL with POCKITY_TEST_BACKEND=postgres).
Two daemons run: one whose job stays idle, and one with a 1 s job, 2 s grace,
invoices due at once and renewals opened at once, so time-based paths run
without waiting for a month. Exit 0 only when all pass."""

import json
import os
import re
import secrets
import sys
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402

MONTH_MIN, MONTH_MAX = 28 * 86400, 31 * 86400
BTC_HASH = "ab" * 32
ETH_HASH = "0x" + "cd" * 32


class Db:
    """Straight SQL on a daemon's database (harness.Daemon.sql) and the views
    of it these tests compare."""

    def __init__(self, daemon):
        self.d = daemon
        self.query = daemon.sql

    def audit(self, action, target_id):
        rows = self.query("SELECT actor_type, detail FROM audit_log WHERE action = %s"
                          " AND target_id = %s ORDER BY id", (action, target_id))
        return [(r[0], json.loads(r[1])) for r in rows]

    def snapshot(self):
        """Everything billing writes, to show a refused request changed nothing."""
        return [self.query("SELECT * FROM %s ORDER BY 1, 2" % t) for t in
                ("subscriptions", "invoices", "invoice_lines", "credit_entries")] + \
            [self.query("SELECT action, target_id FROM audit_log WHERE action LIKE 'invoice.%%'"
                        " OR action LIKE 'subscription.%%' OR action LIKE 'credit.%%'"
                        " OR action LIKE 'tier_request.%%' ORDER BY id"),
             self.query("SELECT id, tier_id, hold FROM pockets ORDER BY id")]


IDLE = None   # (daemon, db): its billing job never fires during the run
FAST = None   # (daemon, db): billing job every second, grace 2 s


class Base(unittest.TestCase):
    daemon_pair = None

    @property
    def d(self):
        return self.daemon_pair[0]

    @property
    def db(self):
        return self.daemon_pair[1]

    def req(self, method, path, body=None, token=None, raw=None):
        return self.d.request(method, path, body=body, token=token, raw=raw)

    def expect(self, r, status, code=None):
        self.assertEqual(r.status, status, r)
        if code is not None:
            self.assertEqual(r.body["error"]["code"], code, r)
            self.assertTrue(r.body["error"]["message"], r)
        return r.body

    def admin(self):
        return self.d.admin_token()

    def user(self):
        token, user, _, _ = self.d.new_user()
        return token, user["id"]

    def tier(self, price, max_bytes=10 << 30, max_objects=100000, currency="USD",
             approval=True):
        tid = "t-%s" % secrets.token_hex(4)
        self.expect(self.req("POST", "/v1/admin/tiers",
                             {"id": tid, "name": "Tier " + tid, "max_bytes": max_bytes,
                              "max_objects": max_objects, "price_minor": price,
                              "currency": currency, "needs_approval": approval},
                             token=self.admin()), 201)
        return tid

    def pocket(self, token, tier="free"):
        return self.expect(self.req("POST", "/v1/pockets",
                                    {"name": "p" + secrets.token_hex(4), "tier": tier},
                                    token=token), 201)

    def ask(self, token, pocket_id, tier):
        return self.expect(self.req("POST", "/v1/pockets/%s/tier-requests" % pocket_id,
                                    {"tier": tier}, token=token), 201)

    def approve(self, request_id, status=200, code=None):
        return self.expect(self.req("POST", "/v1/admin/tier-requests/%s/approve" % request_id,
                                    {}, token=self.admin()), status, code)

    def subscription(self, token, pocket_id):
        return self.expect(self.req("GET", "/v1/pockets/%s/subscription" % pocket_id,
                                    token=token), 200)

    def invoices(self, token, query=""):
        return self.expect(self.req("GET", "/v1/invoices" + query, token=token),
                           200)["invoices"]

    def paid_tier_pocket(self, price=1000):
        """A user's pocket moved from free to a paid tier by an approval."""
        tier = self.tier(price)
        token, uid = self.user()
        p = self.pocket(token)
        r = self.ask(token, p["id"], tier)
        self.approve(r["id"])
        return token, uid, p["id"], tier

    def mark_paid(self, invoice_id, status=200, code=None, body=None):
        return self.expect(self.req("POST", "/v1/admin/invoices/%s/mark-paid" % invoice_id,
                                    {"network": "btc", "tx_hash": BTC_HASH} if body is None
                                    else body,
                                    token=self.admin()), status, code)


class TestSubscriptions(Base):
    def test_approval_opens_subscription_and_invoice(self):
        tier = self.tier(1000)
        token, uid = self.user()
        p = self.pocket(token)
        self.expect(self.req("GET", "/v1/pockets/%s/subscription" % p["id"], token=token),
                    404, "not_found")
        r = self.ask(token, p["id"], tier)
        self.assertEqual(r["status"], "pending")
        before = int(time.time())
        self.approve(r["id"])
        after = int(time.time())

        sub = self.subscription(token, p["id"])
        self.assertEqual((sub["status"], sub["tier_id"], sub["renewal"], sub["user_id"]),
                         ("active", tier, "manual", uid))
        self.assertTrue(sub["id"].startswith("sub_"))
        self.assertIsNone(sub["pending_tier_id"])
        self.assertIsNone(sub["canceled_at"])
        self.assertTrue(before <= sub["current_period_start"] <= after)
        self.assertTrue(MONTH_MIN <= sub["current_period_end"] - sub["current_period_start"]
                        <= MONTH_MAX)
        got = self.req("GET", "/v1/pockets/" + p["id"], token=token).body
        self.assertEqual(got["tier"]["id"], tier)

        invs = self.invoices(token)
        self.assertEqual(len(invs), 1)
        inv = invs[0]
        self.assertEqual((inv["kind"], inv["status"], inv["currency"], inv["total_minor"]),
                         ("subscription", "open", "USD", 1000))
        self.assertEqual((inv["user_id"], inv["pocket_id"], inv["subscription_id"]),
                         (uid, p["id"], sub["id"]))
        self.assertEqual((inv["period_start"], inv["period_end"]),
                         (sub["current_period_start"], sub["current_period_end"]))
        self.assertEqual(inv["due_at"], inv["finalized_at"] + 7 * 86400)
        self.assertEqual(len(inv["lines"]), 1)
        self.assertEqual(inv["lines"][0]["amount_minor"], 1000)
        for k in ("paid_at", "voided_at", "uncollectible_at", "provider", "provider_ref"):
            self.assertIsNone(inv[k], k)
        self.assertEqual(self.expect(self.req("GET", "/v1/invoices/" + inv["id"], token=token),
                                     200), inv)
        self.assertEqual([a for a, _ in self.db.audit("subscription.create", sub["id"])],
                         ["admin"])
        self.assertEqual(len(self.db.audit("invoice.open", inv["id"])), 1)
        detail = self.db.audit("invoice.create", inv["id"])[0][1]
        self.assertEqual((detail["user_id"], detail["total_minor"], detail["currency"]),
                         (uid, 1000, "USD"))
        approve = self.db.audit("tier_request.approve", r["id"])[0][1]
        self.assertEqual((approve["subscription_id"], approve["invoice_id"], approve["user_id"]),
                         (sub["id"], inv["id"], uid))

        # an admin marks it paid (a manual crypto payment)
        paid = self.mark_paid(inv["id"], body={"network": "eth", "tx_hash": ETH_HASH,
                                               "note": "seen on chain"})
        self.assertEqual((paid["status"], paid["provider"], paid["provider_ref"]),
                         ("paid", "crypto", ETH_HASH))
        self.assertIsNotNone(paid["paid_at"])
        _, d = self.db.audit("invoice.paid", inv["id"])[0]
        self.assertEqual((d["network"], d["note"], d["from"], d["to"]),
                         ("eth", "seen on chain", "open", "paid"))
        self.assertEqual(self.subscription(token, p["id"])["status"], "active")
        self.assertEqual(self.invoices(token, "?status=open"), [])
        self.assertEqual(len(self.invoices(token, "?status=paid")), 1)

    def test_pending_pocket_on_paid_tier(self):
        tier = self.tier(2500)
        token, _ = self.user()
        p = self.pocket(token, tier)
        self.assertEqual(p["status"], "pending")
        self.assertEqual(self.invoices(token), [])
        self.approve(p["pending_request"]["id"])
        got = self.req("GET", "/v1/pockets/" + p["id"], token=token).body
        self.assertEqual((got["status"], got["tier"]["id"]), ("active", tier))
        sub = self.subscription(token, p["id"])
        self.assertEqual(sub["status"], "active")
        invs = self.invoices(token)
        self.assertEqual([(i["kind"], i["status"], i["total_minor"]) for i in invs],
                         [("subscription", "open", 2500)])

    def test_paid_tier_without_approval(self):
        tier = self.tier(700, approval=False)
        token, _ = self.user()
        p = self.pocket(token, tier)
        self.assertEqual(p["status"], "active")
        self.assertEqual(self.subscription(token, p["id"])["tier_id"], tier)
        self.assertEqual([i["total_minor"] for i in self.invoices(token)], [700])

    def test_upgrade_is_prorated(self):
        token, _, pid, small = self.paid_tier_pocket(1000)
        big = self.tier(3000)
        sub = self.subscription(token, pid)
        self.approve(self.ask(token, pid, big)["id"])
        after = self.subscription(token, pid)
        self.assertEqual((after["tier_id"], after["pending_tier_id"]), (big, None))
        self.assertEqual(after["current_period_end"], sub["current_period_end"])
        self.assertEqual(self.req("GET", "/v1/pockets/" + pid, token=token)
                         .body["tier"]["id"], big)
        pro = [i for i in self.invoices(token) if i["kind"] == "proration"]
        self.assertEqual(len(pro), 1)
        inv = pro[0]
        start, end = sub["current_period_start"], sub["current_period_end"]
        # the documented rule: difference × remaining seconds / period seconds, rounded down
        expected = (3000 - 1000) * (end - inv["period_start"]) // (end - start)
        self.assertEqual(inv["total_minor"], expected)
        self.assertGreater(expected, 1900)  # almost the whole period is left
        self.assertEqual((inv["status"], inv["period_end"], inv["subscription_id"]),
                         ("open", end, sub["id"]))
        change = self.db.audit("subscription.change", sub["id"])[-1][1]
        self.assertEqual((change["from_tier"], change["to_tier"], change["proration_minor"]),
                         (small, big, expected))

    def test_downgrade_waits_for_period_end(self):
        token, _, pid, big = self.paid_tier_pocket(3000)
        small = self.tier(1000, max_bytes=1000, max_objects=10)
        sub = self.subscription(token, pid)
        n_invoices = len(self.invoices(token))
        self.approve(self.ask(token, pid, small)["id"])
        after = self.subscription(token, pid)
        self.assertEqual((after["tier_id"], after["pending_tier_id"], after["status"]),
                         (big, small, "active"))
        self.assertEqual(self.req("GET", "/v1/pockets/" + pid, token=token)
                         .body["tier"]["id"], big)
        self.assertEqual(len(self.invoices(token)), n_invoices)  # nothing charged now
        change = self.db.audit("subscription.change", sub["id"])[-1][1]
        self.assertEqual((change["pending_tier_id"], change["effective_at"]),
                         (small, sub["current_period_end"]))

    def test_downgrade_refused_while_usage_exceeds(self):
        token, _, pid, big = self.paid_tier_pocket(3000)
        small = self.tier(1000, max_bytes=1000, max_objects=10)
        # asked while it fits, then the pocket grows before the approval
        r = self.ask(token, pid, small)
        self.db.query("UPDATE pockets SET used_bytes = 5000, used_objects = 1 WHERE id = %s",
                      (pid,))
        before = self.db.snapshot()
        body = self.approve(r["id"], 409, "conflict")
        self.assertIn("holds more than", body["error"]["message"])
        self.assertEqual(self.db.snapshot(), before)
        self.assertEqual(self.subscription(token, pid)["pending_tier_id"], None)
        # and asked while it does not fit: refused at once
        self.db.query("UPDATE tier_requests SET status = 'canceled' WHERE id = %s", (r["id"],))
        self.expect(self.req("POST", "/v1/pockets/%s/tier-requests" % pid, {"tier": small},
                             token=token), 409, "conflict")

    def test_change_to_free_cancels_at_period_end(self):
        token, _, pid, tier = self.paid_tier_pocket(1000)
        r = self.ask(token, pid, "free")  # the free tier needs no approval
        self.assertEqual(r["status"], "approved")
        self.assertEqual(r["pocket"]["tier"]["id"], tier)  # until the period ends
        sub = self.subscription(token, pid)
        self.assertEqual((sub["status"], sub["tier_id"], sub["pending_tier_id"]),
                         ("active", tier, "free"))
        change = self.db.audit("subscription.change", sub["id"])[-1][1]
        self.assertTrue(change["cancel_at_period_end"])

    def test_other_currency_refused(self):
        token, _, pid, _ = self.paid_tier_pocket(1000)
        eur = self.tier(5000, currency="EUR")
        r = self.ask(token, pid, eur)
        before = self.db.snapshot()
        body = self.approve(r["id"], 409, "conflict")
        self.assertIn("EUR", body["error"]["message"])
        self.assertEqual(self.db.snapshot(), before)

    def test_tier_price_cap(self):
        before = self.db.snapshot()
        tid = "t-%s" % secrets.token_hex(4)
        body = {"id": tid, "name": "Huge", "max_bytes": 1 << 30, "max_objects": 10,
                "price_minor": 10 ** 12 + 1, "currency": "USD", "needs_approval": True}
        err = self.expect(self.req("POST", "/v1/admin/tiers", body, token=self.admin()), 400,
                          "invalid_request")
        self.assertIn("price_minor", err["error"]["message"])
        self.expect(self.req("GET", "/v1/admin/tiers", token=self.admin()), 200)
        ok = self.tier(10 ** 12)  # the cap itself is a valid price
        err = self.expect(self.req("PATCH", "/v1/admin/tiers/" + ok,
                                   {"price_minor": 10 ** 12 + 1}, token=self.admin()), 400,
                          "invalid_request")
        self.assertIn("price_minor", err["error"]["message"])
        self.assertEqual(self.db.snapshot(), before)

        # a tier priced past the cap before it existed: moving to it is a clear 409
        bad = self.tier(1000)
        free_bad = self.tier(1000, approval=False)
        self.db.query("UPDATE tiers SET price_minor = %s WHERE id IN (%s, %s)",
                      (str(10 ** 12 + 1), bad, free_bad))
        token, _ = self.user()
        p = self.pocket(token)
        r = self.ask(token, p["id"], bad)
        before = self.db.snapshot()
        err = self.approve(r["id"], 409, "conflict")
        self.assertIn("cannot be billed", err["error"]["message"])
        self.assertEqual(self.db.snapshot(), before)
        err = self.expect(self.req("POST", "/v1/pockets",
                                   {"name": "p" + secrets.token_hex(4), "tier": free_bad},
                                   token=token), 409, "conflict")
        self.assertIn("cannot be billed", err["error"]["message"])
        self.assertEqual(self.db.snapshot(), before)

    def test_renewal_mode(self):
        token, _, pid, _ = self.paid_tier_pocket()
        path = "/v1/pockets/%s/subscription" % pid
        s = self.expect(self.req("POST", path, {"renewal": "credit"}, token=token), 200)
        self.assertEqual(s["renewal"], "credit")
        self.assertEqual(self.db.audit("subscription.change", s["id"])[-1][1]["renewal"],
                         "credit")
        before = self.db.snapshot()
        for body in ({"renewal": "auto"}, {}, {"renewal": 1}, {"renewal": "credit", "x": 1}):
            self.expect(self.req("POST", path, body, token=token), 400, "invalid_request")
        stranger, _ = self.user()
        self.expect(self.req("POST", path, {"renewal": "manual"}, token=stranger), 404,
                    "not_found")
        self.expect(self.req("GET", path, token=stranger), 404, "not_found")
        self.expect(self.req("POST", "/v1/pockets/pkt_nope/subscription",
                             {"renewal": "manual"}, token=token), 404, "not_found")
        self.expect(self.req("GET", path), 401, "unauthenticated")
        self.assertEqual(self.db.snapshot(), before)

    def test_admin_cancel(self):
        token, uid, pid, _ = self.paid_tier_pocket()
        sub = self.subscription(token, pid)
        self.expect(self.req("POST", "/v1/admin/subscriptions/%s/cancel" % sub["id"], {},
                             token=token), 403, "forbidden")
        s = self.expect(self.req("POST", "/v1/admin/subscriptions/%s/cancel" % sub["id"],
                                 {"reason": "fraud"}, token=self.admin()), 200)
        self.assertEqual(s["status"], "canceled")
        self.assertIsNotNone(s["canceled_at"])
        self.assertEqual(self.req("GET", "/v1/pockets/" + pid, token=token)
                         .body["tier"]["id"], "free")
        before = self.db.snapshot()
        self.expect(self.req("POST", "/v1/admin/subscriptions/%s/cancel" % sub["id"], {},
                             token=self.admin()), 409, "invalid_state")
        self.expect(self.req("POST", "/v1/admin/subscriptions/sub_%s/cancel" % ("a" * 20), {},
                             token=self.admin()), 404, "not_found")
        self.expect(self.req("POST", "/v1/pockets/%s/subscription" % pid,
                             {"renewal": "credit"}, token=token), 409, "invalid_state")
        self.assertEqual(self.db.snapshot(), before)
        listed = self.expect(self.req("GET", "/v1/admin/subscriptions?status=canceled&user_id="
                                      + uid, token=self.admin()), 200)["subscriptions"]
        self.assertEqual([x["id"] for x in listed], [sub["id"]])
        self.assertEqual(self.db.audit("subscription.cancel", sub["id"])[0][1]["reason"],
                         "fraud")


class TestInvoices(Base):
    def manual(self, uid, lines=None, **extra):
        body = {"user_id": uid, "currency": "USD",
                "lines": lines if lines is not None else
                [{"description": "Setup", "amount_minor": 1200},
                 {"description": "Support", "amount_minor": 300}]}
        body.update(extra)
        return self.req("POST", "/v1/admin/invoices", body, token=self.admin())

    def act(self, inv_id, verb, status=200, code=None):
        return self.expect(self.req("POST", "/v1/admin/invoices/%s/%s" % (inv_id, verb), {},
                                    token=self.admin()), status, code)

    def test_state_machine(self):
        token, uid = self.user()
        inv = self.expect(self.manual(uid, due_days=3), 201)
        self.assertEqual((inv["kind"], inv["status"], inv["total_minor"], inv["due_at"]),
                         ("manual", "draft", 1500, None))
        self.assertEqual([l["description"] for l in inv["lines"]], ["Setup", "Support"])
        self.assertEqual(self.invoices(token)[0]["id"], inv["id"])  # the user sees it

        # illegal moves of a draft: 409 and nothing changes
        before = self.db.snapshot()
        for verb in ("void", "uncollectible"):
            body = self.act(inv["id"], verb, 409, "invalid_state")
            self.assertIn("draft", body["error"]["message"])
        self.mark_paid(inv["id"], 409, "invalid_state")
        self.assertEqual(self.db.snapshot(), before)

        opened = self.act(inv["id"], "finalize")
        self.assertEqual(opened["status"], "open")
        self.assertEqual(opened["due_at"], opened["finalized_at"] + 3 * 86400)
        before = self.db.snapshot()
        body = self.act(inv["id"], "finalize", 409, "invalid_state")
        self.assertIn("open", body["error"]["message"])
        self.assertEqual(self.db.snapshot(), before)

        un = self.act(inv["id"], "uncollectible")
        self.assertEqual(un["status"], "uncollectible")
        self.assertIsNotNone(un["uncollectible_at"])
        self.act(inv["id"], "uncollectible", 409, "invalid_state")
        paid = self.mark_paid(inv["id"])  # uncollectible → paid
        self.assertEqual(paid["status"], "paid")

        before = self.db.snapshot()
        body = self.act(inv["id"], "void", 409, "invalid_state")
        self.assertIn("paid", body["error"]["message"])
        self.assertIn("void", body["error"]["message"])
        self.mark_paid(inv["id"], 409, "invalid_state")
        self.act(inv["id"], "finalize", 409, "invalid_state")
        self.assertEqual(self.db.snapshot(), before)

        # open → void, then nothing more
        other = self.expect(self.manual(uid), 201)
        self.act(other["id"], "finalize")
        v = self.act(other["id"], "void")
        self.assertEqual(v["status"], "void")
        self.assertIsNotNone(v["voided_at"])
        before = self.db.snapshot()
        self.mark_paid(other["id"], 409, "invalid_state")
        for verb in ("void", "finalize", "uncollectible"):
            self.act(other["id"], verb, 409, "invalid_state")
        self.assertEqual(self.db.snapshot(), before)
        actions = [r[0] for r in self.db.query(
            "SELECT action FROM audit_log WHERE target_id = %s ORDER BY id", (inv["id"],))]
        self.assertEqual(actions, ["invoice.create", "invoice.open", "invoice.uncollectible",
                                   "invoice.paid"])

    def test_create_input(self):
        token, uid = self.user()
        other_token, other_uid = self.user()
        other_pocket = self.pocket(other_token)
        before = self.db.snapshot()
        bad = [
            [{"description": "x", "amount_minor": -1}],
            [{"description": "x", "amount_minor": 10 ** 12 + 1}],
            [{"description": "x", "amount_minor": 10 ** 12}, {"description": "y",
                                                              "amount_minor": 1}],
            [{"description": "x", "amount_minor": 1.5}],
            [{"description": "x", "amount_minor": "100"}],
            [{"description": "", "amount_minor": 1}],
            [{"description": "a\nb", "amount_minor": 1}],
            [{"description": "x" * 201, "amount_minor": 1}],
            [{"description": "x", "amount_minor": 1, "tax": 1}],
            [{"description": "x", "amount_minor": 0}],
            [{"description": "x", "amount_minor": 1}] * 101,
            [],
            ["x"],
        ]
        for lines in bad:
            self.expect(self.manual(uid, lines=lines), 400, "invalid_request")
        for extra in ({"currency": "usd"}, {"currency": "US"}, {"currency": "USDT"},
                      {"currency": 840}, {"due_days": -1}, {"due_days": 366},
                      {"surprise": True}):
            self.expect(self.manual(uid, **extra), 400, "invalid_request")
        r = self.req("POST", "/v1/admin/invoices", raw='{"user_id": "%s", "currency": "USD",'
                     ' "lines": [{"description": "x", "amount_minor": 1%s}]}' % (uid, "0" * 30),
                     token=self.admin())
        self.expect(r, 400, "invalid_request")
        self.expect(self.manual("usr_" + "a" * 20), 404, "not_found")
        self.expect(self.manual("nonsense"), 404, "not_found")
        self.expect(self.manual(uid, pocket_id=other_pocket["id"]), 404, "not_found")
        self.expect(self.req("POST", "/v1/admin/invoices",
                             {"user_id": uid, "currency": "USD",
                              "lines": [{"description": "x", "amount_minor": 1}]},
                             token=token), 403, "forbidden")
        self.assertEqual(self.db.snapshot(), before)
        self.assertEqual(other_uid != uid, True)

    def test_ids_and_ownership(self):
        token, uid = self.user()
        stranger, _ = self.user()
        inv = self.expect(self.manual(uid), 201)
        self.expect(self.req("GET", "/v1/invoices/" + inv["id"], token=stranger), 404,
                    "not_found")
        self.assertEqual(self.invoices(stranger), [])
        self.expect(self.req("GET", "/v1/invoices/" + inv["id"]), 401, "unauthenticated")
        for bad in ("inv_" + "a" * 20, "inv_x", "%27%3B--", "x" * 300):
            self.expect(self.req("GET", "/v1/invoices/" + bad, token=token), 404, "not_found")
            self.expect(self.req("GET", "/v1/admin/invoices/" + bad, token=self.admin()), 404,
                        "not_found")
            self.mark_paid(bad, 404, "not_found")
            self.act(bad, "void", 404, "not_found")
        self.assertEqual(self.expect(self.req("GET", "/v1/admin/invoices/" + inv["id"],
                                              token=self.admin()), 200)["id"], inv["id"])

    def test_admin_only(self):
        token, uid = self.user()
        inv = self.expect(self.manual(uid), 201)
        for method, path in (("GET", "/v1/admin/invoices"),
                             ("GET", "/v1/admin/invoices/" + inv["id"]),
                             ("POST", "/v1/admin/invoices/%s/finalize" % inv["id"]),
                             ("POST", "/v1/admin/invoices/%s/void" % inv["id"]),
                             ("POST", "/v1/admin/invoices/%s/uncollectible" % inv["id"]),
                             ("POST", "/v1/admin/invoices/%s/mark-paid" % inv["id"]),
                             ("GET", "/v1/admin/subscriptions"),
                             ("GET", "/v1/admin/users/%s/credits" % uid),
                             ("POST", "/v1/admin/users/%s/credits" % uid)):
            body = {} if method == "POST" else None
            self.expect(self.req(method, path, body, token=token), 403, "forbidden")
            self.expect(self.req(method, path, body), 401, "unauthenticated")

    def test_mark_paid_input(self):
        token, uid = self.user()
        inv = self.expect(self.manual(uid), 201)
        self.act(inv["id"], "finalize")
        before = self.db.snapshot()
        for body in ({}, {"network": "btc"}, {"tx_hash": BTC_HASH},
                     {"network": "doge", "tx_hash": BTC_HASH},
                     {"network": "btc", "tx_hash": "zz" * 32},
                     {"network": "btc", "tx_hash": ETH_HASH},
                     {"network": "eth", "tx_hash": BTC_HASH},
                     {"network": "other", "tx_hash": "a b"},
                     {"network": "other", "tx_hash": "x" * 129},
                     {"network": "btc", "tx_hash": BTC_HASH, "amount_minor": 1},
                     {"network": "btc", "tx_hash": BTC_HASH, "note": "a\x01"}):
            self.mark_paid(inv["id"], 400, "invalid_request", body=body)
        self.assertEqual(self.db.snapshot(), before)
        paid = self.mark_paid(inv["id"], body={"network": "other", "tx_hash": "bank:42"})
        self.assertEqual(paid["provider_ref"], "bank:42")

    def test_lists_filter_and_page(self):
        token, uid = self.user()
        ids = [self.expect(self.manual(uid), 201)["id"] for _ in range(5)]
        seen, cursor = [], None
        while True:
            q = "?limit=2&user_id=%s" % uid + ("&cursor=" + cursor if cursor else "")
            page = self.expect(self.req("GET", "/v1/admin/invoices" + q, token=self.admin()),
                               200)
            self.assertLessEqual(len(page["invoices"]), 2)
            seen += [i["id"] for i in page["invoices"]]
            cursor = page["next_cursor"]
            if not cursor:
                break
        self.assertEqual(sorted(seen), sorted(ids))
        self.assertEqual(len(seen), 5)
        mine = self.invoices(token, "?status=draft&limit=200")
        self.assertEqual(len(mine), 5)
        self.assertTrue(all(len(i["lines"]) == 2 for i in mine))
        for q in ("?limit=0", "?limit=201", "?limit=x", "?limit=-1", "?status=late",
                  "?cursor=abc", "?cursor=1.inv_x", "?cursor=.inv_" + "a" * 20):
            self.expect(self.req("GET", "/v1/invoices" + q, token=token), 400,
                        "invalid_request")
        self.expect(self.req("GET", "/v1/admin/invoices?user_id=bad", token=self.admin()),
                    400, "invalid_request")
        self.expect(self.req("GET", "/v1/admin/subscriptions?status=late",
                             token=self.admin()), 400, "invalid_request")


class TestCredit(Base):
    def test_top_up_and_grants(self):
        token, uid = self.user()
        c = self.expect(self.req("GET", "/v1/credits", token=token), 200)
        self.assertEqual((c["balances"], c["entries"]), ([], []))
        before = self.db.snapshot()
        for body in ({"amount_minor": -5, "currency": "USD"},
                     {"amount_minor": 0, "currency": "USD"},
                     {"amount_minor": 10 ** 12 + 1, "currency": "USD"},
                     {"amount_minor": 2 ** 63, "currency": "USD"},
                     {"amount_minor": 12.5, "currency": "USD"},
                     {"amount_minor": "500", "currency": "USD"},
                     {"amount_minor": 500, "currency": "usd"},
                     {"amount_minor": 500, "currency": "EURO"},
                     {"amount_minor": 500},
                     {"amount_minor": 500, "currency": "USD", "provider": "x"}):
            self.expect(self.req("POST", "/v1/credits/top-up", body, token=token), 400,
                        "invalid_request")
        self.assertEqual(self.db.snapshot(), before)

        inv = self.expect(self.req("POST", "/v1/credits/top-up",
                                   {"amount_minor": 5000, "currency": "USD"}, token=token), 201)
        self.assertEqual((inv["kind"], inv["status"], inv["total_minor"], inv["pocket_id"]),
                         ("credit", "open", 5000, None))
        self.assertEqual(self.expect(self.req("GET", "/v1/credits", token=token),
                                     200)["balances"], [])
        self.mark_paid(inv["id"])
        c = self.expect(self.req("GET", "/v1/credits", token=token), 200)
        self.assertEqual(c["balances"], [{"currency": "USD", "balance_minor": 5000}])
        self.assertEqual([(e["kind"], e["amount_minor"], e["invoice_id"]) for e in c["entries"]],
                         [("topup", 5000, inv["id"])])
        self.assertEqual(len(self.db.audit("credit.topup", uid)), 1)

        path = "/v1/admin/users/%s/credits" % uid
        g = self.expect(self.req("POST", path, {"amount_minor": 250, "currency": "USD",
                                                "reason": "apology"}, token=self.admin()), 201)
        self.assertEqual((g["kind"], g["amount_minor"], g["reason"]), ("grant", 250, "apology"))
        self.assertTrue(g["id"].startswith("crd_"))
        self.expect(self.req("POST", path, {"amount_minor": 99, "currency": "EUR",
                                            "reason": "euro"}, token=self.admin()), 201)
        c = self.expect(self.req("GET", path, token=self.admin()), 200)
        self.assertEqual(c["balances"], [{"currency": "EUR", "balance_minor": 99},
                                         {"currency": "USD", "balance_minor": 5250}])
        self.assertEqual(self.db.audit("credit.grant", uid)[0][1]["reason"], "apology")
        page = self.expect(self.req("GET", "/v1/credits?limit=2", token=token), 200)
        self.assertEqual(len(page["entries"]), 2)
        rest = self.expect(self.req("GET", "/v1/credits?limit=2&cursor=" + page["next_cursor"],
                                    token=token), 200)
        self.assertEqual(len(rest["entries"]), 1)
        self.assertIsNone(rest["next_cursor"])

        before = self.db.snapshot()
        for body in ({"amount_minor": 0, "currency": "USD", "reason": "x"},
                     {"amount_minor": -100, "currency": "USD", "reason": "x"},
                     {"amount_minor": 10 ** 13, "currency": "USD", "reason": "x"},
                     {"amount_minor": 100, "currency": "USD"},
                     {"amount_minor": 100, "currency": "USD", "reason": ""},
                     {"amount_minor": 100, "currency": "usd", "reason": "x"},
                     {"amount_minor": 100, "currency": "USD", "reason": "x", "kind": "debit"}):
            self.expect(self.req("POST", path, body, token=self.admin()), 400,
                        "invalid_request")
        good = {"amount_minor": 100, "currency": "USD", "reason": "x"}
        self.expect(self.req("POST", "/v1/admin/users/usr_%s/credits" % ("a" * 20), good,
                             token=self.admin()), 404, "not_found")
        self.expect(self.req("GET", "/v1/admin/users/nobody/credits", token=self.admin()),
                    404, "not_found")
        self.expect(self.req("POST", path, good, token=token), 403, "forbidden")
        self.assertEqual(self.db.snapshot(), before)

    def test_balance_cap(self):
        _, uid = self.user()
        # a balance near the cap, then a grant that would pass it
        self.db.query("INSERT INTO credit_entries (id, user_id, amount_minor, currency, kind,"
                      " reason, created_at) VALUES (%s, %s, 999999999999999, 'USD', 'grant',"
                      " 'seed', 1)", ("crd_" + secrets.token_hex(10), uid))
        before = self.db.snapshot()
        self.expect(self.req("POST", "/v1/admin/users/%s/credits" % uid,
                             {"amount_minor": 2, "currency": "USD", "reason": "x"},
                             token=self.admin()), 409, "conflict")
        self.assertEqual(self.db.snapshot(), before)

    def test_balance_cap_on_topup_payment(self):
        token, uid = self.user()
        inv = self.expect(self.req("POST", "/v1/credits/top-up",
                                   {"amount_minor": 5, "currency": "USD"}, token=token), 201)
        self.db.query("INSERT INTO credit_entries (id, user_id, amount_minor, currency, kind,"
                      " reason, created_at) VALUES (%s, %s, 999999999999998, 'USD', 'grant',"
                      " 'seed', 1)", ("crd_" + secrets.token_hex(10), uid))
        before = self.db.snapshot()
        err = self.mark_paid(inv["id"], 409, "conflict")
        self.assertIn("balance", err["error"]["message"])
        self.assertEqual(self.db.snapshot(), before)
        # within the cap it is paid
        self.db.query("DELETE FROM credit_entries WHERE user_id = %s", (uid,))
        self.assertEqual(self.mark_paid(inv["id"])["status"], "paid")
        self.assertEqual(self.expect(self.req("GET", "/v1/credits", token=token),
                                     200)["balances"],
                         [{"currency": "USD", "balance_minor": 5}])


class TestRenewals(Base):
    """On the fast daemon: renewals open at once, invoices are due at once,
    grace is 2 s and the job runs every second."""

    def wait_for(self, what, fn, timeout=20):
        deadline = time.time() + timeout
        while time.time() < deadline:
            v = fn()
            if v:
                return v
            time.sleep(0.25)
        self.fail("timed out waiting for " + what)

    def test_credit_renewal_pays_itself(self):
        tier = self.tier(1000)
        token, uid = self.user()
        self.expect(self.req("POST", "/v1/admin/users/%s/credits" % uid,
                             {"amount_minor": 2500, "currency": "USD", "reason": "prepaid"},
                             token=self.admin()), 201)
        p = self.pocket(token)
        r = self.ask(token, p["id"], tier)
        self.approve(r["id"])
        self.expect(self.req("POST", "/v1/pockets/%s/subscription" % p["id"],
                             {"renewal": "credit"}, token=token), 200)
        sub = self.subscription(token, p["id"])

        def both_paid():
            invs = self.invoices(token)
            return len(invs) == 2 and all(i["status"] == "paid" for i in invs) and invs
        invs = self.wait_for("the first and the renewal invoice paid from credit", both_paid)
        renewal = [i for i in invs if i["period_start"] == sub["current_period_end"]]
        self.assertEqual(len(renewal), 1)
        self.assertEqual(renewal[0]["period_end"] - renewal[0]["period_start"] >= MONTH_MIN,
                         True)
        self.assertTrue(all(i["provider"] == "credit" for i in invs))
        c = self.expect(self.req("GET", "/v1/credits", token=token), 200)
        self.assertEqual(c["balances"], [{"currency": "USD", "balance_minor": 500}])
        debits = sorted((e["invoice_id"], e["amount_minor"]) for e in c["entries"]
                        if e["kind"] == "debit")
        self.assertEqual(debits, sorted((i["id"], -1000) for i in invs))
        self.assertEqual(len(self.db.audit("credit.debit", uid)), 2)
        self.assertEqual(self.db.audit("invoice.paid", renewal[0]["id"])[0][0], "system")
        # what is left does not cover another invoice: it stays open
        time.sleep(1.5)
        self.assertEqual(len(self.invoices(token)), 2)
        sub = self.wait_for("active", lambda: (lambda s: s["status"] == "active" and s)(
            self.subscription(token, p["id"])))
        self.assertIsNone(self.req("GET", "/v1/pockets/" + p["id"], token=token)
                          .body["restriction"])

    def test_unpaid_renewal_goes_past_due_and_payment_restores(self):
        tier = self.tier(1000)
        token, uid = self.user()
        p = self.pocket(token)
        key = self.d.new_key(token, p["id"])["key"]
        self.approve(self.ask(token, p["id"], tier)["id"])
        sub = self.subscription(token, p["id"])
        self.wait_for("past_due", lambda: self.subscription(token, p["id"])["status"]
                      == "past_due")
        got = self.req("GET", "/v1/pockets/" + p["id"], token=token).body
        self.assertEqual(got["restriction"]["code"], "past_due")
        self.assertEqual(self.db.audit("subscription.past_due", sub["id"])[0][0], "system")

        s = self.expect(self.req("POST", "/v1/session", {}, token=key), 200)
        self.assertEqual(s["access"], "read-delete")
        self.expect(self.req("POST", "/v1/reservations", {"key": "a.txt", "bytes": 10},
                             token=key), 403, "read_only")

        invs = self.wait_for("the renewal invoice", lambda: (
            lambda v: len(v) == 2 and v)(self.invoices(token, "?status=open")))
        first = [i for i in invs if i["period_start"] == sub["current_period_start"]][0]
        renewal = [i for i in invs if i["period_start"] == sub["current_period_end"]][0]
        # paying one leaves the other overdue (once past its grace): still past due
        time.sleep(max(0, renewal["due_at"] + 2 + 1 - time.time()))
        self.mark_paid(first["id"])
        self.assertEqual(self.subscription(token, p["id"])["status"], "past_due")
        # paying the last restores it at once, in the same request
        self.mark_paid(renewal["id"])
        self.assertEqual(self.subscription(token, p["id"])["status"], "active")
        got = self.req("GET", "/v1/pockets/" + p["id"], token=token).body
        self.assertIsNone(got["restriction"])
        self.assertEqual(len(self.db.audit("subscription.restore", sub["id"])), 1)
        s = self.expect(self.req("POST", "/v1/session", {}, token=key), 200)
        self.assertEqual(s["access"], "rw")
        self.expect(self.req("POST", "/v1/reservations", {"key": "a.txt", "bytes": 10},
                             token=key), 201)
        # the job does not undo it
        time.sleep(2.5)
        self.assertEqual(self.subscription(token, p["id"])["status"], "active")

    def test_period_end_applies_scheduled_changes(self):
        big, small = self.tier(3000), self.tier(1000)
        token, _ = self.user()
        pid = self.pocket(token)["id"]
        self.approve(self.ask(token, pid, big)["id"])
        self.approve(self.ask(token, pid, small)["id"])
        sub = self.subscription(token, pid)
        self.assertEqual((sub["tier_id"], sub["pending_tier_id"]), (big, small))

        def renewals(start):
            return [i for i in self.invoices(token) if i["kind"] == "subscription"
                    and i["period_start"] == start and i["status"] != "void"]
        # the next period is invoiced at the price of the tier it will have
        nxt = self.wait_for("the renewal invoice", lambda: renewals(sub["current_period_end"]))
        self.assertEqual([i["total_minor"] for i in nxt], [1000])

        # the period ends (moved into the past in the database)
        end = int(time.time()) - 1
        self.db.query("UPDATE subscriptions SET current_period_start = %s,"
                      " current_period_end = %s WHERE id = %s", (end - 86400, end, sub["id"]))
        after = self.wait_for("the scheduled downgrade", lambda: (
            lambda s: s["tier_id"] == small and s)(self.subscription(token, pid)))
        self.assertIsNone(after["pending_tier_id"])
        self.assertEqual(after["current_period_start"], end)
        self.assertGreater(after["current_period_end"], end)
        self.assertEqual(self.req("GET", "/v1/pockets/" + pid, token=token)
                         .body["tier"]["id"], small)
        actor, detail = self.db.audit("subscription.change", sub["id"])[-1]
        self.assertEqual((actor, detail["from_tier"], detail["to_tier"]),
                         ("system", big, small))

        # a change to the free tier cancels the subscription when the period ends
        self.assertEqual(self.ask(token, pid, "free")["status"], "approved")
        self.assertEqual(self.subscription(token, pid)["pending_tier_id"], "free")
        end = int(time.time()) - 1
        self.db.query("UPDATE subscriptions SET current_period_start = %s,"
                      " current_period_end = %s WHERE id = %s", (end - 86400, end, sub["id"]))
        done = self.wait_for("the cancellation", lambda: (
            lambda s: s["status"] == "canceled" and s)(self.subscription(token, pid)))
        self.assertEqual((done["tier_id"], done["pending_tier_id"]), ("free", None))
        got = self.req("GET", "/v1/pockets/" + pid, token=token).body
        self.assertEqual(got["tier"]["id"], "free")
        self.assertIsNone(got["restriction"])
        self.assertEqual(self.db.audit("subscription.cancel", sub["id"])[-1][0], "system")

    def balance(self, token):
        bal = self.expect(self.req("GET", "/v1/credits", token=token), 200)["balances"]
        return sum(b["balance_minor"] for b in bal if b["currency"] == "USD")

    def next_period(self, token, pid):
        """The subscription and its paid renewal invoice for the next period."""
        sub = self.subscription(token, pid)
        nxt = self.wait_for("the renewal invoice", lambda: [
            i for i in self.invoices(token) if i["kind"] == "subscription"
            and i["period_start"] == sub["current_period_end"] and i["status"] == "open"])
        for inv in self.invoices(token, "?status=open"):
            self.mark_paid(inv["id"])
        return sub, nxt[0]

    def next_open(self, token, sub):
        """(kind, total) of the open invoices for the next period."""
        return sorted((i["kind"], i["total_minor"]) for i in self.invoices(token, "?status=open")
                      if i["period_start"] == sub["current_period_end"])

    def test_down_up_after_paid_renewal_mints_nothing(self):
        # two equally priced big tiers: a pocket cannot ask for the tier it is on
        bigs, small = (self.tier(3000), self.tier(3000)), self.tier(1000)
        token, _ = self.user()
        pid = self.pocket(token)["id"]
        self.approve(self.ask(token, pid, bigs[0])["id"])
        sub, renewal = self.next_period(token, pid)
        self.assertEqual(renewal["total_minor"], 3000)
        self.assertEqual(self.balance(token), 0)
        for cycle in range(2):
            big = bigs[1 - cycle % 2]
            # down (at the period's end): the excess paid for the next period comes back
            self.approve(self.ask(token, pid, small)["id"])
            self.assertEqual(self.subscription(token, pid)["pending_tier_id"], small)
            self.assertEqual(self.balance(token), 2000, cycle)
            self.assertEqual(self.next_open(token, sub), [], cycle)
            # and up again: the refund is owed back, the balance does not grow
            self.approve(self.ask(token, pid, big)["id"])
            self.assertEqual(self.subscription(token, pid)["pending_tier_id"], None)
            self.assertEqual(self.balance(token), 2000, cycle)
            self.assertEqual(self.next_open(token, sub), [("proration", 2000)], cycle)
        # that difference paid, the next period is settled at 3000 + 2000 - 2000
        pro = [i for i in self.invoices(token, "?status=open")
               if i["period_start"] == sub["current_period_end"]][0]
        self.mark_paid(pro["id"])
        self.approve(self.ask(token, pid, small)["id"])
        self.assertEqual(self.balance(token), 4000)
        self.assertEqual(self.next_open(token, sub), [])
        voided = [i for i in self.invoices(token, "?status=void") if i["kind"] == "proration"]
        self.assertEqual(len(voided), 1)

    def test_up_down_after_paid_renewal_leaves_nothing_owed(self):
        bigs, small = (self.tier(3000), self.tier(3000)), self.tier(1000)
        token, _ = self.user()
        pid = self.pocket(token)["id"]
        self.approve(self.ask(token, pid, small)["id"])
        sub, renewal = self.next_period(token, pid)
        self.assertEqual(renewal["total_minor"], 1000)
        for cycle in range(2):
            self.approve(self.ask(token, pid, bigs[cycle])["id"])  # at once
            self.assertEqual(self.next_open(token, sub), [("proration", 2000)], cycle)
            self.approve(self.ask(token, pid, small)["id"])  # at the period's end
            # the next period is spent on the small tier, paid already: nothing owed
            self.assertEqual(self.next_open(token, sub), [], cycle)
            self.assertEqual(self.balance(token), 0, cycle)

    def test_restarted_subscription_not_held_by_old_debts(self):
        tier = self.tier(500)
        token, uid = self.user()
        pid = self.pocket(token)["id"]
        self.approve(self.ask(token, pid, tier)["id"])
        sub = self.subscription(token, pid)
        self.expect(self.req("POST", "/v1/admin/subscriptions/%s/cancel" % sub["id"], {},
                             token=self.admin()), 200)
        old = self.invoices(token, "?status=open")
        self.assertTrue(old)
        time.sleep(2.5)  # the old invoices are past their grace now
        self.approve(self.ask(token, pid, tier)["id"])
        again = self.subscription(token, pid)
        self.assertEqual((again["id"], again["status"]), (sub["id"], "active"))
        old_ids = {i["id"] for i in old}

        def fresh_open():
            return [i for i in self.invoices(token, "?status=open") if i["id"] not in old_ids]
        # the restarted period's invoice and its renewal, paid
        invs = self.wait_for("the new invoices", lambda: (
            lambda v: len(v) == 2 and v)(fresh_open()))
        for inv in invs:
            self.mark_paid(inv["id"])
        self.assertEqual(self.subscription(token, pid)["status"], "active")
        time.sleep(3.5)  # job rounds with the old invoices overdue
        self.assertEqual(self.subscription(token, pid)["status"], "active")
        self.assertIsNone(self.req("GET", "/v1/pockets/" + pid, token=token)
                          .body["restriction"])
        # the old debts are still owed
        self.assertEqual({i["id"] for i in self.invoices(token, "?status=open")}, old_ids)

    def test_void_of_overdue_invoice_restores(self):
        tier = self.tier(400)
        token, _ = self.user()
        p = self.pocket(token)
        self.approve(self.ask(token, p["id"], tier)["id"])
        self.wait_for("past_due", lambda: self.subscription(token, p["id"])["status"]
                      == "past_due")
        invs = self.wait_for("two open invoices", lambda: (
            lambda v: len(v) == 2 and v)(self.invoices(token, "?status=open")))
        for inv in invs:
            self.expect(self.req("POST", "/v1/admin/invoices/%s/void" % inv["id"], {},
                                 token=self.admin()), 200)
        self.assertEqual(self.subscription(token, p["id"])["status"], "active")
        # a voided renewal is forgiven, not opened again
        time.sleep(2.5)
        self.assertEqual(self.invoices(token, "?status=open"), [])
        self.assertEqual(self.subscription(token, p["id"])["status"], "active")


def main():
    global IDLE, FAST
    harness.require_services()
    idle = harness.Daemon(billing__interval=3600)
    fast = harness.Daemon(billing__interval=1, billing__grace=2,
                          billing__renew_ahead=40 * 86400, billing__due_days=0)
    IDLE, FAST = (idle, Db(idle)), (fast, Db(fast))
    for cls in (TestSubscriptions, TestInvoices, TestCredit):
        cls.daemon_pair = IDLE
    TestRenewals.daemon_pair = FAST
    ok = alive = False
    daemons = (idle, fast)
    try:
        prog = unittest.main(exit=False, verbosity=2)
        ok = prog.result.wasSuccessful()
        alive = all(d.proc.poll() is None for d in daemons)
        if not alive:
            print("pockityd died:\n" + "\n".join(d.log()[-4000:] for d in daemons))
    finally:
        statuses = [d.stop() for d in daemons]
    for d, status in zip(daemons, statuses):
        log = d.log()
        if status != 0:
            print("pockityd exited with status %s:\n%s" % (status, log[-4000:]))
            ok = False
        if any(m in log for m in ("internal_error", "bug:", "runtime error:", "Sanitizer")):
            print("pockityd logged an internal error:\n" + log[-4000:])
            ok = False
        five = [line for line in log.splitlines() if re.search(r" /v1/\S* 5\d\d ", line)]
        if five:
            print("requests answered 5xx:\n" + "\n".join(five[:20]))
            ok = False
        warn = [line for line in log.splitlines() if "billing:" in line]
        if warn:
            print("billing job warnings:\n" + "\n".join(warn[:20]))
            ok = False
    return 0 if ok and alive else 1


if __name__ == "__main__":
    sys.exit(main())
