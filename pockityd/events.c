/* events: placeholder, being written. */
typedef int events_placeholder;
