"""Find numbers in a notebook's prose that the notebook never prints: the check that keeps chapter prose from drifting.

    python tools/prose.py                  # every notebook in nbs/: one line per untraced number, then a count
    python tools/prose.py 05_loss 07_rqvae # some notebooks

A number in a markdown cell is *traced* when one of these holds:
- the notebook prints it: a cell output (text, markdown or HTML) or its learner `metrics.json` (kept in
  `nbs/learner_results.json`) holds a number that rounds to it (`0.149` is traced by `0.1492`; `14.9%` by `0.1492`
  too; `1.6M` by `1,644,161`). A whole number must be printed as that whole number. A number written with a sign
  (`+0.002`, `−0.005`) must be printed with that sign (a printed number without one counts as positive). The
  committed run's wall time traces a notebook's "about N minutes" (within 10%), and a run time written in words
  ("about nine minutes") must match it too;
- it is a published figure, marked by a footnote right after it, `1.88[^nanogpt]`, whose definition
  (`[^nanogpt]: where it comes from`) is in the same cell. The marker covers the run of numbers just before it,
  joined by `/`, `,`, `-`, `to`, `->` or `and`, and a parenthesis between them and the marker:
  `steps 2.4 / 7.6 / 13.8[^rdt]`, `1.88 (nanoGPT)[^ng]`;
- it is structure, not a claim: code (`` `n_layer=6` ``, `` `transformers>=4.46` ``: values a reader types, never
  results), maths (`$\\ln 65$`), a link target, an HTML tag, a heading's or list's numbering, a chapter, section, part,
  exercise or step reference (`chapter 4`, `sections 3 and 5`), part of a name (`bf16`, `GPT-2`, `06_rdt`), a
  citation's year (`(Kang and McAuley, 2018)`), a footnote definition, or the course's convention of 95% intervals.
The tests run this over every committed notebook (tests/test_prose.py) and fail on an untraced number.
Its leniency, on purpose: any printed number of the notebook traces a prose number, wherever it was printed.
"""

import json
import math
import re
import sys
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
NBS = ROOT / "nbs"

# a number: 1,003,854 / 0.149 / 3e-4 / 12, with the sign the prose wrote (+, -, −) when it stands before it
NUMBER = r"(?:\d{1,3}(?:,\d{3})+(?:\.\d+)?|\d+(?:\.\d+)?(?:[eE][-+]?\d+)?)"
NUM = re.compile(r"(?<![A-Za-wyz_\d.])(" + NUMBER + r")(%?)")
PRINTED = re.compile(r"(?<![A-Za-z_\d.])([+\-−]?)(" + NUMBER + r")")
UNITS = {"x", "s", "ms", "min", "h", "gb", "gib", "mb", "mib", "kb", "tb", "tflop", "m2"}
WORDS = {
    w: n
    for n, w in enumerate(
        "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen "
        "fifteen sixteen seventeen eighteen nineteen twenty".split()
    )
} | {"thirty": 30, "forty": 40}
SCALE = {"k": 1e3, "K": 1e3, "M": 1e6}  # 73k, 1.6M: scaled before comparing (7B, 2B are names: skipped)
REFERENCE_WORDS = (
    r"(?:chapters?|sections?|parts?|exercises?|steps? \d+ (?:of|to)|cells?|figures?|tables?|notebooks?|ch\.|§)"
)
STRUCTURE = re.compile(
    REFERENCE_WORDS + r"\s*\d+(?:\s*(?:-|–|and|,|to|/)\s*\d+(?![.,]?\d)(?!\s*%)"
    r"(?!\s*(?:minutes?|seconds?|hours?|steps|tokens|points|runs)\b))*",
    re.I,
)
FOOTNOTE_DEF = re.compile(r"^\[\^([^\]]+)\]:.*$", re.M)
FOOTNOTE = re.compile(r"\[\^([^\]]+)\](?!:)")
RUN_TAIL = re.compile(
    r"(?:" + NUMBER + r"[%kKM]?(?:\s*(?:/|,|-|–|−|to|->|and|vs\.?)\s*[+\-−]?)?)+[*\"'”’]*\s*(?:\([^()\n]*\))?\s*$"
)


@dataclass
class Untraced:
    notebook: str
    cell: int
    number: str
    context: str

    def __str__(self):
        return f"{self.notebook} cell {self.cell}: {self.number!r} in “{self.context}”"


def _strip_structure(md: str) -> str:
    "Blank out what is not a claim, keeping offsets: code, maths, link targets, HTML tags, numbering, references."
    blank = lambda m: " " * len(m.group(0))
    for pat in (
        r"```.*?```",
        r"`[^`\n]*`",
        r"\$\$.*?\$\$",
        r"\$[^$\n]+\$",
        r"\]\([^)]*\)",
        r"</?[A-Za-z][^>\n]*>",
        r"^\s{0,3}#+\s*\d+(?:\.\d+)*\.?",
        r"^\s*\d+[.)]\s",
        FOOTNOTE_DEF.pattern,
        r"\b\d\d_\w+",
        r"(?:et\s+al\.,?|[A-Z][A-Za-z]+,)\s+(?:[A-Z][A-Za-z]*\s)?(?:19|20)\d\d(?=\))",
        r"\b95% (?=(?:bootstrap |confidence )?intervals?)",
    ):
        md = re.sub(pat, blank, md, flags=re.S | re.M)
    return STRUCTURE.sub(blank, md)


def _value(token: str) -> float:
    return float(token.replace(",", ""))


def _decimals(token: str) -> int:
    t = token.replace(",", "")
    return 0 if "." not in t or "e" in t.lower() else len(t.split(".")[1].split("e")[0])


def _marked_spans(clean: str, defined: set) -> list:
    "Spans covered by a footnote marker with a definition: the run of numbers right before it."
    spans = []
    for m in FOOTNOTE.finditer(clean):
        if m.group(1) not in defined:
            continue
        tail = RUN_TAIL.search(clean, max(0, m.start() - 200), m.start())
        if tail:
            spans.append((tail.start(), m.start()))
    return spans


def prose_numbers(md: str):
    """(number, sign, percent, scale, start, end) for every number in markdown `md`
    that makes a claim and carries no marker."""
    clean = _strip_structure(md)
    defined = set(FOOTNOTE_DEF.findall(md))
    marked = _marked_spans(clean, defined)
    for m in NUM.finditer(clean):
        after = re.match(r"[A-Za-z]+", clean[m.end() :])
        scale = SCALE.get(after.group(0)) if after and len(after.group(0)) == 1 else None
        if after and after.group(0).lower() not in UNITS and scale is None:
            continue  # a name or ordinal: 2nd, 3D
        if (
            m.start() > 1
            and clean[m.start() - 1] in "_-"
            and clean[m.start() - 2].isalnum()
            and not re.match(r"[\d.,]+\s*[-–]\s*$", clean[max(0, m.start() - 12) : m.start()])
        ):
            continue  # GPT-2, LLaMA3-8B
        if any(s <= m.start() < e for s, e in marked):
            continue
        before, before2 = clean[m.start() - 1 : m.start()], clean[max(0, m.start() - 2) : max(0, m.start() - 1)]
        sign = "+" if before == "+" else "-" if before and before in "-−" and before2 in ("", *" \t\n([,/") else ""
        percent = bool(m.group(2)) or bool(re.match(r"\s*(?:points|pp)\b", clean[m.end() :]))
        yield m.group(1), sign, percent, scale, m.start(), m.end()


def output_text(cell: dict) -> str:
    parts = []
    for o in cell.get("outputs", []):
        parts.append("".join(o.get("text", "")))
        data = o.get("data", {})
        for kind in ("text/plain", "text/markdown", "text/html"):
            parts.append(re.sub(r"<[^>]+>", " ", "".join(data.get(kind, ""))))
    return "\n".join(parts)


def printed_numbers(nb: dict, metrics: dict) -> list:
    "Every value the notebook printed, signed (a number printed without a sign is positive), and its metrics."
    text = "\n".join(output_text(c) for c in nb["cells"] if c["cell_type"] == "code")
    values = [(-1 if s in "-−" and s else 1) * _value(t) for s, t in PRINTED.findall(text)]
    return sorted(set(values + [float(v) for v in metrics.values() if isinstance(v, (int, float))]))


def traced(token: str, sign: str, percent: bool, scale, values: list) -> bool:
    v, d = _value(token), _decimals(token)
    if "e" in token.lower():
        return any(math.isclose(abs(o), v, rel_tol=5e-3) for o in values)
    candidates = [o for o in values if (o < 0) == (sign == "-")] if sign else [abs(o) for o in values]
    if scale:  # 1.6M: the printed value over a million, to the digits written
        return any(abs(abs(o) / scale - v) <= 0.5 * 10**-d + 1e-9 for o in candidates)
    if d == 0 and any(abs(o) == v for o in candidates):
        return True
    tol = 0.5 * 10**-d + 1e-9
    return any(
        abs(abs(o) * s - v) <= tol for s in ((1, 100) if percent else (1,)) for o in candidates if d > 0 or s == 100
    )


def check_notebook(path: Path, results: dict | None = None) -> list[Untraced]:
    nb = json.loads(Path(path).read_text())
    results = results if results is not None else _learner_results()
    run = results.get(Path(path).stem, {})
    values = printed_numbers(nb, run.get("metrics", {}))
    minutes = run.get("seconds", 0) / 60
    bad = []
    for i, c in enumerate(nb["cells"]):
        if c["cell_type"] != "markdown":
            continue
        md = "".join(c["source"])
        for token, sign, percent, scale, s, e in prose_numbers(md):
            if traced(token, sign, percent, scale, values):
                continue
            if minutes and re.match(r"\s*minutes?\b", md[e:]) and abs(_value(token) - minutes) <= 0.1 * minutes + 0.5:
                continue  # "about N minutes": the committed run's wall time
            ctx = md[max(0, s - 40) : e + 30].replace("\n", " ")
            bad.append(Untraced(Path(path).stem, i, sign + token + ("%" if percent and md[e - 1] == "%" else ""), ctx))
        for m in re.finditer(r"\b(" + "|".join(WORDS) + r")\s+minutes?\b", md, re.I):  # "about nine minutes"
            if minutes and abs(WORDS[m.group(1).lower()] - minutes) > 0.1 * minutes + 0.5:
                bad.append(Untraced(Path(path).stem, i, m.group(0), f"the committed run took {minutes:.1f} minutes"))
    return bad


def _learner_results() -> dict:
    f = NBS / "learner_results.json"
    return json.loads(f.read_text()) if f.exists() else {}


def main(names) -> int:
    nbs = sorted(p for p in NBS.glob("*.ipynb") if not p.name.startswith("."))
    if names:
        nbs = [p for p in nbs if p.stem in names]
    results, total = _learner_results(), 0
    for p in nbs:
        bad = check_notebook(p, results)
        for b in bad:
            print(b)
        total += len(bad)
    print(f"{total} untraced numbers in {len(nbs)} notebooks")
    return 1 if total else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
