#!/usr/bin/env bash
# The built-in recipe end to end (`make demo`): espeak-ng corpus -> preparation -> training -> averaging -> export
# -> zero-shot synthesis of held-out dev sentences -> offline evaluation -> report.
#
#   launch/recipes/builtin.sh --size tiny|small [--work DIR] [--family cosyvoice2|gpt_sovits2] [--num_steps N] \
#       [--speakers N] [--hours H] [--languages en,fr,...] [--code_switch F] [--extra_sentences N] \
#       [--codebook_size K] [--average_num N] [--num_utts N] \
#       [--num_workers N] [--seed S] [--text_encoder DIR|random|none] \
#       [--set PART.KEY=VALUE ...] [--skip_prep] [--parallel_train] [--vocoder_check 0|1] [--ladder 0|1] \
#       [--content s3|ssl_grvq] [--codebooks 2|4] [--ssl_model DIR]
#
# Stages -1..3 are launch/recipes/libritts.sh's (corpus, Kaldi files, offline speaker encoder and speech tokenizer,
# Parquet). Each part then trains with `python -m sovits2_jax.train` on WORK/data/{train,dev}.data.list (the
# lists libritts.sh's stage 5 reads): cosyvoice2 trains configs/cosyvoice2.py:{llm,flow,hift}_<size> in
# WORK/exp/<part> and runs libritts.sh's stages 6 (average) and 7 (export WORK/CosyVoice2); gpt_sovits2 trains
# configs/gpt_sovits2.py:{ar,vits}_<size> and averages them into WORK/GptSoVITS2/{ar,vits}; its AR reads the text
# encoder's ids and features, which the stage text_features adds to the Parquet shards
# (python -m sovits2_jax.data.prep.text_features), and WORK/GptSoVITS2/text_encoder/ carries the encoder for inference.
# --text_encoder DIR: a BGE-M3 directory (HF or converted); random (the default): a random-init tiny encoder and a
# sentencepiece tokenizer trained on the corpus (WORK/text_encoder); none: the AR reads Qwen BPE ids as the VITS does.
# Then:
#   python -m sovits2_jax.demo.synthesize  -> WORK/synthesis/{utt}.wav, .txt, .prompt.wav, .ref.wav
#   python -m sovits2_jax.eval             -> WORK/synthesis/metrics.tsv, summary.json
#   python -m sovits2_jax.demo.report      -> WORK/report.md, WORK/report.json, WORK/plots/*.png
# Each stage prints `stage NAME: SECONDS s`; the times go to WORK/stage_times.tsv and report.json.
# Sizes: tiny (make demo; at most 15 minutes on an idle 2-core CPU) and small (the quality configuration).
# --num_steps (every part), --speakers, --hours, --codebook_size, --average_num override the size's defaults;
# --set llm.train.optimizer.lr=3e-3 passes --config.train.optimizer.lr=3e-3 to that part's trainer (repeatable,
# after the size's own per-part settings, e.g. --set hift.train.num_steps=50). --skip_prep reuses WORK/data of an
# earlier run (and its corpus / prepare times). --parallel_train trains the parts at once (each logging to
# WORK/exp/train_<part>.log; each part's stage time is then its own wall time, overlapping the others'): on a
# machine where compilation and start-up dominate, as in the CI's smaller demo, that saves most of their time.
# --vocoder_check 1 (the default; cosyvoice2 only) also vocodes every ground truth's own mel with the trained HiFT
# (python -m sovits2_jax.demo.vocode -> WORK/vocoded) and evaluates that: the ceiling the vocoder sets.
# --ladder 1 (the default for small) adds the quality ladder's other rungs and its calibration rows:
# python -m sovits2_jax.demo.ladder (the decoder from ground-truth tokens: cosyvoice2's flow + HiFT and its
# Griffin-Lim rendering, gpt_sovits2's VITS2; the LM's token error -> WORK/ladder) and python -m sovits2_jax.demo.calibration (espeak, another voice, another text,
# noise, Griffin-Lim of the truth -> WORK/calibration), all scored by one evaluator run; docs/results.md reads it.
# --languages en,fr,de,es gives the speakers these languages (round-robin); --code_switch F makes a fraction F of
# the utterances switch to another of them inside the utterance (no language tag anywhere; the report breaks its
# metrics down by language). --extra_sentences N adds N composed English sentences to the training corpus's text (the dev sentences stay the
# natural held-out ones): the 222 built-in training sentences are few enough for an LM to memorise.
# --content ssl_grvq (gpt_sovits2; default s3: the S3 tokens) is GPT-SoVITS2's planned content path: SSL features
# (python -m sovits2_jax.data.prep.ssl_features; --ssl_model DIR: a HF HuBERT directory (768-d features), else a
# RANDOM-INIT tiny HuBERT (32-d, a pipeline check only; the stage's log says so), saved to WORK/hubert and carried as
# MODEL_DIR/hubert) -> the VITS trained on a grouped residual VQ of them (--codebooks 2: 2 groups x 1, 4: 2 x 2;
# 64 codes per codebook at tiny, 1024 at small) -> averaged, then its codes written to the shards (grvq_codes)
# -> the AR on K codebooks per frame -> synthesis (references' codes from their audio). The ladder's vocoder rung is
# the VITS from each utterance's own codes; python -m sovits2_jax.demo.code_usage -> WORK/code_usage.json (per
# codebook use and perplexity over the training codes, in the report). Not with --parallel_train (the AR needs the
# VITS's codes).
set -euo pipefail
set -f  # no globbing: config values such as (128,) travel as words
cd "$(dirname "$0")/../.."

size=tiny
work=
family=cosyvoice2
num_steps=
speakers=
hours=
extra_sentences=0
languages=en
code_switch=0
codebook_size=
average_num=
num_utts=
num_workers=2
seed=0
skip_prep=0
parallel_train=0
vocoder_check=1
ladder=
text_encoder=random
content=s3
codebooks=2
ssl_model=
sets=()

while [ $# -gt 0 ]; do
  case "$1" in
    --size) size=$2; shift 2 ;;
    --work) work=$2; shift 2 ;;
    --family) family=$2; shift 2 ;;
    --num_steps) num_steps=$2; shift 2 ;;
    --speakers) speakers=$2; shift 2 ;;
    --hours) hours=$2; shift 2 ;;
    --extra_sentences) extra_sentences=$2; shift 2 ;;
    --languages) languages=$2; shift 2 ;;
    --code_switch) code_switch=$2; shift 2 ;;
    --codebook_size) codebook_size=$2; shift 2 ;;
    --average_num) average_num=$2; shift 2 ;;
    --num_utts) num_utts=$2; shift 2 ;;
    --num_workers) num_workers=$2; shift 2 ;;
    --seed) seed=$2; shift 2 ;;
    --set) sets+=("$2"); shift 2 ;;
    --skip_prep) skip_prep=1; shift ;;
    --parallel_train) parallel_train=1; shift ;;
    --vocoder_check) vocoder_check=$2; shift 2 ;;
    --ladder) ladder=$2; shift 2 ;;
    --text_encoder) text_encoder=$2; shift 2 ;;
    --content) content=$2; shift 2 ;;
    --codebooks) codebooks=$2; shift 2 ;;
    --ssl_model) ssl_model=$2; shift 2 ;;
    -h|--help) sed -n '2,51p' "$0"; exit 0 ;;
    *) echo "builtin.sh: unknown option $1 (see --help)" >&2; exit 2 ;;
  esac
done

case "$family" in
  cosyvoice2) parts=(llm flow hift); config_file=configs/cosyvoice2.py ;;
  gpt_sovits2) parts=(ar vits); config_file=configs/gpt_sovits2.py ;;
  *) echo "builtin.sh: --family cosyvoice2|gpt_sovits2, got '$family'" >&2; exit 2 ;;
esac
case "$content" in
  s3) ;;
  ssl_grvq)
    [ "$family" = gpt_sovits2 ] || { echo "builtin.sh: --content ssl_grvq is gpt_sovits2's" >&2; exit 2; }
    case "$codebooks" in 2|4) ;; *) echo "builtin.sh: --codebooks 2|4, got '$codebooks'" >&2; exit 2 ;; esac
    [ "$parallel_train" = 0 ] || { echo "builtin.sh: --content ssl_grvq trains the VITS before the AR: no --parallel_train" >&2; exit 2; }
    [ -z "$ssl_model" ] || [ -d "$ssl_model" ] || { echo "builtin.sh: --ssl_model $ssl_model is not a directory" >&2; exit 2; }
    parts=(vits ar) ;;  # the AR trains on the averaged VITS's codes
  *) echo "builtin.sh: --content s3|ssl_grvq, got '$content'" >&2; exit 2 ;;
esac
# Per size: corpus hours and speakers, tokenizer codebook, checkpoints averaged, dev evaluations (= checkpoints)
# per part, dev utterances synthesised (0: all), and each part's steps and config settings. One bucket per LM /
# flow (data.num_buckets=1: fitted to the corpus) compiles one train-step shape.
# tiny keeps the compilations short: the flow's encoder 64 wide (the tiny preset keeps the release's 512) and a
# HiFT with one resblock kernel and fewer discriminator scales (the trainer tests' settings), lr 2e-3.
declare -A steps part_sets
case "$size" in
  tiny)
    d_hours=0.1; d_speakers=4; d_codebook=256; d_average=1; evals=2; d_utts=8; d_ladder=0; vq_codes=64
    steps=([llm]=100 [flow]=50 [hift]=50 [ar]=100 [vits]=50)
    part_sets=(
      [llm]="data.num_buckets=1 data.max_frames_in_batch=1024"
      [flow]="data.num_buckets=1 data.max_frames_in_batch=2560 model.input_size=64
              model.encoder.input_size=64 model.encoder.output_size=64 model.encoder.attention_heads=2
              model.encoder.linear_units=128"
      [hift]="model.base_channels=16 model.f0_cond_channels=8 model.resblock_kernel_sizes=(3,)
              model.resblock_dilation_sizes=((1,),) model.source_resblock_dilation_sizes=((1,),(1,),(1,))
              discriminator.mpd_periods=(2,3) discriminator.mrd_fft_sizes=(256,)
              discriminator.mrd_hop_sizes=(64,) discriminator.mrd_win_lengths=(128,)
              data.truncate_length=4800 data.bucket_lengths=(10,) data.max_frames_in_batch=40 train.eval_batches=2
              train.optimizer.lr=2e-3"
      [ar]="" [vits]="train.eval_batches=2") ;;
  small)
    d_hours=0.5; d_speakers=8; d_codebook=512; d_average=3; evals=4; d_utts=0; d_ladder=1; vq_codes=1024
    steps=([llm]=1000 [flow]=1300 [hift]=1800 [ar]=800 [vits]=1200)
    # the presets keep the recipe's optimisation (lr 1e-5 after 2500 warm-up steps, 32000 frames per step over 8
    # devices, accumulation 2): here lr 1e-3 from the first step and small batches (more updates per CPU-second).
    # The LM keeps Qwen2's 151936-row text embedding fixed (no dense gradient or Adam update of it each step); the
    # vocoder trains as hift_mel (its reconstruction losses without the discriminators: a GAN step costs about 20x);
    # likewise GPT-SoVITS2's decoder as vits_mel (mel + KL + duration; 1.5 s a step at 4 crops against 23 s for
    # the GAN step at 8), and its AR on one 1024-token row per step. The decoder's KL term and posterior noise
    # ramp in over its first 400 steps: at full strength from the start the posterior collapses (docs/results.md).
    cpu="data.batch_multiple=1 train.accum_steps=1 train.optimizer.lr=1e-3 train.optimizer.warmup_steps=0"
    part_sets=([llm]="data.num_buckets=1 data.max_frames_in_batch=1000 $cpu train.optimizer.freeze=('embed_tokens',)"
               [flow]="data.num_buckets=1 data.max_frames_in_batch=960 $cpu"
               [hift]="family=hift_mel data.max_frames_in_batch=102 $cpu train.optimizer.lr=5e-4 train.eval_batches=4"
               [ar]="data.batch_multiple=1 data.max_frames_in_batch=1024 $cpu"
               [vits]="family=vits_mel data.max_frames_in_batch=600 $cpu
                       model.kl_warmup_steps=400 train.eval_batches=4") ;;
  *) echo "builtin.sh: --size tiny|small, got '$size'" >&2; exit 2 ;;
esac
hours=${hours:-$d_hours}; speakers=${speakers:-$d_speakers}; codebook_size=${codebook_size:-$d_codebook}
case "$vocoder_check" in 0|1) ;; *) echo "builtin.sh: --vocoder_check 0|1, got '$vocoder_check'" >&2; exit 2 ;; esac
[ "$family" = cosyvoice2 ] || vocoder_check=0
ladder=${ladder:-$d_ladder}
case "$ladder" in 0|1) ;; *) echo "builtin.sh: --ladder 0|1, got '$ladder'" >&2; exit 2 ;; esac
average_num=${average_num:-$d_average}; num_utts=${num_utts:-$d_utts}
work=${work:-out/builtin-$family-$size}
# the AR's text encoder directory (gpt_sovits2; empty: BPE text)
case "$text_encoder" in
  none) text_encoder_dir= ;;
  random) text_encoder_dir=$work/text_encoder ;;
  *) [ -d "$text_encoder" ] || { echo "builtin.sh: --text_encoder $text_encoder is not a directory" >&2; exit 2; }
     text_encoder_dir=$text_encoder ;;
esac
[ "$family" = gpt_sovits2 ] || text_encoder_dir=
for v in num_steps speakers average_num num_utts num_workers extra_sentences; do
  case "${!v}" in *[!0-9]*) echo "builtin.sh: --$v must be a non-negative integer, got '${!v}'" >&2; exit 2 ;; esac
done
if [ -n "$num_steps" ]; then for part in "${parts[@]}"; do steps[$part]=$num_steps; done; fi
for kv in "${sets[@]}"; do
  part=${kv%%.*}
  case " ${parts[*]} " in
    *" $part "*) ;;
    *) echo "builtin.sh: --set $kv: PART is one of ${parts[*]}" >&2; exit 2 ;;
  esac
  case "$kv" in *=*) ;; *) echo "builtin.sh: --set $kv: expected PART.KEY=VALUE" >&2; exit 2 ;; esac
  case "${kv#*.}" in train.num_steps=*) steps[$part]=${kv#*=} ;; esac  # the eval cadence follows it
done
[ "${steps[${parts[0]}]}" -ge 1 ] && [ "$speakers" -ge 1 ] && [ "$average_num" -ge 1 ] || {
  echo "builtin.sh: --num_steps, --speakers and --average_num must be >= 1" >&2; exit 2; }

if [ -n "${PYTHON:-}" ]; then py=$PYTHON; elif [ -x .venv/bin/python ]; then py=.venv/bin/python; else py=python3; fi
export PYTHON=$py  # libritts.sh uses the same interpreter
mkdir -p "$work"
times=$work/stage_times.tsv
data=$work/data
exp=$work/exp
if [ "$skip_prep" = 1 ]; then
  for x in train dev; do
    [ -s "$data/$x/parquet/data.list" ] || { echo "builtin.sh: --skip_prep: no $data/$x/parquet" >&2; exit 2; }
  done
  grep -E '^(corpus|prepare)'$'\t' "$times" > "$times.tmp" 2>/dev/null || true
  mv "$times.tmp" "$times"
else
  : > "$times"
fi

# timed NAME CMD...: runs CMD, prints and records its wall time
timed() {
  local name=$1 t0 t1 secs
  shift
  t0=$(date +%s.%N)
  "$@"
  t1=$(date +%s.%N)
  secs=$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.1f", b - a }')
  echo "stage $name: $secs s"
  printf '%s\t%s\n' "$name" "$secs" >> "$times"
}

# trainer_args PART: the part's --config overrides, one per line: lists, cadence, the size's settings, then --set;
# a key given twice keeps its last value (config_flags would parse the second against the first's result)
trainer_args() {
  local part=$1 n=${steps[$1]} every kv key
  local -A value=()
  local -a keys=() pairs=()
  every=$(( n >= evals ? n / evals : n ))  # eval and checkpoint `evals` times
  pairs=("data.train_list=$data/train.data.list" "data.dev_list=$data/dev.data.list" "train.num_steps=$n"
         "train.log_every=$(( n / 30 > 0 ? n / 30 : 1 ))" "train.eval_every=$every" "train.checkpoint_every=$every"
         "train.keep_last=4")
  if { [ "$part" = ar ] || [ "$part" = vits ]; } && [ -n "$text_encoder_dir" ]; then  # ids + features (AR), features (VITS)
    pairs+=("data.text_source=bge_m3" "data.text_encoder=$text_encoder_dir")
  elif [ "$part" = ar ] && [ "$size" = small ]; then  # BPE text: Qwen2's 151936-row embedding stays fixed, as the LM's
    pairs+=("train.optimizer.freeze=('embed_tokens',)")
  fi
  if [ "$content" = ssl_grvq ] && [ "$part" = vits ]; then  # 2 groups x codebooks/2 residual stages
    pairs+=("model.content=ssl_grvq" "model.ssl_dim=$ssl_dim" "model.codebook_size=$vq_codes" "model.vq_groups=2"
            "model.vq_quantizers=$(( codebooks / 2 ))" "data.ssl_column=ssl_feature" "data.ssl_dim=$ssl_dim")
    [ "$size" != tiny ] || pairs+=("model.vq_kmeans_iters=10")
  elif [ "$content" = ssl_grvq ] && [ "$part" = ar ]; then
    pairs+=("model.num_codebooks=$codebooks" "data.num_codebooks=$codebooks" "model.speech_token_size=$vq_codes"
            "data.speech_token_size=$vq_codes")
  fi
  for kv in ${part_sets[$part]}; do pairs+=("$kv"); done
  for kv in "${sets[@]}"; do if [ "${kv%%.*}" = "$part" ]; then pairs+=("${kv#*.}"); fi; done
  for kv in "${pairs[@]}"; do
    key=${kv%%=*}
    [ -n "${value[$key]+set}" ] || keys+=("$key")
    value[$key]=${kv#*=}
  done
  for key in "${keys[@]}"; do printf -- '--config.%s=%s\n' "$key" "${value[$key]}"; done
}

recipe=(bash launch/recipes/libritts.sh --work "$work" --size "$size" --hours "$hours" --speakers "$speakers"
        --codebook_size "$codebook_size" --num_workers "$num_workers" --seed "$seed" --average_num "$average_num"
        --extra_sentences "$extra_sentences" --languages "$languages" --code_switch "$code_switch")
echo "builtin.sh: $family ($content), size $size, $speakers speakers ($languages), $hours h -> $work"
t_start=$(date +%s.%N)
if [ "$skip_prep" = 0 ]; then
  timed corpus "${recipe[@]}" --stage -1 --stop_stage -1
  timed prepare "${recipe[@]}" --stage 0 --stop_stage 3
fi
if [ -n "$text_encoder_dir" ]; then  # resumable: a rerun (--skip_prep too) skips the shards already done
  timed text_features "$py" -m sovits2_jax.data.prep.text_features --data_list "$data/train/parquet/data.list" \
    --data_list "$data/dev/parquet/data.list" --text_encoder "$text_encoder" --save_to "$work/text_encoder" \
    --seed "$seed"
fi
if [ "$content" = ssl_grvq ]; then  # resumable like text_features; the encoder that ran goes to WORK/hubert
  [ -n "$ssl_model" ] || echo "builtin.sh: no --ssl_model: SSL features from a RANDOM-INIT tiny HuBERT (32-d; a pipeline check only)"
  ssl_args=(--save_to "$work/hubert" --seed "$seed")
  [ -z "$ssl_model" ] || ssl_args+=(--ssl_model "$ssl_model")
  ssl_features() {
    local x
    for x in train dev; do
      "$py" -m sovits2_jax.data.prep.ssl_features --data_list "$data/$x/parquet/data.list" "${ssl_args[@]}" || return 1
    done
  }
  timed ssl_features ssl_features
  ssl_dim=$("$py" -c 'import json, sys; print(json.load(open(sys.argv[1]))["config"]["hidden_size"])' \
    "$work/hubert/meta.json")
fi
cat "$data/train/parquet/data.list" > "$data/train.data.list"
cat "$data/dev/parquet/data.list" > "$data/dev.data.list"

if [ "$family" = cosyvoice2 ]; then model_dir=$work/CosyVoice2; else model_dir=$work/GptSoVITS2; fi
# train PART: that part's trainer with its size's settings
train() {
  local -a args
  mapfile -t args < <(trainer_args "$1")
  "$py" -m sovits2_jax.train --config="$config_file:${1}_$size" --workdir="$exp/$1" "${args[@]}"
}
# average_part PART: its best checkpoints (by dev loss) -> MODEL_DIR/PART. The VITS keeps its last one instead: its
# dev loss adds the KL estimate of the noise-free eval forward, which falls as the posterior's std grows whatever the
# decoder does (a small run's lowest came at step 300 of 1200, with the worst mel term), and its checkpoints lie on a
# still falling curve, so averaging them mixes in worse weights.
average_part() {
  local by=dev_loss num=$average_num
  if [ "$1" = vits ]; then by=latest; num=1; fi
  timed "average_$1" "$py" -m sovits2_jax.train.average --workdir="$exp/$1" --num="$num" \
    --by="$by" --dst="$model_dir/$1"
}
for part in "${parts[@]}"; do
  echo "builtin.sh: train $part ($config_file:${part}_$size, ${steps[$part]} steps) -> $exp/$part"
done
if [ "$parallel_train" = 1 ]; then
  mkdir -p "$exp"
  declare -A pids=()
  t0=$(date +%s.%N)
  for part in "${parts[@]}"; do
    ( set +e; train "$part" > "$exp/train_$part.log" 2>&1; rc=$?; date +%s.%N > "$exp/.train_$part.end"; exit $rc ) &
    pids[$part]=$!
  done
  failed=()
  for part in "${parts[@]}"; do wait "${pids[$part]}" || failed+=("$part"); done
  for part in "${failed[@]}"; do
    echo "builtin.sh: training $part failed; the end of $exp/train_$part.log:" >&2
    tail -n 25 "$exp/train_$part.log" | sed -e '$a\' >&2  # ends the last line
  done
  [ ${#failed[@]} = 0 ] || exit 1
  for part in "${parts[@]}"; do
    secs=$(awk -v a="$t0" -v b="$(cat "$exp/.train_$part.end")" 'BEGIN { printf "%.1f", b - a }')
    grep -h "step .*: \(loss\|eval_loss\)" "$exp/train_$part.log" | tail -n 2 || true
    echo "stage train_$part: $secs s (in parallel)"
    printf '%s\t%s\tparallel\n' "train_$part" "$secs" >> "$times"
  done
else
  for part in "${parts[@]}"; do
    timed "train_$part" train "$part"
    if [ "$content" = ssl_grvq ] && [ "$part" = vits ]; then  # the AR's codes come from the averaged VITS
      average_part vits
      for x in train dev; do
        timed "grvq_codes_$x" "$py" -m sovits2_jax.data.prep.grvq_codes --data_list "$data/$x/parquet/data.list" \
          --vits "$model_dir/vits" --overwrite
      done
      timed code_usage "$py" -m sovits2_jax.demo.code_usage --data_list "$data/train/parquet/data.list" \
        --out "$work/code_usage.json"
    fi
  done
fi
if [ "$family" = gpt_sovits2 ]; then
  for part in "${parts[@]}"; do
    [ "$content" = ssl_grvq ] && [ "$part" = vits ] || average_part "$part"
  done
  rm -rf "$model_dir/hubert"
  if [ "$content" = ssl_grvq ]; then cp -r "$work/hubert" "$model_dir/hubert"; fi
  rm -rf "$model_dir/text_encoder"
  if [ -n "$text_encoder_dir" ]; then cp -r "$text_encoder_dir" "$model_dir/text_encoder"; fi
fi
if [ "$family" = cosyvoice2 ]; then
  timed average "${recipe[@]}" --stage 6 --stop_stage 6
  timed export "${recipe[@]}" --stage 7 --stop_stage 7
fi

timed synthesize "$py" -m sovits2_jax.demo.synthesize --model_dir "$model_dir" --family "$family" \
  --data_list "$data/dev/parquet/data.list" --out_dir "$work/synthesis" --num "$num_utts" --seed "$seed"
timed evaluate "$py" -m sovits2_jax.eval --wav_dir "$work/synthesis"
if [ "$vocoder_check" = 1 ]; then
  timed vocode "$py" -m sovits2_jax.demo.vocode --model_dir "$model_dir" --wav_dir "$work/synthesis" \
    --out_dir "$work/vocoded"
  timed evaluate_vocoded "$py" -m sovits2_jax.eval --wav_dir "$work/vocoded"
fi
if [ "$ladder" = 1 ]; then
  timed ladder "$py" -m sovits2_jax.demo.ladder --model_dir "$model_dir" --data_list "$data/dev/parquet/data.list" \
    --wav_dir "$work/synthesis" --out_dir "$work/ladder" --seed "$seed"
  scored=(--wav_dir "$work/ladder/resynthesis")
  if [ "$family" = cosyvoice2 ]; then scored+=(--wav_dir "$work/ladder/resynthesis_gl"); fi
  timed calibration "$py" -m sovits2_jax.demo.calibration --wav_dir "$work/synthesis" \
    --speakers "$work/corpus/dev/speakers.tsv" --out_dir "$work/calibration" --seed "$seed"
  for row in espeak other_voice other_text noise griffin_lim; do scored+=(--wav_dir "$work/calibration/$row"); done
  timed evaluate_ladder "$py" -m sovits2_jax.eval "${scored[@]}"
fi
timed report "$py" -m sovits2_jax.demo.report --work "$work" --size "$size"
awk -v a="$t_start" -v b="$(date +%s.%N)" 'BEGIN { printf "builtin.sh: total %.1f s\n", b - a }'
echo "builtin.sh: report in $work/report.md"
