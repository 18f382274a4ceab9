#!/usr/bin/env python
"""Convert an official checkpoint (NAFNet, NAFNetLocal, Restormer ``.pth``) into a
``save_pretrained`` folder (config.json + model.safetensors).

The folder loads with ``NAFNet_arch.from_pretrained(folder)``, initialises training through
``path.pretrain_network: FOLDER`` (with the same ``network:`` mapping) and is evaluated with
``trainer.py -opt X.yml -test --weights FOLDER``. The ``.pth`` is read with
``torch.load(weights_only=True)``: no code inside it is ever run.

Examples:
    python scripts/convert_official_checkpoint.py --type NAFNet --preset GoPro-width64 \\
        --checkpoint NAFNet-GoPro-width64.pth --out checkpoints/pretrained/NAFNet-GoPro-width64
    python scripts/convert_official_checkpoint.py --type Restormer --preset motion-deblurring \\
        --checkpoint motion_deblurring.pth --out checkpoints/pretrained/Restormer-deblurring
    python scripts/convert_official_checkpoint.py --type NAFNet --checkpoint net_g_latest.pth \\
        --out out_dir width=32 "enc_blk_nums=[2,2,4,8]" middle_blk_num=12 "dec_blk_nums=[2,2,2,2]"
"""
from __future__ import annotations

import argparse
import ast
import json
import shutil
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from utils.errors import ConfigError, run_cli  # noqa: E402


def parse_option(text: str) -> tuple[str, object]:
    """``key=value`` with a Python literal value (``64``, ``[1,1,1,28]``, ``True``); anything
    that is not a literal is kept as a string. Never evaluates code."""
    if "=" not in text:
        raise ConfigError(f"options are key=value, got '{text}'")
    key, value = text.split("=", 1)
    try:
        return key.strip(), ast.literal_eval(value)
    except (ValueError, SyntaxError):
        return key.strip(), value


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog="\n\n".join(__doc__.split("\n\n")[1:]))
    parser.add_argument("--type", required=True, help="network type: NAFNet, NAFNetLocal or Restormer")
    parser.add_argument("--checkpoint", required=True, type=Path, help="official .pth (or .safetensors) file")
    parser.add_argument("--out", required=True, type=Path, help="save_pretrained folder to write")
    parser.add_argument("--preset", help="official configuration by name (e.g. GoPro-width64, SIDD-width32, default)")
    parser.add_argument("--param_key", help="checkpoint entry holding the weights (default: params, else the one present)")
    parser.add_argument("--overwrite", action="store_true", help="replace --out if it exists")
    parser.add_argument("options", nargs="*", help="official constructor keywords as key=value")
    args = parser.parse_args()

    from models.archs import get_network_classes
    from utils.registry import check_keywords

    config_cls, arch_cls = get_network_classes(args.type)
    if not hasattr(arch_cls, "from_official_checkpoint"):
        raise ConfigError(f"network {args.type} has no official checkpoint loader")
    options = dict(parse_option(o) for o in args.options)
    if args.preset:
        options["preset"] = args.preset
    check_keywords(options, config_cls.option_names(), "option", f"network {args.type}")
    if args.out.exists() and not args.overwrite:
        raise ConfigError(f"{args.out} exists (pass --overwrite to replace it)")

    net = arch_cls.from_official_checkpoint(args.checkpoint, param_key=args.param_key, **options)
    tmp = args.out.with_name(args.out.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        net.save_pretrained(tmp, safe_serialization=True)
        if args.out.exists():
            shutil.rmtree(args.out)
        tmp.rename(args.out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    n_params = sum(p.numel() for p in net.parameters())
    print(f"wrote {args.out}: {args.type} with {n_params:,} parameters")
    mapping = {"type": args.type, **{k: v for k, v in net.config.to_diff_dict().items() if k in config_cls.option_names()}}
    print(f"network: {json.dumps(mapping)}")  # JSON is valid YAML
    return 0


if __name__ == "__main__":
    run_cli(main)
