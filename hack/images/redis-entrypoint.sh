#!/bin/sh
# Entry point of flashsale/redis:local (hack/images.sh), as the official redis image's: arguments
# starting with '-' (or a *.conf file) are redis-server's; without a config file, protected mode
# is off (the container's network is the boundary; set --requirepass, as the operator does).
# The operator replaces this entry point (its command is `redis-server`), so the same holds there.
set -eu
case "${1:-}" in
  -* | *.conf) set -- redis-server "$@" ;;
esac
if [ "${1:-}" = redis-server ]; then
  case " $* " in
    *.conf* | *--protected-mode*) ;;
    *) set -- "$@" --protected-mode no ;;
  esac
fi
exec "$@"
