#!/bin/sh
# tasknode install script: installs the tasknode agent on this server, enrolls it with the
# console and starts it. Run it as root. `sh install.sh --help` lists the options; with
# `curl ... | sh`, pass them after `sh -s --`.
#
# The console wrote the values below for one group and one user; they are quoted, never code.
# shellcheck disable=SC2016 # single-quoted data, whole files among it: nothing in it expands
{
CONSOLE_URL={{ console_url }}
CONSOLE_URLS={{ console_urls }}
CONSOLE_CA={{ console_ca }}
ENROLLMENT_TOKEN={{ enrollment_token }}
USER_NAME={{ user_name }}
PASSWORD={{ password }}
ENABLE_UUID={{ enable_uuid }}
GROUP={{ group }}
AGENT_VERSION={{ agent_version }}
AGENT_X86_64_URL={{ agent_x86_64_url }}
AGENT_X86_64_SHA256={{ agent_x86_64_sha256 }}
AGENT_AARCH64_URL={{ agent_aarch64_url }}
AGENT_AARCH64_SHA256={{ agent_aarch64_sha256 }}
BIN={{ bin }}
CONF={{ config }}
LOG_DIR={{ log_dir }}
WORK_DIR={{ work_dir }}
PIDFILE={{ pid_file }}
UNIT_FILE={{ unit_file }}
INIT_SCRIPT={{ init_script }}
SERVERCTL_SCRIPT={{ serverctl_script }}
ROOT_SERVERCTL={{ root_serverctl }}
ROOT_SERVERCTL_SCRIPT={{ root_serverctl_script }}
AGENT_USER={{ agent_user }}
UNIT_PATH={{ unit_path }}
INIT_PATH={{ init_path }}
STATE_DIR={{ install_state_dir }}
REFUSED={{ refused }}
}

# ---------------------------------------------------------------------------------------------
set -u
umask 022

BIN_DIR=$(dirname "$BIN")
CONF_DIR=$(dirname "$CONF")
CONF_CA="$CONF_DIR/console-ca.pem"
HOME_DIR=$(dirname "$BIN_DIR")
AGENT_HOME=$(dirname "$HOME_DIR")
RUN_DIR=$(dirname "$PIDFILE")
SERVERCTL="$BIN_DIR/serverctl"
MIN_FREE_KB=204800
MAX_CLOCK_OFFSET=120
WAIT_AVAILABLE=${TASKNODE_WAIT_AVAILABLE:-90}

# Exit statuses, one per kind of failure.
E_FAIL=1 E_USAGE=2 E_ROOT=10 E_OS=11 E_ARCH=12 E_FETCH=13 E_CONSOLE=14 E_CLOCK=15
E_HOSTS=16 E_DISK=17 E_ENROLL=18 E_AVAILABLE=19

say() { printf '%s\n' "$*"; }
step() { STEP=$*; printf '==> %s\n' "$*"; }
warn() { printf 'warning: %s\n' "$*" >&2; }
die() {
    code=$1
    shift
    printf 'error: %s\n' "$*" >&2
    exit "$code"
}

usage() {
    cat <<'EOF'
Install the tasknode agent on this server and enroll it with the console.

Usage: sh install.sh [OPTIONS]        (or: curl -sSL LINK | sh -s -- [OPTIONS])

  --user_name=NAME       enroll with this access key instead of the embedded credential
  --password-file FILE   the access key's password, first line of FILE (keep it 0600)
  --password-stdin       read the password from standard input
  --password=PASSWORD    the password on the command line (visible to other users: avoid)
  --enable_uuid=BOOL     true: identify this server by DMI UUID (VPC); false: by hostname
  --reinstall            remove the agent (keeping its logs) and install and enroll it again
  --uninstall            remove everything this script installed (logs and the tasks'
                         working directories are kept)
  --purge                with --uninstall: also remove the logs, the tasks' working
                         directories and the user it created
  --remove-from-console  with --uninstall: also remove this server from its group on the
                         console (asked on the terminal when neither this nor the next is given)
  --keep-in-console      with --uninstall: leave the server in its group on the console
  --fix-hosts            add this host's name to /etc/hosts when `hostname -i` fails
  --force-os             install on an operating system that is not supported
  -h, --help             show this help

Exit status: 0 done, 1 a step failed (what that run changed is rolled back), 2 bad option,
10 not root, 11 unsupported OS, 12 unsupported architecture, 13 neither curl nor wget,
14 console unreachable, 15 clock off by more than 120 s, 16 host name does not resolve,
17 not enough disk, 18 enrollment refused, 19 not available in time.
EOF
}

ACTION=install
PURGE=0
REMOVE_FROM_CONSOLE=ask
FIX_HOSTS=0
FORCE_OS=0
PASSWORD_FILE=
PASSWORD_STDIN=0
WORK=

parse_args() {
    while [ $# -gt 0 ]; do
        case $1 in
        --user_name=* | --user-name=*)
            USER_NAME=${1#*=}
            ENROLLMENT_TOKEN=
            ;;
        --password=*)
            PASSWORD=${1#*=}
            warn "a password on the command line is visible to other users of this host; prefer --password-file FILE or --password-stdin"
            ;;
        --password-file=*) PASSWORD_FILE=${1#*=} ;;
        --password-file)
            [ $# -ge 2 ] || die "$E_USAGE" "--password-file needs a FILE"
            PASSWORD_FILE=$2
            shift
            ;;
        --password-stdin) PASSWORD_STDIN=1 ;;
        --enable_uuid=* | --enable-uuid=*) ENABLE_UUID=${1#*=} ;;
        --reinstall) ACTION=reinstall ;;
        --uninstall) ACTION=uninstall ;;
        --purge) PURGE=1 ;;
        --remove-from-console) REMOVE_FROM_CONSOLE=yes ;;
        --keep-in-console) REMOVE_FROM_CONSOLE=no ;;
        --fix-hosts) FIX_HOSTS=1 ;;
        --force-os) FORCE_OS=1 ;;
        -h | --help) ACTION=help ;;
        *) die "$E_USAGE" "unknown option: $1 (see --help)" ;;
        esac
        shift
    done
    case $ENABLE_UUID in
    true | false) ;;
    *) die "$E_USAGE" "--enable_uuid must be true or false" ;;
    esac
    if [ "$PURGE" = 1 ] && [ "$ACTION" != uninstall ]; then
        die "$E_USAGE" "--purge goes with --uninstall"
    fi
    if [ "$REMOVE_FROM_CONSOLE" != ask ] && [ "$ACTION" != uninstall ]; then
        die "$E_USAGE" "--remove-from-console and --keep-in-console go with --uninstall"
    fi
}

# ---- the journal: every change this run makes, undone in reverse order if it fails ----------

JOURNAL=
OK=0
STEP=starting

journal() { JOURNAL="$*
$JOURNAL"; }

# Replaces $2 (a root-owned path in a root-owned directory) with the file $1, keeping what was
# there for a rollback. Never writes through a link.
put_file() {
    src=$1
    dst=$2
    root_dir "$(dirname "$dst")" || return 1
    if [ -L "$dst" ]; then
        say "error: $dst is a symbolic link; remove it and run this again" >&2
        return 1
    fi
    if [ -e "$dst" ]; then
        if cmp -s "$src" "$dst"; then
            rm -f "$src"
            return 0
        fi
        cp -p "$dst" "$dst.tasknode-bak" || return 1
        journal "restore $dst"
    else
        journal "remove $dst"
    fi
    mv -f "$src" "$dst"
}

rollback() {
    [ -n "$JOURNAL" ] || return 0
    say "rolling back what this run changed"
    printf '%s\n' "$JOURNAL" | while read -r what path; do
        TN_PATH=$path
        export TN_PATH
        # shellcheck disable=SC2016
        case $what in
        restore) [ -e "$path.tasknode-bak" ] && mv -f "$path.tasknode-bak" "$path" ;;
        remove) rm -rf "$path" ;;
        rmdir) rmdir "$path" 2>/dev/null ;;
        agent-restore) as_agent '[ -e "$TN_PATH.tasknode-bak" ] || [ -L "$TN_PATH.tasknode-bak" ] || exit 0; rm -rf "$TN_PATH" && mv -f "$TN_PATH.tasknode-bak" "$TN_PATH"' </dev/null ;;
        agent-remove) as_agent 'rm -rf "$TN_PATH"' </dev/null ;;
        service-stop) stop_service >/dev/null 2>&1 ;;
        service-start) start_service >/dev/null 2>&1 ;;
        user) remove_user ;;
        esac
    done
}

finish() {
    status=$?
    if [ "$OK" != 1 ] && [ "$ACTION" != help ]; then
        [ "$status" != 0 ] || status=$E_FAIL
        printf 'error: failed while: %s\n' "$STEP" >&2
        rollback
        exit "$status"
    fi
    # Backups of replaced files are only for a rollback.
    printf '%s\n' "$JOURNAL" | while read -r what path; do
        TN_PATH=$path
        export TN_PATH
        # shellcheck disable=SC2016
        case $what in
        restore) rm -f "$path.tasknode-bak" ;;
        agent-restore) as_agent 'rm -rf "$TN_PATH.tasknode-bak"' </dev/null ;;
        esac
    done
    rm -rf "$WORK"
    exit 0
}

# ---- root and the agent user ----------------------------------------------------------------
#
# Every task runs as the agent user, so everything that user can write (its home, the agent's
# directory, binary, config, logs and pid file) is the agent's side. Root never runs, reads,
# changes or removes anything there: it runs the small scripts below as that user (su, in a
# session of its own: no terminal to push input into), so the kernel refuses whatever that
# user could not do anyway. Root itself writes only root-owned files in root-owned
# directories: the unit, the init script, $ROOT_SERVERCTL, /etc/hosts and $STATE_DIR. Values
# reach the agent user's shell through exported TN_* variables, expanded there once, never
# parsed as code (hence the single quotes). Secrets never go into the environment: they go
# to the agent on a pipe.

TN_HOME=$HOME_DIR TN_BIN=$BIN TN_BIN_DIR=$BIN_DIR TN_CONF=$CONF TN_CONF_DIR=$CONF_DIR
TN_CONF_CA=$CONF_CA TN_LOG_DIR=$LOG_DIR TN_RUN_DIR=$RUN_DIR TN_WORK_DIR=$WORK_DIR
TN_SERVERCTL=$SERVERCTL TN_AGENT_HOME=$AGENT_HOME
export TN_HOME TN_BIN TN_BIN_DIR TN_CONF TN_CONF_DIR TN_CONF_CA TN_LOG_DIR TN_RUN_DIR
export TN_WORK_DIR TN_SERVERCTL TN_AGENT_HOME

# Runs a command in a new session when setsid exists.
detached() {
    if command -v setsid >/dev/null 2>&1; then
        setsid "$@"
    else
        "$@"
    fi
}

# as_agent CODE: the sh code CODE as the agent user, from /.
as_agent() {
    (cd / && detached su -s /bin/sh "$AGENT_USER" -c "$1")
}

# The directories of the agent's tree, checked as the agent user: each one is a real directory
# or absent. A link is refused, naming it: nothing of tasknode follows one there.
# shellcheck disable=SC2016
AGENT_CHECK='for d in "$TN_HOME" "$TN_BIN_DIR" "$TN_CONF_DIR" "$TN_LOG_DIR" "$TN_RUN_DIR" "$TN_WORK_DIR"; do
    if [ -L "$d" ] || { [ -e "$d" ] && [ ! -d "$d" ]; }; then
        echo "error: $d is not a directory but a link or a file; tasknode follows no links in its directory: remove it and run this again" >&2
        exit 3
    fi
done'

# Makes the agent's directories (prints each one it made), modes 0755 and conf/ 0700.
# shellcheck disable=SC2016
AGENT_MKDIRS="$AGENT_CHECK"'
for d in "$TN_HOME" "$TN_BIN_DIR" "$TN_CONF_DIR" "$TN_LOG_DIR" "$TN_RUN_DIR"; do
    if [ ! -d "$d" ]; then
        mkdir "$d" || exit 1
        echo "$d"
    fi
done
chmod 755 "$TN_HOME" "$TN_BIN_DIR" "$TN_LOG_DIR" "$TN_RUN_DIR" && chmod 700 "$TN_CONF_DIR"'

# Puts standard input at $TN_DST with mode $TN_MODE, keeping what was there as .tasknode-bak;
# prints same, restore or remove (what a rollback must do).
# shellcheck disable=SC2016
AGENT_PUT='tmp="$TN_DST.tasknode-new"
rm -rf "$tmp" && cat >"$tmp" && chmod "$TN_MODE" "$tmp" || exit 1
if [ -f "$TN_DST" ] && [ ! -L "$TN_DST" ] && cmp -s "$tmp" "$TN_DST"; then
    rm -f "$tmp"
    echo same
    exit 0
fi
if [ -e "$TN_DST" ] || [ -L "$TN_DST" ]; then
    rm -rf "$TN_DST.tasknode-bak" && mv -f "$TN_DST" "$TN_DST.tasknode-bak" || exit 1
    echo restore
else
    echo remove
fi
mv -f "$tmp" "$TN_DST"'

# put_agent_file MODE SRC DST: SRC (root's, in $WORK) becomes DST in the agent's tree, written
# by the agent user from a pipe; journaled for a rollback.
put_agent_file() {
    TN_MODE=$1 TN_DST=$3
    export TN_MODE TN_DST
    done_what=$(as_agent "$AGENT_PUT" <"$2") || return 1
    rm -f "$2"
    case $done_what in
    same) ;;
    restore) journal "agent-restore $3" ;;
    remove) journal "agent-remove $3" ;;
    *) return 1 ;;
    esac
}

# Whether DIR is root's: owned by root, writable by no one else, not a link. Says why not.
root_dir() {
    # shellcheck disable=SC2012 # ls -ldn is the portable way to read owner and mode
    set -- "$1" "$(ls -ldn "$1" 2>/dev/null)"
    if [ -L "$1" ] || [ -z "$2" ]; then
        say "error: $1 is missing or a link; root writes only into root-owned directories" >&2
        return 1
    fi
    mode=$(printf '%s' "$2" | awk '{print $1}')
    owner=$(printf '%s' "$2" | awk '{print $3}')
    case $owner:$mode in
    0:d????-??-?*) return 0 ;;
    esac
    say "error: $1 is owned by uid $owner with mode $mode: root writes only into directories that are root's alone; fix its owner and mode and run this again" >&2
    return 1
}

# The agent user's home, checked as root before anything runs as that user: a real directory
# owned by that user (root's useradd made it, or root makes it now).
check_agent_home() {
    if [ -L "$AGENT_HOME" ] || { [ -e "$AGENT_HOME" ] && [ ! -d "$AGENT_HOME" ]; }; then
        say "error: $AGENT_HOME is not a directory but a link or a file; it must be the home of $AGENT_USER" >&2
        return 1
    fi
    uid=$(id -u "$AGENT_USER") || return 1
    if [ ! -d "$AGENT_HOME" ]; then
        root_dir "$(dirname "$AGENT_HOME")" || return 1
        mkdir -m 755 "$AGENT_HOME" && chown -h "$AGENT_USER" "$AGENT_HOME" || return 1
        journal "rmdir $AGENT_HOME"
    fi
    # shellcheck disable=SC2012
    owner=$(ls -ldn "$AGENT_HOME" | awk '{print $3}')
    if [ "$owner" != "$uid" ]; then
        say "error: $AGENT_HOME is owned by uid $owner, not by $AGENT_USER (uid $uid); the agent's directory goes there" >&2
        return 1
    fi
}

# ---- facts about this host ------------------------------------------------------------------

os_field() { sed -n "s/^$1=\"\{0,1\}\([^\"]*\)\"\{0,1\}\$/\1/p" /etc/os-release | head -n 1; }

detect_os() {
    OS=
    if [ -f /etc/alinux-release ]; then
        case $(sed -n 's/.*release \([0-9][0-9]*\).*/\1/p' /etc/alinux-release | head -n 1) in
        2) OS=al7 ;;
        3) OS=al8 ;;
        esac
    elif [ -f /etc/os-release ]; then
        id=$(os_field ID)
        version=$(os_field VERSION_ID)
        case $id:$version in
        centos:7* | rhel:7*) OS=el7 ;;
        centos:6* | rhel:6*) OS=el6 ;;
        alinux:2* | aliyun:*) OS=al7 ;;
        alinux:3*) OS=al8 ;;
        debian:*) OS=debian ;;
        ubuntu:*) OS=ubuntu ;;
        esac
    elif [ -f /etc/redhat-release ]; then
        case $(head -n 1 /etc/redhat-release) in
        *"release 6"*) OS=el6 ;;
        *"release 7"*) OS=el7 ;;
        esac
    fi
    if [ -z "$OS" ]; then
        [ "$FORCE_OS" = 1 ] || die "$E_OS" "this operating system is not supported (CentOS 6/7, Alibaba Cloud Linux 2/3, Debian, Ubuntu); --force-os installs anyway"
        warn "unsupported operating system; installing anyway (--force-os)"
        OS=unknown
    fi
}

detect_arch() {
    ARCH=$(uname -m)
    case $ARCH in
    x86_64)
        AGENT_URL=$AGENT_X86_64_URL
        AGENT_SHA256=$AGENT_X86_64_SHA256
        ;;
    aarch64)
        AGENT_URL=$AGENT_AARCH64_URL
        AGENT_SHA256=$AGENT_AARCH64_SHA256
        ;;
    *) die "$E_ARCH" "architecture $ARCH is not supported (x86_64, aarch64)" ;;
    esac
    [ -n "$AGENT_URL" ] || die "$E_ARCH" "the console has no agent build for $ARCH"
}

detect_init() {
    if [ -d /run/systemd/system ]; then
        INIT=systemd
    elif [ -d /etc/init.d ] && command -v chkconfig >/dev/null 2>&1; then
        INIT=sysv
    elif [ -d /etc/init.d ] && command -v update-rc.d >/dev/null 2>&1; then
        INIT=sysv
    else
        INIT=none
    fi
}

# ---- talking to the console -----------------------------------------------------------------

detect_fetch() {
    if command -v curl >/dev/null 2>&1; then
        FETCH=curl
    elif command -v wget >/dev/null 2>&1; then
        FETCH=wget
    else
        die "$E_FETCH" "neither curl nor wget is installed; install one (yum install -y curl)"
    fi
    CA_ARGS=
    if [ -n "$CONSOLE_CA" ]; then
        # The console's own CA: the only one trusted for it, from here to the agent.
        CA_FILE="$WORK/console-ca.pem"
        printf '%s' "$CONSOLE_CA" >"$CA_FILE" || die "$E_FAIL" "cannot write $CA_FILE"
        if [ "$FETCH" = curl ]; then
            CA_ARGS="--cacert $CA_FILE"
        elif wget --help 2>&1 | grep -q BusyBox; then
            die "$E_FETCH" "busybox wget cannot check the console's certificate; install curl (yum install -y curl) and run this again"
        else
            CA_ARGS="--ca-certificate=$CA_FILE"
        fi
    fi
}

# fetch URL FILE
fetch() {
    # CA_ARGS is one option naming a file under a mktemp directory: no spaces to split on.
    # shellcheck disable=SC2086
    if [ "$FETCH" = curl ]; then
        curl -fsS $CA_ARGS --connect-timeout 10 --max-time 300 -o "$2" "$1"
    else
        # No -T: busybox 1.35 wget crashes on it.
        wget -q $CA_ARGS -O "$2" "$1"
    fi
}

check_console() {
    step "checking the console at $CONSOLE_URL"
    health="$WORK/health.json"
    fetch "$CONSOLE_URL/api/v1/health" "$health" ||
        die "$E_CONSOLE" "cannot reach the console at $CONSOLE_URL; check the network path and any proxy or firewall"
    console_ms=$(sed -n 's/.*"console_time_ms": *\([0-9][0-9]*\).*/\1/p' "$health")
    [ -n "$console_ms" ] || die "$E_CONSOLE" "$CONSOLE_URL did not answer like a tasknode console"
    offset=$((console_ms / 1000 - $(date +%s)))
    [ "$offset" -lt 0 ] && offset=$((-offset))
    if [ "$offset" -gt "$MAX_CLOCK_OFFSET" ]; then
        die "$E_CLOCK" "this host's clock is $offset s off the console's (limit $MAX_CLOCK_OFFSET s); sync it (chronyc makestep, or ntpdate -u <ntp server>) and run this again"
    fi
}

check_hosts() {
    name=$(hostname)
    if hostname -i >/dev/null 2>&1; then
        return 0
    fi
    if [ "$FIX_HOSTS" != 1 ]; then
        die "$E_HOSTS" "\`hostname -i\` cannot resolve this host's name ($name); add it to /etc/hosts, or run this again with --fix-hosts"
    fi
    ip=$(ip -o -4 addr show scope global 2>/dev/null | awk '{print $4}' | cut -d/ -f1 | head -n 1)
    [ -n "$ip" ] || ip=127.0.0.1
    step "adding \"$ip $name\" to /etc/hosts (--fix-hosts)"
    cp -p /etc/hosts "/etc/hosts.tasknode-bak.$(date +%Y%m%d%H%M%S)" || return 1
    cp -p /etc/hosts "$WORK/hosts" && printf '%s %s\n' "$ip" "$name" >>"$WORK/hosts" || return 1
    put_file "$WORK/hosts" /etc/hosts
}

check_disk() {
    dir=$(dirname "$HOME_DIR")
    while [ ! -d "$dir" ]; do dir=$(dirname "$dir"); done
    free=$(df -Pk "$dir" 2>/dev/null | awk 'NR == 2 {print $4}')
    if [ -z "$free" ]; then
        warn "could not measure the free disk under $dir"
        return 0
    fi
    if [ "$free" -lt "$MIN_FREE_KB" ]; then
        die "$E_DISK" "only $free KiB free under $dir; the agent and its logs need at least $MIN_FREE_KB KiB"
    fi
}

warn_small_host() {
    cores=$(grep -c '^processor' /proc/cpuinfo 2>/dev/null)
    mem_kb=$(awk '/^MemTotal:/ {print $2}' /proc/meminfo 2>/dev/null)
    cores=${cores:-0}
    if [ "$cores" -lt 8 ] || [ "${mem_kb:-0}" -lt 16000000 ]; then
        warn "this host has $cores cores and $((${mem_kb:-0} / 1024)) MiB of memory, below the 8 cores and 16 GiB tasks are sized for; its max concurrency will be lower"
    fi
    if ! command -v python2.7 >/dev/null 2>&1 && ! command -v python2.6 >/dev/null 2>&1 && ! command -v python2 >/dev/null 2>&1; then
        warn "python 2.6/2.7 is not installed; some task types need it"
    fi
}

# ---- installing -----------------------------------------------------------------------------

ensure_user() {
    if id "$AGENT_USER" >/dev/null 2>&1; then
        return 0
    fi
    step "creating user $AGENT_USER"
    if command -v useradd >/dev/null 2>&1; then
        useradd -m -U "$AGENT_USER" || return 1
    else
        adduser -D "$AGENT_USER" || return 1
    fi
    journal "user $AGENT_USER"
    if [ -L "$STATE_DIR" ]; then
        say "error: $STATE_DIR is a link; remove it and run this again" >&2
        return 1
    fi
    if [ ! -d "$STATE_DIR" ]; then
        mkdir -p "$STATE_DIR" || return 1
        journal "remove $STATE_DIR"
    fi
    : >"$STATE_DIR/created-user"
}

# Removes the user the install created. Its home is emptied as that user first, so nothing an
# agent or a task left there is followed as root; userdel then refuses while any process of
# that user still runs.
remove_user() {
    if id "$AGENT_USER" >/dev/null 2>&1 && [ -d "$AGENT_HOME" ] && [ ! -L "$AGENT_HOME" ]; then
        # shellcheck disable=SC2016
        as_agent 'rm -rf "$TN_AGENT_HOME"/* "$TN_AGENT_HOME"/.[!.]* "$TN_AGENT_HOME"/..?*' </dev/null
    fi
    if command -v userdel >/dev/null 2>&1; then
        userdel -r "$AGENT_USER" 2>/dev/null || userdel "$AGENT_USER"
    else
        deluser --remove-home "$AGENT_USER" 2>/dev/null || deluser "$AGENT_USER"
    fi
    rm -f "$STATE_DIR/created-user"
}

# The agent's directories, made by the agent user; each new one is journaled.
make_tree() {
    made=$(as_agent "$AGENT_MKDIRS" </dev/null) || return 1
    for d in $made; do
        journal "agent-remove $d"
    done
}

install_binary() {
    step "downloading the agent $AGENT_VERSION for $ARCH"
    tmp="$WORK/tasknode"
    fetch "$AGENT_URL" "$tmp" || die "$E_FETCH" "downloading $AGENT_URL failed"
    got=$(sha256sum "$tmp" | awk '{print $1}')
    if [ "$got" != "$AGENT_SHA256" ]; then
        rm -f "$tmp"
        die "$E_FETCH" "the downloaded agent's SHA-256 is $got, not $AGENT_SHA256; it was damaged or altered on the way"
    fi
    put_agent_file 755 "$tmp" "$BIN" || die "$E_FAIL" "could not install $BIN"
}

# write_file MODE DST TEXT: a root-owned file.
write_file() {
    mode=$1
    dst=$2
    text=$3
    tmp="$WORK/$(basename "$dst")"
    printf '%s' "$text" >"$tmp" && chmod "$mode" "$tmp" && put_file "$tmp" "$dst"
}

# write_agent_file MODE DST TEXT: a file of the agent's tree, written as the agent user.
write_agent_file() {
    tmp="$WORK/agent-$(basename "$2")"
    printf '%s' "$3" >"$tmp" && put_agent_file "$1" "$tmp" "$2"
}

# shellcheck disable=SC2016
enrolled() { as_agent '[ -f "$TN_CONF" ] && grep -q "^\[node\]" "$TN_CONF"' </dev/null; }

# Enrolls as the agent user: the config is that user's from the start. The credential goes
# to the agent on a pipe from printf (a shell builtin), never on a command line or into the
# environment.
# shellcheck disable=SC2016
AGENT_ENROLL='set -- enroll --enable-uuid "$TN_ENABLE_UUID" \
    --install-method script --log-dir "$TN_LOG_DIR" --config "$TN_CONF"
set -f
for url in $TN_CONSOLES; do set -- "$@" --console "$url"; done
set +f
[ -z "$TN_CA" ] || set -- "$@" --console-ca "$TN_CA"
if [ -n "$TN_USER_NAME" ]; then
    set -- "$@" --user-name "$TN_USER_NAME" --password-stdin
else
    set -- "$@" --token-stdin
fi
exec "$TN_BIN" "$@"'

enroll() {
    if enrolled; then
        say "already enrolled ($CONF); keeping that enrollment"
        return 0
    fi
    step "enrolling with the console (group $GROUP, enable_uuid=$ENABLE_UUID)"
    TN_CONSOLES=$CONSOLE_URLS TN_ENABLE_UUID=$ENABLE_UUID TN_CA='' TN_USER_NAME=$USER_NAME
    if [ -n "$CONSOLE_CA" ]; then
        TN_CA=$CONF_CA
    fi
    export TN_CONSOLES TN_ENABLE_UUID TN_CA TN_USER_NAME
    journal "agent-remove $CONF"
    if [ -n "$ENROLLMENT_TOKEN" ] && [ -z "$USER_NAME" ]; then
        printf '%s\n' "$ENROLLMENT_TOKEN" | as_agent "$AGENT_ENROLL"
    elif [ -n "$PASSWORD_FILE" ]; then
        # Read by root (the file is the operator's), handed over on a pipe.
        [ -r "$PASSWORD_FILE" ] || die "$E_USAGE" "cannot read --password-file $PASSWORD_FILE"
        head -n 1 "$PASSWORD_FILE" | as_agent "$AGENT_ENROLL"
    elif [ -n "$PASSWORD" ]; then
        printf '%s\n' "$PASSWORD" | as_agent "$AGENT_ENROLL"
    elif [ "$PASSWORD_STDIN" = 1 ]; then
        as_agent "$AGENT_ENROLL"
    else
        die "$E_USAGE" "no credential: this script carries none; pass --user_name=NAME with --password-file FILE"
    fi || die "$E_ENROLL" "the console refused the enrollment (see above)"
}

start_service() {
    # shellcheck disable=SC2016
    case $INIT in
    systemd)
        systemctl daemon-reload && systemctl enable tasknode >/dev/null 2>&1 && systemctl restart tasknode
        ;;
    sysv)
        if command -v chkconfig >/dev/null 2>&1; then
            chkconfig --add tasknode && chkconfig tasknode on
        else
            update-rc.d tasknode defaults >/dev/null
        fi
        sh "$INIT_PATH" restart
        ;;
    none) as_agent 'exec "$TN_BIN" serverctl restart' </dev/null ;;
    esac
}

stop_service() {
    case $INIT in
    systemd)
        if [ -f "$UNIT_PATH" ]; then
            systemctl stop tasknode 2>/dev/null
            systemctl disable tasknode >/dev/null 2>&1
        fi
        ;;
    sysv)
        if [ -f "$INIT_PATH" ]; then
            sh "$INIT_PATH" stop
            if command -v chkconfig >/dev/null 2>&1; then
                chkconfig --del tasknode 2>/dev/null
            else
                update-rc.d -f tasknode remove >/dev/null 2>&1
            fi
        fi
        ;;
    none)
        if id "$AGENT_USER" >/dev/null 2>&1; then
            # shellcheck disable=SC2016
            as_agent '[ -x "$TN_BIN" ] && [ -f "$TN_CONF" ] || exit 0; exec "$TN_BIN" serverctl stop' </dev/null
        fi
        ;;
    esac
    return 0
}

install_service() {
    case $INIT in
    systemd) write_file 644 "$UNIT_PATH" "$UNIT_FILE" ;;
    sysv) write_file 755 "$INIT_PATH" "$INIT_SCRIPT" ;;
    none) : ;;
    esac || return 1
    step "starting the agent ($INIT)"
    journal "service-stop"
    start_service || die "$E_FAIL" "the agent service did not start; see $LOG_DIR/agent.log"
}

wait_available() {
    step "waiting for the console to show this server available"
    waited=0
    while [ "$waited" -lt "$WAIT_AVAILABLE" ]; do
        # status exits 0 once the console shows this server available.
        # shellcheck disable=SC2016
        if as_agent 'exec "$TN_BIN" status --config "$TN_CONF"' </dev/null >/dev/null 2>&1; then
            return 0
        fi
        sleep 1
        waited=$((waited + 1))
    done
    # shellcheck disable=SC2016
    as_agent 'exec "$TN_BIN" status --config "$TN_CONF"' </dev/null >&2
    die "$E_AVAILABLE" "the console does not show this server available after $WAIT_AVAILABLE s (status above)"
}

# ---- removing -------------------------------------------------------------------------------

# Whether to remove this server from the console too: the option given, else the operator's
# answer on the terminal (the script itself may be arriving on standard input), else no.
want_console_removal() {
    case $REMOVE_FROM_CONSOLE in
    yes) return 0 ;;
    no) return 1 ;;
    esac
    if ! (: </dev/tty) 2>/dev/null; then
        say "this server stays in its group on the console (--remove-from-console removes it there too)"
        return 1
    fi
    printf 'Remove this server from its group on the console too? [y/N] ' >/dev/tty
    read -r answer </dev/tty || return 1
    case $answer in
    y | Y | yes | YES) return 0 ;;
    esac
    return 1
}

# Asks the console to remove this server, with this node's own credentials (its 0600 config,
# read by the agent user): they name this server alone, so nothing else can be removed. A
# refusal or an unreachable console is told and does not stop the uninstall.
leave_console() {
    # shellcheck disable=SC2016
    as_agent '[ -x "$TN_BIN" ] && [ -f "$TN_CONF" ] || exit 5; exec "$TN_BIN" leave --config "$TN_CONF"' </dev/null
    case $? in
    0) return 0 ;;
    5) say "this host holds no enrollment: there is nothing to remove on the console" ;;
    *) warn "the console kept this server (see above); remove it there: tasknode-console server remove --name NAME [--drain | --force], or its page in the web console" ;;
    esac
    return 0
}

uninstall() {
    have_user=0
    if id "$AGENT_USER" >/dev/null 2>&1; then
        have_user=1
        check_agent_home || die "$E_FAIL" "refusing to uninstall: $AGENT_HOME is not as expected"
        as_agent "$AGENT_CHECK" </dev/null || die "$E_FAIL" "refusing to uninstall (see above)"
    fi
    step "stopping the agent"
    stop_service
    # Once stopped (its tasks drained and reported), before its credentials go.
    if [ "$have_user" = 1 ] && want_console_removal; then
        step "removing this server from the console"
        leave_console
    fi
    step "removing the agent"
    rm -f "$UNIT_PATH" "$INIT_PATH" "$ROOT_SERVERCTL"
    [ "$INIT" = systemd ] && systemctl daemon-reload 2>/dev/null
    if [ "$have_user" = 1 ]; then
        # shellcheck disable=SC2016
        as_agent 'rm -rf "$TN_BIN_DIR" "$TN_CONF_DIR" "$TN_RUN_DIR"' </dev/null ||
            die "$E_FAIL" "could not remove $BIN_DIR, $CONF_DIR and $RUN_DIR as $AGENT_USER"
    elif [ -e "$HOME_DIR" ]; then
        warn "left $HOME_DIR alone: its user $AGENT_USER is gone"
    fi
    if [ "$PURGE" = 1 ]; then
        step "purging the logs and the tasks' working directories"
        if [ "$have_user" = 1 ]; then
            # shellcheck disable=SC2016
            as_agent 'rm -rf "$TN_LOG_DIR" "$TN_WORK_DIR"; rmdir "$TN_HOME" 2>/dev/null; exit 0' </dev/null
        fi
        if [ -f "$STATE_DIR/created-user" ]; then
            step "removing user $AGENT_USER (created by the install)"
            remove_user
        fi
        rm -rf "$STATE_DIR"
    elif [ -d "$LOG_DIR" ]; then
        say "kept the logs in $LOG_DIR and the tasks' working directories in $WORK_DIR (--purge removes them)"
    fi
    say "tasknode is uninstalled"
}

# Moves the agent's files aside as the agent user, printing each one moved.
# shellcheck disable=SC2016
AGENT_ASIDE='for f in "$TN_BIN" "$TN_SERVERCTL" "$TN_CONF" "$TN_CONF_CA"; do
    if [ -e "$f" ] || [ -L "$f" ]; then
        rm -rf "$f.tasknode-bak" && mv -f "$f" "$f.tasknode-bak" || exit 1
        echo "$f"
    fi
done'

# Moves the current install aside (kept for a rollback) so it is installed afresh.
set_aside() {
    step "setting the current install aside (logs stay)"
    stop_service
    # The rollback undoes newest first: the old files come back before the old service starts.
    journal "service-start"
    for f in "$UNIT_PATH" "$INIT_PATH" "$ROOT_SERVERCTL"; do
        if [ -e "$f" ] && [ ! -L "$f" ]; then
            mv -f "$f" "$f.tasknode-bak" || return 1
            journal "restore $f"
        fi
    done
    if id "$AGENT_USER" >/dev/null 2>&1; then
        moved=$(as_agent "$AGENT_ASIDE" </dev/null) || return 1
        for f in $moved; do
            journal "agent-restore $f"
        done
    fi
}

summary() {
    # shellcheck disable=SC2016
    name=$(as_agent 'sed -n "s/^server_name = \"\(.*\)\"\$/\1/p" "$TN_CONF" | head -n 1' </dev/null)
    cat <<EOF

tasknode $AGENT_VERSION is installed and this server ($name) is available in group $GROUP.
  agent      $BIN (runs as $AGENT_USER, managed by $INIT)
  control    $ROOT_SERVERCTL start|stop|restart|status (as root; $SERVERCTL as $AGENT_USER)
  config     $CONF
  logs       $LOG_DIR/heartbeat.log, $LOG_DIR/agent.log
EOF
}

main() {
    parse_args "$@"
    if [ "$ACTION" = help ]; then
        usage
        exit 0
    fi
    # The console refused this link (used, expired, unknown): the script still uninstalls.
    if [ -n "$REFUSED" ] && [ "$ACTION" != uninstall ]; then
        die "$E_FAIL" "$REFUSED (this script can still remove tasknode: pass it --uninstall, e.g. ... | sh -s -- --uninstall)"
    fi
    [ "$(id -u)" = 0 ] || die "$E_ROOT" "run this as root (sudo sh install.sh ...)"
    trap finish EXIT
    trap 'exit 130' INT TERM
    WORK=$(mktemp -d /tmp/tasknode-install.XXXXXX) || die "$E_FAIL" "cannot make a temporary directory"
    journal "remove $WORK"

    step "checking this host"
    detect_os
    detect_init
    if [ "$ACTION" = uninstall ]; then
        uninstall
        OK=1
        exit 0
    fi
    detect_arch
    detect_fetch
    say "os $OS, arch $ARCH, init $INIT, fetch with $FETCH"
    check_console
    check_hosts || die "$E_FAIL" "could not fix /etc/hosts"
    check_disk
    warn_small_host
    if id "$AGENT_USER" >/dev/null 2>&1; then
        check_agent_home || die "$E_FAIL" "$AGENT_HOME is not as expected"
        as_agent "$AGENT_CHECK" </dev/null || die "$E_FAIL" "the agent's directory $HOME_DIR is not as expected"
    fi

    [ "$ACTION" = reinstall ] && { set_aside || die "$E_FAIL" "could not set the current install aside"; }
    ensure_user || die "$E_FAIL" "could not create user $AGENT_USER"
    check_agent_home || die "$E_FAIL" "$AGENT_HOME is not as expected"
    make_tree || die "$E_FAIL" "could not create $HOME_DIR as $AGENT_USER"
    install_binary
    write_agent_file 755 "$SERVERCTL" "$SERVERCTL_SCRIPT" || die "$E_FAIL" "could not write $SERVERCTL"
    if [ -n "$CONSOLE_CA" ]; then
        write_agent_file 644 "$CONF_CA" "$CONSOLE_CA" || die "$E_FAIL" "could not write $CONF_CA"
    fi
    enroll
    write_file 755 "$ROOT_SERVERCTL" "$ROOT_SERVERCTL_SCRIPT" || die "$E_FAIL" "could not write $ROOT_SERVERCTL"
    install_service
    wait_available
    OK=1
    summary
}

main "$@"
