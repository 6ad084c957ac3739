#!/usr/bin/env bash
# Runs the built CPU image the way the pods run it, and checks what a platform team relies on:
# read-only root filesystem, user 10001, writable /tmp (emptyDir) and /data (the volume) only, the
# manifest read-only at /etc/trainer, the image's own environment and entrypoint (dumb-init).
#
#   docker/smoke.sh                        # pair-trainer-cpu:VERSION, built by docker/build.sh
#   docker/smoke.sh IMAGE
#
# Checks: the pod's view (uid, read-only root, s3fs/gcsfs importable, no NVIDIA variables, the base's
# package list); the demo batch; `trainer run --manifest ... --index N` for a valid (exit 0) and an
# out-of-range index (exit 2); `trainer verify`; `trainer batch --summary-only` (the Indexed Job's
# last step); SIGTERM to a training pod exits promptly with 143 (the Job's "preempted, retry" code);
# an s3:// output on a local S3 server (moto_server from the test extra); an image with the example
# plugin installed (docker/Dockerfile.plugin) training with the plugin's model; and, as KubeRay runs
# them, a Ray head (num-cpus 0) + one worker in separate pods sharing /data, token authentication
# on, and `ray job submit` running `trainer batch` from a submitter pod (and refused without the
# token). Takes about 7 minutes on 2 cores; not part of CI (docs/deploy.md).
#
# Every check must pass: a check that cannot run (no moto_server, an image not built on
# docker/make-base.sh's base) is a SKIP, and a SKIP fails the smoke unless SMOKE_ALLOW_SKIP=1.
# Needs no registry: the image, its base and the plugin's build are local (pip reaches the package
# index for the plugin's build backend; PIP_CERT / SSL_CERT_FILE as for docker/build.sh).
#
# Needs root: with buildah (no Docker engine), each pod is the image's root filesystem mounted by
# `buildah mount`, bound read-only into a new mount and PID namespace (unshare) and entered with
# chroot as 10001; the pods share the host's network (loopback), as pods share a cluster network.
# With a Docker engine, `docker run --read-only --user 10001:10001 --network host` instead.
set -uo pipefail
cd "$(dirname "$0")/.."
REPO=$PWD
. docker/prereqs.sh

version=$(sed -n 's/^__version__ = "\(.*\)"/\1/p' trainer_core/version.py)
IMAGE=${1:-pair-trainer-cpu:$version}
PLUGIN_IMAGE=${IMAGE%%[:@]*}-example:smoke
ALLOW_SKIP=${SMOKE_ALLOW_SKIP:-0}
# the local S3 server and the Python with boto3 (the test extra): MOTO_SERVER if set, else the
# repository's venv, else PATH's
MOTO=${MOTO_SERVER:-$REPO/.venv/bin/moto_server}
[ -x "$MOTO" ] || [ -n "${MOTO_SERVER:-}" ] || MOTO=$(command -v moto_server || echo "$MOTO")
HOST_PYTHON=$(dirname "$MOTO")/python
[ -x "$HOST_PYTHON" ] || HOST_PYTHON=$REPO/.venv/bin/python
if [ -z "${BUILDER:-}" ]; then
    if command -v docker >/dev/null && docker info >/dev/null 2>&1; then BUILDER=docker; else BUILDER=buildah; fi
fi
# Everything the smoke needs, checked before any pod starts.
optional=()
[ "$ALLOW_SKIP" = 1 ] || optional=("file:$MOTO" "pip install -e '.[test]' (or SMOKE_ALLOW_SKIP=1)")
if [ "$BUILDER" = buildah ]; then
    need smoke.sh root "run it as root (sudo docker/smoke.sh)" buildah "apt-get install buildah" \
        unshare "apt-get install util-linux" python3 "apt-get install python3" \
        "image:$IMAGE" "docker/build.sh --base pair-trainer-base:bookworm cpu" "${optional[@]}"
else
    need smoke.sh python3 "apt-get install python3" "image:$IMAGE" "docker/build.sh cpu" "${optional[@]}"
fi

WORK=$(mktemp -d /tmp/pair-trainer-smoke.XXXXXX)
DATA=$WORK/data        # the volume
ETC=$WORK/etc-trainer  # the ConfigMap
mkdir -p "$DATA" "$ETC"
cp manifests/demo.yaml "$ETC/manifest.yaml"
chown -R 10001:10001 "$DATA"
MANIFEST=/etc/trainer/manifest.yaml
started=$(date +%s)
results=()
failed=0
bg_pids=()

# A background pod is its `unshare` process, which ignores SIGTERM while it waits: stop a pod by
# signalling the pod's PID 1 (its child); when that goes, the kernel ends everything else in the pod.
stop_pod() {
    local init
    init=$(pgrep -P "$1" | head -n 1)
    [ -n "$init" ] || return 0
    kill -TERM "$init" 2>/dev/null
    for _ in $(seq 1 20); do kill -0 "$init" 2>/dev/null || return 0; sleep 0.5; done
    kill -KILL "$init" 2>/dev/null
}

# The pods' unshare processes name this run's work folder on their command line: any left (a pod
# started by a check that failed half-way) is found by it, and only this run's are.
pods_left() {
    local proc
    for proc in /proc/[0-9]*; do
        if [ "$(cat "$proc/comm" 2>/dev/null)" = unshare ] && tr '\0' ' ' <"$proc/cmdline" 2>/dev/null | grep -qF "$WORK"; then
            echo "${proc#/proc/}"
        fi
    done
}

cleanup() {
    for pid in "${bg_pids[@]}"; do stop_pod "$pid"; done
    for pid in $(pods_left); do stop_pod "$pid"; done
    for pid in "${bg_pids[@]}"; do wait "$pid" 2>/dev/null; done
    [ -z "$(pods_left)" ] || echo "smoke.sh: pods still running: $(pods_left)" >&2
    if [ -n "${MOTO_PID:-}" ]; then kill "$MOTO_PID" 2>/dev/null; wait "$MOTO_PID" 2>/dev/null; fi
    if [ "$BUILDER" = buildah ]; then
        for ctr in ${CTR:-} ${PLUGIN_CTR:-}; do
            buildah umount "$ctr" >/dev/null 2>&1
            buildah rm "$ctr" >/dev/null 2>&1
        done
    fi
    rm -rf "$WORK"
}
trap cleanup EXIT

# -- the image -------------------------------------------------------------------------------------
if [ "$BUILDER" = buildah ]; then
    image_env=$(buildah inspect --type image --format '{{range .OCIv1.Config.Env}}{{println .}}{{end}}' "$IMAGE") || {
        echo "smoke.sh: no image $IMAGE; build it first: docker/build.sh cpu" >&2; exit 2; }
    entrypoint=$(buildah inspect --type image --format '{{range .OCIv1.Config.Entrypoint}}{{println .}}{{end}}' "$IMAGE")
    CTR=$(buildah from --pull=false "$IMAGE")
    ROOTFS=$(buildah mount "$CTR")
    mkdir -p "$ROOTFS/etc/trainer"  # the ConfigMap's mount point (in this throwaway container only)
else
    image_env=$(docker image inspect --format '{{range .Config.Env}}{{println .}}{{end}}' "$IMAGE") || {
        echo "smoke.sh: no image $IMAGE; build it first: docker/build.sh cpu" >&2; exit 2; }
    entrypoint=$(docker image inspect --format '{{range .Config.Entrypoint}}{{println .}}{{end}}' "$IMAGE")
fi
mapfile -t ENTRYPOINT <<<"$entrypoint"
mapfile -t IMAGE_ENV <<<"$image_env"
# what the pod templates add (k8s/job.yaml)
POD_ENV=(HOME=/tmp MPLCONFIGDIR=/tmp/matplotlib)

# pod [VAR=VALUE ...] -- COMMAND...: one pod, in the foreground; its exit code is the pod's.
pod() {
    local env=()
    while [ "$1" != -- ]; do env+=("$1"); shift; done
    shift
    if [ "$BUILDER" = docker ]; then
        local flags=()
        for e in "${POD_ENV[@]}" "${env[@]}"; do flags+=(-e "$e"); done
        docker run --rm --read-only --user 10001:10001 --network host --workdir /data \
            --tmpfs /tmp:size=4g,mode=1777 --shm-size=2g \
            -v "$DATA:/data" -v "$ETC:/etc/trainer:ro" "${flags[@]}" \
            --entrypoint "$1" "${POD_IMAGE:-$IMAGE}" "${@:2}"
        return
    fi
    # --kill-child: when this pod's unshare is killed, its PID 1 (and so the whole pod) goes too.
    # In the background (POD_EXEC=1) the subshell becomes unshare, so that $! is the pod.
    local run=()
    [ "${POD_EXEC:-0}" = 1 ] && run=(exec)
    "${run[@]}" unshare --mount --pid --fork --kill-child bash -c '
        set -e
        rootfs=$1 data=$2 etc=$3 work=$4; shift 4
        root=$(mktemp -d "$work/root.XXXXXX")
        mount --bind "$rootfs" "$root"
        mount -o remount,bind,ro "$root"
        mount -t proc proc "$root/proc"
        mount --rbind /dev "$root/dev"
        mount -t tmpfs -o size=2g tmpfs "$root/dev/shm"
        mount -t tmpfs -o size=4g,mode=1777 tmpfs "$root/tmp"
        mount --bind "$data" "$root/data"
        mount --bind "$etc" "$root/etc/trainer"
        mount -o remount,bind,ro "$root/etc/trainer"
        exec chroot --userspec=10001:10001 "$root" /usr/bin/env -i -C /data "$@"
    ' pod "${POD_ROOTFS:-$ROOTFS}" "$DATA" "$ETC" "$WORK" "${IMAGE_ENV[@]}" "${POD_ENV[@]}" "${env[@]}" "$@"
}

# pod_bg LOG [VAR=VALUE ...] -- COMMAND...: a pod in the background; sets POD_PID (its unshare)
pod_bg() {
    local log=$1; shift
    POD_EXEC=1 pod "$@" >"$log" 2>&1 &
    POD_PID=$!
    bg_pids+=("$POD_PID")
}

skip() {  # skip WHAT: a check that could not run fails the smoke unless SMOKE_ALLOW_SKIP=1
    results+=("SKIP  $1")
    [ "$ALLOW_SKIP" = 1 ] || failed=1
    echo "smoke.sh: ${results[-1]}"
}

record() {  # record NAME EXPECTED ACTUAL SECONDS [DETAIL]
    if [ "$2" = "$3" ]; then
        results+=("PASS  $1 (exit $3, $4 s)${5:+: $5}")
    else
        results+=("FAIL  $1 (exit $3, expected $2, $4 s)${5:+: $5}")
        failed=1
    fi
    echo "smoke.sh: ${results[-1]}"
}

check() {  # check NAME EXPECTED_EXIT [VAR=VALUE ...] -- COMMAND...: a pod in the foreground
    local name=$1 expected=$2; shift 2
    local t0 log
    log=$WORK/$(printf %s "$name" | tr -c 'a-zA-Z0-9' '-').log
    LAST_LOG=$log
    t0=$(date +%s)
    pod "$@" >"$log" 2>&1
    local code=$?
    tail -n 15 "$log" | sed 's/^/    /'
    record "$name" "$expected" "$code" "$(( $(date +%s) - t0 ))"
}


free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }

wait_for() {  # wait_for LOG TEXT SECONDS PID
    local deadline=$(( $(date +%s) + $3 ))
    until grep -q "$2" "$1" 2>/dev/null; do
        if ! kill -0 "$4" 2>/dev/null || [ "$(date +%s)" -gt "$deadline" ]; then return 1; fi
        sleep 1
    done
}

echo "smoke.sh: $IMAGE with $BUILDER; work folder $WORK"

# -- 1. the pod's view -----------------------------------------------------------------------------
check "pod: uid 10001, read-only root, writable /tmp and /data, s3fs+gcsfs, no NVIDIA variables" 0 -- \
    sh -c 'set -e; test "$(id -u):$(id -g)" = 10001:10001; ! touch /opt/venv/x 2>/dev/null; ! touch /x 2>/dev/null;
           touch /tmp/x /data/x; rm /data/x; ! env | grep -q NVIDIA_; python -c "import s3fs, gcsfs";
           dumb-init --version; trainer --version'

LIST=/usr/share/pair-trainer-base/packages.txt  # docker/make-base.sh records the base's packages there
if pod -- test -s "$LIST" >/dev/null 2>&1; then
    check "the base's package list (docker/make-base.sh: bookworm, -updates, -security)" 0 -- \
        sh -c "grep -E '^(libssl3|openssl|python3.11) ' $LIST && test \$(wc -l < $LIST) -gt 50"
else
    skip "the base's package list: $IMAGE was not built on docker/make-base.sh's base (no $LIST)"
fi

# -- 2. the demo batch, an Indexed Job's pod, verify -------------------------------------------------
check "trainer batch (the demo, 3 pairs)" 0 -- "${ENTRYPOINT[@]}" batch "$MANIFEST"
for pair in BTCUSDT ETHUSDT SOLUSDT; do
    [ -f "$DATA/artifacts/demo/$pair/_SUCCESS.json" ] || { results+=("FAIL  no _SUCCESS.json for $pair"); failed=1; }
done
check "trainer run --index 1 (an Indexed Job pod)" 0 -- "${ENTRYPOINT[@]}" run --manifest "$MANIFEST" --index 1
check "trainer run --index 3 (out of range: usage error)" 2 -- "${ENTRYPOINT[@]}" run --manifest "$MANIFEST" --index 3
check "trainer verify" 0 -- "${ENTRYPOINT[@]}" verify artifacts/demo
# the Indexed Job's last step: the summary from the pairs' markers, nothing trained
rm -f "$DATA/artifacts/demo/summary.json" "$DATA/artifacts/demo/summary.html"
check "trainer batch --summary-only (the Indexed Job's last step)" 0 -- "${ENTRYPOINT[@]}" batch "$MANIFEST" --summary-only
if [ -s "$DATA/artifacts/demo/summary.html" ] && ! grep -q "Submitted" "$LAST_LOG" &&
    python3 -c 'import json, sys; rows = json.load(open(sys.argv[1]))["pairs"]; sys.exit(len(rows) != 3 or any(r["status"] != "skipped" for r in rows))' "$DATA/artifacts/demo/summary.json"; then
    results+=("PASS  summary.json and summary.html rebuilt: 3 pairs from their markers, none trained")
else
    results+=("FAIL  --summary-only did not rebuild summary.json/summary.html from the 3 markers"); failed=1
fi

# -- 3. SIGTERM, as a deleted or preempted pod gets it -----------------------------------------------
log=$WORK/sigterm.log
t0=$(date +%s)
pod_bg "$log" -- "${ENTRYPOINT[@]}" run --manifest "$MANIFEST" --index 0 --output artifacts/sigterm \
    --epochs 50 --set train.early_stopping_patience=50
if wait_for "$log" "Epoch 2/" 240 "$POD_PID"; then
    pid1=$(pgrep -P "$POD_PID" | head -n 1)  # the pod's PID 1, as the host sees it
    [ "$(cat "/proc/$pid1/comm" 2>/dev/null)" = dumb-init ] || echo "smoke.sh: the pod's PID 1 is not dumb-init" >&2
    sent=$(date +%s)
    kill -TERM "$pid1"
    for _ in $(seq 1 60); do kill -0 "$POD_PID" 2>/dev/null || break; sleep 0.5; done
    wait "$POD_PID"
    code=$?
    record "SIGTERM to a training pod's PID 1 (dumb-init)" 143 "$code" "$(( $(date +%s) - t0 ))" \
        "stopped $(( $(date +%s) - sent )) s after SIGTERM"
else
    tail -n 15 "$log" | sed 's/^/    /'
    record "SIGTERM to a training pod's PID 1 (dumb-init)" 143 "never-trained" "$(( $(date +%s) - t0 ))"
fi

# -- 4. an s3:// output --------------------------------------------------------------------------------
moto=$MOTO
if [ -x "$moto" ]; then
    port=$(free_port)
    "$moto" -H 127.0.0.1 -p "$port" >"$WORK/moto.log" 2>&1 &
    MOTO_PID=$!
    "$HOST_PYTHON" - "$port" <<'PY'
import sys, time, boto3
for _ in range(100):
    try:
        boto3.client("s3", endpoint_url=f"http://127.0.0.1:{sys.argv[1]}", region_name="us-east-1",
                     aws_access_key_id="testing", aws_secret_access_key="testing").create_bucket(Bucket="smoke")
        break
    except Exception:
        time.sleep(0.2)
PY
    S3_ENV=(AWS_ACCESS_KEY_ID=testing AWS_SECRET_ACCESS_KEY=testing AWS_DEFAULT_REGION=us-east-1
            "FSSPEC_S3_ENDPOINT_URL=http://127.0.0.1:$port")
    check "trainer run --index 2 --output s3://smoke/runs" 0 "${S3_ENV[@]}" -- \
        "${ENTRYPOINT[@]}" run --manifest "$MANIFEST" --index 2 --output s3://smoke/runs
    check "trainer verify s3://smoke/runs" 0 "${S3_ENV[@]}" -- "${ENTRYPOINT[@]}" verify s3://smoke/runs
else
    skip "s3:// output: no $moto (pip install -e '.[test]')"
fi

# -- 5. an image with a third-party plugin (docker/Dockerfile.plugin, the example plugin) ----------------
secret=()
cert=${PIP_CERT:-${SSL_CERT_FILE:-}}
[ -n "$cert" ] && [ -s "$cert" ] && secret=(--secret "id=pipcert,src=$cert")
plugin_args=(-f docker/Dockerfile.plugin --build-arg "TRAINER_IMAGE=$IMAGE" -t "$PLUGIN_IMAGE" "${secret[@]}"
             plugins/examples/trainer-example)
t0=$(date +%s)
if [ "$BUILDER" = buildah ]; then
    buildah bud --isolation chroot --layers "${plugin_args[@]}" >"$WORK/plugin-build.log" 2>&1
else
    DOCKER_BUILDKIT=1 docker build "${plugin_args[@]}" >"$WORK/plugin-build.log" 2>&1
fi
code=$?
tail -n 5 "$WORK/plugin-build.log" | sed 's/^/    /'
record "build $PLUGIN_IMAGE: FROM $IMAGE + the example plugin (docker/Dockerfile.plugin)" 0 "$code" "$(( $(date +%s) - t0 ))"
if [ "$code" = 0 ]; then
    sed -e 's|output: artifacts/demo/|output: artifacts/plugin/|' \
        -e 's|builder: lstm|builder: tiny-gru|' -e 's|params: {lstm_units: \[16\], dense_units: \[8\], dropout: 0.1}|params: {units: 8}|' \
        -e 's|method: undersample, min_per_class: 0|method: every-other|' manifests/demo.yaml > "$ETC/plugin.yaml"
    check "the plain image refuses the plugin's model (exit 2)" 2 -- "${ENTRYPOINT[@]}" validate /etc/trainer/plugin.yaml
    if [ "$BUILDER" = buildah ]; then
        PLUGIN_CTR=$(buildah from --pull=false "$PLUGIN_IMAGE")
        POD_ROOTFS=$(buildah mount "$PLUGIN_CTR")
        mkdir -p "$POD_ROOTFS/etc/trainer"
    else
        POD_IMAGE=$PLUGIN_IMAGE
    fi
    check "plugin image: trainer run with the plugin's tiny-gru model and every-other balancer" 0 -- \
        "${ENTRYPOINT[@]}" run --manifest /etc/trainer/plugin.yaml --index 0
    grep -q '"builder": "tiny-gru"' "$DATA/artifacts/plugin/BTCUSDT/_SUCCESS.json" 2>/dev/null ||
        grep -rqs "tiny-gru" "$DATA/artifacts/plugin/BTCUSDT/" ||
        { results+=("FAIL  the plugin image's artifacts do not name tiny-gru"); failed=1; }
    unset POD_ROOTFS POD_IMAGE
fi

# -- 6. Ray: head + worker + submitter, as KubeRay runs them ---------------------------------------
TOKEN=$(python3 -c 'import secrets; print(secrets.token_hex(32))')
AUTH=(RAY_AUTH_MODE=token "RAY_AUTH_TOKEN=$TOKEN" RAY_USAGE_STATS_ENABLED=0)  # as KubeRay (authOptions) and k8s/rayjob/ give every Ray container
gcs=$(free_port); dash=$(free_port); head_agent=$(free_port); worker_agent=$(free_port)
head_log=$WORK/ray-head.log worker_log=$WORK/ray-worker.log
t0=$(date +%s)
pod_bg "$head_log" "${AUTH[@]}" -- ray start --head --block --num-cpus=0 --node-ip-address=127.0.0.1 \
    --port="$gcs" --dashboard-host=127.0.0.1 --dashboard-port="$dash" --dashboard-agent-listen-port="$head_agent" \
    --ray-client-server-port="$(free_port)" \
    --min-worker-port=11000 --max-worker-port=11999 --object-store-memory=200000000 --disable-usage-stats
head_pid=$POD_PID
if wait_for "$head_log" "Ray runtime started" 180 "$head_pid"; then
    pod_bg "$worker_log" "${AUTH[@]}" -- ray start --block --address="127.0.0.1:$gcs" --num-cpus=2 \
        --node-ip-address=127.0.0.1 --dashboard-agent-listen-port="$worker_agent" \
        --min-worker-port=12000 --max-worker-port=12999 --object-store-memory=200000000 --disable-usage-stats
    worker_pid=$POD_PID
    wait_for "$worker_log" "Ray runtime started" 180 "$worker_pid"
    record "ray start --head (num-cpus 0) and a worker, token authentication on" 0 $? "$(( $(date +%s) - t0 ))"
    # what a pod on the network without the token gets (a probe, an intruder)
    check "without the token: job API refused, health endpoints answered" 0 -- python - "$dash" "$worker_agent" <<'PY'
import sys, urllib.request, urllib.error
dash, agent = sys.argv[1:]
def status(url):
    try:
        with urllib.request.urlopen(url, timeout=10) as r:
            return r.status
    except urllib.error.HTTPError as e:
        return e.code
jobs = status(f"http://127.0.0.1:{dash}/api/jobs/")
gcs = status(f"http://127.0.0.1:{dash}/api/gcs_healthz")
raylet = status(f"http://127.0.0.1:{agent}/api/local_raylet_healthz")
print(f"GET /api/jobs/ -> {jobs}; /api/gcs_healthz -> {gcs}; worker /api/local_raylet_healthz -> {raylet}")
sys.exit(0 if jobs in (401, 403) and gcs == 200 and raylet == 200 else 1)
PY
    check "ray job submit without the token (refused)" 1 -- \
        ray job submit --address "http://127.0.0.1:$dash" -- echo should-not-run
    # KubeRay's submitter: `ray job submit --address http://HEAD:8265 -- ENTRYPOINT`, output streamed
    check "ray job submit -- trainer batch (the RayJob's entrypoint)" 0 "${AUTH[@]}" -- \
        ray job submit --address "http://127.0.0.1:$dash" -- trainer batch "$MANIFEST" --output /data/artifacts/ray-demo
    if grep -q "Submitted 3 pair(s) to Ray (2 CPUs, 0 GPUs)" "$LAST_LOG"; then
        results+=("PASS  the batch ran its 3 pairs on the worker's 2 CPUs (the head has none)")
    else
        results+=("FAIL  the batch did not report 3 pairs on the worker's 2 CPUs"); failed=1
    fi
    check "trainer verify (the RayJob's artifacts)" 0 -- "${ENTRYPOINT[@]}" verify artifacts/ray-demo
else
    tail -n 20 "$head_log" | sed 's/^/    /'
    record "ray start --head (num-cpus 0)" 0 1 "$(( $(date +%s) - t0 ))"
fi

echo
echo "smoke.sh: $IMAGE, $(( $(date +%s) - started )) s in all"
printf '  %s\n' "${results[@]}"
exit "$failed"
