# %pre: the console runs as its own system user, which owns its state directory. rpm before
# 4.19 creates no users, so this does, and reuses a user or group already there.
if ! getent group {{ user }} >/dev/null 2>&1; then
    groupadd -r {{ user }} || exit 1
fi
if ! id -u {{ user }} >/dev/null 2>&1; then
    useradd -r -g {{ user }} -d {{ state_dir }} -s /sbin/nologin -c {{ gecos }} {{ user }} || exit 1
fi
exit 0
