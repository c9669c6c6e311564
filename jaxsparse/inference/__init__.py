"""Using a trained run: restore it from its checkpoint (restore.py), encode prompts (prompts.py), and
prefill + decode with a KV cache in one jitted loop (sampling.py); `jaxsparse.hf.export` writes it as a
Hugging Face LLaMA folder. The command lines are
`python -m jaxsparse.generate`, `python -m jaxsparse.evaluate` and `python -m jaxsparse.export`."""
