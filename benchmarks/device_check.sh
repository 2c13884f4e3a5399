#!/usr/bin/env bash
# The GPU checks of issue 12, as one short script for a session that is lent a device machine (see the `run` tool):
#
#   pip download --no-deps -d .whl generateme==0.1.2 gan_face_generate==1.1.1     # here, once (.whl is git-ignored)
#   run(command="bash benchmarks/device_check.sh fit", carry=[".whl"], timeout_s=560)
#   run(command="bash benchmarks/device_check.sh scale", timeout_s=300)               # same warm machine
#   run(command="bash benchmarks/device_check.sh smoke", timeout_s=200)               # re-seeding, --align-to,
#                                                      # compare, ranks, retrieve --region, edit/remove --refine on
#                                                      # CUDA (about a minute)
#
# A session has 15 minutes of device time, the machine's start included: "fit" is capped at 500 s of steps and
# "scale" at 280 s, so call "scale" at once (the machine stays warm only 30 s) and only if `status` still shows
# budget_left_s >= 300; the rows each step finished are in its table even when its cap cuts it short.
#
# "fit": benchmarks/fit_speed.py on the GPU, N = 50,000, the authors' scheme at lr 1e-8 (their code's) and at each
# row's best learning rate in the CPU table (`--lrs cpu-best`: the CPU table sweeps 1e-8..1e-3), all eight rows
# (about 6-7 minutes on an H100; panda's fits are the median of 3,
# which also keeps the first fit's CUDA set-up out of the figure, and one more fit per row times its stages: the
# second table says where the GPU fit's time goes, for target 2), each also fitted with mixing=True, with all and
# with 32 directions (the first GPU run of the mixing's CUDA paths: the stacked (2S, S) statistic in the P-step's
# CUDA graph, the line search's constants made before capture; the first four rows are the issue's), after a
# 300-sample 64x64 fit whose P-step runs on a low-rank factor (small_n_check.py: QR on the GPU, the factor's two
# products in the CUDA graph; it prints the CPU's figures too). "scale": stylegan_scale.py at 1024 px (with its
# own breakdown of each fit: the 64x64 layer's fit was 8x its extraction on the H100)
# and `panda bench setup-cost` at 1024 px. Tables and logs land in $OUT; copy them to benchmarks/*_cuda.md with the
# device named. The device machine has torch and panda's other dependencies; only the generator wheels travel.
set -u
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 3
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1
OUT=${OUT:-/tmp/out}
mkdir -p "$OUT"
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader || true
python3 -c "import torch; print('torch', torch.__version__)"
step() {  # name, time limit in seconds, command...
    local name=$1 limit=$2 start
    shift 2
    start=$(date +%s)
    timeout "$limit" "$@" > "$OUT/$name.log" 2>&1
    echo "$name rc=$? $(( $(date +%s) - start ))s"
    tail -12 "$OUT/$name.log"
    # a failed CUDA-graph capture only warns (the P-step then runs eagerly): say so beside the figures
    grep -c "CUDA-graph capture failed" "$OUT/$name.log" | sed 's/^/CUDA-graph capture failures: /'
}
case ${1:-fit} in
    fit)
        step small_n "${T_SMALL:-60}" python3 benchmarks/small_n_check.py --device cuda
        step fit_speed "${T_FIT:-440}" python3 benchmarks/fit_speed.py --device cuda --ns 50000 --lrs cpu-best \
            --out "$OUT/fit_speed_cuda.md" ;;
    scale)
        step stylegan_scale "${T_SCALE:-200}" python3 benchmarks/stylegan_scale.py --resolution 1024 --device cuda \
            --n 2000,1000,500 --out "$OUT/stylegan_scale_cuda.md"
        step setup_cost "${T_COST:-80}" python3 -m panda.cli bench setup-cost --resolution 1024 --device cuda -q \
            -o "$OUT/setup_cost_cuda.md" ;;
    smoke)  # the commands added since the GPU tables, once each on the device (about a minute): DEVICE=cpu tries it here
        D=${DEVICE:-cuda}
        S=$OUT/smoke
        mkdir -p "$S"
        step smoke_fit "${T_SMOKE:-60}" python3 -m panda.cli fit -rs 24 -n 2000 --n-init 16 --reseed 8 --device "$D" -q \
            --background-samples 0 --out "$S/a.safetensors" --overwrite
        step smoke_refit "${T_SMOKE:-60}" python3 -m panda.cli fit -rs 24 -n 2000 --seed 2000 --reseed 8 --device "$D" \
            -q --background-samples 0 --align-to "$S/a.safetensors" --out "$S/b.safetensors" --overwrite
        step smoke_compare "${T_SMOKE:-60}" python3 -m panda.cli compare "$S/a.safetensors" "$S/b.safetensors" \
            --device "$D" --out "$S/compare"
        step smoke_ranks "${T_SMOKE:-60}" python3 -m panda.cli ranks -rs 8,16 -n 1000 --reseed 2 --stability \
            --device "$D" -q --out "$S/ranks"
        step smoke_retrieve "${T_SMOKE:-60}" python3 -m panda.cli retrieve "$S/a.safetensors" -j 3 --region mouth \
            --n-images 200 --device "$D" -q --out "$S/retrieve"
        # refinement's float32 statistics and the translation margin, through edit/remove --refine
        step smoke_refine "${T_SMOKE:-60}" python3 -m panda.cli edit "$S/a.safetensors" --part 3 --refine --seeds 0-7 \
            --device "$D" --out "$S/edit"
        step smoke_remove "${T_SMOKE:-60}" python3 -m panda.cli remove "$S/a.safetensors" --part 3 --refine \
            --background 5 --seeds 0-7 --device "$D" --out "$S/remove" ;;
    *)
        echo "usage: bash benchmarks/device_check.sh fit|scale|smoke" >&2
        exit 2 ;;
esac
