"""Render a JobSet manifest (JSON, which kubectl reads as it reads YAML) that runs one command on
every host of a TPU slice on GKE, from the arguments launch/ takes: the slice, the run's name, the
image and the command after --.

    python3 launch/k8s/render.py --accelerator=v5e-16 --image=IMAGE --run_name=NAME \\
        [--workers=N] [--bucket=BUCKET] [--service_account=KSA] [--env KEY=VALUE ...] \\
        [--max_restarts=3] -- python3 -m jaxsparse.train --config=... --workdir=/mnt/gcs/runs/NAME

The slice's shape is --compile_for's (jaxsparse.train.tpu_target.slices): one Job per slice (KxNAME gives
K), one pod per host, each pod asking for the host's chips (google.com/tpu) on a node pool of the
slice's accelerator and topology. --workers, if given, must equal the slice's host count. GKE gives
each pod the TPU worker variables, from which jax.distributed.initialize() joins the hosts into one
job. A pod that fails fails its Job, and JobSet restarts all of them (up to --max_restarts times):
the trainer resumes from its last checkpoint. --bucket mounts a GCS bucket at /mnt/gcs (the GCS FUSE
CSI driver; --service_account names a Kubernetes service account allowed to read and write it).
Bad arguments: one line on stderr, exit 2, nothing printed on stdout.
"""
from __future__ import annotations

import argparse
import json
import re
import sys
from typing import Any

from jaxsparse.errors import ConfigError
from jaxsparse.train.tpu_target.slices import Slice, parse_slice

# GKE's node label cloud.google.com/gke-tpu-accelerator for each TPU generation of the slice table.
GKE_ACCELERATOR = {"v4": "tpu-v4-podslice", "v5p": "tpu-v5p-slice", "v5e": "tpu-v5-lite-podslice",
                   "v6e": "tpu-v6e-slice"}
MOUNT = "/mnt/gcs"
# TPU runtime, multislice (megascale) transport, jax.distributed's coordinator on TPU
PORTS = {"tpu-runtime": 8471, "megascale": 8080, "jax-coordinator": 8482}
_NAME = re.compile(r"[a-z]([-a-z0-9]{0,38}[a-z0-9])?")  # a DNS label short enough for pod hostnames
_ENV = re.compile(r"([A-Za-z_][A-Za-z0-9_]*)=(.*)", re.S)


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # one line, exit 2 (argparse prints the usage as well)
        raise ConfigError(message)


def parse_args(argv: list[str]) -> argparse.Namespace:
    """The flags before `--`, and the command after it (`command`, a list of words)."""
    if "--" not in argv:
        raise ConfigError("no command: give it after --, e.g. -- python3 -m jaxsparse.train "
                          "--config=configs/paper.py:size=162m --workdir=/mnt/gcs/runs/162m")
    cut = argv.index("--")
    flags, command = argv[:cut], argv[cut + 1:]
    p = _Parser(prog="launch/k8s/render.py", allow_abbrev=False)
    for name in ("accelerator", "image", "run_name"):
        p.add_argument(f"--{name}", required=True)
    p.add_argument("--workers", type=int)
    p.add_argument("--bucket")
    p.add_argument("--service_account")
    p.add_argument("--env", action="append", default=[])
    p.add_argument("--max_restarts", type=int, default=3)
    args = p.parse_args(flags)
    if not command:
        raise ConfigError("no command after --")
    args.command = command
    return args


def check(args: argparse.Namespace) -> Slice:
    """The slice of --accelerator, after checking every flag (ConfigError naming the flag)."""
    try:
        target = parse_slice(args.accelerator)
    except ConfigError as err:
        raise ConfigError(str(err).replace(f"--compile_for={args.accelerator!r}",
                                           f"--accelerator={args.accelerator}")) from None
    if not _NAME.fullmatch(args.run_name):
        raise ConfigError(f"--run_name={args.run_name}: expected 1-40 lower-case letters, digits and '-', "
                          "starting with a letter and not ending with '-' (it names the JobSet and its pods)")
    if args.workers is not None and args.workers != target.hosts:
        raise ConfigError(f"--workers={args.workers}: a {target.name} slice has {target.hosts} hosts of "
                          f"{target.chips_per_host} chips (topology {target.topology_name})")
    bad_env = [kv for kv in args.env if not _ENV.fullmatch(kv)]
    if bad_env:
        raise ConfigError(f"--env {bad_env[0]}: expected KEY=VALUE")
    if args.max_restarts < 0:
        raise ConfigError(f"--max_restarts={args.max_restarts}: expected 0 or more")
    if args.service_account and not args.bucket:
        raise ConfigError("--service_account is for the bucket's access: give --bucket as well")
    return target


def container(args: argparse.Namespace, target: Slice) -> dict[str, Any]:
    """The pod's one container: the command, its environment, the host's chips, the bucket mount."""
    env = [{"name": m.group(1), "value": m.group(2)} for m in map(_ENV.fullmatch, args.env)]
    out: dict[str, Any] = {
        "name": "train", "image": args.image, "command": list(args.command),
        "ports": [{"name": name, "containerPort": port} for name, port in PORTS.items()],
        "resources": {"limits": {"google.com/tpu": target.chips_per_host}},
    }
    if env:
        out["env"] = env
    if args.bucket:
        out["volumeMounts"] = [{"name": "gcs", "mountPath": MOUNT}]
    return out


def pod_template(args: argparse.Namespace, target: Slice) -> dict[str, Any]:
    topology = target.topology_name.split(":", 1)[1]
    spec: dict[str, Any] = {
        "restartPolicy": "Never",
        "nodeSelector": {"cloud.google.com/gke-tpu-accelerator": GKE_ACCELERATOR[target.generation],
                         "cloud.google.com/gke-tpu-topology": topology},
        "containers": [container(args, target)],
    }
    metadata: dict[str, Any] = {}
    if args.bucket:
        metadata["annotations"] = {"gke-gcsfuse/volumes": "true"}
        spec["volumes"] = [{"name": "gcs", "csi": {
            "driver": "gcsfuse.csi.storage.gke.io",
            "volumeAttributes": {"bucketName": args.bucket, "mountOptions": "implicit-dirs"}}}]
        if args.service_account:
            spec["serviceAccountName"] = args.service_account
    return {"metadata": metadata, "spec": spec} if metadata else {"spec": spec}


def manifest(args: argparse.Namespace) -> dict[str, Any]:
    """The JobSet of a checked run: K slices x hosts pods (see the module doc)."""
    target = check(args)
    job = {"parallelism": target.hosts, "completions": target.hosts, "completionMode": "Indexed",
           "backoffLimit": 0, "template": pod_template(args, target)}
    return {
        "apiVersion": "jobset.x-k8s.io/v1alpha2",
        "kind": "JobSet",
        "metadata": {"name": args.run_name, "labels": {"app.kubernetes.io/name": "jaxsparse"},
                     "annotations": {"alpha.jobset.sigs.k8s.io/exclusive-topology":
                                     "cloud.google.com/gke-nodepool"}},
        "spec": {"failurePolicy": {"maxRestarts": args.max_restarts},
                 "replicatedJobs": [{"name": "slice", "replicas": target.num_slices,
                                     "template": {"spec": job}}]},
    }


def main(argv: list[str]) -> int:
    try:
        out = manifest(parse_args(argv))
    except ConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
