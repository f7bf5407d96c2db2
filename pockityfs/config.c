/* config: read pockityfs.ini with inih into mount options. */
#include "config.h"

#include <errno.h>
#include <ini.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define OPTS_MAX 4096

/* The options a config file may set (the mount's own and common FUSE ones). */
static const char *const known[] = {
        "key_file",
        "cache_dir",
        "cache_size",
        "copy_max",
        "attr_timeout",
        "dir_timeout",
        "write_timeout",
        "upload_threads",
        "upload_after",
        "log_level",
        "allow_other",
        "allow_root",
        "ro",
        "quota_batch",
        NULL,
};
static const char *const flags[] = {"allow_other", "allow_root", "ro", NULL};

struct parse {
    const char *path;
    char opts[OPTS_MAX];
    size_t len;
    int bad;
};

static int in_list(const char *const *list, const char *s)
{
    for (; *list; list++)
        if (!strcmp(*list, s))
            return 1;
    return 0;
}

static int on_value(void *arg, const char *section, const char *name, const char *value)
{
    struct parse *p = arg;
    if (strcmp(section, "pockityfs") != 0)
        return 1; /* other sections belong to other programs */
    if (!in_list(known, name)) {
        fprintf(stderr, "error: '%s': unknown option '%s'\n", p->path, name);
        p->bad = 1;
        return 0;
    }
    if (strchr(value, ',') || strchr(value, '\\')) {
        fprintf(stderr, "error: '%s': the value of '%s' may not hold ',' or '\\'\n", p->path, name);
        p->bad = 1;
        return 0;
    }
    int is_flag = in_list(flags, name);
    if (is_flag && strcmp(value, "true") && strcmp(value, "false") && strcmp(value, "1") &&
        strcmp(value, "0")) {
        fprintf(stderr, "error: '%s': '%s' must be true or false\n", p->path, name);
        p->bad = 1;
        return 0;
    }
    if (is_flag && (!strcmp(value, "false") || !strcmp(value, "0")))
        return 1;
    int n = is_flag ? snprintf(p->opts + p->len, OPTS_MAX - p->len, "%s%s", p->len ? "," : "", name)
                    : snprintf(p->opts + p->len, OPTS_MAX - p->len, "%s%s=%s", p->len ? "," : "",
                               name, value);
    if (n < 0 || (size_t)n >= OPTS_MAX - p->len) {
        fprintf(stderr, "error: '%s': too many options\n", p->path);
        p->bad = 1;
        return 0;
    }
    p->len += (size_t)n;
    return 1;
}

/* Remove "config=PATH" from a comma-separated option list in place; returns
 * a malloc'd PATH or NULL. */
static char *take_config(char *opts)
{
    char *found = NULL, *out = opts, *save = NULL;
    char *copy = strdup(opts);
    if (!copy)
        return NULL;
    out[0] = '\0';
    for (char *tok = strtok_r(copy, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
        if (!strncmp(tok, "config=", 7)) {
            free(found);
            found = strdup(tok + 7);
            continue;
        }
        if (*out)
            strcat(out, ",");
        strcat(out, tok);
    }
    free(copy);
    return found;
}

void config_argv_free(char **owned)
{
    if (!owned)
        return;
    for (char **p = owned; *p; p++)
        free(*p);
    free(owned);
}

int config_apply(int *argc, char ***argv, char ***owned)
{
    *owned = NULL;
    char *path = NULL;
    int n = *argc;
    char **v = calloc((size_t)n + 3, sizeof(*v));
    if (!v)
        return -1;
    int m = 0;
    for (int i = 0; i < n; i++) {
        if (!(v[m] = strdup((*argv)[i])))
            goto oom;
        /* "-o LIST" or "-oLIST": take config= out of the list */
        char *list = NULL;
        if (!strcmp(v[m], "-o") && i + 1 < n) {
            m++;
            if (!(v[m] = strdup((*argv)[++i])))
                goto oom;
            list = v[m];
        } else if (!strncmp(v[m], "-o", 2) && v[m][2]) {
            list = v[m] + 2;
        }
        if (list && strstr(list, "config=")) {
            char *p = take_config(list);
            if (p) {
                free(path);
                path = p;
            }
        }
        m++;
    }
    int named = path != NULL;
    if (!named && access(CONFIG_DEFAULT_PATH, F_OK) == 0)
        path = strdup(CONFIG_DEFAULT_PATH);
    if (path) {
        struct parse p = {.path = path};
        int rc = ini_parse(path, on_value, &p);
        if (rc < 0) {
            fprintf(stderr, "error: cannot open '%s': %s\n", path, strerror(errno));
            goto fail;
        }
        if (p.bad)
            goto fail;
        if (rc > 0) {
            fprintf(stderr, "error: '%s': syntax error on line %d\n", path, rc);
            goto fail;
        }
        if (p.len) {
            /* after the program name: the command line, later, wins */
            memmove(v + 3, v + 1, (size_t)(m - 1) * sizeof(*v));
            v[1] = strdup("-o");
            v[2] = strdup(p.opts);
            m += 2;
            if (!v[1] || !v[2])
                goto oom;
        }
    }
    v[m] = NULL;
    free(path);
    *argc = m;
    *argv = v;
    *owned = v;
    return 0;
oom:
    fprintf(stderr, "error: out of memory\n");
fail:
    free(path);
    config_argv_free(v);
    return -1;
}
