#!/bin/sh
# prerm of the tasknode-console .deb: on remove, stop the console and disable the service; an
# upgrade leaves it running until postinst restarts it.
set -e
if [ "$1" = remove ] && command -v systemctl >/dev/null 2>&1; then
    systemctl stop {{ service }} >/dev/null 2>&1 || true
    systemctl disable {{ service }} >/dev/null 2>&1 || true
fi
exit 0
