#!/bin/sh
# postrm of the tasknode .deb: purge also removes the logs and state the agent wrote (dpkg
# removes the config). The user admin stays: other software may own files as admin.
set -e
if [ "$1" = purge ]; then
    rm -rf {{ log_dir }} {{ state_dir }}
fi
if [ -d /run/systemd/system ]; then
    systemctl daemon-reload >/dev/null 2>&1 || true
fi
exit 0
