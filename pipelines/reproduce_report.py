"""The report of a reproduction: each table's rows, measured beside the
published numbers (`pipelines.paper_tables`), and the paper's claims
checked on both, as a dict (written as JSON) and as Markdown.

A claim's comparisons hold when the first row's error is below the others'
(top-1 for classification; Table 8: the error with the ground-truth class;
Table 9: the top-5 localisation error).  Each measured difference comes
with its noise: two standard errors of the difference of two error rates
over the images measured (each rate smoothed as (errors + 1) / (n + 2)).
"""

import math
import os

from keras_vgg import runs
from pipelines import paper_tables
from pipelines import run_dir
from pipelines.reproduce_plan import TABLES
from pipelines.reproduce_plan import q_label
from pipelines.reproduce_plan import result_path

# What each table measures, in its two number columns (results' fields).
_FIELDS = {8: ("localization_error", "top5_error"),
           9: ("top5_error", "localization_error")}
_CLASSIFICATION_FIELDS = ("top1_error", "top5_error")


def _measured(row, fields, work_dir):
    """The row's dict: cells, key, scales run, measured and published."""
    results = run_dir.read_json(result_path(work_dir, row.step)) or []
    found = [r for r in results if r["protocol"] == row.protocol]
    paper = paper_tables.published(row.table, row.key)
    if paper is not None and not isinstance(paper, tuple):
        paper = (paper, None)
    out = {"cells": list(row.cells), "key": row.key,
           "scales_run": list(row.step.scales), "measured": None,
           "published": list(paper) if paper else None, "images": None,
           "result": os.path.relpath(result_path(work_dir, row.step),
                                     work_dir)}
    if found:
        r = found[0]
        out.update(measured=[None if r.get(f) is None else 100 * r[f]
                             for f in fields],
                   images=r["images"], top5_k=r.get("top5_k", 5))
    return out


def _noise(a, b):
    """Two standard errors (points) of the difference of two error rates
    (a, b: (error %, images)).  Each rate is taken as (errors + 1) / (n +
    2), so that 0 % or 100 % on a few images is not read as certain."""
    var = 0.0
    for e, n in (a, b):
        p = (e / 100 * n + 1) / (n + 2)
        var += p * (1 - p) / n
    return 200 * math.sqrt(var)


def _verdict(claim, values, partial=False):
    """How `claim` fares on `values` (key -> (error %, images or None)), or
    None when a number is missing (`partial`: on the comparisons whose
    numbers are there, None when there is none)."""
    comps = [(b, ws, strict) for b, ws, strict in claim.comparisons
             if b in values and all(w in values for w in ws)]
    if not comps or (len(comps) < len(claim.comparisons) and not partial):
        return None
    held, details, within = 0, [], False
    for better, worse, strict in comps:
        vb = values[better]
        key = min(worse, key=lambda w: values[w][0])
        vw = values[key]
        ok = vb[0] < vw[0] if strict else vb[0] <= vw[0]
        held += ok
        text = f"{better} {vb[0]:.1f} vs {key} {vw[0]:.1f}"
        if vb[1] and vw[1]:
            noise = _noise(vb, vw)
            within = within or abs(vw[0] - vb[0]) < noise
            text += f" (noise ±{noise:.1f})"
        details.append(text)
    return {"holds": held == len(comps), "held": held, "of": len(comps),
            "within_noise": within, "details": details}


def _claim_report(claim, rows):
    keys = {k for b, ws, _ in claim.comparisons for k in (b,) + tuple(ws)}
    if not keys <= {r["key"] for r in rows}:
        return {"claim": claim.text, "paper": None, "measured": None,
                "agrees": None, "caveat": claim.caveat,
                "line": f"- **{claim.text}.** Left out: its rows are not in "
                        "this plan (--configs)."}
    measured = {r["key"]: (r["measured"][0], r["images"]) for r in rows
                if r["measured"] and r["measured"][0] is not None}
    published = {r["key"]: (r["published"][0], None) for r in rows
                 if r["published"]}
    m, p = _verdict(claim, measured), _verdict(claim, published, True)
    paper_holds = True if p is None else p["holds"]

    def words(v):
        return ("holds" if v["holds"] else "does not hold") + (
            f" (true in {v['held']} of {v['of']} comparisons)"
            if v["of"] > 1 else "")

    line = f"- **{claim.text}.** Paper: " + (
        words(p) + " (" + "; ".join(p["details"]) + (
            "; the reference gives no other rows" if p["of"] < len(
                claim.comparisons) else "") + ")" if p else
        "stated (the reference gives none of its numbers)") + "."
    if m is None:
        line += " Measured: not yet (results missing)."
    else:
        agrees = m["holds"] == paper_holds
        line += (f" Measured: {words(m)} (" + "; ".join(m["details"])
                 + "). " + ("Agrees" if agrees else "Does not agree")
                 + " with the paper" + (", within noise" if m["within_noise"]
                                        else "") + ".")
        if not agrees or m["within_noise"]:
            line += f" At a small scale: {claim.caveat}"
    return {"claim": claim.text, "paper": p, "measured": m,
            "agrees": None if m is None else m["holds"] == paper_holds,
            "caveat": claim.caveat, "line": line}


def table_report(table, work_dir, settings, num_classes=None):
    """The table's rows (measured beside published) and its claims
    (`num_classes`: the dataset's, for the note on top-5)."""
    fields = _FIELDS.get(table.number, _CLASSIFICATION_FIELDS)
    rows = [_measured(r, fields, work_dir) for r in table.rows]
    support = [_measured(r, fields, work_dir) for r in table.support]
    return {"table": table.number,
            "title": paper_tables.TITLES[table.number],
            "settings": settings, "columns": list(table.columns),
            "measures": list(table.measures), "rows": rows,
            "support": support,
            "claims": [_claim_report(c, rows + support)
                       for c in table.claims],
            "note": paper_tables.NOTES.get(table.number),
            "num_classes": num_classes}


def _number(value):
    return "n/a" if value is None else f"{value:.1f}"


def settings_line(settings):
    """One sentence saying how big the runs were."""
    s = settings
    size = (f"width / {s['width_divisor']}, crop {s['crop']} (S and Q x "
            f"{s['crop']}/{runs.PAPER_CROP})" if s["crop"] != runs.PAPER_CROP
            or s["width_divisor"] != 1 else "the paper's networks and crops")
    parts = [size] + [f"{label} {s[k]}" for k, label in (
        ("batch_size", "batch"), ("epochs", "epochs at most"),
        ("steps", "steps per epoch"), ("max_images", "images evaluated"),
        ("dropout", "dropout")) if s.get(k) is not None]
    if s.get("batch_norm") is not None:
        parts.append("BatchNorm" if s["batch_norm"] else "no BatchNorm")
    return (f"Scale `{s['scale']}` on `{s['dataset']}`: " + ", ".join(parts)
            + "; the paper: ILSVRC-2012 validation (50,000 images).")


def markdown(report):
    """The table in the paper's form, measured beside published, and its
    claims, as Markdown."""
    header = list(report["columns"]) + ["Q run"]
    for name in report["measures"]:
        header += [name, "paper"]
    lines = [f"## Table {report['table']}: {report['title']}", "",
             settings_line(report["settings"]), "",
             "| " + " | ".join(header) + " |",
             "|" + "---|" * len(header)]
    for row in report["rows"]:
        measured = row["measured"] or [None, None]
        paper = row["published"] or [None, None]
        cells = row["cells"] + [q_label(row["scales_run"])]
        for m, p in zip(measured, paper):
            cells += [_number(m), _number(p)]
        lines.append("| " + " | ".join(map(str, cells)) + " |")
    images = {r["images"] for r in report["rows"] if r["images"]}
    notes = []
    if images:
        notes.append(f"Measured on {', '.join(map(str, sorted(images)))} "
                     "validation images.")
    n = report.get("num_classes")
    if n and n <= 5 and "top-5 err %" in report["measures"]:
        notes.append(f"The dataset has {n} classes: every label is among "
                     "the five best, so the top-5 error is 0.")
    if report["note"]:
        notes.append(report["note"])
    lines += [""] + ([" ".join(notes), ""] if notes else [])
    if report["claims"]:
        lines += ["### Claims", ""] + [c["line"] for c in report["claims"]]
        lines.append("")
    return "\n".join(lines)


def gather_report(work_dir, settings):
    """Every table of the work dir, as one Markdown report."""
    parts = ["# The paper's tables, reproduced", "",
             settings_line(settings), ""]
    for n in TABLES:
        path = os.path.join(work_dir, f"table{n}.md")
        if os.path.isfile(path):
            with open(path, encoding="utf-8") as f:
                parts.append(f.read())
    return "\n".join(parts)
