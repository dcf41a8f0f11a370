#!/usr/bin/env bash
# Coverage-guided fuzzing of every decoder entry point (atheris), MINUTES per target:
#   bash scripts/fuzz.sh MINUTES [TARGET ...]      (default targets: image dicom manifest config upload multipart)
# Logs and corpora go to runs/fuzz/<target>/ (git-ignored); a crash leaves runs/fuzz/<target>/crash-*.
# Prints one line per target: executions, seconds, corpus size, crash or not. Needs: pip install atheris.
set -uo pipefail
cd "$(dirname "$0")/.."
minutes="${1:?usage: scripts/fuzz.sh MINUTES [TARGET ...]}"
shift
targets=("$@")
[ ${#targets[@]} -eq 0 ] && targets=(image dicom manifest config upload multipart)
python="${PYTHON:-python}"
seconds=$(python3 -c "print(int(float('$minutes') * 60))")
mkdir -p runs/fuzz
status=0
for t in "${targets[@]}"; do
  log="runs/fuzz/$t.log"
  PYTHONPATH="$PWD/src:$PWD${PYTHONPATH:+:$PYTHONPATH}" HF_HUB_OFFLINE=1 PNEUMOSCAN_FUZZ_MODEL_DIR="$PWD/runs/fuzz/model" \
    "$python" -m fuzz.harness "$t" --seconds "$seconds" >"$log" 2>&1
  rc=$?
  runs=$(grep -o 'stat::number_of_executed_units: [0-9]*' "$log" | tail -1 | awk '{print $2}')
  [ -z "$runs" ] && runs=$(grep -Eo 'Done [0-9]+ runs' "$log" | tail -1 | awk '{print $2}')
  corpus=$(ls "runs/fuzz/$t/corpus" 2>/dev/null | wc -l)
  crash=$(ls runs/fuzz/$t/crash-* runs/fuzz/$t/oom-* runs/fuzz/$t/timeout-* 2>/dev/null | head -1)
  echo "$t: ${runs:-?} executions in ${seconds} s, corpus ${corpus} files, exit ${rc}${crash:+, CRASH $crash}"
  [ -n "$crash" ] || [ "$rc" -ne 0 ] && status=1
done
exit $status
