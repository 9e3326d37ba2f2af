"""The printed tables, and the results as JSON and TSV."""

from __future__ import annotations

import json
from pathlib import Path

from .context import Result, Setting

HEADER = (
    f"{'workload':<8} {'figure':<50} {'value':>9} {'unit':<6} {'requests':>8} "
    f"{'w/l/r/f':<14} {'RSS MiB':>7}  notes"
)


def _notes(r: Result) -> str:
    return " ".join(f"{k}={v}" for k, v in r.extra.items())


def _value(r: Result) -> str:
    if r.value is None:
        return "FAIL"
    return f"{r.value:.3f}" if r.value < 10 else f"{r.value:.1f}"


def row(r: Result) -> str:
    req = r.requests
    rss = "" if r.rss_mib is None else f"{r.rss_mib:.1f}"
    return (
        f"{r.workload:<8} {r.figure[:50]:<50} {_value(r):>9} {r.unit:<6} "
        f"{req.total if req else '':>8} {req.split() if req else '':<14} {rss:>7}  {_notes(r)}"
    )


def title(s: Setting) -> str:
    p = s.probe
    probe = (
        (
            f"GET /v1/repos {p['get_ms']:.2f} ms (kept-alive), {p['get_new_conn_ms']:.2f} ms "
            f"(new connection)"
        )
        if p
        else "not probed"
    )
    return f"== repomount, {s.label}: measured {probe} =="


def table(s: Setting) -> str:
    lines = [title(s), HEADER]
    lines += [row(r) for r in s.results]
    lines.append(
        "requests: total; w/l/r/f = writes (PUT, DELETE, blobs, commits) / listings "
        "(tree, repo info) / reads (GET, HEAD, bulk read) / change-feed polls"
    )
    routes = [r for r in s.results if r.requests and r.requests.total]
    if routes:
        lines.append("requests by route and status:")
        for r in routes:
            assert r.requests is not None
            top = ", ".join(f"{k} x{v}" for k, v in r.requests.routes.most_common(6))
            lines.append(f"  {r.workload:<6} {r.figure.strip()[:40]:<40} {top}")
    if s.probe_end:
        lines.append(
            f"RTT probe at the end: GET {s.probe_end['get_ms']:.2f} ms kept-alive, "
            f"{s.probe_end['get_new_conn_ms']:.2f} ms new connection"
        )
    lines += [f"note: {n}" for n in s.notes]
    lines.append(f"({s.seconds:.0f} s for this setting)")
    return "\n".join(lines)


def write(
    out_dir: Path, stamp: str, meta: dict[str, object], settings: list[Setting]
) -> list[Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    js = out_dir / f"results-{stamp}.json"
    doc = {
        "meta": meta,
        "settings": [
            {
                "rtt_ms": s.rtt_ms,
                "method": s.method,
                "label": s.label,
                "probe": s.probe,
                "probe_end": s.probe_end,
                "notes": s.notes,
                "seconds": s.seconds,
                "results": [r.as_dict() for r in s.results],
            }
            for s in settings
        ],
    }
    js.write_text(json.dumps(doc, indent=1))
    tsv = out_dir / f"results-{stamp}.tsv"
    head = [
        "rtt_ms",
        "method",
        "workload",
        "figure",
        "value",
        "unit",
        "seconds",
        "requests",
        "write",
        "list",
        "read",
        "feed",
        "rss_mib",
        "extra",
    ]
    rows = ["\t".join(head)]
    for s in settings:
        for r in s.results:
            k = r.requests.kinds if r.requests else {}
            cells = [
                s.rtt_ms,
                s.method,
                r.workload,
                r.figure.strip(),
                r.value,
                r.unit,
                r.seconds,
                r.requests.total if r.requests else "",
                k.get("write", ""),
                k.get("list", ""),
                k.get("read", ""),
                k.get("feed", ""),
                r.rss_mib,
                json.dumps(r.extra),
            ]
            rows.append("\t".join("" if c is None else str(c) for c in cells))
    tsv.write_text("\n".join(rows) + "\n")
    txt = out_dir / f"results-{stamp}.txt"
    txt.write_text("\n\n".join(table(s) for s in settings) + "\n")
    return [txt, tsv, js]
