#!/bin/bash
# One lease of one GPU (device tool, 10-minute command): the studies that need more than the CPU
# gives, run through the ordinary sweep machinery. Workers are plain sweep invocations sharing each
# sweep's jobs (a job another process holds is skipped); each invocation runs one seed, so a cut at
# the deadline leaves whole seeds. Priorities: lr_ratio on SST-2 and MRPC (5 seeds, 3x the CPU
# steps), then boolq_budget, then reft_capacity on BoolQ, which every worker joins once its own
# sweep is done. At DEADLINE seconds everything still running is stopped and the records are packed.
# A later lease continues an earlier one: .gpu/prior.tgz (the committed records, packed as
# lr_ratio/<job>/...) is unpacked into sweeps/ first, so every job that already succeeded is skipped
# (the sweep matches records by run_id, which names the weights by MODEL_DIR's path: keep it). The
# seeds per task (LRR_SEEDS_SST2, LRR_SEEDS_MRPC) and what a worker joins once its own sweep is done
# (FOLLOW) are set per lease.
set -u
T0=$(date +%s)
DEADLINE=${DEADLINE:-515}
LRR_STEPS=${LRR_STEPS:-1200}
REFT_STEPS=${REFT_STEPS:-1500}
LRR_SEEDS=${LRR_SEEDS:-"1 2 3 4 5"}
LRR_SEEDS_SST2=${LRR_SEEDS_SST2:-$LRR_SEEDS}; LRR_SEEDS_MRPC=${LRR_SEEDS_MRPC:-$LRR_SEEDS}
FOLLOW=${FOLLOW:-reft_capacity}
MODEL_DIR=${MODEL_DIR:-/work/main/.gpu/minilm_bf16}
BQ_SEEDS=${BQ_SEEDS:-"1 2 3"}
EVAL=${EVAL:-100}
W_SST2=${W_SST2:-6}; W_MRPC=${W_MRPC:-5}; W_BQ=${W_BQ:-2}; W_REFT=${W_REFT:-2}
OUT=${OUT:?OUT must be set}
LOG=/tmp/gpu_logs; mkdir -p $LOG
export PYTHONUNBUFFERED=1 OMP_NUM_THREADS=1 TOKENIZERS_PARALLELISM=false

if [ -z "${SKIP_INSTALL:-}" ]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .gpu/whl/*.whl || exit 3
fi
export PYTHONPATH=/tmp/site:$PWD${EXTRA_PYTHONPATH:+:$EXTRA_PYTHONPATH}
# the weights' path is part of every run's identity: reach this checkout's copy by MODEL_DIR's path
ROOT=$(dirname "$(dirname "$MODEL_DIR")")  # the checkout MODEL_DIR names (/work/main)
if [ ! -e "$MODEL_DIR" ]; then [ ! -e "$ROOT" ] && mkdir -p "$(dirname "$ROOT")" && ln -s "$PWD" "$ROOT" || exit 3; fi
if [ -f .gpu/prior.tgz ]; then mkdir -p sweeps && tar xzf .gpu/prior.tgz -C sweeps || exit 3; fi
if [ ! -s .gpu/minilm_bf16/model.safetensors ]; then
  python3 -c "import lzma,shutil; shutil.copyfileobj(lzma.open('.gpu/model.safetensors.xz'), open('.gpu/minilm_bf16/model.safetensors','wb'))" || exit 3
fi
{ nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv 2>&1; nproc; free -g | head -2;
  python3 -c "import sys,torch,transformers,peft,datasets,hydra; print(sys.version.split()[0], torch.__version__, torch.cuda.is_available(), transformers.__version__, peft.__version__, datasets.__version__, hydra.__version__)"; } 2>&1 | tee $OUT/machine.txt

COMMON=(model.pretrained=$MODEL_DIR logger=none train.progress=false train.num_threads=1)
echo "setup done at +$(( $(date +%s) - T0 )) s"
[ -n "${SKIP_SMOKE:-}" ] || timeout 150 python3 -m harness method=lora task=sst2 train.max_steps=5 train.eval_every=5 "${COMMON[@]}" > $LOG/smoke.log 2>&1
rc=$?; [ -n "${SKIP_SMOKE:-}" ] || grep -E "device|dtype|success|error" $LOG/smoke.log | head -8
if [ $rc -ne 0 ]; then tail -40 $LOG/smoke.log; cp $LOG/smoke.log $OUT/; exit 4; fi
echo "smoke done at +$(( $(date +%s) - T0 )) s"
nvidia-smi dmon -s um -d 5 > $OUT/dmon.txt 2>&1 & DMON=$!

lr_ratio() {  # task [seeds]: one invocation per seed
  local seeds=${2:-}; [ -n "$seeds" ] || { [ "$1" = sst2 ] && seeds=$LRR_SEEDS_SST2 || seeds=$LRR_SEEDS_MRPC; }
  for s in $seeds; do
    python3 -m harness +sweep=lr_ratio task=$1 "hydra.sweeper.values.seeds=[$s]" train.max_steps=$LRR_STEPS \
      train.eval_every=$EVAL train.checkpoint_every=null "${COMMON[@]}" ${LRR_EXTRA:-}
  done
}
boolq_budget() {
  for s in $BQ_SEEDS; do
    python3 -m harness +sweep=boolq_budget "hydra.sweeper.values.seeds=[$s]" train.checkpoint_every=null "${COMMON[@]}" ${BQ_EXTRA:-}
  done
}
reft_capacity() {
  for s in $BQ_SEEDS; do
    python3 -m harness +sweep=reft_capacity "hydra.sweeper.values.seeds=[$s]" train.max_steps=$REFT_STEPS \
      train.eval_every=$EVAL train.checkpoint_every=null "${COMMON[@]}" ${REFT_EXTRA:-}
  done
}
i=0; WORKERS=()
start() { i=$((i+1)); ( "$@"; $FOLLOW ) > $LOG/worker$i.log 2>&1 & WORKERS+=($!); }
for _ in $(seq $W_SST2); do start lr_ratio sst2; sleep 1; done
for _ in $(seq $W_MRPC); do start lr_ratio mrpc; sleep 1; done
for _ in $(seq $W_BQ); do start boolq_budget; sleep 1; done
for _ in $(seq $W_REFT); do start true; sleep 1; done

alive() { for p in "${WORKERS[@]}"; do kill -0 $p 2>/dev/null && return 0; done; return 1; }
while [ $(( $(date +%s) - T0 )) -lt $DEADLINE ] && alive; do sleep 5; done
echo "stopping at +$(( $(date +%s) - T0 )) s"
kill "${WORKERS[@]}" 2>/dev/null  # the worker loops first, so no new invocation starts
pkill -TERM -f -- "-m harness"; sleep 8; pkill -KILL -f -- "-m harness"
kill $DMON 2>/dev/null
for f in $(find sweeps -name result.json); do python3 -c "import json,sys; print(json.load(open(sys.argv[1])).get('status'))" $f; done | sort | uniq -c
tar czf $OUT/sweeps.tar.gz --exclude='*.pt' --exclude='*.safetensors' --exclude='*.bin' --exclude='checkpoint*' sweeps
tar czf $OUT/logs.tar.gz -C $LOG .
ls -la $OUT; echo "done at +$(( $(date +%s) - T0 )) s"
