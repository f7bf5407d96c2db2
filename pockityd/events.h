/* events: S3 bucket event notifications — configuring the bucket to push them
 * to pockityd (an RGW topic with an HTTP push endpoint, then the bucket's
 * notification configuration) and applying pushed records to the usage ledger. */
#ifndef POCKITYD_EVENTS_H
#define POCKITYD_EVENTS_H

#include <jansson.h>
#include <stdint.h>

struct app;

/* Records one push may carry (RGW sends one per push). */
#define EVENTS_MAX_RECORDS 1000

/* Ids, names and labels of what events_setup() creates. The notification's id
 * is the topic's name, so daemons with different topics and root prefixes can
 * share a bucket. */
#define EVENTS_PATH "/v1/events/s3"

/* Configure the bucket's notifications from app->cfg: create (or update) the
 * topic cfg.events_topic, persistent, pushing to cfg.events_push_url (default
 * cfg.public_url + EVENTS_PATH) with "token=<cfg.events_token>" added to its
 * query string, then put the bucket notification (id: the topic name) for
 * s3:ObjectCreated:* and s3:ObjectRemoved:* on keys under "<root_prefix>/".
 * Idempotent: every replica may run it. Returns 0, or -1 after logging why
 * (settings missing, S3 refused or unreachable). */
int events_setup(struct app *app);

/* What one push did with its records. */
struct events_result {
    int64_t applied; /* changed the ledger (or recorded a delete's order) */
    int64_t stale;   /* older than (or the same as) what the ledger already applied */
    int64_t outside; /* keys in no pocket (another root prefix, another bucket, unknown pocket) */
    int64_t ignored; /* event types other than created/removed */
    int64_t invalid; /* records without a usable key, size or name */
};

/* Outcomes beyond the db statuses. */
enum {
    EVENTS_BAD_DOCUMENT = 200, /* body is not {"Records": [...]} or has too many records */
};

/* Apply a pushed document {"Records": [...]} to the ledger in ONE transaction
 * (retried on conflicts). Each record of a key under a pocket's prefix
 * upserts the ledger row of (pocket, relative key): created → live with the
 * record's size and eTag, removed → tombstone. A record whose s3.object.sequencer
 * is not newer than the one last applied to that key is stale and skipped, so
 * replays and late deliveries never undo a newer change (a removal of an
 * unknown key still records its sequencer, so a late create of it stays
 * dead). Records without a sequencer are applied in order. RGW records
 * (eventSource "ceph:s3") carry raw keys and a sequencer that encodes the
 * event's time; others are read as AWS does (URL-encoded keys, hex sequencers
 * compared after zero-padding). Counts by result go to *out and to the
 * pockityd_events_records_total{result} counter. Returns DB_OK, a db status,
 * or EVENTS_BAD_DOCUMENT. */
int events_ingest(struct app *app, json_t *doc, int64_t now, struct events_result *out);

#endif
