#!/bin/sh
# postinst of the tasknode-console .deb: on configure, the system user tasknode-console
# (reused when present) owns the state directory, 0700; the service is enabled on first
# install and restarted on upgrade. Root never follows a link here.
set -e
if [ "$1" = configure ]; then
    if ! getent group {{ user }} >/dev/null; then
        groupadd --system {{ user }}
    fi
    if ! id -u {{ user }} >/dev/null 2>&1; then
        useradd --system -g {{ user }} -d {{ state_dir }} -s /usr/sbin/nologin -c {{ gecos }} {{ user }}
    fi
    if [ -L {{ state_dir }} ] || { [ -e {{ state_dir }} ] && [ ! -d {{ state_dir }} ]; }; then
        echo "tasknode-console: "{{ state_dir }}" is not a directory (a link or a file); remove it and run: dpkg --configure "{{ package }} >&2
        exit 1
    fi
    mkdir -p {{ state_dir }}
    chown -h {{ user }}:{{ user }} {{ state_dir }}
    chmod 0700 {{ state_dir }}
    if [ -z "$2" ]; then
        if command -v systemctl >/dev/null 2>&1; then
            systemctl daemon-reload >/dev/null 2>&1 || true
            systemctl enable {{ service }} >/dev/null 2>&1 \
                || echo "tasknode-console: could not enable the service; run: systemctl enable "{{ name }} >&2
        fi
        echo "tasknode-console: set its flags in "{{ config }}", then run: systemctl start "{{ name }} >&2
    elif [ -d /run/systemd/system ]; then
        systemctl daemon-reload >/dev/null 2>&1 || true
        systemctl try-restart {{ service }} >/dev/null 2>&1 || true
    fi
fi
exit 0
