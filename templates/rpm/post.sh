# %post: enable the service on first install ($1 = 1), not on upgrade. It starts once the
# server is enrolled: the agent needs the node credentials `tasknode enroll` writes.
if [ "$1" -eq 1 ]; then
{%- if init == "systemd" %}
    systemctl daemon-reload >/dev/null 2>&1
    if ! systemctl enable {{ service }} >/dev/null 2>&1; then
        echo "tasknode: could not enable the service; run: systemctl enable "{{ name }} >&2
    fi
{%- else %}
    if ! chkconfig --add {{ name }}; then
        echo "tasknode: could not enable the service; run: chkconfig --add "{{ name }} >&2
    fi
{%- endif %}
    echo "tasknode: enroll this server, then start the agent:" >&2
    echo "  tasknode enroll --config {{ config }} --console URL --user-name NAME --password-stdin --enable-uuid false" >&2
{%- if init == "systemd" %}
    echo "  systemctl start "{{ name }} >&2
{%- else %}
    echo "  service "{{ name }}" start" >&2
{%- endif %}
fi
exit 0
