# Shared shell helpers for scripts/*: package installation and logging.
# Source it; it defines functions only.

POCKITY_ROOT=${POCKITY_ROOT:-$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)}

say() { printf '%s\n' "$*" >&2; }
die() { printf 'error: %s\n' "$*" >&2; exit 1; }

# ensure_packages PKG...: install the Debian packages that are missing.
# Quiet and quick when everything is already there; runs `apt-get update` once
# per machine boot (marker in /run) before the first install.
ensure_packages() {
    local missing=() p
    for p in "$@"; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' ||
            missing+=("$p")
    done
    [ ${#missing[@]} -eq 0 ] && return 0
    [ "$(id -u)" -eq 0 ] || die "missing packages: ${missing[*]} (run as root to install them)"
    say "installing: ${missing[*]}"
    if [ ! -e /run/pockity-apt-updated ]; then
        apt-get update -qq >/dev/null || die "apt-get update failed"
        touch /run/pockity-apt-updated 2>/dev/null || true
    fi
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
        "${missing[@]}" >/dev/null || die "cannot install: ${missing[*]}"
}

# Packages needed to build Pockity and run its unit tests.
BUILD_PACKAGES=(build-essential meson ninja-build pkg-config libcurl4-openssl-dev libssl-dev
    libexpat1-dev libinih-dev libsqlite3-dev libpq-dev libfuse3-dev libmicrohttpd-dev
    libjansson-dev libargon2-dev libcmocka-dev sqlite3 curl ca-certificates python3 git rsync)
# Packages for the real local services (S3 on Ceph RGW, PostgreSQL, FUSE).
SERVICE_PACKAGES=(ceph-mon ceph-osd radosgw ceph-common postgresql fuse3 python3-aiosmtpd)

# pg_bin: directory holding initdb/pg_ctl of the newest installed PostgreSQL.
pg_bin() {
    local d
    d=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)
    [ -n "$d" ] || die "PostgreSQL server binaries not found"
    printf '%s\n' "$d"
}

# free_port: print a TCP port on 127.0.0.1 that nothing listens on now.
free_port() {
    python3 - <<'PY'
import socket
s = socket.socket()
s.bind(("127.0.0.1", 0))
print(s.getsockname()[1])
s.close()
PY
}
