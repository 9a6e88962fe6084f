#!/bin/sh
# As curlimages/curl's: leading options go to curl, anything else is run as given.
set -e
if [ "${1#-}" != "$1" ]; then
    set -- curl "$@"
fi
exec "$@"
