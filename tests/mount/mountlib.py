"""Helpers for the pockityfs mount tests: a pocket on a real pockityd (see
tests/integration/harness.py) mounted with the real pockityfs on a real FUSE
mount in a private temporary folder, always unmounted and stopped on exit."""

import os
import signal
import subprocess
import sys
import time

import harness

SKIP = 77


def require_fuse():
    if os.geteuid() != 0 or not os.path.exists("/dev/fuse"):
        print("skipped: mount tests need root and /dev/fuse")
        sys.exit(SKIP)
    for tool in ("fusermount3",):
        if subprocess.run(["which", tool], capture_output=True).returncode != 0:
            print("skipped: %s not installed" % tool)
            sys.exit(SKIP)


def is_mounted(path):
    path = os.path.realpath(path)
    with open("/proc/self/mounts") as f:
        return any(line.split()[1] == path for line in f)


class Pocket:
    """A user, a pocket (optionally of a given tier) and a read-write key."""

    def __init__(self, daemon, tier="free", access="rw"):
        self.daemon = daemon
        self.token = daemon.new_user()[0]
        self.pocket = daemon.new_pocket(self.token, tier=tier)
        self.id = self.pocket.get("id") or self.pocket.get("pocket", {}).get("id")
        self.key = daemon.new_key(self.token, self.id, access=access)
        self.secret = self.key.get("key") or self.key.get("secret") or self.key.get("api_key")


class Mount:
    """pockityfs SERVER MOUNTPOINT -f with a key file; .path is the mount."""

    def __init__(self, daemon, pocket, cache_dir=None, options=(), start=True, env=None):
        self.daemon = daemon
        self.pocket = pocket
        self.dir = harness.scratch_dir("pockityfs-test.")
        self.path = os.path.join(self.dir, "mnt")
        os.mkdir(self.path)
        self.cache_dir = cache_dir or os.path.join(self.dir, "cache")
        self.key_file = os.path.join(self.dir, "key")
        with open(self.key_file, "w") as f:
            f.write(pocket.secret + "\n")
        os.chmod(self.key_file, 0o600)
        self.log_path = os.path.join(self.dir, "pockityfs.log")
        self.options = list(options)
        self.env = env
        self.proc = None
        if start:
            self.start()

    def argv(self, extra=()):
        opts = ["key_file=" + self.key_file, "cache_dir=" + self.cache_dir] + self.options
        return [harness.build_path("pockityfs", "pockityfs"), self.daemon.url, self.path,
                "-f", "-o", ",".join(opts)] + list(extra)

    def start(self, timeout=60):
        log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(self.argv(), stdout=log, stderr=log,
                                     stdin=subprocess.DEVNULL, env=self.env)
        log.close()
        deadline = time.time() + timeout
        while time.time() < deadline:
            if is_mounted(self.path):
                return
            if self.proc.poll() is not None:
                raise RuntimeError("pockityfs exited with %d:\n%s" % (self.proc.returncode,
                                                                       self.log()))
            time.sleep(0.05)
        self.stop()
        raise RuntimeError("pockityfs did not mount:\n" + self.log())

    def log(self):
        try:
            with open(self.log_path, errors="replace") as f:
                return f.read()
        except OSError:
            return ""

    def kill(self):
        """kill -9, then clear the dead mount."""
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait()
        subprocess.run(["fusermount3", "-u", "-z", self.path], capture_output=True)

    def stop(self, timeout=30):
        if is_mounted(self.path):
            subprocess.run(["fusermount3", "-u", self.path], capture_output=True)
            if is_mounted(self.path):
                subprocess.run(["fusermount3", "-u", "-z", self.path], capture_output=True)
        if self.proc and self.proc.poll() is None:
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode if self.proc else None

    def p(self, *parts):
        return os.path.join(self.path, *parts)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()


def sh(cmd, cwd=None, check=True, timeout=600, env=None):
    """Run a shell command; return CompletedProcess (text)."""
    r = subprocess.run(cmd, shell=True, cwd=cwd, capture_output=True, text=True,
                       timeout=timeout, env=env)
    if check and r.returncode != 0:
        raise AssertionError("command failed (%d): %s\nstdout: %s\nstderr: %s"
                             % (r.returncode, cmd, r.stdout[-2000:], r.stderr[-2000:]))
    return r
