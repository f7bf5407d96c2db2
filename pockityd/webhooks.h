/* webhooks: the pure half of payment webhooks — verifying each provider's
 * signature over the raw body and reading the events that mean "paid". No I/O. */
#ifndef POCKITYD_WEBHOOKS_H
#define POCKITYD_WEBHOOKS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Results of the verifiers and parsers. 0 is success. */
enum webhook_status {
    WEBHOOK_OK = 0,
    WEBHOOK_MISSING,       /* no signature header: 401 */
    WEBHOOK_MALFORMED,     /* a signature header that cannot be parsed: 400 */
    WEBHOOK_BAD_SIGNATURE, /* no configured secret produces the signature: 401 */
    WEBHOOK_STALE,         /* Stripe: signed too long ago (or too far ahead): 401 */
    WEBHOOK_NO_SECRET,     /* no secret is configured: the provider is off */
    WEBHOOK_BAD_EVENT,     /* the body is not an event of the expected shape: 400 */
};

/* A short lowercase description of status; never NULL. */
const char *webhook_strerror(int status);

/* Seconds a Stripe signature stays acceptable, either way from now (Stripe's
 * libraries use the same default). */
#define WEBHOOK_STRIPE_TOLERANCE 300
/* Caps on what a signature header may hold. */
#define WEBHOOK_HEADER_MAX     2048
#define WEBHOOK_STRIPE_SIG_MAX 16 /* v1 entries considered */

/* A parsed Stripe-Signature header: "t=<unix>,v1=<hex>[,v1=<hex>...]" with any
 * other entries (v0, future schemes) ignored. Entries are separated by ',' and
 * may be surrounded by spaces or tabs. */
struct webhook_stripe_header {
    int64_t t;
    size_t n_v1;
    char v1[WEBHOOK_STRIPE_SIG_MAX][65]; /* lowercase hex; only 64-character values kept */
};

/* Parse a Stripe-Signature header. Returns WEBHOOK_OK; WEBHOOK_MISSING for NULL
 * or an empty/blank header; WEBHOOK_MALFORMED when it is longer than
 * WEBHOOK_HEADER_MAX, an entry lacks '=', "t" is missing, repeated or not a
 * positive decimal integer; WEBHOOK_BAD_SIGNATURE when it has no usable v1 value
 * (v1 values that are not 64 hex digits never match and are skipped). */
int webhook_stripe_parse_header(const char *header, struct webhook_stripe_header *out);

/* Verify a Stripe webhook: header is Stripe-Signature (may be NULL), body the
 * raw bytes, secrets the configured signing secrets ("whsec_...", several
 * separated by commas while rotating; spaces around each are ignored; each is
 * used as the HMAC key exactly as written). Valid when some secret's
 * HMAC-SHA256 of "<t>.<body>" equals some v1 value (compared in constant time)
 * and |now - t| <= tolerance. Returns WEBHOOK_OK or a status above (a valid
 * signature with a bad timestamp is WEBHOOK_STALE). */
int webhook_stripe_verify(const char *header, const void *body, size_t len, const char *secrets,
                          int64_t now, int64_t tolerance);

/* Verify a Razorpay webhook: header is X-Razorpay-Signature, the hex
 * HMAC-SHA256 of the raw body under the webhook secret (hex digits in either
 * case). secrets may list several, comma-separated, like Stripe's. */
int webhook_razorpay_verify(const char *header, const void *body, size_t len, const char *secrets);

/* Verify a BTCPay Server webhook: header is BTCPay-Sig, "sha256=" followed by
 * the hex HMAC-SHA256 of the raw body under the webhook's secret. */
int webhook_btcpay_verify(const char *header, const void *body, size_t len, const char *secrets);

/* What a verified event says, as far as payments care. Strings are
 * NUL-terminated and empty when absent. */
struct webhook_event {
    char event_id[200];    /* the deduplication key (see each parser) */
    char type[64];         /* the provider's event type */
    bool paid;             /* an event that means money arrived */
    char invoice_id[64];   /* our invoice id as the event states it (Stripe), or "" */
    char ref[128];         /* what our payment attempt recorded: Stripe checkout session id,
                              Razorpay order id, BTCPay invoice id */
    char payment_ref[128]; /* the provider's id of the payment itself (becomes the
                              invoice's provider_ref) */
    int64_t amount_minor;  /* as the event states it; -1 when it does not (BTCPay) */
    char currency[4];      /* upper-cased ISO code, or "" */
};

/* Read a Stripe event (JSON). event_id is the event's "id". paid for
 * "checkout.session.completed" and "checkout.session.async_payment_succeeded"
 * whose session has payment_status "paid"; then ref is the session id,
 * invoice_id comes from client_reference_id and/or metadata.invoice_id (both
 * present and different is WEBHOOK_BAD_EVENT), payment_ref is payment_intent
 * (or the session id), amount_minor is amount_total. Other types are returned
 * with paid false. WEBHOOK_BAD_EVENT (message in err) for a body that is not
 * such an object, or a paid event missing a field. */
int webhook_stripe_parse(const void *body, size_t len, struct webhook_event *ev, char *err,
                         size_t errlen);

/* Read a Razorpay event. event_id, the deduplication key, comes from the
 * signed body only (never from the unsigned X-Razorpay-Event-Id header):
 * "<event>:<payload.payment.entity.id>" when the event carries a payment,
 * else "<event>:body:<hex SHA-256 of the body>". paid for "payment.captured"
 * and "order.paid": ref is payload.payment.entity.order_id, payment_ref its
 * id, amount/currency its amount/currency; invoice_id from
 * payload.order.entity.receipt when present. */
int webhook_razorpay_parse(const void *body, size_t len, struct webhook_event *ev, char *err,
                           size_t errlen);

/* Read a BTCPay Server event. paid for "InvoiceSettled": ref and payment_ref
 * are invoiceId, event_id is "<webhookId>:<invoiceId>:InvoiceSettled" (a
 * redelivery carries a new deliveryId, so it must not be the key); other types
 * are keyed by originalDeliveryId, else deliveryId. amount_minor is -1 and
 * currency "": the event does not carry them, so the caller asks BTCPay. */
int webhook_btcpay_parse(const void *body, size_t len, struct webhook_event *ev, char *err,
                         size_t errlen);

#endif
