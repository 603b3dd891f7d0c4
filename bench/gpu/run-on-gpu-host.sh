#!/usr/bin/env bash
# Runs on the GPU machine: visionclassify with execution-provider=cpu and cuda on the same
# frames; reports fps per batch size, timeout and number of cameras, with frames per run,
# milliseconds per run and the engine's busy share, and the labels. Needs /tmp/ortgpu/cuda.zst.part-0{0,1,2}
# uploaded by earlier calls and .gpu/ (this call's carry) with the rest.
set -u
G=$PWD/.gpu
mkdir -p /tmp/ortgpu/lib
cp $G/cuda.zst.part-03 /tmp/ortgpu/ 2>/dev/null
cat /tmp/ortgpu/cuda.zst.part-0{0,1,2,3} | zstd -d -q --long=27 -o /tmp/ortgpu/lib/libonnxruntime_providers_cuda.so -f || { echo "decompress failed"; ls -la /tmp/ortgpu; exit 3; }
tar -C /tmp/ortgpu -xf $G/bundle.tar.zst --use-compress-program="zstd -d --long=27" || exit 4
B=/tmp/ortgpu/bundle
cp -a /tmp/ortgpu/lib/libonnxruntime_providers_cuda.so $B/ort/
NV=$(python3 -c 'import nvidia,os;print(os.path.dirname(nvidia.__path__[0]))' 2>/dev/null)/nvidia
CUDALIBS=$(find $NV /usr/local/cuda/lib64 -name 'lib*.so*' -printf '%h\n' 2>/dev/null | sort -u | tr '\n' ':')
export LD_LIBRARY_PATH=$B/lib:$B/ort:$CUDALIBS${LD_LIBRARY_PATH:-}
export GST_PLUGIN_SYSTEM_PATH=$B/gst GST_PLUGIN_PATH=$B/gst GST_PLUGIN_SCANNER=$B/bin/gst-plugin-scanner GST_REGISTRY=/tmp/ortgpu/registry.bin
export ORT_DYLIB_PATH=$B/ort/libonnxruntime.so
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
head -2 /etc/os-release
echo "cuda libs: $CUDALIBS" | cut -c1-300
ldd $B/ort/libonnxruntime_providers_cuda.so | grep "not found"
$B/bin/gst-inspect-1.0 visionclassify > $OUT/inspect.txt 2>&1 || { echo inspect failed; tail -20 $OUT/inspect.txt; }
grep -c . $OUT/inspect.txt
PNG=$B/chelsea.png
MODEL=$B/efficientnet-lite0.onnx
# Each configuration runs 200 and 2000 frames per camera; steady fps = the frames between /
# the seconds between, which removes start-up (session creation, cuDNN initialisation).
# Every camera is its own filesrc ! pngdec ! ... ! visionclassify branch on one shared engine
# (model-instance-id=gpu). The per-frame messages (post-messages=true) carry the frames in the
# run that classified it and the run's time: summarise() turns them into runs, frames per run,
# milliseconds per run and the engine's busy share of the wall time, which says whether a
# configuration is bound by the GPU run or by the host feeding it (the batch-8 question).
launch() { # provider batch timeout cameras frames -> seconds in RT, exit code in RC
  local desc="" i t0 t1
  for i in $(seq 1 "$4"); do
    desc="$desc filesrc location=$PNG ! pngdec ! videoconvert ! videoscale ! video/x-raw,width=1920,height=1080 ! imagefreeze num-buffers=$5 ! videoconvert ! video/x-raw,format=RGB ! visionclassify name=cam$i model=$MODEL model-instance-id=gpu execution-provider=$1 strict-provider=true batch-size=$2 batch-timeout=$3 post-messages=true ! fakesink sync=false"
  done
  t0=$(date +%s.%N)
  # shellcheck disable=SC2086 # the pipeline description is meant to be split into words
  GST_DEBUG=visionclassify:3 timeout 300 $B/bin/gst-launch-1.0 -m $desc > /tmp/ortgpu/run.log 2>&1
  RC=$?
  t1=$(date +%s.%N)
  RT=$(python3 -c "print($t1-$t0)")
  if [ $RC -ne 0 ]; then echo "$1 batch=$2 timeout=$3 cameras=$4 frames=$5 FAILED rc=$RC"; tail -8 /tmp/ortgpu/run.log; fi
}
summarise() { # log wall-seconds
  python3 - "$1" "$2" <<'PY'
import re, sys
fills, times, labels = [], [], {}
for line in open(sys.argv[1], errors="replace"):
    if "(element): visionclassify," not in line:
        continue
    f = re.search(r"batch-size=\(uint\)(\d+)", line)
    t = re.search(r"inference-time=\(guint64\)(\d+)", line)
    l = re.search(r"best-label=\(string\)([^,;]*)", line)
    if f and t and int(f.group(1)) > 0:
        fills.append(int(f.group(1)))
        times.append(int(t.group(1)) / 1e6)
        if l:
            name = l.group(1).strip('"').replace("\\ ", " ")
            labels[name] = labels.get(name, 0) + 1
runs = sum(1 / f for f in fills)
busy = sum(t / f for t, f in zip(times, fills)) / 1e3
top = sorted(labels.items(), key=lambda kv: -kv[1])[:2]
if runs:
    print(f"    results={len(fills)} runs={runs:.0f} frames/run={len(fills) / runs:.2f} "
          f"ms/run={busy * 1e3 / runs:.2f} runs took {busy:.2f} s (all workers) of {float(sys.argv[2]):.2f} s; "
          f"top labels {top}")
else:
    print("    no results in the log")
PY
}
measure() { # provider batch timeout cameras
  launch "$1" "$2" "$3" "$4" 200; local a=$RT
  launch "$1" "$2" "$3" "$4" 2000; local z=$RT
  python3 -c "print(f'$1 batch=$2 timeout=$3 cameras=$4: steady {1800 * $4 / ($z - $a):.1f} fps (200/camera {$a:.2f} s, 2000/camera {$z:.2f} s)')"
  summarise /tmp/ortgpu/run.log "$z"
  grep -m2 -i "warn\|fall" /tmp/ortgpu/run.log | cut -c1-200
  cp /tmp/ortgpu/run.log "$OUT/run-$1-b$2-t$3-c$4.log" 2>/dev/null
}
# One camera: batch 1, 8, 32 as recorded before (timeout 0), then batch 8 with a timeout that
# lets full batches form; four cameras: batch 1 against batch 8 (the issue's target: batch 8
# >= 2x batch 1 in fps with several cameras feeding the engine).
for p in cuda cpu; do
  for b in 1 8 32; do measure $p $b 0 1; done
  measure $p 8 50 1
  measure $p 1 0 4
  measure $p 8 50 4
done
echo "--- execution-provider=auto (no TensorRT libraries here) ---"
GST_DEBUG=visionclassify:4 $B/bin/gst-launch-1.0 filesrc location=$PNG ! pngdec ! videoconvert ! imagefreeze num-buffers=20 ! videoconvert ! visionclassify model=$MODEL execution-provider=auto batch-size=8 ! fakesink 2>&1 | grep -i -E "provider|padded|WARN" | cut -c1-400 | head -8
echo "--- execution-provider=tensorrt strict-provider=true ---"
$B/bin/gst-launch-1.0 filesrc location=$PNG ! pngdec ! videoconvert ! imagefreeze num-buffers=20 ! videoconvert ! visionclassify model=$MODEL execution-provider=tensorrt strict-provider=true ! fakesink 2>&1 | grep -i "error" | cut -c1-400 | head -3
nvidia-smi --query-gpu=utilization.gpu,memory.used --format=csv,noheader
nproc
