#!/bin/sh
# tasknode-serverctl: start | stop | restart | status of the tasknode agent, for root. This file
# is root's, outside the agent's directory: it never runs a file the agent user can change.
# Under systemd it asks systemctl, with a SysV script it runs that root-owned script, and with
# neither it runs the agent's own serverctl as the agent user. `status` exits 0 when running,
# 1 when dead, 3 when stopped.
TASKNODE_BIN={{ bin }}
TASKNODE_CONFIG={{ config }}
TASKNODE_USER={{ user }}
UNIT_NAME={{ service }}
INIT_PATH={{ init_path }}
SCRIPT_UNIT={{ unit_paths[0] }}
PACKAGE_UNIT={{ unit_paths[1] }}
DEB_UNIT={{ unit_paths[2] }}

usage() {
    echo "usage: $0 start|stop|restart|status" >&2
    exit 2
}

[ $# -eq 1 ] || usage
TASKNODE_ACTION=$1
case $TASKNODE_ACTION in
start | stop | restart | status) ;;
*) usage ;;
esac
export TASKNODE_BIN TASKNODE_CONFIG TASKNODE_ACTION

# Runs a command in a new session when setsid exists: no controlling terminal to inject into.
detached() {
    if command -v setsid >/dev/null 2>&1; then
        setsid "$@"
    else
        "$@"
    fi
}

# The agent's own serverctl as the agent user (the pid-file manager): whatever it is, it runs
# with that user's rights only.
as_agent() {
    if [ "$(id -u)" = "$(id -u "$TASKNODE_USER" 2>/dev/null)" ]; then
        "$TASKNODE_BIN" serverctl "$TASKNODE_ACTION"
        return
    fi
    if [ "$(id -u)" != 0 ]; then
        echo "$0: run this as root or as $TASKNODE_USER" >&2
        return 4
    fi
    if ! id "$TASKNODE_USER" >/dev/null 2>&1; then
        echo "$0: there is no user $TASKNODE_USER to run the agent as" >&2
        return 5
    fi
    # The paths reach the agent user's shell through its environment and are expanded there
    # once, never parsed as code: the single quotes are deliberate.
    # shellcheck disable=SC2016
    (cd / && detached su -s /bin/sh "$TASKNODE_USER" -c 'exec "$TASKNODE_BIN" serverctl "$TASKNODE_ACTION"' </dev/null)
}

systemd_unit() {
    [ -d /run/systemd/system ] || return 1
    for unit in "$SCRIPT_UNIT" "$PACKAGE_UNIT" "$DEB_UNIT"; do
        [ -f "$unit" ] && return 0
    done
    return 1
}

systemd_status() {
    state=$(systemctl show -p ActiveState "$UNIT_NAME" | sed -n 's/^ActiveState=//p')
    pid=$(systemctl show -p MainPID "$UNIT_NAME" | sed -n 's/^MainPID=//p')
    case $state in
    active | activating | reloading | deactivating)
        echo "tasknode is running (pid $pid), managed by systemd"
        return 0
        ;;
    failed)
        echo "tasknode is dead (managed by systemd); see journalctl -u $UNIT_NAME"
        return 1
        ;;
    *)
        echo "tasknode is stopped (managed by systemd); start it with \`$0 start\`"
        return 3
        ;;
    esac
}

if [ "$(id -u)" = 0 ] && systemd_unit; then
    if [ "$TASKNODE_ACTION" = status ]; then
        systemd_status
    else
        systemctl "$TASKNODE_ACTION" "$UNIT_NAME"
    fi
elif [ "$(id -u)" = 0 ] && [ -f "$INIT_PATH" ]; then
    /bin/sh "$INIT_PATH" "$TASKNODE_ACTION"
else
    as_agent
fi
exit $?
