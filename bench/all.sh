#!/usr/bin/env bash
# Every benchmark, one after another, with their default counts; results (JSON and the printed
# tables) in bench/results/ or $BENCH_OUT. Run on a quiet machine, from the repository root,
# after ./scripts/test has set up .venv. Takes 2–6 minutes on the reference machine.
set -u
cd "$(dirname "$0")/.."
out="${BENCH_OUT:-bench/results}"
mkdir -p "$out"
py=.venv/bin/python
# A fixed amount of pure-Python work: how fast this machine is right now (shared VMs vary).
calibrate() {
  $py -c "import time; t = time.perf_counter(); sum(range(10**7)); \
print('calibration: sum(range(10**7)) took', round((time.perf_counter() - t) * 1e3), 'ms')"
}
{ date -u; uptime; git log --oneline -1; calibrate; } > "$out/meta.txt"
for b in control_plane runtime mcp sandbox tools; do
  echo "== $b" >&2
  $py "bench/$b.py" --out "$out/$b.json" > "$out/$b.txt" 2>&1 || echo "$b failed: see $out/$b.txt" >&2
done
{ date -u; uptime; calibrate; } >> "$out/meta.txt"
cat "$out/meta.txt"
