/* api_events: placeholder, being written. */
#include "api.h"
#include "routes.h"

const struct http_route api_events_routes[] = {{0}};
const size_t api_events_n_routes = 0;
