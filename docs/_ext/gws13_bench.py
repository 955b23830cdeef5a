"""``{gws13-benchmark-chart} WORKLOAD``: a bar chart (inline SVG) of one
workload's medians, drawn at build time from ``benchmarks/results.json`` (what
``python benchmarks/run.py`` writes), so the charts always show the committed
run; ``{gws13-benchmark-run}`` says which run that is.

Also a script: ``python docs/_ext/gws13_bench.py benchmarks/results.json OUTDIR``
writes one SVG file per workload.
"""

from __future__ import annotations

import html
import json
import os
import sys

WORKLOADS = {
    # workload: (title, summary key, scale, unit, higher is better)
    "A": ("A: 1 connection, ping-pong, 32 B messages", "msg_per_s", 1e-3, "k msg/s", True),
    "B1": ("B1: 1 connection, 64 messages in flight, 32 B", "msg_per_s", 1e-3, "k msg/s", True),
    "B3": ("B3: 50 connections, 64 in flight each, 32 B", "msg_per_s", 1e-3, "k msg/s", True),
    "C": ("C: 1 connection, 1 MiB binary messages", "mb_per_s", 1, "MB/s", True),
    "D": ("D: 10,000 idle connections, memory per connection", "kib_per_conn", 1, "KiB/conn", False),
    "E": ("E: broadcast to 1,000 clients, time until the last has it (median)", "last_p50_us", 1e-3, "ms", False),
}

RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "benchmarks", "results.json")


def load(path=RESULTS):
    with open(path) as f:
        return json.load(f)


def bars(results, workload):
    """[(server, value)] for the servers that ran ``workload``, best first."""
    _, key, scale, _, higher = WORKLOADS[workload]
    out = []
    for server, per_workload in results["summary"].items():
        value = (per_workload.get(workload) or {}).get(key)
        if isinstance(value, (int, float)):
            out.append((server, value * scale))
    return sorted(out, key=lambda item: -item[1] if higher else item[1])


def svg(results, workload):
    title, _, _, unit, higher = WORKLOADS[workload]
    data = bars(results, workload)
    row, label_w, bar_w, top = 22, 170, 380, 34
    width, height = label_w + bar_w + 90, top + row * len(data) + 10
    biggest = max((v for _, v in data), default=1) or 1
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
           f'viewBox="0 0 {width} {height}" role="img" aria-label="{html.escape(title)}" '
           'font-family="sans-serif" font-size="12">',
           f'<text x="0" y="14" font-weight="bold">{html.escape(title)}</text>',
           f'<text x="0" y="28" fill="#555">{unit}, {"higher" if higher else "lower"} is better</text>']
    for i, (server, value) in enumerate(data):
        y = top + i * row
        length = max(1.0, bar_w * value / biggest)
        color = "#2b6cb0" if server.startswith("gws13") else "#a0aec0"
        text = f"{value:,.0f}" if value >= 100 else f"{value:,.1f}"
        out += [f'<text x="{label_w - 6}" y="{y + 14}" text-anchor="end">{html.escape(server)}</text>',
                f'<rect x="{label_w}" y="{y + 3}" width="{length:.1f}" height="{row - 6}" fill="{color}"/>',
                f'<text x="{label_w + length + 4:.1f}" y="{y + 14}">{text}</text>']
    out.append("</svg>")
    return "\n".join(out)


def run_description(results):
    meta = results.get("meta", {})
    env = meta.get("env", {})
    return (f"Run of {meta.get('started', '?')} (`{meta.get('command', '?')}`, median of "
            f"{meta.get('repeats', '?')} repeats) on {env.get('machine', '?')}; {env.get('python', '?')}; "
            f"{env.get('packages', '?')}; gws13 C extension: {env.get('gws13 C extension', '?')}.")


def setup(app):
    from docutils import nodes
    from docutils.parsers.rst import Directive

    class Chart(Directive):
        required_arguments = 1
        has_content = False

        def run(self):
            workload = self.arguments[0]
            if workload not in WORKLOADS:
                raise self.error(f"unknown workload {workload!r}; one of {sorted(WORKLOADS)}")
            results = load()
            if not bars(results, workload):
                raise self.error(f"benchmarks/results.json has no figures for workload {workload}")
            self.state.document.settings.record_dependencies.add(os.path.abspath(RESULTS))
            return [nodes.raw("", f'<figure class="gws13-chart">{svg(results, workload)}</figure>',
                              format="html")]

    class Run(Directive):
        has_content = False

        def run(self):
            text = run_description(load())
            para = nodes.paragraph()
            for i, part in enumerate(text.split("`")):
                para += nodes.literal(part, part) if i % 2 else nodes.Text(part)
            return [para]

    app.add_directive("gws13-benchmark-chart", Chart)
    app.add_directive("gws13-benchmark-run", Run)
    return {"version": "1", "parallel_read_safe": True, "parallel_write_safe": True}


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    results = load(sys.argv[1])
    os.makedirs(sys.argv[2], exist_ok=True)
    for name in WORKLOADS:
        with open(os.path.join(sys.argv[2], f"benchmark-{name}.svg"), "w") as f:
            f.write(svg(results, name))
