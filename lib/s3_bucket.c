/* s3_bucket: placeholder, being written. */
typedef int s3_bucket_placeholder;
