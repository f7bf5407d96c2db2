#!/usr/bin/env python3
"""Integration tests of pockityd's mail: email verification by a code mailed at
sign-up, and the notifications mailed from the audit log through the outbox
(tier requests, their decisions, invoices), against a real SMTP server
(aiosmtpd, run with the system's /usr/bin/python3 that Debian's python3-aiosmtpd
installs into), on SQLite or PostgreSQL (POCKITY_TEST_BACKEND). Exit 0 only
when all pass; 77 when aiosmtpd or the services are missing."""

import email
import email.policy
import json
import os
import re
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
from harness import Daemon, backend  # noqa: E402

SYSTEM_PYTHON = "/usr/bin/python3"
WAIT = 60  # seconds a mail may take (an audit id hole delays the outbox by 30 s)

# The SMTP server: every message received becomes one JSON file in FOLDER
# (envelope and raw bytes), written under a temporary name then renamed.
SINK = r'''
import base64, json, os, signal, sys, time, uuid
from aiosmtpd.controller import Controller
folder, port = sys.argv[1], int(sys.argv[2])
class Sink:
    async def handle_DATA(self, server, session, envelope):
        name = "%d-%s" % (time.time_ns(), uuid.uuid4().hex)
        doc = {"mail_from": envelope.mail_from, "rcpt_tos": envelope.rcpt_tos,
               "data": base64.b64encode(envelope.content).decode()}
        tmp = os.path.join(folder, "." + name)
        with open(tmp, "w") as f:
            json.dump(doc, f)
        os.rename(tmp, os.path.join(folder, name + ".json"))
        return "250 OK"
c = Controller(Sink(), hostname="127.0.0.1", port=port)
c.start()
print("ready", flush=True)
signal.sigwait({signal.SIGTERM, signal.SIGINT})
c.stop()
'''


def aiosmtpd_missing():
    if not os.path.exists(SYSTEM_PYTHON):
        return "no %s" % SYSTEM_PYTHON
    r = subprocess.run([SYSTEM_PYTHON, "-c", "import aiosmtpd"], capture_output=True)
    return None if r.returncode == 0 else "python3-aiosmtpd is not installed (apt-get install python3-aiosmtpd)"


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Sink:
    """A real SMTP server on a fixed port that can be stopped and started."""

    def __init__(self):
        self.dir = tempfile.mkdtemp(prefix="smtp-sink.")
        self.script = os.path.join(self.dir, "sink.py")
        self.folder = os.path.join(self.dir, "mail")
        os.mkdir(self.folder)
        with open(self.script, "w") as f:
            f.write(SINK)
        self.port = free_port()
        self.proc = None
        self.start()

    def start(self):
        self.proc = subprocess.Popen([SYSTEM_PYTHON, self.script, self.folder, str(self.port)],
                                     stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                                     stdin=subprocess.DEVNULL, text=True)
        line = self.proc.stdout.readline()
        if line.strip() != "ready":
            raise RuntimeError("the SMTP sink did not start")

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self.proc and self.proc.stdout:
            self.proc.stdout.close()

    def messages(self):
        """Every message received so far, oldest first: (envelope dict, raw bytes,
        parsed email.message.EmailMessage)."""
        out = []
        for name in sorted(os.listdir(self.folder)):
            if not name.endswith(".json"):
                continue
            with open(os.path.join(self.folder, name)) as f:
                doc = json.load(f)
            raw = __import__("base64").b64decode(doc["data"])
            out.append((doc, raw, email.message_from_bytes(raw, policy=email.policy.default)))
        return out

    def to(self, address, subject=None):
        return [m for m in self.messages()
                if address in m[0]["rcpt_tos"] and (subject is None or subject in m[2]["Subject"])]

    def wait(self, address, subject=None, count=1, timeout=WAIT):
        """Wait until at least count messages to address (with subject in the
        Subject) arrived; return them."""
        deadline = time.time() + timeout
        while time.time() < deadline:
            got = self.to(address, subject)
            if len(got) >= count:
                return got
            time.sleep(0.1)
        raise AssertionError("no mail to %s (subject %r) within %d s; received: %r" % (
            address, subject, timeout, [(m[0]["rcpt_tos"], m[2]["Subject"]) for m in self.messages()]))

    def close(self):
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)


SINK_SERVER = None


def mail_daemon(**kw):
    return Daemon(smtp__url="smtp://127.0.0.1:%d" % SINK_SERVER.port,
                  smtp__from="Pockity Tests <no-reply@pockity.test>", sweep_interval=1, **kw)


def register(d, name="Mail Tester"):
    mail = "user-%s@example.com" % secrets.token_hex(6)
    password = "password-" + secrets.token_hex(6)
    r = d.request("POST", "/v1/auth/register", {"email": mail, "password": password,
                                                 "name": name})
    return r, mail, password


def text_of(msg):
    """The decoded text of a message, with its line ends as LF."""
    return msg.get_content().replace("\r\n", "\n")


def code_of(msg):
    m = re.search(r"^\s+(\d{8})\s*$", text_of(msg), re.M)
    assert m, text_of(msg)
    return m.group(1)


def check_log(d):
    """Raise when daemon d logged an internal error or answered a 5xx."""
    log = d.log()
    bad = [m for m in ("internal_error", "bug:", "runtime error:", "Sanitizer") if m in log]
    five = [line for line in log.splitlines() if re.search(r" /v1/\S* 5\d\d ", line)]
    if bad or five:
        raise AssertionError("pockityd logged %r / 5xx %r:\n%s" % (bad, five[:5], log[-3000:]))


class Base(unittest.TestCase):
    d = None

    def expect(self, r, status, code=None):
        self.assertEqual(r.status, status, r)
        if code:
            self.assertEqual(r.body["error"]["code"], code, r)
        return r.body

    def verified_user(self, d=None):
        d = d or self.d
        r, mail, password = register(d)
        self.expect(r, 201)
        token = d.login(mail, password)
        code = code_of(SINK_SERVER.wait(mail, "verification code")[-1][2])
        self.expect(d.request("POST", "/v1/auth/verify", {"code": code}, token=token), 200)
        return token, r.body["user"], mail

    def make_tier(self, needs_approval=True):
        tid = "m-" + secrets.token_hex(4)
        self.expect(self.d.request("POST", "/v1/admin/tiers",
                                   {"id": tid, "name": "Tier " + tid, "max_bytes": 5 << 30,
                                    "max_objects": 5000, "price_minor": 250, "currency": "EUR",
                                    "needs_approval": needs_approval},
                                   token=self.d.admin_token()), 201)
        return tid


class Verification(Base):
    @classmethod
    def setUpClass(cls):
        cls.d = mail_daemon()

    @classmethod
    def tearDownClass(cls):
        cls.d.stop()
        check_log(cls.d)

    def test_register_mails_a_code_that_verifies(self):
        d = self.d
        r, mail, password = register(d, name="Zoë Tester")
        body = self.expect(r, 201)
        self.assertFalse(body["user"]["email_verified"])
        self.assertEqual(body["verification"], {"required": True, "sent": True})
        env, raw, msg = SINK_SERVER.wait(mail, "verification code")[0]
        # a proper RFC 5322 message: CRLF only, the headers we promise
        self.assertNotIn(b"\n", raw.replace(b"\r\n", b""))
        self.assertEqual(env["mail_from"], "no-reply@pockity.test")
        self.assertEqual(env["rcpt_tos"], [mail])
        self.assertEqual(msg["To"], mail)
        self.assertIn("no-reply@pockity.test", msg["From"])
        for h in ("Date", "Message-ID", "MIME-Version", "Subject"):
            self.assertTrue(msg[h], h)
        self.assertEqual(msg.get_content_type(), "text/plain")
        self.assertEqual(msg.get_content_charset(), "utf-8")
        self.assertIn("Hello Zoë Tester", text_of(msg))
        code = code_of(msg)
        # the database holds a keyed hash, never the code
        stored = d.sql("SELECT code_hash, attempts FROM email_verifications"
                             " WHERE user_id = %s", (body["user"]["id"],))
        self.assertEqual(len(stored), 1)
        self.assertRegex(stored[0][0], r"^[0-9a-f]{64}$")
        self.assertNotIn(code, stored[0][0])
        self.assertNotIn(code, d.log())

        # an unverified user can log in, but not create pockets
        token = d.login(mail, password)
        me = self.expect(d.request("GET", "/v1/me", token=token), 200)
        self.assertFalse(me["user"]["email_verified"])
        r = d.request("POST", "/v1/pockets", {"name": "p1"}, token=token)
        self.expect(r, 403, "forbidden")
        self.assertIn("verify", r.body["error"]["message"])

        # malformed codes are refused without counting a guess
        for bad in ["1234", "abcdefgh", "1234567890", " " + code, "１２３４５６７８"]:
            self.expect(d.request("POST", "/v1/auth/verify", {"code": bad}, token=token),
                        400, "invalid_request")
        self.expect(d.request("POST", "/v1/auth/verify", {"code": 12345678}, token=token),
                    400, "invalid_request")
        self.expect(d.request("POST", "/v1/auth/verify", {"code": code, "x": 1}, token=token),
                    400, "invalid_request")
        self.expect(d.request("POST", "/v1/auth/verify", {"code": code}), 401, "unauthenticated")
        # five wrong guesses, then even the right code is refused
        wrong = "%08d" % ((int(code) + 1) % 10 ** 8)
        for left in range(4, -1, -1):
            r = d.request("POST", "/v1/auth/verify", {"code": wrong}, token=token)
            self.expect(r, 400, "invalid_request")
            self.assertIn("%d attempt" % left, r.body["error"]["message"])
        r = d.request("POST", "/v1/auth/verify", {"code": code}, token=token)
        self.expect(r, 429, "rate_limited")
        self.assertIn("resend", r.body["error"]["message"])

        # a new code; the old one no longer works
        self.expect(d.request("POST", "/v1/auth/verify/resend", token=token), 200)
        msgs = SINK_SERVER.wait(mail, "verification code", count=2)
        new = code_of(msgs[-1][2])
        if new != code:
            self.expect(d.request("POST", "/v1/auth/verify", {"code": code}, token=token),
                        400, "invalid_request")
        got = self.expect(d.request("POST", "/v1/auth/verify", {"code": new}, token=token), 200)
        self.assertTrue(got["user"]["email_verified"])
        self.assertEqual(d.sql("SELECT COUNT(*) FROM email_verifications WHERE user_id = %s",
                                  (body["user"]["id"],)), [["0"]])
        self.expect(d.request("POST", "/v1/pockets", {"name": "p1"}, token=token), 201)
        # done: both routes say so
        self.expect(d.request("POST", "/v1/auth/verify", {"code": new}, token=token),
                    409, "conflict")
        self.expect(d.request("POST", "/v1/auth/verify/resend", token=token), 409, "conflict")
        rows = d.sql("SELECT COUNT(*) FROM audit_log WHERE action = 'user.verify_email'"
                           " AND target_id = %s", (body["user"]["id"],))
        self.assertEqual(rows, [["1"]])

    def test_resend_is_rate_limited(self):
        d = self.d
        r, mail, password = register(d)
        self.expect(r, 201)
        token = d.login(mail, password)
        self.expect(d.request("POST", "/v1/auth/verify/resend", token=token), 200)
        self.expect(d.request("POST", "/v1/auth/verify/resend", token=token), 200)
        r = d.request("POST", "/v1/auth/verify/resend", token=token)
        self.expect(r, 429, "rate_limited")
        self.assertGreater(int(r.headers["Retry-After"]), 0)
        SINK_SERVER.wait(mail, "verification code", count=3)
        time.sleep(0.5)
        self.assertEqual(len(SINK_SERVER.to(mail)), 3)
        # only the last code works
        code = code_of(SINK_SERVER.to(mail)[-1][2])
        self.expect(d.request("POST", "/v1/auth/verify", {"code": code}, token=token), 200)
        self.expect(d.request("POST", "/v1/auth/verify/resend"), 401, "unauthenticated")

    def test_expired_code(self):
        d = self.d
        r, mail, password = register(d)
        self.expect(r, 201)
        token = d.login(mail, password)
        code = code_of(SINK_SERVER.wait(mail, "verification code")[0][2])
        # just expired (the notifier forgets codes a day past their expiry)
        d.sql("UPDATE email_verifications SET expires_at = %s WHERE user_id = %s",
                 (int(time.time()) - 10, r.body["user"]["id"]))
        r2 = d.request("POST", "/v1/auth/verify", {"code": code}, token=token)
        self.expect(r2, 400, "invalid_request")
        self.assertIn("expired", r2.body["error"]["message"])

    def test_no_pending_code(self):
        d = self.d
        r, mail, password = register(d)
        token = d.login(mail, password)
        d.sql("DELETE FROM email_verifications WHERE user_id = %s", (r.body["user"]["id"],))
        self.expect(d.request("POST", "/v1/auth/verify", {"code": "12345678"}, token=token),
                    409, "conflict")

    def test_admin_created_users_are_verified(self):
        admin = self.d.admin_token()
        me = self.expect(self.d.request("GET", "/v1/me", token=admin), 200)
        self.assertTrue(me["user"]["email_verified"])
        self.expect(self.d.request("POST", "/v1/pockets", {"name": "adm"}, token=admin), 201)


class Rotation(Base):
    def test_code_survives_secret_rotation(self):
        old_secret, new_secret = secrets.token_urlsafe(48), secrets.token_urlsafe(48)
        with mail_daemon(token_secret=old_secret) as d0:
            r, mail, password = register(d0)
            self.expect(r, 201)
            code = code_of(SINK_SERVER.wait(mail, "verification code")[-1][2])
        # the secret rotated: without the previous one the pending code is unknown
        with mail_daemon(db_url=d0.db_url, token_secret=new_secret,
                         root_prefix=d0.root_prefix) as d1:
            token = d1.login(mail, password)
            body = self.expect(d1.request("POST", "/v1/auth/verify", {"code": code},
                                          token=token), 400, "invalid_request")
            self.assertIn("wrong", body["error"]["message"])
        # with it, the code mailed before the rotation still verifies, a wrong one does not
        with mail_daemon(db_url=d0.db_url, token_secret=new_secret, root_prefix=d0.root_prefix,
                         auth__token_secret_previous=old_secret) as d2:
            token = d2.login(mail, password)
            wrong = "%08d" % ((int(code) + 1) % 10 ** 8)
            self.expect(d2.request("POST", "/v1/auth/verify", {"code": wrong}, token=token),
                        400, "invalid_request")
            got = self.expect(d2.request("POST", "/v1/auth/verify", {"code": code},
                                         token=token), 200)
            self.assertTrue(got["user"]["email_verified"])
        for d in (d0, d1, d2):
            check_log(d)


class SmtpLogin(Base):
    def test_login_is_never_sent_in_clear(self):
        # the sink offers no STARTTLS: with a login configured nothing may be sent
        with mail_daemon(smtp__user="pockity-mailer") as d:
            r, mail, _ = register(d)
            body = self.expect(r, 201)
            self.assertEqual(body["verification"], {"required": True, "sent": False})
            time.sleep(1.5)
            self.assertEqual(SINK_SERVER.to(mail), [])
            self.assertIn("a login is never sent in clear", d.log())
        check_log(d)


class NoSmtp(Base):
    def test_verification_is_off_without_smtp(self):
        with Daemon(sweep_interval=1) as d:
            r, mail, password = register(d)
            body = self.expect(r, 201)
            # not verified, but not required either: the account may do everything
            self.assertFalse(body["user"]["email_verified"])
            self.assertEqual(body["verification"], {"required": False, "sent": False})
            token = d.login(mail, password)
            p = self.expect(d.request("POST", "/v1/pockets", {"name": "p"}, token=token), 201)
            self.expect(d.request("POST", "/v1/pockets/%s/keys" % p["id"],
                                  {"name": "k", "access": "rw"}, token=token), 201)
            self.expect(d.request("POST", "/v1/auth/verify", {"code": "12345678"}, token=token),
                        409, "conflict")
            self.expect(d.request("POST", "/v1/auth/verify/resend", token=token), 409, "conflict")
            # nothing is queued, and the cursor follows the log
            d.admin_token()
            time.sleep(2.5)
            self.assertEqual(d.sql("SELECT COUNT(*) FROM mail_outbox"), [["0"]])
            cur = d.sql("SELECT last_audit_id FROM mail_cursor")
            top = d.sql("SELECT MAX(id) FROM audit_log")
            self.assertEqual(cur, top)
            self.assertEqual(SINK_SERVER.to(mail), [])
        check_log(d)


class Notifications(Base):
    @classmethod
    def setUpClass(cls):
        cls.d = mail_daemon(billing__interval=1)

    @classmethod
    def tearDownClass(cls):
        cls.d.stop()
        check_log(cls.d)

    def admin_address(self):
        self.d.admin_token()
        return self.d._admin[1]

    def test_history_is_not_mailed(self):
        # events from before a mail server was configured are never mailed
        with Daemon(sweep_interval=1) as d0:
            admin = d0.admin_token()
            admin_addr = d0._admin[1]
            tid = self.expect(d0.request("POST", "/v1/admin/tiers",
                                         {"id": "old-" + secrets.token_hex(3), "name": "Old",
                                          "max_bytes": 1 << 30, "max_objects": 10,
                                          "needs_approval": True}, token=admin), 201)["id"]
            token, _, old_mail, old_password = d0.new_user()
            self.expect(d0.request("POST", "/v1/pockets", {"name": "old", "tier": tid},
                                   token=token), 201)
            # without a mail server the cursor follows the log on every round
            deadline = time.time() + WAIT
            while time.time() < deadline:
                if d0.sql("SELECT last_audit_id FROM mail_cursor") == \
                        d0.sql("SELECT MAX(id) FROM audit_log"):
                    break
                time.sleep(0.2)
            else:
                self.fail("the mail cursor did not follow the audit log")
        with mail_daemon(db_url=d0.db_url, token_secret=d0.token_secret,
                         root_prefix=d0.root_prefix) as d1:
            # an account made while verification was off must verify now
            token = d1.login(old_mail, old_password)
            self.expect(d1.request("POST", "/v1/pockets", {"name": "new", "tier": tid},
                                   token=token), 403, "forbidden")
            token, _, _ = self.verified_user(d1)
            self.expect(d1.request("POST", "/v1/pockets", {"name": "new", "tier": tid},
                                   token=token), 201)
            SINK_SERVER.wait(admin_addr, "'new'")
            time.sleep(1.5)
            self.assertEqual(SINK_SERVER.to(admin_addr, "'old'"), [])
            self.assertEqual(len(SINK_SERVER.to(admin_addr)), 1)
        check_log(d0)
        check_log(d1)

    def test_tier_request_approved(self):
        d = self.d
        admin_addr = self.admin_address()
        tid = self.make_tier()
        token, user, mail = self.verified_user()
        p = self.expect(d.request("POST", "/v1/pockets", {"name": "photos"}, token=token), 201)
        pid = p["pocket"]["id"] if "pocket" in p else p["id"]
        # a reason with a line holding a lone dot: SMTP's end of data unless stuffed
        reason = "more space for photos\n.\nand the rest after the dot"
        req = self.expect(d.request("POST", "/v1/pockets/%s/tier-requests" % pid,
                                    {"tier": tid, "reason": reason}, token=token), 201)
        rid = req["tier_request"]["id"] if "tier_request" in req else req["id"]
        msg = SINK_SERVER.wait(admin_addr, "'photos'")[-1][2]
        text = text_of(msg)
        self.assertIn("needs a decision", msg["Subject"])
        self.assertIn(mail, text)
        self.assertIn(rid, text)
        self.assertIn("pockity-admin requests approve " + rid, text)
        self.assertIn("\n.\nand the rest after the dot", text)
        self.expect(d.request("POST", "/v1/admin/tier-requests/%s/approve" % rid,
                              {"comment": "enjoy"}, token=d.admin_token()), 200)
        msg = SINK_SERVER.wait(mail, "now has the tier")[-1][2]
        self.assertIn("'photos'", msg["Subject"])
        text = text_of(msg)
        self.assertIn("approved", text)
        self.assertIn("Tier " + tid, text)
        self.assertIn("enjoy", text)
        self.assertEqual(len(SINK_SERVER.to(admin_addr, "'photos'")), 1)

    def test_tier_request_rejected(self):
        d = self.d
        admin_addr = self.admin_address()
        tid = self.make_tier()
        token, user, mail = self.verified_user()
        # a pocket created on a tier that needs approval waits for it
        p = self.expect(d.request("POST", "/v1/pockets", {"name": "archive", "tier": tid},
                                  token=token), 201)
        pid = p["pocket"]["id"] if "pocket" in p else p["id"]
        rows = d.sql("SELECT id FROM tier_requests WHERE pocket_id = %s", (pid,))
        rid = rows[0][0]
        SINK_SERVER.wait(admin_addr, "'archive'")
        self.expect(d.request("POST", "/v1/admin/tier-requests/%s/reject" % rid,
                              {"comment": "not now"}, token=d.admin_token()), 200)
        msg = SINK_SERVER.wait(mail, "declined")[-1][2]
        self.assertIn("'archive'", msg["Subject"])
        text = text_of(msg)
        self.assertIn("not now", text)
        self.assertIn("tier-requests", text)

    def test_automatic_tier_mails_nobody(self):
        d = self.d
        admin_addr = self.admin_address()
        tid = self.make_tier(needs_approval=False)
        token, user, mail = self.verified_user()
        p = self.expect(d.request("POST", "/v1/pockets", {"name": "quick"}, token=token), 201)
        pid = p["pocket"]["id"] if "pocket" in p else p["id"]
        self.expect(d.request("POST", "/v1/pockets/%s/tier-requests" % pid, {"tier": tid},
                              token=token), 201)
        # a later event that is mailed proves the notifier went past this one
        tid2 = self.make_tier()
        p2 = self.expect(d.request("POST", "/v1/pockets", {"name": "later", "tier": tid2},
                                   token=token), 201)
        SINK_SERVER.wait(admin_addr, "'later'")
        self.assertEqual(SINK_SERVER.to(admin_addr, "'quick'"), [])
        self.assertEqual(SINK_SERVER.to(mail, "'quick'"), [])
        self.assertTrue(p2)

    def test_down_server_delays_mail(self):
        d = self.d
        admin_addr = self.admin_address()
        tid = self.make_tier()
        token, user, mail = self.verified_user()
        SINK_SERVER.stop()
        try:
            self.expect(d.request("POST", "/v1/pockets", {"name": "patient", "tier": tid},
                                  token=token), 201)
            deadline = time.time() + WAIT
            row = None
            while time.time() < deadline:
                rows = d.sql("SELECT attempts, status, last_error FROM mail_outbox"
                                   " WHERE action = 'tier_request.create' AND attempts > 0"
                                   " AND status = 'pending' AND last_error IS NOT NULL")
                if rows:
                    row = rows[0]
                    break
                time.sleep(0.2)
            self.assertIsNotNone(row, "no failed attempt was recorded")
        finally:
            SINK_SERVER.start()
        msgs = SINK_SERVER.wait(admin_addr, "'patient'")
        time.sleep(3)
        self.assertEqual(len(SINK_SERVER.to(admin_addr, "'patient'")), 1, msgs)
        rows = d.sql("SELECT status FROM mail_outbox WHERE action = 'tier_request.create'"
                           " AND last_error IS NULL AND attempts > 1")
        self.assertIn(["sent"], rows)
        self.assertIn("will retry", d.log())
        metrics = d.request("GET", "/metrics").raw.decode()
        self.assertRegex(metrics, r'pockityd_mail_total\{outcome="retry"\} [1-9]')
        self.assertRegex(metrics, r'pockityd_mail_total\{outcome="sent"\} [1-9]')

    def test_invoice_open_mail(self):
        d = self.d
        admin = d.admin_token()
        token, user, mail = self.verified_user()
        inv = self.expect(d.request("POST", "/v1/admin/invoices",
                                    {"user_id": user["id"], "currency": "EUR",
                                     "lines": [{"description": "setup", "amount_minor": 123456}],
                                     "due_days": 7}, token=admin), 201)
        inv = inv.get("invoice", inv)
        self.expect(d.request("POST", "/v1/admin/invoices/%s/finalize" % inv["id"],
                              token=admin), 200)
        msg = SINK_SERVER.wait(mail, inv["id"])[-1][2]
        self.assertIn("1234.56 EUR", msg["Subject"])
        text = text_of(msg)
        self.assertIn("1234.56 EUR", text)
        self.assertIn("Due:", text)
        self.assertIn("/v1/invoices/%s/pay" % inv["id"], text)

    def test_past_due_and_restored_mail(self):
        d = self.d
        admin = d.admin_token()
        tid = self.make_tier(needs_approval=False)
        token, user, mail = self.verified_user()
        p = self.expect(d.request("POST", "/v1/pockets", {"name": "billed", "tier": tid},
                                  token=token), 201)
        pid = p.get("pocket", p)["id"]
        rows = d.sql("SELECT id FROM invoices WHERE pocket_id = %s AND status = 'open'",
                        (pid,))
        self.assertEqual(len(rows), 1, rows)
        inv = rows[0][0]
        msg = SINK_SERVER.wait(mail, inv)[-1][2]
        self.assertIn("2.50 EUR", msg["Subject"])
        self.assertIn("'billed'", text_of(msg))
        # far past its due date and grace: the billing job holds the pocket
        d.sql("UPDATE invoices SET due_at = 1 WHERE id = %s", (inv,))
        msg = SINK_SERVER.wait(mail, "read-only")[-1][2]
        self.assertIn("'billed'", msg["Subject"])
        text = text_of(msg)
        self.assertIn(inv, text)
        self.assertIn("2.50 EUR", text)
        self.assertIn("1970-01-01", text)
        self.expect(d.request("POST", "/v1/admin/invoices/%s/mark-paid" % inv,
                              {"network": "other", "tx_hash": "test-" + secrets.token_hex(4)},
                              token=admin), 200)
        msg = SINK_SERVER.wait(mail, "writable again")[-1][2]
        self.assertIn("'billed'", msg["Subject"])
        self.assertEqual(len(SINK_SERVER.to(mail, "read-only")), 1)


@unittest.skipUnless(backend() == "postgres", "two replicas need a shared PostgreSQL")
class TwoReplicas(Base):
    def test_each_event_mailed_once(self):
        with mail_daemon() as d1:
            with mail_daemon(db_url=d1.db_url, token_secret=d1.token_secret,
                             root_prefix=d1.root_prefix) as d2:
                self.d = d1
                admin_addr = (d1.admin_token(), d1._admin[1])[1]
                tid = self.make_tier()
                names = []
                for i in range(6):
                    dd = (d1, d2)[i % 2]
                    token, user, mail = self.verified_user(dd)
                    name = "twin-%d-%s" % (i, secrets.token_hex(3))
                    self.expect(dd.request("POST", "/v1/pockets", {"name": name, "tier": tid},
                                           token=token), 201)
                    names.append(name)
                for name in names:
                    SINK_SERVER.wait(admin_addr, "'%s'" % name)
                time.sleep(4)  # several more rounds of both replicas
                for name in names:
                    self.assertEqual(len(SINK_SERVER.to(admin_addr, "'%s'" % name)), 1, name)
                rows = d1.sql("SELECT status, COUNT(*) FROM mail_outbox GROUP BY status")
                self.assertEqual(rows, [["sent", str(len(names))]])
                rows = d1.sql("SELECT COUNT(DISTINCT audit_id) FROM mail_outbox")
                self.assertEqual(rows, [[str(len(names))]])
        check_log(d1)
        check_log(d2)


def main():
    global SINK_SERVER
    harness.require_services()
    why = aiosmtpd_missing()
    if why:
        print("skipped: " + why)
        return harness.SKIP
    SINK_SERVER = Sink()
    try:
        prog = unittest.main(exit=False, verbosity=2)
        ok = prog.result.wasSuccessful()
    finally:
        SINK_SERVER.close()
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
