#!/usr/bin/env bash
# End-to-end test of docker/compose.yaml on this machine's Docker engine (a few minutes; not
# part of scripts/test.sh):
#   1. builds the images if missing (docker/build.sh), starts the broker and a persistent QoS 1
#      subscriber (clean session off) on the compose network, then the two camera gateways;
#   2. waits for events from both sensor ids, lets them run, checks both are healthy;
#   3. stops the broker for OUTAGE seconds (default 15), checks the gateways stay healthy
#      (their events go to the spool), starts the broker again, lets them run on;
#   4. stops the gateways (end of stream: visionpublish sends what it holds), and checks per
#      gateway: one run, sequence numbers 0..N-1 all received (no gap), N = the events the
#      gateway made, and events made during the outage among them;
#   5. tears everything down (down -v), also on failure.
# Environment: OUTAGE (s), RUN_BEFORE / RUN_AFTER (s of running before/after the outage),
# KEEP=1 to leave the project up for inspection.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
OUTAGE="${OUTAGE:-15}"
RUN_BEFORE="${RUN_BEFORE:-15}"
RUN_AFTER="${RUN_AFTER:-15}"
PROJECT="visioncomposetest"
SUB="$PROJECT-subscriber"
log() { printf '[compose-test %s] %s\n' "$(date +%T)" "$*"; }
fail() { printf '[compose-test] FAIL: %s\n' "$*" >&2; exit 1; }
T0=$(date +%s)

command -v docker >/dev/null || fail "docker is not installed"
command -v python3 >/dev/null || fail "python3 is needed to check the events"
if docker compose version >/dev/null 2>&1; then
  COMPOSE=(docker compose)
elif command -v docker-compose >/dev/null; then
  COMPOSE=(docker-compose)
else
  log "installing Debian's docker-compose"
  apt-get install -y -qq docker-compose >/dev/null || fail "neither 'docker compose' nor docker-compose is available"
  COMPOSE=(docker-compose)
fi
dc() { "${COMPOSE[@]}" -p "$PROJECT" -f "$ROOT/docker/compose.yaml" "$@"; }

if ! docker image inspect vision-gateway:cpu >/dev/null 2>&1 \
   || ! docker image inspect vision-mosquitto:trixie >/dev/null 2>&1; then
  log "images missing: docker/build.sh"
  "$ROOT/docker/build.sh"
fi

# The broker's host port is not needed here; a free one avoids clashing with a local broker.
MQTT_PORT="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
export MQTT_PORT
WORK="$(mktemp -d)"
cleanup() {
  local rc=$?
  if [ "${KEEP:-0}" = 1 ]; then
    log "KEEP=1: left running; remove with: docker rm -f $SUB; ${COMPOSE[*]} -p $PROJECT -f docker/compose.yaml down -v"
  else
    docker rm -f -v "$SUB" >/dev/null 2>&1 || true
    dc down -v --remove-orphans >/dev/null 2>&1 || true
  fi
  rm -rf "$WORK"
  log "took $(( $(date +%s) - T0 )) s"
  exit "$rc"
}
trap cleanup EXIT
dc down -v --remove-orphans >/dev/null 2>&1 || true
docker rm -f -v "$SUB" >/dev/null 2>&1 || true

log "starting the broker"
dc up -d mosquitto
broker="$(dc ps -q mosquitto)"
for i in $(seq 60); do
  docker exec "$broker" mosquitto_pub -q 1 -t compose-test/ready -m ready >/dev/null 2>&1 && break
  [ "$i" -lt 60 ] || fail "the broker did not accept connections within 30 s"
  sleep 0.5
done

# The subscriber: clean session off (-c) at QoS 1, so the broker keeps its subscription and
# queued events across the outage; the loop reconnects if mosquitto_sub gives up.
NETWORK="$(docker inspect -f '{{range $k, $v := .NetworkSettings.Networks}}{{$k}}{{end}}' "$broker")"
docker run -d --name "$SUB" --network "$NETWORK" --entrypoint sh vision-mosquitto:trixie -c \
  'while :; do mosquitto_sub -h mosquitto -c -i compose-test-subscriber -q 1 -t "vision/+/classifications"; sleep 0.5; done' >/dev/null
for i in $(seq 60); do
  docker exec "$broker" mosquitto_pub -q 1 -t vision/probe/classifications -m '{"probe":true}' >/dev/null 2>&1 || true
  grep -q '"probe"' <<<"$(docker logs "$SUB" 2>&1)" && break
  [ "$i" -lt 60 ] || fail "the subscriber received nothing within 60 s"
  sleep 1
done
log "subscriber ready; starting camera-1 and camera-2"
dc up -d camera-1 camera-2
cam1="$(dc ps -q camera-1)"; cam2="$(dc ps -q camera-2)"

count() { docker logs "$SUB" 2>/dev/null | grep -c "\"sensorId\":\"$1\"" || true; }
for i in $(seq 180); do
  [ "$(count camera-1)" -gt 0 ] && [ "$(count camera-2)" -gt 0 ] && break
  [ "$i" -lt 180 ] || { dc logs --tail 30 camera-1 camera-2 >&2; fail "no events from both gateways within 180 s"; }
  sleep 1
done
log "events arrive from both gateways (camera-1: $(count camera-1), camera-2: $(count camera-2))"
sleep "$RUN_BEFORE"
health() { docker inspect -f '{{.State.Health.Status}}' "$1"; }
for i in $(seq 60); do
  [ "$(health "$cam1")" = healthy ] && [ "$(health "$cam2")" = healthy ] && break
  [ "$i" -lt 60 ] || fail "gateways not healthy: camera-1 $(health "$cam1"), camera-2 $(health "$cam2")"
  sleep 1
done
before1=$(count camera-1); before2=$(count camera-2)
log "before the outage: camera-1 $before1, camera-2 $before2 events received; both healthy"

OUT_START=$(date +%s.%N)
log "stopping the broker for $OUTAGE s"
dc stop -t 10 mosquitto >/dev/null
sleep "$OUTAGE"
# The health check runs every 10 s; its verdict now covers frames made while the broker is down.
during1=$(health "$cam1"); during2=$(health "$cam2")
frozen1=$(count camera-1); frozen2=$(count camera-2)
[ "$during1" = healthy ] && [ "$during2" = healthy ] \
  || fail "a gateway is not healthy during the broker outage: camera-1 $during1, camera-2 $during2"
OUT_END=$(date +%s.%N)
log "starting the broker again (gateways stayed healthy; received since the stop began, in flight then: $((frozen1 - before1)), $((frozen2 - before2)))"
dc start mosquitto >/dev/null
sleep "$RUN_AFTER"
for i in $(seq 60); do
  [ "$(count camera-1)" -gt "$frozen1" ] && [ "$(count camera-2)" -gt "$frozen2" ] && break
  [ "$i" -lt 60 ] || fail "no events after the broker came back within 60 s"
  sleep 1
done

log "stopping the gateways (end of stream)"
dc stop -t 20 camera-1 camera-2 >/dev/null
sleep 3  # the last QoS 1 deliveries to the subscriber
docker logs "$SUB" 2>/dev/null | grep '^{' > "$WORK/events.jsonl" || true
for c in camera-1 camera-2; do
  dc logs --no-color "$c" > "$WORK/$c.log" 2>&1 || true
done

python3 - "$WORK" "$OUT_START" "$OUT_END" <<'PY' || fail "events were lost (above)"
import datetime, json, re, sys
work, out_start, out_end = sys.argv[1], float(sys.argv[2]), float(sys.argv[3])
events = {}
for line in open(f"{work}/events.jsonl"):
    e = json.loads(line)
    if "sensorId" in e:
        events.setdefault(e["sensorId"], []).append(e)
ok = True
for sensor in ("camera-1", "camera-2"):
    evs = events.get(sensor, [])
    runs = sorted({e["run"] for e in evs})
    log = open(f"{work}/{sensor}.log").read()
    made = re.findall(r"events=\(guint64\)(\d+)", log)
    made = int(made[-1]) if made else None
    if len(runs) != 1:
        print(f"FAIL {sensor}: {len(runs)} runs {runs} (a gateway restart?)"); ok = False; continue
    seqs = [e["sequence"] for e in evs]
    distinct = set(seqs)
    top = max(distinct)
    missing = sorted(set(range(top + 1)) - distinct)
    def ts(e):
        return datetime.datetime.fromisoformat(e["system_timestamp"].replace("Z", "+00:00")).timestamp()
    in_outage = sorted(e["sequence"] for e in evs if out_start <= ts(e) <= out_end)
    labels = {}
    for e in evs:
        c = e["objects"][0].get("classification") if e.get("objects") else None
        if c:
            labels[c["label"]] = labels.get(c["label"], 0) + 1
    top_labels = ", ".join(f"{k} x{v}" for k, v in sorted(labels.items(), key=lambda kv: -kv[1])[:5])
    print(f"{sensor}: run {runs[0]}: {len(evs)} events received, {len(distinct)} distinct, "
          f"sequence {min(distinct)}..{top}, {len(seqs) - len(distinct)} duplicates, "
          f"{len(missing)} missing; made by the gateway: {made}; "
          f"made during the {out_end - out_start:.1f} s outage: {len(in_outage)}"
          + (f" (sequence {in_outage[0]}..{in_outage[-1]})" if in_outage else ""))
    print(f"  labels: {top_labels}")
    if min(distinct) != 0 or missing:
        print(f"FAIL {sensor}: missing sequence numbers {missing[:20]}"); ok = False
    if made is None or made != top + 1:
        print(f"FAIL {sensor}: the gateway made {made} events, received 0..{top}"); ok = False
    if not in_outage:
        print(f"FAIL {sensor}: no event was made during the outage"); ok = False
sys.exit(0 if ok else 1)
PY
log "PASS: both gateways' events complete across a ${OUTAGE} s broker outage"
