/* mig_billing: placeholder migration, being written. */
#define MIG_BILLING_SQLITE   "SELECT 1;"
#define MIG_BILLING_POSTGRES "SELECT 1;"
