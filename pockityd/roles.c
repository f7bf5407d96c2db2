/* roles: placeholder, being written. */
typedef int roles_placeholder;
