"""API keys and mount sessions, end to end: keys CRUD and bad input, STS
credentials scoped to the pocket's prefix (checked against the real RGW),
revoked and expired keys, pending and suspended pockets, and keys of one
pocket kept away from another pocket's reservations."""

import json
import os
import secrets
import sys
import tempfile
import time
import unittest

from harness import Daemon, require_services, s3_put_bytes, s3tool


def s3_get_bytes(creds, key):
    """GET key with creds: (s3tool's exit status, the bytes read)."""
    with tempfile.NamedTemporaryFile() as f:
        rc = s3tool(creds, "get", key, f.name)[0]
        return rc, f.read() if rc == 0 else b""


def tier(d, max_bytes=1 << 30, max_objects=10000, needs_approval=False):
    tid = "t-" + secrets.token_hex(4)
    r = d.request("POST", "/v1/admin/tiers",
                  {"id": tid, "name": tid, "max_bytes": max_bytes, "max_objects": max_objects,
                   "needs_approval": needs_approval}, token=d.admin_token())
    assert r.status == 201, r
    return tid


class KeysTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.d = Daemon()

    @classmethod
    def tearDownClass(cls):
        cls.d.stop()

    def setUp(self):
        self.token, self.user, self.email, self.password = self.d.new_user()
        self.pocket = self.d.new_pocket(self.token)
        self.assertEqual(self.pocket["status"], "active")

    def keys_path(self, pocket=None):
        return "/v1/pockets/%s/keys" % (pocket or self.pocket)["id"]

    def session(self, key, status=200):
        r = self.d.request("POST", "/v1/session", token=key["key"])
        self.assertEqual(r.status, status, r)
        return r.body

    # -- keys --

    def test_create_list_revoke(self):
        now = int(time.time())
        r = self.d.request("POST", self.keys_path(), {"name": "laptop"}, token=self.token)
        self.assertEqual(r.status, 201, r)
        k = r.body
        self.assertEqual(k["name"], "laptop")
        self.assertEqual(k["access"], "rw")
        self.assertIsNone(k["expires_at"])
        self.assertTrue(k["key"].startswith("pky_%s_" % k["id"]), k)
        self.assertEqual(len(k["key"]), 68)
        self.assertLessEqual(abs(k["created_at"] - now), 5)

        exp = now + 3600
        r = self.d.request("POST", self.keys_path(),
                           {"name": "reader é", "access": "ro", "expires_at": exp},
                           token=self.token)
        self.assertEqual(r.status, 201, r)
        ro = r.body
        self.assertEqual((ro["access"], ro["expires_at"], ro["name"]), ("ro", exp, "reader é"))

        r = self.d.request("GET", self.keys_path(), token=self.token)
        self.assertEqual(r.status, 200, r)
        listed = {x["id"]: x for x in r.body["keys"]}
        self.assertEqual(set(listed), {k["id"], ro["id"]})
        for x in listed.values():
            self.assertNotIn("key", x)
            self.assertNotIn("secret_hash", x)
            for field in ("id", "name", "access", "created_at", "expires_at", "revoked_at",
                          "last_used_at", "last_used_addr"):
                self.assertIn(field, x)
            self.assertIsNone(x["revoked_at"])
            self.assertIsNone(x["last_used_at"])
        self.assertNotIn(k["key"], r.raw.decode())

        # Use records last use.
        self.session(k)
        r = self.d.request("GET", self.keys_path(), token=self.token)
        used = {x["id"]: x for x in r.body["keys"]}[k["id"]]
        self.assertIsNotNone(used["last_used_at"])
        self.assertEqual(used["last_used_addr"], "127.0.0.1")

        # The audit log records the creation, never the secret.
        r = self.d.request("GET", "/v1/admin/audit?action=key.create&target_id=" + k["id"],
                           token=self.d.admin_token())
        self.assertEqual(r.status, 200, r)
        self.assertEqual(len(r.body["entries"]), 1, r)
        self.assertEqual(r.body["entries"][0]["actor_id"], self.user["id"])
        self.assertNotIn(k["key"].split("_")[-1], r.raw.decode())

        # Revoke: 204, idempotent, shown in the list, audited once.
        self.assertEqual(self.d.request("DELETE", "/v1/keys/" + k["id"], token=self.token).status,
                         204)
        self.assertEqual(self.d.request("DELETE", "/v1/keys/" + k["id"], token=self.token).status,
                         204)
        r = self.d.request("GET", self.keys_path(), token=self.token)
        revoked = {x["id"]: x for x in r.body["keys"]}[k["id"]]
        self.assertIsNotNone(revoked["revoked_at"])
        r = self.d.request("GET", "/v1/admin/audit?action=key.revoke&target_id=" + k["id"],
                           token=self.d.admin_token())
        self.assertEqual(len(r.body["entries"]), 1, r)

        # A revoked key gets no session.
        body = self.session(k, 401)
        self.assertEqual(body["error"]["code"], "unauthenticated")
        self.assertIn("revoked", body["error"]["message"])
        self.session(ro)

    def test_quota_routes_see_changes_at_once(self):
        """The quota routes remember keys they verified (pockityd/keycache.h);
        a revocation, the owner's suspension or the pocket's deletion made
        through this daemon still refuses the very next call."""
        def reserve(key):
            return self.d.request("POST", "/v1/reservations", {"key": "f", "bytes": 1},
                                  token=key["key"])

        # Revocation.
        k = self.d.new_key(self.token, self.pocket["id"])
        self.assertEqual(reserve(k).status, 201)
        self.assertEqual(reserve(k).status, 201)  # served from the cache
        self.assertEqual(self.d.request("DELETE", "/v1/keys/" + k["id"], token=self.token).status,
                         204)
        r = reserve(k)
        self.assertEqual(r.status, 401, r)
        self.assertIn("revoked", r.body["error"]["message"])

        # A wrong secret with a cached id is still refused.
        k = self.d.new_key(self.token, self.pocket["id"])
        self.assertEqual(reserve(k).status, 201)
        forged = dict(k, key=k["key"][:-1] + ("A" if k["key"][-1] != "A" else "B"))
        r = reserve(forged)
        self.assertEqual(r.status, 401, r)
        self.assertEqual(r.body["error"]["code"], "unauthenticated")

        # The owner's suspension, then lifted.
        admin = self.d.admin_token()
        r = self.d.request("POST", "/v1/admin/users/%s/suspend" % self.user["id"], token=admin)
        self.assertEqual(r.status, 200, r)
        r = reserve(k)
        self.assertEqual(r.status, 401, r)
        self.assertIn("suspended", r.body["error"]["message"])
        r = self.d.request("POST", "/v1/admin/users/%s/unsuspend" % self.user["id"], token=admin)
        self.assertEqual(r.status, 200, r)
        self.assertEqual(reserve(k).status, 201)

        # The pocket's deletion revokes its keys (the suspension ended the login).
        r = self.d.request("POST", "/v1/auth/login", {"email": self.email,
                                                      "password": self.password})
        self.assertEqual(r.status, 200, r)
        self.token = r.body["token"]
        r = self.d.request("DELETE", "/v1/pockets/" + self.pocket["id"], token=self.token)
        self.assertEqual(r.status, 202, r)
        r = reserve(k)
        self.assertEqual(r.status, 401, r)
        self.assertIn("revoked", r.body["error"]["message"])

    def test_bad_input(self):
        bad = [
            {},
            {"name": ""},
            {"name": "x" * 65},
            {"name": "tab\there"},
            {"name": 5},
            {"name": "k", "access": "rx"},
            {"name": "k", "access": "r"},
            {"name": "k", "access": "read-delete"},
            {"name": "k", "expires_at": int(time.time()) - 10},
            {"name": "k", "expires_at": "tomorrow"},
            {"name": "k", "expires_at": 1 << 62},
            {"name": "k", "extra": 1},
        ]
        for body in bad:
            r = self.d.request("POST", self.keys_path(), body, token=self.token)
            self.assertEqual(r.status, 400, (body, r))
            self.assertEqual(r.body["error"]["code"], "invalid_request")
        r = self.d.request("POST", self.keys_path(), raw="[1]", token=self.token,
                           headers={"Content-Type": "application/json"})
        self.assertEqual(r.status, 400, r)
        # 64 bytes of UTF-8 is the limit, not 64 characters.
        r = self.d.request("POST", self.keys_path(), {"name": "é" * 32}, token=self.token)
        self.assertEqual(r.status, 201, r)
        r = self.d.request("POST", self.keys_path(), {"name": "é" * 33}, token=self.token)
        self.assertEqual(r.status, 400, r)
        # No token, a bad token, an API key instead of a login.
        self.assertEqual(self.d.request("POST", self.keys_path(), {"name": "k"}).status, 401)
        self.assertEqual(self.d.request("GET", self.keys_path()).status, 401)
        self.assertEqual(self.d.request("GET", self.keys_path(), token="pks_nope").status, 401)
        key = self.d.new_key(self.token, self.pocket["id"])
        self.assertEqual(self.d.request("GET", self.keys_path(), token=key["key"]).status, 401)
        # Unknown pockets, odd ids.
        for pid in ("pkt_" + "a" * 20, "UPPER", "x" * 65, "a%C3%28b", "%E2%80%A8"):
            r = self.d.request("POST", "/v1/pockets/%s/keys" % pid, {"name": "k"},
                               token=self.token)
            self.assertEqual(r.status, 404, (pid, r))
            r = self.d.request("GET", "/v1/pockets/%s/keys" % pid, token=self.token)
            self.assertEqual(r.status, 404, (pid, r))
        for kid in ("a" * 20, "A" * 20, "x", "%C3%28", "a" * 200):
            r = self.d.request("DELETE", "/v1/keys/" + kid, token=self.token)
            self.assertEqual(r.status, 404, (kid, r))

    def test_other_users_pocket(self):
        other, _, _, _ = self.d.new_user()
        key = self.d.new_key(self.token, self.pocket["id"])
        r = self.d.request("POST", self.keys_path(), {"name": "k"}, token=other)
        self.assertEqual(r.status, 404, r)
        r = self.d.request("GET", self.keys_path(), token=other)
        self.assertEqual(r.status, 404, r)
        r = self.d.request("DELETE", "/v1/keys/" + key["id"], token=other)
        self.assertEqual(r.status, 404, r)
        self.session(key)  # still valid
        # An administrator may list and revoke.
        r = self.d.request("GET", self.keys_path(), token=self.d.admin_token())
        self.assertEqual(r.status, 200, r)
        self.assertEqual([x["id"] for x in r.body["keys"]], [key["id"]])
        r = self.d.request("DELETE", "/v1/keys/" + key["id"], token=self.d.admin_token())
        self.assertEqual(r.status, 204, r)
        self.session(key, 401)
        r = self.d.request("GET", "/v1/admin/audit?action=key.revoke&target_id=" + key["id"],
                           token=self.d.admin_token())
        self.assertEqual(r.body["entries"][0]["actor_type"], "admin")

    def test_key_cap(self):
        keys = [self.d.new_key(self.token, self.pocket["id"]) for _ in range(50)]
        r = self.d.request("POST", self.keys_path(), {"name": "one too many"}, token=self.token)
        self.assertEqual(r.status, 409, r)
        self.assertEqual(r.body["error"]["code"], "conflict")
        # Revoking one frees a place.
        self.d.request("DELETE", "/v1/keys/" + keys[0]["id"], token=self.token)
        r = self.d.request("POST", self.keys_path(), {"name": "again"}, token=self.token)
        self.assertEqual(r.status, 201, r)

    def test_expired_key(self):
        r = self.d.request("POST", self.keys_path(),
                           {"name": "short", "expires_at": int(time.time()) + 2},
                           token=self.token)
        self.assertEqual(r.status, 201, r)
        key = r.body
        self.session(key)
        time.sleep(3.2)
        body = self.session(key, 401)
        self.assertIn("expired", body["error"]["message"])
        r = self.d.request("POST", "/v1/reservations", {"key": "a", "bytes": 1},
                           token=key["key"])
        self.assertEqual(r.status, 401, r)

    def test_bad_api_keys(self):
        key = self.d.new_key(self.token, self.pocket["id"])
        self.assertEqual(self.d.request("POST", "/v1/session").status, 401)
        self.assertEqual(self.d.request("POST", "/v1/session", token=self.token).status, 401)
        forged = key["key"][:-4] + ("AAAA" if not key["key"].endswith("AAAA") else "BBBA")
        self.assertEqual(self.d.request("POST", "/v1/session", token=forged).status, 401)
        r = self.d.request("POST", "/v1/session", {"unexpected": 1}, token=key["key"])
        self.assertEqual(r.status, 400, r)

    # -- sessions against the real RGW --

    def test_session_scoped_credentials(self):
        rw = self.d.new_key(self.token, self.pocket["id"], "rw")
        ro = self.d.new_key(self.token, self.pocket["id"], "ro")
        s = self.session(rw)
        prefix = self.pocket["prefix"]
        self.assertTrue(prefix.endswith("/"))
        self.assertEqual(s["prefix"], prefix)
        self.assertEqual(s["bucket"], os.environ["POCKITY_S3_BUCKET"])
        self.assertEqual(s["region"], os.environ["POCKITY_S3_REGION"])
        self.assertEqual(s["endpoint"], os.environ["POCKITY_S3_ENDPOINT"])
        self.assertEqual(s["access"], "rw")
        self.assertGreater(s["expiration"], time.time() + 600)
        self.assertEqual(s["pocket"], {"id": self.pocket["id"], "name": self.pocket["name"],
                                       "status": "active"})
        self.assertEqual(s["usage"], {"bytes": 0, "objects": 0})
        self.assertEqual(s["reserved"], {"bytes": 0, "objects": 0})
        self.assertEqual(s["quota"], {"max_bytes": 1 << 30, "max_objects": 10000})
        for f in ("access_key_id", "secret_access_key", "session_token"):
            self.assertTrue(s[f], f)

        # Inside the pocket: write, read, list, delete.
        self.assertEqual(s3_put_bytes(s, prefix + "hello.txt", b"hello"), 0)
        self.assertEqual(s3_put_bytes(s, prefix + "dir/with space+plus.txt", b"x"), 0)
        self.assertEqual(s3_get_bytes(s, prefix + "hello.txt"), (0, b"hello"))
        rc, out, err = s3tool(s, "ls", prefix)
        self.assertEqual(rc, 0, err)
        self.assertIn("hello.txt", out)

        # Outside it: another pocket's prefix, the root prefix, the bucket root.
        other_token, _, _, _ = self.d.new_user()
        other = self.d.new_pocket(other_token)
        self.assertEqual(s3_put_bytes(None, other["prefix"] + "theirs", b"secret"), 0)
        self.assertEqual(s3_put_bytes(s, other["prefix"] + "x", b"x"), 3)
        self.assertEqual(s3_get_bytes(s, other["prefix"] + "theirs")[0], 3)
        self.assertEqual(s3tool(s, "ls", other["prefix"])[0], 3)
        self.assertEqual(s3tool(s, "rm", other["prefix"] + "theirs")[0], 3)
        self.assertEqual(s3_put_bytes(s, "at-the-root", b"x"), 3)
        self.assertEqual(s3tool(s, "ls", "")[0], 3)
        root = prefix.split("/")[0] + "/"
        self.assertEqual(s3tool(s, "ls", root)[0], 3)
        # A sibling whose id starts like ours is outside too.
        self.assertEqual(s3_put_bytes(s, prefix[:-1] + "x/y", b"x"), 3)

        # A read-only key reads and cannot write or delete.
        r = self.session(ro)
        self.assertEqual(r["access"], "ro")
        self.assertEqual(s3_get_bytes(r, prefix + "hello.txt"), (0, b"hello"))
        self.assertEqual(s3_put_bytes(r, prefix + "nope", b"x"), 3)
        self.assertEqual(s3tool(r, "rm", prefix + "hello.txt")[0], 3)
        self.assertEqual(s3tool(r, "ls", prefix)[0], 0)

        self.assertEqual(s3tool(s, "rm", prefix + "hello.txt")[0], 0)
        self.assertEqual(s3tool(s, "rm", prefix + "dir/with space+plus.txt")[0], 0)
        self.assertEqual(s3tool(None, "rm", other["prefix"] + "theirs")[0], 0)

        r = self.d.request("GET", "/metrics")
        self.assertIn("pockityd_sessions_issued_total", r.raw.decode())

    def test_over_quota_session_is_read_delete(self):
        tid = tier(self.d, max_bytes=100, max_objects=10)
        pocket = self.d.new_pocket(self.token, tier=tid)
        key = self.d.new_key(self.token, pocket["id"])
        r = self.d.request("POST", "/v1/reservations", {"key": "big", "bytes": 10},
                           token=key["key"])
        self.assertEqual(r.status, 201, r)
        s = self.session(key)
        self.assertEqual(s["access"], "rw")
        self.assertEqual(s3_put_bytes(s, pocket["prefix"] + "big", b"y" * 150), 0)
        # S3 holds 150 bytes: the commit records them although 10 were reserved.
        r = self.d.request("POST", "/v1/reservations/%s/commit" % r.body["id"],
                           {"bytes": 150, "etag": "\"e\""}, token=key["key"])
        self.assertEqual(r.status, 200, r)
        self.assertEqual(r.body["usage"], {"bytes": 150, "objects": 1})
        s = self.session(key)
        self.assertEqual(s["access"], "read-delete")
        self.assertEqual(s["usage"], {"bytes": 150, "objects": 1})
        self.assertEqual(s3_get_bytes(s, pocket["prefix"] + "big"), (0, b"y" * 150))
        self.assertEqual(s3_put_bytes(s, pocket["prefix"] + "more", b"x"), 3)
        self.assertEqual(s3tool(s, "rm", pocket["prefix"] + "big")[0], 0)
        r = self.d.request("POST", "/v1/objects/deleted", {"keys": ["big"]}, token=key["key"])
        self.assertEqual(r.status, 200, r)
        self.assertEqual(r.body["deleted"], 1)
        self.assertEqual(self.session(key)["access"], "rw")
        # A read-only key stays read-only whatever the usage.
        ro = self.d.new_key(self.token, pocket["id"], "ro")
        self.assertEqual(self.session(ro)["access"], "ro")

    def test_pending_and_suspended_pockets(self):
        tid = tier(self.d, needs_approval=True)
        pending = self.d.new_pocket(self.token, tier=tid)
        self.assertEqual(pending["status"], "pending")
        key = self.d.new_key(self.token, pending["id"])
        body = self.session(key, 403)
        self.assertEqual(body["error"]["code"], "forbidden")
        self.assertEqual(body["error"]["message"], "pocket is pending approval")
        r = self.d.request("POST", "/v1/reservations", {"key": "a", "bytes": 1},
                           token=key["key"])
        self.assertEqual(r.status, 403, r)

        key = self.d.new_key(self.token, self.pocket["id"])
        self.session(key)
        r = self.d.request("POST", "/v1/admin/pockets/%s/suspend" % self.pocket["id"],
                           {"reason": "test"}, token=self.d.admin_token())
        self.assertEqual(r.status, 200, r)
        body = self.session(key, 403)
        self.assertEqual(body["error"]["message"], "pocket is suspended")
        r = self.d.request("POST", "/v1/reservations", {"key": "a", "bytes": 1},
                           token=key["key"])
        self.assertEqual(r.status, 403, r)
        self.assertEqual(r.body["error"]["message"], "pocket is suspended")
        r = self.d.request("POST", "/v1/admin/pockets/%s/unsuspend" % self.pocket["id"],
                           {}, token=self.d.admin_token())
        self.assertEqual(r.status, 200, r)
        self.session(key)

    def test_keys_of_another_pocket(self):
        mine = self.d.new_key(self.token, self.pocket["id"])
        other_pocket = self.d.new_pocket(self.token)
        theirs = self.d.new_key(self.token, other_pocket["id"])
        r = self.d.request("POST", "/v1/reservations", {"key": "f", "bytes": 5},
                           token=mine["key"])
        self.assertEqual(r.status, 201, r)
        rid = r.body["id"]
        r = self.d.request("POST", "/v1/reservations/%s/commit" % rid,
                           {"bytes": 5, "etag": "\"x\""}, token=theirs["key"])
        self.assertEqual(r.status, 404, r)
        r = self.d.request("DELETE", "/v1/reservations/" + rid, token=theirs["key"])
        self.assertEqual(r.status, 404, r)
        # Still there for its own pocket.
        r = self.d.request("POST", "/v1/reservations/%s/commit" % rid,
                           {"bytes": 5, "etag": "\"x\""}, token=mine["key"])
        self.assertEqual(r.status, 200, r)
        # Deletions reported with the other pocket's key do not touch this one.
        r = self.d.request("POST", "/v1/objects/deleted", {"keys": ["f"]}, token=theirs["key"])
        self.assertEqual((r.status, r.body["deleted"]), (200, 0))
        r = self.d.request("GET", "/v1/pockets/" + self.pocket["id"], token=self.token)
        self.assertEqual(r.body["usage"], {"bytes": 5, "objects": 1})

    def test_read_only_key_cannot_write_the_ledger(self):
        ro = self.d.new_key(self.token, self.pocket["id"], "ro")
        for method, path, body in (("POST", "/v1/reservations", {"key": "a", "bytes": 1}),
                                   ("POST", "/v1/objects/deleted", {"keys": ["a"]}),
                                   ("POST", "/v1/reservations/rsv_%s/commit" % ("a" * 20),
                                    {"bytes": 1, "etag": "e"}),
                                   ("DELETE", "/v1/reservations/rsv_" + "a" * 20, None)):
            r = self.d.request(method, path, body, token=ro["key"])
            self.assertEqual(r.status, 403, (path, r))
            self.assertEqual(r.body["error"]["code"], "forbidden")


if __name__ == "__main__":
    require_services()
    unittest.main(verbosity=2)
