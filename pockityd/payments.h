/* payments: the outbound side of payments — clients of the Stripe, Razorpay and
 * BTCPay Server APIs (libcurl, bounded), and money as decimal text. */
#ifndef POCKITYD_PAYMENTS_H
#define POCKITYD_PAYMENTS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "config.h"

/* Results of the provider calls. 0 is success. */
enum payments_status {
    PAYMENTS_OK = 0,
    PAYMENTS_ERR_CONFIG,    /* the provider is not configured */
    PAYMENTS_ERR_INVALID,   /* an argument we cannot send (amount, currency, id) */
    PAYMENTS_ERR_TRANSPORT, /* connection, timeout, response over the size cap */
    PAYMENTS_ERR_PROVIDER,  /* the provider answered with an error status */
    PAYMENTS_ERR_RESPONSE,  /* a 2xx answer without what the documentation promises */
    PAYMENTS_ERR_NOMEM,
};

/* A short lowercase description of status; never NULL. */
const char *payments_strerror(int status);

/* Bounds of every outbound call. */
#define PAYMENTS_CONNECT_TIMEOUT_MS 5000
#define PAYMENTS_TIMEOUT_MS         15000
#define PAYMENTS_RESPONSE_MAX       (256 * 1024)

/* ---- Money as text. Exponents are ISO 4217's (2 unless listed: JPY, KRW and
 * other zero-decimal currencies 0; BHD, JOD, KWD, OMR, TND, IQD, LYD 3). */

/* Decimal places of a currency (3 upper-case letters). */
int payments_currency_exponent(const char *currency);

/* Whether s is 3 upper-case ASCII letters. */
bool payments_currency_ok(const char *s);

/* Write amount_minor (>= 0) as a decimal string in the currency's major unit,
 * e.g. 1234 USD → "12.34", 5 USD → "0.05", 500 JPY → "500". Returns 0, or
 * -EINVAL for a negative amount or a bad currency, -ENOSPC when outlen is too
 * small (32 bytes always suffice). */
int payments_amount_format(int64_t amount_minor, const char *currency, char *out, size_t outlen);

/* Parse a non-negative decimal string ("12.34", "12.3", "12", "12.340") into
 * minor units. Extra fractional digits must be zeros. Refuses signs,
 * exponents, spaces, empty parts ("12.", ".5") and overflow. Returns 0 or
 * -EINVAL. */
int payments_amount_parse(const char *s, const char *currency, int64_t *amount_minor);

/* ---- Provider calls. err receives a message fit for the log (never a
 * secret); the provider's own error text is included when it sent one. */

/* What a payment creation returned. */
struct payments_checkout {
    char ref[128];  /* Stripe checkout session id, Razorpay order id, BTCPay invoice id */
    char url[1024]; /* where the user pays (Stripe, BTCPay), or "" (Razorpay) */
};

/* Whether each provider has the settings a payment needs (its webhook secret
 * included: a payment we could never confirm must not be started). */
bool payments_stripe_ready(const struct config *cfg);
bool payments_razorpay_ready(const struct config *cfg);
bool payments_btcpay_ready(const struct config *cfg);

/* Stripe: POST {stripe_api_base}/v1/checkout/sessions (form-encoded, mode
 * payment, one line item of amount_minor in currency, client_reference_id and
 * metadata[invoice_id] = invoice_id, success/cancel URLs under public_url).
 * idempotency_key goes in Idempotency-Key; the call is retried once with it
 * after a transport failure or a 5xx. */
int payments_stripe_checkout(const struct config *cfg, const char *invoice_id, int64_t amount_minor,
                             const char *currency, const char *idempotency_key,
                             struct payments_checkout *out, char *err, size_t errlen);

/* Razorpay: POST {razorpay_api_base}/v1/orders (basic auth key_id:key_secret;
 * JSON amount, currency, receipt = invoice_id, notes.invoice_id). out->ref is
 * the order id. */
int payments_razorpay_order(const struct config *cfg, const char *invoice_id, int64_t amount_minor,
                            const char *currency, struct payments_checkout *out, char *err,
                            size_t errlen);

/* BTCPay Server Greenfield: POST {btcpay_url}/api/v1/stores/{store}/invoices
 * (Authorization: token KEY; JSON amount as a decimal string, currency,
 * metadata.orderId = invoice_id). out->ref is BTCPay's invoice id, out->url
 * its checkoutLink. */
int payments_btcpay_invoice(const struct config *cfg, const char *invoice_id, int64_t amount_minor,
                            const char *currency, struct payments_checkout *out, char *err,
                            size_t errlen);

/* A BTCPay invoice as its server reports it. */
struct payments_btcpay_state {
    char status[32];      /* "New", "Processing", "Settled", "Expired", "Invalid" */
    char currency[4];     /* upper-case */
    int64_t amount_minor; /* the invoice amount in minor units of currency */
    char order_id[64];    /* metadata.orderId, or "" */
};

/* BTCPay: GET {btcpay_url}/api/v1/stores/{store}/invoices/{btcpay_invoice_id}.
 * The id must be 1..64 characters of [A-Za-z0-9_-] (else PAYMENTS_ERR_INVALID). */
int payments_btcpay_get(const struct config *cfg, const char *btcpay_invoice_id,
                        struct payments_btcpay_state *out, char *err, size_t errlen);

#endif
