#!/usr/bin/env bash
# An RTSP camera in front of the CPU gateway image (about two minutes; builds the images first
# if missing): a GStreamer RTSP server (GstRtspServer through Python, in a container made from
# the gateway image with Debian's gir1.2-gst-rtsp-server-1.0 and x264enc added) streams the
# sample video of photos as H.264 over RTP; the gateway reads it with SOURCE_URI=rtsp://...
# (rtspsrc over TCP, H.264 decoded by avdec_h264) and publishes to the broker image. Checks:
# events arrive with the photos' labels (a cat, espresso), and the gateway ends with status 0
# when the stream ends.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
IMAGE="${IMAGE:-vision-gateway:cpu}"
P="vision-rtsp-test-$$"
log() { printf '[rtsp-test %s] %s\n' "$(date +%T)" "$*"; }
fail() { printf '[rtsp-test] FAIL: %s\n' "$*" >&2; exit 1; }
T0=$(date +%s)
EVENTS="$(mktemp)"
cleanup() {
  rm -f "$EVENTS"
  docker rm -f -v "$P-camera" "$P-broker" "$P-gateway" >/dev/null 2>&1 || true
  docker network rm "$P" >/dev/null 2>&1 || true
  log "took $(( $(date +%s) - T0 )) s"
}
trap cleanup EXIT
docker image inspect "$IMAGE" >/dev/null 2>&1 && docker image inspect vision-mosquitto:trixie >/dev/null 2>&1 \
  || "$ROOT/docker/build.sh"

docker network create "$P" >/dev/null
docker run -d --name "$P-broker" --network "$P" --network-alias broker vision-mosquitto:trixie >/dev/null

log "starting the RTSP camera (installs the RTSP server library and x264enc into a throw-away container)"
docker run -d --name "$P-camera" --network "$P" --network-alias camera --user root --entrypoint bash "$IMAGE" -c '
set -e
apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
  gir1.2-gst-rtsp-server-1.0 gstreamer1.0-plugins-ugly >/dev/null
exec python3 - <<PY
import gi
gi.require_version("Gst", "1.0"); gi.require_version("GstRtspServer", "1.0")
from gi.repository import GLib, Gst, GstRtspServer
Gst.init(None)
server = GstRtspServer.RTSPServer(); server.set_service("8554")
factory = GstRtspServer.RTSPMediaFactory()
factory.set_launch("( filesrc location=/opt/vision/media/photos.webm ! matroskademux ! vp8dec ! videoconvert "
                   "! x264enc tune=zerolatency speed-preset=ultrafast key-int-max=10 "
                   "! rtph264pay name=pay0 pt=96 config-interval=1 )")
server.get_mount_points().add_factory("/cam", factory)
server.attach(None)
print("rtsp server ready", flush=True)
GLib.MainLoop().run()
PY'
for i in $(seq 180); do
  grep -q 'rtsp server ready' <<<"$(docker logs "$P-camera" 2>&1)" && break
  [ "$(docker inspect -f '{{.State.Running}}' "$P-camera")" = true ] || { docker logs "$P-camera" >&2; fail "the RTSP server exited"; }
  [ "$i" -lt 180 ] || fail "the RTSP server did not start within 180 s"
  sleep 1
done

log "subscribing, then starting the gateway on rtsp://camera:8554/cam"
docker exec -d "$P-broker" sh -c 'mosquitto_sub -t "vision/rtsp-cam/classifications" > /tmp/events.jsonl'
sleep 1
docker run -d --name "$P-gateway" --network "$P" -e SOURCE_URI=rtsp://camera:8554/cam \
  -e BROKER=mqtt://broker:1883 -e SENSOR_ID=rtsp-cam -e STATS_INTERVAL=5 "$IMAGE" >/dev/null
rc=$(timeout 120 docker wait "$P-gateway") || fail "the gateway did not end with the stream within 120 s"
docker logs "$P-gateway" 2>&1 | grep -E '^\[gateway\] (gst-launch|end of stream|[0-9]+ s,)' | tail -3 | cut -c1-300 | sed 's/^/  /'
[ "$rc" = 0 ] || { docker logs "$P-gateway" 2>&1 | tail -20 >&2; fail "the gateway exited with $rc"; }
sleep 1
docker exec "$P-broker" cat /tmp/events.jsonl > "$EVENTS"
python3 - "$EVENTS" <<'PY' || fail "too few events over RTSP, a sequence gap, or not the photos' labels"
import collections, json, sys
evs = [json.loads(l) for l in open(sys.argv[1]) if l.startswith("{")]
labels = collections.Counter(e["objects"][0]["classification"]["label"] for e in evs
                             if e.get("objects") and "classification" in e["objects"][0])
seqs = sorted({e["sequence"] for e in evs})
print(f"  {len(evs)} events over RTSP, sequence {seqs[0] if seqs else None}..{seqs[-1] if seqs else None}, "
      f"source {evs[0]['source'] if evs else None}")
print("  labels: " + ", ".join(f"{k} x{v}" for k, v in labels.most_common(6)))
ok = len(evs) >= 80 and seqs == list(range(len(seqs))) \
    and labels["Egyptian cat"] + labels["tabby"] + labels["tiger cat"] >= 10 and labels["espresso"] >= 10
sys.exit(0 if ok else 1)
PY
log "PASS"
