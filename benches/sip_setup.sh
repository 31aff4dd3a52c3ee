#!/usr/bin/env bash
# Call setups per second through xccd (SIP B2BUA + media port allocation), SIPp at rising rates,
# against a reference from the same run: SIPp UAC straight to SIPp UAS without XCC.
#
# Each step places RATE calls/s for STEP_SECS seconds (server -> XCC -> PBX, HOLD_MS hold,
# default 100 ms, then BYE); a step passes when no call failed. Port quarantine is off
# (`quarantine_secs = 0`): the 600-port pool (150 calls) would otherwise be the limit
# (5 s quarantine * rate), not setup. Loopback only: SIP, SIPp and control ports 21300-21399,
# the media pool 28000-28599 (outside every test range: the e2e tests use 21400-21999), every SIPp run bounded by -timeout. Prints one line per step and the highest passing rate for
# each path. KEEP=1 keeps the run's files (SIPp errors name each failed call's response).
#
#   benches/sip_setup.sh [XCCD]          (default: target/release/xccd, else target/debug/xccd)
#   RATES="50 100 200" STEP_SECS=5 benches/sip_setup.sh
#   POOL_MIN=28000 POOL_MAX=28599 STATE_DIR=/dev/shm/x ...   (media pool; call store location)
set -euo pipefail

here=$(cd "$(dirname "$0")/.." && pwd)
target=${CARGO_TARGET_DIR:-$here/target}
xccd=${1:-}
if [[ -z $xccd ]]; then
    if [[ -x $target/release/xccd ]]; then xccd=$target/release/xccd; else xccd=$target/debug/xccd; fi
fi
[[ -x $xccd ]] || { echo "no xccd at $xccd (cargo build --release --bin xccd)" >&2; exit 2; }
command -v sipp >/dev/null || { echo "sipp missing (apt-get install -y sip-tester)" >&2; exit 2; }

RATES=${RATES:-"50 100 200 400 800"}
STEP_SECS=${STEP_SECS:-5}
HOLD_MS=${HOLD_MS:-100}
ip=127.0.0.1
xcc_server=21300 xcc_trunk=21301 sipp_server=21302 sipp_pbx=21303 cp_server=21304 cp_pbx=21305
control=21350 pool_min=${POOL_MIN:-28000} pool_max=${POOL_MAX:-28599}

work=$(mktemp -d /tmp/xcc-sip-bench.XXXXXX)
xpid=
cleanup() {
    if [[ -n $xpid ]]; then kill "$xpid" 2>/dev/null || true; wait "$xpid" 2>/dev/null || true; fi
    if [[ -n ${KEEP:-} ]]; then echo "files kept in $work" >&2; else rm -rf "$work"; fi
}
trap cleanup EXIT

cat > "$work/xcc.toml" <<TOML
[media]
bind_address = "$ip"
port_min = $pool_min
port_max = $pool_max
quarantine_secs = 0

[control]
listen = "$ip:$control"

[nat]
public_address = "$ip"
pbx_address = "$ip"

[log]
level = "warn"

[state]
dir = "${STATE_DIR:-$work/state}"

[sip]
server_listen = "$ip:$xcc_server"
trunk_listen = "$ip:$xcc_trunk"
server_target = "$ip:$sipp_server"
server_transport = "udp"
pbx_target = "$ip:$sipp_pbx"
pbx_transport = "udp"
options_interval_secs = 0
TOML

key=$(head -c 30 /dev/urandom | base64)
scen=$here/tests/sipp

# run_step NAME UAC_TARGET RATE -> prints "successful failed"
run_step() {
    local name=$1 target=$2 rate=$3
    local calls=$((rate * STEP_SECS)) dir=$work/$name-$rate
    mkdir -p "$dir"
    (cd "$dir" && timeout $((STEP_SECS + 40)) sipp -sf "$scen/bench_pbx_uas.xml" -i $ip -p $sipp_pbx \
        -mi $ip -mp 21330 -cp $cp_pbx -m "$calls" -timeout $((STEP_SECS + 30))s -timeout_error \
        -nostdin -trace_stat -stf "$dir/uas.csv" -fd 1 -max_socket 4096 >/dev/null 2>"$dir/uas.err") &
    local uas=$!
    sleep 0.3  # let the UAS bind before the first INVITE; UDP retransmission covers a miss anyway
    (cd "$dir" && timeout $((STEP_SECS + 40)) sipp "$target" -sf "$scen/server_uac.xml" -i $ip \
        -p $sipp_server -mi $ip -mp 21310 -cp $cp_server -m "$calls" -r "$rate" -d "$HOLD_MS" \
        -l $((rate * 2 + 50)) -timeout $((STEP_SECS + 30))s -timeout_error -nostdin \
        -key phone_port 21360 -key phone_key "$key" -trace_stat -stf "$dir/uac.csv" -fd 1 \
        -trace_err -error_file "$dir/uac-errors.log" \
        >/dev/null 2>"$dir/uac.err") || true
    wait "$uas" || true
    awk -F';' 'NR==1{for(i=1;i<=NF;i++)h[$i]=i} END{print $h["SuccessfulCall(C)"]+0, $h["FailedCall(C)"]+0}' "$dir/uac.csv"
}

NOTIFY_SOCKET= "$xccd" --config "$work/xcc.toml" 2>"$work/xccd.log" &
xpid=$!
# This xccd's listener (pid-matched: a previous run's xccd may still be draining on the port).
bound() { ss -lunp | grep "$ip:$xcc_server " | grep -q "pid=$xpid,"; }
for _ in $(seq 100); do
    bound && break
    kill -0 "$xpid" 2>/dev/null || break
    sleep 0.1
done
bound || { echo "xccd did not bind SIP" >&2; cat "$work/xccd.log" >&2; exit 1; }

best_ref=0 best_xcc=0
for rate in $RATES; do
    read -r ok_ref fail_ref < <(run_step ref "$ip:$sipp_pbx" "$rate")
    read -r ok_xcc fail_xcc < <(run_step xcc "$ip:$xcc_server" "$rate")
    want=$((rate * STEP_SECS))
    printf 'rate %5d/s  reference %5d ok %4d failed   xcc %5d ok %4d failed  (of %d)\n' \
        "$rate" "$ok_ref" "$fail_ref" "$ok_xcc" "$fail_xcc" "$want"
    # SIPp's last statistics row sometimes misses the final call (dumped before it completes):
    # a step passes on 0 failed calls, as the question is "highest rate with 0 failed".
    [[ $fail_ref -eq 0 && $ok_ref -gt 0 ]] && best_ref=$rate
    [[ $fail_xcc -eq 0 && $ok_xcc -gt 0 ]] && best_xcc=$rate
done
echo "highest rate with 0 failed calls: reference ${best_ref}/s, through xccd ${best_xcc}/s ($xccd)"
