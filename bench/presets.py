"""Every preset at its default size, through the dashboard's own path (issue #26 §6).

    BNLAB_DATA_DIR=../shared/data/mnist .venv/bin/python -m bench.presets \\
        [--presets speed,learning-rate,...] [--out DIR] [--from-exports]

One `bnlab serve` (bnlab.server.testing.ServerProcess, two workers, stacking on: the
server's defaults) trains the presets one after another, each POSTed as the
Experiments tab would; each finished experiment's JSON export (runs and curves, what
`bnlab analyze` reads) is saved as `DIR/PRESET.json.gz` (default DIR: bench/preset-exports, where
the exports of the run on record are kept), and re-analysed offline from that file
(`analysis.analyze_export`), so the tables are exactly what anyone gets from
`bnlab analyze DIR/PRESET.json.gz`. `--from-exports` only re-analyses saved exports.

Recorded in bench/RESULTS.md ("presets"): per preset its wall time, then the claim's
verdict with each contrast (estimate, interval at the level the verdict is decided at,
raw and Holm-adjusted p), then each cell (Holm over the preset's cells).
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import sys
from pathlib import Path

from bench.report import machine, write_section
from bench.stacked_experiment import train_experiment
from bnlab.model.config import ArmName
from bnlab.server.experiments.analysis import Analysis, analyze_export
from bnlab.server.experiments.design import PRESETS
from bnlab.server.testing import ServerProcess


def train(presets: list[str], out: Path, data_dir: str) -> dict[str, tuple[float, float]]:
    """Each preset through one server; its export saved. Returns (minutes, load) each."""
    timings: dict[str, tuple[float, float]] = {}
    with ServerProcess(out / "bnlab.db", Path(data_dir), workers=2) as server:
        for name in presets:
            body = PRESETS[name].design.model_dump(mode="json")
            load = os.getloadavg()[0]
            experiment, seconds = train_experiment(server, body, progress=name)
            minutes = seconds / 60
            if experiment["status"] != "completed":
                raise RuntimeError(f"{name} ended {experiment['status']}")
            export = server.get(f"/api/experiments/{experiment['id']}/export")
            export.raise_for_status()
            (out / f"{name}.json.gz").write_bytes(gzip.compress(export.content))
            timings[name] = (minutes, load)
            print(f"{name}: {minutes:.1f} min (load {load:.1f} at start)", flush=True)
    return timings


def _pp(value: float | None, unit: str) -> str:
    if value is None:
        return "-"
    return f"{value * 100:+.2f}" if unit.startswith("accuracy") else f"{value:.3g}"


def _percent(i) -> str:
    """An accuracy or a difference of two, in % (points): mean [interval]."""
    if i.mean is None:
        return "-"
    if i.ci_low is None or i.ci_high is None:
        return f"{i.mean * 100:.2f}"
    return f"{i.mean * 100:.2f} [{i.ci_low * 100:.2f}, {i.ci_high * 100:.2f}]"


def _detail(c) -> str:
    """A milestone's ratio of medians and shares that got there; a divergence's counts."""
    if c.milestone is not None:
        r, reached = c.milestone.speedup, c.milestone.reached
        low = "?" if r.ci_low is None else f"{r.ci_low:.2f}"
        high = "inf" if r.ci_high is None else f"{r.ci_high:.2f}"
        ratio = "-" if r.estimate is None else f"{r.estimate:.2f}x [{low}, {high}]"
        shares = ", ".join(f"{arm.value} {reached[arm].estimate:.0%}" for arm in reached)
        return f" Speed-up (no-BN / BN median steps): {ratio}; reached it: {shares}."
    if c.divergence is not None:
        d = c.divergence
        counts = ", ".join(f"{arm.value} {n}" for arm, n in d.diverged.items())
        return f" Diverged: {counts}; only BN's twin: {d.bn_only}, only no-BN's: {d.no_bn_only}."
    return ""


def _p(p: float | None) -> str:
    return "-" if p is None else f"{p:.3g}"


def render(name: str, analysis: Analysis, runs: int, timing: tuple[float, float] | None) -> str:
    took = f"trained in {timing[0]:.1f} min (load {timing[1]:.1f} at its start)" if timing else ""
    lines = [f"#### `{name}`: {runs} runs" + (f", {took}" if took else ""), ""]
    claim = analysis.claim
    if claim is not None:
        lines += [f"**Claim:** {claim.statement}. **Verdict: {claim.verdict.value}.**", ""]
        lines += ["| contrast | n | estimate | interval | p | p Holm | verdict |"]
        lines += ["|---|---|---|---|---|---|---|"]
        for c in claim.contrasts:
            unit = c.unit
            interval = f"[{_pp(c.interval.low, unit)}, {_pp(c.interval.high, unit)}]"
            lines.append(
                f"| {c.contrast.kind} | {c.n_pairs} | {_pp(c.estimate, unit)} ({unit}) | "
                f"{interval} | {_p(c.p_value)} | {_p(c.p_adjusted)} | {c.verdict.value} |"
            )
        lines.append("")
        for c in claim.contrasts:
            lines.append(f"- {c.contrast.kind}: {c.sentence}{_detail(c)}")
        lines.append("")
    lines += ["| cell | n | BN % | no-BN % | BN - no-BN (pp) | p | p Holm | verdict |"]
    lines += ["|---|---|---|---|---|---|---|---|"]
    for cell in analysis.cells:
        effect = cell.effect
        figures = [cell.arms[ArmName.BN].test_accuracy, cell.arms[ArmName.NO_BN].test_accuracy]
        where = ", ".join(f"{k}={v}" for k, v in cell.factors.items()) or "(one cell)"
        lines.append(
            f"| {where} | {effect.n_pairs} | "
            + " | ".join(_percent(i) for i in (*figures, effect.difference))
            + f" | {_p(effect.p_value)} | {_p(effect.p_adjusted)} | {effect.verdict.value} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--presets", default=",".join(PRESETS), help="comma-separated")
    parser.add_argument("--out", default="bench/preset-exports", help="where the exports go")
    parser.add_argument("--from-exports", action="store_true", help="only re-analyse")
    parser.add_argument("--no-record", action="store_true", help="print only")
    args = parser.parse_args()
    names = [n.strip() for n in args.presets.split(",")]
    unknown = [n for n in names if n not in PRESETS]
    if unknown:
        parser.error(f"--presets: unknown {', '.join(unknown)}; choose from {', '.join(PRESETS)}")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    # Wall times live beside the exports, so that a re-analysis still says them.
    timings_file = out / "timings.json"
    timings = json.loads(timings_file.read_text()) if timings_file.exists() else {}
    if not args.from_exports:
        timings |= train(names, out, os.environ.get("BNLAB_DATA_DIR", ""))
        timings_file.write_text(json.dumps(timings, indent=1))
    blocks = [f"`python -m bench.presets {' '.join(sys.argv[1:])}` on {machine()}."]
    for name in names:
        design, analysis = analyze_export(out / f"{name}.json.gz")
        blocks.append(render(name, analysis, len(design.runs()), timings.get(name)))
    body = "\n\n".join(blocks)
    print(body)
    if not args.no_record:
        write_section("presets", body)


if __name__ == "__main__":
    main()
