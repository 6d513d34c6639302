"""Find numbers in a notebook's prose that the notebook never prints: the check that keeps chapter prose from drifting.

    python tools/prose.py                  # every notebook in nbs/: one line per untraced number, then a count
    python tools/prose.py 05_loss 07_rqvae # some notebooks

A number in a markdown cell is *traced* when one of these holds:
- the notebook prints it: a cell output (text, markdown or HTML) or its learner `metrics.json` (kept in
  `nbs/learner_results.json`) holds a number that rounds to it (`0.149` is traced by `0.1492`; `14.9%` by `0.1492`
  too); a whole number must be printed as that whole number; the committed run's wall time (its seconds, and its
  minutes rounded) traces a notebook's "about N minutes";
- it is a published figure, marked by a footnote right after it: `1.88[^nanogpt]` with `[^nanogpt]: where it comes
  from` at the end of the cell. The marker covers the numbers of its phrase, back to the last `;`, `:`, `(` or
  sentence end, so `gate steps 2.4 / 7.6 / 13.8[^rdt]` is one marked phrase;
- it is structure, not a claim: inside code (`` `n_layer=6` ``) or maths (`$\\ln 65$`), a link target, a heading's
  or list's numbering, a chapter, section, part, exercise or step reference (`chapter 4`, `section 3`), part of a
  name (`bf16`, `GPT-2`, `06_rdt`), a citation's year (`Kang and McAuley, 2018)`) or the course's convention of
  95% intervals.
The tests run this over every committed notebook (tests/test_prose.py) and fail on an untraced number.
"""
import json, math, re, sys
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
NBS = ROOT / "nbs"

# a number: 1,003,854 / 0.149 / 3e-4 / 12 (a sign is kept apart: prose writes −0.005 and +0.002 as it likes)
NUM = re.compile(r"(?<![A-Za-wyz_\d.])(\d{1,3}(?:,\d{3})+(?:\.\d+)?|\d+(?:\.\d+)?(?:[eE][-+]?\d+)?)(%?)")
UNITS = {"x", "k", "m", "s", "ms", "min", "h", "gb", "gib", "mb", "mib", "kb", "tb", "tflop", "b", "m2"}
REFERENCE_WORDS = r"(?:chapters?|sections?|parts?|exercises?|steps? \d+ (?:of|to)|cells?|figures?|tables?|notebooks?|ch\.|§)"
STRUCTURE = re.compile(REFERENCE_WORDS + r"\s*\d+(?:\s*(?:-|–|and|,|to|/)\s*\d+)*", re.I)
FOOTNOTE_DEF = re.compile(r"^\[\^[^\]]+\]:.*$", re.M)
FOOTNOTE = re.compile(r"\[\^[^\]]+\]")
PHRASE_END = re.compile(r"[;:()]|\.\s|\n")


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
    for pat in (r"```.*?```", r"`[^`\n]*`", r"\$\$.*?\$\$", r"\$[^$\n]+\$", r"\]\([^)]*\)", r"<[^>]+>",
                r"^\s{0,3}#+\s*\d+(?:\.\d+)*\.?", r"^\s*\d+[.)]\s", FOOTNOTE_DEF.pattern, r"\b\d\d_\w+",
                r"\b(?:19|20)\d\d(?=\))", r"\b95% (?=(?:bootstrap |confidence )?intervals?)"):
        md = re.sub(pat, blank, md, flags=re.S | re.M)
    return STRUCTURE.sub(blank, md)


def _value(token: str) -> float:
    return float(token.replace(",", ""))


def _decimals(token: str) -> int:
    t = token.replace(",", "")
    return 0 if "." not in t or "e" in t.lower() else len(t.split(".")[1].split("e")[0])


def prose_numbers(md: str):
    "(number, with_percent, start, end) for every number in markdown `md` that makes a claim and carries no footnote."
    clean = _strip_structure(md)
    marked = []   # spans covered by a footnote marker: from the last phrase end before it to the marker
    for m in FOOTNOTE.finditer(clean):
        start = max((e.end() for e in PHRASE_END.finditer(clean, 0, m.start())), default=0)
        marked.append((start, m.start()))
    for m in NUM.finditer(clean):
        after = re.match(r"[A-Za-z]+", clean[m.end():])
        if after and after.group(0).lower() not in UNITS: continue     # a name or ordinal: 2nd, 3D, 8bit
        if m.start() > 0 and clean[m.start() - 1] in "_-" and m.start() > 1 and clean[m.start() - 2].isalpha(): continue  # GPT-2
        if any(s <= m.start() < e for s, e in marked): continue
        yield m.group(1), bool(m.group(2)) or bool(re.match(r"\s*(?:points|pp)\b", clean[m.end():])), m.start(), m.end()


def output_text(cell: dict) -> str:
    parts = []
    for o in cell.get("outputs", []):
        parts.append("".join(o.get("text", "")))
        data = o.get("data", {})
        for kind in ("text/plain", "text/markdown", "text/html"):
            parts.append(re.sub(r"<[^>]+>", " ", "".join(data.get(kind, ""))))
    return "\n".join(parts)


def printed_numbers(nb: dict, metrics: dict) -> tuple[set, list]:
    "Whole numbers printed (exact), and every printed value (for rounding matches)."
    text = "\n".join(output_text(c) for c in nb["cells"] if c["cell_type"] == "code")
    values = [abs(_value(t)) for t in re.findall(r"\d{1,3}(?:,\d{3})+(?:\.\d+)?|\d+(?:\.\d+)?(?:[eE][-+]?\d+)?", text)]
    values += [abs(float(v)) for v in metrics.values() if isinstance(v, (int, float))]
    whole = {v for v in values if float(v).is_integer()}
    return whole, sorted(set(values))


def traced(token: str, percent: bool, whole: set, values: list) -> bool:
    v, d = abs(_value(token)), _decimals(token)
    if "e" in token.lower():
        return any(math.isclose(o, v, rel_tol=5e-3) for o in values)
    if d == 0 and v in whole: return True
    scales = (1, 100) if percent else (1,)
    tol = 0.5 * 10 ** -d + 1e-9
    return any(abs(o * s - v) <= tol for s in scales for o in values if d > 0 or s == 100)


def check_notebook(path: Path, results: dict | None = None) -> list[Untraced]:
    nb = json.loads(Path(path).read_text())
    results = results if results is not None else _learner_results()
    run = results.get(Path(path).stem, {})
    whole, values = printed_numbers(nb, run.get("metrics", {}))
    if run.get("seconds"):   # the committed learner run's wall time traces "about N minutes"
        whole |= {run["seconds"], round(run["seconds"] / 60)}; values += [run["seconds"], run["seconds"] / 60]
    bad = []
    for i, c in enumerate(nb["cells"]):
        if c["cell_type"] != "markdown": continue
        md = "".join(c["source"])
        for token, percent, s, e in prose_numbers(md):
            if not traced(token, percent, whole, values):
                ctx = md[max(0, s - 40):e + 30].replace("\n", " ")
                bad.append(Untraced(Path(path).stem, i, token + ("%" if percent and md[e - 1] == "%" else ""), ctx))
    return bad


def _learner_results() -> dict:
    f = NBS / "learner_results.json"
    return json.loads(f.read_text()) if f.exists() else {}


def main(names) -> int:
    nbs = sorted(p for p in NBS.glob("*.ipynb") if not p.name.startswith("."))
    if names: nbs = [p for p in nbs if p.stem in names]
    results, total = _learner_results(), 0
    for p in nbs:
        bad = check_notebook(p, results)
        for b in bad: print(b)
        total += len(bad)
    print(f"{total} untraced numbers in {len(nbs)} notebooks")
    return 1 if total else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
