"""Hugging Face LLaMA interchange: parameter conversion (convert.py), LlamaConfig (hf_config.py), tokenizer
files (tokenizer.py), model card (card.py), and import as the trainer's initial params,
`model.init_from="hf:DIR"` (load.py, reading DIR's files as untrusted input through files.py).
transformers, torch and safetensors (the `[hf]` extra) are imported only where they are needed. The
atomic export of a restored run lives in jaxsparse/hf/export.py, its replacement of an earlier export
in replace.py (hf/ imports no inference or train code)."""
