#!/usr/bin/env bash
# Wall time of `make quickstart` from a clean clone (issue 8), for bench/train_speed.py and the table.
#
# Clones this repository's committed HEAD (uncommitted changes are not in it) into a temporary folder,
# next to a link to ../shared as in the real layout, runs `make quickstart` there (venv, install,
# corpus, training, an example score: about 8-10 minutes on 2 cores) and writes
# bench/results/quickstart_time.json; the log goes to bench/results/quickstart_time.log. The clone is
# removed afterwards. Run it on a quiet machine, alone.
#
#   bench/quickstart_time.sh [OUT.json]
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
out=${1:-$root/bench/results/quickstart_time.json}
log=${out%.json}.log
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

if [ -d "$root/../shared" ]; then
  ln -s "$(cd "$root/../shared" && pwd)" "$work/shared"
fi
git clone --quiet "$root" "$work/main"
commit=$(git -C "$work/main" rev-parse --short HEAD)

start=$(date +%s.%N)
status=0
(cd "$work/main" && make quickstart) >"$log" 2>&1 || status=$?
end=$(date +%s.%N)

mkdir -p "$(dirname "$out")"
python3 - "$out" "$start" "$end" "$status" "$commit" <<'EOF'
import json, os, platform, sys
from datetime import datetime, timezone

out, start, end, status, commit = sys.argv[1:]
cpu = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name")), platform.machine())
result = {
    "seconds": round(float(end) - float(start), 1),
    "exit_status": int(status),
    "commit": commit,
    "cpu": cpu,
    "cores": os.cpu_count(),
    "hf_hub_offline": os.environ.get("HF_HUB_OFFLINE", ""),
    "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    "what": "git clone of HEAD, then `make quickstart` (venv, install, data build, train configs/quickstart.yaml, score an example)",
}
with open(out, "w") as handle:
    json.dump(result, handle, indent=2)
    handle.write("\n")
print(json.dumps(result))
EOF
exit "$status"
