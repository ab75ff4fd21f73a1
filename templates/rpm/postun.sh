# %postun: on upgrade ($1 >= 1) restart the agent if it was running, now on the new binary.
{%- if init == "systemd" %}
systemctl daemon-reload >/dev/null 2>&1
if [ "$1" -ge 1 ]; then
    systemctl try-restart {{ service }} >/dev/null 2>&1
fi
{%- else %}
if [ "$1" -ge 1 ]; then
    {{ init_script }} condrestart >/dev/null 2>&1
fi
{%- endif %}
exit 0
