"""The results page and the home page are generated from the committed learner runs, and "is my run normal?" flags
a run outside the band."""

import json
import re
from conftest import ROOT
from rdtcourse.results import CHAPTERS, CHAPTER, check_run, check_report, headline_text, learner_results, total_minutes


def test_every_chapter_has_headlines_its_run_writes():
    results = learner_results(ROOT)
    chapters = sorted(p.stem for p in (ROOT / "nbs").glob("[0-9][0-9]_*.ipynb") if not p.stem.startswith("9"))
    assert sorted(c.name for c in CHAPTERS) == chapters, "results.CHAPTERS must list every chapter notebook"
    for c in CHAPTERS:
        assert c.headlines and c.name in results, c.name
        keys = [k for h in c.headlines for k in (h.key, h.ci, h.lo, h.hi, h.baseline) if k]
        assert set(keys) <= set(results[c.name]["metrics"]), (c.name, set(keys) - set(results[c.name]["metrics"]))
        assert len(headline_text(c, results[c.name]).split()) <= 25


def test_readme_states_the_course_commands_and_one_total_time_up_front():
    head = "\n".join((ROOT / "README.md").read_text().splitlines()[:25])
    assert "RDT" in head and "retrieval" in head and "ToW" in head and "DDP" in head
    assert head.count("python3 -m venv") == 2
    minutes = re.findall(r"(\d+) minutes", head)
    assert minutes == [f"{total_minutes(learner_results(ROOT)):.0f}"], minutes
    readme = (ROOT / "README.md").read_text()
    assert len(re.findall(r"\d+ minutes on 2 CPU cores", readme)) == 2  # the same total, and the table's line


def test_committed_run_is_normal_against_itself():
    for c in CHAPTERS:
        rows = check_run(c.name, learner_results(ROOT)[c.name]["metrics"], ROOT)
        assert rows and all(r["verdict"] == "as expected" for r in rows), (c.name, rows)


def test_a_run_outside_the_band_is_flagged(tmp_path):
    # a metrics.json pushed outside the band, as the course runner would read it from _runs/learner/<nb>/
    m = dict(learner_results(ROOT)["06_rdt_train"]["metrics"])
    m["exact_match_50"] -= 0.05  # far worse than the committed run
    m["avg_steps_50"] += 5  # neither better nor worse: just different
    m.pop("gain_over_one_pass_50")  # and a headline the run did not write
    (tmp_path / "metrics.json").write_text(json.dumps(m))
    rows = {
        r["metric"]: r for r in check_run("06_rdt_train", json.loads((tmp_path / "metrics.json").read_text()), ROOT)
    }
    h = CHAPTER["06_rdt_train"].headlines
    assert rows[h[0].label]["verdict"] == "worse than expected: see 06_rdt_train section 6"
    assert rows[h[1].label]["verdict"].startswith("missing")
    assert rows[h[2].label]["verdict"].startswith("different from expected")
    better = check_run("06_rdt_train", {**m, "exact_match_50": m["exact_match_50"] + 0.2}, ROOT)
    assert better[0]["verdict"].startswith("better than expected")
    text = check_report("06_rdt_train", list(rows.values()))
    assert "worse than expected" in text and "normal [" in text


def test_unknown_notebook_has_nothing_to_compare():
    assert check_run("not_a_chapter", {"x": 1}, ROOT) == []
    assert "no committed run" in check_report("not_a_chapter", [])


def test_course_command_checks_a_learner_run(tmp_path, monkeypatch, capsys):
    # `rdtcourse course --tier learner --only 04_training` ends on the check; here the run itself is faked
    from rdtcourse import cli
    from rdtcourse.course import NotebookRun

    m = {**learner_results(ROOT)["04_training"]["metrics"]}
    m["val_loss"] += 0.4

    def fake_run_course(tier, only, runs_dir=None, timeout=None):
        (tmp_path / "results.md").write_text("| results |\n")
        return [NotebookRun("04_training", tmp_path / "04_training.ipynb", tmp_path, 1.0, m, {})]

    monkeypatch.setattr(cli, "run_course", fake_run_course)
    assert cli.main(["course", "--tier", "learner", "--only", "04_training", "--set", f"runs_dir={tmp_path}"]) == 0
    out = capsys.readouterr().out
    assert "04_training: your run against the committed one" in out
    assert "worse than expected: see 04_training section" in out


def test_a_run_whose_comparison_turns_is_flagged():
    # recall within its band, but now on the other side of the most-popular baseline than in the committed run
    m = dict(learner_results(ROOT)["08_retrieval"]["metrics"])
    m["pop_recall_10"] = m["recall_10"] + (0.001 if m["recall_10"] > m["pop_recall_10"] else -0.001)
    row = check_run("08_retrieval", m, ROOT)[0]
    assert row["verdict"].startswith("as expected, but the comparison with most popular turned"), row["verdict"]
