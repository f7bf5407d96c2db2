/* s3_bucket: bucket-level configuration calls — the SNS-style topic that
 * S3 event notifications are pushed through (Ceph RGW's topic API) and the
 * bucket's notification configuration. Incomplete multipart uploads are
 * listed with s3_multipart_list_uploads (s3.h). Every function returns an
 * enum s3_status. */
#ifndef POCKITY_S3_BUCKET_H
#define POCKITY_S3_BUCKET_H

#include <stddef.h>

#include "s3.h"

/* One topic attribute, e.g. {"push-endpoint", "http://host/v1/events/s3?token=..."}
 * or {"persistent", "true"}. */
struct s3_topic_attr {
    const char *key;
    const char *value;
};

/* Create the topic name (or update it when it exists: RGW treats CreateTopic
 * on an existing name as an update) with n attributes, by a form POST to the
 * client's endpoint signed for service "sns". name is 1..256 bytes of
 * [A-Za-z0-9_-]. On S3_OK *arn receives the topic's ARN, malloc'd; the caller
 * frees it. An answer without a TopicArn is S3_ERR_BAD_RESPONSE. */
int s3_topic_create(struct s3_client *c, const char *name, const struct s3_topic_attr *attrs,
                    size_t n, char **arn);

/* Delete a topic by ARN (deleting a missing topic succeeds). */
int s3_topic_delete(struct s3_client *c, const char *arn);

/* One notification of the bucket: events (n_events names such as
 * "s3:ObjectCreated:*") for keys starting with prefix (NULL or "": all keys)
 * go to topic_arn. id names the notification (1..64 bytes of [A-Za-z0-9_-]).
 * RGW keeps notifications by id: putting an id again replaces that one only. */
struct s3_notification {
    const char *id;
    const char *topic_arn;
    const char *const *events;
    size_t n_events;
    const char *prefix;
};

/* PutBucketNotificationConfiguration of the client's bucket with one
 * notification. */
int s3_bucket_put_notification(struct s3_client *c, const struct s3_notification *n);

/* Remove the bucket's notification id (RGW's DELETE ?notification=ID); a
 * missing one succeeds. */
int s3_bucket_delete_notification(struct s3_client *c, const char *id);

/* Build the NotificationConfiguration document of n (for tests): a malloc'd
 * string, its length in *len, or NULL for a bad argument or no memory. */
char *s3_bucket_notification_xml(const struct s3_notification *n, size_t *len);

#endif
