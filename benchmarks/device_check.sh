#!/usr/bin/env bash
# The GPU checks of issue 12, as one short script for a session that is lent a device machine (see the `run` tool):
#
#   pip download --no-deps -d .whl generateme==0.1.2 gan_face_generate==1.1.1     # here, once (.whl is git-ignored)
#   run(command="bash benchmarks/device_check.sh fit", carry=[".whl"], timeout_s=560)
#   run(command="T_MORE=200 bash benchmarks/device_check.sh more", carry=[".whl"], timeout_s=300)  # at once, warm;
#                                                      # T_MORE + T_COST (80) + 20 s within budget_left_s
#   run(command="bash benchmarks/device_check.sh smoke", carry=[".whl"], timeout_s=200) # re-seeding, --align-to,
#                                                      # compare, ranks, retrieve --region, edit/remove --refine, a
#                                                      # --generators-from generator and a report on CUDA
#                                                      # (about a minute)
#
# A session has 15 minutes of device time, the machine's start included, so the first call holds everything target
# 2 needs on the GPU: "fit" runs, each capped, (1) a 300-sample 64x64 fit whose P-step runs on a low-rank factor
# (small_n_check.py: QR on the GPU, the factor's two products in the CUDA graph; it prints the CPU's figures too),
# (2) benchmarks/fit_speed.py on the issue's four rows (dcgan 8x8 and 16x16 layers), N = 50,000, the authors'
# scheme at lr 1e-8 (their code's) and at each row's best learning rate in the CPU table (`--lrs cpu-best`: the CPU
# table sweeps 1e-8..1e-3); panda's fits are the median of 3, which also keeps the first fit's CUDA set-up out of the
# figure, each also fitted with mixing=True, with all and with 32 directions (the mixing's CUDA paths: the stacked
# (2S, S) statistic in the P-step's CUDA graph, the line search's constants made before capture), and one more fit
# per row times its stages (the second table: where the GPU fit's time goes), and (3) stylegan_scale.py at 1024 px
# with its own breakdown of each fit (the 64x64 layer's fit was 8x its extraction on the H100). About 5-6 minutes
# on an H100. "more" (call it at once, the machine stays warm only 30 s, and only if `status` still shows
# budget_left_s >= 240, with T_MORE set so that it ends inside that) runs the table's other four rows (32x32 and the
# RGB 64x64 layers; about 3-4 minutes in full) and `panda bench setup-cost` at 1024 px. The rows each step finished are in its table even when its cap cuts it short.
# Tables and logs land in $OUT; copy them to benchmarks/*_cuda.md with the device named. The device machine has
# torch and panda's other dependencies; only the generator wheels travel.
# A rehearsal here, on the CPU and small (a few minutes): DEVICE=cpu NS=600 RES=256 SG_N=64,32,16 PYTHON=.venv/bin/python
set -u
PY=${PYTHON:-python3}
D=${DEVICE:-cuda}
NS=${NS:-50000}
"$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 3
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1
OUT=${OUT:-/tmp/out}
mkdir -p "$OUT"
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader || true
"$PY" -c "import torch; print('torch', torch.__version__)"
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
        step small_n "${T_SMALL:-50}" "$PY" benchmarks/small_n_check.py --device "$D"
        step fit_speed "${T_FIT:-240}" "$PY" benchmarks/fit_speed.py --device "$D" --ns "$NS" --lrs cpu-best \
            --layers relu2,relu3,main.5,main.8 --out "$OUT/fit_speed_cuda.md"
        step stylegan_scale "${T_SCALE:-200}" "$PY" benchmarks/stylegan_scale.py --resolution "${RES:-1024}" \
            --device "$D" --n "${SG_N:-2000,1000,500}" --out "$OUT/stylegan_scale_cuda.md" ;;
    more)
        step fit_speed_more "${T_MORE:-300}" "$PY" benchmarks/fit_speed.py --device "$D" --ns "$NS" --lrs cpu-best \
            --layers relu4,convTr5,main.11,main.12 --out "$OUT/fit_speed_cuda_more.md"
        step setup_cost "${T_COST:-80}" "$PY" -m panda.cli bench setup-cost --resolution "${RES:-1024}" --device "$D" -q \
            -o "$OUT/setup_cost_cuda.md" ;;
    smoke)  # the commands added since the GPU tables, once each on the device (about a minute)
        S=$OUT/smoke
        mkdir -p "$S"
        step smoke_fit "${T_SMOKE:-60}" "$PY" -m panda.cli fit -rs 24 -n 2000 --n-init 16 --reseed 8 --device "$D" -q \
            --background-samples 0 --out "$S/a.safetensors" --overwrite
        step smoke_refit "${T_SMOKE:-60}" "$PY" -m panda.cli fit -rs 24 -n 2000 --seed 2000 --reseed 8 --device "$D" \
            -q --background-samples 0 --align-to "$S/a.safetensors" --out "$S/b.safetensors" --overwrite
        step smoke_compare "${T_SMOKE:-60}" "$PY" -m panda.cli compare "$S/a.safetensors" "$S/b.safetensors" \
            --device "$D" --out "$S/compare"
        step smoke_ranks "${T_SMOKE:-60}" "$PY" -m panda.cli ranks -rs 8,16 -n 1000 --reseed 2 --stability \
            --device "$D" -q --out "$S/ranks"
        step smoke_retrieve "${T_SMOKE:-60}" "$PY" -m panda.cli retrieve "$S/a.safetensors" -j 3 --region mouth \
            --n-images 200 --device "$D" -q --out "$S/retrieve"
        # refinement's float32 statistics and the translation margin, through edit/remove --refine
        step smoke_refine "${T_SMOKE:-60}" "$PY" -m panda.cli edit "$S/a.safetensors" --part 3 --refine --seeds 0-7 \
            --device "$D" --out "$S/edit"
        step smoke_remove "${T_SMOKE:-60}" "$PY" -m panda.cli remove "$S/a.safetensors" --part 3 --refine \
            --background 5 --seeds 0-7 --device "$D" --out "$S/remove"
        # a generator of the user's own (examples/my_generator.py), fitted and edited on the device
        step smoke_own "${T_SMOKE:-60}" "$PY" -m panda.cli fit --generators-from examples/my_generator.py \
            --generator my-dcgan -rs 8 -n 1000 --device "$D" -q --background-samples 0 --out "$S/own.safetensors" \
            --overwrite
        step smoke_own_edit "${T_SMOKE:-60}" "$PY" -m panda.cli edit "$S/own.safetensors" --generators-from \
            examples/my_generator.py --part 2 --seeds 0-3 --device "$D" -q --out "$S/own"
        # the page of everything for a factor file (every application once, on the device)
        step smoke_report "${T_SMOKE:-60}" "$PY" -m panda.cli report "$S/a.safetensors" --n-top 2 --device "$D" -q \
            --out "$S/report" ;;
    *)
        echo "usage: bash benchmarks/device_check.sh fit|more|smoke" >&2
        exit 2 ;;
esac
