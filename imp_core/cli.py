"""The `imp` command: one subcommand per stage (hloc-style: any stage can be rerun alone from its files)."""
from __future__ import annotations

import argparse
import importlib
import logging
import sys
from typing import List, Optional

from .errors import ImpError

# Modules that add subcommands via ``register(subparsers)``; heavy imports happen inside the handlers.
# Packages above imp_core (imp_ros: `imp bag make`) add theirs through the ``imp.commands`` entry-point group
# (setup.py), so this ROS-free library never imports them.
COMMAND_MODULES = [
    "imp_core.world.commands",  # world
    "imp_core.localization.benchmark",  # benchmark aachen|robotcar|synthetic
    "imp_core.mapping.commands",  # map build / map info
    "imp_core.localization.commands",  # localize
    "imp_core.eval.commands",  # eval
    "imp_core.recognition.commands",  # instances, train-recognition, eval-recognition
    "imp_core.training.commands",  # dump, train-matcher
]
PLUGIN_GROUP = "imp.commands"


def command_modules() -> List[str]:
    """imp_core's command modules, then those installed packages register under ``imp.commands``."""
    from importlib.metadata import entry_points

    plugins = sorted(ep.value for ep in entry_points(group=PLUGIN_GROUP))
    return COMMAND_MODULES + [m for m in plugins if m not in COMMAND_MODULES]


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="imp",
        description="imp: visual localization against a prebuilt map (LBR instance recognition, IMP/EIMP matching). "
                    "Typical flow: `imp world` (or your dataset) -> `imp map build` -> `imp localize` -> `imp eval`. "
                    "The ROS 2 nodes (localizer, replay, evaluator) run the same pipeline online.",
    )
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for mod in command_modules():
        importlib.import_module(mod).register(sub)
    return p


def main(argv: Optional[List[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(levelname)s %(name)s: %(message)s")
    try:
        import pycolmap

        pycolmap.logging.minloglevel = 0 if args.verbose else 2
    except (ImportError, AttributeError):
        pass
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    # ImpError: every error imp raises on purpose (imp_core/errors.py). OSError: a user's file the OS refuses (missing,
    # unreadable). ValueError/KeyError: what the parsers raise for a malformed user file (json, numpy, h5py) and the
    # argument checks that still raise the builtin types.
    except (ImpError, OSError, ValueError, KeyError) as e:
        if args.verbose:
            raise
        print(f"imp {args.command}: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
