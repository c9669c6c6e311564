"""launch/k8s/render.py: the JobSet of every slice --compile_for knows, validated against the JobSet
and Job schemas (tests/assets/k8s/schemas.json, with jsonschema); its shape against the slice table
and, with libtpu, against the hosts of the topology --compile_for compiles for; the guide's render
command as printed; bad arguments. No cluster is needed."""
from __future__ import annotations

import copy
import importlib.util
import json
import os
import re
import shlex
import subprocess
import sys

import jsonschema
import pytest
from train_utils import REPO

from jaxsparse.train.tpu_target.slices import CHIPS, EXAMPLES, parse_slice

RENDER = REPO / "launch" / "k8s" / "render.py"
GUIDE = REPO / "docs" / "launch-kubernetes.md"
SCHEMAS = json.loads((REPO / "tests" / "assets" / "k8s" / "schemas.json").read_text())
ARGS = ["--image=example.com/jaxsparse:1", "--run_name=run-1"]
COMMAND = ["python3", "-m", "jaxsparse.train", "--config=configs/paper.py:size=162m",
           "--workdir=/mnt/gcs/runs/162m", "--distributed=on"]


def _load_render():
    spec = importlib.util.spec_from_file_location("k8s_render", RENDER)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


render = _load_render()


def _validator(kind: str) -> jsonschema.Draft202012Validator:
    schema = dict(SCHEMAS, **{"$ref": f"#/$defs/{kind}"})
    jsonschema.Draft202012Validator.check_schema(schema)
    return jsonschema.Draft202012Validator(schema)


JOBSET, JOB = _validator("JobSet"), _validator("Job")


def _valid(jobset: dict) -> None:
    """The JobSet, and each Job its controller makes from a replicated job's template, are valid."""
    JOBSET.validate(jobset)
    for rj in jobset["spec"]["replicatedJobs"]:
        JOB.validate({"apiVersion": "batch/v1", "kind": "Job",
                      "metadata": {"name": f"{jobset['metadata']['name']}-{rj['name']}-0"},
                      "spec": rj["template"]["spec"]})


def known_slices() -> list[str]:
    """Every single-slice name parse_slice accepts (each generation, each power-of-two size), and the
    examples (multi-slice and alias names among them)."""
    names = []
    for generation in [*CHIPS, "v5litepod"]:
        for power in range(15):
            try:
                names.append(parse_slice(f"{generation}-{2 ** power}").name)
            except Exception:  # noqa: BLE001 - not a size of this generation
                continue
    return sorted(set(names) | set(EXAMPLES))


SLICES = known_slices()


def _render(accelerator: str, *extra: str) -> dict:
    return render.manifest(render.parse_args([f"--accelerator={accelerator}", *ARGS, *extra, "--", *COMMAND]))


def test_the_slice_list_covers_each_generation():
    assert {"v4-8", "v4-4096", "v5p-8", "v5e-1", "v5e-256", "v6e-1", "v6e-256", "2xv5e-256"} <= set(SLICES)
    assert len(SLICES) > len(EXAMPLES) and "v4-4" not in SLICES and "v5e-512" not in SLICES


@pytest.mark.parametrize("name", SLICES)
def test_every_slice_renders_a_valid_jobset_shaped_like_the_slice_table(name):
    target = parse_slice(name)
    jobset = _render(name)
    _valid(jobset)
    rj, = jobset["spec"]["replicatedJobs"]
    job = rj["template"]["spec"]
    pod = job["template"]["spec"]
    container, = pod["containers"]
    assert rj["replicas"] == target.num_slices
    assert job["parallelism"] == job["completions"] == target.hosts
    assert job["completionMode"] == "Indexed"
    assert container["resources"]["limits"]["google.com/tpu"] == target.chips_per_host
    assert target.hosts * target.chips_per_host == target.chips  # every chip of the slice is asked for
    assert pod["nodeSelector"] == {
        "cloud.google.com/gke-tpu-accelerator": render.GKE_ACCELERATOR[target.generation],
        "cloud.google.com/gke-tpu-topology": target.topology_name.split(":")[1]}
    assert container["command"] == COMMAND and container["image"] == "example.com/jaxsparse:1"
    assert render.manifest(render.parse_args([f"--accelerator={name}", f"--workers={target.hosts}", *ARGS,
                                              "--", *COMMAND])) == jobset


def test_hosts_and_chips_per_host_are_those_of_the_compiled_topology():
    """The slice table's hosts are the processes of the devices --compile_for compiles for."""
    pytest.importorskip("libtpu", reason="the TPU topologies need libtpu: pip install -e '.[tpu]'")
    from jaxsparse.train.tpu_target.compile_for import slice_devices
    for name in EXAMPLES:
        target = parse_slice(name)
        devices = slice_devices(target)
        processes = {d.process_index for d in devices}
        assert len(processes) == target.hosts * target.num_slices, name
        assert len(devices) == len(processes) * target.chips_per_host, name


def test_bucket_env_and_restarts():
    jobset = _render("v4-32", "--bucket=my-bucket", "--service_account=trainer", "--env", "A=1",
                     "--env=JAXSPARSE_DATA_DIR=/mnt/gcs/tfds", "--max_restarts=0")
    _valid(jobset)
    template = jobset["spec"]["replicatedJobs"][0]["template"]["spec"]["template"]
    pod, (container,) = template["spec"], template["spec"]["containers"]
    assert template["metadata"]["annotations"] == {"gke-gcsfuse/volumes": "true"}
    assert pod["volumes"] == [{"name": "gcs", "csi": {"driver": "gcsfuse.csi.storage.gke.io", "volumeAttributes": {
        "bucketName": "my-bucket", "mountOptions": "implicit-dirs"}}}]
    assert container["volumeMounts"] == [{"name": "gcs", "mountPath": "/mnt/gcs"}]
    assert pod["serviceAccountName"] == "trainer"
    assert container["env"] == [{"name": "A", "value": "1"}, {"name": "JAXSPARSE_DATA_DIR", "value": "/mnt/gcs/tfds"}]
    assert jobset["spec"]["failurePolicy"] == {"maxRestarts": 0}
    plain = _render("v4-32")
    assert "metadata" not in plain["spec"]["replicatedJobs"][0]["template"]["spec"]["template"]


@pytest.mark.parametrize("path, value", [
    (("spec", "replicatedJobs", 0, "template", "spec", "completionsMode"), "Indexed"),  # misspelt field
    (("spec", "replicatedJobs", 0, "template", "spec", "template", "spec", "restartPolicy"), "Always"),
    (("spec", "replicatedJobs", 0, "replicas"), "2"),
    (("metadata", "name"), "Run_1"),
    (("apiVersion",), "jobset.x-k8s.io/v1"),
])
def test_the_schemas_refuse_a_wrong_manifest(path, value):
    jobset = copy.deepcopy(_render("v5e-16"))
    node = jobset
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value
    with pytest.raises(jsonschema.ValidationError):
        _valid(jobset)


def _guide_commands() -> list[str]:
    text = GUIDE.read_text(encoding="utf-8")
    return [line for block in re.findall(r"^```bash\n(.*?)^```", text, re.S | re.M)
            for line in block.splitlines() if line.startswith("python3 launch/k8s/render.py")]


def test_the_guides_render_command_runs_as_printed(tmp_path):
    commands = _guide_commands()
    assert commands, f"{GUIDE} prints no render command"
    text = GUIDE.read_text(encoding="utf-8")
    assert "kubectl apply -f jobset.json" in text
    (tmp_path / "launch").symlink_to(REPO / "launch")  # the command runs in a checkout; writes here
    env = dict(os.environ, PYTHONPATH=str(REPO), PATH=f"{os.path.dirname(sys.executable)}:{os.environ['PATH']}")
    for command in commands:
        out = subprocess.run(["bash", "-c", command], cwd=tmp_path, env=env, capture_output=True, text=True,
                             timeout=120)
        assert out.returncode == 0, out.stderr[-2000:]
        target = shlex.split(command)[shlex.split(command).index(">") + 1]
        jobset = json.loads((tmp_path / target).read_text())
        _valid(jobset)
        assert jobset["spec"]["replicatedJobs"][0]["template"]["spec"]["parallelism"] >= 1


@pytest.mark.parametrize("argv, message", [
    (["--accelerator=v4-32", *ARGS], "error: no command: give it after --"),
    (["--accelerator=v4-32", *ARGS, "--"], "error: no command after --"),
    ([*ARGS, "--", "true"], "error: the following arguments are required: --accelerator"),
    (["--accelerator=v9-8", *ARGS, "--", "true"], "error: --accelerator=v9-8: unknown TPU generation 'v9'"),
    (["--accelerator=v4-32", "--workers=8", *ARGS, "--", "true"],
     "error: --workers=8: a v4-32 slice has 4 hosts of 4 chips (topology v4:2x2x4)"),
    (["--accelerator=v4-32", "--image=i", "--run_name=Run_1", "--", "true"], "error: --run_name=Run_1: expected"),
    (["--accelerator=v4-32", *ARGS, "--env", "NOVALUE", "--", "true"], "error: --env NOVALUE: expected KEY=VALUE"),
    (["--accelerator=v4-32", *ARGS, "--service_account=sa", "--", "true"], "error: --service_account is for"),
    (["--accelerator=v4-32", *ARGS, "--acelerator=v4-8", "--", "true"], "error: unrecognized arguments: --acelerator"),
])
def test_bad_arguments_are_one_line_and_exit_2(argv, message, capsys):
    assert render.main(argv) == 2
    out = capsys.readouterr()
    assert out.out == "" and out.err.startswith(message) and out.err.count("\n") == 1, out.err
