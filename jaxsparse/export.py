"""Export a trained run as a Hugging Face LLaMA model folder.

    python -m jaxsparse.export --workdir=runs/default --out=DIR [--step=N] [--overwrite]

DIR then loads with `transformers.AutoModelForCausalLM.from_pretrained(DIR)` and
`AutoTokenizer.from_pretrained(DIR)`: config.json (LlamaConfig), model.safetensors (float32, every
pruned weight exactly 0.0), tokenizer files, generation_config.json and a model card (README.md) with
N̄, sparsity per layer and overall, tokens, eval loss and the config (no local paths). The folder is
written to a temporary directory that takes DIR's name when complete (atomically: DIR always names a
complete export, even if the command is killed); an existing DIR is refused without --overwrite, and
with it unless DIR is an earlier export (it holds jaxsparse-export.json); a symlink to one is
followed and kept. Missing parent folders of DIR are made; DIR inside a run directory is refused.
Exit 2 on bad input (nothing written), 1 if the write fails (e.g. a full disk; nothing left behind).
"""
from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from typing import Optional

from jaxsparse.errors import ArgumentParser, Fault, as_bad_input, entry_point


@entry_point
def main(argv: Optional[Sequence[str]] = None) -> int:
    p = ArgumentParser(prog="python -m jaxsparse.export", description=__doc__.split("\n")[0])
    p.add_argument("--workdir", required=True, help="training workdir (with checkpoints/)")
    p.add_argument("--out", required=True, help="folder to write (must not exist, unless --overwrite)")
    p.add_argument("--step", type=int, default=None, help="checkpoint step (default: the latest)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --out folder")
    args = p.parse_args(argv)
    from jaxsparse.hf.export import check_out_dir, write_export
    from jaxsparse.inference.restore import load_run
    from jaxsparse.train.workdir.layout import check_reader_output, read_summary
    from jaxsparse.train.workdir.records import read_records

    with as_bad_input(ValueError, FileNotFoundError):
        check_reader_output(args.out, args.workdir)
        check_out_dir(args.out, args.overwrite)
        run = load_run(args.workdir, args.step)
        summary, records = read_summary(args.workdir), read_records(args.workdir)
    try:
        result = write_export(run, args.out, args.overwrite, summary=summary, records=records)
    except OSError as err:  # e.g. a full disk: the temporary folder is gone, --out as it was
        raise Fault(f"--out={args.out}: could not write the export ({err}); nothing was "
                    f"left behind and {args.out} is as it was") from None
    print(json.dumps(result, indent=2, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
