/* pockity-admin: the operator's command line over pockityd's admin API.
 * Global options, then dispatch through the table of command groups. */
#include <curl/curl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"

/* The command groups: a group's name and its subcommands, or (name NULL)
 * top-level commands. Listed in this order by --help. */
static const struct {
    const char *name;
    const struct cmd *cmds;
} groups[] = {
        {NULL, cmd_auth},           {"requests", cmd_requests},
        {"tiers", cmd_tiers},       {"users", cmd_users},
        {"pockets", cmd_pockets},   {"subscriptions", cmd_subscriptions},
        {"invoices", cmd_invoices}, {"credits", cmd_credits},
        {NULL, cmd_usage},          {NULL, cmd_audit},
};
#define N_GROUPS (sizeof(groups) / sizeof(groups[0]))

static const char global_help[] =
        "Global options (before or after the command):\n"
        "  --server URL     pockityd's address (else $POCKITY_SERVER, else the saved login)\n"
        "  --token TOKEN    an administrator's login token (else $POCKITY_ADMIN_TOKEN, else\n"
        "                   the saved login); visible to other users in ps: prefer the\n"
        "                   environment\n"
        "  --json           print the API's JSON instead of tables\n"
        "  -h, --help       help on the program, a group or a command\n"
        "  --version        print the version\n";

static void list_commands(FILE *f, const struct cmd *cmds, const char *group)
{
    for (const struct cmd *c = cmds; c->name; c++) {
        char name[64];
        snprintf(name, sizeof(name), "%s%s%s", group ? group : "", group ? " " : "", c->name);
        fprintf(f, "  %-22s  %s\n", name, c->help);
    }
}

void cli_usage(const struct cli *cli, FILE *f)
{
    const char *group = cli->group;
    if (cli->cmd) {
        fprintf(f, "usage: pockity-admin %s%s%s%s%s [--json]\n\n%s\n", group ? group : "",
                group ? " " : "", cli->cmd->name, cli->cmd->args[0] ? " " : "", cli->cmd->args,
                cli->cmd->help);
        if (cli->cmd->details)
            fprintf(f, "\nOptions:\n%s", cli->cmd->details);
        fprintf(f, "\nSee 'pockity-admin --help' for the global options.\n");
        return;
    }
    if (group) {
        fprintf(f, "usage: pockity-admin %s COMMAND [OPTIONS]\n\nCommands:\n", group);
        for (size_t i = 0; i < N_GROUPS; i++)
            if (groups[i].name && strcmp(groups[i].name, group) == 0)
                list_commands(f, groups[i].cmds, group);
        fprintf(f, "\nSee 'pockity-admin %s COMMAND --help' for a command's options.\n", group);
        return;
    }
    fprintf(f, "usage: pockity-admin [--server URL] [--json] COMMAND [ARGS]\n"
               "       pockity-admin --version | --help\n\n"
               "Commands:\n");
    for (size_t i = 0; i < N_GROUPS; i++)
        list_commands(f, groups[i].cmds, groups[i].name);
    fprintf(f,
            "\n%s\nSee 'pockity-admin COMMAND --help' for a command's options.\n"
            "Exit status: 0 done, 1 failed (the server's error is printed), 2 usage error.\n",
            global_help);
}

static const struct cmd *find_cmd(const struct cmd *cmds, const char *name)
{
    for (const struct cmd *c = cmds; c->name; c++)
        if (strcmp(c->name, name) == 0)
            return c;
    return NULL;
}

/* Find argv[0] (and for a group argv[1]) and run it. */
static int dispatch(struct cli *cli, int argc, char **argv)
{
    for (size_t i = 0; i < N_GROUPS; i++) {
        if (groups[i].name) {
            if (strcmp(groups[i].name, argv[0]) != 0)
                continue;
            cli->group = groups[i].name;
            /* Global options may come between the group and its command. */
            int at = 1;
            while (at < argc && argv[at][0] == '-' && cli_global_option(cli, argc, argv, &at))
                at++;
            if (at >= argc)
                cli_usage_error(cli, "'%s' needs a command", cli->group);
            cli->cmd = find_cmd(groups[i].cmds, argv[at]);
            if (!cli->cmd)
                cli_usage_error(cli, "unknown command '%s %s'", cli->group, argv[at]);
            return cli->cmd->fn(cli, argc - at, argv + at);
        }
        const struct cmd *c = find_cmd(groups[i].cmds, argv[0]);
        if (c) {
            cli->cmd = c;
            return c->fn(cli, argc, argv);
        }
    }
    cli_usage_error(cli, "unknown command '%s'", argv[0]);
}

/* The run's state, released at exit too: the commands may exit from deep
 * inside (cli_die), and the client's token copy is wiped on release. */
static struct cli cli;

static void at_exit(void)
{
    cli_release(&cli);
    curl_global_cleanup();
}

int main(int argc, char **argv)
{
    atexit(at_exit);
    int i = 1;
    for (; i < argc && argv[i][0] == '-'; i++) {
        if (strcmp(argv[i], "--version") == 0) {
            printf("pockity-admin %s\n", POCKITY_VERSION);
            return EXIT_OK;
        }
        if (strcmp(argv[i], "--") == 0) {
            i++;
            break;
        }
        if (!cli_global_option(&cli, argc, argv, &i))
            cli_usage_error(&cli, "unknown option '%s'", argv[i]);
    }
    if (i >= argc)
        cli_usage_error(&cli, "no command given");
    if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK)
        cli_die("cannot initialise libcurl");
    cli_signals();
    return dispatch(&cli, argc - i, argv + i);
}
