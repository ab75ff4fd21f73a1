#!/bin/sh
#
# tasknode      tasknode agent
#
# chkconfig: 2345 90 10
# description: tasknode agent: runs scheduled data tasks for the tasknode console.
# processname: tasknode
#
### BEGIN INIT INFO
# Provides: tasknode
# Required-Start: $local_fs $network $remote_fs
# Required-Stop: $local_fs $network $remote_fs
# Default-Start: 2 3 4 5
# Default-Stop: 0 1 6
# Short-Description: tasknode agent
# Description: Runs scheduled data tasks for the tasknode console.
### END INIT INFO

# Rendered values (quoted by the renderer).
TASKNODE_BIN={{ bin }}
TASKNODE_CONFIG={{ config }}
TASKNODE_LOG_DIR={{ log_dir }}
PIDFILE={{ pid_file }}

TASKNODE_USER="admin"
STOP_TIMEOUT=90
OUTFILE="$TASKNODE_LOG_DIR/agent.out"

# The pid in the pid file, if it is a running `tasknode ... run`: a stale pid file must never
# make this script signal an unrelated process that took over the pid.
running_pid() {
    [ -f "$PIDFILE" ] || return 1
    pid=$(cat "$PIDFILE" 2>/dev/null)
    [ -n "$pid" ] || return 1
    kill -0 "$pid" 2>/dev/null || return 1
    tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -q 'tasknode.* run ' || return 1
    echo "$pid"
}

start() {
    if pid=$(running_pid); then
        echo "tasknode is already running (pid $pid)"
        return 0
    fi
    if [ ! -x "$TASKNODE_BIN" ]; then
        echo "tasknode: $TASKNODE_BIN is missing or not executable" >&2
        return 5
    fi
    mkdir -p "$(dirname "$PIDFILE")" "$TASKNODE_LOG_DIR" || return 1
    chown "$TASKNODE_USER" "$(dirname "$PIDFILE")" "$TASKNODE_LOG_DIR" || return 1
    rm -f "$PIDFILE"
    printf 'Starting tasknode: '
    # The paths reach the agent user's shell through its environment and are expanded there
    # once, never parsed as code: the single quotes are deliberate.
    export TASKNODE_BIN TASKNODE_CONFIG PIDFILE OUTFILE
    # shellcheck disable=SC2016
    su -s /bin/sh "$TASKNODE_USER" -c \
        'cd / && "$TASKNODE_BIN" run --config "$TASKNODE_CONFIG" </dev/null >>"$OUTFILE" 2>&1 & echo $! >"$PIDFILE"'
    # The agent exits at once on a bad config: give it a moment to prove it runs.
    sleep 1
    if pid=$(running_pid); then
        echo "started (pid $pid)"
        return 0
    fi
    echo "FAILED: see $OUTFILE"
    rm -f "$PIDFILE"
    return 1
}

stop() {
    if ! pid=$(running_pid); then
        echo "tasknode is not running"
        rm -f "$PIDFILE"
        return 0
    fi
    printf 'Stopping tasknode (pid %s): ' "$pid"
    kill -TERM "$pid" 2>/dev/null
    waited=0
    while kill -0 "$pid" 2>/dev/null; do
        if [ "$waited" -ge "$STOP_TIMEOUT" ]; then
            kill -KILL "$pid" 2>/dev/null
            echo "killed after ${STOP_TIMEOUT}s"
            rm -f "$PIDFILE"
            return 0
        fi
        sleep 1
        waited=$((waited + 1))
    done
    rm -f "$PIDFILE"
    echo "stopped"
    return 0
}

status() {
    if pid=$(running_pid); then
        echo "tasknode (pid $pid) is running"
        return 0
    fi
    if [ -f "$PIDFILE" ]; then
        echo "tasknode is dead but its pid file exists"
        return 1
    fi
    echo "tasknode is stopped"
    return 3
}

case "$1" in
    start) start ;;
    stop) stop ;;
    restart) stop && start ;;
    condrestart | try-restart)
        if running_pid >/dev/null; then stop && start; fi
        ;;
    status) status ;;
    *)
        echo "Usage: $0 {start|stop|restart|condrestart|try-restart|status}" >&2
        exit 2
        ;;
esac
exit $?
