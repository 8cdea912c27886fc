#!/usr/bin/env bash
# Instructions per 64 B request and per MiB of bulk, counted by callgrind (repeatable on a noisy
# machine, unlike time): each figure is (a run doing N units − the same run doing 0) / N.
set -euo pipefail

usage() {
    cat <<'EOF'
usage: callgrind.sh BENCH_BINARY [--raw] [--keep] [--requests N] [--mib M] [--out DIR]

  BENCH_BINARY   the transport bench, e.g. from
                 cargo bench -p butter --bench transport --no-run  (prints its path)
  --raw          count bare quinn set up as qbench does, not Butter
  --keep         with --raw: gather each reply into one buffer, as Butter returns it
  --requests N   64 B requests, 32 in flight (default 5000; 0 skips)
  --mib M        one bulk item of M MiB (default 64; 0 skips)
  --out DIR      where the callgrind.out files go, for callgrind_annotate (default a temp dir)

Prints instructions per request and per MiB. Runs are single-threaded under valgrind and take
about a minute each; the counts still vary by about ±3 % between runs (thread interleaving
changes how requests share packets), so compare medians of a few.
EOF
}

[[ $# -ge 1 && $1 != -h && $1 != --help ]] || { usage; exit 0; }
bin=$1
shift
extra=()
requests=5000
mib=64
out=""
while [[ $# -gt 0 ]]; do
    case $1 in
        --raw | --keep) extra+=("$1"); shift ;;
        --requests) requests=$2; shift 2 ;;
        --mib) mib=$2; shift 2 ;;
        --out) out=$2; shift 2 ;;
        -h | --help) usage; exit 0 ;;
        *) echo "unknown argument $1" >&2; usage >&2; exit 2 ;;
    esac
done
command -v valgrind >/dev/null || { echo "valgrind is not installed" >&2; exit 2; }
[[ -x $bin ]] || { echo "$bin is not an executable bench binary" >&2; exit 2; }
if [[ -z $out ]]; then
    out=$(mktemp -d)
    trap 'rm -rf "$out"' EXIT
fi
mkdir -p "$out"

# Total instructions of one run: `count NAME ARGS...`.
count() {
    local name=$1
    shift
    valgrind --tool=callgrind --callgrind-out-file="$out/$name.out" "$bin" "$@" "${extra[@]}" 2>&1 \
        | sed -n 's/.*Collected : \([0-9]*\).*/\1/p'
}

if [[ $requests -gt 0 ]]; then
    base=$(count rate-0 --only rate --requests 0)
    run=$(count "rate-$requests" --only rate --requests "$requests")
    echo "64 B request, 32 in flight: $(((run - base) / requests)) instructions per request (both ends)"
fi
if [[ $mib -gt 0 ]]; then
    # The server fills an M MiB reply buffer before the transfer: count that fill in the
    # baseline run too, so only the transfer is left.
    base=$(count bulk-0 --only bulk --bulk-mib 0 --fill-mib "$mib")
    run=$(count "bulk-$mib" --only bulk --bulk-mib "$mib")
    echo "bulk, one ${mib} MiB item: $(((run - base) / mib)) instructions per MiB (both ends)"
fi
