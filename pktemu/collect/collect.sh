#!/bin/sh
# pktemu collect: save what a Linux (Kubernetes) node's network looks like, for `pktemu import`.
# Runs as root on the node with only what a node has (POSIX sh, ip, and whatever of bridge,
# sysctl, iptables-save, nft, conntrack, ipset, curl is installed). Every command's output, error
# output and exit status is kept; a command that is missing or fails is recorded, never fatal.
#
#   sh collect.sh [--out FILE.tar.gz]      (default: ./pktemu-collect-HOSTNAME.tar.gz)
#
# The archive holds one folder, pktemu-collect/, with one file per command (FILE, FILE.err) and
# commands.tsv: name, exit status (127: not installed), the command line. It contains this node's
# addresses, routes, neighbours, MAC addresses, firewall rules and live connections (conntrack):
# look before sharing it.
set -u
umask 077
out=""
while [ $# -gt 0 ]; do
  case "$1" in
    --out) [ $# -ge 2 ] || { echo "collect: --out needs a file name" >&2; exit 2; }; out="$2"; shift 2 ;;
    --out=*) out="${1#--out=}"; shift ;;
    -h|--help) sed -n '2,13p' "$0" 2>/dev/null | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "collect: unknown argument: $1 (expected --out FILE.tar.gz)" >&2; exit 2 ;;
  esac
done
host=$(cat /proc/sys/kernel/hostname 2>/dev/null || hostname 2>/dev/null || echo node)
[ -n "$out" ] || out="./pktemu-collect-$host.tar.gz"
case "$out" in *.tar.gz|*.tgz) ;; *) echo "collect: --out must end in .tar.gz or .tgz: $out" >&2; exit 2 ;; esac
outdir=$(dirname -- "$out")
[ -d "$outdir" ] && [ -w "$outdir" ] || { echo "collect: cannot write to folder $outdir" >&2; exit 2; }

work=$(mktemp -d "${TMPDIR:-/tmp}/pktemu-collect.XXXXXX") || { echo "collect: mktemp failed" >&2; exit 1; }
trap 'rm -rf "$work"; rm -f "$out.part.$$"' EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
d="$work/pktemu-collect"
mkdir "$d"
printf 'name\tstatus\tcommand\n' > "$d/commands.tsv"

# run NAME CMD...: stdout to NAME, stderr to NAME.err, the status to commands.tsv
run() {
  name=$1; shift
  if command -v "$1" >/dev/null 2>&1; then
    "$@" > "$d/$name" 2> "$d/$name.err"
    status=$?
  else
    : > "$d/$name"
    echo "$1: not installed" > "$d/$name.err"
    status=127
  fi
  [ -s "$d/$name.err" ] || rm -f "$d/$name.err"
  printf '%s\t%s\t%s\n' "$name" "$status" "$*" >> "$d/commands.tsv"
}

printf 'format\tpktemu-collect 1\nhostname\t%s\n' "$host" > "$d/meta.tsv"
run uname uname -a
run ip-link.json ip -j -d link show
run ip-addr.json ip -j -d addr show
run ip-route.json ip -j -d route show table all
run ip-rule.json ip -j rule show
run ip-neigh.json ip -j neigh show
run bridge-fdb.json bridge -j fdb show
run bridge-link.json bridge -j -d link show
run bridge-vlan.json bridge -j vlan show
# the sysctls routing, filtering and conntrack depend on (one `key = value` a line)
run sysctl.txt sh -c 'sysctl -a 2>/dev/null | grep -E "^net\.ipv4\.(ip_forward|ip_local_port_range|tcp_syn_retries|tcp_retries2|conf\.[^.]+\.(rp_filter|route_localnet|forwarding|proxy_arp|accept_local|arp_ignore|arp_announce|arp_filter|send_redirects|accept_redirects)|neigh\.[^.]+\.proxy_delay)|^net\.bridge\.bridge-nf-call|^net\.netfilter\.nf_conntrack_(max|tcp_loose|udp_timeout|tcp_timeout_established)"'
run iptables-save.txt iptables-save -c
run iptables-legacy-save.txt iptables-legacy-save -c
run iptables-nft-save.txt iptables-nft-save -c
run ip6tables-save.txt ip6tables-save -c
run nft-ruleset.txt nft list ruleset
run nft-ruleset.json nft -j list ruleset
run ipset-save.txt ipset save
run conntrack.txt conntrack -L -o extended
run kube-proxy-mode.txt curl -s --max-time 2 http://127.0.0.1:10249/proxyMode
for f in /var/lib/kube-proxy/config.conf /etc/kubernetes/kube-proxy.conf; do
  [ -r "$f" ] && run "kube-proxy-config-$(basename "$f")" cat "$f"
done

tar -czf "$out.part.$$" -C "$work" pktemu-collect || { echo "collect: tar failed" >&2; exit 1; }
mv -f "$out.part.$$" "$out" || { echo "collect: cannot write $out" >&2; exit 1; }
echo "collect: wrote $out ($(awk -F'\t' 'NR>1 && $2!=0' "$d/commands.tsv" | wc -l | tr -d ' ') of $(($(wc -l < "$d/commands.tsv") - 1)) commands failed or missing; see commands.tsv)" >&2
