#!/bin/sh
# Container entrypoint. The first argument picks the role; further arguments go to its command.
#
#   web      gunicorn with tunix_rt/gunicorn_conf.py (the image's default)
#            TUNIX_MIGRATE_ON_START=1 applies migrations first (one web container only)
#   worker   manage.py qcluster: drains on SIGTERM, see docs/operations.md
#   migrate  manage.py migrate --noinput, e.g. `migrate runs 0004_run_progress` to roll back
#   other    run as given, e.g. `python manage.py ensure_admin`
#
# Every role replaces this shell (exec), so the server or the qcluster master is the process
# that receives `docker stop`'s SIGTERM.
set -eu

role="${1:-web}"
if [ "$#" -gt 0 ]; then
    shift
fi

case "$role" in
    web)
        case "${TUNIX_MIGRATE_ON_START:-0}" in
            1 | true | yes | on)
                python manage.py migrate --noinput
                ;;
        esac
        exec gunicorn -c python:tunix_rt.gunicorn_conf tunix_rt.wsgi "$@"
        ;;
    worker)
        exec python manage.py qcluster "$@"
        ;;
    migrate)
        exec python manage.py migrate --noinput "$@"
        ;;
    *)
        exec "$role" "$@"
        ;;
esac
