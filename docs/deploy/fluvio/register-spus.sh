#!/bin/sh
# register-spus SC_PUBLIC_ADDRESS ID=HOST:PUBLIC_PORT:PRIVATE_PORT...
#
# Registers each custom SPU with the SC unless it is registered already, so the setup
# container can run on every `docker compose up`. Each SPU service must be started with
# the same id and addresses (`fluvio-run spu -i ID -p HOST:PUBLIC_PORT -v HOST:PRIVATE_PORT`).
set -eu

if [ "$#" -lt 2 ]; then
  echo "usage: register-spus SC_ADDRESS ID=HOST:PUBLIC_PORT:PRIVATE_PORT..." >&2
  exit 2
fi
sc="$1"
shift

# The SC may accept connections a moment before it answers requests.
tries=0
until fluvio profile add compose "$sc" compose >/dev/null 2>&1 && fluvio cluster spu list >/dev/null 2>&1; do
  tries=$((tries + 1))
  if [ "$tries" -ge 30 ]; then
    echo "the SC at $sc did not answer" >&2
    exit 1
  fi
  sleep 2
done

for spec in "$@"; do
  id="${spec%%=*}"
  address="${spec#*=}"
  host="${address%%:*}"
  ports="${address#*:}"
  public_port="${ports%%:*}"
  private_port="${ports#*:}"
  if fluvio cluster spu list --custom -O json | grep -Eq "\"id\": *$id([^0-9]|\$)"; then
    echo "SPU $id is registered already"
  else
    fluvio cluster spu register --id "$id" \
      --public-server "$host:$public_port" --private-server "$host:$private_port"
    echo "SPU $id registered at $host:$public_port (private $host:$private_port)"
  fi
done
