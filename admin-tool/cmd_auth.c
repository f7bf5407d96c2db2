/* cmd_auth: login (saves the server and a login token in
 * ~/.config/pockity/admin.ini, mode 0600) and logout. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <termios.h>
#include <unistd.h>

#include "cli.h"
#include "format.h"

#define EMAIL_MAX    320
#define PASSWORD_MAX 1024 /* bytes, as pockityd allows */

/* Read one line of stdin into out without its line break. Dies when there is
 * none or it is longer than outlen - 2 bytes. */
static void read_line(char *out, size_t outlen, const char *what)
{
    errno = 0;
    if (!fgets(out, (int)outlen, stdin)) {
        if (errno == EINTR || cli_stop)
            exit(130);
        cli_die("no %s on standard input", what);
    }
    size_t n = strlen(out);
    if (n && out[n - 1] == '\n') {
        out[--n] = '\0';
    } else if (!feof(stdin)) {
        client_wipe(out, outlen);
        cli_die("the %s is too long", what);
    }
    if (n && out[n - 1] == '\r')
        out[--n] = '\0';
}

/* Read the password: from the terminal without echo, else one line of stdin. */
static void read_password(char *out, size_t outlen)
{
    struct termios old, quiet;
    bool tty = isatty(STDIN_FILENO) && tcgetattr(STDIN_FILENO, &old) == 0;
    if (tty) {
        fputs("password: ", stderr);
        fflush(stderr);
        quiet = old;
        quiet.c_lflag &= ~(tcflag_t)ECHO;
        quiet.c_lflag |= ECHONL;
        tcsetattr(STDIN_FILENO, TCSAFLUSH, &quiet);
    }
    errno = 0;
    char *got = fgets(out, (int)outlen, stdin);
    int saved = errno;
    if (tty)
        tcsetattr(STDIN_FILENO, TCSAFLUSH, &old);
    if (!got) {
        if (saved == EINTR || cli_stop)
            exit(130);
        cli_die("no password on standard input");
    }
    size_t n = strlen(out);
    if (n && out[n - 1] == '\n') {
        out[--n] = '\0';
    } else if (!feof(stdin)) {
        client_wipe(out, outlen);
        cli_die("the password is too long");
    }
    if (n && out[n - 1] == '\r')
        out[--n] = '\0';
    if (!n)
        cli_die("the password is empty");
}

static int login(struct cli *cli, int argc, char **argv)
{
    const char *email_opt = NULL;
    struct opt opts[] = {{"email", OPT_STRING, &email_opt, false}, {NULL, 0, NULL, false}};
    cli_parse(cli, argc, argv, opts, NULL, 0, 0);

    char email[EMAIL_MAX + 2], password[PASSWORD_MAX + 2], path[4096], err[512];
    if (client_config_path(path, sizeof(path)) != 0)
        cli_die("cannot tell where to save the login: HOME is not set");
    cli_connect(cli, false);
    if (email_opt) {
        snprintf(email, sizeof(email), "%s", email_opt);
    } else {
        if (isatty(STDIN_FILENO)) {
            fputs("email: ", stderr);
            fflush(stderr);
        }
        read_line(email, sizeof(email), "email address");
    }
    if (!email[0])
        cli_usage_error(cli, "the email address is empty");
    read_password(password, sizeof(password));

    json_t *body = json_pack("{s:s, s:s}", "email", email, "password", password);
    client_wipe(password, sizeof(password));
    if (!body)
        cli_die("the email address or the password is not valid UTF-8");
    json_t *ans = cli_call(cli, "POST", "/v1/auth/login", body);
    const char *token = cli_str(ans, "token");
    if (!token)
        cli_die("the server's answer holds no token");

    struct client_config cfg = {.server = cli->server, .token = (char *)token};
    if (client_config_save(path, &cfg, err, sizeof(err)) != 0)
        cli_die("%s", err);
    /* Saved: wipe our copy, then drop it from the answer (it is never printed). */
    client_wipe((char *)token, strlen(token));
    json_object_del(ans, "token");
    const char *role = cli_str(ans, "user.role");
    if (role && strcmp(role, "admin") != 0)
        cli_warn("'%s' is not an administrator: the admin commands will be refused", email);
    if (cli->json) {
        char *text = json_dumps(ans, JSON_COMPACT | JSON_PRESERVE_ORDER);
        if (!text)
            cli_die("out of memory");
        puts(text);
        free(text);
    } else {
        char when[64];
        printf("logged in to %s as %s", cli->server, cli_str(ans, "user.email") ?: email);
        if (json_is_integer(cli_json(ans, "expires_at")))
            printf(" until %s", format_time(cli_int(ans, "expires_at"), when, sizeof(when)));
        printf("\nthe login is saved in %s\n", path);
    }
    json_decref(ans);
    return EXIT_OK;
}

static int logout(struct cli *cli, int argc, char **argv)
{
    cli_parse(cli, argc, argv, NULL, NULL, 0, 0);
    char path[4096], err[512];
    struct client_config saved = {0};
    bool have_file = client_config_path(path, sizeof(path)) == 0 &&
                     client_config_load(path, &saved, NULL, err, sizeof(err)) == 0;
    struct client *c = cli_connect(cli, true);
    int rc = client_call(c, "POST", "/v1/auth/logout", NULL, NULL);
    /* A login the server no longer knows is as good as ended. */
    if (rc != CLIENT_OK && !(rc == CLIENT_ERR_API && client_http_status(c) == 401)) {
        client_config_release(&saved);
        cli_die("%s", client_errmsg(c));
    }
    if (have_file && saved.token && cli->token_saved) {
        client_wipe(saved.token, strlen(saved.token));
        free(saved.token);
        saved.token = NULL;
        if (client_config_save(path, &saved, err, sizeof(err)) != 0) {
            client_config_release(&saved);
            cli_die("%s", err);
        }
    }
    client_config_release(&saved);
    if (cli->json)
        puts("{}");
    else
        printf("logged out of %s\n", cli->server);
    return EXIT_OK;
}

const struct cmd cmd_auth[] = {
        {"login", login, "[--email EMAIL]",
         "log in as an administrator and save the login in ~/.config/pockity/admin.ini",
         "  --email EMAIL    the account (else asked for, or read as the first line of stdin)\n"
         "The password is read from the terminal without echo, or as a line of stdin.\n"
         "The server comes from --server, $POCKITY_SERVER or the saved login.\n"},
        {"logout", logout, "", "end the login and forget its token", NULL},
        {NULL, NULL, NULL, NULL, NULL},
};
