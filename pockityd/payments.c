/* payments: placeholder, being written. */
typedef int payments_placeholder;
