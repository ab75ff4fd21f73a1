#!/bin/sh
# serverctl: start | stop | restart | status of the tasknode agent, through systemd, the SysV
# script or a pid file, whichever manages it on this host. `status` exits 0 when running,
# 1 when dead, 3 when stopped. This file and the agent are the agent user's (the agent updates
# itself): root uses the root-owned entry point instead, and this hands over to it.
TASKNODE_BIN={{ bin }}
TASKNODE_CONFIG={{ config }}
ROOT_SERVERCTL={{ root_serverctl }}
export TASKNODE_CONFIG
if [ "$(id -u)" = 0 ] && [ -f "$ROOT_SERVERCTL" ]; then
    exec /bin/sh "$ROOT_SERVERCTL" "$@"
fi
exec "$TASKNODE_BIN" serverctl "$@"
