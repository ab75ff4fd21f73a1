#!/bin/sh
# postinst of the tasknode .deb: on configure, the user admin (reused when present) owns the
# config, logs and state; the service is enabled on first install and restarted on upgrade.
set -e
if [ "$1" = configure ]; then
    if ! getent group {{ user }} >/dev/null; then
        groupadd --system {{ user }}
    fi
    if ! id -u {{ user }} >/dev/null 2>&1; then
        useradd --system -g {{ user }} -d {{ state_dir }} -s /usr/sbin/nologin -c {{ gecos }} {{ user }}
    fi
    mkdir -p {{ log_dir }} {{ state_dir }}
    chown {{ user }}:{{ user }} {{ config_dir }} {{ config }} {{ log_dir }} {{ state_dir }}
    chmod 0750 {{ config_dir }} {{ log_dir }} {{ state_dir }}
    chmod 0600 {{ config }}
    if [ -z "$2" ]; then
        if command -v systemctl >/dev/null 2>&1; then
            systemctl enable {{ service }} >/dev/null 2>&1 \
                || echo "tasknode: could not enable the service; run: systemctl enable tasknode" >&2
        fi
        echo "tasknode: enroll this server, then start the agent:" >&2
        echo "  tasknode enroll --config {{ config }} --console URL --user-name NAME --password-stdin --enable-uuid false" >&2
        echo "  systemctl start tasknode" >&2
    elif [ -d /run/systemd/system ]; then
        systemctl daemon-reload >/dev/null 2>&1 || true
        systemctl try-restart {{ service }} >/dev/null 2>&1 || true
    fi
fi
exit 0
