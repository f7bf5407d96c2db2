#!/usr/bin/env python3
"""The paid-tier story end to end, as a customer and an operator live it: a
user asks for a paid tier, the operator approves with pockity-admin, the
invoice opens, and each way of paying (a Stripe, Razorpay or BTCPay webhook,
a crypto transfer the operator confirms with pockity-admin, prepaid credit)
settles it. Invoices here fall due at once with no grace, so an unpaid pocket
turns read-only within a round of the billing job; paying makes it writable
again. Real pockityd, real RGW, the payment providers' local stand-in."""

import hashlib
import hmac
import json
import os
import secrets
import subprocess
import sys
import time
import unittest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tools"))

import harness  # noqa: E402
from provider_standin import ProviderStandin  # noqa: E402

STRIPE_KEY = "sk_test_" + secrets.token_hex(8)
STRIPE_WHSEC = "whsec_" + secrets.token_hex(16)
RZP_ID, RZP_SECRET = "rzp_test_" + secrets.token_hex(4), "rzs_" + secrets.token_hex(12)
RZP_WHSEC = "rzw_" + secrets.token_hex(16)
BTC_KEY, BTC_STORE = "btk_" + secrets.token_hex(12), "Store" + secrets.token_hex(4)
BTC_WHSEC = "btw_" + secrets.token_hex(16)
ETH_ADDR = "0x" + secrets.token_hex(20)

PRICE = 1500  # minor units of USD a month
PRO_BYTES = 10 << 30
FREE_BYTES = 1 << 30


def hexmac(key, data):
    return hmac.new(key.encode(), data, hashlib.sha256).hexdigest()


def wait_for(what, check, timeout=30):
    deadline = time.time() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.time() > deadline:
            raise AssertionError("timed out waiting for " + what)
        time.sleep(0.25)


def daemon_settings(standin_url, renew_ahead):
    return dict(
        server__public_url="https://pockity.example",
        stripe__api_base=standin_url, stripe__secret_key=STRIPE_KEY,
        stripe__webhook_secret=STRIPE_WHSEC,
        razorpay__api_base=standin_url + "/", razorpay__key_id=RZP_ID,
        razorpay__key_secret=RZP_SECRET, razorpay__webhook_secret=RZP_WHSEC,
        btcpay__url=standin_url, btcpay__api_key=BTC_KEY, btcpay__store_id=BTC_STORE,
        btcpay__webhook_secret=BTC_WHSEC, crypto__eth_address=ETH_ADDR,
        billing__due_days=0, billing__grace=0, billing__interval=1,
        billing__renew_ahead=renew_ahead)


class Story:
    """One daemon with an operator who drives it through pockity-admin."""

    def __init__(self, test, d):
        self.t, self.d = test, d
        self.admin_token = d.admin_token()
        self.home = harness.scratch_dir("pockity-story-home.")

    def admin(self, *args):
        """Run pockity-admin as the operator; returns its stdout, failing on error."""
        env = dict(os.environ, HOME=self.home, POCKITY_SERVER=self.d.url,
                   POCKITY_ADMIN_TOKEN=self.admin_token)
        r = subprocess.run([harness.build_path("admin-tool", "pockity-admin")] + list(args),
                           env=env, capture_output=True, text=True, timeout=60,
                           stdin=subprocess.DEVNULL)
        self.t.assertEqual(r.returncode, 0, "pockity-admin %s: %s%s" % (args, r.stdout, r.stderr))
        return r.stdout

    def customer_on_pro(self):
        """A user whose pocket asked for 'pro' and was approved by the operator.
        Returns (login token, user id, pocket id, rw API key)."""
        token, user, _, _ = self.d.new_user()
        pocket = self.d.new_pocket(token)["id"]
        key = self.d.new_key(token, pocket)["key"]
        r = self.d.request("POST", "/v1/pockets/%s/tier-requests" % pocket,
                           {"tier": "pro", "reason": "more room"}, token=token)
        self.t.assertEqual((r.status, r.body["status"]), (201, "pending"), r)
        request_id = r.body["id"]
        listed = json.loads(self.admin("requests", "list", "--status", "pending", "--json"))
        rows = listed["tier_requests"] if isinstance(listed, dict) else listed
        self.t.assertIn(request_id, [row["id"] for row in rows])
        out = self.admin("requests", "approve", request_id, "--comment", "welcome")
        self.t.assertIn("approved", out)
        r = self.d.request("GET", "/v1/pockets/" + pocket, token=token)
        self.t.assertEqual(r.body["tier"]["id"], "pro", r)
        self.t.assertEqual(r.body["quota"]["max_bytes"], PRO_BYTES)
        return token, user["id"], pocket, key

    def open_invoices(self, token):
        r = self.d.request("GET", "/v1/invoices?status=open", token=token)
        self.t.assertEqual(r.status, 200, r)
        return r.body["invoices"]

    def the_open_invoice(self, token):
        invoices = self.open_invoices(token)
        self.t.assertEqual(len(invoices), 1, invoices)
        inv = invoices[0]
        self.t.assertEqual((inv["total_minor"], inv["currency"], inv["kind"]),
                           (PRICE, "USD", "subscription"), inv)
        return inv["id"]

    def access(self, key):
        r = self.d.request("POST", "/v1/session", {}, token=key)
        self.t.assertEqual(r.status, 200, r)
        return r.body["access"]

    def reserve(self, key, size):
        return self.d.request("POST", "/v1/reservations",
                              {"key": "story/" + secrets.token_hex(4), "bytes": size}, token=key)

    def assert_read_only(self, key, pocket, token):
        wait_for("the pocket to turn read-only", lambda: self.access(key) == "read-delete")
        r = self.reserve(key, 1)
        self.t.assertEqual((r.status, r.body["error"]["code"]), (403, "read_only"), r)
        r = self.d.request("GET", "/v1/pockets/" + pocket, token=token)
        self.t.assertEqual(r.body["restriction"]["code"], "past_due", r)

    def assert_writable(self, key, pocket, token):
        """Back to rw at once, with the paid tier's room (more than free allows)."""
        self.t.assertEqual(self.access(key), "rw")
        r = self.reserve(key, 2 * FREE_BYTES)
        self.t.assertEqual(r.status, 201, r)
        r = self.d.request("GET", "/v1/pockets/" + pocket, token=token)
        self.t.assertIsNone(r.body["restriction"], r)

    def invoice_status(self, token, inv):
        r = self.d.request("GET", "/v1/invoices/" + inv, token=token)
        self.t.assertEqual(r.status, 200, r)
        return r.body

    def pay(self, token, inv, provider):
        r = self.d.request("POST", "/v1/invoices/%s/pay" % inv, {"provider": provider},
                           token=token)
        self.t.assertEqual(r.status, 200, r)
        return r.body


class PaidTierStory(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        harness.require_services()
        cls.standin = ProviderStandin(stripe_key=STRIPE_KEY, razorpay_key=(RZP_ID, RZP_SECRET),
                                      btcpay_key=BTC_KEY, btcpay_store=BTC_STORE).start()
        # Renewals open only near a period's end: each pocket has one invoice.
        cls.d = harness.Daemon(**daemon_settings(cls.standin.url, renew_ahead=0))

    @classmethod
    def tearDownClass(cls):
        cls.d.stop()
        cls.standin.stop()

    def setUp(self):
        self.s = Story(self, self.d)
        if not getattr(PaidTierStory, "tier_made", False):
            self.s.admin("tiers", "create", "pro", "--name", "Pro", "--max-bytes", "10GiB",
                         "--max-objects", "100000", "--price", str(PRICE), "--currency", "USD",
                         "--needs-approval")
            PaidTierStory.tier_made = True

    def test_stripe_pays_and_the_quota_grows(self):
        s = self.s
        token, _, pocket, key = s.customer_on_pro()
        inv = s.the_open_invoice(token)
        s.assert_read_only(key, pocket, token)
        before = len(self.standin.requests("stripe"))
        checkout = s.pay(token, inv, "stripe")
        session = self.standin.requests("stripe")[before]["response"]
        self.assertEqual(checkout["checkout_url"], session["url"])
        body = json.dumps({
            "id": "evt_" + secrets.token_hex(8), "object": "event",
            "type": "checkout.session.completed", "created": int(time.time()),
            "data": {"object": {"id": session["id"], "object": "checkout.session",
                                "amount_total": PRICE, "currency": "usd",
                                "payment_status": "paid", "client_reference_id": inv,
                                "metadata": {"invoice_id": inv},
                                "payment_intent": "pi_" + secrets.token_hex(6)}}}).encode()
        t = int(time.time())
        sig = "t=%d,v1=%s" % (t, hexmac(STRIPE_WHSEC, str(t).encode() + b"." + body))
        r = self.d.request("POST", "/v1/webhooks/stripe", raw=body,
                           headers={"Content-Type": "application/json",
                                    "Stripe-Signature": sig})
        self.assertEqual(r.status, 200, r)
        paid = s.invoice_status(token, inv)
        self.assertEqual((paid["status"], paid["provider"]), ("paid", "stripe"))
        s.assert_writable(key, pocket, token)

    def test_razorpay_restores(self):
        s = self.s
        token, _, pocket, key = s.customer_on_pro()
        inv = s.the_open_invoice(token)
        s.assert_read_only(key, pocket, token)
        order = s.pay(token, inv, "razorpay")["order"]
        self.assertEqual((order["amount"], order["currency"]), (PRICE, "USD"))
        payment = {"id": "pay_" + secrets.token_hex(7), "entity": "payment", "amount": PRICE,
                   "currency": "USD", "status": "captured", "order_id": order["id"],
                   "captured": True}
        body = json.dumps({"entity": "event", "event": "payment.captured",
                           "contains": ["payment"], "payload": {"payment": {"entity": payment}},
                           "created_at": int(time.time())}).encode()
        r = self.d.request("POST", "/v1/webhooks/razorpay", raw=body,
                           headers={"Content-Type": "application/json",
                                    "X-Razorpay-Signature": hexmac(RZP_WHSEC, body),
                                    "X-Razorpay-Event-Id": "evt_" + secrets.token_hex(6)})
        self.assertEqual(r.status, 200, r)
        self.assertEqual(s.invoice_status(token, inv)["provider"], "razorpay")
        s.assert_writable(key, pocket, token)

    def test_btcpay_restores(self):
        s = self.s
        token, _, pocket, key = s.customer_on_pro()
        inv = s.the_open_invoice(token)
        s.assert_read_only(key, pocket, token)
        bid = s.pay(token, inv, "btcpay")["btcpay_invoice_id"]
        self.standin.btcpay_set(bid, status="Settled")
        body = json.dumps({"deliveryId": secrets.token_hex(8), "webhookId": "Wh1",
                           "originalDeliveryId": secrets.token_hex(8), "isRedelivery": False,
                           "type": "InvoiceSettled", "timestamp": int(time.time()),
                           "storeId": BTC_STORE, "invoiceId": bid}).encode()
        r = self.d.request("POST", "/v1/webhooks/btcpay", raw=body,
                           headers={"Content-Type": "application/json",
                                    "BTCPay-Sig": "sha256=" + hexmac(BTC_WHSEC, body)})
        self.assertEqual(r.status, 200, r)
        self.assertEqual(s.invoice_status(token, inv)["provider"], "btcpay")
        s.assert_writable(key, pocket, token)

    def test_crypto_transfer_confirmed_by_the_operator(self):
        s = self.s
        token, _, pocket, key = s.customer_on_pro()
        inv = s.the_open_invoice(token)
        s.assert_read_only(key, pocket, token)
        crypto = s.pay(token, inv, "eth")["crypto"]
        self.assertEqual((crypto["address"], crypto["reference"]), (ETH_ADDR, inv))
        tx = "0x" + secrets.token_hex(32)
        s.admin("invoices", "mark-paid", inv, "--network", "eth", "--tx-hash", tx)
        paid = s.invoice_status(token, inv)
        self.assertEqual((paid["status"], paid["provider"], paid["provider_ref"]),
                         ("paid", "crypto", tx))
        s.assert_writable(key, pocket, token)


class CreditRenewalStory(unittest.TestCase):
    """Renewals open at once (renew_ahead longer than a month): a pocket in
    credit mode pays its first period and its renewal from prepaid credit."""

    @classmethod
    def setUpClass(cls):
        harness.require_services()
        cls.standin = ProviderStandin(stripe_key=STRIPE_KEY, razorpay_key=(RZP_ID, RZP_SECRET),
                                      btcpay_key=BTC_KEY, btcpay_store=BTC_STORE).start()
        cls.d = harness.Daemon(**daemon_settings(cls.standin.url, renew_ahead=40 * 86400))

    @classmethod
    def tearDownClass(cls):
        cls.d.stop()
        cls.standin.stop()

    def test_renewal_pays_itself_from_credit(self):
        s = Story(self, self.d)
        s.admin("tiers", "create", "pro", "--name", "Pro", "--max-bytes", "10GiB",
                "--max-objects", "100000", "--price", str(PRICE), "--currency", "USD",
                "--needs-approval")
        token, user_id, pocket, key = s.customer_on_pro()
        # the first period and the next one's renewal are both open
        invoices = wait_for("the renewal invoice", lambda: (
            lambda v: v if len(v) == 2 else None)(s.open_invoices(token)))
        self.assertEqual(sorted(i["period_start"] for i in invoices)[1],
                         sorted(i["period_end"] for i in invoices)[0])
        s.admin("credits", "grant", user_id, "--amount", "40", "--currency", "USD",
                "--reason", "prepaid")
        r = self.d.request("POST", "/v1/pockets/%s/subscription" % pocket,
                           {"renewal": "credit"}, token=token)
        self.assertEqual((r.status, r.body["renewal"]), (200, "credit"), r)
        wait_for("both invoices paid from credit", lambda: not s.open_invoices(token))
        for inv in invoices:
            paid = s.invoice_status(token, inv["id"])
            self.assertEqual((paid["status"], paid["provider"]), ("paid", "credit"))
        credits = self.d.request("GET", "/v1/credits", token=token).body
        debits = [e for e in credits["entries"] if e["kind"] == "debit"]
        self.assertEqual(sorted(e["amount_minor"] for e in debits), [-PRICE, -PRICE])
        self.assertEqual(credits["balances"], [{"currency": "USD",
                                                "balance_minor": 4000 - 2 * PRICE}])
        s.assert_writable(key, pocket, token)


if __name__ == "__main__":
    unittest.main(verbosity=2)
