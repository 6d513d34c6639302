"""Sudoku (chapter 6, part 3): the one-line format, the rules, the generator, the naked-singles reference, the solver's
logic, saving a model and `rdtcourse rdt solve`."""

from dataclasses import asdict

import pytest
import torch
from rdtcourse.cli import main
from rdtcourse.core import CheckpointError, load_checkpoint, save_checkpoint
from rdtcourse.rdt import RDTModelConfig
from rdtcourse.rdt_sudoku import (
    BLANK,
    PEERS,
    format_grid,
    is_solved,
    load_solver,
    make_puzzles,
    naked_singles,
    parse_grids,
    pass_frames,
    random_grids,
    rule_breaks,
    save_solver,
    solve,
    sudoku_rdt,
    sudoku_splits,
    train_sudoku,
    SolverConfig,
    SudokuTrainConfig,
)

LINE = "3.542.81.4879.15.6.29.5637485.793.416132.8957.74.6528.2413.9.655.867.192.965124.8"
SOLUTION = "365427819487931526129856374852793641613248957974165283241389765538674192796512438"


def tiny(layers=1):
    cfg = RDTModelConfig(
        n_embd=16,
        n_head=2,
        n_encoder_layers=layers,
        d_ff=32,
        dropout=0.0,
        attention_bias="none",
        input_injection=True,
        gate_hidden_dim=8,
    )
    torch.manual_seed(0)
    return sudoku_rdt(cfg)


def test_every_cell_has_twenty_peers():
    assert PEERS.sum(1).tolist() == [20] * 81 and not PEERS.diagonal().any() and (PEERS == PEERS.T).all()


def test_the_format_round_trips_and_blanks_are_0_or_dot():
    g = parse_grids(LINE + "\n\n" + LINE.replace(".", "0") + "\n")
    assert g.shape == (2, 81) and (g[0] == g[1]).all() and format_grid(g[0]) == LINE


@pytest.mark.parametrize(
    "text, says",
    [
        (LINE + "\n" + LINE[:-1], "p.txt line 2: 80 characters; expected 81"),
        ("\n" + LINE[:40] + "x" + LINE[41:], "p.txt line 2: character 'x' at position 41"),
        ("33" + LINE[2:], "p.txt line 1: the givens break a rule (digit 3 twice in row 1)"),
        (LINE[:9] + "3" + LINE[10:], "the givens break a rule (digit 3 twice in column 1)"),
        ("\n\n", "p.txt holds no puzzle"),
    ],
)
def test_a_bad_line_is_named(text, says):
    with pytest.raises(ValueError, match=says.replace("(", r"\(").replace(")", r"\)")):
        parse_grids(text, "p.txt")


def test_naked_singles_solve_a_known_puzzle_and_count_rounds():
    p = parse_grids(LINE)
    ns = naked_singles(p, keep_states=True)
    assert format_grid(ns.grids[0]) == SOLUTION and ns.rounds.item() >= 1
    blanks = [int((s == BLANK).sum()) for s in ns.states[0]]
    assert blanks == sorted(blanks, reverse=True) and blanks[-1] == 0 and len(blanks) == ns.rounds.item() + 1


def test_a_multi_round_puzzle_loses_blanks_every_round():
    g = random_grids(1, seed=7)
    p = make_puzzles(g, 55, 55, seed=8)
    ns = naked_singles(p, keep_states=True)
    blanks = [int((s == BLANK).sum()) for s in ns.states[0]]
    assert ns.rounds.item() >= 3 and len(blanks) == ns.rounds.item() + 1
    assert all(a > b for a, b in zip(blanks, blanks[1:])) and blanks[-1] == 0


def test_rule_breaks_counts_each_clashing_pair_once():
    g = parse_grids(SOLUTION)
    g[0, 1] = g[0, 0]  # a clash with cell 0 (row and box: one pair) and with that digit's cell in column 2
    assert rule_breaks(g).item() == 2


def test_the_reference_says_when_it_is_stuck():
    empty = torch.zeros(1, 81, dtype=torch.long)  # nothing given: no cell has a single candidate
    assert naked_singles(empty).rounds.tolist() == [-1]


def test_generated_grids_are_valid_and_distinct():
    g = random_grids(20, seed=3)
    assert (rule_breaks(g) == 0).all() and (g != BLANK).all()
    assert len({format_grid(x) for x in g}) == 20
    assert (random_grids(2, seed=3) == g[:2]).all()  # repeatable from the seed


def test_puzzles_keep_the_reference_able_to_finish_and_respect_the_blank_range():
    g = random_grids(30, seed=1)
    p = make_puzzles(g, 30, 45, seed=2)
    blanks = (p == BLANK).sum(1)
    assert (blanks <= 45).all() and (blanks >= 20).all()
    assert ((p == BLANK) | (p == g)).all()  # only blanks were made
    assert (naked_singles(p).grids == g).all()  # and the reference gets the grid back
    with pytest.raises(ValueError, match="blanks 50..40"):
        make_puzzles(g, 50, 40)


def test_is_solved_accepts_any_valid_completion_that_keeps_the_givens():
    g = parse_grids(SOLUTION)
    relabelled = torch.tensor([0, 2, 1, 3, 4, 5, 6, 7, 8, 9])[g]  # swap digits 1 and 2: still valid
    blank_all = torch.zeros_like(g)
    assert is_solved(relabelled, blank_all).all()  # no givens to keep: any valid grid
    assert not is_solved(relabelled, g).any()  # the givens changed
    broken = g.clone()
    broken[0, 0] = broken[0, 1]
    assert not is_solved(broken, blank_all).any() and rule_breaks(broken).item() >= 1


def test_splits_share_no_grid():
    s = sudoku_splits(20, 5, 5, seed=4)
    seen = {format_grid(g) for g in s["train"].grids}
    assert not seen & {format_grid(g) for g in s["test"].grids} and (s["test"].rounds >= 1).all()


def test_solve_keeps_givens_makes_progress_and_stops():
    model = tiny()
    p = parse_grids(LINE)
    r = solve(model, p, max_passes=6, keep_steps=True, gate_threshold=None)
    assert ((r.grids == p) | (p == BLANK)).all() and (r.grids != BLANK).all()
    frames = pass_frames(r, p[0], 0)
    assert len(frames) == r.passes.item() <= 6
    filled = [int((f["grid"] != BLANK).sum()) for f in frames]
    assert filled == sorted(filled) and all(f["new"].sum() >= 1 for f in frames)
    one = solve(model, p, confidence=2, max_passes=1)
    assert one.passes.item() == 1 and (one.grids != BLANK).all()
    with pytest.raises(ValueError, match="max_passes=0"):
        solve(model, p, max_passes=0)


def test_solve_in_slices_equals_solve_at_once():
    model = tiny()
    p = make_puzzles(random_grids(7, seed=5), 30, 40, seed=6)
    kw = dict(max_passes=60, gate_threshold=None, keep_steps=True)  # stop when full: puzzles stop at different passes
    a, b = solve(model, p, **kw), solve(model, p, batch_size=3, **kw)
    assert len(set(a.passes.tolist())) > 1
    assert (a.grids == b.grids).all() and (a.passes == b.passes).all() and (a.guesses == b.guesses).all()
    assert torch.equal(a.gates.isnan(), b.gates.isnan()) and torch.allclose(a.gates.nan_to_num(), b.gates.nan_to_num())
    assert len(a.history) == len(b.history) and all((x == y).all() for x, y in zip(a.history, b.history))


def test_the_gate_stops_a_puzzle_and_its_blanks_are_filled():
    model = tiny()
    p = parse_grids(LINE)
    r = solve(model, p, gate_threshold=1.0, max_passes=10)  # a gate below 1 always: stop at the first pass
    assert r.passes.item() == 1 and (r.grids != BLANK).all() and r.gates.shape == (1, 1)


@pytest.mark.parametrize("kw", [dict(carry=True), dict(objective="mlm"), dict(objective="puzzle")])
def test_every_objective_trains(kw):
    data = sudoku_splits(30, 1, 1, seed=0)["train"]
    run = train_sudoku(tiny(), data, SudokuTrainConfig(steps=3, batch_size=8, **kw))
    assert len(run["recon"]) == 3 and all(r > 0 for r in run["recon"])


def test_training_along_the_rounds_lowers_the_loss():
    data = sudoku_splits(60, 1, 1, seed=0)["train"]
    model = tiny()
    run = train_sudoku(model, data, SudokuTrainConfig(steps=40, batch_size=16, lr=1e-2))
    assert sum(run["recon"][-5:]) < sum(run["recon"][:5]) and len(run["gate"]) == 40
    with pytest.raises(ValueError, match="carry=True needs objective='rounds'"):
        SudokuTrainConfig("mlm", carry=True)


def test_a_saved_solver_loads_and_a_stranger_is_refused(tmp_path):
    model = tiny(2)
    save_solver(model, tmp_path / "m", SolverConfig(confidence=0.9, max_passes=5))
    back, _, settings = load_solver(tmp_path / "m")
    assert settings == SolverConfig(confidence=0.9, max_passes=5) and len(back.encoder) == 2
    p = parse_grids(LINE)
    kw = asdict(settings)
    assert (solve(back, p, **kw).grids == solve(model, p, **kw).grids).all()
    save_checkpoint(tmp_path / "other" / "model.pt", {"model": {}, "config": {}})
    with pytest.raises(CheckpointError, match="is not a Sudoku RDT"):
        load_solver(tmp_path / "other")
    save_checkpoint(tmp_path / "bad" / "model.pt", {"model": {}, "config": {}, "kind": "rdt-sudoku"})
    with pytest.raises(CheckpointError, match="is a damaged Sudoku RDT"):
        load_solver(tmp_path / "bad")
    save_checkpoint(
        tmp_path / "typo" / "model.pt",
        {
            **load_checkpoint(tmp_path / "m" / "model.pt"),
            "config": {"model": asdict(model.config), "solver": {"confidence": "high"}},
        },
    )
    with pytest.raises(CheckpointError, match="damaged Sudoku RDT.*confidence"):
        load_solver(tmp_path / "typo")


def test_the_command_solves_a_file(tmp_path, capsys):
    save_solver(tiny(), tmp_path / "m", SolverConfig(max_passes=4))
    (tmp_path / "p.txt").write_text(LINE + "\n" + LINE.replace(".", "0") + "\n")
    assert main(["rdt", "solve", "--model", str(tmp_path / "m"), "--puzzles", str(tmp_path / "p.txt")]) == 0
    out, err = capsys.readouterr()
    lines = out.splitlines()
    assert len(lines) == 2 and all(len(x) == 81 and x.isdigit() for x in lines)
    assert "of 2 puzzles" in err and "passes per puzzle" in err
    code = main(
        [
            "rdt",
            "solve",
            "--model",
            str(tmp_path / "m"),
            "--puzzles",
            str(tmp_path / "p.txt"),
            "--out",
            str(tmp_path / "o.txt"),
            "--max-passes",
            "1",
        ]
    )
    written = parse_grids((tmp_path / "o.txt").read_text(), check_rules=False)
    assert code == 0 and written.shape == (2, 81) and ((written == parse_grids(LINE)) | (parse_grids(LINE) == 0)).all()
    summary = capsys.readouterr().out
    assert "grids written to" in summary and "max 1;" in summary  # --max-passes 1: one pass each
