"""Harness for pockityd's integration tests: a real pockityd process on a free
port with a fresh database (SQLite, or PostgreSQL when POCKITY_TEST_BACKEND is
"postgres"), against the real local Ceph RGW, plus small HTTP and S3 helpers.

Environment (exported by ./scripts/test; see scripts/s3-local env and
scripts/pg-local env): POCKITY_BUILD_DIR, POCKITY_S3_ENDPOINT, POCKITY_S3_REGION,
POCKITY_S3_BUCKET, POCKITY_S3_ACCESS_KEY, POCKITY_S3_SECRET_KEY,
POCKITY_S3_ROLE_ARN, and POCKITY_PG_URL for the PostgreSQL backend. A test run
without them is skipped (exit 77) with the reason printed.
"""

import atexit
import json
import os
import secrets
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request

SKIP = 77
S3_VARS = ("POCKITY_S3_ENDPOINT", "POCKITY_S3_REGION", "POCKITY_S3_BUCKET",
           "POCKITY_S3_ACCESS_KEY", "POCKITY_S3_SECRET_KEY", "POCKITY_S3_ROLE_ARN")


def backend():
    return os.environ.get("POCKITY_TEST_BACKEND", "sqlite")


def require_services():
    """Exit 77 (skipped) when the services this test needs are not there."""
    missing = [v for v in S3_VARS + ("POCKITY_BUILD_DIR",) if not os.environ.get(v)]
    if backend() == "postgres" and not os.environ.get("POCKITY_PG_URL"):
        missing.append("POCKITY_PG_URL")
    if missing:
        print("skipped: %s not set (run ./scripts/test)" % ", ".join(missing))
        sys.exit(SKIP)


def build_path(*parts):
    return os.path.join(os.environ["POCKITY_BUILD_DIR"], *parts)


def _psql(url, sql):
    """Run sql on the PostgreSQL database url; its rows as lists of text."""
    pg_bin = os.environ.get("POCKITY_PG_BIN", "")
    psql = os.path.join(pg_bin, "psql") if pg_bin else "psql"
    r = subprocess.run([psql, "-X", "-q", "-At", "-F", "\x1f", "-v", "ON_ERROR_STOP=1", url,
                        "-c", sql], capture_output=True, text=True, check=True, timeout=60)
    return [line.split("\x1f") for line in r.stdout.splitlines() if line]


def fresh_pg_database():
    """Create an empty database on the test cluster; return its URL."""
    base = os.environ["POCKITY_PG_URL"]
    name = "t_" + secrets.token_hex(6)
    _psql(base, "CREATE DATABASE %s" % name)
    parts = urllib.parse.urlsplit(base)
    return urllib.parse.urlunsplit(parts._replace(path="/" + name))


_scratch = []


def _remove_scratch():
    for path in reversed(_scratch):
        held = [p for p in [path] + [os.path.join(path, n) for n in os.listdir(path)]
                if os.path.ismount(p)] if os.path.isdir(path) else []
        if held:  # never recurse into a mount still up: it would delete its files
            print("left %s: %s still mounted" % (path, held[0]), file=sys.stderr)
        else:
            shutil.rmtree(path, ignore_errors=True)


def scratch_dir(prefix):
    """A private temporary folder, removed when the test process exits (kept
    when POCKITY_KEEP_TEST_DIRS is set, for a look at logs and databases)."""
    path = tempfile.mkdtemp(prefix=prefix)
    if not os.environ.get("POCKITY_KEEP_TEST_DIRS"):
        if not _scratch:
            atexit.register(_remove_scratch)
        _scratch.append(path)
    return path


class Response:
    def __init__(self, status, body, headers, raw):
        self.status = status
        self.body = body
        self.headers = headers
        self.raw = raw

    def __iter__(self):  # status, body, headers = d.request(...)
        return iter((self.status, self.body, self.headers))

    def __repr__(self):
        return "<%d %r>" % (self.status, self.body if self.body is not None else self.raw[:200])


class Daemon:
    """One pockityd process. Daemon(db_url=other.db_url, token_secret=other.token_secret,
    root_prefix=other.root_prefix) starts a replica on the same database."""

    def __init__(self, db_url=None, token_secret=None, root_prefix=None, **settings):
        require_services()
        self.dir = scratch_dir("pockityd-test.")
        if db_url is None:
            if backend() == "postgres":
                db_url = fresh_pg_database()
            else:
                db_url = "sqlite:" + os.path.join(self.dir, "pockityd.db")
        self.db_url = db_url
        self.token_secret = token_secret or secrets.token_urlsafe(48)
        self.root_prefix = root_prefix or "test-" + secrets.token_hex(4)
        self.config = os.path.join(self.dir, "pockityd.ini")
        self.port_file = os.path.join(self.dir, "port")
        self.log_path = os.path.join(self.dir, "pockityd.log")
        sections = {
            "server": {"bind": "127.0.0.1", "port": "0", "port_file": self.port_file,
                       "threads": "16", "log_level": "info"},
            "database": {"url": self.db_url},
            "s3": {"endpoint": os.environ["POCKITY_S3_ENDPOINT"],
                   "region": os.environ["POCKITY_S3_REGION"],
                   "bucket": os.environ["POCKITY_S3_BUCKET"],
                   "role_arn": os.environ["POCKITY_S3_ROLE_ARN"],
                   "root_prefix": self.root_prefix},
            # cheap password hashing: tests log in a lot on two cores
            "auth": {"password_cost_kib": "1024", "password_cost_t": "1"},
            "quota": {},
        }
        for key, value in settings.items():
            section, _, name = key.rpartition("__")
            if not section:
                section = next((s for s in ("server", "database", "s3", "auth", "quota")
                                if name in _KNOWN.get(s, ())), "server")
            sections.setdefault(section, {})[name] = str(value)
        with open(self.config, "w") as f:
            for section, values in sections.items():
                f.write("[%s]\n" % section)
                for k, v in values.items():
                    f.write("%s = %s\n" % (k, v))
        self.env = dict(os.environ)
        # secrets through the environment, as documented
        self.env["POCKITYD_S3_ACCESS_KEY"] = os.environ["POCKITY_S3_ACCESS_KEY"]
        self.env["POCKITYD_S3_SECRET_KEY"] = os.environ["POCKITY_S3_SECRET_KEY"]
        self.env["POCKITYD_TOKEN_SECRET"] = self.token_secret
        self._admin = None
        self._sqlite = None
        self.proc = None
        self.start()

    # -- process --

    def start(self):
        if os.path.exists(self.port_file):
            os.unlink(self.port_file)
        log = open(self.log_path, "ab")
        self.proc = subprocess.Popen([build_path("pockityd", "pockityd"), "--config", self.config],
                                     env=self.env, stdout=log, stderr=log,
                                     stdin=subprocess.DEVNULL)
        log.close()
        deadline = time.time() + 30
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError("pockityd exited with %d:\n%s" % (self.proc.returncode,
                                                                      self.log()))
            if os.path.exists(self.port_file):
                with open(self.port_file) as f:
                    self.port = int(f.read().strip())
                self.url = "http://127.0.0.1:%d" % self.port
                return
            time.sleep(0.05)
        self.stop()
        raise RuntimeError("pockityd did not start:\n" + self.log())

    def stop(self, timeout=15):
        """SIGTERM, then SIGKILL after timeout. Returns the exit status."""
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self._sqlite is not None:
            self._sqlite.close()
            self._sqlite = None
        return self.proc.returncode if self.proc else None

    def sql(self, statement, params=()):
        """Run one statement straight on this daemon's database, either engine;
        its rows as lists of text (None for NULL). params fill %s placeholders
        (tests pass only ids, words and numbers)."""
        if self.db_url.startswith("sqlite:"):
            if self._sqlite is None:
                # Held until the daemon stops: a connection that closes while it
                # looks like the last one checkpoints and removes the write-ahead log.
                self._sqlite = sqlite3.connect(self.db_url[len("sqlite:"):], timeout=30,
                                               isolation_level=None, check_same_thread=False)
            cur = self._sqlite.execute(statement.replace("%s", "?") if params else statement,
                                       params)
            return [[None if v is None else str(v) for v in row] for row in cur.fetchall()]
        if params:
            statement %= tuple("NULL" if p is None else "'%s'" % str(p).replace("'", "''")
                               for p in params)
        return _psql(self.db_url, statement)

    def log(self):
        try:
            with open(self.log_path, errors="replace") as f:
                return f.read()
        except OSError:
            return ""

    def run(self, *args, input=None):
        """Run the pockityd binary with this daemon's config and extra args."""
        return subprocess.run([build_path("pockityd", "pockityd"), "--config", self.config]
                              + list(args), env=self.env, input=input, capture_output=True,
                              text=True, timeout=60)

    # -- HTTP --

    def request(self, method, path, body=None, token=None, headers=None, raw=None, timeout=30):
        """Send a request; body is JSON-encoded, raw is sent as is (bytes or str)."""
        hdrs = dict(headers or {})
        data = None
        if raw is not None:
            data = raw.encode() if isinstance(raw, str) else raw
        elif body is not None:
            data = json.dumps(body).encode()
            hdrs.setdefault("Content-Type", "application/json")
        if token:
            hdrs["Authorization"] = "Bearer " + token
        req = urllib.request.Request(self.url + path, data=data, method=method, headers=hdrs)
        try:
            with urllib.request.urlopen(req, timeout=timeout) as r:
                status, payload, rh = r.status, r.read(), dict(r.headers)
        except urllib.error.HTTPError as e:
            status, payload, rh = e.code, e.read(), dict(e.headers)
        parsed = None
        if payload:
            try:
                parsed = json.loads(payload)
            except ValueError:
                parsed = None
        return Response(status, parsed, rh, payload)

    # -- users --

    def admin_token(self):
        """Create an administrator once (pockityd --create-admin) and log in."""
        if self._admin is None:
            email = "admin-%s@example.com" % secrets.token_hex(4)
            password = "admin-password-" + secrets.token_hex(4)
            r = self.run("--create-admin", email, input=password + "\n")
            if r.returncode != 0:
                raise RuntimeError("create-admin failed: " + r.stderr)
            self._admin = (self.login(email, password), email, password)
        return self._admin[0]

    def login(self, email, password):
        r = self.request("POST", "/v1/auth/login", {"email": email, "password": password})
        if r.status != 200:
            raise RuntimeError("login failed: %r" % (r,))
        return r.body["token"]

    def new_user(self, name="Test User"):
        """Register and log in a fresh user: (token, user, email, password)."""
        email = "user-%s@example.com" % secrets.token_hex(6)
        password = "password-" + secrets.token_hex(6)
        r = self.request("POST", "/v1/auth/register",
                         {"email": email, "password": password, "name": name})
        if r.status != 201:
            raise RuntimeError("register failed: %r" % (r,))
        token = self.login(email, password)
        return token, r.body.get("user", r.body), email, password

    def new_pocket(self, token, name=None, tier="free"):
        r = self.request("POST", "/v1/pockets", {"name": name or "p" + secrets.token_hex(4),
                                                  "tier": tier}, token=token)
        if r.status != 201:
            raise RuntimeError("create pocket failed: %r" % (r,))
        return r.body

    def new_key(self, token, pocket_id, access="rw"):
        r = self.request("POST", "/v1/pockets/%s/keys" % pocket_id,
                         {"name": "k" + secrets.token_hex(3), "access": access}, token=token)
        if r.status != 201:
            raise RuntimeError("create key failed: %r" % (r,))
        return r.body

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()


_KNOWN = {
    "server": ("bind", "port", "threads", "max_body", "log_level", "syslog", "port_file"),
    "database": ("url", "pool"),
    "s3": ("endpoint", "public_endpoint", "region", "bucket", "role_arn", "root_prefix",
           "session_seconds"),
    "auth": ("login_ttl", "login_max_attempts", "login_window", "password_cost_kib",
             "password_cost_t", "token_secret_previous"),
    "quota": ("reservation_ttl", "sweep_interval"),
}


def s3tool(creds, *args, input_bytes=None):
    """Run tests/s3tool with credentials: a dict with access_key_id,
    secret_access_key and optionally session_token (the shape of POST /v1/session),
    or None for the root credentials. Returns (exit status, stdout, stderr):
    0 ok, 3 access denied, 4 not found, 1 other failure."""
    env = dict(os.environ)
    if creds is not None:
        env["POCKITY_S3_ACCESS_KEY"] = creds["access_key_id"]
        env["POCKITY_S3_SECRET_KEY"] = creds["secret_access_key"]
        if creds.get("session_token"):
            env["POCKITY_S3_SESSION_TOKEN"] = creds["session_token"]
        if creds.get("endpoint"):
            env["POCKITY_S3_ENDPOINT"] = creds["endpoint"]
    r = subprocess.run([build_path("tests", "s3tool")] + list(args), env=env,
                       capture_output=True, timeout=120)
    return r.returncode, r.stdout.decode(errors="replace"), r.stderr.decode(errors="replace")


def s3_put_bytes(creds, key, data):
    """PUT data (bytes) at key with creds; returns s3tool's exit status."""
    with tempfile.NamedTemporaryFile() as f:
        f.write(data)
        f.flush()
        return s3tool(creds, "put", key, f.name)[0]
