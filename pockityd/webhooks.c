/* webhooks: placeholder, being written. */
typedef int webhooks_placeholder;
