/* api_billing: placeholder, being written. */
#include "api.h"
#include "routes.h"

const struct http_route api_billing_routes[] = {{0}};
const size_t api_billing_n_routes = 0;
