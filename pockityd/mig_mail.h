/* mig_mail: placeholder migration, being written. */
#define MIG_MAIL_SQLITE   "SELECT 1;"
#define MIG_MAIL_POSTGRES "SELECT 1;"
