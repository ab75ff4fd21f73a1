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
TASKNODE_INIT={{ init_path }}
TASKNODE_USER={{ user }}

STOP_TIMEOUT=90
OUTFILE="$TASKNODE_LOG_DIR/agent.out"

# Root never reads, writes, signals or runs what the agent user can change (the binary, the
# pid file, the logs): it runs this same root-owned script again as that user, in a session of
# its own (no terminal to push input into), and the kernel then refuses whatever that user
# could not do. The agent-* actions below are that second run.

# as_agent ACTION: this script's agent-ACTION, run as the agent user.
as_agent() {
    if ! id "$TASKNODE_USER" >/dev/null 2>&1; then
        echo "tasknode: there is no user $TASKNODE_USER to run the agent as" >&2
        return 5
    fi
    # The paths reach the agent user's shell through its environment and are expanded there
    # once, never parsed as code: the single quotes are deliberate.
    TASKNODE_ACTION="agent-$1"
    export TASKNODE_BIN TASKNODE_CONFIG TASKNODE_LOG_DIR PIDFILE TASKNODE_INIT TASKNODE_ACTION
    if [ "$(id -u)" = "$(id -u "$TASKNODE_USER")" ]; then
        /bin/sh "$TASKNODE_INIT" "$TASKNODE_ACTION" </dev/null
        return
    fi
    # shellcheck disable=SC2016
    (cd / && detached su -s /bin/sh "$TASKNODE_USER" -c 'exec /bin/sh "$TASKNODE_INIT" "$TASKNODE_ACTION"' </dev/null)
}

# Runs a command in a new session when setsid exists: no controlling terminal to inject into.
detached() {
    if command -v setsid >/dev/null 2>&1; then
        setsid "$@"
    else
        "$@"
    fi
}

# The pid file's directory when it sits in a root-owned directory (/var/run/tasknode): only
# root can make it there. Made fresh, or kept when it is a real directory of the agent user;
# anything else is refused, naming it. Inside the agent's own tree the agent user makes it.
prepare_run_dir() {
    run_dir=$(dirname "$PIDFILE")
    parent=$(dirname "$run_dir")
    # shellcheck disable=SC2012 # ls -ldn is the portable way to read an owner
    [ "$(ls -ldn "$parent" 2>/dev/null | awk '{print $3}')" = 0 ] || return 0
    if [ -L "$run_dir" ] || { [ -e "$run_dir" ] && [ ! -d "$run_dir" ]; }; then
        echo "tasknode: $run_dir is not a directory (a link or a file): remove it and start again" >&2
        return 1
    fi
    if [ ! -d "$run_dir" ]; then
        mkdir -m 0755 "$run_dir" || return 1
    fi
    # A real directory in a directory only root can change: nothing to swap under the chown.
    chown -h "$TASKNODE_USER" "$run_dir"
}

# --- run as the agent user ----------------------------------------------------------------

# The pid in the pid file, if it is a running `tasknode ... run`: a stale pid file must never
# make this script signal an unrelated process that took over the pid.
running_pid() {
    [ -f "$PIDFILE" ] || return 1
    pid=$(cat "$PIDFILE" 2>/dev/null)
    case $pid in '' | *[!0-9]*) return 1 ;; esac
    kill -0 "$pid" 2>/dev/null || return 1
    tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -q 'tasknode.* run ' || return 1
    echo "$pid"
}

agent_start() {
    if pid=$(running_pid); then
        echo "tasknode is already running (pid $pid)"
        return 0
    fi
    if [ ! -x "$TASKNODE_BIN" ]; then
        echo "tasknode: $TASKNODE_BIN is missing or not executable" >&2
        return 5
    fi
    mkdir -p "$(dirname "$PIDFILE")" "$TASKNODE_LOG_DIR" || return 1
    rm -f "$PIDFILE"
    printf 'Starting tasknode: '
    "$TASKNODE_BIN" run --config "$TASKNODE_CONFIG" </dev/null >>"$OUTFILE" 2>&1 &
    echo $! >"$PIDFILE"
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

agent_stop() {
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

agent_status() {
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

# --- entry points ---------------------------------------------------------------------------

case "$1" in
agent-start | agent-stop | agent-status)
    if [ "$(id -u)" = 0 ] && [ "$(id -u "$TASKNODE_USER" 2>/dev/null)" != 0 ]; then
        echo "tasknode: $1 runs as $TASKNODE_USER, not as root" >&2
        exit 4
    fi
    case "$1" in
    agent-start) agent_start ;;
    agent-stop) agent_stop ;;
    agent-status) agent_status ;;
    esac
    ;;
start) prepare_run_dir && as_agent start ;;
stop) as_agent stop ;;
restart) as_agent stop && prepare_run_dir && as_agent start ;;
condrestart | try-restart)
    if as_agent status >/dev/null; then as_agent stop && prepare_run_dir && as_agent start; fi
    ;;
status) as_agent status ;;
*)
    echo "Usage: $0 {start|stop|restart|condrestart|try-restart|status}" >&2
    exit 2
    ;;
esac
exit $?
