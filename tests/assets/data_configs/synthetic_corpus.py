"""Writes small deterministic plain-text corpora for the data tests (no network, well under 1 MB)."""

from __future__ import annotations

import json
import os

import numpy as np


def _words(rng: np.random.Generator, n: int) -> list[str]:
    letters = list("abcdefghijklmnopqrstuvwxyz")
    return ["".join(rng.choice(letters, size=int(rng.integers(2, 8)))) for _ in range(n)]


def _paragraph(rng: np.random.Generator, words: list[str], doc_id: str) -> str:
    lines = []
    for _ in range(int(rng.integers(1, 5))):
        line = " ".join(rng.choice(words, size=int(rng.integers(3, 12))))
        lines.append(line.capitalize() + rng.choice([".", ",", "!", "?", ";"]))
    return f"[{doc_id}] " + "\n".join(lines)


def write_corpus(
    root: str, *, txt_files: int = 5, paragraphs: int = 30, jsonl_lines: int = 40, seed: int = 0
) -> str:
    """Writes `root/plays/*.txt` (paragraphs separated by blank lines) and `root/notes.jsonl`.

    Every paragraph and every jsonl text starts with a unique tag "[...]", so documents are distinct.
    Returns root.
    """
    rng = np.random.default_rng(seed)
    words = _words(rng, 300)
    os.makedirs(os.path.join(root, "plays"), exist_ok=True)
    for f in range(txt_files):
        paras = [_paragraph(rng, words, f"p{f}.{i}") for i in range(paragraphs)]
        with open(os.path.join(root, "plays", f"play_{f}.txt"), "w", encoding="utf-8") as fh:
            fh.write("\n\n".join(paras) + "\n")
    with open(os.path.join(root, "notes.jsonl"), "w", encoding="utf-8") as fh:
        for i in range(jsonl_lines):
            fh.write(
                json.dumps({"text": _paragraph(rng, words, f"j{i}") + " café ünïcode ∑", "id": i}) + "\n"
            )
    return root
