"""python scripts/gpu/shim_run.py SCRIPT ARGS...: run a benchmark script with the no-pycolmap shim applied."""
import os
import runpy
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.getcwd())
import nocolmap  # noqa: E402

print("shim applied:", nocolmap.apply(), flush=True)
script = sys.argv[1]
sys.argv = sys.argv[1:]
runpy.run_path(script, run_name="__main__")
