/* pockityfs: mount one pocket of a Pockity server as a local directory.
 * usage: pockityfs SERVER_URL MOUNTPOINT [-o opt[,opt...]] [-f] [-d] */
#include "fs.h"

#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cache_index.h"
#include "config.h"
#include "log.h"
#include "ops.h"

#define KEY_MAX 4096

enum {
    KEY_HELP,
    KEY_VERSION,
    KEY_INLINE_KEY,
    KEY_RO,
    KEY_QUOTA_BATCH
};

#define OPT(t, field)                                                                              \
    {                                                                                              \
        t, offsetof(struct fs_options, field), 1                                                   \
    }

static const struct fuse_opt option_table[] = {
        OPT("key_file=%s", key_file),
        OPT("cache_dir=%s", cache_dir),
        OPT("cache_size=%s", cache_size),
        OPT("copy_max=%s", copy_max),
        OPT("attr_timeout=%lf", attr_timeout),
        OPT("dir_timeout=%lf", dir_timeout),
        OPT("write_timeout=%d", write_timeout),
        OPT("upload_threads=%d", upload_threads),
        OPT("upload_after=%lf", upload_after),
        OPT("log_level=%s", log_level),
        FUSE_OPT_KEY("key=", KEY_INLINE_KEY),
        FUSE_OPT_KEY("ro", KEY_RO),
        FUSE_OPT_KEY("quota_batch=", KEY_QUOTA_BATCH),
        /* fstab options meant for mount(8), not for us */
        FUSE_OPT_KEY("_netdev", FUSE_OPT_KEY_DISCARD),
        FUSE_OPT_KEY("nofail", FUSE_OPT_KEY_DISCARD),
        FUSE_OPT_KEY("auto", FUSE_OPT_KEY_DISCARD),
        FUSE_OPT_KEY("noauto", FUSE_OPT_KEY_DISCARD),
        FUSE_OPT_KEY("user", FUSE_OPT_KEY_DISCARD),
        FUSE_OPT_KEY("users", FUSE_OPT_KEY_DISCARD),
        FUSE_OPT_KEY("defaults", FUSE_OPT_KEY_DISCARD),
        FUSE_OPT_KEY("-h", KEY_HELP),
        FUSE_OPT_KEY("--help", KEY_HELP),
        FUSE_OPT_KEY("-V", KEY_VERSION),
        FUSE_OPT_KEY("--version", KEY_VERSION),
        FUSE_OPT_END,
};

/* What the option parser finds besides struct fs_options (its data). */
static struct cmdline {
    struct fs_options *opt;
    char *server_url;
    char *mountpoint; /* as given, checked before libfuse looks at it */
    int n_nonopt;
    int quota_batch; /* -o quota_batch=0|1: reserve through quota allowances */
    int help, version, bad;
} cmdline;

static int option_proc(void *data, const char *arg, int key, struct fuse_args *outargs)
{
    (void)outargs;
    (void)data;
    struct cmdline *c = &cmdline;
    switch (key) {
    case FUSE_OPT_KEY_NONOPT:
        if (c->n_nonopt++ == 0) {
            c->server_url = strdup(arg);
            return 0;
        }
        if (c->n_nonopt > 2) {
            fprintf(stderr, "error: unexpected argument '%s'\n", arg);
            c->bad = 1;
        } else {
            c->mountpoint = strdup(arg);
        }
        return 1; /* the mount point, for fuse_parse_cmdline */
    case KEY_INLINE_KEY:
        fprintf(stderr, "error: the API key is never given on the command line "
                        "(use -o key_file=PATH or the POCKITY_KEY environment variable)\n");
        c->bad = 1;
        return 0;
    case KEY_RO:
        c->opt->ro = 1;
        return 1;
    case KEY_QUOTA_BATCH: {
        const char *v = arg + strlen("quota_batch=");
        if (strcmp(v, "0") != 0 && strcmp(v, "1") != 0) {
            fprintf(stderr, "error: bad quota_batch '%s': expected 0 or 1\n", v);
            c->bad = 1;
        } else {
            c->quota_batch = *v == '1';
        }
        return 0;
    }
    case KEY_HELP:
        c->help = 1;
        return 0;
    case KEY_VERSION:
        c->version = 1;
        return 0;
    default:
        return 1;
    }
}

static void usage(const char *prog)
{
    printf("usage: %s SERVER_URL MOUNTPOINT [-o opt[,opt...]] [-f] [-d]\n"
           "\n"
           "Mount the pocket an API key opens as a local directory.\n"
           "\n"
           "pockityfs options:\n"
           "    -o config=PATH         defaults file (default " CONFIG_DEFAULT_PATH ", if any)\n"
           "    -o key_file=PATH       file holding the API key (else $POCKITY_KEY)\n"
           "    -o cache_dir=DIR       cache folder (default /var/cache/pockityfs for root,\n"
           "                           else ~/.cache/pockityfs)\n"
           "    -o cache_size=SIZE     data cache budget, e.g. 512M, 4G (default 1G)\n"
           "    -o copy_max=SIZE       largest file copied whole by S3 (a rename, new\n"
           "                           attributes); larger ones in parts (default 5G)\n"
           "    -o attr_timeout=SECS   how long attributes are cached (default 5)\n"
           "    -o dir_timeout=SECS    how long names and listings are cached (default 5)\n"
           "    -o write_timeout=SECS  how long uploads wait for an unreachable server (30)\n"
           "    -o upload_threads=N    parts in flight per multipart upload (default 8)\n"
           "    -o upload_after=SECS   upload files kept open with unsaved data after (30)\n"
           "    -o quota_batch=0|1     reserve quota in blocks, not per file (default 1)\n"
           "    -o log_level=LEVEL     error, warn, info (default) or debug\n"
           "    -f                     stay in the foreground\n"
           "    -d                     debug output (implies -f)\n"
           "    -V, --version          print the version\n"
           "\n"
           "FUSE options:\n",
           prog);
    fuse_cmdline_help();
    fuse_lowlevel_help();
}

/* "512M", "4G", "1048576" -> bytes; 0 when malformed. */
static uint64_t parse_size(const char *s)
{
    char *end;
    errno = 0;
    unsigned long long v = strtoull(s, &end, 10);
    if (errno || end == s)
        return 0;
    int shift = 0;
    switch (toupper((unsigned char)*end)) {
    case 'K':
        shift = 10;
        break;
    case 'M':
        shift = 20;
        break;
    case 'G':
        shift = 30;
        break;
    case 'T':
        shift = 40;
        break;
    case '\0':
        break;
    default:
        return 0;
    }
    if (*end && end[1] && !(toupper((unsigned char)end[1]) == 'B' && !end[2]) &&
        !(toupper((unsigned char)end[1]) == 'I' && toupper((unsigned char)end[2]) == 'B' &&
          !end[3]))
        return 0;
    if (shift && v > (UINT64_MAX >> shift))
        return 0;
    return (uint64_t)v << shift;
}

/* The API key from key_file or POCKITY_KEY, into key. Returns 0 or -1
 * after printing why. */
static int read_key(const char *key_file, char key[KEY_MAX])
{
    size_t n = 0;
    if (key_file) {
        int fd = open(key_file, O_RDONLY | O_CLOEXEC);
        if (fd < 0) {
            fprintf(stderr, "error: cannot open '%s': %s\n", key_file, strerror(errno));
            return -1;
        }
        struct stat st;
        if (fstat(fd, &st) == 0 && (st.st_mode & 077))
            fprintf(stderr, "warning: '%s' is readable by others; chmod 600 it\n", key_file);
        ssize_t r;
        while (n < KEY_MAX - 1 && (r = read(fd, key + n, KEY_MAX - 1 - n)) != 0) {
            if (r < 0) {
                if (errno == EINTR)
                    continue;
                fprintf(stderr, "error: cannot read '%s': %s\n", key_file, strerror(errno));
                close(fd);
                return -1;
            }
            n += (size_t)r;
        }
        close(fd);
    } else {
        char *env = getenv("POCKITY_KEY");
        if (!env || !*env) {
            fprintf(stderr, "error: no API key: use -o key_file=PATH or set POCKITY_KEY\n");
            return -1;
        }
        n = strlen(env);
        if (n >= KEY_MAX)
            n = KEY_MAX - 1;
        memcpy(key, env, n);
        /* scrub it from our environment block (/proc/PID/environ) */
        memset(env, 'x', strlen(env));
        unsetenv("POCKITY_KEY");
    }
    key[n] = '\0';
    while (n > 0 && isspace((unsigned char)key[n - 1]))
        key[--n] = '\0';
    size_t lead = strspn(key, " \t\r\n");
    memmove(key, key + lead, n - lead + 1);
    if (!*key || strpbrk(key, " \t\r\n")) {
        fprintf(stderr, "error: the API key in '%s' is malformed\n",
                key_file ? key_file : "POCKITY_KEY");
        return -1;
    }
    return 0;
}

static int mkdirs(const char *path)
{
    char buf[PATH_MAX + 64];
    snprintf(buf, sizeof(buf), "%s", path);
    for (char *p = buf + 1; *p; p++) {
        if (*p != '/')
            continue;
        *p = '\0';
        if (mkdir(buf, 0700) != 0 && errno != EEXIST)
            return -1;
        *p = '/';
    }
    return mkdir(buf, 0700) != 0 && errno != EEXIST ? -1 : 0;
}

/* Open files, and files whose upload failed, each hold a descriptor of
 * their cache file: allow as many as the process may have. */
static void raise_fd_limit(void)
{
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
    }
}

/* Create and lock the pocket's cache folder, open the journal. */
static int setup_cache(struct fs *fs, int *lock_fd)
{
    char base[PATH_MAX], path[PATH_MAX + 64];
    if (fs->opt.cache_dir) {
        snprintf(base, sizeof(base), "%s", fs->opt.cache_dir);
    } else if (geteuid() == 0) {
        snprintf(base, sizeof(base), "/var/cache/pockityfs");
    } else {
        const char *xdg = getenv("XDG_CACHE_HOME"), *home = getenv("HOME");
        if (xdg && *xdg)
            snprintf(base, sizeof(base), "%s/pockityfs", xdg);
        else
            snprintf(base, sizeof(base), "%s/.cache/pockityfs", home ? home : "/tmp");
    }
    int n = snprintf(fs->dir, sizeof(fs->dir), "%s/%s", base, fs->session.pocket_id);
    if (n < 0 || (size_t)n >= sizeof(fs->dir) - 64) {
        fprintf(stderr, "error: cache folder '%s' is too long\n", base);
        return -1;
    }
    snprintf(path, sizeof(path), "%s/files", fs->dir);
    if (mkdirs(path) != 0) {
        fprintf(stderr, "error: cannot create '%s': %s\n", path, strerror(errno));
        return -1;
    }
    snprintf(path, sizeof(path), "%s/lock", fs->dir);
    *lock_fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
    if (*lock_fd < 0 || flock(*lock_fd, LOCK_EX | LOCK_NB) != 0) {
        fprintf(stderr, "error: cache folder '%s' is in use by another mount of this pocket\n",
                fs->dir);
        return -1;
    }
    snprintf(path, sizeof(path), "%s/journal.db", fs->dir);
    char err[512];
    if (journal_open(path, &fs->journal, err, sizeof(err)) != 0) {
        fprintf(stderr, "error: %s\n", err);
        return -1;
    }
    fs->streams.journal = fs->journal;
    snprintf(path, sizeof(path), "%s/files", fs->dir);
    uint64_t limit = 1ull << 30;
    if (fs->opt.cache_size && !(limit = parse_size(fs->opt.cache_size))) {
        fprintf(stderr, "error: bad cache_size '%s'\n", fs->opt.cache_size);
        return -1;
    }
    cache_init(&fs->cache, path, limit);
    snprintf(fs->index_path, sizeof(fs->index_path), "%s/cache.db", fs->dir);
    /* a cache index of another bucket is not used */
    snprintf(fs->source, sizeof(fs->source), "%s %s", fs->session.endpoint, fs->session.bucket);
    return 0;
}

static int add_opt(struct fuse_args *args, const char *name, const char *value)
{
    char *opts = NULL;
    size_t n = strlen(name) + strlen(value) + 2;
    char *s = malloc(n);
    if (!s)
        return -1;
    snprintf(s, n, "%s%s", name, value);
    int rc = fuse_opt_add_opt_escaped(&opts, s);
    free(s);
    if (rc == 0)
        rc = fuse_opt_add_arg(args, "-o") || fuse_opt_add_arg(args, opts) ? -1 : 0;
    free(opts);
    return rc;
}

int main(int argc, char **argv)
{
    char **config_owned = NULL;
    if (config_apply(&argc, &argv, &config_owned) != 0)
        return 1;
    struct fuse_args args = FUSE_ARGS_INIT(argc, argv);
    struct fs fs;
    memset(&fs, 0, sizeof(fs));
    streams_init(&fs.streams, NULL); /* the journal joins in setup_cache */
    fs.opt.attr_timeout = 5;
    fs.opt.dir_timeout = 5;
    fs.opt.write_timeout = 30;
    fs.opt.upload_threads = 8;
    fs.opt.upload_after = 30;
    struct cmdline c = {.opt = &fs.opt, .quota_batch = 1};
    cmdline = c;
    struct fuse_cmdline_opts copts = {0};
    struct fuse_session *se = NULL;
    int rc = 1, lock_fd = -1, mounted = 0, table = 0;
    char key[KEY_MAX];

    log_setup("pockityfs", LOG_LEVEL_INFO, 0);
    raise_fd_limit();
    int parsed = fuse_opt_parse(&args, &fs.opt, option_table, option_proc);
    c = cmdline;
    if (parsed != 0 || c.bad)
        goto out;
    if (c.help) {
        usage(argv[0]);
        rc = 0;
        goto out;
    }
    if (c.version) {
        printf("pockityfs %s (libfuse %s)\n", POCKITY_VERSION, fuse_pkgversion());
        rc = 0;
        goto out;
    }
    struct stat mst;
    if (c.mountpoint && stat(c.mountpoint, &mst) != 0) {
        fprintf(stderr, "error: mount point '%s': %s\n", c.mountpoint, strerror(errno));
        goto out;
    }
    if (c.mountpoint && !S_ISDIR(mst.st_mode)) {
        fprintf(stderr, "error: mount point '%s' is not a directory\n", c.mountpoint);
        goto out;
    }
    if (fuse_parse_cmdline(&args, &copts) != 0)
        goto out;
    if (!c.server_url || !copts.mountpoint) {
        fprintf(stderr, "usage: %s SERVER_URL MOUNTPOINT [-o opt[,opt...]] [-f] [-d]\n", argv[0]);
        goto out;
    }
    if (fs.opt.log_level) {
        int level = log_level_parse(fs.opt.log_level);
        if (level < 0) {
            fprintf(stderr, "error: bad log_level '%s'\n", fs.opt.log_level);
            goto out;
        }
        log_setup("pockityfs", (enum log_level)level, 0);
    }
    if (fs.opt.attr_timeout < 0 || fs.opt.dir_timeout < 0 || fs.opt.write_timeout < 0 ||
        !(fs.opt.upload_after >= 0.5 && fs.opt.upload_after <= 86400) ||
        fs.opt.upload_threads < 1 || fs.opt.upload_threads > 16) {
        fprintf(stderr, "error: a timeout is negative, upload_after is not 0.5..86400 or "
                        "upload_threads is not 1..16\n");
        goto out;
    }
    fs.copy_max = 5ull << 30;
    if (fs.opt.copy_max && (!(fs.copy_max = parse_size(fs.opt.copy_max)) ||
                            fs.copy_max < UPLOAD_PART_MIN || fs.copy_max > (5ull << 30))) {
        fprintf(stderr, "error: copy_max '%s' is not a size from 8M to 5G\n", fs.opt.copy_max);
        goto out;
    }
    if (read_key(fs.opt.key_file, key) != 0)
        goto out;

    char err[512] = "";
    struct remote_options ropt = {.timeout_ms = 10000,
                                  .write_wait_ms = (long)fs.opt.write_timeout * 1000,
                                  .quota_batch = c.quota_batch};
    int r = remote_open(c.server_url, key, &ropt, &fs.remote, &fs.session, err, sizeof(err));
    memset(key, 0, sizeof(key));
    if (r != 0) {
        fprintf(stderr, "error: cannot open a session with '%s': %s\n", c.server_url,
                err[0] ? err : strerror(-r));
        goto out;
    }
    const char *access = remote_access(fs.remote);
    fs.read_only = fs.opt.ro || (access && strcmp(access, "ro") == 0);
    fs.defaults = (struct meta_defaults){getuid(), getgid(), 0644, 0755, time(NULL)};

    struct s3_config cfg = {.endpoint = fs.session.endpoint,
                            .region = fs.session.region,
                            .bucket = fs.session.bucket,
                            .access_key = fs.session.access_key,
                            .secret_key = fs.session.secret_key,
                            .session_token = fs.session.session_token,
                            .request_timeout_ms = 60000,
                            /* every request fails with ETIMEDOUT once S3 has sent
                             * nothing for write_timeout over its tries, not after the
                             * client's minutes of retries; errors S3 answers with
                             * (SlowDown...) keep their retries */
                            .silence_ms = (long)fs.opt.write_timeout * 1000,
                            .refresh = remote_s3_refresh,
                            .refresh_arg = fs.remote};
    int s = s3_client_new(&cfg, &fs.s3);
    if (s != S3_OK) {
        fprintf(stderr, "error: cannot set up the S3 client for '%s': %s\n", fs.session.endpoint,
                s3_strerror(s));
        goto out;
    }
    if (setup_cache(&fs, &lock_fd) != 0)
        goto out;
    pthread_mutex_init(&fs.dir_lock, NULL);
    pthread_cond_init(&fs.listers_idle, NULL);
    names_init(&fs.names);
    pthread_mutex_init(&fs.rename_lock, NULL);
    if (inode_table_init(&fs.inodes, fs_inode_free, &fs) != 0) {
        fprintf(stderr, "error: out of memory\n");
        goto out;
    }
    table = 1;
    size_t left = fs_replay(&fs);
    if (left)
        log_warn("%zu pending upload(s) could not be sent yet; they are served from the cache",
                 left);

    if ((fs.read_only && !fs.opt.ro && fuse_opt_add_arg(&args, "-oro") != 0) ||
        add_opt(&args, "fsname=", c.server_url) != 0 ||
        fuse_opt_add_arg(&args, "-osubtype=pockityfs,default_permissions") != 0) {
        fprintf(stderr, "error: out of memory\n");
        goto out;
    }
    se = fuse_session_new(&args, &fs_ops, sizeof(fs_ops), &fs);
    if (!se)
        goto out;
    if (fuse_set_signal_handlers(se) != 0)
        goto out;
    if (fuse_session_mount(se, copts.mountpoint) != 0) {
        fprintf(stderr, "error: cannot mount on '%s'\n", copts.mountpoint);
        goto out;
    }
    mounted = 1;
    if (fuse_daemonize(copts.foreground) != 0)
        goto out;
    if (!copts.foreground)
        log_setup("pockityfs",
                  fs.opt.log_level ? (enum log_level)log_level_parse(fs.opt.log_level)
                                   : LOG_LEVEL_INFO,
                  1);
    if (remote_start_renewal(fs.remote, fs.s3) != 0)
        log_warn("cannot start renewing credentials; they will be renewed on expiry");
    if (flusher_start(&fs, fs.opt.upload_after, &fs.flusher) != 0)
        log_warn("cannot start background uploads; files upload on close and fsync only");
    if (readahead_start(&fs, &fs.readahead) != 0)
        log_warn("cannot start background read-ahead; reads fetch what they need only");
    fs.cache.ra = fs.readahead;
    fs_watch_pending(&fs);
    log_info("mounted pocket '%s' (%s) on '%s'", fs.session.pocket_name, fs.session.pocket_id,
             copts.mountpoint);
    if (copts.singlethread) {
        rc = fuse_session_loop(se) != 0;
    } else {
        struct fuse_loop_config *lc = fuse_loop_cfg_create();
        if (!lc)
            goto out;
        fuse_loop_cfg_set_clone_fd(lc, copts.clone_fd);
        fuse_loop_cfg_set_max_threads(
                lc, copts.max_threads && copts.max_threads <= 1000 ? copts.max_threads : 16);
        fuse_loop_cfg_set_idle_threads(lc, copts.max_idle_threads && copts.max_idle_threads <= 1000
                                                   ? copts.max_idle_threads
                                                   : 8);
        rc = fuse_session_loop_mt(se, lc) != 0;
        fuse_loop_cfg_destroy(lc);
    }
out:
    if (se) {
        if (mounted)
            fuse_session_unmount(se);
        fuse_remove_signal_handlers(se);
        fuse_session_destroy(se);
    }
    if (table)
        ops_dir_stop(&fs);        /* listers use the S3 client */
    readahead_stop(fs.readahead); /* its threads use the inodes and the S3 client */
    flusher_free(fs.flusher);     /* before the inodes and the remote it uses */
    if (fs.journal)
        journal_settle(fs.journal, NULL); /* even when journal_free is skipped below */
    if (table) { /* before the remote: a cfile may still give a reservation back */
        inode_table_release(&fs.inodes);
        names_destroy(&fs.names);
        /* the cfiles kept after their inodes, and their files unless indexed */
        int indexed = fs.journal && cache_index_save(&fs.cache, fs.index_path, fs.source) >= 0;
        cache_release(&fs.cache, indexed);
    }
    readahead_free(fs.readahead); /* after the cfiles, which give their chunks back */
    remote_free(fs.remote);       /* stops the renewal thread before the client goes */
    /* abandoned streams abort their upload; one still at it past the wait
     * keeps the journal and the client (the next start aborts it) */
    if (streams_release(&fs.streams, 10000) == 0) {
        journal_free(fs.journal);
        s3_client_free(fs.s3);
    }
    remote_session_release(&fs.session);
    if (lock_fd >= 0)
        close(lock_fd);
    free(copts.mountpoint);
    free(c.server_url);
    free(c.mountpoint);
    free(fs.opt.key_file);
    free(fs.opt.cache_dir);
    free(fs.opt.cache_size);
    free(fs.opt.copy_max);
    free(fs.opt.log_level);
    fuse_opt_free_args(&args);
    config_argv_free(config_owned);
    return rc;
}
