#!/usr/bin/env bash
# Runs on the GPU machine: visionclassify with execution-provider=cpu and cuda on the same
# frames; reports fps per batch size and the labels. Needs /tmp/ortgpu/cuda.zst.part-0{0,1,2}
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
run() { # provider batch frames
  local t0 t1 rc
  t0=$(date +%s.%N)
  GST_DEBUG=visionclassify:3 timeout 300 $B/bin/gst-launch-1.0 -m filesrc location=$PNG ! pngdec ! videoconvert ! videoscale ! video/x-raw,width=1920,height=1080 ! imagefreeze num-buffers=$3 ! videoconvert ! video/x-raw,format=RGB ! visionclassify model=$MODEL execution-provider=$1 strict-provider=true batch-size=$2 batch-timeout=0 post-messages=true ! fakesink sync=false > /tmp/ortgpu/run-$1-$2.log 2>&1
  rc=$?
  t1=$(date +%s.%N)
  local labels
  labels=$(grep -o 'label=(string)[^,;]*' /tmp/ortgpu/run-$1-$2.log | sort | uniq -c | sort -rn | head -2 | tr '\n' ' ')
  python3 -c "import sys; t=$t1-$t0; print(f'$1 batch=$2 frames=$3 rc=$rc seconds={t:.2f} fps={$3/t:.1f} ')"; echo "   labels: $labels"
  [ $rc -eq 0 ] || tail -15 /tmp/ortgpu/run-$1-$2.log
  cp /tmp/ortgpu/run-$1-$2.log $OUT/ 2>/dev/null
}
# Each configuration runs 200 and 2000 frames; steady fps = 1800 / (t2000 - t200) removes
# start-up (session creation, cuDNN initialisation) from the figure.
declare -A T
run_t() { # provider batch frames -> seconds in $RT
  local t0 t1
  t0=$(date +%s.%N)
  GST_DEBUG=visionclassify:3 timeout 300 $B/bin/gst-launch-1.0 -m filesrc location=$PNG ! pngdec ! videoconvert ! videoscale ! video/x-raw,width=1920,height=1080 ! imagefreeze num-buffers=$3 ! videoconvert ! video/x-raw,format=RGB ! visionclassify model=$MODEL execution-provider=$1 strict-provider=true batch-size=$2 batch-timeout=0 post-messages=true ! fakesink sync=false > /tmp/ortgpu/run.log 2>&1
  RC=$?
  t1=$(date +%s.%N)
  RT=$(python3 -c "print($t1-$t0)")
  if [ $RC -ne 0 ]; then echo "$1 batch=$2 frames=$3 FAILED rc=$RC"; tail -8 /tmp/ortgpu/run.log; fi
}
for p in cuda cpu; do
  for b in 1 8 32; do
    run_t $p $b 200; a=$RT
    run_t $p $b 2000; z=$RT
    labels=$(grep -o 'label=(string)[^,;]*' /tmp/ortgpu/run.log | sort | uniq -c | sort -rn | head -2 | tr -s ' ' | tr '\n' ' ')
    n=$(grep -c 'label=(string)' /tmp/ortgpu/run.log)
    python3 -c "print(f'$p batch=$b: 200 frames {$a:.2f} s, 2000 frames {$z:.2f} s, steady {1800/($z-$a):.1f} fps, overall {2000/$z:.1f} fps, results=$n')"
    echo "    top labels: $labels"
    grep -m2 -i "warn\|fall" /tmp/ortgpu/run.log | cut -c1-200
  done
done
echo "--- execution-provider=auto (no TensorRT libraries here) ---"
GST_DEBUG=visionclassify:4 $B/bin/gst-launch-1.0 filesrc location=$PNG ! pngdec ! videoconvert ! imagefreeze num-buffers=20 ! videoconvert ! visionclassify model=$MODEL execution-provider=auto batch-size=8 ! fakesink 2>&1 | grep -i -E "provider|padded|WARN" | cut -c1-400 | head -8
echo "--- execution-provider=tensorrt strict-provider=true ---"
$B/bin/gst-launch-1.0 filesrc location=$PNG ! pngdec ! videoconvert ! imagefreeze num-buffers=20 ! videoconvert ! visionclassify model=$MODEL execution-provider=tensorrt strict-provider=true ! fakesink 2>&1 | grep -i "error" | cut -c1-400 | head -3
nvidia-smi --query-gpu=utilization.gpu,memory.used --format=csv,noheader
nproc
