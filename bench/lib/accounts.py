#!/usr/bin/env python3
"""bench/lib/accounts.py: create what a benchmark needs through pockityd's API,
in one process: log the admin in, create the "bench" tier (no practical quota),
register and log in one user, create N active pockets on that tier with one rw
API key each.

usage: accounts.py URL ADMIN_EMAIL N KEYS_FILE  (the admin's password on stdin)
Writes the keys, one a line, to KEYS_FILE (mode 0600) and prints shell
assignments: ADMIN_TOKEN, USER_TOKEN, POCKET_IDS (an array)."""

import json
import os
import secrets
import sys
import urllib.error
import urllib.request


def call(base, method, path, body=None, token=None):
    headers = {"Content-Type": "application/json"}
    if token:
        headers["Authorization"] = "Bearer " + token
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(base + path, data=data, method=method, headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=60) as r:
            return json.loads(r.read() or b"null")
    except urllib.error.HTTPError as e:
        sys.exit("error: %s %s: HTTP %d: %s" % (method, path, e.code,
                                               e.read().decode(errors="replace")[:300]))


def main():
    if len(sys.argv) != 5:
        sys.exit("usage: accounts.py URL ADMIN_EMAIL N KEYS_FILE")
    base, admin_email, n, keys_file = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
    admin_pw = sys.stdin.readline().strip()
    admin = call(base, "POST", "/v1/auth/login", {"email": admin_email, "password": admin_pw})
    admin_token = admin["token"]
    call(base, "POST", "/v1/admin/tiers",
         {"id": "bench", "name": "Bench", "max_bytes": 1 << 50, "max_objects": 10 ** 9},
         admin_token)
    email = "user-%s@bench.local" % secrets.token_hex(4)
    password = "user-" + secrets.token_hex(8)
    call(base, "POST", "/v1/auth/register", {"email": email, "password": password, "name": "Bench"})
    user_token = call(base, "POST", "/v1/auth/login", {"email": email, "password": password})["token"]
    ids, keys = [], []
    for i in range(n):
        p = call(base, "POST", "/v1/pockets", {"name": "bench%d" % i, "tier": "bench"}, user_token)
        if p.get("status") != "active":
            sys.exit("error: pocket %s is %s, not active" % (p.get("id"), p.get("status")))
        k = call(base, "POST", "/v1/pockets/%s/keys" % p["id"], {"name": "bench", "access": "rw"},
                 user_token)
        ids.append(p["id"])
        keys.append(k["key"])
    fd = os.open(keys_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write("".join(k + "\n" for k in keys))
    print("ADMIN_TOKEN='%s'" % admin_token)
    print("USER_TOKEN='%s'" % user_token)
    print("POCKET_IDS=(%s)" % " ".join("'%s'" % i for i in ids))


if __name__ == "__main__":
    main()
