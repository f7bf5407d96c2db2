#!/usr/bin/env python3
"""S3 event notifications, end to end against the real RGW: pockityd sets up
the bucket's topic and notification itself, objects written and deleted with
a mount's session credentials (bypassing any mount) show in the pocket's usage
through pushed records; replayed and out-of-order records leave the ledger
right; a forged token is refused. Also holds RawS3, a tiny SigV4 client the
reconciliation tests share (multipart uploads, notification clean-up)."""

import datetime
import hashlib
import hmac
import json
import os
import re
import secrets
import socket
import threading
import time
import unittest
import urllib.error
import urllib.parse
import urllib.request
import xml.etree.ElementTree as ET

from harness import Daemon, backend, require_services, s3_put_bytes, s3tool


class RawS3:
    """Signed requests to the test RGW: root credentials, or a session's."""

    def __init__(self, creds=None):
        self.endpoint = os.environ["POCKITY_S3_ENDPOINT"].rstrip("/")
        self.region = os.environ["POCKITY_S3_REGION"]
        self.bucket = os.environ["POCKITY_S3_BUCKET"]
        if creds:
            self.ak, self.sk = creds["access_key_id"], creds["secret_access_key"]
            self.token = creds.get("session_token")
        else:
            self.ak = os.environ["POCKITY_S3_ACCESS_KEY"]
            self.sk = os.environ["POCKITY_S3_SECRET_KEY"]
            self.token = None

    @staticmethod
    def _q(s, safe="-_.~"):
        return urllib.parse.quote(s, safe=safe)

    def request(self, method, path, query=None, body=b"", service="s3", ctype=None):
        """path is raw (unencoded, starting with '/'). Returns (status, body bytes)."""
        now = datetime.datetime.now(datetime.timezone.utc)
        amz, day = now.strftime("%Y%m%dT%H%M%SZ"), now.strftime("%Y%m%d")
        host = urllib.parse.urlsplit(self.endpoint).netloc
        cpath = self._q(path, safe="/-_.~")
        cquery = "&".join("%s=%s" % (self._q(k), self._q(v))
                          for k, v in sorted((query or {}).items()))
        phash = hashlib.sha256(body).hexdigest()
        headers = {"host": host, "x-amz-date": amz, "x-amz-content-sha256": phash}
        if ctype:
            headers["content-type"] = ctype
        if self.token:
            headers["x-amz-security-token"] = self.token
        names = sorted(headers)
        creq = "\n".join([method, cpath, cquery] + ["%s:%s" % (n, headers[n]) for n in names]
                         + ["", ";".join(names), phash])
        scope = "%s/%s/%s/aws4_request" % (day, self.region, service)
        sts = "\n".join(["AWS4-HMAC-SHA256", amz, scope,
                         hashlib.sha256(creq.encode()).hexdigest()])
        key = ("AWS4" + self.sk).encode()
        for part in (day, self.region, service, "aws4_request"):
            key = hmac.new(key, part.encode(), hashlib.sha256).digest()
        sig = hmac.new(key, sts.encode(), hashlib.sha256).hexdigest()
        headers["authorization"] = ("AWS4-HMAC-SHA256 Credential=%s/%s, SignedHeaders=%s, "
                                    "Signature=%s" % (self.ak, scope, ";".join(names), sig))
        url = self.endpoint + cpath + ("?" + cquery if cquery else "")
        req = urllib.request.Request(url, data=body if method in ("PUT", "POST") else None,
                                     method=method, headers=headers)
        try:
            with urllib.request.urlopen(req, timeout=30) as r:
                return r.status, r.read()
        except urllib.error.HTTPError as e:
            return e.code, e.read()

    def create_upload(self, key):
        status, body = self.request("POST", "/%s/%s" % (self.bucket, key), {"uploads": ""})
        assert status == 200, (status, body)
        return ET.fromstring(body).find("{*}UploadId").text

    def list_uploads(self, prefix):
        status, body = self.request("GET", "/" + self.bucket, {"uploads": "", "prefix": prefix})
        assert status == 200, (status, body)
        return [(u.find("{*}Key").text, u.find("{*}UploadId").text)
                for u in ET.fromstring(body).iter("{http://s3.amazonaws.com/doc/2006-03-01/}Upload")]

    def list_keys(self, prefix):
        status, body = self.request("GET", "/" + self.bucket, {"list-type": "2", "prefix": prefix})
        assert status == 200, (status, body)
        return [c.find("{*}Key").text
                for c in ET.fromstring(body).iter("{http://s3.amazonaws.com/doc/2006-03-01/}Contents")]

    def remove_notification(self, topic, arn):
        """Undo what a daemon with events on configured."""
        self.request("DELETE", "/" + self.bucket, {"notification": topic})
        form = urllib.parse.urlencode({"Action": "DeleteTopic", "TopicArn": arn}).encode()
        self.request("POST", "/", body=form, service="sns",
                     ctype="application/x-www-form-urlencoded; charset=utf-8")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(pred, timeout, what):
    deadline = time.time() + timeout
    while time.time() < deadline:
        v = pred()
        if v:
            return v
        time.sleep(0.2)
    raise AssertionError("timed out waiting for " + what)


def rgw_seq(sec, nsec=0):
    """An RGW sequencer: the hex of (seconds, nanoseconds), each 32-bit little-endian."""
    return (sec.to_bytes(4, "little") + nsec.to_bytes(4, "little")).hex().upper()


class EventsTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        require_services()
        cls.token = secrets.token_urlsafe(24) + "+/="
        cls.topic = "pockity-test-" + secrets.token_hex(4)
        port = free_port()
        cls.d = Daemon(port=port, events__enabled="true", events__token=cls.token,
                       events__topic=cls.topic,
                       events__push_url="http://127.0.0.1:%d/v1/events/s3" % port,
                       reconcile__interval="3600")
        cls.raw = RawS3()
        try:
            wait_for(lambda: "events: bucket notifications" in cls.d.log(), 60,
                     "the bucket notification set-up")
        except AssertionError:
            cls.tearDownClass()
            raise

    @classmethod
    def tearDownClass(cls):
        m = re.search(r"go to topic '([^']+)'", cls.d.log())
        if m:
            cls.raw.remove_notification(cls.topic, m.group(1))
        cls.d.stop()

    def setUp(self):
        self.utoken, _, _, _ = self.d.new_user()
        self.pocket = self.d.new_pocket(self.utoken)
        self.key = self.d.new_key(self.utoken, self.pocket["id"])["key"]

    def usage(self):
        r = self.d.request("GET", "/v1/pockets/" + self.pocket["id"], token=self.utoken)
        self.assertEqual(r.status, 200, r)
        return r.body["usage"]["bytes"], r.body["usage"]["objects"]

    def push(self, records, token=None, raw=None):
        tok = self.token if token is None else token
        path = "/v1/events/s3?token=" + urllib.parse.quote(tok, safe="")
        if raw is not None:
            return self.d.request("POST", path, raw=raw)
        return self.d.request("POST", path, {"Records": records})

    def record(self, name, key, size=0, seq=None, source="ceph:s3"):
        obj = {"key": key, "size": size, "eTag": "e" + str(size)}
        if seq is not None:
            obj["sequencer"] = seq
        return {"eventVersion": "2.2", "eventSource": source, "eventName": name,
                "s3": {"bucket": {"name": os.environ["POCKITY_S3_BUCKET"]}, "object": obj}}

    def test_direct_writes_show_through_events(self):
        r = self.d.request("POST", "/v1/session", token=self.key)
        self.assertEqual(r.status, 200, r)
        creds, prefix = r.body, self.pocket["prefix"]
        self.assertEqual(s3_put_bytes(creds, prefix + "a b+c.txt", b"x" * 1234), 0)
        # RGW discovers a new persistent topic's queue within ~30 s; then pushes at once
        wait_for(lambda: self.usage() == (1234, 1), 60, "the first event")
        t0 = time.time()
        self.assertEqual(s3_put_bytes(creds, prefix + "dir/two", b"y" * 66), 0)
        self.assertEqual(s3_put_bytes(creds, prefix + "a b+c.txt", b"x" * 34), 0)  # overwrite
        wait_for(lambda: self.usage() == (100, 2), 10, "two more events")
        self.assertEqual(s3tool(creds, "rm", prefix + "a b+c.txt")[0], 0)
        wait_for(lambda: self.usage() == (66, 1), 10, "the removal")
        self.assertLess(time.time() - t0, 10)
        self.assertEqual(s3tool(creds, "rm", prefix + "dir/two")[0], 0)
        wait_for(lambda: self.usage() == (0, 0), 10, "the second removal")

    def test_replayed_and_out_of_order_records(self):
        key = self.pocket["prefix"] + "k"
        base = int(time.time())
        create1 = self.record("ObjectCreated:Put", key, 10, rgw_seq(base, 255))
        # a later nanosecond of the same second: its little-endian hex sorts lower
        create2 = self.record("ObjectCreated:Put", key, 30, rgw_seq(base, 256))
        delete = self.record("ObjectRemoved:Delete", key, 0, rgw_seq(base + 1, 1))
        r = self.push([create2])
        self.assertEqual(r.status, 200, r)
        self.assertEqual(r.body, {"applied": 1, "stale": 0, "outside": 0, "ignored": 0,
                                  "invalid": 0})
        self.assertEqual(self.usage(), (30, 1))
        # an older create arriving late, and a replay: nothing changes
        r = self.push([create1, create2])
        self.assertEqual((r.status, r.body["stale"], r.body["applied"]), (200, 2, 0), r)
        self.assertEqual(self.usage(), (30, 1))
        self.assertEqual(self.push([delete]).body["applied"], 1)
        self.assertEqual(self.usage(), (0, 0))
        # a late create never resurrects the deleted object
        for rec in (create2, create1, delete):
            self.assertEqual(self.push([rec]).body["stale"], 1)
        self.assertEqual(self.usage(), (0, 0))
        # a removal that arrives before its object's creation
        key2 = self.pocket["prefix"] + "early/removal"
        r = self.push([self.record("ObjectRemoved:Delete", key2, 0, rgw_seq(base, 700)),
                       self.record("ObjectCreated:Put", key2, 7, rgw_seq(base, 600))])
        self.assertEqual((r.body["applied"], r.body["stale"]), (1, 1), r)
        self.assertEqual(self.usage(), (0, 0))
        # AWS-shaped records: URL-encoded keys, hex sequencers of any length
        akey = self.pocket["prefix"] + "with space+plus"
        enc = urllib.parse.quote_plus(akey, safe="/")
        r = self.push([self.record("s3:ObjectCreated:Put", enc, 5, "0A", "aws:s3"),
                       self.record("s3:ObjectCreated:Put", enc, 9, "9", "aws:s3")])
        self.assertEqual((r.body["applied"], r.body["stale"]), (1, 1), r)
        self.assertEqual(self.usage(), (5, 1))
        r = self.push([self.record("s3:ObjectRemoved:Delete", enc, 0, "0B", "aws:s3")])
        self.assertEqual(self.usage(), (0, 0))
        # without sequencers records apply in the order pushed
        r = self.push([self.record("ObjectCreated:Put", key2 + "x", 3),
                       self.record("ObjectCreated:Put", key2 + "x", 4)])
        self.assertEqual(r.body["applied"], 2)
        self.assertEqual(self.usage(), (4, 1))

    def ledger(self, pocket):
        rows = self.d.sql("SELECT key, size, etag, sequencer, deleted FROM objects"
                          " WHERE pocket_id = %s", (pocket["id"],))
        # psql reads NULL as ""
        return {k: (int(size), etag or None, seq or None, int(deleted))
                for k, size, etag, seq, deleted in rows}

    def test_one_push_over_pockets_and_keys(self):
        """A push of records of two pockets, several of the same keys, with
        and without sequencers, stale ones among them: each row and total as
        applying the records one by one leaves them, also when the totals had
        drifted below the ledger and clamp at zero on the way."""
        other = self.d.new_pocket(self.utoken)
        p1, p2 = self.pocket["prefix"], other["prefix"]
        base = int(time.time())

        def seq(n):  # what the ledger keeps of rgw_seq(base, n)
            return "%016X%08X%08X" % (0, base, n)

        def created(key, size, n=None):
            return self.record("ObjectCreated:Put", key, size, None if n is None else rgw_seq(base, n))

        def removed(key, n):
            return self.record("ObjectRemoved:Delete", key, 0, rgw_seq(base, n))

        root = p1.split("/")[0]
        r = self.push([created(p1 + "x", 10, 1), created(p2 + "x", 20, 1),
                       created(p1 + "x", 15, 3),  # an overwrite, another size
                       created(p1 + "x", 99, 2),  # older than the last: stale
                       removed(p2 + "x", 2),
                       created(p2 + "x", 5, 1),  # a replay: stale
                       removed(p1 + "never", 5),  # a key the ledger never had
                       created(p1 + "never", 7, 4),  # its create, late: stale
                       created(p1 + "plain", 3), created(p1 + "plain", 4),  # in push order
                       created(root + "/pkt_nosuchpocket/x", 1)])
        self.assertEqual(r.status, 200, r)
        self.assertEqual(r.body, {"applied": 7, "stale": 3, "outside": 1, "ignored": 0,
                                  "invalid": 0})
        self.assertEqual(self.ledger(self.pocket), {"x": (15, "e15", seq(3), 0),
                                                    "never": (0, None, seq(5), 1),
                                                    "plain": (4, "e4", None, 0)})
        self.assertEqual(self.ledger(other), {"x": (0, None, seq(2), 1)})
        self.assertEqual(self.usage(), (19, 2))
        r = self.d.request("GET", "/v1/pockets/" + other["id"], token=self.utoken)
        self.assertEqual(r.body["usage"], {"bytes": 0, "objects": 0})
        # totals below the ledger (as after a bug): each change clamps at zero
        self.d.sql("UPDATE pockets SET used_bytes = 5, used_objects = 0 WHERE id = %s",
                   (self.pocket["id"],))
        r = self.push([removed(p1 + "x", 6), created(p1 + "y", 8)])
        self.assertEqual((r.body["applied"], r.body["stale"]), (2, 0), r)
        self.assertEqual(self.usage(), (8, 1))  # (5 - 15 -> 0) + 8; (0 - 1 -> 0) + 1

    def test_records_outside_pockets_and_bad_records(self):
        before = self.metric('pockityd_events_records_total{result="outside"}')
        root = self.pocket["prefix"].split("/")[0]
        recs = [self.record("ObjectCreated:Put", "elsewhere/x", 1),
                self.record("ObjectCreated:Put", root + "/pkt_nosuchpocket/x", 1),
                self.record("ObjectCreated:Put", self.pocket["prefix"], 1),  # the prefix itself
                self.record("ObjectCreated:Put", root + "/../x/y", 1),
                self.record("ObjectRestore:Post", self.pocket["prefix"] + "r", 1),
                self.record("ObjectCreated:Put", self.pocket["prefix"] + "s", -1),
                self.record("ObjectCreated:Put", self.pocket["prefix"] + "s", "12x"),
                self.record("ObjectCreated:Put", "", 1),
                {"eventName": 5}, "not an object",
                self.record("ObjectCreated:Put", self.pocket["prefix"] + "ok", "12")]
        other = self.record("ObjectCreated:Put", self.pocket["prefix"] + "b", 1)
        other["s3"]["bucket"]["name"] = "another-bucket"
        recs.append(other)
        bad_utf8 = self.record("s3:ObjectCreated:Put", self.pocket["prefix"] + "%FF", 1, None,
                               "aws:s3")
        recs.append(bad_utf8)
        r = self.push(recs)
        self.assertEqual(r.status, 200, r)
        self.assertEqual(r.body, {"applied": 1, "stale": 0, "outside": 5, "ignored": 1,
                                  "invalid": 6}, r)
        self.assertEqual(self.usage(), (12, 1))
        self.assertEqual(self.metric('pockityd_events_records_total{result="outside"}'),
                         before + 5)

    def metric(self, name):
        r = self.d.request("GET", "/metrics")
        for line in r.raw.decode().splitlines():
            if line.startswith(name + " "):
                return int(float(line.split()[1]))
        return 0

    def test_forged_token_is_refused(self):
        rec = [self.record("ObjectCreated:Put", self.pocket["prefix"] + "f", 99)]
        for tok in ("", "wrong", self.token[:-1], self.token + "x", "x" * 600):
            r = self.push(rec, token=tok)
            self.assertEqual(r.status, 401, (tok, r))
            self.assertEqual(r.body["error"]["code"], "unauthenticated")
        r = self.d.request("POST", "/v1/events/s3", {"Records": rec})
        self.assertEqual(r.status, 401, r)
        r = self.d.request("POST", "/v1/events/s3", {"Records": rec},
                           headers={"Authorization": "Bearer nope"})
        self.assertEqual(r.status, 401, r)
        self.assertEqual(self.usage(), (0, 0))
        # the right token as a bearer works too
        r = self.d.request("POST", "/v1/events/s3", {"Records": rec},
                           headers={"Authorization": "Bearer " + self.token})
        self.assertEqual(r.status, 200, r)
        self.assertEqual(self.usage(), (99, 1))

    def test_bad_documents(self):
        for raw in (b"", b"{", b"[]", b'{"Records": {}}', b'{"records": []}', b"null",
                    b'{"Records": [' + b",".join([b"{}"] * 1001) + b"]}"):
            r = self.push(None, raw=raw)
            self.assertEqual(r.status, 400, (raw[:40], r))
            self.assertEqual(r.body["error"]["code"], "invalid_request")
        # a forged token with a bad body is still 401: nothing is read first
        r = self.push(None, token="bad", raw=b"{")
        self.assertEqual(r.status, 401, r)
        r = self.push([])
        self.assertEqual((r.status, r.body["applied"]), (200, 0))


class EventsOffTest(unittest.TestCase):
    def test_no_token_configured(self):
        with Daemon(reconcile__interval="0") as d:
            r = d.request("POST", "/v1/events/s3?token=x", {"Records": []})
            self.assertEqual(r.status, 404, r)


if __name__ == "__main__":
    require_services()
    unittest.main()
