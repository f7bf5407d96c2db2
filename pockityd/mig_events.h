/* mig_events: placeholder migration, being written. */
#define MIG_EVENTS_SQLITE   "SELECT 1;"
#define MIG_EVENTS_POSTGRES "SELECT 1;"
