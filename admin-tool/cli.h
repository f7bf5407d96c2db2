/* cli: what every pockity-admin command shares: the command tables, option
 * parsing, the connection to pockityd and the output helpers. */
#ifndef POCKITY_ADMIN_CLI_H
#define POCKITY_ADMIN_CLI_H

#include <jansson.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>

#include "buf.h"
#include "client.h"
#include "table.h"

/* Exit statuses. */
enum {
    EXIT_OK = 0,
    EXIT_FAIL = 1,  /* the server refused, or it could not be reached */
    EXIT_USAGE = 2, /* the command line is wrong */
};

struct cli;

/* A command runs with argv[0] its own name and returns an exit status. The
 * helpers below that "die" exit the process themselves (a CLI may). */
typedef int (*cmd_fn)(struct cli *cli, int argc, char **argv);

/* One row of a command table; a table ends with a row whose name is NULL. */
struct cmd {
    const char *name;
    cmd_fn fn;
    const char *args;    /* what follows the name in the synopsis, or "" */
    const char *help;    /* one line for the list of commands */
    const char *details; /* the options, one per line, or NULL */
};

/* The tables, one per file. cmd_auth (login, logout), cmd_usage (usage,
 * usage reconcile) and cmd_audit are top-level commands; the others are the
 * subcommands of the groups requests, tiers, users, pockets, subscriptions,
 * invoices and credits. */
extern const struct cmd cmd_auth[];
extern const struct cmd cmd_requests[];
extern const struct cmd cmd_tiers[];
extern const struct cmd cmd_users[];
extern const struct cmd cmd_pockets[];
extern const struct cmd cmd_usage[];
extern const struct cmd cmd_audit[];
extern const struct cmd cmd_subscriptions[];
extern const struct cmd cmd_invoices[];
extern const struct cmd cmd_credits[];

/* The state of one run. */
struct cli {
    const char *group;      /* "tiers" while a group's subcommand runs, else NULL */
    const struct cmd *cmd;  /* the command running, NULL before dispatch */
    bool json;              /* --json: print the API's JSON */
    const char *server_opt; /* --server, or NULL */
    char *token_opt;        /* --token (a copy; the argv text is blanked), or NULL */
    struct client *client;  /* connected by cli_connect, or NULL */
    bool token_saved;       /* the token in use came from the saved login */
    char server[1024];      /* the server in use once connected */
    struct buf path;        /* the request path being built (cli_path_buf) */
};

/* Set by SIGINT/SIGTERM once cli_signals() ran; long waits stop on it. */
extern volatile sig_atomic_t cli_stop;
void cli_signals(void);

/* Release what cli holds (the client, the token copy). */
void cli_release(struct cli *cli);

/* ---- Options.
 * Each command lists its options in an array ending with {NULL}. Long names
 * only: "--name value" and "--name=value". The global options --json,
 * --server URL, --token TOKEN and --help (-h) are accepted by every command
 * too; "--" ends the options. */
enum opt_type {
    OPT_FLAG,   /* bool *: set by its presence */
    OPT_STRING, /* const char **: the argument, borrowed from argv */
    OPT_SIZE,   /* int64_t *: a byte size with units (format_parse_size) */
    OPT_COUNT,  /* int64_t *: an integer 0 or more */
    OPT_BOOL,   /* int *: true/false (1/0) */
    OPT_LIST,   /* struct opt_list *: every value of a repeated option, in order */
};

#define OPT_LIST_MAX 100

struct opt_list {
    const char *items[OPT_LIST_MAX]; /* borrowed from argv */
    size_t n;
};

struct opt {
    const char *name; /* without the leading "--" */
    enum opt_type type;
    void *value;
    bool seen; /* set by cli_parse when given */
};

/* Parse argv[1..argc) against opts. The arguments that are not options go
 * to pos (room for max), in order; there must be at least min of them. Dies
 * with a usage error (exit 2) for anything wrong, prints the command's help
 * and exits 0 for --help. Returns the number of positional arguments. */
size_t cli_parse(struct cli *cli, int argc, char **argv, struct opt *opts, const char **pos,
                 size_t min, size_t max);

/* Handle a global option at argv[*i] (advancing *i past its value). Returns
 * true when it was one. Dies on a missing value. */
bool cli_global_option(struct cli *cli, int argc, char **argv, int *i);

/* Print the synopsis and details of the running command (or of the group,
 * or of the program when none runs) to f. */
void cli_usage(const struct cli *cli, FILE *f);

/* "error: <message>" and the usage on stderr, then exit 2. */
_Noreturn void cli_usage_error(const struct cli *cli, const char *fmt, ...)
        __attribute__((format(printf, 2, 3)));

/* "error: <message>" on stderr, then exit 1. */
_Noreturn void cli_die(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* "warning: <message>" on stderr. */
void cli_warn(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* Die unless value is one of choices (NULL-terminated); name is the option's. */
void cli_check_choice(const struct cli *cli, const char *name, const char *value,
                      const char *const *choices);

/* An ISO 4217 code from option name's value into out, upper-cased ("usd"
 * gives "USD"). Dies with a usage error unless it is three letters. */
void cli_currency(const struct cli *cli, const char *name, const char *value, char out[4]);

/* ---- The server. */

/* Connect to the server from --server, $POCKITY_SERVER or the saved login,
 * in that order, with the token from --token, $POCKITY_ADMIN_TOKEN or the
 * saved login when with_token. Dies when either is missing. Idempotent. */
struct client *cli_connect(struct cli *cli, bool with_token);

/* Call the API (connecting with a token when not connected yet). body is
 * stolen (may be NULL). Returns the answer, owned by the caller (NULL for an
 * empty one); on any failure prints "error: <message> (<code>)" and exits 1. */
json_t *cli_call(struct cli *cli, const char *method, const char *path, json_t *body);

/* Print the last answer's body exactly as received (with a final newline). */
void cli_print_raw(const struct cli *cli);

/* The run's request path buffer, emptied. It is released at exit, so a
 * command that dies while using it leaks nothing. */
struct buf *cli_path_buf(struct cli *cli);

/* Append prefix, then id percent-encoded (if not NULL), then suffix (if not
 * NULL) to b. Dies when out of memory. */
void cli_path(struct buf *b, const char *prefix, const char *id, const char *suffix);

/* Append a query argument (client_query); nothing when value is NULL. */
void cli_query(struct buf *b, const char *name, const char *value);
/* The same for an integer, when set. */
void cli_query_int(struct buf *b, const char *name, int64_t value, bool set);

/* ---- Reading answers. path is a dotted member path ("tier.id"). */
json_t *cli_json(json_t *root, const char *path);
const char *cli_str(json_t *root, const char *path); /* NULL unless a string */
int64_t cli_int(json_t *root, const char *path);     /* 0 unless an integer */
/* Any scalar as text into out: strings as they are, integers in decimal,
 * true/false, NULL for null or absent. Returns out or NULL. */
const char *cli_text(json_t *root, const char *path, char *out, size_t outlen);

/* ---- Output. */

/* table_new / table_add that die when out of memory. */
struct table *cli_table(size_t ncols, const char *const *headers);
void cli_row(struct table *t, const char *const *cells);

/* A two-column "key  value" table for show commands (no header, no cap). */
struct table *cli_kv_table(void);
void cli_kv(struct table *t, const char *key, const char *value);

/* A time member (Unix seconds) as format_time into out; NULL when it is null
 * or absent (a table prints "-"). A string is returned as it is. */
const char *cli_time(json_t *root, const char *path, char *out, size_t outlen);

/* An amount in minor units with the currency member beside it, as
 * format_money into out; NULL when the amount is not an integer. */
const char *cli_money(json_t *root, const char *amount_path, const char *currency_path, char *out,
                      size_t outlen);

/* The object in answer under key when there is one ({"invoice": {...}}),
 * else answer itself: actions answer either way. Borrowed. */
json_t *cli_unwrap(json_t *answer, const char *key);

/* When a list answer says more follow ({"next_offset": N} or
 * {"next_cursor": "..."}), tell on stderr how to get them. */
void cli_more(json_t *answer);

#endif
