#!/usr/bin/env bash
# Tests of the CPU gateway image by itself (about a minute; builds it first if missing):
#   1. GstAnalytics: test-analytics-meta.py in the image reads every frame's GstAnalyticsClsMtd
#      through GStreamer 1.26's Python bindings, compares it with VisionClassificationMeta and
#      checks the labels of the real photos (cat, espresso, rocket, moped); then
#      docker/gateway/test_vision_gateway.py on the image's entrypoint (no credentials printed,
#      tls-insecure announced).
#   2. Entrypoint and health check: a gateway whose broker is unreachable still classifies
#      (events go to the spool) and is healthy; its spool holds the events; stopped with
#      SIGSTOP, its health check fails once the heartbeat is older than HEALTH_MAX_AGE.
#   3. A bad setting ends the container at once with status 2 and a message naming it.
#   4. With .deps/onnxruntime-gpu/ (docker/fetch-onnxruntime-gpu.sh) mounted in place of the
#      CPU build: visionclassify finds libonnxruntime_providers_cuda.so next to
#      libonnxruntime.so, reports the CUDA library that is missing on this GPU-less machine,
#      falls back to the CPU, and with strict-provider=true fails instead.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
IMAGE="${IMAGE:-vision-gateway:cpu}"
NAME="vision-image-test-$$"
log() { printf '[image-test %s] %s\n' "$(date +%T)" "$*"; }
fail() { printf '[image-test] FAIL: %s\n' "$*" >&2; exit 1; }
T0=$(date +%s)
trap 'docker rm -f -v "$NAME" >/dev/null 2>&1 || true; log "took $(( $(date +%s) - T0 )) s"' EXIT

docker image inspect "$IMAGE" >/dev/null 2>&1 || "$ROOT/docker/build.sh"

log "1. GstAnalytics classification meta read back in Python (GStreamer $(docker run --rm --entrypoint gst-launch-1.0 "$IMAGE" --gst-version | sed -n 's/.*version //p' | head -1))"
docker run --rm --entrypoint test-analytics-meta.py "$IMAGE"

log "1b. the entrypoint's own tests on the image's copy (credentials redacted, tls-insecure announced)"
docker run --rm -v "$ROOT/docker/gateway/test_vision_gateway.py:/tmp/test_vision_gateway.py:ro" \
  -e GATEWAY_SCRIPT=/opt/vision/bin/vision-gateway.py --entrypoint python3 "$IMAGE" \
  /tmp/test_vision_gateway.py

log "2. gateway with an unreachable broker: classifies, spools, healthy; then stalled: unhealthy"
docker run -d --name "$NAME" -e BROKER=mqtt://127.0.0.1:9 -e SENSOR_ID=image-test \
  -e HEALTH_MAX_AGE=5 -e STATS_INTERVAL=5 "$IMAGE" >/dev/null
for i in $(seq 60); do
  docker exec "$NAME" healthcheck.sh >/dev/null 2>&1 && break
  [ "$(docker inspect -f '{{.State.Running}}' "$NAME")" = true ] || { docker logs "$NAME" >&2; fail "the gateway exited"; }
  [ "$i" -lt 60 ] || { docker logs "$NAME" >&2; fail "no heartbeat within 60 s"; }
  sleep 1
done
sleep 8
beat="$(docker exec "$NAME" healthcheck.sh)" || fail "health check failed while frames flow"
echo "  heartbeat: $beat"
frames=$(python3 -c 'import json,sys; print(json.loads(sys.argv[1])["frames"])' "$beat")
[ "$frames" -ge 50 ] || fail "only $frames frames after 8 s at 10 fps"
echo "$beat" | grep -Eq 'spool-depth=\(guint64\)[1-9]' || fail "no event in the spool while the broker is unreachable"
docker exec "$NAME" sh -c 'ls -la /var/lib/vision/spool' | sed 's/^/  /'
# The whole log first: `docker logs | grep -q` fails under pipefail when grep stops reading
# early (SIGPIPE), which failed this test once the log was long.
grep -q 'gst-launch-1.0 uridecodebin' <<<"$(docker logs "$NAME" 2>&1)" || fail "the pipeline was not printed"
grep -q 'warning from publish' <<<"$(docker logs "$NAME" 2>&1)" || fail "no warning about the unreachable broker"
docker exec "$NAME" bash -c 'kill -STOP -1' || true   # every process but PID 1 (tini): the pipeline hangs
sleep 7
if out="$(docker exec "$NAME" healthcheck.sh)"; then fail "health check passed with a stalled pipeline: $out"; fi
echo "  stalled: $out"
docker rm -f -v "$NAME" >/dev/null

log "3. a bad setting"
set +e
out="$(docker run --rm -e BATCH_SIZE=four "$IMAGE" 2>&1)"; rc=$?
set -e
echo "  exit $rc: $out"
[ "$rc" = 2 ] && [[ "$out" == *"BATCH_SIZE='four'"* ]] || fail "expected exit 2 naming BATCH_SIZE"

GPU_LIBS="$ROOT/.deps/onnxruntime-gpu/lib"
if [ -e "$GPU_LIBS/libonnxruntime_providers_cuda.so" ]; then
  log "4. onnxruntime-gpu's libraries without a GPU: provider found, fallback, strict failure"
  run_cuda() {
    docker run --rm -v "$GPU_LIBS:/opt/onnxruntime-gpu:ro" -e ORT_DYLIB_PATH=/opt/onnxruntime-gpu/libonnxruntime.so \
      --entrypoint gst-launch-1.0 "$IMAGE" filesrc location=/opt/vision/media/photos.webm ! decodebin \
      ! videoconvert ! visionclassify model=/opt/vision/models/efficientnet-lite0.onnx \
      execution-provider=cuda "$@" ! fakesink 2>&1
  }
  set +e
  fallback="$(run_cuda)"; rc_fallback=$?
  strict="$(run_cuda strict-provider=true)"; rc_strict=$?
  set -e
  echo "$fallback" | grep -i 'warn' | head -3 | sed 's/^/  fallback: /'
  echo "$strict" | grep -i 'error' | head -2 | sed 's/^/  strict: /'
  [ "$rc_fallback" = 0 ] && echo "$fallback" | grep -q 'libcudart.so.13\|libcublas' \
    || fail "the CUDA provider's fallback did not name a CUDA library (exit $rc_fallback)"
  [ "$rc_strict" != 0 ] && echo "$strict" | grep -q 'CUDA' || fail "strict-provider=true did not fail"
else
  log "4. skipped: no .deps/onnxruntime-gpu (docker/fetch-onnxruntime-gpu.sh)"
fi
log "PASS"
