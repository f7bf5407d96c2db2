"""A seeded random sequence of file operations on a mount, checked against
an in-memory model of what POSIX promises: every read, stat and listing
must match the model, and so must what S3 holds once the files are closed.

The model keeps inodes apart from names, so that the cases a storage mount
gets wrong are covered: writes through a handle whose name was renamed,
replaced or unlinked; reads through one handle of what another wrote;
holes past the end; truncation under an open handle; O_APPEND; writes by
a forked child, whose exit closes its copy of every descriptor (a close
by another process than the opener, which pockityfs journals instead of
uploading)."""

import os
import random

NAMES = ["a", "b", "c", "d/e", "d/f"]
MAX_SIZE = 12 << 20


class Mismatch(AssertionError):
    pass


class RandomOps:
    def __init__(self, root, seed):
        self.root = root
        self.seed = seed
        self.rng = random.Random(seed)
        self.data = {}   # inode id -> bytearray
        self.mode = {}   # inode id -> permission bits
        self.mtime = {}  # inode id -> the mtime set by utime, None once written since
        self.names = {}  # name -> inode id
        self.fds = []    # [fd, inode id, append]
        self.next_id = 0
        self.log = []    # the operations so far, for a failure's message
        self.in_child = False  # op_write's write is a forked child's
        os.makedirs(os.path.join(root, "d"), exist_ok=True)

    def p(self, name):
        return os.path.join(self.root, name)

    def fail(self, what):
        tail = "\n  ".join(self.log[-15:])
        raise Mismatch("seed %d, op %d: %s\n  last operations:\n  %s"
                       % (self.seed, len(self.log), what, tail))

    def note(self, text):
        self.log.append(text)

    # --- operations ---------------------------------------------------------------

    def op_open(self):
        if len(self.fds) >= 6:
            return self.op_close()
        name = self.rng.choice(NAMES)
        append = self.rng.random() < 0.2
        trunc = self.rng.random() < 0.1
        flags = os.O_RDWR | os.O_CREAT | (os.O_APPEND if append else 0) | (
            os.O_TRUNC if trunc else 0)
        fd = os.open(self.p(name), flags, 0o644)
        self.note("open %s%s%s (fd %d)" % (name, " append" if append else "",
                                           " trunc" if trunc else "", fd))
        if name not in self.names:
            self.names[name] = self.next_id
            self.data[self.next_id] = bytearray()
            umask = os.umask(0)
            os.umask(umask)
            self.mode[self.next_id] = 0o644 & ~umask
            self.mtime[self.next_id] = None
            self.next_id += 1
        ino = self.names[name]
        if trunc:
            del self.data[ino][:]
            self.mtime[ino] = None
        self.fds.append([fd, ino, append])

    def pick_fd(self):
        if not self.fds:
            self.op_open()
        return self.rng.choice(self.fds)

    def io(self, fn, fd, *args):
        """fn(fd, *args) here, or with in_child in a forked child, whose exit
        then closes its copies of every open descriptor."""
        if not self.in_child:
            return fn(fd, *args)
        r, w = os.pipe()
        pid = os.fork()
        if pid == 0:
            try:
                os.write(w, fn(fd, *args).to_bytes(8, "little"))
            finally:
                os._exit(0)
        os.close(w)
        got = os.read(r, 8)
        os.close(r)
        _, status = os.waitpid(pid, 0)
        if status != 0 or len(got) != 8:
            self.fail("the child's write failed (status %d)" % status)
        return int.from_bytes(got, "little")

    def op_child_write(self):
        self.in_child = True
        try:
            self.op_write()
        finally:
            self.in_child = False

    def op_write(self):
        fd, ino, append = self.pick_fd()
        who = "child " if self.in_child else ""
        buf = self.data[ino]
        r = self.rng.random()
        n = (self.rng.randint(1, 4096) if r < 0.5 else
             self.rng.randint(4097, 256 << 10) if r < 0.9 else
             self.rng.randint(256 << 10, 3 << 20))
        r = self.rng.random()
        off = (self.rng.randint(0, len(buf)) if r < 0.6 else
               len(buf) if r < 0.8 else
               len(buf) + self.rng.randint(1, 3 << 20))
        if off + n > MAX_SIZE:
            off, n = max(0, MAX_SIZE - n), min(n, MAX_SIZE)
        chunk = self.rng.randbytes(n)
        if append:  # Linux appends a pwrite on an O_APPEND handle too
            at = off
            off = len(buf)
            if self.rng.random() < 0.5:
                self.note("%sappend %d at %d (fd %d)" % (who, n, off, fd))
                got = self.io(os.write, fd, chunk)
            else:
                self.note("%spwrite %d at %d, appended at %d (fd %d)" % (who, n, at, off, fd))
                got = self.io(os.pwrite, fd, chunk, at)
        else:
            self.note("%spwrite %d at %d (fd %d)" % (who, n, off, fd))
            got = self.io(os.pwrite, fd, chunk, off)
        if got != n:
            self.fail("short write: %d of %d" % (got, n))
        self.mtime[ino] = None
        if off > len(buf):
            buf.extend(bytes(off - len(buf)))
        buf[off:off + n] = chunk

    def op_read(self):
        fd, ino, _ = self.pick_fd()
        buf = self.data[ino]
        off = self.rng.randint(0, len(buf) + 4096)
        n = self.rng.randint(1, 1 << 20)
        self.note("pread %d at %d (fd %d)" % (n, off, fd))
        got = os.pread(fd, n, off)
        if got != bytes(buf[off:off + n]):
            self.fail("pread %d at %d: %d bytes differ from the model's %d"
                      % (n, off, len(got), len(buf[off:off + n])))

    def op_truncate(self):
        fd, ino, _ = self.pick_fd()
        buf = self.data[ino]
        size = self.rng.choice([0, self.rng.randint(0, len(buf)),
                                len(buf) + self.rng.randint(1, 1 << 20)])
        self.note("ftruncate %d (fd %d)" % (size, fd))
        os.ftruncate(fd, size)
        self.mtime[ino] = None
        if size < len(buf):
            del buf[size:]
        else:
            buf.extend(bytes(size - len(buf)))

    def op_fsync(self):
        fd, _, _ = self.pick_fd()
        self.note("fsync (fd %d)" % fd)
        os.fsync(fd)

    def op_close(self):
        if not self.fds:
            return
        entry = self.rng.choice(self.fds)
        self.fds.remove(entry)
        self.note("close (fd %d)" % entry[0])
        os.close(entry[0])

    def op_rename(self):
        if not self.names:
            return
        src = self.rng.choice(sorted(self.names))
        dst = self.rng.choice(NAMES)
        self.note("rename %s %s" % (src, dst))
        os.rename(self.p(src), self.p(dst))
        if src != dst:
            self.names[dst] = self.names.pop(src)

    def op_chmod(self):
        if not self.names:
            return
        name = self.rng.choice(sorted(self.names))
        mode = self.rng.choice([0o644, 0o755, 0o600, 0o700, 0o640])
        self.note("chmod %o %s" % (mode, name))
        os.chmod(self.p(name), mode)
        self.mode[self.names[name]] = mode

    def op_utime(self):
        """A time kept from elsewhere (tar x, cp -p), which a listing shows
        only if pockityfs marks the file or its directory."""
        if not self.names:
            return
        name = self.rng.choice(sorted(self.names))
        t = self.rng.choice([978307200, 1009843200, 1700000000])
        self.note("utime %d %s" % (t, name))
        os.utime(self.p(name), (t, t))
        self.mtime[self.names[name]] = t

    def check_mtime(self, name, st, when):
        t = self.mtime[self.names[name]]
        if t is not None and st.st_mtime != t:
            self.fail("%s: mtime %d %s, the model's %d" % (name, st.st_mtime, when, t))

    def op_unlink(self):
        if not self.names:
            return
        name = self.rng.choice(sorted(self.names))
        self.note("unlink %s" % name)
        os.unlink(self.p(name))
        del self.names[name]

    def op_forget(self):
        """Drop the kernel's cached pages of a file: the next reads come
        from the mount (its cache, its read-ahead or S3)."""
        fd, _, _ = self.pick_fd()
        self.note("fadvise dontneed (fd %d)" % fd)
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)

    def op_stat(self):
        name = self.rng.choice(NAMES)
        self.note("stat %s" % name)
        try:
            st = os.stat(self.p(name))
            size = st.st_size
        except FileNotFoundError:
            size = None
        want = len(self.data[self.names[name]]) if name in self.names else None
        if size != want:
            self.fail("stat %s: size %r, the model has %r" % (name, size, want))
        if size is not None:
            self.check_mtime(name, st, "at stat")
        if size is not None and st.st_mode & 0o7777 != self.mode[self.names[name]]:
            self.fail("stat %s: mode %o, the model has %o"
                      % (name, st.st_mode & 0o7777, self.mode[self.names[name]]))
        # pockityfs's rule, not POSIX's: no file is sparse, du and ls -s
        # count every byte
        if size is not None and st.st_blocks != (size + 511) // 512:
            self.fail("stat %s: %d blocks for %d bytes" % (name, st.st_blocks, size))

    def op_read_whole(self):
        name = self.rng.choice(NAMES)
        self.note("read %s" % name)
        self.check_name(name)

    OPS = [(op_open, 10), (op_write, 30), (op_read, 15), (op_truncate, 5), (op_fsync, 4),
           (op_close, 10), (op_rename, 5), (op_unlink, 3), (op_chmod, 3), (op_utime, 3),
           (op_forget, 5), (op_stat, 8), (op_read_whole, 10), (op_child_write, 8)]

    def run(self, n):
        ops = [op for op, _ in self.OPS]
        weights = [w for _, w in self.OPS]
        for _ in range(n):
            self.rng.choices(ops, weights)[0](self)

    # --- checks -------------------------------------------------------------------

    def check_name(self, name, root=None):
        path = os.path.join(root or self.root, name)
        try:
            with open(path, "rb") as f:
                got = f.read()
        except FileNotFoundError:
            got = None
        want = bytes(self.data[self.names[name]]) if name in self.names else None
        if got != want:
            self.fail("%s holds %s, the model %s" % (
                path, "nothing" if got is None else "%d bytes" % len(got),
                "nothing" if want is None else "%d bytes" % len(want)))

    def close_all(self):
        for fd, _, _ in self.fds:
            os.close(fd)
        self.fds = []
        self.note("close all")

    def check_all(self, root=None):
        """Every name as in the model, and no other file, under root (the
        mount by default: another mount of the same pocket may be given)."""
        root = root or self.root
        have = {os.path.relpath(os.path.join(d, f), root)
                for d, _, files in os.walk(root) for f in files}
        if have != set(self.names):
            self.fail("files %s, the model %s" % (sorted(have), sorted(self.names)))
        # right after a listing: every mode here is the default (0644) or
        # one a listing must not show as that, and every time set by utime
        # is kept (pockityfs marks those so that the listing tells)
        for name, ino in self.names.items():
            st = os.stat(os.path.join(root, name))
            if st.st_mode & 0o7777 != self.mode[ino]:
                self.fail("%s: mode %o right after a listing, the model's %o"
                          % (name, st.st_mode & 0o7777, self.mode[ino]))
            self.check_mtime(name, st, "right after a listing")
        for name in NAMES:  # after the listing: reads look the names up
            self.check_name(name, root)

    def expected(self):
        """name -> content, for a check of S3 itself."""
        return {name: bytes(self.data[ino]) for name, ino in self.names.items()}
