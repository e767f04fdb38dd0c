#!/usr/bin/env bash
# deploy/cluster.sh - a local N-node Chorus cluster (mesh) for trying things out.
#
#   deploy/cluster.sh start N [--netns] [--insecure] [-- extra chorusd flags]
#   deploy/cluster.sh status
#   deploy/cluster.sh stop
#
# start   N nodes node1..nodeN, every node --peer of every node.
#         Default: on loopback, node K serves HTTP/WebSocket on 127.0.0.1:(8080+K)
#         and links on tcp://127.0.0.1:(7000+2K), Raft on port 7001+2K (the
#         link port + 1), its Raft log in the state dir (nodeK.raft; each
#         `start` makes a new cluster and deletes the old logs).
#         --netns: node K runs in its own network namespace chorus-cl-nK with the
#         address 10.77.0.(10+K)/24 on a bridge that lives in the namespace
#         chorus-cl-sw (10.77.0.1), same ports; nothing is added to the host's
#         own network. Reach the nodes from that namespace (printed at start):
#           ip netns exec chorus-cl-sw curl http://10.77.0.11:8081/healthz
#         Needs root (ip netns).
#         Node links use CURVE with a secret from `chorusd --curve-keygen`
#         (kept in the state dir, passed by environment, never on the command
#         line); --insecure uses plaintext links instead.
#         An API key for POST /api/publish is generated and printed.
# status  each node's pid, GET /healthz and the peers it sees (up/down).
# stop    SIGTERM every node (SIGKILL after 10 s), delete the namespaces.
#
# The binary is $CHORUSD, else build/broker/chorusd. Logs, pids and keys are in
# ${CHORUS_CLUSTER_DIR:-/tmp/chorus-cluster} (nodeK.log, nodeK.pid, nodes).
# Ports: CHORUS_CLUSTER_HTTP_BASE (8080) and CHORUS_CLUSTER_LINK_BASE (7000).
set -euo pipefail

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
DIR="${CHORUS_CLUSTER_DIR:-/tmp/chorus-cluster}"
CHORUSD="${CHORUSD:-$ROOT/build/broker/chorusd}"
HTTP_BASE="${CHORUS_CLUSTER_HTTP_BASE:-8080}"
LINK_BASE="${CHORUS_CLUSTER_LINK_BASE:-7000}"
SW_NS="chorus-cl-sw"
NS_PREFIX="chorus-cl-n"
SUBNET="10.77.0"

die() { echo "cluster.sh: $*" >&2; exit 1; }
usage() { sed -n '2,26p' "$0" | sed 's/^# \{0,1\}//'; exit "${1:-0}"; }

# A pid file's process, if it is still a chorusd (pids get reused).
live_pid() {
  local f="$1" pid
  [[ -f "$f" ]] || return 1
  pid="$(cat "$f")"
  [[ "$pid" =~ ^[0-9]+$ ]] && [[ -r "/proc/$pid/cmdline" ]] || return 1
  tr '\0' ' ' <"/proc/$pid/cmdline" | grep -q chorusd || return 1
  echo "$pid"
}

# Runs a command where the node addresses are reachable (the switch namespace
# with --netns, here otherwise).
reach() {
  if [[ -f "$DIR/netns" ]]; then ip netns exec "$SW_NS" "$@"; else "$@"; fi
}

# GET http://HOST:PORT/healthz -> one line: "<status> <summary>".
healthz() {
  reach python3 - "$1" "$2" <<'EOF'
import http.client, json, sys
host, port = sys.argv[1], int(sys.argv[2])
try:
    c = http.client.HTTPConnection(host, port, timeout=2)
    c.request("GET", "/healthz")
    r = c.getresponse()
    body = r.read().decode("utf-8", "replace")
    try:
        j = json.loads(body)
    except ValueError:
        print(f"{r.status} {body[:200]}")
        sys.exit(0)
    peers = " ".join(f"{p.get('node')}={p.get('state')}"
                     + (f"({p.get('last_seen_ms_ago')}ms)" if p.get('last_seen_ms_ago') is not None else "")
                     for p in j.get("peers", []))
    print(f"{r.status} status={j.get('status')} node={j.get('node')} "
          f"connections={j.get('connections')} peers: {peers or '(none yet)'}")
except OSError as e:
    print(f"unreachable ({e})")
EOF
}

port_busy() {  # loopback only
  (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

netns_setup() {
  local n="$1" k
  [[ "$(id -u)" == 0 ]] || die "--netns needs root (ip netns)"
  for k in $(seq 1 "$n"); do
    ip netns list | grep -qw "$NS_PREFIX$k" && die "namespace $NS_PREFIX$k exists: run '$0 stop' first"
  done
  ip netns list | grep -qw "$SW_NS" && die "namespace $SW_NS exists: run '$0 stop' first"
  echo "$n" >"$DIR/netns"
  ip netns add "$SW_NS"
  ip -n "$SW_NS" link set lo up
  ip -n "$SW_NS" link add br0 type bridge
  ip -n "$SW_NS" addr add "$SUBNET.1/24" dev br0
  ip -n "$SW_NS" link set br0 up
  for k in $(seq 1 "$n"); do
    ip netns add "$NS_PREFIX$k"
    ip -n "$NS_PREFIX$k" link set lo up
    # Both ends are created inside namespaces: the host's network is untouched.
    ip -n "$SW_NS" link add "p$k" type veth peer name eth0 netns "$NS_PREFIX$k"
    ip -n "$SW_NS" link set "p$k" master br0
    ip -n "$SW_NS" link set "p$k" up
    ip -n "$NS_PREFIX$k" addr add "$SUBNET.$((10 + k))/24" dev eth0
    ip -n "$NS_PREFIX$k" link set eth0 up
  done
}

netns_teardown() {
  local n k
  [[ -f "$DIR/netns" ]] || return 0
  n="$(cat "$DIR/netns")"
  for k in $(seq 1 "$n"); do ip netns del "$NS_PREFIX$k" 2>/dev/null || true; done
  ip netns del "$SW_NS" 2>/dev/null || true
  rm -f "$DIR/netns"
}

cmd_start() {
  local n="" netns=0 insecure=0 extra=() k
  while (($#)); do
    case "$1" in
      --netns) netns=1 ;;
      --insecure) insecure=1 ;;
      --) shift; extra=("$@"); break ;;
      -h|--help) usage ;;
      *) [[ -z "$n" && "$1" =~ ^[0-9]+$ ]] || die "unexpected argument '$1' (see --help)"; n="$1" ;;
    esac
    shift
  done
  if [[ -z "$n" ]] || ((n < 1 || n > 50)); then die "start needs a node count 1..50"; fi
  [[ -x "$CHORUSD" ]] || die "no chorusd at $CHORUSD: build it (cmake --build build) or set CHORUSD"
  mkdir -p "$DIR"
  for f in "$DIR"/node*.pid; do
    [[ -e "$f" ]] || continue
    live_pid "$f" >/dev/null && die "a cluster is running (pids in $DIR): run '$0 stop' first"
  done
  [[ -f "$DIR/netns" ]] && die "namespaces of an earlier --netns cluster remain: run '$0 stop' first"
  rm -f "$DIR"/node*.pid "$DIR"/node*.log "$DIR/nodes"
  rm -rf "$DIR"/node*.raft

  local hosts=() peers=()
  for k in $(seq 1 "$n"); do
    if ((netns)); then hosts+=("$SUBNET.$((10 + k))"); else hosts+=("127.0.0.1"); fi
    peers+=(--peer "tcp://${hosts[k - 1]}:$((LINK_BASE + 2 * k))")
    if ((!netns)); then
      port_busy $((HTTP_BASE + k)) && die "port $((HTTP_BASE + k)) is in use (set CHORUS_CLUSTER_HTTP_BASE)"
      port_busy $((LINK_BASE + 2 * k)) && die "port $((LINK_BASE + 2 * k)) is in use (set CHORUS_CLUSTER_LINK_BASE)"
      port_busy $((LINK_BASE + 2 * k + 1)) && die "port $((LINK_BASE + 2 * k + 1)) (Raft) is in use (set CHORUS_CLUSTER_LINK_BASE)"
    fi
  done

  local secret_env=() link_flag=()
  if ((insecure)); then
    link_flag=(--cluster-insecure true)
  else
    if [[ ! -s "$DIR/curve_secret" ]]; then
      (umask 077; "$CHORUSD" --curve-keygen | sed -n 's/^cluster_curve_secret=//p' >"$DIR/curve_secret")
      [[ -s "$DIR/curve_secret" ]] || die "chorusd --curve-keygen gave no secret; use --insecure"
    fi
    secret_env=(CHORUS_CLUSTER_CURVE_SECRET="$(cat "$DIR/curve_secret")")
  fi
  if [[ ! -s "$DIR/api_key" ]]; then
    (umask 077; head -c 18 /dev/urandom | base64 | tr '+/' '-_' >"$DIR/api_key")
  fi
  local api_key
  api_key="$(cat "$DIR/api_key")"

  ((netns)) && netns_setup "$n"

  for k in $(seq 1 "$n"); do
    local pre=() host="${hosts[k - 1]}"
    ((netns)) && pre=(ip netns exec "$NS_PREFIX$k")
    # setsid: the node outlives this shell; `ip netns exec` execs chorusd, so
    # $! is the node itself.
    env "${secret_env[@]}" CHORUS_API_KEY="$api_key" setsid "${pre[@]}" "$CHORUSD" \
      --node-id "node$k" --bind "$host" --port $((HTTP_BASE + k)) \
      --cluster-bind "tcp://$host:$((LINK_BASE + 2 * k))" "${peers[@]}" "${link_flag[@]}" \
      --data-dir "$DIR/node$k.raft" \
      "${extra[@]}" </dev/null >"$DIR/node$k.log" 2>&1 &
    echo $! >"$DIR/node$k.pid"
    echo "node$k $host $((HTTP_BASE + k)) tcp://$host:$((LINK_BASE + 2 * k)) $( ((netns)) && echo "$NS_PREFIX$k" || echo -)" >>"$DIR/nodes"
  done

  # Wait (bounded) for every node's /healthz, then for the peers to see each other.
  local deadline=$((SECONDS + 20)) ok
  while :; do
    ok=1
    while read -r id host port _ep _ns; do
      # kill -0, not live_pid: for a moment the pid is still env/setsid/ip
      # on its way to exec chorusd.
      kill -0 "$(cat "$DIR/$id.pid")" 2>/dev/null || { tail -n 20 "$DIR/$id.log" >&2; die "$id exited during start (log above, $DIR/$id.log); '$0 stop' cleans up"; }
      [[ "$(healthz "$host" "$port")" == 200* ]] || ok=0
    done <"$DIR/nodes"
    ((ok)) && break
    ((SECONDS < deadline)) || die "not every node answered /healthz within 20 s; see $DIR/*.log, '$0 status', '$0 stop'"
    sleep 0.2
  done
  deadline=$((SECONDS + 15))
  while :; do
    ok=1
    while read -r id host port _ep _ns; do
      local h ups
      h="$(healthz "$host" "$port")"
      ups="$(grep -o '=up' <<<"$h" | wc -l)"
      ((ups >= n - 1)) || ok=0
    done <"$DIR/nodes"
    ((ok)) && break
    ((SECONDS < deadline)) || { echo "cluster.sh: warning: peers not all up after 15 s (see status)" >&2; break; }
    sleep 0.2
  done

  echo "Chorus cluster: $n nodes, links $( ((insecure)) && echo plaintext || echo CURVE), state in $DIR"
  while read -r id host port ep ns; do
    echo "  $id  pid $(cat "$DIR/$id.pid")  ws://$host:$port/ws  http://$host:$port/  links $ep$( [[ $ns != - ]] && echo "  netns $ns")"
  done <"$DIR/nodes"
  local first_host first_port
  read -r _ first_host first_port _ <"$DIR/nodes"
  local run=""
  ((netns)) && run="ip netns exec $SW_NS "
  echo "Publish over HTTP (any node):"
  echo "  ${run}curl -s -H 'X-API-Key: $api_key' -H 'Content-Type: application/json' \\"
  echo "       -d '{\"ch\":\"room:lobby\",\"data\":\"hi\"}' http://$first_host:$first_port/api/publish"
  if ((netns)); then
    echo "The nodes live in network namespaces; reach them from $SW_NS (bridge $SUBNET.1), e.g."
    echo "  ip netns exec $SW_NS curl http://$first_host:$first_port/healthz"
    echo "  ip netns exec $SW_NS bash     # a shell from which every node address works"
  fi
  echo "Status: $0 status    Stop: $0 stop"
}

cmd_status() {
  [[ -f "$DIR/nodes" ]] || { echo "no cluster (no $DIR/nodes)"; return 1; }
  local down=0
  while read -r id host port ep ns; do
    local pid state
    if pid="$(live_pid "$DIR/$id.pid")"; then state="running pid $pid"; else state="NOT RUNNING"; down=1; fi
    printf '%-7s %-18s http://%s:%s  links %s%s\n' "$id" "$state" "$host" "$port" "$ep" \
      "$( [[ $ns != - ]] && echo "  netns $ns")"
    if [[ -n "${pid:-}" ]]; then
      echo "        /healthz: $(healthz "$host" "$port")"
    else
      echo "        last log lines:"; tail -n 3 "$DIR/$id.log" 2>/dev/null | sed 's/^/          /'
    fi
  done <"$DIR/nodes"
  return "$down"
}

cmd_stop() {
  local pids=() f pid
  for f in "$DIR"/node*.pid; do
    [[ -e "$f" ]] || continue
    if pid="$(live_pid "$f")"; then
      kill -TERM "$pid" 2>/dev/null || true
      pids+=("$pid")
    fi
  done
  local deadline=$((SECONDS + 10))
  for pid in "${pids[@]}"; do
    while kill -0 "$pid" 2>/dev/null && ((SECONDS < deadline)); do sleep 0.1; done
    if kill -0 "$pid" 2>/dev/null; then
      echo "cluster.sh: pid $pid did not stop within 10 s; SIGKILL" >&2
      kill -KILL "$pid" 2>/dev/null || true
    fi
  done
  rm -f "$DIR"/node*.pid
  netns_teardown
  echo "stopped ${#pids[@]} node(s); logs kept in $DIR"
}

case "${1:-}" in
  start) shift; cmd_start "$@" ;;
  status) cmd_status ;;
  stop) cmd_stop ;;
  -h|--help|help) usage ;;
  *) usage 2 >&2 ;;
esac
