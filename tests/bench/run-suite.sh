#!/usr/bin/env bash
# The comparison suite of issue 6: Chorus against Nchan (nginx), a minimal
# Node `ws` broker and a minimal Tornado broker, all driven by chorus-bench
# in the same run, then docs/benchmarks.md and docs/benchmarks.svg.
#
#   tests/bench/run-suite.sh [options] [scenario...]
#
# Scenarios (default: fanout-1k rooms idle fanout-10k cross-node):
#   fanout-1k   1 channel, 1000 subscribers, 100-byte messages, one publisher
#               connection; the rate is stepped up (x1.5) until a step loses
#               messages or its p99 passes 100 ms; the highest held rate counts
#   rooms       5000 clients in 500 rooms of 10 publishing 5000 msg/s in total
#               (50k deliveries/s) for 10 s; p50/p99 publish-to-receive
#   idle        as many idle subscribed connections (one channel each) as the
#               descriptor limit allows (hard RLIMIT_NOFILE - 1000); memory per
#               connection from /proc (VmRSS and Anonymous, before/after)
#   fanout-10k  as fanout-1k with 10000 subscribers, p99 bound 500 ms
#   cross-node  Chorus only (the peers have no cluster mode): 3 chorusd nodes
#               clustered over loopback, 1000 subscribers, subscriber i on node
#               i % 3, the publisher on node 1, which owns the channel; the
#               rate is stepped up as in fanout-1k, then a fresh cluster runs
#               at half the sustained rate (10 s) for the p99 of subscribers on
#               the publisher's node against those one hop away
#   idle-100k, broadcast-100k
#               not in the default run (minutes of connecting; the machine
#               must be otherwise idle): 100,000 connections on chorusd
#               --workers 7, by tests/bench/scale-100k.sh (see there); the
#               JSON lines go to raw/, the figures into docs/benchmarks.md by
#               hand ("100,000 connections")
#
# Peers (default: chorus chorus-rx512 chorus-w2 nchan node-ws tornado; also
# chorus-noping).
# chorus is chorusd with its defaults; chorus-noping adds --ping-interval
# 3600, since none of the other peers sends keepalive PINGs (not in idle);
# chorus-rx512 (--rx-buffer-bytes 512, the memory-optimised setting) runs
# only the idle scenario; chorus-w2 (--workers 2: two processes sharing the
# port, joined over ipc://) runs only fanout-1k. Each (scenario, peer) gets a fresh server on a free
# loopback port, which is always stopped again.
#
# Options:
#   --quick            short steps and runs (a few minutes; figures are rough)
#   --smoke            CI check of this script: chorus and node-ws, 50 subs,
#                      20 msg/s for 2 s, and cross-node with 30 subs (one
#                      1 s step at 40 msg/s, then 20 msg/s for 2 s); report
#                      into the results folder (default a temporary one,
#                      removed when the check passes, unless --keep); fails
#                      when a run is missing, lost messages, had no remote
#                      subscribers or its publisher's node did not own the
#                      channel
#   --peers a,b,...    only these peers
#   --out DIR          raw results (JSON lines, logs, commands); default
#                      build-bench-results/<date> under the repository. An
#                      existing DIR is added to: runs are numbered on, and the
#                      report takes the least noisy run of each pair
#   --report FILE      markdown to write (default docs/benchmarks.md; only the
#                      part between the suite markers is replaced)
#   --chart FILE       SVG chart (default docs/benchmarks.svg)
#   --no-report        leave docs/ alone
#   --repeats N        extra runs of a (scenario, peer) whose run was noisy,
#                      other_cpu_pct > --noise-max (default 1 extra, 40%)
#   --quiet-wait S     before each run, wait up to S s for the machine to be
#                      quiet (others < 30% of a core; default 30, 0 = never)
#   --build-dir DIR    cmake build directory (default build)
#   --rev REV          build chorusd from git REV (git archive) instead of
#                      the work tree; chorus-bench always comes from the tree
#   --chorusd PATH --bench PATH   use these binaries, build nothing
#   --no-install       do not apt-get/npm install missing peers (skip them)
#   --keep             keep the servers' work directories and logs
#
# Needs root (or sudo) only to install: nginx-light, libnginx-mod-nchan,
# python3-tornado and gnuplot-nox from Debian, `ws` from tests/package.json.
# Load goes only to 127.0.0.1. See docs/benchmarks.md for how to read it.
set -uo pipefail

here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)

# cluster-helper.py imports the shared test helpers of tests/lib.
cluster_helper() { PYTHONPATH="$root/tests/lib" /usr/bin/python3 "$here/cluster-helper.py" "$@"; }
cmdline="tests/bench/run-suite.sh${*:+ $*}"

mode=full
peers_opt=
out=
report=        # default docs/benchmarks.md; --smoke: in the results folder
chart=
do_report=1
repeats=1
noise_max=40
quiet_wait=30
build_dir="$root/build"
rev=
chorusd=
bench=
install=1
keep=0
scenarios=()

die() { echo "run-suite: $*" >&2; exit 2; }
while [ $# -gt 0 ]; do
    case "$1" in
        --quick) mode=quick ;;
        --smoke) mode=smoke ;;
        --peers) peers_opt=${2:?}; shift ;;
        --out) out=${2:?}; shift ;;
        --report) report=${2:?}; shift ;;
        --chart) chart=${2:?}; shift ;;
        --no-report) do_report=0 ;;
        --repeats) repeats=${2:?}; shift ;;
        --noise-max) noise_max=${2:?}; shift ;;
        --quiet-wait) quiet_wait=${2:?}; shift ;;
        --build-dir) build_dir=${2:?}; shift ;;
        --rev) rev=${2:?}; shift ;;
        --chorusd) chorusd=${2:?}; shift ;;
        --bench) bench=${2:?}; shift ;;
        --no-install) install=0 ;;
        --keep) keep=1 ;;
        -h|--help) sed -n '2,/^set -uo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
        --*) die "unknown option $1 (see --help)" ;;
        *) scenarios+=("$1") ;;
    esac
    shift
done

all_peers="chorus chorus-noping chorus-rx512 chorus-w2 nchan node-ws tornado"
default_peers="chorus chorus-rx512 chorus-w2 nchan node-ws tornado"
if [ "$mode" = smoke ]; then
    scenarios=(smoke cross-node)
    all_peers="chorus node-ws"
    default_peers=$all_peers
    install=0
    quiet_wait=0
    repeats=0
fi
[ ${#scenarios[@]} -gt 0 ] || scenarios=(fanout-1k rooms idle fanout-10k cross-node)
for s in "${scenarios[@]}"; do
    case "$s" in fanout-1k|rooms|idle|fanout-10k|cross-node|smoke|idle-100k|broadcast-100k) ;;
        *) die "unknown scenario $s" ;; esac
done
peers=${peers_opt:-$default_peers}
peers=${peers//,/ }
for p in $peers; do
    case " $all_peers " in *" $p "*) ;; *) die "unknown peer $p (known: $all_peers)" ;; esac
done

stamp=$(date -u +%Y%m%dT%H%M%SZ)
if [ -z "$out" ]; then
    if [ "$mode" = smoke ]; then
        out=$(mktemp -d /tmp/chorus-suite-smoke.XXXXXX) out_tmp=1
    else
        out="$root/build-bench-results/$stamp"
    fi
fi
# a smoke run never touches docs/, whatever --out says
if [ "$mode" = smoke ]; then
    report=${report:-$out/benchmarks.md} chart=${chart:-$out/benchmarks.svg}
else
    report=${report:-$root/docs/benchmarks.md} chart=${chart:-$root/docs/benchmarks.svg}
fi
mkdir -p "$out/raw" "$out/logs" || die "cannot create $out"
log() { printf '%s run-suite: %s\n' "$(date -u +%H:%M:%S)" "$*" | tee -a "$out/suite.log" >&2; }

SUDO=()
[ "$(id -u)" -eq 0 ] || SUDO=(sudo -n)

# ---------------------------------------------------------------- installing
pkg_ok() { dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q 'install ok installed'; }
apt_install() {
    local missing=() p
    for p in "$@"; do pkg_ok "$p" || missing+=("$p"); done
    [ ${#missing[@]} -gt 0 ] || return 0
    [ "$install" = 1 ] || return 1
    log "installing ${missing[*]}"
    # Installing nginx must not start the distribution's nginx on port 80.
    local policy=
    if [ ! -e /usr/sbin/policy-rc.d ]; then
        printf '#!/bin/sh\nexit 101\n' | "${SUDO[@]}" tee /usr/sbin/policy-rc.d >/dev/null &&
            "${SUDO[@]}" chmod 755 /usr/sbin/policy-rc.d && policy=1
    fi
    "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -qq >/dev/null 2>&1
    "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
        "${missing[@]}" >>"$out/logs/apt.log" 2>&1
    local rc=$?
    [ -n "$policy" ] && "${SUDO[@]}" rm -f /usr/sbin/policy-rc.d
    return $rc
}

available=
for p in $peers; do
    case "$p" in
        nchan) apt_install nginx-light libnginx-mod-nchan ;;
        tornado) apt_install python3-tornado && /usr/bin/python3 -c 'import tornado' 2>/dev/null ;;
        node-ws)
            command -v node >/dev/null && {
                [ -f "$root/tests/node_modules/ws/package.json" ] ||
                    { [ "$install" = 1 ] && (cd "$root/tests" && npm ci --no-audit --no-fund >>"$out/logs/npm.log" 2>&1); }
            } && [ -f "$root/tests/node_modules/ws/package.json" ] ;;
        *) true ;;
    esac
    if [ $? -eq 0 ]; then available="$available $p"; else log "peer $p is not installed; skipped"; fi
done
peers=${available# }
if [ "$do_report" = 1 ] && [ "$mode" != smoke ]; then
    apt_install gnuplot-nox || log "gnuplot is not installed: no chart"
fi

# ------------------------------------------------------------------ building
if [ -z "$chorusd" ] || [ -z "$bench" ]; then
    if [ ! -f "$build_dir/CMakeCache.txt" ]; then
        cmake -S "$root" -B "$build_dir" >"$out/logs/cmake.log" 2>&1 || { cat "$out/logs/cmake.log" >&2; die "cmake failed"; }
    fi
    if [ -z "$bench" ]; then
        cmake --build "$build_dir" --target chorus-bench -j2 >>"$out/logs/build.log" 2>&1 ||
            { tail -20 "$out/logs/build.log" >&2; die "building chorus-bench failed"; }
        bench="$build_dir/tests/bench/chorus-bench"
    fi
    if [ -z "$chorusd" ] && [ -n "$rev" ]; then
        sha=$(git -C "$root" rev-parse --verify "$rev^{commit}") || die "no such revision $rev"
        src="$root/build-bench-src-${sha:0:10}"
        if [ ! -x "$src/build/broker/chorusd" ]; then
            log "building chorusd from $rev (${sha:0:10}) in $src"
            rm -rf "$src" && mkdir -p "$src" && git -C "$root" archive "$sha" | tar -x -C "$src" || die "git archive failed"
            { cmake -S "$src" -B "$src/build" && cmake --build "$src/build" --target chorusd -j2; } \
                >>"$out/logs/build.log" 2>&1 || { tail -20 "$out/logs/build.log" >&2; die "building chorusd at $rev failed"; }
        fi
        chorusd="$src/build/broker/chorusd"
        chorus_rev="${sha:0:10}"
    elif [ -z "$chorusd" ]; then
        cmake --build "$build_dir" --target chorusd -j2 >>"$out/logs/build.log" 2>&1 ||
            { tail -20 "$out/logs/build.log" >&2; die "building chorusd failed (the work tree; try --rev HEAD)"; }
        chorusd="$build_dir/broker/chorusd"
    fi
fi
[ -x "$chorusd" ] || die "no chorusd at $chorusd"
[ -x "$bench" ] || die "no chorus-bench at $bench"
if [ -z "${chorus_rev:-}" ]; then
    if [ "$chorusd" != "$build_dir/broker/chorusd" ]; then
        chorus_rev="$chorusd"
    else
        chorus_rev=$(git -C "$root" rev-parse --short=10 HEAD 2>/dev/null || echo unknown)
        if [ -n "$(git -C "$root" status --porcelain -- broker proto 2>/dev/null)" ]; then
            chorus_rev="$chorus_rev+work-tree"
        fi
    fi
fi

# ------------------------------------------------------------- descriptors
ulimit -n "$(ulimit -Hn)" 2>/dev/null
nofile=$(ulimit -n)
idle_conns=$((nofile - 1000))
[ "$idle_conns" -gt 100 ] || idle_conns=100

# ------------------------------------------------------------------- servers
srv_pid=       # what chorus-bench measures (nginx: the worker; a cluster: p1,p2,p3)
srv_kill=      # what we stop (nginx: the master; a cluster: "p1 p2 p3")
srv_dir=
srv_desc=

stop_server() {
    local p
    [ -n "$srv_kill" ] || return 0
    for p in $srv_kill; do kill -TERM "$p" 2>/dev/null; done
    for p in $srv_kill; do
        for _ in $(seq 50); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
        kill -0 "$p" 2>/dev/null && kill -KILL "$p" 2>/dev/null
        wait "$p" 2>/dev/null
    done
    # an nginx worker whose master died gets SIGKILL too
    for p in ${srv_pid//,/ }; do
        case " $srv_kill " in *" $p "*) ;; *) kill -0 "$p" 2>/dev/null && kill -KILL "$p" 2>/dev/null ;; esac
    done
    srv_pid= srv_kill=
    # nginx's own log lives in its work directory: keep it with the others
    if [ -n "$srv_dir" ] && [ -s "$srv_dir/error.log" ]; then
        cp "$srv_dir/error.log" "$out/logs/${srv_name:-nginx}.error.log" 2>/dev/null
    fi
    if [ "$keep" = 0 ] && [ -n "$srv_dir" ]; then rm -rf "$srv_dir"; fi
    srv_dir=
}
server_alive() { # every process of the server still runs
    local p
    for p in $srv_kill; do kill -0 "$p" 2>/dev/null || return 1; done
    [ -n "$srv_kill" ]
}
cleanup() {
    stop_server
    if [ "${out_tmp:-0}" = 1 ] && [ "${smoke_ok:-0}" = 1 ] && [ "$keep" = 0 ]; then rm -rf "$out"; fi
}
trap cleanup EXIT
trap 'log interrupted; exit 130' INT TERM

# start_server PEER LOGNAME: sets port, srv_pid, srv_kill, proto_args; 1 on failure
start_server() {
    local peer=$1 name=$2 i
    srv_name=$name
    srv_dir=$(mktemp -d "/tmp/chorus-suite-$peer.XXXXXX")
    port=$("$bench" free-port) || return 1
    proto_args=()
    local logf="$out/logs/$name.server.log"
    case "$peer" in
        chorus|chorus-noping|chorus-rx512|chorus-w2)
            local extra=()
            [ "$peer" = chorus-w2 ] && extra=(--workers 2)
            [ "$peer" = chorus-rx512 ] && extra=(--rx-buffer-bytes 512)
            [ "$peer" = chorus-noping ] && extra=(--ping-interval 3600)
            srv_desc="$chorusd --port $port --bind 127.0.0.1 --max-connections 20000 --log-level warn ${extra[*]}"
            "$chorusd" --port "$port" --bind 127.0.0.1 --max-connections 20000 --log-level warn "${extra[@]}" \
                >"$logf" 2>&1 &
            srv_kill=$! srv_pid=$!
            ;;
        nchan)
            sed -e "s#@WORK@#$srv_dir#g; s#@PORT@#$port#g; s#@WORKERS@#${NCHAN_WORKERS:-1}#g" \
                -e "s#@NOFILE@#$nofile#g; s#@MAXCONN@#$nofile#g" \
                "$here/peers/nchan/nginx.conf.in" >"$srv_dir/nginx.conf"
            srv_desc="nginx -p $srv_dir -e $srv_dir/error.log -c nginx.conf  (tests/bench/peers/nchan/nginx.conf.in, port $port)"
            nginx -p "$srv_dir" -e "$srv_dir/error.log" -c nginx.conf >"$logf" 2>&1 &
            srv_kill=$! srv_pid=
            proto_args=(--proto nchan)
            ;;
        node-ws)
            srv_desc="node tests/bench/peers/node-ws/server.mjs --port $port"
            node "$here/peers/node-ws/server.mjs" --port "$port" >"$logf" 2>&1 &
            srv_kill=$! srv_pid=$!
            ;;
        tornado)
            srv_desc="/usr/bin/python3 tests/bench/peers/tornado/server.py --port $port"
            /usr/bin/python3 "$here/peers/tornado/server.py" --port "$port" >"$logf" 2>&1 &
            srv_kill=$! srv_pid=$!
            ;;
    esac
    if ! "$bench" wait-ready --port "$port" --timeout 20 2>>"$logf" || ! kill -0 "$srv_kill" 2>/dev/null; then
        log "$peer did not start (see $logf)"
        [ -f "$srv_dir/error.log" ] && cat "$srv_dir/error.log" >>"$logf"
        stop_server
        return 1
    fi
    if [ "$peer" = nchan ]; then
        for i in $(seq 50); do
            srv_pid=$(pgrep -P "$srv_kill" | head -n 1)
            [ -n "$srv_pid" ] && break
            sleep 0.1
        done
        [ -n "$srv_pid" ] || { log "no nginx worker"; stop_server; return 1; }
        [ "${NCHAN_WORKERS:-1}" = 1 ] || log "nchan has ${NCHAN_WORKERS} workers; CPU and memory are the first one's only"
    fi
    return 0
}

# start_cluster LOGNAME: the cross-node cluster, 3 chorusd nodes meshed over
# loopback (plaintext node links: nothing leaves 127.0.0.1), ready when every
# node sees the other two up. Sets ports (P1,P2,P3), srv_pid (pid1,pid2,pid3),
# srv_kill; 1 on failure.
node_ids=xn1,xn2,xn3
start_cluster() {
    local name=$1 i j p all http cl peers err
    srv_name=$name srv_dir= srv_kill= srv_pid=
    all=$(cluster_helper ports 6) || { log "no free ports for a cluster"; return 1; }
    # chorusd builds from before agreed membership (--rev) know no --data-dir.
    # (not `--help | grep -q`: grep leaving early can SIGPIPE chorusd, and
    # pipefail then hides the match)
    local raft_dirs= help
    help=$("$chorusd" --help 2>&1 || true)
    case $help in *--data-dir*) raft_dirs=1 ;; esac
    read -r -a p <<<"$all"
    http=("${p[@]:0:3}") cl=("${p[@]:3:3}")
    for i in 0 1 2; do
        peers=()
        for j in 0 1 2; do [ "$j" = "$i" ] || peers+=(--peer "tcp://127.0.0.1:${cl[$j]}"); done
        "$chorusd" --port "${http[$i]}" --bind 127.0.0.1 --node-id "xn$((i + 1))" \
            --cluster-bind "tcp://127.0.0.1:${cl[$i]}" "${peers[@]}" --cluster-insecure true \
            ${raft_dirs:+--data-dir "$out/raft.$name.xn$((i + 1))"} \
            --max-connections 20000 --log-level warn >"$out/logs/$name.xn$((i + 1)).server.log" 2>&1 &
        srv_kill="$srv_kill $!" srv_pid="$srv_pid${srv_pid:+,}$!"
    done
    srv_kill=${srv_kill# }
    ports=$(IFS=,; echo "${http[*]}")
    srv_desc="$chorusd --port P_i --bind 127.0.0.1 --node-id xn_i --cluster-bind tcp://127.0.0.1:C_i --peer tcp://127.0.0.1:C_j --peer tcp://127.0.0.1:C_k --cluster-insecure true --data-dir DIR_i --max-connections 20000 --log-level warn  (nodes i = 1, 2, 3; P_i, C_i free loopback ports, C_i + 1 for Raft)"
    # up to 30 s, but a node that exits ends the wait at once
    for i in $(seq 30); do
        err=$(cluster_helper ready --ports "$ports" --ids "$node_ids" --timeout 1 2>&1) &&
            server_alive && return 0
        server_alive || { err="a node exited; $err"; break; }
    done
    log "the cluster did not come up: $err (see $out/logs/$name.xn*.server.log)"
    stop_server
    return 1
}

# ---------------------------------------------------------------- quietness
cpu_busy() { awk '/^cpu /{print $2+$3+$4+$7+$8+$9, $2+$3+$4+$5+$6+$7+$8+$9}' /proc/stat; }
# Waits up to quiet_wait s until the whole machine used < 30% of one core
# over one second. Prints the last measured busy %.
wait_quiet() {
    local deadline=$((SECONDS + quiet_wait)) a b pct=0
    while :; do
        a=($(cpu_busy)); sleep 1; b=($(cpu_busy))
        pct=$(( (b[0] - a[0]) * 100 * $(nproc) / (b[1] - a[1] > 0 ? b[1] - a[1] : 1) ))
        [ "$pct" -lt 30 ] && break
        [ $SECONDS -ge $deadline ] && break
    done
    echo "$pct"
}

# ------------------------------------------------------------------- scenarios
# scenario_args SCENARIO PEER: the chorus-bench arguments
scenario_args() {
    local s=$1
    case "$mode:$s" in
        full:fanout-1k)  args=(fanout --step --subs 1000 --channels 1 --size 100 --rate-start 10 --rate-step 1.5
                               --duration 5 --refine 2 --max-p99-ms 100) ;;
        quick:fanout-1k) args=(fanout --step --subs 1000 --channels 1 --size 100 --rate-start 10 --rate-step 2
                               --duration 2 --drain 3 --refine 1 --max-p99-ms 100 --noise-retries 1) ;;
        # One message to 10,000 sockets is 10,000 loopback sends, ~100 ms of
        # kernel time on this machine whoever the server is: hence 500 ms.
        full:fanout-10k) args=(fanout --step --subs 10000 --channels 1 --size 100 --rate-start 1 --rate-step 1.5
                               --duration 5 --refine 2 --max-p99-ms 500) ;;
        quick:fanout-10k) args=(fanout --step --subs 10000 --channels 1 --size 100 --rate-start 1 --rate-step 2
                               --duration 2 --drain 3 --refine 1 --max-p99-ms 500 --noise-retries 1) ;;
        full:rooms)      args=(rooms --clients 5000 --rooms 500 --rate 5000 --size 100 --duration 10) ;;
        quick:rooms)     args=(rooms --clients 5000 --rooms 500 --rate 5000 --size 100 --duration 3 --drain 3) ;;
        full:idle)       args=(idle --conns "$idle_conns" --settle 5 --connect-timeout 300) ;;
        quick:idle)      args=(idle --conns 5000 --settle 2 --connect-timeout 120) ;;
        smoke:smoke)     args=(fanout --subs 50 --channels 1 --size 100 --rate 20 --duration 2 --drain 5) ;;
        # cross-node: the step search as fanout-1k, then half_args at half its
        # sustained rate on a fresh cluster
        full:cross-node) args=(fanout --step --subs 1000 --channels 1 --size 100 --rate-start 10 --rate-step 1.5
                               --duration 5 --refine 2 --max-p99-ms 100)
                         half_args=(fanout --subs 1000 --channels 1 --size 100 --duration 10) ;;
        quick:cross-node) args=(fanout --step --subs 1000 --channels 1 --size 100 --rate-start 10 --rate-step 2
                               --duration 2 --drain 3 --refine 1 --max-p99-ms 100 --noise-retries 1)
                         half_args=(fanout --subs 1000 --channels 1 --size 100 --duration 3 --drain 3) ;;
        # one step, bounded loosely: it checks the script, not the speed (ASan builds run it too)
        smoke:cross-node) args=(fanout --step --subs 30 --channels 1 --size 100 --rate-start 40 --rate-max 40
                               --duration 1 --drain 5 --refine 0 --noise-retries 0 --max-p99-ms 1000)
                         half_args=(fanout --subs 30 --channels 1 --size 100 --duration 2 --drain 5) ;;
    esac
}
peer_runs() { # does PEER run SCENARIO?
    [ "$2" != cross-node ] || [ "$1" = chorus ] || return 1  # the peers have no cluster mode
    case "$1" in
        chorus-rx512) [ "$2" = idle ] ;;
        chorus-noping) [ "$2" != idle ] ;;
        chorus-w2) [ "$2" = fanout-1k ] ;;
        *) true ;;
    esac
}

json_field() { grep -o "\"$2\":[^,}]*" <<<"$1" | head -n 1 | cut -d: -f2- | tr -d '"'; }

# run_cross_node NAME: the two phases of cross-node, each on its own fresh
# cluster, into raw/NAME.jsonl (step lines, their final line, then the
# half-rate line); raw/NAME.roles.jsonl gets each phase's owner check. The
# publisher is on xn1 and the channel is one xn1 owns, so a remote delivery
# crosses exactly one hop. Sets rc and alive; 1 when a cluster did not start.
run_cross_node() {
    local name=$1 raw="$out/raw/$1.jsonl" blog="$out/logs/$1.bench.log" prefix phase rate rc2 pub_port row
    local -a cmd
    prefix=$(cluster_helper prefix --ids "$node_ids" --owner xn1 \
             --base bench:xnode) || { log "$name: no channel prefix"; return 1; }
    rc=0 alive=1
    for phase in step half; do
        if [ "$phase" = half ]; then
            rate=$(json_field "$(grep '"final":true' "$raw" | tail -n 1)" sustained_rate)
            if [ "$alive" = 0 ] || ! awk -v r="${rate:-0}" 'BEGIN{exit !(r > 0)}'; then
                log "$name: no sustained rate, so no half-rate run"
                return 0
            fi
            rate=$(awk -v r="$rate" 'BEGIN{printf "%.3f", r / 2}')
            cmd=("${half_args[@]}" --rate "$rate")
            # the step results stand; the run only lacks its second half
            start_cluster "$name.half" || { failures=$((failures + 1)); return 0; }
        else
            cmd=("${args[@]}")
            start_cluster "$name" || return 1
            : >"$raw"
        fi
        pub_port=${ports%%,*}
        cmd+=(--ports "$ports" --channel-prefix "$prefix")
        row=$name; [ "$phase" = half ] && row=$name.half
        printf '%s\t%s\t%s\n' "$row" "$srv_desc" \
            "chorus-bench ${cmd[*]//$ports/P1,P2,P3} --server-pid PID1,PID2,PID3 --quiet" >>"$out/commands.tsv"
        log "$name ($phase): ${cmd[*]} (3 nodes; channel $prefix-0, owned by xn1)"
        "$bench" "${cmd[@]}" --server-pid "$srv_pid" --quiet >>"$raw" 2>>"$blog"
        rc2=$?
        [ "$rc" != 0 ] || rc=$rc2
        cluster_helper roles --ports "$ports" --ids "$node_ids" \
            --channel "$prefix-0" --pub-port "$pub_port" --phase "$phase" >>"$out/raw/$name.roles.jsonl" 2>>"$blog" ||
            log "$name ($phase): could not read the nodes' metrics"
        server_alive || { alive=0; log "$name ($phase): a node died during the run"; }
        stop_server
    done
    return 0
}

# meta (machine facts and versions) for the report
{
    echo "date_utc=$(date -u '+%Y-%m-%d %H:%M UTC')"
    echo "mode=$mode"
    echo "command=$cmdline"
    echo "chorus_rev=$chorus_rev"
    echo "chorusd=$chorusd"
    echo "bench=$bench"
    echo "cpu=$(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -n 1)"
    echo "cores=$(nproc)"
    echo "mem_gib=$(awk '/MemTotal/{printf "%.1f", $2/1048576}' /proc/meminfo)"
    echo "kernel=$(uname -r)"
    echo "debian=$(cat /etc/debian_version 2>/dev/null)"
    echo "nofile=$nofile"
    echo "idle_conns=$idle_conns"
    echo "nginx=$(dpkg-query -W -f='${Version}' nginx-light 2>/dev/null)"
    echo "nchan=$(dpkg-query -W -f='${Version}' libnginx-mod-nchan 2>/dev/null)"
    echo "node=$(node --version 2>/dev/null)"
    echo "ws=$(sed -n 's/^ *"version": *"\(.*\)".*/\1/p' "$root/tests/node_modules/ws/package.json" 2>/dev/null | head -n 1)"
    echo "tornado=$(dpkg-query -W -f='${Version}' python3-tornado 2>/dev/null)"
    echo "python=$(/usr/bin/python3 --version 2>/dev/null | cut -d' ' -f2)"
    echo "nchan_workers=${NCHAN_WORKERS:-1}"
    echo "noise_max=$noise_max"
    echo "peers=$peers"
    echo "scenarios=${scenarios[*]}"
} >"$out/meta.txt"
printf '%s\t%s\n' "$(date -u '+%Y-%m-%d %H:%M UTC')" "$cmdline" >>"$out/invocations.tsv"

log "results in $out; peers: $peers; scenarios: ${scenarios[*]}; chorusd $chorus_rev"
failures=0
for s in "${scenarios[@]}"; do
    case "$s" in idle-100k|broadcast-100k)
        # Chorus only, its own script: workers, several generator processes.
        [ "$quiet_wait" -gt 0 ] && log "$s: machine busy before: $(wait_quiet)%"
        log "$s: tests/bench/scale-100k.sh $s"
        "$here/scale-100k.sh" --chorusd "$chorusd" --bench "$bench" --out "$out/logs/$s" "$s" \
            >>"$out/raw/$s.chorus.1.jsonl" 2>>"$out/logs/$s.log" || failures=$((failures + 1))
        last=$(tail -n 1 "$out/raw/$s.chorus.1.jsonl")
        log "$s: $(json_field "$last" subscribed) subscribed, p99 $(json_field "$last" p99_ms) ms, loss $(json_field "$last" loss), server RSS $(json_field "$last" server_rss_kib) KiB"
        continue ;;
    esac
    for peer in $peers; do
        peer_runs "$peer" "$s" || continue
        scenario_args "$s"
        # runs already in $out (an earlier invocation) keep their numbers
        attempt=$(ls "$out/raw" 2>/dev/null | grep -c "^$s\.$peer\.[0-9]*\.jsonl$")
        first=$attempt
        while :; do
            attempt=$((attempt + 1))
            name="$s.$peer.$attempt"
            busy=0
            [ "$quiet_wait" -gt 0 ] && busy=$(wait_quiet)
            t0=$SECONDS
            if [ "$s" = cross-node ]; then
                log "$name: 3-node cluster (machine busy before: ${busy}%)"
                run_cross_node "$name" || { failures=$((failures + 1)); break; }
            else
                if ! start_server "$peer" "$name"; then
                    failures=$((failures + 1)); break
                fi
                cmd=("$bench" "${args[@]}" "${proto_args[@]}" --port "$port" --server-pid "$srv_pid" --quiet)
                printf '%s\t%s\t%s\n' "$name" "$srv_desc" "chorus-bench ${args[*]} ${proto_args[*]} --port $port --server-pid PID --quiet" \
                    >>"$out/commands.tsv"
                log "$name: ${args[*]} ${proto_args[*]} (machine busy before: ${busy}%)"
                t0=$SECONDS
                "${cmd[@]}" >"$out/raw/$name.jsonl" 2>"$out/logs/$name.bench.log"
                rc=$?
                alive=1; server_alive || alive=0
                stop_server
            fi
            last=$(tail -n 1 "$out/raw/$name.jsonl")
            printf '{"run":"%s","scenario":"%s","peer":"%s","attempt":%d,"rc":%d,"server_alive":%d,"busy_before_pct":%d,"seconds":%d}\n' \
                "$name" "$s" "$peer" "$attempt" "$rc" "$alive" "$busy" $((SECONDS - t0)) >>"$out/runs.jsonl"
            [ "$alive" = 1 ] || log "$name: the server died during the run"
            if [ -z "$last" ]; then
                log "$name: no result (exit $rc; see $out/logs/$name.bench.log)"
                failures=$((failures + 1))
            fi
            # noise: other_cpu_pct while the figures that decide the run were taken
            noise=$(/usr/bin/python3 "$here/suite-report.py" noise "$out/raw/$name.jsonl" 2>/dev/null)
            noise=${noise:-0}
            case "$s" in
                idle) log "$name: $(json_field "$last" subscribed) conns, $(json_field "$last" mem_per_conn_bytes) B/conn RSS, $(json_field "$last" anon_per_conn_bytes) B/conn anon" ;;
                rooms|smoke) log "$name: $(json_field "$last" deliveries_per_sec)/s p50 $(json_field "$last" p50_ms) p99 $(json_field "$last" p99_ms) ms loss $(json_field "$last" loss), noise ${noise}%" ;;
                cross-node) log "$name: $(/usr/bin/python3 "$here/suite-report.py" xnode "$out/raw/$name.jsonl" 2>&1), noise ${noise}%" ;;
                *) log "$name: sustained $(json_field "$last" sustained_rate) msg/s, $(json_field "$last" deliveries_per_sec) deliveries/s ($(json_field "$last" fail_reason) above), noise ${noise}%" ;;
            esac
            if [ "$s" != idle ] && [ $((attempt - first)) -le "$repeats" ] && awk -v n="$noise" -v m="$noise_max" 'BEGIN{exit !(n > m)}'; then
                log "$name: noisy (other processes used ${noise}% of a core); running it again"
                continue
            fi
            break
        done
    done
done

# -------------------------------------------------------------------- report
if [ "$mode" = smoke ]; then
    ok=1
    for peer in $peers; do
        line=$(tail -n 1 "$out/raw/smoke.$peer.1.jsonl" 2>/dev/null)
        exp=$(json_field "$line" expected); rec=$(json_field "$line" received); sub=$(json_field "$line" subscribed)
        if [ -z "$line" ] || [ "$sub" != 50 ] || [ -z "$exp" ] || [ "$exp" = 0 ] || [ "$rec" != "$exp" ]; then
            echo "run-suite --smoke: FAIL: $peer: subscribed=$sub expected=$exp received=$rec" >&2
            sed 's/^/  /' "$out/logs/smoke.$peer.1.bench.log" "$out/logs/smoke.$peer.1.server.log" 2>/dev/null | tail -20 >&2
            ok=0
        else
            echo "run-suite --smoke: $peer ok ($rec of $exp deliveries)"
        fi
    done
    # cross-node: both phases ran, lost nothing, had subscribers on both sides
    # of the hop, and xn1 sequenced every message itself
    if xn=$(/usr/bin/python3 "$here/suite-report.py" xnode --check 30 "$out/raw/cross-node.chorus.1.jsonl" 2>&1); then
        echo "run-suite --smoke: cross-node ok ($xn)"
    else
        echo "run-suite --smoke: FAIL: cross-node: $xn" >&2
        sed 's/^/  /' "$out/logs/cross-node.chorus.1.bench.log" "$out"/logs/cross-node.chorus.1*.server.log 2>/dev/null | tail -20 >&2
        ok=0
    fi
    /usr/bin/python3 "$here/suite-report.py" --results "$out" --report "$report" --chart none >/dev/null ||
        { echo "run-suite --smoke: FAIL: report" >&2; ok=0; }
    grep -q '^| node-ws' "$report" 2>/dev/null || { echo "run-suite --smoke: FAIL: no node-ws row in the report" >&2; ok=0; }
    grep -q '^| chorus | .* | xn1 (confirmed) |$' "$report" 2>/dev/null ||
        { echo "run-suite --smoke: FAIL: no cross-node row in the report" >&2; ok=0; }
    [ "$ok" = 1 ] || exit 1
    smoke_ok=1
    echo "run-suite --smoke: ok"
    exit 0
fi

if [ "$do_report" = 1 ]; then
    chart_arg=$chart
    command -v gnuplot >/dev/null || chart_arg=none
    /usr/bin/python3 "$here/suite-report.py" --results "$out" --report "$report" --chart "$chart_arg" ||
        { log "writing the report failed"; exit 1; }
    log "wrote $report${chart_arg:+ and $chart_arg}"
fi
log "done; raw results in $out"
[ "$failures" = 0 ]
