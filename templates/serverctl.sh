#!/bin/sh
# serverctl: start | stop | restart | status of the tasknode agent, through systemd, the SysV
# script or a pid file, whichever manages it on this host. `status` exits 0 when running,
# 1 when dead, 3 when stopped.
TASKNODE_BIN={{ bin }}
TASKNODE_CONFIG={{ config }}
export TASKNODE_CONFIG
exec "$TASKNODE_BIN" serverctl "$@"
