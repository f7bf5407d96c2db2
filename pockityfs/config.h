/* config: the defaults file of pockityfs (/etc/pockityfs.ini, or the file
 * named by -o config=PATH), an INI file whose [pockityfs] section holds
 * mount options by their -o names; the command line overrides it. */
#ifndef POCKITYFS_CONFIG_H
#define POCKITYFS_CONFIG_H

#include <stddef.h>

#define CONFIG_DEFAULT_PATH "/etc/pockityfs.ini"

/* Find the config file for argv (-o config=PATH, else CONFIG_DEFAULT_PATH
 * when it exists) and turn its options into "-o" and a comma-separated list,
 * inserted into *argv after the program name (so later command-line options
 * win). config= itself is removed from argv. On success *argv and *argc may
 * point to a new array (malloc'd, with malloc'd strings; the caller frees it
 * with config_argv_free). Returns 0, or -1 after printing a one-line error
 * (unreadable named file, a syntax error, an unknown key). */
int config_apply(int *argc, char ***argv, char ***owned);

/* Free what config_apply allocated (NULL is fine). */
void config_argv_free(char **owned);

#endif
