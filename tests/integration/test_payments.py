#!/usr/bin/env python3
"""Payments end to end: POST /v1/invoices/{id}/pay against a local stand-in of
Stripe, Razorpay and BTCPay (tests/tools/provider_standin.py), then the
providers' signed webhooks: what marks an invoice paid, and everything that
must be refused without changing anything (compared through the API and the
audit log before and after)."""

import hashlib
import hmac
import json
import os
import secrets
import sys
import threading
import time
import unittest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tools"))

import harness  # noqa: E402
from provider_standin import ProviderStandin  # noqa: E402

STRIPE_KEY = "sk_test_" + secrets.token_hex(8)
STRIPE_WHSEC = ["whsec_" + secrets.token_hex(16), "whsec_" + secrets.token_hex(16)]
RZP_ID, RZP_SECRET = "rzp_test_" + secrets.token_hex(4), "rzs_" + secrets.token_hex(12)
RZP_WHSEC = "rzw_" + secrets.token_hex(16)
BTC_KEY, BTC_STORE, BTC_WHSEC = "btk_" + secrets.token_hex(12), "Store" + secrets.token_hex(4), \
    "btw_" + secrets.token_hex(16)
ETH_ADDR = "0x" + secrets.token_hex(20)
USDC_ADDR = "0x" + secrets.token_hex(20)
PUBLIC_URL = "https://pockity.example"
MAX_BODY = 65536


def hexmac(key, data):
    return hmac.new(key.encode(), data, hashlib.sha256).hexdigest()


def stripe_header(body, secret=STRIPE_WHSEC[0], t=None):
    t = int(time.time()) if t is None else t
    return "t=%d,v1=%s" % (t, hexmac(secret, str(t).encode() + b"." + body))


def stripe_event(session_id, invoice_id, amount, currency="usd", event_id=None,
                 etype="checkout.session.completed", status="paid", pi=None):
    return json.dumps({
        "id": event_id or "evt_" + secrets.token_hex(8), "object": "event", "type": etype,
        "api_version": "2024-06-20", "created": int(time.time()),
        "data": {"object": {
            "id": session_id, "object": "checkout.session", "mode": "payment",
            "amount_total": amount, "currency": currency, "payment_status": status,
            "client_reference_id": invoice_id, "metadata": {"invoice_id": invoice_id},
            "payment_intent": pi or "pi_" + secrets.token_hex(8), "status": "complete"}},
    }).encode()


def razorpay_event(order_id, amount, currency="INR", payment_id=None, etype="payment.captured"):
    payment = {"id": payment_id or "pay_" + secrets.token_hex(7), "entity": "payment",
               "amount": amount, "currency": currency, "status": "captured",
               "order_id": order_id, "method": "upi", "captured": True}
    payload = {"payment": {"entity": payment}}
    if etype == "order.paid":
        payload["order"] = {"entity": {"id": order_id, "entity": "order", "amount": amount,
                                       "currency": currency, "status": "paid"}}
    return json.dumps({"entity": "event", "account_id": "acc_test", "event": etype,
                       "contains": list(payload), "payload": payload,
                       "created_at": int(time.time())}).encode()


def btcpay_event(btc_invoice_id, etype="InvoiceSettled", webhook_id="Wh1"):
    return json.dumps({"deliveryId": secrets.token_hex(8), "webhookId": webhook_id,
                       "originalDeliveryId": secrets.token_hex(8), "isRedelivery": False,
                       "type": etype, "timestamp": int(time.time()), "storeId": BTC_STORE,
                       "invoiceId": btc_invoice_id, "manuallyMarked": False}).encode()


class PaymentsTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        harness.require_services()
        cls.standin = ProviderStandin(stripe_key=STRIPE_KEY, razorpay_key=(RZP_ID, RZP_SECRET),
                                      btcpay_key=BTC_KEY, btcpay_store=BTC_STORE).start()
        s = cls.standin.url
        cls.d = harness.Daemon(
            server__public_url=PUBLIC_URL, server__max_body=MAX_BODY,
            stripe__api_base=s, stripe__secret_key=STRIPE_KEY,
            stripe__webhook_secret=",".join(STRIPE_WHSEC),
            razorpay__api_base=s + "/", razorpay__key_id=RZP_ID,
            razorpay__key_secret=RZP_SECRET, razorpay__webhook_secret=RZP_WHSEC,
            btcpay__url=s, btcpay__api_key=BTC_KEY, btcpay__store_id=BTC_STORE,
            btcpay__webhook_secret=BTC_WHSEC,
            crypto__eth_address=ETH_ADDR, crypto__usdc_address=USDC_ADDR,
            # subscription invoices fall due at once and past due at the next round
            billing__due_days=0, billing__grace=0, billing__interval=1)
        cls.admin = cls.d.admin_token()

    @classmethod
    def tearDownClass(cls):
        cls.d.stop()
        log = cls.d.log()
        cls.standin.stop()
        for secret in [STRIPE_KEY, RZP_SECRET, RZP_WHSEC, BTC_KEY, BTC_WHSEC] + STRIPE_WHSEC:
            assert secret not in log, "a secret reached the log"
        assert "v1=" not in log and "sha256=" not in log, "a signature reached the log"

    # -- helpers --

    def user(self):
        token, user, _, _ = self.d.new_user()
        return token, user["id"]

    def invoice(self, user_id, amount=1234, currency="USD", finalize=True):
        r = self.d.request("POST", "/v1/admin/invoices",
                           {"user_id": user_id, "currency": currency,
                            "lines": [{"description": "storage", "amount_minor": amount}]},
                           token=self.admin)
        self.assertEqual(r.status, 201, r)
        inv = r.body["id"]
        if finalize:
            r = self.d.request("POST", "/v1/admin/invoices/%s/finalize" % inv, {},
                               token=self.admin)
            self.assertEqual(r.status, 200, r)
            self.assertEqual(r.body["status"], "open")
        return inv

    def pay(self, token, inv, provider, status=200):
        r = self.d.request("POST", "/v1/invoices/%s/pay" % inv, {"provider": provider},
                           token=token)
        self.assertEqual(r.status, status, r)
        return r.body

    def snapshot(self, token, inv):
        """What a refusal must not change: the invoice, its payment attempts and
        recorded webhook events, the user's credit and the whole audit log."""
        r = self.d.request("GET", "/v1/invoices/%s" % inv, token=token)
        self.assertEqual(r.status, 200, r)
        audit = self.d.request("GET", "/v1/admin/audit?limit=1000", token=self.admin)
        self.assertEqual(audit.status, 200, audit)
        return (r.body, [e["id"] for e in audit.body["entries"]], self.payments(inv),
                self.credits(token))

    def payments(self, inv):
        r = self.d.request("GET", "/v1/admin/invoices/%s/payments" % inv, token=self.admin)
        self.assertEqual(r.status, 200, r)
        self.assertEqual(r.body["invoice_id"], inv)
        return r.body

    def credits(self, token):
        r = self.d.request("GET", "/v1/credits", token=token)
        self.assertEqual(r.status, 200, r)
        return r.body

    def audit_rows(self, action, target):
        r = self.d.request("GET", "/v1/admin/audit?action=%s&target_id=%s&limit=1000"
                           % (action, target), token=self.admin)
        self.assertEqual(r.status, 200, r)
        return r.body["entries"]

    def paid_rows(self, inv):
        r = self.d.request("GET", "/v1/admin/audit?action=invoice.paid&target_id=" + inv
                           + "&limit=1000", token=self.admin)
        self.assertEqual(r.status, 200, r)
        return r.body["entries"]

    def stripe_hook(self, body, header=None, headers=None):
        h = {"Content-Type": "application/json"}
        if header is not None:
            h["Stripe-Signature"] = header
        h.update(headers or {})
        return self.d.request("POST", "/v1/webhooks/stripe", raw=body, headers=h)

    def razorpay_hook(self, body, sig=None, event_id=None, secret=RZP_WHSEC):
        h = {"Content-Type": "application/json",
             "X-Razorpay-Signature": sig if sig is not None else hexmac(secret, body)}
        if event_id:
            h["X-Razorpay-Event-Id"] = event_id
        return self.d.request("POST", "/v1/webhooks/razorpay", raw=body, headers=h)

    def btcpay_hook(self, body, sig=None, secret=BTC_WHSEC):
        h = {"Content-Type": "application/json",
             "BTCPay-Sig": sig if sig is not None else "sha256=" + hexmac(secret, body)}
        return self.d.request("POST", "/v1/webhooks/btcpay", raw=body, headers=h)

    def stripe_session(self, token, inv):
        """Pay with Stripe; return (session id, the request the stand-in got)."""
        before = len(self.standin.requests("stripe"))
        body = self.pay(token, inv, "stripe")
        reqs = self.standin.requests("stripe")[before:]
        self.assertEqual(len(reqs), 1, reqs)
        sid = reqs[0]["response"]["id"]
        self.assertEqual(body["checkout_url"], reqs[0]["response"]["url"])
        return sid, reqs[0]

    # -- Stripe --

    def test_stripe_pay_then_webhook(self):
        token, uid = self.user()
        inv = self.invoice(uid, 1234, "USD")
        sid, req = self.stripe_session(token, inv)
        self.assertEqual(req["method"], "POST")
        self.assertEqual(req["path"], "/v1/checkout/sessions")
        self.assertEqual(req["headers"]["authorization"], "Bearer " + STRIPE_KEY)
        self.assertTrue(req["headers"].get("idempotency-key"))
        f = req["form"]
        self.assertEqual(f["mode"], "payment")
        self.assertEqual(f["line_items[0][price_data][currency]"], "usd")
        self.assertEqual(f["line_items[0][price_data][unit_amount]"], "1234")
        self.assertIn(inv, f["line_items[0][price_data][product_data][name]"])
        self.assertEqual(f["line_items[0][quantity]"], "1")
        self.assertEqual(f["client_reference_id"], inv)
        self.assertEqual(f["metadata[invoice_id]"], inv)
        self.assertTrue(f["success_url"].startswith(PUBLIC_URL + "/"))
        self.assertTrue(f["cancel_url"].startswith(PUBLIC_URL + "/"))

        body = stripe_event(sid, inv, 1234, "usd", pi="pi_paid1")
        # the second configured secret (rotation) is accepted
        r = self.stripe_hook(body, stripe_header(body, STRIPE_WHSEC[1]))
        self.assertEqual(r.status, 200, r)
        self.assertEqual(r.body.get("status"), "paid")
        self.assertEqual(r.body.get("invoice_id"), inv)
        got = self.d.request("GET", "/v1/invoices/%s" % inv, token=token).body
        self.assertEqual(got["status"], "paid")
        self.assertEqual(got["provider"], "stripe")
        self.assertEqual(got["provider_ref"], "pi_paid1")
        self.assertEqual(len(self.paid_rows(inv)), 1)

        # a replay: 200 duplicate, nothing changes
        before = self.snapshot(token, inv)
        r = self.stripe_hook(body, stripe_header(body))
        self.assertEqual(r.status, 200, r)
        self.assertIs(r.body.get("duplicate"), True)
        self.assertEqual(self.snapshot(token, inv), before)

    def test_stripe_signature_refusals(self):
        token, uid = self.user()
        inv = self.invoice(uid, 500, "EUR")
        sid, _ = self.stripe_session(token, inv)
        body = stripe_event(sid, inv, 500, "eur")
        now = int(time.time())
        before = self.snapshot(token, inv)
        cases = [
            ("wrong secret", stripe_header(body, "whsec_" + "0" * 32), 401),
            ("missing header", None, 401),
            ("empty header", "", 401),
            ("garbage header", "garbage", 400),
            ("no timestamp", "v1=" + hexmac(STRIPE_WHSEC[0], body), 400),
            ("stale timestamp", stripe_header(body, t=now - 400), 401),
            ("future timestamp", stripe_header(body, t=now + 400), 401),
            ("only v0", stripe_header(body).replace("v1=", "v0="), 401),
        ]
        for name, header, status in cases:
            with self.subTest(name):
                r = self.stripe_hook(body, header)
                self.assertEqual(r.status, status, r)
                self.assertIn(r.body["error"]["code"],
                              ("unauthenticated", "invalid_request"))
        # a signed body altered afterwards (the amount lowered)
        header = stripe_header(body)
        r = self.stripe_hook(body.replace(b'"amount_total": 500', b'"amount_total": 5'), header)
        self.assertEqual(r.status, 401, r)
        self.assertEqual(self.snapshot(token, inv), before)
        # a valid one still works afterwards: the refusals recorded nothing
        r = self.stripe_hook(body, stripe_header(body))
        self.assertEqual(r.status, 200, r)
        self.assertEqual(r.body.get("status"), "paid")
        # several v1 values, the matching one last
        body2 = stripe_event(sid, inv, 500, "eur")
        t = int(time.time())
        header = "t=%d, v1=%s, v1=%s" % (t, "ab" * 32, hexmac(STRIPE_WHSEC[0],
                                                                 b"%d." % t + body2))
        r = self.stripe_hook(body2, header)
        # a valid signature: another payment of a paid invoice goes to credit
        self.assertEqual(r.status, 200, r)
        self.assertIs(r.body.get("unapplied"), True)
        self.assertEqual(self.credits(token)["balances"],
                         [{"currency": "EUR", "balance_minor": 500}])

    def test_stripe_event_refusals(self):
        token, uid = self.user()
        inv = self.invoice(uid, 2500, "USD")
        sid, _ = self.stripe_session(token, inv)
        sid2, _ = self.stripe_session(token, inv)  # a second attempt on the same invoice
        other_token, other_uid = self.user()
        other_inv = self.invoice(other_uid, 2500, "USD")
        before = self.snapshot(token, inv)
        cases = [
            ("wrong amount", stripe_event(sid, inv, 2499), 400, "amount_mismatch"),
            ("wrong currency", stripe_event(sid, inv, 2500, "eur"), 400, "amount_mismatch"),
            ("unknown session", stripe_event("cs_test_unknown", inv, 2500), 400,
             "unknown_invoice"),
            ("another invoice", stripe_event(sid, other_inv, 2500), 400, "unknown_invoice"),
            ("not json", b"{not json", 400, "invalid_request"),
            ("no id", json.dumps({"type": "checkout.session.completed"}).encode(), 400,
             "invalid_request"),
        ]
        for name, body, status, code in cases:
            with self.subTest(name):
                r = self.stripe_hook(body, stripe_header(body))
                self.assertEqual(r.status, status, r)
                self.assertEqual(r.body["error"]["code"], code)
        self.assertEqual(self.snapshot(token, inv), before)
        self.assertEqual(self.d.request("GET", "/v1/invoices/" + other_inv,
                                        token=other_token).body["status"], "open")

        # an event that does not mean paid: recorded and ignored
        body = stripe_event(sid, inv, 2500, status="unpaid")
        r = self.stripe_hook(body, stripe_header(body))
        self.assertEqual(r.status, 200, r)
        self.assertIs(r.body.get("ignored"), True)
        body = json.dumps({"id": "evt_" + secrets.token_hex(6), "type": "customer.created",
                           "data": {"object": {"id": "cus_1"}}}).encode()
        r = self.stripe_hook(body, stripe_header(body))
        self.assertIs(r.body.get("ignored"), True)
        r = self.stripe_hook(body, stripe_header(body))
        self.assertIs(r.body.get("duplicate"), True)
        self.assertEqual(self.snapshot(token, inv)[0], before[0])

        # paid through the first session; the second session's payment is kept
        # as credit, the invoice stays as the first payment left it
        body = stripe_event(sid, inv, 2500, pi="pi_first")
        self.assertEqual(self.stripe_hook(body, stripe_header(body)).status, 200)
        paid = self.d.request("GET", "/v1/invoices/" + inv, token=token).body
        self.assertEqual(self.credits(token)["balances"], [])
        body = stripe_event(sid2, inv, 2500, pi="pi_second")
        r = self.stripe_hook(body, stripe_header(body))
        self.assertEqual(r.status, 200, r)
        self.assertEqual(r.body, {"received": True, "unapplied": True, "invoice_id": inv})
        self.assertEqual(self.d.request("GET", "/v1/invoices/" + inv, token=token).body, paid)
        self.assert_unapplied(token, uid, inv, "stripe", "pi_second", 2500, "USD", sid2)
        self.assertEqual(len(self.paid_rows(inv)), 1)
        # its replay changes nothing
        before = self.snapshot(token, inv)
        r = self.stripe_hook(body, stripe_header(body))
        self.assertIs(r.body.get("duplicate"), True)
        self.assertEqual(self.snapshot(token, inv), before)

    def assert_unapplied(self, token, uid, inv, provider, payment_ref, amount, currency, ref,
                         balance=None):
        """One payment of inv recorded as unapplied: the attempt paid, the event
        recorded, a top-up tied to no invoice, both audited."""
        c = self.credits(token)
        self.assertIn({"currency": currency, "balance_minor": balance or amount}, c["balances"])
        tops = [e for e in c["entries"] if e["kind"] == "topup" and e["invoice_id"] is None
                and inv in e["reason"] and payment_ref in e["reason"]]
        self.assertEqual([(e["amount_minor"], e["currency"]) for e in tops], [(amount, currency)])
        pays = self.payments(inv)
        att = [a for a in pays["attempts"] if a["provider_ref"] == ref]
        self.assertEqual([(a["status"], a["paid_ref"]) for a in att], [("paid", payment_ref)])
        ev = [e for e in pays["events"] if e["payment_ref"] == payment_ref]
        self.assertEqual([(e["provider"], e["outcome"]) for e in ev], [(provider, "unapplied")])
        un = self.audit_rows("payment.unapplied", inv)
        self.assertEqual(len(un), 1, un)
        self.assertEqual((un[0]["actor_type"], un[0]["detail"]["user_id"],
                          un[0]["detail"]["total_minor"], un[0]["detail"]["currency"],
                          un[0]["detail"]["payment_ref"], un[0]["detail"]["credited"]),
                         ("system", uid, amount, currency, payment_ref, True))
        topped = [e for e in self.audit_rows("credit.topup", uid)
                  if e["detail"].get("entry_id") == un[0]["detail"]["credit_entry_id"]]
        self.assertEqual(len(topped), 1)

    def test_unapplied_payments(self):
        """A verified payment for an invoice that can no longer take it goes to credit."""
        token, uid = self.user()
        # voided after the session was opened
        inv = self.invoice(uid, 900, "USD")
        sid, _ = self.stripe_session(token, inv)
        r = self.d.request("POST", "/v1/admin/invoices/%s/void" % inv, {}, token=self.admin)
        self.assertEqual(r.status, 200, r)
        voided = self.d.request("GET", "/v1/invoices/" + inv, token=token).body
        body = stripe_event(sid, inv, 900, pi="pi_void")
        r = self.stripe_hook(body, stripe_header(body))
        self.assertEqual((r.status, r.body.get("unapplied")), (200, True), r)
        self.assertEqual(self.d.request("GET", "/v1/invoices/" + inv, token=token).body, voided)
        self.assert_unapplied(token, uid, inv, "stripe", "pi_void", 900, "USD", sid)
        # an amount that does not match is still refused, and records nothing
        inv2 = self.invoice(uid, 400, "USD")
        sid2, _ = self.stripe_session(token, inv2)
        r = self.d.request("POST", "/v1/admin/invoices/%s/void" % inv2, {}, token=self.admin)
        before = self.snapshot(token, inv2)
        body = stripe_event(sid2, inv2, 399)
        r = self.stripe_hook(body, stripe_header(body))
        self.assertEqual((r.status, r.body["error"]["code"]), (400, "amount_mismatch"))
        self.assertEqual(self.snapshot(token, inv2), before)

        # paid by an admin meanwhile (Razorpay this time; both events of the payment)
        inv = self.invoice(uid, 7000, "INR")
        order_id = self.pay(token, inv, "razorpay")["order"]["id"]
        r = self.d.request("POST", "/v1/admin/invoices/%s/mark-paid" % inv,
                           {"network": "btc", "tx_hash": "ab" * 32}, token=self.admin)
        self.assertEqual(r.status, 200, r)
        paid = self.d.request("GET", "/v1/invoices/" + inv, token=token).body
        r = self.razorpay_hook(razorpay_event(order_id, 7000, payment_id="pay_late"))
        self.assertEqual((r.status, r.body.get("unapplied")), (200, True), r)
        r = self.razorpay_hook(razorpay_event(order_id, 7000, payment_id="pay_late",
                                              etype="order.paid"))
        self.assertEqual((r.status, r.body.get("duplicate")), (200, True), r)
        self.assertEqual(self.d.request("GET", "/v1/invoices/" + inv, token=token).body, paid)
        self.assert_unapplied(token, uid, inv, "razorpay", "pay_late", 7000, "INR", order_id)

        # a credit top-up invoice paid twice: the second payment is a top-up of its own
        # (tied to no invoice, so the ledger's one-top-up-per-invoice rule holds)
        r = self.d.request("POST", "/v1/credits/top-up", {"amount_minor": 300, "currency": "EUR"},
                           token=token)
        self.assertEqual(r.status, 201, r)
        top = r.body["id"]
        s1, _ = self.stripe_session(token, top)
        s2, _ = self.stripe_session(token, top)
        for sid, pi in ((s1, "pi_top1"), (s2, "pi_top2")):
            body = stripe_event(sid, top, 300, "eur", pi=pi)
            self.assertEqual(self.stripe_hook(body, stripe_header(body)).status, 200)
        self.assert_unapplied(token, uid, top, "stripe", "pi_top2", 300, "EUR", s2, balance=600)
        self.assertEqual(len([e for e in self.credits(token)["entries"]
                              if e["invoice_id"] == top]), 1)

    def test_stripe_concurrent_deliveries(self):
        token, uid = self.user()
        inv = self.invoice(uid, 777, "USD")
        sid, _ = self.stripe_session(token, inv)
        body = stripe_event(sid, inv, 777)
        header = stripe_header(body)
        results = []
        barrier = threading.Barrier(8)

        def deliver():
            barrier.wait()
            results.append(self.stripe_hook(body, header))

        threads = [threading.Thread(target=deliver) for _ in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        self.assertEqual([r.status for r in results], [200] * 8, results)
        applied = [r for r in results if r.body.get("status") == "paid"]
        dups = [r for r in results if r.body.get("duplicate") is True]
        self.assertEqual((len(applied), len(dups)), (1, 7), results)
        self.assertEqual(len(self.paid_rows(inv)), 1)

    def test_body_too_large(self):
        body = b'{"id":"evt_big","type":"x","pad":"' + b"a" * (MAX_BODY + 10) + b'"}'
        r = self.stripe_hook(body, stripe_header(body))
        self.assertEqual(r.status, 413, r)

    # -- Razorpay --

    def test_razorpay(self):
        token, uid = self.user()
        inv = self.invoice(uid, 50000, "INR")
        before = len(self.standin.requests("razorpay"))
        out = self.pay(token, inv, "razorpay")
        reqs = self.standin.requests("razorpay")[before:]
        self.assertEqual(len(reqs), 1)
        req = reqs[0]
        self.assertEqual((req["method"], req["path"]), ("POST", "/v1/orders"))
        self.assertEqual(req["json"], {"amount": 50000, "currency": "INR", "receipt": inv,
                                       "notes": {"invoice_id": inv}})
        order_id = req["response"]["id"]
        self.assertEqual(out["order"], {"id": order_id, "amount": 50000, "currency": "INR",
                                        "key_id": RZP_ID})
        self.assertEqual((out["amount_minor"], out["currency"]), (50000, "INR"))

        before = self.snapshot(token, inv)
        body = razorpay_event(order_id, 50000, payment_id="pay_rz1")
        for name, kwargs, status in [
                ("bad signature", {"secret": "other"}, 401),
                ("empty signature", {"sig": ""}, 401),
                ("malformed signature", {"sig": "xyz"}, 400)]:
            with self.subTest(name):
                self.assertEqual(self.razorpay_hook(body, event_id="evt_rz1", **kwargs).status,
                                 status)
        r = self.d.request("POST", "/v1/webhooks/razorpay", raw=body,
                           headers={"Content-Type": "application/json"})
        self.assertEqual(r.status, 401, r)
        wrong = razorpay_event(order_id, 49999)
        r = self.razorpay_hook(wrong, event_id="evt_rz_wrong")
        self.assertEqual((r.status, r.body["error"]["code"]), (400, "amount_mismatch"))
        wrong = razorpay_event(order_id, 50000, currency="USD")
        r = self.razorpay_hook(wrong, event_id="evt_rz_wrong2")
        self.assertEqual((r.status, r.body["error"]["code"]), (400, "amount_mismatch"))
        wrong = razorpay_event("order_unknown", 50000)
        r = self.razorpay_hook(wrong, event_id="evt_rz_wrong3")
        self.assertEqual((r.status, r.body["error"]["code"]), (400, "unknown_invoice"))
        self.assertEqual(self.snapshot(token, inv), before)

        r = self.razorpay_hook(body, event_id="evt_rz1")
        self.assertEqual(r.status, 200, r)
        self.assertEqual(r.body.get("status"), "paid")
        got = self.d.request("GET", "/v1/invoices/" + inv, token=token).body
        self.assertEqual((got["status"], got["provider"], got["provider_ref"]),
                         ("paid", "razorpay", "pay_rz1"))
        # a replay changes nothing
        before = self.snapshot(token, inv)
        r = self.razorpay_hook(body, event_id="evt_rz1")
        self.assertIs(r.body.get("duplicate"), True)
        self.assertEqual(self.snapshot(token, inv), before)
        # order.paid for the same payment: recorded, but the payment applies once
        r = self.razorpay_hook(razorpay_event(order_id, 50000, payment_id="pay_rz1",
                                              etype="order.paid"), event_id="evt_rz2")
        self.assertEqual(r.status, 200, r)
        self.assertIs(r.body.get("duplicate"), True)
        before = self.snapshot(token, inv)
        # the key comes from the signed body: without the header, or with a fresh
        # one, a replay is the same event
        r = self.razorpay_hook(body)
        self.assertIs(r.body.get("duplicate"), True)
        r = self.razorpay_hook(body, event_id="evt_fresh_" + secrets.token_hex(4))
        self.assertIs(r.body.get("duplicate"), True)
        self.assertEqual(self.snapshot(token, inv), before)
        self.assertEqual(len(self.paid_rows(inv)), 1)
        self.assertEqual(sorted((e["event_id"], e["outcome"])
                                for e in self.payments(inv)["events"]),
                         [("order.paid:pay_rz1", "ignored"), ("payment.captured:pay_rz1", "paid")])
        # so is an event that means nothing here, replayed under a fresh header
        failed = razorpay_event(order_id, 50000, payment_id="pay_rz_failed",
                                etype="payment.failed")
        r = self.razorpay_hook(failed, event_id="evt_f1")
        self.assertIs(r.body.get("ignored"), True, r)
        r = self.razorpay_hook(failed, event_id="evt_f2")
        self.assertIs(r.body.get("duplicate"), True, r)

    def test_razorpay_concurrent_events_of_one_payment(self):
        """payment.captured and order.paid of one payment, each delivered 4 times at once."""
        token, uid = self.user()
        inv = self.invoice(uid, 1500, "INR")
        order_id = self.pay(token, inv, "razorpay")["order"]["id"]
        captured = razorpay_event(order_id, 1500, payment_id="pay_cc1")
        paid = razorpay_event(order_id, 1500, payment_id="pay_cc1", etype="order.paid")
        results = []
        barrier = threading.Barrier(8)

        def deliver(body, event_id):
            barrier.wait()
            results.append(self.razorpay_hook(body, event_id=event_id))

        threads = [threading.Thread(target=deliver, args=(captured, "evt_cc_a"))
                   for _ in range(4)]
        threads += [threading.Thread(target=deliver, args=(paid, "evt_cc_b")) for _ in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        self.assertEqual([r.status for r in results], [200] * 8, results)
        self.assertEqual(len([r for r in results if r.body.get("status") == "paid"]), 1)
        self.assertEqual(len(self.paid_rows(inv)), 1)

    # -- BTCPay --

    def test_btcpay(self):
        token, uid = self.user()
        inv = self.invoice(uid, 1234, "USD")
        before = len(self.standin.requests("btcpay"))
        out = self.pay(token, inv, "btcpay")
        reqs = self.standin.requests("btcpay")[before:]
        self.assertEqual(len(reqs), 1)
        req = reqs[0]
        self.assertEqual((req["method"], req["path"]),
                         ("POST", "/api/v1/stores/%s/invoices" % BTC_STORE))
        self.assertEqual(req["headers"]["authorization"], "token " + BTC_KEY)
        self.assertEqual(req["json"], {"amount": "12.34", "currency": "USD",
                                       "metadata": {"orderId": inv}})
        bid = req["response"]["id"]
        self.assertEqual(out["btcpay_invoice_id"], bid)
        self.assertEqual(out["checkout_link"], req["response"]["checkoutLink"])

        before = self.snapshot(token, inv)
        body = btcpay_event(bid)
        self.assertEqual(self.btcpay_hook(body, secret="other").status, 401)
        self.assertEqual(self.btcpay_hook(body, sig=hexmac(BTC_WHSEC, body)).status, 400)
        r = self.d.request("POST", "/v1/webhooks/btcpay", raw=body,
                           headers={"Content-Type": "application/json"})
        self.assertEqual(r.status, 401, r)
        # BTCPay says settled but its invoice is not: refused, nothing changes
        r = self.btcpay_hook(body)
        self.assertEqual((r.status, r.body["error"]["code"]), (409, "invalid_state"))
        self.standin.btcpay_set(bid, status="Settled", amount="12.00")
        r = self.btcpay_hook(body)
        self.assertEqual((r.status, r.body["error"]["code"]), (400, "amount_mismatch"))
        self.standin.btcpay_set(bid, amount="12.34", currency="EUR")
        r = self.btcpay_hook(body)
        self.assertEqual((r.status, r.body["error"]["code"]), (400, "amount_mismatch"))
        r = self.btcpay_hook(btcpay_event("UnknownInvoice1"))
        self.assertEqual((r.status, r.body["error"]["code"]), (400, "unknown_invoice"))
        self.assertEqual(self.snapshot(token, inv), before)

        self.standin.btcpay_set(bid, currency="USD")
        self.standin.fail_next("btcpay", 502)
        self.standin.fail_next("btcpay", 502)
        r = self.btcpay_hook(body)
        self.assertEqual((r.status, r.body["error"]["code"]), (503, "provider_error"))
        self.assertEqual(self.snapshot(token, inv), before)

        n = len(self.standin.requests("btcpay"))
        r = self.btcpay_hook(body)
        self.assertEqual(r.status, 200, r)
        self.assertEqual(r.body.get("status"), "paid")
        gets = self.standin.requests("btcpay")[n:]
        self.assertEqual([(g["method"], g["path"]) for g in gets],
                         [("GET", "/api/v1/stores/%s/invoices/%s" % (BTC_STORE, bid))])
        got = self.d.request("GET", "/v1/invoices/" + inv, token=token).body
        self.assertEqual((got["status"], got["provider"], got["provider_ref"]),
                         ("paid", "btcpay", bid))
        # a redelivery (new deliveryId) is a duplicate and asks BTCPay nothing
        before = self.snapshot(token, inv)
        n = len(self.standin.requests("btcpay"))
        r = self.btcpay_hook(btcpay_event(bid))
        self.assertIs(r.body.get("duplicate"), True)
        self.assertEqual(len(self.standin.requests("btcpay")), n)
        r = self.btcpay_hook(btcpay_event(bid, etype="InvoiceReceivedPayment"))
        self.assertIs(r.body.get("ignored"), True)
        self.assertEqual(self.snapshot(token, inv)[0], before[0])
        self.assertEqual(len(self.paid_rows(inv)), 1)

    # -- eth / usdc --

    def test_crypto(self):
        token, uid = self.user()
        inv = self.invoice(uid, 1999, "USD")
        n = len(self.standin.requests())
        for network, addr in (("eth", ETH_ADDR), ("usdc", USDC_ADDR)):
            out = self.pay(token, inv, network)
            self.assertEqual(out["crypto"], {"network": network, "address": addr,
                                             "amount": "19.99", "reference": inv})
            self.assertEqual((out["invoice_id"], out["amount_minor"], out["currency"]),
                             (inv, 1999, "USD"))
        self.assertEqual(len(self.standin.requests()), n)
        inv = self.invoice(uid, 500, "JPY")
        self.assertEqual(self.pay(token, inv, "eth")["crypto"]["amount"], "500")

    # -- POST /v1/invoices/{id}/pay refusals --

    def test_pay_refusals(self):
        token, uid = self.user()
        inv = self.invoice(uid)
        other_token, _ = self.user()
        r = self.d.request("POST", "/v1/invoices/%s/pay" % inv, {"provider": "stripe"})
        self.assertEqual(r.status, 401)
        for t, i in ((other_token, inv), (token, "inv_doesnotexist"), (token, "INV-BAD%21")):
            r = self.d.request("POST", "/v1/invoices/%s/pay" % i, {"provider": "stripe"},
                               token=t)
            self.assertEqual((r.status, r.body["error"]["code"]), (404, "not_found"), r)
        for body in ({"provider": "paypal"}, {}, {"provider": "stripe", "x": 1},
                     {"provider": 5}):
            r = self.d.request("POST", "/v1/invoices/%s/pay" % inv, body, token=token)
            self.assertEqual((r.status, r.body["error"]["code"]), (400, "invalid_request"), r)
        draft = self.invoice(uid, finalize=False)
        r = self.d.request("POST", "/v1/invoices/%s/pay" % draft, {"provider": "stripe"},
                           token=token)
        self.assertEqual((r.status, r.body["error"]["code"]), (409, "invalid_state"), r)
        r = self.d.request("POST", "/v1/admin/invoices/%s/void" % inv, {}, token=self.admin)
        self.assertEqual(r.status, 200, r)
        r = self.d.request("POST", "/v1/invoices/%s/pay" % inv, {"provider": "eth"}, token=token)
        self.assertEqual((r.status, r.body["error"]["code"]), (409, "invalid_state"), r)

    def test_provider_failures(self):
        token, uid = self.user()
        inv = self.invoice(uid)
        # Stripe is retried once with the same Idempotency-Key
        n = len(self.standin.requests("stripe"))
        self.standin.fail_next("stripe", 500)
        self.pay(token, inv, "stripe")
        reqs = self.standin.requests("stripe")[n:]
        self.assertEqual(len(reqs), 2)
        self.assertEqual(reqs[0]["headers"]["idempotency-key"],
                         reqs[1]["headers"]["idempotency-key"])
        for provider, failures in (("stripe", [503, 503]), ("stripe", ["huge", "huge"]),
                                   ("stripe", [502, "garbage"]), ("stripe", [400]),
                                   ("razorpay", [401]), ("razorpay", ["garbage"]),
                                   ("btcpay", [500]), ("btcpay", ["huge"])):
            with self.subTest(provider=provider, failures=failures):
                for f in failures:
                    self.standin.fail_next(provider, f)
                before = self.snapshot(token, inv)
                r = self.d.request("POST", "/v1/invoices/%s/pay" % inv,
                                   {"provider": provider}, token=token)
                self.assertEqual((r.status, r.body["error"]["code"]), (503, "provider_error"),
                                 r)
                self.assertEqual(self.snapshot(token, inv), before)

    def test_unconfigured_providers(self):
        with harness.Daemon(db_url=self.d.db_url, token_secret=self.d.token_secret,
                            root_prefix=self.d.root_prefix) as bare:
            token, uid = self.user()
            inv = self.invoice(uid)
            for provider in ("stripe", "razorpay", "btcpay", "eth", "usdc"):
                r = bare.request("POST", "/v1/invoices/%s/pay" % inv, {"provider": provider},
                                 token=token)
                self.assertEqual((r.status, r.body["error"]["code"]),
                                 (409, "provider_unavailable"), r)
            body = b'{"id":"evt_x","type":"x"}'
            r = bare.request("POST", "/v1/webhooks/stripe", raw=body,
                             headers={"Stripe-Signature": stripe_header(body)})
            self.assertEqual(r.status, 503, r)

    def test_old_ignored_events_forgotten(self):
        """Ignored webhook events go after 30 days (a replay is then ignored
        again); events that paid an invoice stay."""
        token, uid = self.user()
        inv = self.invoice(uid, 700, "USD")
        sid, _ = self.stripe_session(token, inv)
        paid = stripe_event(sid, inv, 700, pi="pi_" + secrets.token_hex(4))
        self.assertEqual(self.stripe_hook(paid, stripe_header(paid)).status, 200)
        noise = json.dumps({"id": "evt_" + secrets.token_hex(6), "type": "customer.updated",
                            "data": {"object": {"id": "cus_2"}}}).encode()
        self.assertIs(self.stripe_hook(noise, stripe_header(noise)).body.get("ignored"), True)
        noise_id = json.loads(noise)["id"]
        events = "SELECT event_id FROM webhook_events WHERE event_id IN (%s, %s) ORDER BY 1"
        ids = sorted([json.loads(paid)["id"], noise_id])
        self.assertEqual([r[0] for r in self.d.sql(events, ids)], ids)
        self.d.sql("UPDATE webhook_events SET received_at = received_at - %s"
                   " WHERE event_id IN (%s, %s)", [31 * 86400] + ids)
        # a replica whose housekeeping runs every second, on the same database
        with harness.Daemon(db_url=self.d.db_url, token_secret=self.d.token_secret,
                            root_prefix=self.d.root_prefix, sweep_interval=1) as sweeper:
            deadline = time.time() + 20
            while time.time() < deadline and len(sweeper.sql(events, ids)) == 2:
                time.sleep(0.2)
        self.assertEqual([r[0] for r in self.d.sql(events, ids)], [json.loads(paid)["id"]])
        self.assertEqual(self.d.request("GET", "/v1/invoices/" + inv, token=token)
                         .body["status"], "paid")
        r = self.stripe_hook(noise, stripe_header(noise))
        self.assertEqual((r.status, r.body.get("ignored")), (200, True), r)
        r = self.stripe_hook(paid, stripe_header(paid))
        self.assertIs(r.body.get("duplicate"), True, r)

    # -- a past-due pocket's hold clears when its invoice is paid --

    def test_past_due_hold_clears(self):
        tier = "pay-" + secrets.token_hex(3)
        r = self.d.request("POST", "/v1/admin/tiers",
                           {"id": tier, "name": "Paid", "max_bytes": 1 << 30,
                            "max_objects": 1000, "price_minor": 900, "currency": "USD",
                            "needs_approval": False}, token=self.admin)
        self.assertEqual(r.status, 201, r)
        token, uid = self.user()
        pocket = self.d.new_pocket(token, tier=tier)
        sub = self.d.request("GET", "/v1/pockets/%s/subscription" % pocket["id"], token=token)
        self.assertEqual(sub.status, 200, sub)
        invs = self.d.request("GET", "/v1/invoices?status=open", token=token).body["invoices"]
        self.assertEqual(len(invs), 1, invs)
        inv = invs[0]["id"]
        self.assertEqual(invs[0]["total_minor"], 900)
        deadline = time.time() + 20
        while time.time() < deadline:
            p = self.d.request("GET", "/v1/pockets/" + pocket["id"], token=token).body
            if p.get("restriction"):
                break
            time.sleep(0.3)
        self.assertTrue(p.get("restriction"), p)
        sid, _ = self.stripe_session(token, inv)
        body = stripe_event(sid, inv, 900)
        r = self.stripe_hook(body, stripe_header(body))
        self.assertEqual(r.status, 200, r)
        p = self.d.request("GET", "/v1/pockets/" + pocket["id"], token=token).body
        self.assertFalse(p.get("restriction"), p)
        sub = self.d.request("GET", "/v1/pockets/%s/subscription" % pocket["id"], token=token)
        self.assertEqual(sub.body["status"], "active", sub)


if __name__ == "__main__":
    harness.require_services()
    unittest.main(verbosity=2)
