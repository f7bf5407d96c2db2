/* api_payments: placeholder, being written. */
#include "api.h"
#include "routes.h"

const struct http_route api_payments_routes[] = {{0}};
const size_t api_payments_n_routes = 0;
