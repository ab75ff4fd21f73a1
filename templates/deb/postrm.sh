#!/bin/sh
# postrm of the tasknode .deb: purge also removes the logs and state the agent wrote (dpkg
# removes the config). Their contents are the agent user's, so that user removes them (root
# would follow nothing, but never walks a tree that user can change under it); root then
# removes the emptied directories. The user admin stays: other software may own files as admin.
set -e
if [ "$1" = purge ]; then
    for dir in {{ log_dir }} {{ state_dir }}; do
        if [ -L "$dir" ]; then
            rm -f "$dir"
            continue
        fi
        [ -d "$dir" ] || continue
        if id -u {{ user }} >/dev/null 2>&1; then
            TASKNODE_DIR=$dir
            export TASKNODE_DIR
            # shellcheck disable=SC2016
            (cd / && setsid su -s /bin/sh {{ user }} -c 'rm -rf "$TASKNODE_DIR"/* "$TASKNODE_DIR"/.[!.]* "$TASKNODE_DIR"/..?*' </dev/null) || true
        fi
        rmdir "$dir" 2>/dev/null || echo "tasknode: left $dir: not empty (files its user could not remove)" >&2
    done
fi
if [ -d /run/systemd/system ]; then
    systemctl daemon-reload >/dev/null 2>&1 || true
fi
exit 0
