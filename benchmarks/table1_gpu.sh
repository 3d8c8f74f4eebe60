#!/usr/bin/env bash
# Table 1 (CIFAR-10 JPEG copy, IPC 1, 5 seeds, the paper's budgets) on one GPU, in one command:
#
#     bash benchmarks/table1_gpu.sh [--smoke] [TARBALL]
#
#   TARBALL  the CIFAR-10 JPEG copy (default ../shared/datasets/cifar10/cifar10-jpeg.tar.gz if it
#            exists, else data/cifar10-jpeg.tar.gz); extracted once into data/<its name>/
#   --smoke  the same pipeline on CPU on `digits` with tiny budgets (all flagged in the table)
#   BUDGET   seconds for everything (default 480; 300 with --smoke); every phase runs under
#            `timeout` with what is left, so the script ends in time and keeps what finished
#   OUT      output folder (default results/table1-gpu; results/table1-smoke with --smoke);
#            use a fresh one per budget: the final table renders every record in $OUT/run
#   CACHE    dataset tensors, θ*, condensed sets (default $OUT/cache)
#   PYTHON   interpreter (default python3)
#   PRECISION  --eval-precision of retraining and test evaluation (default fp32, exact; tf32 or
#            bf16 trade the last digits for speed on a GPU, stored in every record)
#
# Phases: θ* + random/herding/forgetting, then dsvg, dsvs, dc, dd, each its own run into the
# same --out and --cache-dir (a timeout in one keeps the others; rerunning resumes from the
# records), then the table re-rendered from all records.  Needs no pip and no network:
# the repository is put on PYTHONPATH.  Writes $OUT/run/{table.md,summary.csv,results.csv,
# run.json,sets/}, $OUT/timings.md, $OUT/logs/, and $OUT/table1.tgz: the small outputs, the
# records, and from $CACHE the θ* checkpoints and built sets (cache/pretrained/*.pt,
# cache/sets/*.pt).  To go on in a later window: `tar xzf table1.tgz -C $OUT` (CACHE unset)
# and run the same command again; it redoes only what is missing.
set -uo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
SMOKE=0
TARBALL=""
for arg in "$@"; do
    case $arg in
        --smoke) SMOKE=1 ;;
        -h|--help) sed -n '2,23p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; exit 0 ;;
        -*) echo "table1_gpu.sh: unknown option $arg (use --smoke, --help)" >&2; exit 2 ;;
        *) TARBALL=$arg ;;
    esac
done
if ((SMOKE)); then BUDGET=${BUDGET:-300}; OUT=${OUT:-$REPO/results/table1-smoke}
else BUDGET=${BUDGET:-480}; OUT=${OUT:-$REPO/results/table1-gpu}; fi
mkdir -p "$OUT" && OUT=$(cd "$OUT" && pwd)
CACHE=${CACHE:-$OUT/cache}
mkdir -p "$CACHE" && CACHE=$(cd "$CACHE" && pwd)
# -P (Python >= 3.11): no script folder or cwd in front of PYTHONPATH, so the package view below wins
PY=("${PYTHON:-python3}")
"${PY[@]}" -P -c "" 2>/dev/null && PY+=(-P)
RESERVE=20          # seconds kept back for the final render and packing (about 5 s)
START=$(date +%s)
cd "$REPO" || exit 2
mkdir -p "$OUT/logs" "$OUT/phases"
export PYTHONUNBUFFERED=1
export PYTHONPATH="$REPO${PYTHONPATH:+:$PYTHONPATH}"

# `dsvbench.baselines` is the top-level baselines/ folder, mapped into the package by an install
# (pyproject's package-dir).  Without pip, give Python the same view through a folder of links.
if ! "${PY[@]}" -c "import dsvbench.baselines" 2>/dev/null; then
    VIEW=$(mktemp -d)
    trap 'rm -rf "$VIEW"' EXIT
    mkdir "$VIEW/dsvbench"
    ln -s "$REPO"/dsvbench/* "$VIEW/dsvbench/"
    ln -s "$REPO/baselines" "$VIEW/dsvbench/baselines"
    export PYTHONPATH="$VIEW:$PYTHONPATH"
    "${PY[@]}" -c "import dsvbench.baselines" || { echo "table1_gpu.sh: cannot import dsvbench" >&2; exit 2; }
fi

remaining() { echo $((BUDGET - ($(date +%s) - START))); }
until_end() { local left=$(($(remaining) - $1)); echo $((left > 1 ? left : 1)); }  # keep $1 s back
now() { date +%s.%N; }
PHASES=()          # markdown rows of the timing table

record() {  # phase name, seconds, status
    PHASES+=("| $1 | $(awk -v s="$2" 'BEGIN { printf "%.1f", s }') | $3 |")
    echo "== $1: $3 ($(awk -v s="$2" 'BEGIN { printf "%.0f", s }') s, $(remaining) s of $BUDGET left)"
}

status_of() {  # exit code, time limit
    case $1 in
        0) echo ok ;;
        124|137) echo "timeout (limit $2 s)" ;;
        1) echo "failed job(s), exit 1 (see logs/)" ;;
        2) echo "bad input, exit 2 (see logs/)" ;;
        *) echo "exit $1 (see logs/)" ;;
    esac
}

FAILED=0
run_phase() {  # name, command...: under `timeout` with the budget left minus the reserve
    local name=$1; shift
    local limit=$(($(remaining) - RESERVE))
    if ((limit < 10)); then record "$name" 0 "skipped (budget spent)"; FAILED=1; return; fi
    local started; started=$(now)
    touch "$OUT/phases/.stamp"
    timeout -k 5 "$limit" "$@" 2>&1 | tee "$OUT/logs/$name.log"
    local code=${PIPESTATUS[0]}
    record "$name" "$(awk -v a="$started" -v b="$(now)" 'BEGIN { print b - a }')" "$(status_of "$code" "$limit")"
    ((code == 0)) || FAILED=1
    # each run's run.json (its recipes, θ*, budget notes) is kept for the merged render below
    if [[ -f $OUT/run/run.json && $OUT/run/run.json -nt $OUT/phases/.stamp ]]; then
        mkdir -p "$OUT/phases/$name" && cp "$OUT/run/run.json" "$OUT/phases/$name/run.json"
    fi
}

if ((SMOKE)); then
    DATA=(--dataset digits --device cpu --pretrain-epochs 2 --eval-epochs 3)
    SEEDS=2
    declare -A SETS=([dsvg]="dsvg.steps=4 dsvg.lowres_steps=2 dsvg.candidates_per_class=2"
                     [dsvs]="dsvs.steps=3 dsvs.pool_per_class=4" [dc]="dc.iterations=2" [dd]="dd.epochs=1")
else
    if [[ -z $TARBALL ]]; then
        TARBALL=$REPO/../shared/datasets/cifar10/cifar10-jpeg.tar.gz
        [[ -f $TARBALL ]] || TARBALL=$REPO/data/cifar10-jpeg.tar.gz
    fi
    [[ -f $TARBALL ]] || { echo "table1_gpu.sh: no CIFAR-10 JPEG tarball at $TARBALL; pass its path" >&2; exit 2; }
    "${PY[@]}" -c "import torch; assert torch.cuda.is_available()" 2>/dev/null \
        || { echo "table1_gpu.sh: CUDA is not available here (use --smoke for the CPU check)" >&2; exit 2; }
    name=$(basename "$TARBALL"); name=${name%.tar.gz}; name=${name%.tgz}
    EXTRACTED=$REPO/data/$name
    if [[ ! -f $EXTRACTED/.extracted ]]; then
        started=$(now)
        mkdir -p "$EXTRACTED" && timeout "$(remaining)" tar xzf "$TARBALL" -C "$EXTRACTED" && touch "$EXTRACTED/.extracted"
        code=$?
        record "extract $(basename "$TARBALL")" "$(awk -v a="$started" -v b="$(now)" 'BEGIN { print b - a }')" \
            "$(status_of $code "$(remaining)")"
        ((code == 0)) || exit 2
    fi
    ROOT=""
    for candidate in "$EXTRACTED" "$EXTRACTED"/*/; do  # the tarball may or may not have a top folder
        [[ -d $candidate/train && -d $candidate/test ]] && ROOT=${candidate%/} && break
    done
    [[ -n $ROOT ]] || { echo "table1_gpu.sh: no train/ and test/ folders under $EXTRACTED" >&2; exit 2; }
    DATA=(--dataset folder --data-root "$ROOT" --reference-dataset cifar10 --device cuda)
    SEEDS=5
    declare -A SETS=()
fi
COMMON=("${DATA[@]}" --seeds "$SEEDS" --jobs 1 --quiet --out "$OUT/run" --cache-dir "$CACHE"
        --eval-precision "${PRECISION:-fp32}")

run_phase coreset "${PY[@]}" run_bench.py "${COMMON[@]}" --methods random herding forgetting
for method in dsvg dsvs dc dd; do
    overrides=()
    for item in ${SETS[$method]:-}; do overrides+=(--set "$item"); done
    run_phase "$method" "${PY[@]}" run_bench.py "${COMMON[@]}" --methods "$method" "${overrides[@]}"
done

# One table from every record; each phase's run.json is merged in for its budget notes
# (the CLI keeps the last run.json it reads: the θ* run's, listed last).
FROM=("$OUT/run")
for phase in dsvg dsvs dc dd coreset; do  # --from wants a records/ folder in each (theirs stay empty)
    [[ -f $OUT/phases/$phase/run.json ]] && mkdir -p "$OUT/phases/$phase/records" && FROM+=("$OUT/phases/$phase")
done
if compgen -G "$OUT/run/records/*.json" >/dev/null; then
    started=$(now)
    limit=$(until_end 10)
    timeout "$limit" "${PY[@]}" run_bench.py --from "${FROM[@]}" --out "$OUT/run" --in-place >"$OUT/logs/render.log" 2>&1
    code=$?
    record render "$(awk -v a="$started" -v b="$(now)" 'BEGIN { print b - a }')" "$(status_of $code "$limit")"
    ((code == 0)) || FAILED=1
else
    record render 0 "skipped (no finished records)"
    FAILED=1
fi

{
    echo "# Table 1 run: timings"
    echo
    if ((SMOKE)); then what="SMOKE (CPU, digits, tiny budgets)"; else what="GPU, CIFAR-10 JPEG copy, paper budgets"; fi
    echo "$what, budget $BUDGET s, $(date -u +%Y-%m-%dT%H:%M:%SZ)," \
         "commit $(git -C "$REPO" rev-parse --short HEAD 2>/dev/null || echo unknown)"
    echo
    echo "| phase | seconds | exit status |"
    echo "|---|---|---|"
    printf '%s\n' "${PHASES[@]}"
    echo "| total | $(($(date +%s) - START)) | $( ((FAILED)) && echo incomplete || echo ok ) |"
} >"$OUT/timings.md"
timeout "$(until_end 5)" "${PY[@]}" - "$OUT/run" >>"$OUT/timings.md" <<'EOF'
"""Per method: build seconds per seed and retraining seconds per set, from results.csv."""
import json, sys
from pathlib import Path
import pandas as pd

run = Path(sys.argv[1])
if not (run / "results.csv").exists():
    print("\nno results.csv: no job finished")
    sys.exit()
frame = pd.read_csv(run / "results.csv")
order = list(pd.read_csv(run / "summary.csv")["method"])
table = frame.groupby("method").agg(seeds=("seed", "nunique"), build=("build_seconds", "mean"),
                                    batch=("build_batch", "max"), retrain=("retrain_seconds", "mean"),
                                    peak=("peak_memory_mb", "max"), accuracy=("test_accuracy", "mean"))
print("\n| method | seeds | build s/seed | seeds per build call | retrain s/set | peak MB | test % |")
print("|---|---|---|---|---|---|---|")
for method in order:
    row = table.loc[method]
    print(f"| {method} | {row.seeds:.0f} | {row.build:.2f} | {row.batch:.0f} | {row.retrain:.2f} | {row.peak:.0f} | "
          f"{row.accuracy:.1f} |")
pretrained = json.loads((run / "run.json").read_text()).get("pretrained") if (run / "run.json").exists() else None
if pretrained:
    print(f"\nθ*: {pretrained['epochs']} epochs, {pretrained['seconds_per_epoch']:.2f} s/epoch, "
          f"train {pretrained['train_accuracy']:.1f}%, test {pretrained['test_accuracy']:.1f}%")
EOF

timeout "$(until_end 1)" "${PY[@]}" - "$OUT" "$CACHE" <<'EOF'
"""Pack the small outputs, records, θ* checkpoints and built sets into $OUT/table1.tgz (atomically)."""
import sys, tarfile
from pathlib import Path

out, cache = Path(sys.argv[1]), Path(sys.argv[2])
patterns = ("run/table.md", "run/table.tex", "run/summary.csv", "run/results.csv", "run/run.json",
            "run/sets/*.png", "run/records/*.json", "timings.md", "logs/*.log", "phases/*/run.json")
members = [(path, str(path.relative_to(out))) for pattern in patterns for path in sorted(out.glob(pattern))]
members += [(path, f"cache/{path.relative_to(cache)}") for pattern in ("pretrained/*.pt", "sets/*.pt")
            for path in sorted(cache.glob(pattern))]
partial = out / "table1.tgz.tmp"
with tarfile.open(partial, "w:gz") as tar:
    for path, name in members:
        tar.add(path, arcname=name)
partial.replace(out / "table1.tgz")
print(f"packed {len(members)} files into {out / 'table1.tgz'} ({(out / 'table1.tgz').stat().st_size / 2**20:.1f} MB)")
EOF

echo
cat "$OUT/timings.md"
echo
if [[ -f $OUT/run/table.md ]]; then cat "$OUT/run/table.md"; else echo "no table: no job finished"; fi
echo "outputs in $OUT ($(($(date +%s) - START)) s of $BUDGET)"
exit $FAILED
