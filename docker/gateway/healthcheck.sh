#!/usr/bin/env bash
# Docker HEALTHCHECK of the gateway: healthy while frames get through the pipeline, i.e. while
# vision-gateway.py's probe on the sink keeps rewriting HEARTBEAT_FILE (at most once a second).
# Unhealthy when the file is missing or older than HEALTH_MAX_AGE seconds (default 15): a
# stalled source, a stuck element, or a pipeline that is gone. A broker outage alone keeps it
# healthy: events then go to the spool.
set -euo pipefail
file="${HEARTBEAT_FILE:-/tmp/vision-heartbeat}"
max_age="${HEALTH_MAX_AGE:-15}"
if [ ! -e "$file" ]; then
  echo "no heartbeat yet ($file): no frame has passed the pipeline"; exit 1
fi
age=$(( $(date +%s) - $(stat -c %Y "$file") ))
if [ "$age" -gt "$max_age" ]; then
  echo "heartbeat is $age s old (limit $max_age s): no frame has passed the pipeline since"; exit 1
fi
cat "$file"; echo
