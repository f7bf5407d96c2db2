/* notify: mail notifications, taken from the audit log through an outbox in
 * the database, so that every event mails each recipient once with any number
 * of replicas, and a mail server that is down only delays the mail. */
#ifndef POCKITYD_NOTIFY_H
#define POCKITYD_NOTIFY_H

#include <stdint.h>

struct app;

/*
 * What is mailed, read from audit_log rows:
 *   tier_request.create   to every active administrator (not for tiers granted
 *                         without approval), while the request is still pending
 *   tier_request.approve  to the pocket's owner (decisions of an administrator)
 *   tier_request.reject   to the pocket's owner
 *   invoice.open          to the invoice's owner, while it is still open
 *   subscription.past_due to the owner, while the subscription is still past due
 *   subscription.restore  to the owner
 *
 * How: notify_claim() reads the audit rows after mail_cursor.last_audit_id,
 * writes one mail_outbox row per recipient and moves the cursor with a
 * compare-and-set UPDATE, all in one transaction, so only one replica's claim
 * of a batch commits. An id hole (a transaction still open on PostgreSQL, whose
 * sequence hands out ids before commit) stops the claim until the row after
 * it is NOTIFY_GAP_WAIT seconds old. notify_deliver() leases each due outbox
 * row with a conditional UPDATE (only the replica that wins sends), writes the
 * text from the current state (pocket names, invoice totals), sends it, and
 * marks it sent, or schedules a retry with exponential backoff starting at
 * [quota] sweep_interval, giving up (status 'failed', a warning in the log)
 * after NOTIFY_MAX_ATTEMPTS. Without an SMTP server the cursor just follows
 * the audit log, and nothing is queued.
 */
#define NOTIFY_BATCH        200          /* audit rows read per claim */
#define NOTIFY_SEND_BATCH   50           /* messages sent per round */
#define NOTIFY_MAX_ATTEMPTS 10           /* sends of one message before giving up */
#define NOTIFY_BACKOFF_MAX  3600         /* seconds: the longest wait between two attempts */
#define NOTIFY_LEASE        300          /* seconds a replica holds a message it is sending */
#define NOTIFY_GAP_WAIT     30           /* seconds before an audit id hole counts as rolled back */
#define NOTIFY_KEEP         (30 * 86400) /* seconds sent and failed messages are kept */

/* Turn new audit rows into outbox rows (at most NOTIFY_BATCH). Returns the
 * number of audit rows consumed (0 when another replica took them), or a
 * negative db status. */
int notify_claim(struct app *app, int64_t now);

/* Send the outbox rows that are due (at most NOTIFY_SEND_BATCH). Returns the
 * number sent, or a negative db status. */
int notify_deliver(struct app *app, int64_t now);

/* notify_job (declared in jobs.h) runs notify_claim until the log is read,
 * then notify_deliver, and forgets messages older than NOTIFY_KEEP. */

#endif
