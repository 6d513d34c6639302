"""Re-run notebooks at their learner defaults and store the outputs in nbs/, so the docs show a real run.

    python tools/refresh_outputs.py 04_training 05_loss     # some notebooks (names or globs)
    python tools/refresh_outputs.py                          # all of them

This is the one deliberate write of executed notebooks into nbs/ (the runner and the tests write under _runs/).
A notebook that fails is left untouched. Run nbdev-clean afterwards (this script does) and commit.
"""
import fnmatch, subprocess, sys, time
from pathlib import Path
import os
import papermill as pm

os.environ["RDTCOURSE_BAR"] = "text"  # saved notebooks keep text progress bars, not frozen widgets

ROOT = Path(__file__).resolve().parent.parent
NBS = ROOT / "nbs"


def main(patterns) -> int:
    nbs = sorted(NBS.glob("*.ipynb"))
    if patterns: nbs = [p for p in nbs if any(fnmatch.fnmatch(p.stem, pt) or pt in p.stem for pt in patterns)]
    failed = []
    try:
        for nb in nbs:
            t0 = time.time()
            out = NBS / f".{nb.stem}.executing.ipynb"   # same folder, so the final rename is atomic
            try:
                pm.execute_notebook(str(nb), str(out), kernel_name="python3", cwd=str(NBS), progress_bar=False)
                os.replace(out, nb)
            except Exception as e:
                print(f"FAILED {nb.name}: {(str(e).strip().splitlines() or [type(e).__name__])[-1]}"); failed.append(nb.name); continue
            finally:
                if out.exists(): out.unlink()
            print(f"refreshed {nb.name} in {time.time() - t0:.0f}s")
    finally:
        subprocess.run([str(Path(sys.executable).parent / "nbdev-clean")], cwd=ROOT, check=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
