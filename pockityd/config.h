/* config: pockityd's settings, read from an INI file (inih) with secrets also
 * taken from the environment, so they need not sit in the file. */
#ifndef POCKITYD_CONFIG_H
#define POCKITYD_CONFIG_H

#include <stddef.h>
#include <stdint.h>

struct config {
    /* [server] */
    char *bind;            /* listen address; default 127.0.0.1 */
    int64_t port;          /* default 8080; 0 picks a free port */
    int64_t threads;       /* worker threads; default 16 */
    int64_t max_body;      /* request body cap in bytes; default 1 MiB */
    char *log_level;       /* error, warn, info, debug; default info */
    int64_t syslog;        /* 1: also log to syslog */
    char *port_file;       /* optional: write the port listened on here */
    char *trusted_proxies; /* load balancers (comma-separated addresses or CIDR ranges,
                              IPv4/IPv6) whose X-Forwarded-For gives the client's
                              address; default none */

    /* [database] */
    char *db_url;    /* sqlite:PATH or postgresql://...; env POCKITYD_DATABASE_URL */
    int64_t db_pool; /* connections; default 16 (as many as server threads) */

    /* [s3] */
    char *s3_endpoint;        /* what pockityd talks to */
    char *s3_public_endpoint; /* what mounts are told to use; default s3_endpoint */
    char *s3_region;
    char *s3_bucket;
    char *s3_access_key;     /* env POCKITYD_S3_ACCESS_KEY */
    char *s3_secret_key;     /* env POCKITYD_S3_SECRET_KEY */
    char *s3_role_arn;       /* the role AssumeRole narrows per pocket */
    char *s3_root_prefix;    /* pockets live under ROOT/ID/; default "pockets" */
    int64_t session_seconds; /* lifetime of mount credentials; default 900 (STS minimum) */
    int64_t s3_scoped_roles; /* 1 (default): one role per pocket and access, whose own policy
                                holds only that pocket's prefix, so a session never exceeds
                                it even if the storage ignored the session policy */

    /* [auth] */
    char *token_secret; /* HMAC key of login tokens, >= 32 bytes; env POCKITYD_TOKEN_SECRET */
    char *token_secret_previous; /* still accepted after a rotation; env
                                    POCKITYD_TOKEN_SECRET_PREVIOUS */
    int64_t login_ttl;           /* seconds a login lasts; default 7 days */
    int64_t login_max_attempts;  /* failed logins per window, per account and per address; 10 */
    int64_t login_window;        /* seconds; default 900 */
    int64_t password_cost_kib;   /* argon2id memory; default 19456 */
    int64_t password_cost_t;     /* argon2id passes; default 2 */

    /* [quota] */
    int64_t reservation_ttl; /* seconds before an uncommitted reservation expires; 3600 */
    int64_t sweep_interval;  /* seconds between sweeps of expired reservations; 60 */
    int64_t allowance_ttl;   /* seconds an allowance lives past its grant or last commit; 120 */

    /* [server] public_url: how users reach this API (links in mail, payment
     * return pages); default none */
    char *public_url;

    /* [billing] */
    int64_t billing_grace;       /* seconds past an invoice's due date before past_due; 7 days */
    int64_t billing_renew_ahead; /* seconds before a period ends to open the next invoice; 3 days */
    int64_t billing_due_days;    /* days an opened invoice has before it is due; 7 */
    int64_t billing_interval;    /* seconds between renewal/past-due rounds; 60 */

    /* [stripe] */
    char *stripe_api_base;       /* default https://api.stripe.com */
    char *stripe_secret_key;     /* env POCKITYD_STRIPE_SECRET_KEY */
    char *stripe_webhook_secret; /* whsec_..., several comma-separated while rotating;
                                    env POCKITYD_STRIPE_WEBHOOK_SECRET */

    /* [razorpay] */
    char *razorpay_api_base; /* default https://api.razorpay.com */
    char *razorpay_key_id;
    char *razorpay_key_secret;     /* env POCKITYD_RAZORPAY_KEY_SECRET */
    char *razorpay_webhook_secret; /* env POCKITYD_RAZORPAY_WEBHOOK_SECRET */

    /* [btcpay] */
    char *btcpay_url;     /* the BTCPay Server's base URL */
    char *btcpay_api_key; /* Greenfield API key; env POCKITYD_BTCPAY_API_KEY */
    char *btcpay_store_id;
    char *btcpay_webhook_secret; /* env POCKITYD_BTCPAY_WEBHOOK_SECRET */

    /* [crypto] receiving addresses for payments confirmed by an admin */
    char *crypto_eth_address;
    char *crypto_usdc_address;

    /* [smtp] no url: email verification and notifications are off */
    char *smtp_url; /* smtp://host:port or smtps://host:port */
    char *smtp_user;
    char *smtp_password;      /* env POCKITYD_SMTP_PASSWORD */
    char *smtp_from;          /* envelope and From: address */
    int64_t smtp_require_tls; /* 1: refuse to send without STARTTLS/TLS (always so
                                 when smtp_user is set: a login never goes in clear) */

    /* [events] S3 bucket notifications pushed to POST /v1/events/s3 */
    int64_t events_enabled; /* configure the bucket's notifications at start-up */
    char *events_token;     /* shared secret of the push endpoint; env POCKITYD_EVENTS_TOKEN */
    char *events_push_url;  /* where RGW pushes; default public_url + /v1/events/s3 */
    char *events_topic;     /* SNS topic name; default "pockity-events" */

    /* [reconcile] */
    int64_t reconcile_interval;  /* seconds between full reconciliations; 0: only on demand;
                                    default 3600 */
    int64_t reconcile_list_rate; /* ListObjectsV2 pages per second per replica; 20 */
    int64_t multipart_max_age;   /* seconds before an incomplete multipart upload is aborted;
                                    default 86400 */
};

/* Fill cfg with the defaults. */
void config_init(struct config *cfg);

/* Read path over the defaults, then the environment. Returns 0, or -1 after
 * writing a message such as "error: 'x.ini' line 3: unknown key 'prot'" to
 * err. A missing file is an error. */
int config_load(struct config *cfg, const char *path, char *err, size_t errlen);

/* Apply the environment overrides only (config_load does it too). */
void config_env(struct config *cfg);

/* Check that what is required is present and sane. Returns 0 or -1 with err. */
int config_validate(const struct config *cfg, char *err, size_t errlen);

/* Free the strings (wiping the secrets). */
void config_release(struct config *cfg);

#endif
