# %pre: the agent runs as the user admin. rpm before 4.19 creates no users, so this does, and
# reuses an admin user or group that is already there.
group_exists() {
    if command -v getent >/dev/null 2>&1; then
        getent group "$1" >/dev/null
    else
        grep -q "^$1:" /etc/group
    fi
}
if ! group_exists {{ user }}; then
    groupadd -r {{ user }} || exit 1
fi
if ! id -u {{ user }} >/dev/null 2>&1; then
    useradd -r -g {{ user }} -d {{ state_dir }} -s /sbin/nologin -c {{ gecos }} {{ user }} || exit 1
fi
exit 0
