/* app.h - what certgate answers: the routing of requests to local handlers (health,
 * certificate API) or to the upstream, and the commands built on them. */
#ifndef CERTGATE_APP_H
#define CERTGATE_APP_H

/* The data directory when none is given (`run`, `check-config`, `token`). */
#define DEFAULT_DATA_DIR "./var"

/* Installs the router (call after gw_open, before server_start). */
void app_init(void);
/* Called once the listeners are up (logs hints such as a missing API token). */
void app_started(void);
void app_cleanup(void);
/* `certgate token ...`; argv starts after "token". Returns the exit status. */
int app_token_command(int argc, char **argv);

#endif
