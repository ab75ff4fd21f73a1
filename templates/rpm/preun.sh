# %preun: on erase ($1 = 0) stop the agent and disable the service; on upgrade, nothing.
if [ "$1" -eq 0 ]; then
{%- if init == "systemd" %}
    systemctl stop {{ service }} >/dev/null 2>&1
    systemctl --no-reload disable {{ service }} >/dev/null 2>&1
{%- else %}
    {{ init_script }} stop >/dev/null 2>&1
    chkconfig --del {{ name }} >/dev/null 2>&1
{%- endif %}
fi
exit 0
