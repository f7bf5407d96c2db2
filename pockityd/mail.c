/* mail: placeholder, being written. */
typedef int mail_placeholder;
