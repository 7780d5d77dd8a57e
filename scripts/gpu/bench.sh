# On the GPU machine, after finetune.py (or alone): the CUDA matcher benchmark (shipped weights, then the fine-tuned run's last checkpoint if present)
set -o pipefail
export PYTHONUNBUFFERED=1
[ -d /tmp/site/kornia ] || python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site ${GPU_DIR:-.gpu}/whl/*.whl || exit 1
export PYTHONPATH=/tmp/site:$PWD
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
W0=/tmp/w/world_s0; [ -f $W0/world.json ] || W0=/tmp/world0
bench() {  # extra bench_matchers.py arguments
  python3 scripts/gpu/shim_run.py benchmarks/bench_matchers.py --features xfeat --sizes 1024 2048 --inputs world \
    --device cuda --repeats 3 --world $W0 --out $OUT "$@" 2>&1 | grep -v "it/s\]" | tail -45
}
bench --tag xfeat_cuda
if [ -f /tmp/w/run/last.pth ]; then
  cp /tmp/w/run/last.pth /tmp/ft_last.pth
  bench --tag xfeat_cuda_ft --weights imp=/tmp/ft_last.pth eimp=/tmp/ft_last.pth --matchers imp eimp eimp+stop
fi
