#!/usr/bin/env bash
# The GPU part of the performance benchmarks (issue 9), as one command for a GPU machine without network:
# the update phase's MFU (benchmarks/update_mfu.py) and rltune vs trl's GRPOTrainer on Qwen2.5-0.5B's shape
# (benchmarks/vs_trl.py), both in bfloat16. Python packages the machine lacks come as wheels in .whl/:
#   pip download --no-deps --only-binary=:all: --python-version 3.12 --platform manylinux2014_x86_64 \
#       -d .whl trl==1.16.0 datasets==5.2.0 dill multiprocess && pip wheel --no-deps -w .whl .
# Results (JSON lines and logs) go to $OUT (default runs/gpu). The whole script takes under 10 minutes
# (one device call); VARIED=1 runs only the packed / padded / token-budget comparison on varied completion
# lengths instead; WORKLOAD=gsm8k-shape runs vs_trl.py on its GSM8K-shaped workload; SCALE=1 runs only the
# sharded launches (FSDP2, and ZeRO-3 where DeepSpeed is installed) against one process.
set -u
OUT=${OUT:-runs/gpu}
mkdir -p "$OUT"
# datasets 5.2 needs pyarrow >= 24: use a carried pyarrow wheel only where the machine's is older.
wheels=$(ls .whl/*.whl | grep -v pyarrow)
python3 -c "import pyarrow, sys; sys.exit(int(pyarrow.__version__.split('.')[0]) < 24)" 2>/dev/null || wheels="$wheels $(ls .whl/pyarrow-*.whl)"
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site $wheels || exit 1
export PYTHONPATH=/tmp/site PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false
{
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
    python3 -c "import torch, transformers, trl, accelerate; print('torch', torch.__version__, 'transformers', transformers.__version__, 'trl', trl.__version__, 'accelerate', accelerate.__version__)"
} 2>&1 | tee "$OUT/machine.txt"
if [ "${SCALE:-0}" = 1 ]; then
    # FSDP2 (and ZeRO-3 where DeepSpeed is installed) against one process, on all the machine's GPUs:
    # final weights, loss curves, per-process shares and peak memory (benchmarks/scale_check.py).
    configs=fsdp2
    python3 -c "import deepspeed" 2>/dev/null && configs=fsdp2,zero3
    timeout 500 python3 benchmarks/scale_check.py --configs "$configs" --out "$OUT/scale.jsonl" 2>&1 | tee "$OUT/scale.log"
    exit
fi
if [ "${VARIED:-0}" = 1 ]; then
    timeout 500 python3 benchmarks/update_mfu.py --device cuda --timeout 200 --varied-lengths \
        --variants plain,rltune,rltune-padded,rltune-budget --token-budget 8192 --out "$OUT/varied.jsonl" 2>&1 | tee "$OUT/varied.log"
    exit
fi
# rltune-compile: train.compile, now with the LM head's per-chunk softmax arithmetic compiled too (never
# measured on a GPU: the H100 profile blames that arithmetic's float32 passes for most of the update's gap).
# rltune-compile-head: train.compile=lm_head, that arithmetic alone. rltune-mixed: float32 weights under bf16
# autocast, as recipes/grpo_gsm8k_qwen0.5b.yaml trains. The slowest to compile goes last: the timeout cuts it.
timeout "${MFU_TIMEOUT:-220}" python3 benchmarks/update_mfu.py --device cuda --timeout 150 \
    --variants "${MFU_VARIANTS:-plain,rltune,rltune-compile-head,rltune-mixed,rltune-compile}" --out "$OUT/update_mfu.jsonl" 2>&1 | tee "$OUT/update_mfu.log"
# rltune-hf-compiled: rollout.hf_compile (CUDA graphs); its first step compiles, the medians skip it.
timeout "${TRL_TIMEOUT:-330}" python3 benchmarks/vs_trl.py --device cuda --sizes qwen0.5b \
    --sides "${SIDES:-trl,rltune-hf,rltune-hf-compiled}" \
    --steps 6 --timeout 240 --workload "${WORKLOAD:-demo}" --out "$OUT/vs_trl.jsonl" 2>&1 | tee "$OUT/vs_trl.log"
