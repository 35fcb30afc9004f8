#!/bin/sh
# `redis-server [CONFIG_FILE] ARGS` runs Redis with protected mode off, as the official image does
# (Debian's build leaves it on, which refuses every client but loopback when no password is set);
# any other command runs as given (redis-cli, sh).
set -e
if [ "${1:-}" = redis-server ]; then
  shift
  case "${1:-}" in
    ''|-*) exec redis-server --protected-mode no "$@" ;;
    *) conf="$1"; shift; exec redis-server "$conf" --protected-mode no "$@" ;; # the file comes first
  esac
fi
exec "$@"
