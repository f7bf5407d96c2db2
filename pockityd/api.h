/* api: what every route handler of pockityd shares: the application context,
 * database access with error replies, authentication of users (login tokens)
 * and of mounts (API keys), and the audit log. */
#ifndef POCKITYD_API_H
#define POCKITYD_API_H

#include <jansson.h>
#include <stdbool.h>
#include <stdint.h>

#include "config.h"
#include "db.h"
#include "http.h"
#include "token.h"

struct s3_client;

/* The process-wide state handed to every handler (http_app()). Read-only once
 * the server runs. */
struct app {
    struct config cfg;
    struct db *db;
    struct s3_client *s3;       /* root credentials: STS and health checks */
    struct token_key token_key; /* signs login tokens (and accepts the previous key) */
};

struct app *api_app(struct http_request *req);

/* Unix time in seconds. */
int64_t api_now(void);

/* Take a pooled database connection. On failure answers 503 unavailable and
 * returns NULL; the handler just returns. Release it with db_release(). */
struct db_conn *api_conn(struct http_request *req);

/* Answer for a failed database call: DB_ERR_CONSTRAINT → 409 conflict,
 * DB_ERR_NOT_FOUND → 404 not_found, DB_ERR_BUSY / DB_ERR_CONN / DB_ERR_RETRY →
 * 503 unavailable (with Retry-After), anything else → 500 internal_error. The
 * detail goes to the log (never parameter values), not to the client. what
 * names the operation for the log ("create pocket"). Counts
 * pockityd_db_errors_total. */
void api_db_fail(struct http_request *req, struct db_conn *c, int status, const char *what);

/* A user signed in with a login token (Authorization: Bearer pks_...). */
struct principal {
    char user_id[64];
    char session_id[TOKEN_SESSION_ID_MAX + 1];
    char email[256];
    bool admin;
    bool verified; /* email verified (or verification off) */
};

/* Authenticate the request's user. Returns true with *p filled, or answers
 * 401 unauthenticated (missing, malformed, forged, expired or revoked token,
 * suspended user) and returns false. */
bool api_user(struct http_request *req, struct db_conn *c, struct principal *p);

/* api_user, then 403 forbidden unless the user is an admin. */
bool api_admin(struct http_request *req, struct db_conn *c, struct principal *p);

/* A mount authenticated by an API key (Authorization: Bearer pky_...). */
struct key_principal {
    char key_id[64];
    char pocket_id[64];
    char user_id[64];
    bool writable; /* the key's access is rw */
};

/* Authenticate an API key: it must exist, match its stored hash (constant
 * time), be neither revoked nor expired, and its owner must not be suspended.
 * Records last use (time and client address). Returns true, or answers 401
 * unauthenticated and returns false. The pocket's own state is the caller's
 * business (a pending pocket gets 403 from POST /v1/session). */
bool api_key(struct http_request *req, struct db_conn *c, struct key_principal *k);

/* For the routes a mount calls for every file it writes (reservations,
 * allowances, deletions): api_key, except that a key this process verified
 * within KEYCACHE_TTL seconds is checked against keycache.h's entry (hash,
 * expiry) without a database read; then the key must be rw, else 403
 * forbidden. A revocation or suspension made by another replica may take that
 * long to show here; every other route (sessions, usage) uses api_key. On
 * false a reply went out. */
bool api_key_writer(struct http_request *req, struct db_conn *c, struct key_principal *k);

/* Answer status with body (stolen; NULL answers 500) plus the pocket's quota
 * totals (usage_json_add). */
struct usage_pocket;
void api_reply_totals(struct http_request *req, int status, json_t *body,
                      const struct usage_pocket *p);

/* Append to the audit log. actor_type is "user", "admin", "key" or "system";
 * detail (may be NULL) is stolen. Returns a db status. Call it inside the
 * transaction of the change it records when there is one. */
int api_audit(struct http_request *req, struct db_conn *c, const char *actor_type,
              const char *actor_id, const char *action, const char *target_type,
              const char *target_id, json_t *detail);

/* Transactions that may refuse the request. A body either succeeds (DB_OK),
 * fails with a db status, or refuses: it fills *ref with api_refuse() and
 * returns API_TX_REFUSED, and the transaction is rolled back. */
#define API_TX_REFUSED (DB_STATUS_COUNT + 100)

struct api_refusal {
    int status;       /* HTTP status of the answer */
    const char *code; /* error code, a string literal */
    char message[300];
};

/* Fill *r and return API_TX_REFUSED. */
int api_refuse(struct api_refusal *r, int status, const char *code, const char *fmt, ...)
        __attribute__((format(printf, 4, 5)));

typedef int (*api_tx_body)(struct db_conn *c, void *arg, struct api_refusal *ref);

/* Run body in a write transaction on c, again on DB_ERR_RETRY (at most
 * DB_TRANSACT_ATTEMPTS times), so body must only touch the database and reset
 * whatever it records in arg. Returns true once committed; otherwise it has
 * answered (the refusal, or the db failure named by what). */
bool api_tx_run(struct http_request *req, struct db_conn *c, api_tx_body body, void *arg,
                const char *what);

/* Generate a new random id with the given prefix ("usr", "pkt", ...) into out
 * (at least 32 bytes). */
void api_new_id(const char *prefix, char *out, size_t outlen);

/* JSON of a text column: a string, or null for SQL NULL. */
json_t *api_json_text(const struct db_result *res, size_t row, size_t col);
/* JSON of an integer column: an integer, or null for SQL NULL. */
json_t *api_json_int(const struct db_result *res, size_t row, size_t col);

#endif
