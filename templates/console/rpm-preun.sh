# %preun: on erase ($1 = 0) stop the console and disable the service; on upgrade, nothing.
# Erasing keeps the state directory, its data and the user.
if [ "$1" -eq 0 ]; then
    systemctl stop {{ service }} >/dev/null 2>&1
    systemctl --no-reload disable {{ service }} >/dev/null 2>&1
fi
exit 0
