# %postun: on upgrade ($1 >= 1) restart the console if it was running, now on the new binary.
systemctl daemon-reload >/dev/null 2>&1
if [ "$1" -ge 1 ]; then
    systemctl try-restart {{ service }} >/dev/null 2>&1
fi
exit 0
