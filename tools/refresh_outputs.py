"""Re-run notebooks at their learner defaults and store the outputs in nbs/, so the docs show a real run.

    python tools/refresh_outputs.py 04_training 05_loss     # some notebooks (names or globs)
    python tools/refresh_outputs.py                          # all of them (about an hour on 2 CPU cores)

This is the one deliberate write of executed notebooks into nbs/ (the runner and the tests write under _runs/).
Notebooks run through `rdtcourse.course.execute_notebook`, as in the course runner, so progress bars leave one final
line. Each chapter's metrics.json and wall time go into nbs/learner_results.json, the home page's results table.
A notebook that fails is left untouched. The script runs nbdev-clean on the notebooks it refreshed; then commit.
"""

import fnmatch
import os
import subprocess
import sys
import time
from pathlib import Path
from rdtcourse.course import NotebookRun, execute_notebook, record_learner_run, _read_json

ROOT = Path(__file__).resolve().parent.parent
NBS = ROOT / "nbs"


def machine() -> str:
    import torch

    return f"{os.cpu_count()} CPU cores" if not torch.cuda.is_available() else torch.cuda.get_device_name(0)


def main(patterns) -> int:
    nbs = sorted(p for p in NBS.glob("*.ipynb") if not p.name.startswith("."))  # not a stale .NAME.executing.ipynb
    # a notebook's exact name selects only it ("06_rdt" is not also 06_rdt_train); otherwise a glob or a substring
    if patterns:
        stems = {p.stem for p in nbs}
        nbs = [
            p
            for p in nbs
            if any(p.stem == pt if pt in stems else fnmatch.fnmatch(p.stem, pt) or pt in p.stem for pt in patterns)
        ]
    failed = []
    try:
        for nb in nbs:
            run_dir = ROOT / "_runs" / "learner" / nb.stem  # every chapter's default out_dir
            for stale in ("metrics.json", "reference.json"):
                (run_dir / stale).unlink(missing_ok=True)
            t0 = time.time()
            out = NBS / f".{nb.stem}.executing.ipynb"  # same folder, so the final rename is atomic
            try:
                execute_notebook(nb, out, cwd=NBS)
                os.replace(out, nb)
            except Exception as e:
                print(f"FAILED {nb.name}: {(str(e).strip().splitlines() or [type(e).__name__])[-1]}")
                failed.append(nb.name)
                continue
            finally:
                if out.exists():
                    out.unlink()
            seconds = time.time() - t0
            if nb.stem[:2].isdigit() and not nb.stem.startswith("9") and (run_dir / "metrics.json").exists():
                run = NotebookRun(
                    nb.stem,
                    nb,
                    run_dir,
                    seconds,
                    _read_json(run_dir / "metrics.json"),
                    _read_json(run_dir / "reference.json"),
                )
                record_learner_run(run, ROOT, machine())
            print(f"refreshed {nb.name} in {seconds:.0f}s", flush=True)
    finally:  # clean only what this run wrote, so notebooks being edited meanwhile are left alone
        for nb in nbs:
            subprocess.run([str(Path(sys.executable).parent / "nbdev-clean"), "--fname", str(nb)], cwd=ROOT, check=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
