/* mig_payments: placeholder migration, being written. */
#define MIG_PAYMENTS_SQLITE   "SELECT 1;"
#define MIG_PAYMENTS_POSTGRES "SELECT 1;"
