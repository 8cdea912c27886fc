#!/usr/bin/env bash
# netns/lab.sh — a multi-subnet Butter lab built from Linux network namespaces.
#
# Topology (routed, the default):
#
#   root ns ──bt-admin── bt-router ──s1── [bt-sw1: br0] ──h1..hH── bt-s1h1 … bt-s1hH   10.1.0.0/24
#                                  ──s2── [bt-sw2: br0] ──h1..hH── bt-s2h1 … bt-s2hH   10.2.0.0/24
#                                  …
#
# Topology nat (--topology nat, issue 5): a public segment (subnet 0, 198.51.100.0/24, hosts
# bt-s0h1 …) and one gateway namespace per LAN (bt-gw1 …) that masquerades the LAN behind its
# public address (198.51.100.200+N), endpoint-independent (Linux keeps the source port) or
# symmetric (`masquerade random`: a new port per destination), optionally forwarding the QUIC port
# to host 1 (--forward sN). The gateways forward nothing unsolicited from the public side.
#
#   root ns ──bt-admin── [bt-sw0: br0] ── bt-s0h1 … (public)
#                                       ── wan: bt-gw1 (NAT) :lan ── [bt-sw1: br0] ── bt-s1h1 …
#   root ns ──bt-adm1── bt-gw1 (admin only: the root reaches LAN HTTP ports, nothing is NATed)
#
# Every object lives in a namespace whose name starts with $PREFIX; the only object in the root
# namespace is the admin veth (also prefixed), which dies with the router namespace. So `down`
# finds everything by name, even after a crash or a half-finished `up`.
#
# Why a bridge per subnet in its own namespace ("switch"): the root namespace here runs Docker
# with br_netfilter, so a bridge in the root namespace would send bridged frames through Docker's
# FORWARD chain (policy drop). A switch namespace has no rules and no addresses.
#
# Why multicast stays inside a subnet: the router forwards unicast only (no multicast routing
# daemon, no mroute table), and the admin link ends at the router, so no second path joins two
# subnets. Bridges have IGMP snooping off so beacons flood every port, querier or not.
#
# The script is the lab's single entry point; tests and benchmarks drive it (tests/netns).
set -euo pipefail
shopt -s inherit_errexit # a failing $(...) stops the script too

readonly PREFIX=bt-
readonly ROUTER=${PREFIX}router
readonly ADMIN_IF=${PREFIX}admin
readonly ADMIN_ROOT_ADDR=10.255.255.1
readonly ADMIN_ROUTER_ADDR=10.255.255.2
# Admin traffic (root namespace <-> node HTTP) is exempt from injected loss. NAT gateway N's
# admin link is 10.255.N.0/30; the root's address on the public segment is PUBLIC_ADMIN_ADDR.
readonly PUBLIC_NET=198.51.100
readonly PUBLIC_ADMIN_ADDR=$PUBLIC_NET.254
readonly ADMIN_SET="{ 10.255.0.0/16, $PUBLIC_ADMIN_ADDR }"
readonly MAX_NAT_SUBNETS=50
readonly QUIC_PORT=7000
readonly HTTP_PORT=7100
readonly HOST_BASE=10 # host M of subnet N is 10.N.0.(HOST_BASE+M)
readonly MAX_SUBNETS=250
readonly MAX_HOSTS=200
readonly NFT_TABLE=bt_link

LAB_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
readonly LAB_DIR
REPO_DIR=$(dirname "$LAB_DIR")
readonly REPO_DIR
RUN_DIR=${BUTTER_LAB_RUN_DIR:-$LAB_DIR/run}

# Lab configuration; `up` writes it to $RUN_DIR/lab.env, other commands read it back.
SUBNETS=2
HOSTS=3
TOPOLOGY=routed
PUBLIC=0
NAT_SPECS=()
FORWARDS=()
BOOTSTRAP=none
GATEWAYS=no
SITE_NAMES=()
BIN=
START=yes
WAIT_SECS=20
LOSS_SPECS=()
RATE_SPECS=()
DELAY_SPECS=()
NODE_ARGS=()

usage() {
	cat <<EOF
Usage: $(basename "$0") [--run-dir DIR] COMMAND [ARGS]

Builds S subnets (a Linux bridge each, 10.N.0.0/24) joined by one router namespace, H host
namespaces per subnet, and runs butter-node in every host. Requires root.

Commands:
  up [OPTIONS] [-- NODE_ARGS...]   build the lab (idempotent: same options => no change) and start nodes
  down                             stop every node and delete everything named ${PREFIX}* (idempotent)
  status                           table: namespace, address, pid, alive, /ready, peers (same/other subnet)
  hosts                            one line per host: namespace address site http-url
  exec HOST CMD...                 run CMD inside a host namespace (HOST: s1h2 or ${PREFIX}s1h2)
  start [--wait S] [HOST...]       start nodes that are not running (all by default), keeping their data
  stop [HOST...]                   SIGTERM nodes (all by default), SIGKILL after 5 s
  kill HOST [SIGNAL]               send SIGNAL (default KILL) to one node
  restart [--wait S]               stop all nodes, wipe their data, start them all at one instant
  loss HOST|sN|all PCT             set packet loss on host links now (0 removes it)
  partition sN                     cut subnet N from the others (the router, or its NAT gateway,
                                     forwards nothing to or from it; admin traffic still passes)
  unpartition                      undo every partition
  dropped HOST                     packets the loss rules of HOST's link dropped so far
  traffic sN                       "MULTICAST UNICAST" UDP datagrams sent into subnet N since \`up\`
  peers HOST                       print the node's /peers JSON

Options of up:
  --subnets S          number of subnets (default $SUBNETS, max $MAX_SUBNETS)
  --hosts H            hosts per subnet (default $HOSTS, max $MAX_HOSTS)
  --bootstrap MODE     none | one-per-subnet | all | gateways | public (default $BOOTSTRAP)
                         one-per-subnet: host 1 of subnet N bootstraps from host 1 of subnet N+1
                         all: every host bootstraps from host 1 of every other subnet
                         gateways (routed, --gateways): every host bootstraps from its subnet's
                           gateway (host 1), every gateway from every other gateway
                         public (nat): every LAN host bootstraps from public host s0h1
  --gateways           host 1 of every LAN subnet is its gateway: it runs with
                         compose/node/gateway.toml (reachability public), as compose's gw-* do
  --site-name sN=NAME  the site label (BUTTER_SITE) of subnet N's nodes instead of sN, e.g. the
                         site names of a topology file; repeatable
  --topology T         routed (default: one router, no NAT) | nat (a public segment, one NAT
                         gateway per LAN)
  --public P           nat: public hosts on the public segment, subnet 0 (default 1 with nat)
  --nat [sN=]TYPE      nat: eim (endpoint-independent mapping, default) | symmetric; repeatable
  --forward sN         nat: gateway of LAN N forwards UDP $QUIC_PORT to host 1; repeatable
  --loss [WHERE=]PCT   drop PCT % of packets each way on host links (nftables on the host's
                         bridge port: silent, like a real lossy link);
                         WHERE is a host (s1h2), a subnet (s1) or all (default); repeatable
  --rate [WHERE=]RATE  limit each direction of host links to RATE (tbf, e.g. 10mbit); repeatable
  --delay [WHERE=]MS   one-way delay in ms each direction (netem; skipped with a warning when the
                         kernel lacks netem, as it does on the CI machine); repeatable
  --bin PATH           butter-node binary (default target/release/butter-node, else target/debug)
  --no-start           build the topology only
  --wait SECS          wait up to SECS for every node's /health (default $WAIT_SECS; 0: do not wait)

Node settings are passed as environment (BUTTER_LISTEN=ADDR:$QUIC_PORT, BUTTER_HTTP=ADDR:$HTTP_PORT,
BUTTER_DATA_DIR, BUTTER_SITE=sN, BUTTER_BOOTSTRAP), so NODE_ARGS after -- override any of them.
All nodes start at the same instant (a lock barrier); the instant is in RUN_DIR/started_at_ms.

Run dir (default netns/run, or \$BUTTER_LAB_RUN_DIR): lab.env, started_at_ms, and per host
<ns>/node.log, <ns>/pid, <ns>/data.
EOF
}

die() {
	echo "lab.sh: $*" >&2
	exit 1
}

log() { echo "lab.sh: $*" >&2; }

# is_uint VALUE MIN MAX
is_uint() {
	[[ $1 =~ ^[0-9]+$ ]] || return 1
	(($1 >= $2 && $1 <= $3))
}

need_root() {
	[[ $(id -u) -eq 0 ]] || die "needs root (network namespaces); try: sudo $0 $*"
}

need_tools() {
	local t
	for t in ip nft tc curl jq flock; do
		command -v "$t" >/dev/null || die "missing tool '$t' (apt-get install iproute2 nftables curl jq util-linux)"
	done
}

# --- naming -------------------------------------------------------------------------------------

host_ns() { echo "${PREFIX}s${1}h${2}"; }
switch_ns() { echo "${PREFIX}sw${1}"; }
host_addr() {
	if (($1 == 0)); then echo "$PUBLIC_NET.$((HOST_BASE + $2))"; else echo "10.${1}.0.$((HOST_BASE + $2))"; fi
}
router_addr() { echo "10.${1}.0.1"; }
gateway_ns() { echo "${PREFIX}gw${1}"; }
gateway_wan_addr() { echo "$PUBLIC_NET.$((200 + $1))"; }
# Hosts in subnet S (subnet 0 is the public segment of the nat topology).
hosts_in() { if (($1 == 0)); then echo "$PUBLIC"; else echo "$HOSTS"; fi; }

# Normalise "s1h2" / "bt-s1h2" to the namespace name and check it is a host of this lab.
resolve_host() {
	local name=${1#"$PREFIX"}
	[[ $name =~ ^s([0-9]+)h([0-9]+)$ ]] || die "not a host name: $1 (expected s<subnet>h<host>)"
	local s=${BASH_REMATCH[1]} h=${BASH_REMATCH[2]}
	((s <= SUBNETS && h >= 1 && h <= $(hosts_in "$s"))) || die "no host $1 in a lab of $SUBNETS x $HOSTS (+$PUBLIC public)"
	echo "$s $h"
}

all_hosts() {
	local s h
	for ((s = 1; s <= SUBNETS; s++)); do
		for ((h = 1; h <= HOSTS; h++)); do
			echo "$s $h"
		done
	done
	for ((h = 1; h <= PUBLIC; h++)); do echo "0 $h"; done
}

lab_namespaces() {
	ip netns list | awk '{print $1}' | grep "^${PREFIX}" || true
}

# --- state --------------------------------------------------------------------------------------

save_config() {
	mkdir -p "$RUN_DIR"
	# -g: the file is sourced inside a function, where a plain declare would make locals.
	declare -p SUBNETS HOSTS TOPOLOGY PUBLIC NAT_SPECS FORWARDS BOOTSTRAP GATEWAYS SITE_NAMES BIN \
		LOSS_SPECS RATE_SPECS DELAY_SPECS NODE_ARGS |
		sed -E 's/^declare -(-?)([a-zA-Z]*) /declare -g\2 /' >"$RUN_DIR/lab.env"
}

load_config() {
	[[ -f $RUN_DIR/lab.env ]] || die "no lab in $RUN_DIR (run: $0 up)"
	# shellcheck source=/dev/null
	source "$RUN_DIR/lab.env"
}

# The topology part of the config: if it matches, `up` keeps the lab and only starts what is missing.
config_fingerprint() {
	declare -p SUBNETS HOSTS TOPOLOGY PUBLIC NAT_SPECS FORWARDS BOOTSTRAP GATEWAYS SITE_NAMES BIN \
		LOSS_SPECS RATE_SPECS DELAY_SPECS NODE_ARGS | md5sum | cut -d' ' -f1
}

# --- topology -----------------------------------------------------------------------------------

make_ns() {
	ip netns add "$1"
	ip -n "$1" link set lo up
}

make_router() {
	make_ns "$ROUTER"
	# /proc/sys/net is per namespace: this turns forwarding on in the router only.
	ip netns exec "$ROUTER" sh -c 'echo 1 >/proc/sys/net/ipv4/ip_forward'
	# Admin link: the root namespace reaches every host's HTTP port through the router, and
	# nothing else. The router has no default route, so the lab cannot reach the outside.
	ip link add "$ADMIN_IF" type veth peer name admin netns "$ROUTER"
	ip addr add "$ADMIN_ROOT_ADDR/30" dev "$ADMIN_IF"
	ip link set "$ADMIN_IF" up
	ip -n "$ROUTER" addr add "$ADMIN_ROUTER_ADDR/30" dev admin
	ip -n "$ROUTER" link set admin up
}

# A switch: a namespace holding one bridge, no addresses.
make_switch() {
	local sw
	sw=$(switch_ns "$1")
	make_ns "$sw"
	ip -n "$sw" link add br0 type bridge mcast_snooping 0 stp_state 0 forward_delay 0
	ip -n "$sw" link set br0 up
	# Count UDP datagrams as they enter the bridge (once per frame, not per flooded copy):
	# beacon and probe budgets (GOALS T6, T13) are measured here.
	ip netns exec "$sw" nft -f - <<EOF
table bridge bt_traffic {
	counter multicast {}
	counter unicast {}
	chain pre {
		type filter hook prerouting priority filter; policy accept;
		ip daddr 224.0.0.0/4 meta l4proto udp counter name "multicast" accept
		ip6 daddr ff00::/8 meta l4proto udp counter name "multicast" accept
		meta l4proto udp counter name "unicast"
	}
}
EOF
}

# "MULTICAST UNICAST": UDP datagrams sent into subnet S's bridge since it was built.
traffic_count() {
	ip netns exec "$(switch_ns "$1")" nft list counters table bridge bt_traffic |
		awk '/counter multicast/ {c = "m"} /counter unicast/ {c = "u"}
			/packets/ {n[c] = $2} END {print n["m"] + 0, n["u"] + 0}'
}

# routed: subnet S's switch, plugged into the router.
make_subnet() {
	local s=$1 sw
	sw=$(switch_ns "$s")
	make_switch "$s"
	ip link add "s$s" netns "$ROUTER" type veth peer name rt netns "$sw"
	ip -n "$sw" link set rt master br0 up
	ip -n "$ROUTER" addr add "$(router_addr "$s")/24" dev "s$s"
	ip -n "$ROUTER" link set "s$s" up
	ip route replace "10.$s.0.0/24" via "$ADMIN_ROUTER_ADDR" dev "$ADMIN_IF"
}

make_host() {
	local s=$1 h=$2 ns sw
	ns=$(host_ns "$s" "$h")
	sw=$(switch_ns "$s")
	make_ns "$ns"
	ip link add eth0 netns "$ns" type veth peer name "h$h" netns "$sw"
	ip -n "$sw" link set "h$h" master br0 up
	ip -n "$ns" addr add "$(host_addr "$s" "$h")/24" dev eth0
	ip -n "$ns" link set eth0 up multicast on
	# Public hosts (subnet 0) have no gateway: the public segment is the whole "internet".
	if ((s > 0)); then ip -n "$ns" route add default via "$(router_addr "$s")"; fi
	# Multicast leaves through the LAN interface explicitly, not through whatever the default is.
	ip -n "$ns" route add 224.0.0.0/4 dev eth0
}

# Hosts a spec ("all", "s2", "s2h3") applies to, one "s h" per line.
spec_hosts() {
	local where=$1
	if [[ $where == all ]]; then
		all_hosts
	elif [[ $where =~ ^s([0-9]+)$ ]]; then
		local s=${BASH_REMATCH[1]} h
		((s >= 1 && s <= SUBNETS)) || die "no subnet $where"
		for ((h = 1; h <= HOSTS; h++)); do echo "$s $h"; done
	else
		resolve_host "$where"
	fi
}

# Split "[WHERE=]VALUE" into "WHERE VALUE".
split_spec() {
	if [[ $1 == *=* ]]; then echo "${1%%=*} ${1#*=}"; else echo "all $1"; fi
}

# Packet loss on one host's link, both directions, for everything but admin traffic. The rules
# sit on the host's bridge port in the switch namespace, i.e. on the wire: a dropped packet
# vanishes silently, as on a real lossy link. (In the host's own output hook, a drop would
# surface as EPERM from sendmsg, which no real link does and which a node must not need to
# survive.) Multicast is flooded per port, so each receiver loses its copy independently.
set_loss() {
	local s=$1 h=$2 pct=$3 sw table=${NFT_TABLE}_h$2
	sw=$(switch_ns "$s")
	is_uint "$pct" 0 100 || die "loss must be an integer percentage: $pct"
	ip netns exec "$sw" nft "delete table bridge $table" 2>/dev/null || true
	((pct > 0)) || return 0
	ip netns exec "$sw" nft -f - <<EOF
table bridge $table {
	chain forward {
		type filter hook forward priority filter; policy accept;
		ip saddr $ADMIN_SET accept
		ip daddr $ADMIN_SET accept
		iifname "h$h" numgen random mod 100 < $pct counter drop
		oifname "h$h" numgen random mod 100 < $pct counter drop
	}
}
EOF
}

# Packets the loss rules of one host's link dropped so far (both directions).
dropped_on() {
	local s=$1 h=$2
	ip netns exec "$(switch_ns "$s")" nft list table bridge "${NFT_TABLE}_h$h" 2>/dev/null |
		awk '/counter packets/ {for (i = 1; i < NF; i++) if ($i == "packets") n += $(i + 1)} END {print n + 0}'
}

# Rate limit both directions of a host link: egress on the host side and on the switch side.
set_rate() {
	local s=$1 h=$2 rate=$3
	ip netns exec "$(host_ns "$s" "$h")" tc qdisc replace dev eth0 root tbf rate "$rate" burst 32kbit latency 100ms
	ip netns exec "$(switch_ns "$s")" tc qdisc replace dev "h$h" root tbf rate "$rate" burst 32kbit latency 100ms
}

netem_available() {
	local probe=${PREFIX}netem-probe ok=1
	ip netns add "$probe"
	ip netns exec "$probe" tc qdisc add dev lo root netem delay 1ms 2>/dev/null || ok=0
	ip netns del "$probe"
	((ok))
}

# netem shapes egress only: put the delay on both ends so each direction gets it.
set_delay() {
	local s=$1 h=$2 ms=$3
	ip netns exec "$(host_ns "$s" "$h")" tc qdisc replace dev eth0 root netem delay "${ms}ms"
	ip netns exec "$(switch_ns "$s")" tc qdisc replace dev "h$h" root netem delay "${ms}ms"
}

# Every "s h" a list of [WHERE=]VALUE specs touches, as "s h value" lines. Runs in $(...) so a
# bad spec stops the caller (set -e) instead of dying in a pipeline's subshell.
expand_specs() {
	local spec where value targets s h
	for spec in "$@"; do
		read -r where value <<<"$(split_spec "$spec")"
		targets=$(spec_hosts "$where")
		while read -r s h; do echo "$s $h $value"; done <<<"$targets"
	done
}

validate_specs() {
	local lines s h v spec
	for spec in "${SITE_NAMES[@]}"; do
		[[ $spec =~ ^s([0-9]+)=[a-z][a-z0-9-]*$ ]] || die "--site-name takes sN=NAME (a-z 0-9 -): $spec"
		is_uint "${BASH_REMATCH[1]}" 0 "$SUBNETS" || die "--site-name: no subnet in $spec"
	done
	lines=$(expand_specs "${LOSS_SPECS[@]}")
	while read -r s h v; do [[ -z $v ]] || is_uint "$v" 0 100 || die "--loss takes a percentage: $v"; done <<<"$lines"
	lines=$(expand_specs "${RATE_SPECS[@]}")
	while read -r s h v; do [[ -z $v || $v =~ ^[0-9]+([kmg]?bit)?$ ]] || die "--rate takes a tc rate (10mbit): $v"; done <<<"$lines"
	lines=$(expand_specs "${DELAY_SPECS[@]}")
	while read -r s h v; do [[ -z $v ]] || is_uint "$v" 0 60000 || die "--delay takes milliseconds: $v"; done <<<"$lines"
}

apply_link_conditions() {
	local lines s h v
	lines=$(expand_specs "${LOSS_SPECS[@]}")
	while read -r s h v; do [[ -z $v ]] || set_loss "$s" "$h" "$v"; done <<<"$lines"
	lines=$(expand_specs "${RATE_SPECS[@]}")
	while read -r s h v; do [[ -z $v ]] || set_rate "$s" "$h" "$v"; done <<<"$lines"
	((${#DELAY_SPECS[@]})) || return 0
	if netem_available; then
		lines=$(expand_specs "${DELAY_SPECS[@]}")
		while read -r s h v; do [[ -z $v ]] || set_delay "$s" "$h" "$v"; done <<<"$lines"
	else
		log "warning: this kernel has no netem; --delay ignored"
	fi
}

# A partition cuts subnet S from the rest where it meets the rest: on the router (routed) or on
# its NAT gateway's WAN side (nat). Traffic inside the subnet goes on, as does admin traffic (the
# root namespace observing nodes). Every partition lives in one table per namespace, so
# `unpartition` is one `delete table` each.
readonly PARTITION_TABLE=bt_partition
partition_subnet() {
	local s=$1 ns rules
	if [[ $TOPOLOGY == nat ]]; then
		((s >= 1)) || die "the public segment cannot be partitioned; partition a LAN (s1..s$SUBNETS)"
		ns=$(gateway_ns "$s")
		rules='iifname "wan" drop; oifname "wan" drop;'
	else
		ns=$ROUTER
		rules="iifname \"s$s\" oifname != \"admin\" drop; oifname \"s$s\" iifname != \"admin\" drop;"
	fi
	ip netns exec "$ns" nft -f - <<EOF
table inet $PARTITION_TABLE {
	chain forward {
		type filter hook forward priority -10; policy accept;
		$rules
	}
}
EOF
}

unpartition_all() {
	local ns
	for ns in $(lab_namespaces); do
		[[ $ns == "$ROUTER" || $ns == "${PREFIX}gw"* ]] || continue
		# Names what was lifted (stdout), so a heal can tell whether there was anything.
		if ip netns exec "$ns" nft "delete table inet $PARTITION_TABLE" 2>/dev/null; then echo "$ns"; fi
	done
}

# nat: the public segment (switch 0), with the root namespace's admin port on it.
make_public_segment() {
	make_switch 0
	ip link add "$ADMIN_IF" type veth peer name admin netns "$(switch_ns 0)"
	ip -n "$(switch_ns 0)" link set admin master br0 up
	ip addr add "$PUBLIC_ADMIN_ADDR/24" dev "$ADMIN_IF"
	ip link set "$ADMIN_IF" up
}

nat_type_of() {
	local spec type=eim
	for spec in "${NAT_SPECS[@]}"; do
		case $spec in
		"s$1="*) type=${spec#*=} ;;
		*=*) ;;
		*) type=$spec ;;
		esac
	done
	echo "$type"
}

# nat: LAN S behind gateway bt-gwS (masquerade), plus an admin link from the root namespace.
make_nat_subnet() {
	local s=$1 gw sw mode="" forward=""
	gw=$(gateway_ns "$s")
	sw=$(switch_ns "$s")
	make_switch "$s"
	make_ns "$gw"
	ip netns exec "$gw" sh -c 'echo 1 >/proc/sys/net/ipv4/ip_forward'
	ip link add lan netns "$gw" type veth peer name rt netns "$sw"
	ip -n "$sw" link set rt master br0 up
	ip -n "$gw" addr add "$(router_addr "$s")/24" dev lan
	ip -n "$gw" link set lan up
	ip link add wan netns "$gw" type veth peer name "gw$s" netns "$(switch_ns 0)"
	ip -n "$(switch_ns 0)" link set "gw$s" master br0 up
	ip -n "$gw" addr add "$(gateway_wan_addr "$s")/24" dev wan
	ip -n "$gw" link set wan up
	ip link add "${PREFIX}adm$s" type veth peer name admin netns "$gw"
	ip addr add "10.255.$s.1/30" dev "${PREFIX}adm$s"
	ip link set "${PREFIX}adm$s" up
	ip -n "$gw" addr add "10.255.$s.2/30" dev admin
	ip -n "$gw" link set admin up
	ip route replace "10.$s.0.0/24" via "10.255.$s.2" dev "${PREFIX}adm$s"
	if [[ $(nat_type_of "$s") == symmetric ]]; then mode=" random"; fi
	if [[ " ${FORWARDS[*]} " == *" s$s "* ]]; then
		forward="iifname \"wan\" udp dport $QUIC_PORT dnat to $(host_addr "$s" 1):$QUIC_PORT"
	fi
	# A home router: anything out, only replies (and the forwarded port) in; unsolicited
	# datagrams to the router itself are dropped too (like OpenWrt's wan zone), so they leave no
	# conntrack entry that would make the masquerade pick another port for a later flow.
	ip netns exec "$gw" nft -f - <<EOF
table ip bt_nat {
	chain pre {
		type nat hook prerouting priority dstnat; policy accept;
		$forward
	}
	chain post {
		type nat hook postrouting priority srcnat; policy accept;
		oifname "wan" masquerade$mode
	}
	chain gate {
		type filter hook forward priority filter; policy drop;
		iifname "admin" ip saddr 10.255.$s.1 accept
		oifname "admin" ip daddr 10.255.$s.1 accept
		iifname "lan" oifname "wan" accept
		iifname "wan" oifname "lan" ct state established,related accept
		iifname "wan" oifname "lan" ct status dnat accept
	}
	chain input {
		type filter hook input priority filter; policy accept;
		iifname "wan" ct state established,related accept
		iifname "wan" drop
	}
}
EOF
}

build_topology() {
	local s h
	if [[ $TOPOLOGY == nat ]]; then
		make_public_segment
		for ((s = 1; s <= SUBNETS; s++)); do make_nat_subnet "$s"; done
	else
		make_router
		for ((s = 1; s <= SUBNETS; s++)); do make_subnet "$s"; done
	fi
	while read -r s h; do make_host "$s" "$h"; done < <(all_hosts)
	apply_link_conditions
}

topology_intact() {
	local s h
	if [[ $TOPOLOGY == nat ]]; then
		for ((s = 1; s <= SUBNETS; s++)); do
			ip netns pids "$(gateway_ns "$s")" >/dev/null 2>&1 || return 1
		done
	else
		ip netns pids "$ROUTER" >/dev/null 2>&1 || return 1
	fi
	ip link show "$ADMIN_IF" >/dev/null 2>&1 || return 1
	while read -r s h; do
		ip netns pids "$(host_ns "$s" "$h")" >/dev/null 2>&1 || return 1
	done < <(all_hosts)
}

# --- nodes --------------------------------------------------------------------------------------

resolve_bin() {
	if [[ -z $BIN ]]; then
		if [[ -x $REPO_DIR/target/release/butter-node ]]; then
			BIN=$REPO_DIR/target/release/butter-node
		else
			BIN=$REPO_DIR/target/debug/butter-node
		fi
	fi
	[[ -x $BIN ]] || die "butter-node binary not found at $BIN (cargo build -p butter-node, or --bin PATH)"
	BIN=$(realpath "$BIN")
}

# The site label of subnet S: its --site-name, else sS.
site_name() {
	local spec
	for spec in "${SITE_NAMES[@]}"; do
		if [[ $spec == "s$1="* ]]; then
			echo "${spec#*=}"
			return
		fi
	done
	echo "s$1"
}

bootstrap_of() {
	local s=$1 h=$2 o peers=()
	case $BOOTSTRAP in
	none) ;;
	one-per-subnet)
		if ((h == 1 && SUBNETS > 1)); then
			peers+=("$(host_addr $((s % SUBNETS + 1)) 1):$QUIC_PORT")
		fi
		;;
	all)
		for ((o = 1; o <= SUBNETS; o++)); do
			((o == s)) || peers+=("$(host_addr "$o" 1):$QUIC_PORT")
		done
		;;
	gateways)
		if ((h == 1)); then
			for ((o = 1; o <= SUBNETS; o++)); do
				((o == s)) || peers+=("$(host_addr "$o" 1):$QUIC_PORT")
			done
		else
			peers+=("$(host_addr "$s" 1):$QUIC_PORT")
		fi
		;;
	public)
		if ((s > 0)); then peers+=("$(host_addr 0 1):$QUIC_PORT"); fi
		;;
	esac
	local IFS=,
	echo "${peers[*]}"
}

node_pid() {
	local pidfile=$RUN_DIR/$1/pid pid
	[[ -f $pidfile ]] || return 1
	pid=$(<"$pidfile")
	# Alive, and still inside the namespace we started it in (pids get reused).
	kill -0 "$pid" 2>/dev/null || return 1
	ip netns identify "$pid" 2>/dev/null | grep -qx "$1" || return 1
	echo "$pid"
}

# Runs inside the host: wait for the barrier, then become the node (argv: barrier, node command).
# shellcheck disable=SC2016 # expanded by the inner sh
readonly BARRIER_WRAPPER='flock -s "$0" true; exec "$@"'

# Launch one node, blocked on the start barrier (a shared flock on a file `up` holds exclusively).
launch_node() {
	local s=$1 h=$2 barrier=$3 ns addr dir role=()
	ns=$(host_ns "$s" "$h")
	if [[ $GATEWAYS == yes ]] && ((s > 0 && h == 1)); then
		role=(BUTTER_CONFIG="$REPO_DIR/compose/node/gateway.toml")
	fi
	addr=$(host_addr "$s" "$h")
	dir=$RUN_DIR/$ns
	mkdir -p "$dir/data"
	# `ip netns exec`, env and sh all exec, so $! is the node's own pid. fd 9 (the barrier's
	# exclusive lock) and fd 8 (the lab lock) must not be inherited, or the node would hold the
	# lock it waits for, and every later lab command would wait for the node.
	ip netns exec "$ns" env \
		NO_COLOR=1 \
		BUTTER_LISTEN="$addr:$QUIC_PORT" \
		BUTTER_HTTP="$addr:$HTTP_PORT" \
		BUTTER_DATA_DIR="$dir/data" \
		BUTTER_SITE="$(site_name "$s")" \
		BUTTER_BOOTSTRAP="$(bootstrap_of "$s" "$h")" \
		"${role[@]}" \
		sh -c "$BARRIER_WRAPPER" "$barrier" "$BIN" run "${NODE_ARGS[@]}" \
		>"$dir/node.log" 2>&1 </dev/null 8>&- 9>&- &
	echo $! >"$dir/pid"
}

# Start the given hosts ("s h" lines on stdin) that are not running, all at one instant.
# With WIPE=yes their run dirs (data, log) start empty; otherwise a node keeps its identity.
WIPE=no
start_nodes() {
	local s h ns barrier=$RUN_DIR/.start-barrier started=()
	resolve_bin
	: >"$barrier"
	exec 9>"$barrier"
	flock -x 9
	while read -r s h; do
		ns=$(host_ns "$s" "$h")
		node_pid "$ns" >/dev/null && continue
		if [[ $WIPE == yes ]]; then rm -rf "${RUN_DIR:?}/$ns"; fi
		launch_node "$s" "$h" "$barrier"
		started+=("$ns")
	done
	date +%s%3N >"$RUN_DIR/started_at_ms"
	flock -u 9
	exec 9>&-
	((${#started[@]})) || return 0
	log "started ${#started[@]} node(s) with $BIN"
	((WAIT_SECS > 0)) && wait_healthy "${started[@]}"
	return 0
}

http_get() {
	# ns path: GET http://<host addr>:7100<path> from inside the host namespace.
	local ns=$1 path=$2 sh
	sh=$(resolve_host "$ns")
	# shellcheck disable=SC2086 # "s h" splits on purpose
	ip netns exec "$(host_ns $sh)" curl -sf --max-time 2 "http://$(host_addr $sh):$HTTP_PORT$path"
}

wait_healthy() {
	local deadline=$((SECONDS + WAIT_SECS)) ns pending=("$@") left
	while ((${#pending[@]})); do
		left=()
		for ns in "${pending[@]}"; do
			node_pid "$ns" >/dev/null || die "node $ns exited; see $RUN_DIR/$ns/node.log"
			http_get "$ns" /health >/dev/null 2>&1 || left+=("$ns")
		done
		pending=("${left[@]}")
		((${#pending[@]})) || break
		((SECONDS < deadline)) || die "no /health within ${WAIT_SECS}s from: ${pending[*]}"
		sleep 0.2
	done
	log "all nodes healthy"
}

signal_node() {
	local ns=$1 sig=$2 pid
	pid=$(node_pid "$ns") || return 0
	kill "-$sig" "$pid" 2>/dev/null || true
}

stop_nodes() {
	local s h ns pid deadline pids=()
	while read -r s h; do
		ns=$(host_ns "$s" "$h")
		pid=$(node_pid "$ns") || continue
		kill -TERM "$pid" 2>/dev/null || true
		pids+=("$pid")
	done
	deadline=$((SECONDS + 5))
	for pid in "${pids[@]}"; do
		while kill -0 "$pid" 2>/dev/null && ((SECONDS < deadline)); do sleep 0.1; done
		kill -KILL "$pid" 2>/dev/null || true
	done
}

# The kernel's IPv4 neighbour (ARP) table is one table for the whole machine: every namespace's
# entries count against net.ipv4.neigh.default.gc_thresh3 (1024 by default), and past it the
# kernel refuses to resolve new neighbours ("neighbor table overflow!" in dmesg) and drops the
# datagrams: on one bridge of 40 nodes, 33 filled the table talking to each other and the last 7
# could reach nobody. Each host may resolve every host of its subnet, so the lab needs about
# (subnets + 1) x hosts x (hosts + 2) entries; raise the limits (never lower them) to fit.
ensure_neighbour_capacity() {
	local need dir=/proc/sys/net/ipv4/neigh/default t2 t3
	need=$(((SUBNETS + 1) * HOSTS * (HOSTS + 2) + 1024))
	[[ -w $dir/gc_thresh3 ]] || return 0
	t2=$(<"$dir/gc_thresh2") t3=$(<"$dir/gc_thresh3")
	if ((t3 >= 2 * need && t2 >= need)); then return 0; fi
	log "raising the machine's neighbour table limits for $SUBNETS x $HOSTS hosts:" \
		"gc_thresh2 $t2 -> $((t2 > need ? t2 : need)), gc_thresh3 $t3 -> $((t3 > 2 * need ? t3 : 2 * need))" \
		"(net.ipv4.neigh.default; shared by every namespace)"
	((t2 >= need)) || echo "$need" >"$dir/gc_thresh2"
	((t3 >= 2 * need)) || echo "$((2 * need))" >"$dir/gc_thresh3"
}

# --- commands -----------------------------------------------------------------------------------

teardown() {
	local ns pids
	for ns in $(lab_namespaces); do
		# Processes keep a namespace alive after `ip netns del`: end them first.
		pids=$(ip netns pids "$ns" 2>/dev/null || true)
		if [[ -n $pids ]]; then
			# shellcheck disable=SC2086 # one pid per word
			kill -TERM $pids 2>/dev/null || true
		fi
	done
	local deadline=$((SECONDS + 3))
	for ns in $(lab_namespaces); do
		while [[ -n $(ip netns pids "$ns" 2>/dev/null) ]] && ((SECONDS < deadline)); do sleep 0.1; done
		pids=$(ip netns pids "$ns" 2>/dev/null || true)
		# shellcheck disable=SC2086
		[[ -z $pids ]] || kill -KILL $pids 2>/dev/null || true
		ip netns del "$ns" 2>/dev/null || true
	done
	# Namespaces are destroyed asynchronously: delete the root ends of admin links now, so a
	# following `up` does not race the kernel for their names. Their routes go with them.
	local link
	for link in $(ip -o link show | awk -F': ' '{sub(/@.*/, "", $2); print $2}' | grep "^${PREFIX}" || true); do
		ip link del "$link" 2>/dev/null || true
	done
	rm -f "$RUN_DIR/lab.env" "$RUN_DIR/started_at_ms" "$RUN_DIR/.start-barrier"
}

validate_topology() {
	local public_set=$1 spec
	[[ $TOPOLOGY =~ ^(routed|nat)$ ]] || die "--topology must be routed or nat"
	is_uint "$PUBLIC" 0 "$MAX_HOSTS" || die "--public must be 0..$MAX_HOSTS"
	if [[ $TOPOLOGY == routed ]]; then
		[[ $BOOTSTRAP =~ ^(none|one-per-subnet|all|gateways)$ ]] || die "--bootstrap must be none, one-per-subnet, all or gateways"
		[[ $BOOTSTRAP != gateways || $GATEWAYS == yes ]] || die "--bootstrap gateways needs --gateways"
		((PUBLIC == 0 && ${#NAT_SPECS[@]} == 0 && ${#FORWARDS[@]} == 0)) ||
			die "--public, --nat and --forward need --topology nat"
		return 0
	fi
	[[ -n $public_set ]] || PUBLIC=1
	((SUBNETS <= MAX_NAT_SUBNETS)) || die "--topology nat takes at most $MAX_NAT_SUBNETS subnets"
	# Private addresses are not routable from another LAN: bootstrap through the public segment.
	[[ $BOOTSTRAP =~ ^(none|public)$ ]] || die "with --topology nat, --bootstrap must be none or public"
	[[ $BOOTSTRAP == none ]] || ((PUBLIC > 0)) || die "--bootstrap public needs --public 1 or more"
	for spec in "${NAT_SPECS[@]}"; do
		[[ $spec =~ ^((s[0-9]+)=)?(eim|symmetric)$ ]] || die "--nat takes [sN=]eim|symmetric: $spec"
		[[ -z ${BASH_REMATCH[2]} ]] || spec_hosts "${BASH_REMATCH[2]}" >/dev/null
	done
	for spec in "${FORWARDS[@]}"; do
		[[ $spec =~ ^s([0-9]+)$ ]] || die "--forward takes a LAN subnet sN: $spec"
		is_uint "${BASH_REMATCH[1]}" 1 "$SUBNETS" || die "--forward: no LAN $spec"
	done
}

cmd_up() {
	local public_set=""
	while (($#)); do
		case $1 in
		--subnets) SUBNETS=${2:?}; shift 2 ;;
		--hosts) HOSTS=${2:?}; shift 2 ;;
		--bootstrap) BOOTSTRAP=${2:?}; shift 2 ;;
		--topology) TOPOLOGY=${2:?}; shift 2 ;;
		--public) PUBLIC=${2:?}; public_set=yes; shift 2 ;;
		--nat) NAT_SPECS+=("${2:?}"); shift 2 ;;
		--forward) FORWARDS+=("${2:?}"); shift 2 ;;
		--gateways) GATEWAYS=yes; shift ;;
		--site-name) SITE_NAMES+=("${2:?}"); shift 2 ;;
		--loss) LOSS_SPECS+=("${2:?}"); shift 2 ;;
		--rate) RATE_SPECS+=("${2:?}"); shift 2 ;;
		--delay) DELAY_SPECS+=("${2:?}"); shift 2 ;;
		--bin) BIN=${2:?}; shift 2 ;;
		--no-start) START=no; shift ;;
		--wait) WAIT_SECS=${2:?}; shift 2 ;;
		--) shift; NODE_ARGS=("$@"); break ;;
		-h | --help) usage; exit 0 ;;
		*) die "unknown option to up: $1 (see --help)" ;;
		esac
	done
	is_uint "$SUBNETS" 1 "$MAX_SUBNETS" || die "--subnets must be 1..$MAX_SUBNETS"
	is_uint "$HOSTS" 1 "$MAX_HOSTS" || die "--hosts must be 1..$MAX_HOSTS"
	validate_topology "$public_set"
	is_uint "$WAIT_SECS" 0 3600 || die "--wait takes whole seconds"
	validate_specs
	if [[ $START == yes ]]; then resolve_bin; fi

	local want have=
	want=$(config_fingerprint)
	if [[ -f $RUN_DIR/lab.env ]]; then
		have=$(
			load_config
			config_fingerprint
		)
	fi
	if [[ $want == "$have" ]] && topology_intact; then
		log "lab already up ($SUBNETS subnet(s) x $HOSTS host(s))"
	else
		teardown # whatever a crashed or different lab left
		# A failed build leaves nothing behind.
		trap 'log "up failed; cleaning up"; teardown' EXIT
		build_topology
		save_config
		trap - EXIT
		WIPE=yes
		log "built $TOPOLOGY: $SUBNETS subnet(s) x $HOSTS host(s), $PUBLIC public, bootstrap $BOOTSTRAP"
	fi
	ensure_neighbour_capacity
	if [[ $START == yes ]]; then start_nodes < <(all_hosts); fi
}

cmd_status() {
	load_config
	local s h ns addr pid alive ready peers prefix total split
	printf '%-12s %-15s %-8s %-6s %-6s %-6s %s\n' NAMESPACE ADDRESS PID ALIVE READY PEERS "SAME/OTHER SUBNET"
	while read -r s h; do
		ns=$(host_ns "$s" "$h")
		addr=$(host_addr "$s" "$h")
		prefix=${addr%.*}.
		pid=- alive=no ready=- peers="- -"
		if pid=$(node_pid "$ns"); then
			alive=yes
			if http_get "$ns" /ready >/dev/null 2>&1; then ready=yes; else ready=no; fi
			# "total same/other": peers by whether their first address is in this host's subnet.
			peers=$(http_get "$ns" /peers 2>/dev/null | jq -r --arg p "$prefix" \
				'[.[] | (.addrs[0] // "") | startswith($p)] | "\(length) \(map(select(.)) | length)/\(map(select(not)) | length)"' \
				2>/dev/null) || peers="? ?"
		else
			pid=-
		fi
		read -r total split <<<"$peers"
		printf '%-12s %-15s %-8s %-6s %-6s %-6s %s\n' "$ns" "$addr" "$pid" "$alive" "$ready" "$total" "$split"
	done < <(all_hosts)
}

cmd_hosts() {
	load_config
	local s h addr
	while read -r s h; do
		addr=$(host_addr "$s" "$h")
		echo "$(host_ns "$s" "$h") $addr s$s http://$addr:$HTTP_PORT"
	done < <(all_hosts)
}

# Takes "--wait SECS" out of the arguments (into WAIT_SECS); the rest are left in ARGS.
ARGS=()
parse_wait() {
	ARGS=()
	while (($#)); do
		case $1 in
		--wait) WAIT_SECS=${2:?}; shift 2 ;;
		*) ARGS+=("$1"); shift ;;
		esac
	done
	is_uint "$WAIT_SECS" 0 3600 || die "--wait takes whole seconds"
}

# The named hosts as "s h" lines, or every host when none is named.
hosts_or_all() {
	local n
	if (($#)); then
		for n in "$@"; do resolve_host "$n"; done
	else
		all_hosts
	fi
}

main() {
	local cmd targets s h
	while (($#)); do
		case $1 in
		--run-dir) RUN_DIR=${2:?}; shift 2 ;;
		-h | --help | help) usage; exit 0 ;;
		*) break ;;
		esac
	done
	(($#)) || {
		usage >&2
		exit 2
	}
	cmd=$1
	shift
	RUN_DIR=$(realpath -m "$RUN_DIR")
	need_root "$cmd"
	need_tools
	mkdir -p "$RUN_DIR"
	# One lab command at a time (the lab is machine-wide state).
	exec 8>"$RUN_DIR/.lab.lock"
	flock 8
	case $cmd in
	up) cmd_up "$@" ;;
	down) teardown; log "down" ;;
	status) cmd_status ;;
	hosts) cmd_hosts ;;
	exec)
		load_config
		(($# >= 2)) || die "usage: exec HOST CMD..."
		local sh
		sh=$(resolve_host "$1")
		shift
		# shellcheck disable=SC2086
		exec 8>&- && exec ip netns exec "$(host_ns $sh)" "$@"
		;;
	start)
		load_config
		parse_wait "$@"
		set -- "${ARGS[@]}"
		targets=$(hosts_or_all "$@")
		start_nodes <<<"$targets"
		;;
	stop)
		load_config
		targets=$(hosts_or_all "$@")
		stop_nodes <<<"$targets"
		;;
	kill)
		load_config
		(($# >= 1)) || die "usage: kill HOST [SIGNAL]"
		local sh
		sh=$(resolve_host "$1")
		# shellcheck disable=SC2086
		signal_node "$(host_ns $sh)" "${2:-KILL}"
		;;
	restart)
		load_config
		parse_wait "$@"
		((${#ARGS[@]} == 0)) || die "usage: restart [--wait SECS]"
		stop_nodes < <(all_hosts)
		WIPE=yes start_nodes < <(all_hosts)
		;;
	loss)
		load_config
		(($# == 2)) || die "usage: loss HOST|sN|all PCT"
		is_uint "$2" 0 100 || die "loss takes a percentage: $2"
		targets=$(spec_hosts "$1")
		while read -r s h; do set_loss "$s" "$h" "$2"; done <<<"$targets"
		;;
	partition)
		load_config
		[[ $# -eq 1 && $1 =~ ^s([0-9]+)$ ]] || die "usage: partition sN"
		s=${BASH_REMATCH[1]}
		is_uint "$s" 1 "$SUBNETS" || die "no LAN subnet $1 (s1..s$SUBNETS)"
		partition_subnet "$s"
		;;
	unpartition)
		load_config
		unpartition_all
		;;
	dropped)
		load_config
		(($# == 1)) || die "usage: dropped HOST"
		# shellcheck disable=SC2046 # "s h"
		dropped_on $(resolve_host "$1")
		;;
	traffic)
		load_config
		[[ $# -eq 1 && $1 =~ ^s([0-9]+)$ ]] || die "usage: traffic sN"
		s=${BASH_REMATCH[1]}
		is_uint "$s" 0 "$SUBNETS" || die "no subnet $1"
		traffic_count "$s"
		;;
	peers)
		load_config
		(($# == 1)) || die "usage: peers HOST"
		http_get "$1" /peers
		;;
	*) die "unknown command: $cmd (see --help)" ;;
	esac
}

main "$@"
