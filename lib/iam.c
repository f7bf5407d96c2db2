/* iam: placeholder, being written. */
typedef int iam_placeholder;
