#!/bin/sh
# postrm of the tasknode-console .deb: remove and purge keep the console's data (its database
# holds every server, task and key: delete {{ state_dir }} by hand when it is no longer
# wanted) and its user.
set -e
if [ -d /run/systemd/system ]; then
    systemctl daemon-reload >/dev/null 2>&1 || true
fi
exit 0
