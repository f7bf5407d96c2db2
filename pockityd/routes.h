/* routes: the whole API's route table, gathered from the handler files, each
 * of which exports its own rows. */
#ifndef POCKITYD_ROUTES_H
#define POCKITYD_ROUTES_H

#include <stddef.h>

#include "http.h"

#define ROUTE_GROUP(g)                                                                             \
    extern const struct http_route api_##g##_routes[];                                             \
    extern const size_t api_##g##_n_routes

ROUTE_GROUP(ops);
ROUTE_GROUP(users);
ROUTE_GROUP(pockets);
ROUTE_GROUP(keys);
ROUTE_GROUP(session);
ROUTE_GROUP(usage);
ROUTE_GROUP(allowances);
ROUTE_GROUP(billing);
ROUTE_GROUP(payments);
ROUTE_GROUP(events);

/* Build the full table into a malloc'd array (caller frees) of *n rows. */
struct http_route *routes_build(size_t *n);

#endif
