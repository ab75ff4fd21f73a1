# %post: enable the service on first install ($1 = 1); it starts when the operator has read
# its settings. An upgrade restarts it in %postun.
systemctl daemon-reload >/dev/null 2>&1
if [ "$1" -eq 1 ]; then
    if ! systemctl enable {{ service }} >/dev/null 2>&1; then
        echo "tasknode-console: could not enable the service; run: systemctl enable "{{ name }} >&2
    fi
    echo "tasknode-console: set its flags in "{{ config }}", then run: systemctl start "{{ name }} >&2
fi
exit 0
