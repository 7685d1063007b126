#!/usr/bin/env bash
# Acceptance check of the Hailo backend on a Raspberry Pi 5 with the AI Kit or AI HAT+.
#
# It checks what the test double cannot. These are the driver and device, that
# pokedge opens the HEF on the device, parity with the ONNX model on real card
# crops, and embedding latency. It also runs two processes that share the
# device through the HailoRT multi-process service. It prints one line per
# check and a verdict. The exit status is 0 only when every required check passed.
#
# Usage: scripts/pi_acceptance.sh --samples DIR [--model CONTRACT] [--hef CONTRACT]
#                                 [--frames N] [--python PYTHON]
#   --samples DIR     folder of card crop images for the parity check (required)
#   --model CONTRACT  ONNX model contract (default: pokedge's active or shipped model)
#   --hef CONTRACT    HEF model contract (default: the HEF contract beside the ONNX model)
#   --frames N        frames timed for latency (default 200)
#   --python PYTHON   interpreter with pokedge installed (default python3)

set -u
set -o pipefail

samples=""
model=""
hef=""
frames=200
python_bin="python3"

usage() {
    sed -n '2,20p' "$0" | sed 's/^# \{0,1\}//'
}

while [ $# -gt 0 ]; do
    case "$1" in
        --samples) samples="${2:-}"; shift 2 ;;
        --model) model="${2:-}"; shift 2 ;;
        --hef) hef="${2:-}"; shift 2 ;;
        --frames) frames="${2:-}"; shift 2 ;;
        --python) python_bin="${2:-}"; shift 2 ;;
        -h|--help) usage; exit 0 ;;
        *) echo "pi_acceptance.sh: unknown argument '$1'; see --help" >&2; exit 2 ;;
    esac
done

if [ -z "$samples" ] || [ ! -d "$samples" ]; then
    echo "pi_acceptance.sh: --samples DIR must name a folder of card crops (got '${samples}')" >&2
    exit 2
fi
case "$frames" in
    ''|*[!0-9]*) echo "pi_acceptance.sh: --frames must be a positive integer, got '$frames'" >&2; exit 2 ;;
esac

workdir="$(mktemp -d)"
export HAILORT_LOGGER_PATH="$workdir"
children=()
# shellcheck disable=SC2317  # called through the EXIT trap
cleanup() {
    local pid
    for pid in "${children[@]}"; do
        kill "$pid" 2>/dev/null
    done
    # Keep the outputs and hailort.log files of a failed run for diagnosis.
    if [ "${failed:-1}" -eq 0 ]; then
        rm -rf "$workdir"
    fi
}
trap cleanup EXIT

model_args=()
[ -n "$model" ] && model_args+=(--model "$model")
hef_args=()
[ -n "$hef" ] && hef_args+=(--hef "$hef")

passed=0
failed=0
warned=0
report() {
    # report STATUS NAME DETAIL: STATUS is PASS, FAIL or WARN (WARN does not fail the verdict).
    printf '%-4s  %-26s %s\n' "$1" "$2" "$3"
    case "$1" in
        PASS) passed=$((passed + 1)) ;;
        FAIL) failed=$((failed + 1)) ;;
        *) warned=$((warned + 1)) ;;
    esac
}

pokedge() {
    "$python_bin" -m pokedge "$@"
}

echo "pokedge Hailo acceptance on $(uname -n), $(uname -r), $(date -u +%Y-%m-%dT%H:%M:%SZ)"
echo

# 1. Driver and device.
nodes=(/dev/hailo*)
if [ -e "${nodes[0]}" ]; then
    report PASS "device node" "${nodes[*]}"
else
    report FAIL "device node" "no /dev/hailo*; install with 'sudo apt install dkms hailo-all' and reboot"
fi

if command -v hailortcli >/dev/null 2>&1; then
    identify="$(hailortcli fw-control identify 2>&1)"
    arch="$(printf '%s\n' "$identify" | sed -n 's/^Device Architecture: *//p' | head -n 1)"
    if [ -n "$arch" ]; then
        report PASS "device architecture" "$arch"
    else
        report FAIL "device architecture" "hailortcli fw-control identify failed: $(printf '%s' "$identify" | tail -n 1)"
    fi
else
    report FAIL "hailortcli" "not installed (part of hailo-all)"
fi

if hailort_version="$("$python_bin" -c 'import hailo_platform; print(hailo_platform.__version__)' 2>&1)"; then
    report PASS "hailo_platform" "HailoRT $hailort_version"
else
    report FAIL "hailo_platform" "$(printf '%s' "$hailort_version" | tail -n 1)"
fi

link=""
for function in /sys/bus/pci/devices/*; do
    if [ "$(cat "$function/vendor" 2>/dev/null)" = "0x1e60" ]; then
        link="$(cat "$function/current_link_speed" 2>/dev/null) x$(cat "$function/current_link_width" 2>/dev/null)"
    fi
done
case "$link" in
    "") report WARN "pcie link" "no Hailo function (vendor 0x1e60) in /sys/bus/pci/devices" ;;
    8.0*) report PASS "pcie link" "$link (Gen 3)" ;;
    *) report WARN "pcie link" "$link; Gen 3 is faster: 'dtparam=pciex1_gen=3' in /boot/firmware/config.txt" ;;
esac

# 2. pokedge opens the HEF on the device.
doctor_json="$workdir/doctor.json"
if pokedge doctor --json "${model_args[@]}" "${hef_args[@]}" >"$doctor_json" 2>"$workdir/doctor.err"; then
    auto="$("$python_bin" -c 'import json, sys; d = json.load(open(sys.argv[1]))["auto_backend"]; print(d["backend"] + ": " + d["reason"] + ("; fix: " + d["fix"] if d["fix"] else ""))' "$doctor_json")"
    case "$auto" in
        hailo:*) report PASS "auto picks hailo" "${auto#hailo: }" ;;
        *) report FAIL "auto picks hailo" "$auto" ;;
    esac
else
    report FAIL "pokedge doctor" "$(tail -n 1 "$workdir/doctor.err")"
fi

# 3. Parity with the ONNX model on real crops.
if pokedge parity --samples "$samples" "${model_args[@]}" "${hef_args[@]}" >"$workdir/parity.txt" 2>&1; then
    report PASS "parity" "$(grep -E 'min cosine|top-1' "$workdir/parity.txt" | tr -s ' ' | tr '\n' ';')"
else
    report FAIL "parity" "$(grep -E 'min cosine|verdict|error' "$workdir/parity.txt" | tr -s ' ' | tr '\n' ';')"
fi

# 4. Latency of one embed call, batch 1, and throughput at batch 8.
latency_py="$workdir/latency.py"
cat >"$latency_py" <<'PYTHON'
import json
import sys
import time
from pathlib import Path

import numpy as np

from pokedge.backends.hailo import HailoBackend
from pokedge.backends.onnx import OnnxBackend
from pokedge.backends.probe import find_hef_contract
from pokedge.contract import load_contract
from pokedge.recognition.runtime import resolve_sources

frames, model, hef, options = int(sys.argv[1]), sys.argv[2], sys.argv[3], json.loads(sys.argv[4])
sources = resolve_sources(Path(model) if model else None)
onnx_contract = load_contract(sources.onnx_contract)
hef_contract = load_contract(hef) if hef else (
    load_contract(sources.hef_contract) if sources.hef_contract else find_hef_contract(onnx_contract.model_path.parent))
if hef_contract is None:
    sys.exit("no HEF contract found; pass --hef")


def timed(backend, batch, count):
    images = np.random.default_rng(0).integers(
        0, 256, (batch, backend.contract.input.height, backend.contract.input.width, 3), dtype=np.uint8)
    for _ in range(5):
        backend.embed(images)
    samples = []
    for _ in range(count):
        start = time.perf_counter()
        backend.embed(images)
        samples.append((time.perf_counter() - start) * 1000)
    return np.percentile(samples, 50), np.percentile(samples, 99), batch * 1000 / np.mean(samples)


hailo = HailoBackend(hef_contract, options)
p50, p99, _ = timed(hailo, 1, frames)
_, _, fps = timed(hailo, 8, max(10, frames // 8))
hailo.close()
onnx = OnnxBackend(onnx_contract)
onnx_p50, _, _ = timed(onnx, 1, min(frames, 50))
onnx.close()
print(f"{p50:.2f} {p99:.2f} {fps:.0f} {onnx_p50:.2f}")
PYTHON

if result="$("$python_bin" "$latency_py" "$frames" "$model" "$hef" '{}' 2>"$workdir/latency.err")"; then
    read -r p50 p99 fps onnx_p50 <<<"$result"
    detail="p50 ${p50} ms, p99 ${p99} ms at batch 1; ${fps} frames/s at batch 8; ONNX Runtime p50 ${onnx_p50} ms"
    # Targets for the embedding step: p50 under 25 ms and p99 under 35 ms.
    if awk -v a="$p50" -v b="$p99" 'BEGIN { exit !(a < 25 && b < 35) }'; then
        report PASS "latency" "$detail"
    else
        report FAIL "latency" "$detail (target p50 < 25 ms, p99 < 35 ms)"
    fi
else
    report FAIL "latency" "$(tail -n 1 "$workdir/latency.err")"
fi

# 5. Two processes share the device through the multi-process service.
service_options='{"multi_process_service": true}'
if systemctl is-active --quiet hailort.service 2>/dev/null; then
    "$python_bin" "$latency_py" 1500 "$model" "$hef" "$service_options" >"$workdir/share_a.out" 2>"$workdir/share_a.err" &
    children+=("$!")
    sleep 3
    if "$python_bin" "$latency_py" 50 "$model" "$hef" "$service_options" >"$workdir/share_b.out" 2>"$workdir/share_b.err"; then
        if wait "${children[0]}"; then
            report PASS "two processes, service" "both ran; second process p50 $(cut -d' ' -f1 "$workdir/share_b.out") ms"
        else
            report FAIL "two processes, service" "first process failed: $(tail -n 1 "$workdir/share_a.err")"
        fi
    else
        report FAIL "two processes, service" "second process failed: $(tail -n 1 "$workdir/share_b.err")"
    fi
    children=()
else
    report FAIL "two processes, service" "hailort.service is not active; 'sudo systemctl enable --now hailort.service'"
fi

# Without the service a second process must get a clear reason, not a crash.
"$python_bin" "$latency_py" 3000 "$model" "$hef" '{}' >/dev/null 2>&1 &
holder="$!"
children+=("$holder")
sleep 3
busy="$(pokedge doctor "${model_args[@]}" "${hef_args[@]}" 2>&1 | sed -n 's/^auto backend *//p')"
kill "$holder" 2>/dev/null
wait "$holder" 2>/dev/null
children=()
case "$busy" in
    onnx:*"another process"*|onnx:*"in use"*) report PASS "busy device reported" "$busy" ;;
    *) report WARN "busy device reported" "expected ONNX with 'another process holds it', got: $busy" ;;
esac

echo
if [ "$failed" -eq 0 ]; then
    echo "VERDICT: PASS ($passed passed, $warned warnings)"
    exit 0
fi
echo "VERDICT: FAIL ($failed failed, $passed passed, $warned warnings)"
echo "command outputs and hailort.log are kept in $workdir"
exit 1
