# bench/lib/stack.sh: shared helpers of bench/daemon and bench/mount — local
# services, a release build, pockityd on a given database, and API calls that
# create the accounts, tier, pockets and keys a benchmark needs. Source it.
# Functions only; every process it starts is recorded and stopped by stack_stop.

BENCH_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
# shellcheck source=../../scripts/lib/common.sh
. "$BENCH_ROOT/scripts/lib/common.sh"

BENCH_BUILD=${BENCH_BUILD:-$BENCH_ROOT/build-bench}
BENCH_DIR=${BENCH_DIR:-/tmp/pockity-bench}
BENCH_PIDS=()   # pockityd processes started here
# Debian's interpreter when there is one: a shim in PATH (pyenv) can cost 100 ms a call
PYTHON=$(command -v /usr/bin/python3 || command -v python3 || echo python3)

# stack_build: configure (release) and build into $BENCH_BUILD (BENCH_NO_BUILD=1:
# use the binaries already there), then copy the programs to $BENCH_BIN, so that a
# rebuild during the run cannot change or remove them.
BENCH_BIN=$BENCH_DIR/bin
stack_build() {
    if [ "${BENCH_NO_BUILD:-0}" != 1 ] || [ ! -x "$BENCH_BUILD/pockityd/pockityd" ]; then
        if [ ! -f "$BENCH_BUILD/build.ninja" ]; then
            meson setup "$BENCH_BUILD" "$BENCH_ROOT" --buildtype=release >/dev/null ||
                die "meson setup failed"
        fi
        ninja -C "$BENCH_BUILD" -j2 >/dev/null || {
            ninja -C "$BENCH_BUILD" -j1 | tail -20
            die "build failed"
        }
    fi
    mkdir -p "$BENCH_BIN"
    cp "$BENCH_BUILD/pockityd/pockityd" "$BENCH_BUILD/pockityfs/pockityfs" "$BENCH_BIN/" ||
        die "cannot copy the programs to '$BENCH_BIN'"
}

# stack_services [pg]: start Ceph RGW (and PostgreSQL with "pg") in $BENCH_DIR and
# export their settings (POCKITY_S3_*, POCKITY_PG_*).
stack_services() {
    mkdir -p "$BENCH_DIR"
    export POCKITY_S3_DIR=$BENCH_DIR/s3 POCKITY_PG_DIR=$BENCH_DIR/pg
    "$BENCH_ROOT/scripts/s3-local" start >&2 || die "cannot start Ceph RGW"
    eval "$("$BENCH_ROOT/scripts/s3-local" env)"
    export POCKITY_S3_ENDPOINT POCKITY_S3_REGION POCKITY_S3_BUCKET POCKITY_S3_ACCESS_KEY \
        POCKITY_S3_SECRET_KEY POCKITY_S3_ROLE_ARN
    if [ "${1:-}" = pg ]; then
        "$BENCH_ROOT/scripts/pg-local" start >&2 || die "cannot start PostgreSQL"
        eval "$("$BENCH_ROOT/scripts/pg-local" env)"
        export POCKITY_PG_URL POCKITY_PG_PORT POCKITY_PG_BIN
    fi
}

# stack_split_cpus: give the servers (the Ceph daemons of $POCKITY_S3_DIR and
# every pockityd started so far) CPU 0, and this shell, with all it starts from
# now on, the other CPUs: the two sides of the network as two machines, so that
# a client's CPU is not taken from the server it measures. Sets BENCH_CPUS to a
# description. Does nothing on a machine with one CPU.
stack_split_cpus() {
    local n last p f
    n=$(nproc --all)
    if [ "$n" -lt 2 ]; then
        BENCH_CPUS="servers and clients share the only CPU"
        return 0
    fi
    last=$((n - 1))
    {
        grep -lzxF -- "$POCKITY_S3_DIR/ceph.conf" /proc/[0-9]*/cmdline 2>/dev/null || true
        for p in "${BENCH_PIDS[@]}"; do printf '/proc/%s/cmdline\n' "$p"; done
    } | while read -r f; do
        f=${f#/proc/}
        taskset -a -p -c 0 "${f%/cmdline}" >/dev/null || die "cannot pin server process ${f%/cmdline}"
    done
    taskset -p -c "1-$last" $$ >/dev/null || die "cannot pin the benchmark to CPUs 1-$last"
    BENCH_CPUS="servers (RGW, its OSD and monitor, pockityd) on CPU 0, clients (mounts, workloads, raw S3) on CPU 1"
    [ "$last" -eq 1 ] || BENCH_CPUS=${BENCH_CPUS/%CPU 1/CPUs 1-$last}
}

# stack_stop: stop every pockityd started here, then the services (unless
# BENCH_KEEP_SERVICES=1: they stay up for the next run in the same $BENCH_DIR).
stack_stop() {
    local p
    for p in "${BENCH_PIDS[@]}"; do
        kill -TERM "$p" 2>/dev/null || continue
        for _ in $(seq 1 100); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
        kill -KILL "$p" 2>/dev/null || true
    done
    BENCH_PIDS=()
    [ "${BENCH_KEEP_SERVICES:-0}" != 1 ] || return 0
    "$BENCH_ROOT/scripts/pg-local" stop >/dev/null 2>&1 || true
    "$BENCH_ROOT/scripts/s3-local" stop >/dev/null 2>&1 || true
}

# psql_pg SQL...: run statements on the bench PostgreSQL as the pockity role.
psql_pg() {
    local a=()
    for s in "$@"; do a+=(-c "$s"); done
    "$POCKITY_PG_BIN/psql" -X -q -v ON_ERROR_STOP=1 "$POCKITY_PG_URL" "${a[@]}"
}

# pg_fresh_db NAME: (re)create database NAME on the bench cluster; print its URL.
pg_fresh_db() {
    psql_pg "DROP DATABASE IF EXISTS $1" "CREATE DATABASE $1" >/dev/null || die "cannot create database '$1'"
    printf '%s/%s\n' "${POCKITY_PG_URL%/*}" "$1"
}

# daemon_start NAME DB_URL [EXTRA_INI_LINES]: start pockityd with its state in
# $BENCH_DIR/NAME; sets DAEMON_URL, DAEMON_PID, DAEMON_CONFIG, DAEMON_LOG.
# [server] threads and [database] pool come from BENCH_THREADS / BENCH_POOL when set.
daemon_start() {
    local name=$1 db=$2 extra=${3:-} dir=$BENCH_DIR/$1
    rm -rf "$dir"
    mkdir -p "$dir"
    DAEMON_CONFIG=$dir/pockityd.ini
    DAEMON_LOG=$dir/pockityd.log
    cat >"$DAEMON_CONFIG" <<INI
[server]
bind = 127.0.0.1
port = 0
port_file = $dir/port
${BENCH_THREADS:+threads = $BENCH_THREADS}
log_level = ${BENCH_LOG_LEVEL:-info}
[database]
url = $db
${BENCH_POOL:+pool = $BENCH_POOL}
[s3]
endpoint = $POCKITY_S3_ENDPOINT
region = $POCKITY_S3_REGION
bucket = $POCKITY_S3_BUCKET
role_arn = $POCKITY_S3_ROLE_ARN
root_prefix = bench-$name
[auth]
; cheap hashes: the benchmark logs in a handful of times, never measures it
password_cost_kib = 1024
password_cost_t = 1
$extra
INI
    [ -s "$BENCH_DIR/token_secret" ] || head -c 48 /dev/urandom | base64 -w0 >"$BENCH_DIR/token_secret"
    # secrets through the environment, as documented (also for --create-admin)
    POCKITYD_TOKEN_SECRET=$(cat "$BENCH_DIR/token_secret")
    export POCKITYD_S3_ACCESS_KEY=$POCKITY_S3_ACCESS_KEY POCKITYD_S3_SECRET_KEY=$POCKITY_S3_SECRET_KEY \
        POCKITYD_TOKEN_SECRET
    setsid "$BENCH_BIN/pockityd" --config "$DAEMON_CONFIG" >>"$DAEMON_LOG" 2>&1 </dev/null &
    DAEMON_PID=$!
    BENCH_PIDS+=("$DAEMON_PID")
    for _ in $(seq 1 300); do
        [ -s "$dir/port" ] && break
        kill -0 "$DAEMON_PID" 2>/dev/null || { tail -5 "$DAEMON_LOG" >&2; die "pockityd did not start"; }
        sleep 0.1
    done
    [ -s "$dir/port" ] || die "pockityd did not start (see $DAEMON_LOG)"
    DAEMON_URL=http://127.0.0.1:$(cat "$dir/port")
}

# daemon_stop: stop the pockityd started last by daemon_start.
daemon_stop() {
    kill -TERM "$DAEMON_PID" 2>/dev/null || return 0
    for _ in $(seq 1 150); do kill -0 "$DAEMON_PID" 2>/dev/null || return 0; sleep 0.1; done
    kill -KILL "$DAEMON_PID" 2>/dev/null || true
}

# api METHOD PATH [JSON] [TOKEN]: call the daemon; print the body; fail on >= 400.
api() {
    local out code
    out=$(curl -sS -X "$1" "$DAEMON_URL$2" -H 'Content-Type: application/json' \
        ${4:+-H "Authorization: Bearer $4"} ${3:+--data "$3"} -w '\n%{http_code}') ||
        die "$1 $2: no answer"
    code=${out##*$'\n'}
    out=${out%$'\n'*}
    [ "$code" -lt 400 ] || die "$1 $2: HTTP $code: $out"
    printf '%s\n' "$out"
}

# json_field EXPR: read JSON on stdin, print the Python expression on it (e.g. '["id"]').
json_field() { "$PYTHON" -c 'import json,sys; print(json.load(sys.stdin)'"$1"')'; }

# stack_accounts N: an admin (ADMIN_TOKEN), a "bench" tier without practical
# limits, one user (USER_TOKEN) and N active pockets on that tier (POCKET_IDS[])
# with an rw API key each, written one a line to $BENCH_DIR/keys (POCKET_KEYS[]).
stack_accounts() {
    local admin_pw out
    admin_pw=admin-$(openssl rand -hex 8)
    printf '%s\n' "$admin_pw" |
        "$BENCH_BIN/pockityd" --config "$DAEMON_CONFIG" --create-admin admin@bench.local \
        >/dev/null || die "cannot create the admin"
    out=$(printf '%s\n' "$admin_pw" |
        "$PYTHON" "$BENCH_ROOT/bench/lib/accounts.py" "$DAEMON_URL" admin@bench.local "$1" \
        "$BENCH_DIR/keys") || die "cannot create the bench accounts"
    eval "$out"
    mapfile -t POCKET_KEYS <"$BENCH_DIR/keys"
}

# vm_hwm PID: peak resident set of a process in KiB (0 when gone).
vm_hwm() { awk '/^VmHWM:/ {print $2; f=1} END {if (!f) print 0}' "/proc/$1/status" 2>/dev/null || echo 0; }

# s3bench_build: take the build's s3bench (bench/meson.build) into $BENCH_BIN, so a
# rebuild during a run cannot remove it; sets S3BENCH to the binary.
s3bench_build() {
    S3BENCH=$BENCH_BIN/s3bench
    mkdir -p "$BENCH_BIN"
    [ -x "$BENCH_BUILD/bench/s3bench" ] || die "s3bench is not built in '$BENCH_BUILD'"
    cp "$BENCH_BUILD/bench/s3bench" "$S3BENCH"
}

# s3b ARGS...: run s3bench with the root credentials; print its RESULT line.
s3b() { "$S3BENCH" "$@" | grep '^RESULT' || die "s3bench $1 failed"; }

# field NAME LINE: the value of NAME=VALUE in a RESULT line.
field() { local l=" $2 "; l=${l#* $1=}; printf '%s\n' "${l%% *}"; }
