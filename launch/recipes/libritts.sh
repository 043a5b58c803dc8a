#!/usr/bin/env bash
# Staged LibriTTS recipe, mirroring CosyVoice's examples/libritts/cosyvoice2/run.sh.
#
#   launch/recipes/libritts.sh --stage -1 --stop_stage 7 [--corpus DIR | --list FILE [--dev_list FILE]] \
#       [--work DIR] [--download 1 | --parts "dev-clean test-clean ..."] [--download_url PREFIX] [--md5 FILE] \
#       [--campplus campplus.onnx] [--speech_tokenizer speech_tokenizer_v2.onnx] \
#       [--size tiny|small|""] [--num_steps N] [--pretrained_dir CosyVoice2-0.5B] [--average_num 5]
#
# Stages: -1 without --corpus/--list build the built-in espeak-ng corpus, train/ and dev/; with --download 1 (all
#          seven LibriTTS parts) or --parts download PREFIX/<part>.tar.gz (default www.openslr.org/resources/60,
#          as CosyVoice) into --corpus (default WORK/corpus): resumed with HTTP Range, checked against LibriTTS's
#          published sums (or --md5 FILE, md5sum format), extracted, DIR/.<part>.complete makes a rerun skip it,
#          0 Kaldi files (wav.scp, text, utt2spk, spk2utt), 1 speaker embeddings, 2 speech tokens, 3 Parquet,
#          4 inference of tts_text.json (--infer_mode sft|zero_shot, --infer_model_dir, --tts_text),
#          5 train llm, flow, hift (configs/cosyvoice2.py:<part>[_<size>], workdirs WORK/exp/<part>; a rerun
#          resumes), 6 average each part's checkpoints (--average_by dev_loss|latest), 7 export WORK/CosyVoice2
#          (llm.pt, flow.pt, hift.pt, cosyvoice2.yaml, CosyVoice-BlankEN, the ONNX front-end models).
# --pretrained_dir: a CosyVoice2 model directory to fine-tune from (--config.init.path) and to take the yaml and
# assets of the export from; its campplus.onnx / speech_tokenizer_v2.onnx prepare the data unless --campplus /
# --speech_tokenizer say otherwise (a directory without a tokenizer is refused before any stage runs), and the
# parts train at the release size unless --size is given. --size "" trains the release sizes (the default is tiny, seconds per step on CPU).
# --corpus: a LibriTTS-layout directory: either real LibriTTS (subsets such as train-clean-100 and dev-clean
# inside it or inside its LibriTTS/, as the archives unpack) or one set (SPEAKER/CHAPTER/*.wav directly inside).
# --list FILE (or a .list file as --corpus): a GPT-SoVITS list (wav_path|speaker|lang|text lines, wav paths relative
# to the list; --list_wav_dir DIR finds them by file name in DIR) prepared as set "train", --dev_list as "dev".
# Without --campplus / --speech_tokenizer the offline stand-ins are fitted on the first training set (see
# sovits2_jax/data/prep/offline_models.py); --offline_speaker resemblyzer uses resemblyzer's pretrained encoder
# instead (256-d, needs the package). The built-in corpus: --hours, --speakers, --languages, --code_switch F (the
# fraction of utterances that switch language inside), --extra_sentences N (composed English sentences added to the
# train set's text; sovits2_jax/data/prep/sentence_maker.py).
set -euo pipefail
cd "$(dirname "$0")/../.."

stage=-1
stop_stage=3
corpus=
work=exp/libritts
campplus=
speech_tokenizer=
hours=0.5
speakers=8
languages=en
extra_sentences=0
code_switch=0
seed=0
num_workers=2
num_utts_per_parquet=1000
codebook_size=512
dev_per_speaker=4
offline_speaker=stats
size=tiny size_given=0
num_steps=
pretrained_dir=
average_num=5
average_by=dev_loss
infer_mode=zero_shot
infer_model_dir=
tts_text=
download=0
parts=
download_url=www.openslr.org/resources/60
md5=
list_file=
dev_list=
list_wav_dir=

while [ $# -gt 0 ]; do
  case "$1" in
    --stage) stage=$2; shift 2 ;;
    --stop_stage) stop_stage=$2; shift 2 ;;
    --corpus) corpus=$2; shift 2 ;;
    --work) work=$2; shift 2 ;;
    --campplus) campplus=$2; shift 2 ;;
    --speech_tokenizer) speech_tokenizer=$2; shift 2 ;;
    --hours) hours=$2; shift 2 ;;
    --speakers) speakers=$2; shift 2 ;;
    --languages) languages=$2; shift 2 ;;
    --extra_sentences) extra_sentences=$2; shift 2 ;;
    --code_switch) code_switch=$2; shift 2 ;;
    --seed) seed=$2; shift 2 ;;
    --num_workers) num_workers=$2; shift 2 ;;
    --num_utts_per_parquet) num_utts_per_parquet=$2; shift 2 ;;
    --codebook_size) codebook_size=$2; shift 2 ;;
    --offline_speaker) offline_speaker=$2; shift 2 ;;
    --size) size=$2; size_given=1; shift 2 ;;
    --num_steps) num_steps=$2; shift 2 ;;
    --pretrained_dir) pretrained_dir=$2; shift 2 ;;
    --average_num) average_num=$2; shift 2 ;;
    --average_by) average_by=$2; shift 2 ;;
    --infer_mode) infer_mode=$2; shift 2 ;;
    --infer_model_dir) infer_model_dir=$2; shift 2 ;;
    --tts_text) tts_text=$2; shift 2 ;;
    --download) download=$2; shift 2 ;;
    --parts) parts=$2; shift 2 ;;
    --download_url) download_url=$2; shift 2 ;;
    --md5) md5=$2; shift 2 ;;
    --list) list_file=$2; shift 2 ;;
    --dev_list) dev_list=$2; shift 2 ;;
    --list_wav_dir) list_wav_dir=$2; shift 2 ;;
    -h|--help) sed -n '2,28p' "$0"; exit 0 ;;
    *) echo "libritts.sh: unknown option $1 (see --help)" >&2; exit 2 ;;
  esac
done

if [ -n "${PYTHON:-}" ]; then py=$PYTHON; elif [ -x .venv/bin/python ]; then py=.venv/bin/python; else py=python3; fi
case "$offline_speaker" in stats|resemblyzer) ;; *) echo "libritts.sh: --offline_speaker stats|resemblyzer" >&2; exit 2 ;; esac
case "$average_by" in dev_loss|latest) ;; *) echo "libritts.sh: --average_by dev_loss|latest" >&2; exit 2 ;; esac
if [ -n "$pretrained_dir" ] && [ ! -f "$pretrained_dir/cosyvoice2.yaml" ]; then
  echo "libritts.sh: --pretrained_dir $pretrained_dir is not a CosyVoice2 model directory (no cosyvoice2.yaml)" >&2; exit 2
fi
if [ -n "$pretrained_dir" ]; then
  # fine-tuning: the model's own front end (its speech tokens are the vocabulary it was trained on) and, unless
  # --size says otherwise, the release architecture the checkpoint has
  [ -n "$campplus" ] || [ ! -f "$pretrained_dir/campplus.onnx" ] || campplus=$pretrained_dir/campplus.onnx
  [ -n "$speech_tokenizer" ] || [ ! -f "$pretrained_dir/speech_tokenizer_v2.onnx" ] \
    || speech_tokenizer=$pretrained_dir/speech_tokenizer_v2.onnx
  [ "$size_given" = 1 ] || size=
  if [ -z "$speech_tokenizer" ]; then
    echo "libritts.sh: --pretrained_dir $pretrained_dir has no speech_tokenizer_v2.onnx: give --speech_tokenizer" \
      "(the tokenizer the model was trained with); stand-in codes fitted here would not match its vocabulary" >&2
    exit 2
  fi
fi
for f in "$campplus" "$speech_tokenizer"; do
  if [ -n "$f" ] && [ ! -f "$f" ]; then echo "libritts.sh: ONNX model $f does not exist" >&2; exit 2; fi
done
case "$download" in 0|1) ;; *) echo "libritts.sh: --download 0|1" >&2; exit 2 ;; esac
libritts_parts="dev-clean test-clean dev-other test-other train-clean-100 train-clean-360 train-other-500"
if [ "$download" = 1 ] && [ -z "$parts" ]; then parts=$libritts_parts; fi
if [ -z "$list_file" ] && [ "${corpus%.list}" != "$corpus" ]; then list_file=$corpus; corpus=; fi
if [ -n "$list_file" ]; then
  [ -z "$corpus" ] || { echo "libritts.sh: give --corpus or --list, not both" >&2; exit 2; }
  [ -z "$parts" ] || { echo "libritts.sh: --download/--parts fetch LibriTTS; they do not go with --list" >&2; exit 2; }
  for f in "$list_file" "$dev_list"; do
    if [ -n "$f" ] && [ ! -f "$f" ]; then echo "libritts.sh: list file $f does not exist" >&2; exit 2; fi
  done
elif [ -n "$dev_list" ] || [ -n "$list_wav_dir" ]; then
  echo "libritts.sh: --dev_list and --list_wav_dir go with --list" >&2; exit 2
fi
if [ -n "$md5" ] && [ ! -f "$md5" ]; then echo "libritts.sh: --md5 file $md5 does not exist" >&2; exit 2; fi
builtin=0
if [ -z "$corpus" ] && [ -z "$list_file" ]; then
  corpus=$work/corpus
  [ -n "$parts" ] || [ -d "$corpus/LibriTTS" ] || builtin=1  # a later run of stages >= 0 after a download
fi
data=$work/data
offline=$work/offline

if [ "$stage" -le -1 ] && [ "$stop_stage" -ge -1 ]; then
  if [ -n "$parts" ]; then
    echo "stage -1: download LibriTTS parts ($parts) from $download_url -> $corpus"
    $py -m sovits2_jax.data.prep.download --url_prefix "$download_url" --parts "$parts" --dst "$corpus" \
      ${md5:+--md5 "$md5"}
  elif [ -n "$list_file" ]; then
    echo "stage -1: using the list file $list_file (nothing to build)"
  elif [ "$builtin" = 1 ]; then
    echo "stage -1: built-in corpus ($hours h, $speakers speakers, $languages) -> $corpus/{train,dev}"
    $py -m sovits2_jax.data.prep.corpus --out "$corpus/train" --split train --hours "$hours" --speakers "$speakers" \
      --languages "$languages" --seed "$seed" --workers "$num_workers" --extra_sentences "$extra_sentences" \
      --code_switch "$code_switch"
    $py -m sovits2_jax.data.prep.corpus --out "$corpus/dev" --split dev --utterances "$((speakers * dev_per_speaker))" \
      --speakers "$speakers" --languages "$languages" --seed "$seed" --workers "$num_workers" \
      --code_switch "$code_switch"
  else
    echo "stage -1: using the corpus at $corpus (nothing to build)"
  fi
fi

# Sets to prepare (found after stage -1, which may have made them): the built-in corpus has train/ and dev/
# (same speakers, disjoint sentences); a list file is "train" (and --dev_list "dev"); a given corpus is either
# real LibriTTS (its subsets found inside it or inside its LibriTTS/) or one set, used as "train".
sets=()
root=$corpus
if [ -n "$list_file" ]; then
  sets=(train); [ -n "$dev_list" ] && sets+=(dev)
elif [ "$builtin" = 1 ]; then
  sets=(train dev)
else
  [ -d "$corpus/LibriTTS" ] && root=$corpus/LibriTTS
  for x in train-clean-100 train-clean-360 train-other-500 dev-clean dev-other test-clean test-other; do
    [ -d "$root/$x" ] && sets+=("$x")
  done
fi
single=0
if [ ${#sets[@]} -eq 0 ]; then sets=(train); single=1; fi
set_dir() { if [ "$single" = 1 ]; then echo "$root"; else echo "$root/$1"; fi; }
fit_set=${sets[0]}
for x in "${sets[@]}"; do case "$x" in train*) fit_set=$x; break ;; esac; done

if [ "$stage" -le 0 ] && [ "$stop_stage" -ge 0 ]; then
  for x in "${sets[@]}"; do
    echo "stage 0: Kaldi files for $x"
    if [ -n "$list_file" ]; then
      src=$list_file; [ "$x" = dev ] && src=$dev_list
      $py -m sovits2_jax.data.prep.kaldi --list "$src" ${list_wav_dir:+--wav_dir "$list_wav_dir"} --des_dir "$data/$x"
    else
      $py -m sovits2_jax.data.prep.kaldi --src_dir "$(set_dir "$x")" --des_dir "$data/$x"
    fi
  done
fi

if [ "$stage" -le 1 ] && [ "$stop_stage" -ge 1 ]; then
  if [ -z "$campplus" ] && [ "$offline_speaker" = resemblyzer ]; then
    campplus=$offline/resemblyzer.onnx
    echo "stage 1: no --campplus; exporting resemblyzer's encoder (256-d) -> $campplus"
    $py -m sovits2_jax.data.prep.offline_models resemblyzer --out "$campplus"
  elif [ -z "$campplus" ]; then
    campplus=$offline/speaker_encoder.onnx
    echo "stage 1: no --campplus; fitting the offline speaker encoder on $fit_set -> $campplus"
    $py -m sovits2_jax.data.prep.offline_models speaker --dir "$data/$fit_set" --out "$campplus"
  fi
  for x in "${sets[@]}"; do
    echo "stage 1: speaker embeddings for $x with $campplus"
    $py -m sovits2_jax.data.prep.onnx_extract embedding --dir "$data/$x" --onnx_path "$campplus" --num_workers "$num_workers"
  done
fi

if [ "$stage" -le 2 ] && [ "$stop_stage" -ge 2 ]; then
  if [ -z "$speech_tokenizer" ]; then
    speech_tokenizer=$offline/speech_tokenizer.onnx
    echo "stage 2: no --speech_tokenizer; fitting the offline tokenizer on $fit_set -> $speech_tokenizer"
    $py -m sovits2_jax.data.prep.offline_models tokenizer --dir "$data/$fit_set" --out "$speech_tokenizer" \
      --codebook_size "$codebook_size" --seed "$seed"
  fi
  for x in "${sets[@]}"; do
    echo "stage 2: speech tokens for $x with $speech_tokenizer"
    $py -m sovits2_jax.data.prep.onnx_extract token --dir "$data/$x" --onnx_path "$speech_tokenizer" --num_workers "$num_workers"
  done
fi

if [ "$stage" -le 3 ] && [ "$stop_stage" -ge 3 ]; then
  for x in "${sets[@]}"; do
    echo "stage 3: Parquet for $x"
    $py -m sovits2_jax.data.prep.parquet_writer --src_dir "$data/$x" --des_dir "$data/$x/parquet" \
      --num_utts_per_parquet "$num_utts_per_parquet" --num_processes "$num_workers"
  done
fi

# Stage 4: synthesise the test set's tts_text.json (made from its first utterances when absent) with
# --infer_model_dir (default: --pretrained_dir, else stage 7's export) -> WORK/result/<mode>/{utt}_{i}.wav, wav.scp.
if [ "$stage" -le 4 ] && [ "$stop_stage" -ge 4 ]; then
  test_set=
  for x in test-clean dev-clean dev; do [ -f "$data/$x/parquet/data.list" ] && { test_set=$x; break; }; done
  [ -n "$test_set" ] || { echo "libritts.sh: stage 4 needs a test set's Parquet (run stages 0-3)" >&2; exit 2; }
  infer_dir=${infer_model_dir:-${pretrained_dir:-$work/CosyVoice2}}
  tts_text=${tts_text:-$work/tts_text.json}
  echo "stage 4: $infer_mode inference on $test_set with $infer_dir -> $work/result/$infer_mode"
  $py -m sovits2_jax.infer.cosyvoice2.recipe --model_dir "$infer_dir" --data_list "$data/$test_set/parquet/data.list" \
    --tts_text "$tts_text" --num_utts 4 --mode "$infer_mode" --result_dir "$work/result/$infer_mode"
fi

# Stages 5-7: CosyVoice2's llm, flow and hift trained on the Parquet lists, averaged, exported.
exp=$work/exp
parts=(llm flow hift)
train_sets=(); dev_sets=()
for x in "${sets[@]}"; do case "$x" in train*) train_sets+=("$x") ;; dev*) dev_sets+=("$x") ;; esac; done
train_list=$data/train.data.list
dev_list=$data/dev.data.list

if [ "$stage" -le 5 ] && [ "$stop_stage" -ge 5 ]; then
  [ ${#train_sets[@]} -gt 0 ] || { echo "libritts.sh: stage 5 needs a training set" >&2; exit 2; }
  for x in "${train_sets[@]}"; do cat "$data/$x/parquet/data.list"; done > "$train_list"
  for x in "${dev_sets[@]}"; do cat "$data/$x/parquet/data.list"; done > "$dev_list"
  dev_arg=$dev_list; [ -s "$dev_list" ] || dev_arg=
  for model in "${parts[@]}"; do
    echo "stage 5: train $model (configs/cosyvoice2.py:$model${size:+_$size}) -> $exp/$model"
    args=(--config="configs/cosyvoice2.py:$model${size:+_$size}" --workdir="$exp/$model"
          --config.data.train_list="$train_list" --config.data.dev_list="$dev_arg")
    [ -n "$num_steps" ] && args+=(--config.train.num_steps="$num_steps")
    [ -n "$pretrained_dir" ] && args+=(--config.init.path="$pretrained_dir")
    $py -m sovits2_jax.train "${args[@]}"
  done
fi

if [ "$stage" -le 6 ] && [ "$stop_stage" -ge 6 ]; then
  by=$average_by
  if [ "$by" = dev_loss ] && [ ! -s "$dev_list" ]; then by=latest; fi
  for model in "${parts[@]}"; do
    echo "stage 6: average $average_num $model checkpoints by $by -> $exp/$model/average"
    $py -m sovits2_jax.train.average --workdir="$exp/$model" --num="$average_num" --by="$by" --dst="$exp/$model/average"
  done
fi

if [ "$stage" -le 7 ] && [ "$stop_stage" -ge 7 ]; then
  model_dir=$work/CosyVoice2
  echo "stage 7: export -> $model_dir"
  args=(); for model in "${parts[@]}"; do args+=(--"$model"="$exp/$model/average"); done
  [ -n "$pretrained_dir" ] && args+=(--pretrained="$pretrained_dir")
  $py -m sovits2_jax.convert.cosyvoice2_export "${args[@]}" --dst="$model_dir"
  if [ -z "$pretrained_dir" ]; then  # the front-end models the data was prepared with
    spk_default=$offline/speaker_encoder.onnx; [ "$offline_speaker" = resemblyzer ] && spk_default=$offline/resemblyzer.onnx
    spk=${campplus:-$spk_default}; tok=${speech_tokenizer:-$offline/speech_tokenizer.onnx}
    [ -f "$spk" ] && cp "$spk" "$model_dir/campplus.onnx"
    [ -f "$tok" ] && cp "$tok" "$model_dir/speech_tokenizer_v2.onnx"
  fi
fi
