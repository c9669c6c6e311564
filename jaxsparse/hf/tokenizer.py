"""Hugging Face tokenizer files (tokenizer.json + tokenizer_config.json) for our tokenizers.

`AutoTokenizer.from_pretrained(DIR)` then encodes text to the ids our tokenizer gives, with BOS first
(as our training data starts every document), and decodes them back:
- SentencePiece (trained "embedded" models and .model files): the BPE vocabulary and merges come from
  transformers' own SentencePiece converter; the whitespace handling is then set to SentencePiece's
  (a "▁" dummy prefix before the text even when it starts with a space, spaces as "▁", words split
  before "▁"), and user-defined pieces such as "\\n" are ordinary vocabulary entries, as in
  SentencePiece, rather than added tokens (which would restart the dummy prefix after each one).
  The .model file is copied too, as tokenizer.model, without the local paths its trainer recorded.
- bytes: UTF-8 bytes b -> id b + 3 through the byte-level pre-tokenizer, no merges.
"""
from __future__ import annotations

import json
import os
import tempfile
from typing import Any

from jaxsparse.data.tokenizer import ByteTokenizer, SentencePieceTokenizer
from jaxsparse.hf.card import without_local_paths

SPECIAL = {"pad_token": "<pad>", "bos_token": "<s>", "eos_token": "</s>"}


def _post_processor(bos: str, bos_id: int) -> dict[str, Any]:
    return {"type": "TemplateProcessing",
            "single": [{"SpecialToken": {"id": bos, "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}}],
            "pair": [{"SpecialToken": {"id": bos, "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}},
                     {"SpecialToken": {"id": bos, "type_id": 1}}, {"Sequence": {"id": "B", "type_id": 1}}],
            "special_tokens": {bos: {"id": bos, "ids": [bos_id], "tokens": [bos]}}}


def _sentencepiece_json(tok: SentencePieceTokenizer) -> dict[str, Any]:
    from transformers import AutoTokenizer

    with tempfile.TemporaryDirectory() as tmp:  # transformers' SentencePiece converter reads a folder
        with open(os.path.join(tmp, "tokenizer.model"), "wb") as f:
            f.write(tok._proto)
        with open(os.path.join(tmp, "tokenizer_config.json"), "w", encoding="utf-8") as f:
            json.dump({"tokenizer_class": "LlamaTokenizer", "legacy": False, "add_bos_token": False}, f)
        converted = AutoTokenizer.from_pretrained(tmp)
        spec = json.loads(converted.backend_tokenizer.to_str())
    sp = tok._sp
    special = {sp.id_to_piece(i) for i in range(sp.get_piece_size()) if sp.is_control(i) or sp.is_unknown(i)}
    spec["added_tokens"] = [t for t in spec["added_tokens"] if t["content"] in special]
    for t in spec["added_tokens"]:
        t["special"] = True
    spec["normalizer"] = {"type": "Sequence", "normalizers": [
        {"type": "Prepend", "prepend": "▁"}, {"type": "Replace", "pattern": {"String": " "}, "content": "▁"}]}
    spec["pre_tokenizer"] = {"type": "Metaspace", "replacement": "▁", "prepend_scheme": "never", "split": True}
    spec["post_processor"] = _post_processor(sp.id_to_piece(tok.bos_id), tok.bos_id)
    return spec


def _byte_chars() -> dict[int, str]:
    """The byte-level pre-tokenizer's character for each byte: printable Latin-1 bytes stand for
    themselves, the other 68 take the characters 256, 257, ... in byte order."""
    printable = set(range(ord("!"), ord("~") + 1)) | set(range(0xA1, 0xAD)) | set(range(0xAE, 0x100))
    chars, extra = {}, 0
    for b in range(256):
        if b in printable:
            chars[b] = chr(b)
        else:
            chars[b] = chr(256 + extra)
            extra += 1
    return chars


def _bytes_json(tok: ByteTokenizer) -> dict[str, Any]:
    from tokenizers import pre_tokenizers

    char_of = _byte_chars()
    if set(char_of.values()) != set(pre_tokenizers.ByteLevel.alphabet()):
        raise RuntimeError("the installed tokenizers' ByteLevel alphabet is not the expected one")
    names = {tok.pad_id: SPECIAL["pad_token"], tok.bos_id: SPECIAL["bos_token"], tok.eos_id: SPECIAL["eos_token"]}
    vocab = {name: i for i, name in names.items()}
    vocab.update({char_of[b]: b + tok.offset for b in range(256)})
    added = [{"id": i, "content": name, "single_word": False, "lstrip": False, "rstrip": False,
              "normalized": False, "special": True} for i, name in sorted(names.items())]
    return {"version": "1.0", "truncation": None, "padding": None, "added_tokens": added, "normalizer": None,
            "pre_tokenizer": {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": False,
                              "use_regex": False},
            "post_processor": _post_processor(SPECIAL["bos_token"], tok.bos_id),
            "decoder": {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": False, "use_regex": False},
            "model": {"type": "BPE", "dropout": None, "unk_token": None, "continuing_subword_prefix": None,
                      "end_of_word_suffix": None, "fuse_unk": False, "byte_fallback": False,
                      "ignore_merges": False, "vocab": vocab, "merges": []}}


def _without_trainer_paths(proto: bytes) -> bytes:
    """A serialized SentencePiece model without the local paths its trainer recorded (the input
    files and the model prefix); the pieces and the normalizer, so the tokenization, are unchanged."""
    from sentencepiece import sentencepiece_model_pb2  # protobuf: needed by transformers' converter too

    model = sentencepiece_model_pb2.ModelProto()
    model.ParseFromString(proto)
    model.trainer_spec.ClearField("input")
    model.trainer_spec.ClearField("model_prefix")
    return model.SerializeToString()


def write_tokenizer(tok: Any, out_dir: str) -> dict[str, Any]:
    """Write tokenizer.json, tokenizer_config.json (and tokenizer.model for SentencePiece) to `out_dir`;
    return the special-token ids {bos_token_id, eos_token_id, pad_token_id}."""
    if isinstance(tok, SentencePieceTokenizer):
        spec = _sentencepiece_json(tok)
        with open(os.path.join(out_dir, "tokenizer.model"), "wb") as f:
            f.write(_without_trainer_paths(tok._proto))
        sp = tok._sp
        names = {"bos_token": sp.id_to_piece(tok.bos_id), "eos_token": sp.id_to_piece(tok.eos_id),
                 "pad_token": sp.id_to_piece(tok.pad_id)}
        if sp.unk_id() >= 0:
            names["unk_token"] = sp.id_to_piece(sp.unk_id())
    elif isinstance(tok, ByteTokenizer):
        spec, names = _bytes_json(tok), dict(SPECIAL)
    else:
        raise TypeError(f"cannot export a tokenizer of type {type(tok).__name__}")
    with open(os.path.join(out_dir, "tokenizer.json"), "w", encoding="utf-8") as f:
        json.dump(spec, f, ensure_ascii=False)
    config = {"tokenizer_class": "PreTrainedTokenizerFast", **names, "add_bos_token": True,
              "add_eos_token": False, "clean_up_tokenization_spaces": False, "padding_side": "left",
              "model_max_length": 1_000_000_000, "jaxsparse_tokenizer": without_local_paths(tok.name)}
    with open(os.path.join(out_dir, "tokenizer_config.json"), "w", encoding="utf-8") as f:
        json.dump(config, f, indent=2, ensure_ascii=False)
    with open(os.path.join(out_dir, "special_tokens_map.json"), "w", encoding="utf-8") as f:
        json.dump(names, f, indent=2, ensure_ascii=False)
    return {"bos_token_id": tok.bos_id, "eos_token_id": tok.eos_id, "pad_token_id": tok.pad_id}
