#!/bin/sh
# postinst of the tasknode .deb: on configure, the user admin (reused when present) owns the
# config, logs and state; the service is enabled on first install and restarted on upgrade.
# Root never follows a link here: /etc/tasknode is root's (root:admin 0750), so the config in
# it cannot be swapped once checked, and the directories are checked and changed with -h,
# never recursively (see docs/architecture.md, Privilege model).
set -e
if [ "$1" = configure ]; then
    if ! getent group {{ user }} >/dev/null; then
        groupadd --system {{ user }}
    fi
    if ! id -u {{ user }} >/dev/null 2>&1; then
        useradd --system -g {{ user }} -d {{ state_dir }} -s /usr/sbin/nologin -c {{ gecos }} {{ user }}
    fi
    for path in {{ config_dir }} {{ log_dir }} {{ state_dir }}; do
        if [ -L "$path" ] || { [ -e "$path" ] && [ ! -d "$path" ]; }; then
            echo "tasknode: $path is not a directory (a link or a file); remove it and run: dpkg --configure "{{ package }} >&2
            exit 1
        fi
        mkdir -p "$path"
    done
    # The config's directory first: root's, so nothing in it can be swapped after this.
    chown -h root:{{ user }} {{ config_dir }}
    chmod 0750 {{ config_dir }}
    if [ -L {{ config }} ] || [ ! -f {{ config }} ]; then
        echo "tasknode: "{{ config }}" is not a regular file (a link?); remove it and run: dpkg --configure "{{ package }} >&2
        exit 1
    fi
    chown -h {{ user }}:{{ user }} {{ config }} {{ log_dir }} {{ state_dir }}
    chmod 0600 {{ config }}
    chmod 0750 {{ log_dir }} {{ state_dir }}
    if [ -z "$2" ]; then
        if command -v systemctl >/dev/null 2>&1; then
            systemctl enable {{ service }} >/dev/null 2>&1 \
                || echo "tasknode: could not enable the service; run: systemctl enable "{{ name }} >&2
        fi
        echo "tasknode: enroll this server, then start the agent:" >&2
        echo "  tasknode enroll --config {{ config }} --console URL --user-name NAME --password-stdin --enable-uuid false" >&2
        echo "  systemctl start "{{ name }} >&2
    elif [ -d /run/systemd/system ]; then
        systemctl daemon-reload >/dev/null 2>&1 || true
        systemctl try-restart {{ service }} >/dev/null 2>&1 || true
    fi
fi
exit 0
