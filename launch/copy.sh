#!/usr/bin/env bash
# Put the code on every worker of a TPU VM, in ~/jaxsparse.
#
#   launch/copy.sh --tpu_name=NAME --zone=ZONE --project=PROJECT [--repo_url=URL --ref=main]
#       [--dry-run]
#
# With --repo_url: clone (first time) or fetch, then check out --ref (a branch, tag or commit)
# on every worker. Without it: pack this working tree (without .git, runs/ and caches) into a
# tarball, copy it to every worker and unpack it there.
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
REF="${REF:-main}"
parse_flags "tpu_name zone project repo_url ref" "$@"
require TPU_NAME ZONE PROJECT
need_gcloud
GC=(--project="$PROJECT" --zone="$ZONE")
SSH=(gcloud compute tpus tpu-vm ssh "$TPU_NAME" "${GC[@]}" --worker=all)

if [[ -n "${REPO_URL:-}" ]]; then
  run "${SSH[@]}" --command="set -e; if [ ! -d ~/jaxsparse/.git ]; then git clone $REPO_URL \
~/jaxsparse; fi; git -C ~/jaxsparse fetch origin $REF; git -C ~/jaxsparse checkout --detach FETCH_HEAD"
else
  TARBALL="/tmp/jaxsparse-code-${TPU_NAME}.tar.gz"
  run tar -czf "$TARBALL" -C "$REPO_ROOT" --exclude=./.git --exclude=./runs \
      --exclude=__pycache__ --exclude='*.egg-info' .
  run gcloud compute tpus tpu-vm scp "$TARBALL" "$TPU_NAME:jaxsparse-code.tar.gz" "${GC[@]}" \
      --worker=all
  run "${SSH[@]}" --command="set -e; mkdir -p ~/jaxsparse; tar -xzf ~/jaxsparse-code.tar.gz \
-C ~/jaxsparse; rm ~/jaxsparse-code.tar.gz"
fi
