/* routes: concatenation of every handler file's rows, in a fixed order. */
#include "routes.h"

#include <stdlib.h>
#include <string.h>

struct http_route *routes_build(size_t *n)
{
    const struct {
        const struct http_route *rows;
        size_t n;
    } groups[] = {
            {api_ops_routes, api_ops_n_routes},
            {api_users_routes, api_users_n_routes},
            {api_pockets_routes, api_pockets_n_routes},
            {api_keys_routes, api_keys_n_routes},
            {api_session_routes, api_session_n_routes},
            {api_usage_routes, api_usage_n_routes},
            {api_allowances_routes, api_allowances_n_routes},
            {api_billing_routes, api_billing_n_routes},
            {api_payments_routes, api_payments_n_routes},
            {api_events_routes, api_events_n_routes},
    };
    size_t total = 0;
    for (size_t i = 0; i < sizeof(groups) / sizeof(groups[0]); i++)
        total += groups[i].n;
    struct http_route *all = calloc(total ? total : 1, sizeof(*all));
    if (!all)
        return NULL;
    size_t at = 0;
    for (size_t i = 0; i < sizeof(groups) / sizeof(groups[0]); i++) {
        memcpy(all + at, groups[i].rows, groups[i].n * sizeof(*all));
        at += groups[i].n;
    }
    *n = total;
    return all;
}
