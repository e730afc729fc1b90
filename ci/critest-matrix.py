#!/usr/bin/env python3
"""The per-spec matrix and the gate of ci/critest, from critest's ginkgo v2 JSON reports.

  critest-matrix.py --specs SPECS.json --report containerd=A.json --report crid=B.json \
      --expected ci/critest-expected-failures [--markdown OUT.md]

SPECS.json is critest's --ginkgo.dry-run report: the specs the runs select (its rows and the
denominator of the summary line). A report file that does not exist counts as a run that never
happened: every spec of it is missing and the gate fails.

Exit status 1 when the gate fails:
  - a run produced no report;
  - crid does not pass a spec that containerd passes (any spec, if containerd did not run), and
    the spec is not listed in the expected-failures file;
  - a listed spec passes on crid, or names no spec critest has (the list must match reality).
The expected-failures file: one spec a line, `<spec text as the matrix prints it>  # <area>`;
blank lines and lines starting with # are comments. Standard library only.
"""
import argparse
import json
import os
import re
import sys

PASS, FAIL, SKIP, NONE = "PASS", "FAIL", "SKIP", "-"


def spec_text(r):
    return " ".join((r.get("ContainerHierarchyTexts") or []) + [r.get("LeafNodeText") or ""]).strip()


def location(loc):
    loc = loc or {}
    return (os.path.basename(loc.get("FileName", "")), loc.get("LineNumber", 0))


def one_line(r, limit=220):
    """The failure message on one line: gomega's `Unexpected error: <*T | 0x…>: text { dump }`
    shortened to its text, the middle cut out when too long (runc's reason is at the end)."""
    f = r.get("Failure") or {}
    msg = re.sub(r"\s+", " ", f.get("Message") or "").strip()
    head, sep, err = msg.partition(" Unexpected error: ")
    if sep:
        m = re.match(r"<[^>]*>: (.*?)(?: \{ .*)?(?: occurred)?$", err)
        text = m.group(1) if m else err
        msg = head if text in head else "%s: %s" % (head, text)
    state = r.get("State")
    if state not in ("failed", "passed", "skipped"):
        msg = "[%s] %s" % (state, msg)
    if len(msg) > limit:
        msg = msg[:80] + " ... " + msg[-(limit - 85):]
    name, line = location(f.get("Location"))
    return "%s (%s:%s)" % (msg, name, line) if name else msg


def load(path):
    """{spec text: report entry} of the It nodes, plus the failures outside any spec."""
    with open(path) as fh:
        suites = json.load(fh)
    specs, other = {}, []
    for suite in suites:
        for r in suite.get("SpecReports") or []:
            if r.get("LeafNodeType") == "It":
                specs[spec_text(r)] = r
            elif r.get("State") not in ("passed", "skipped", None):
                other.append("%s: %s" % (r.get("LeafNodeType"), one_line(r)))
    return specs, other


def why_no_report(path):
    """What the run folder tells of a run without a report (see ci/critest's run_suite)."""
    folder = os.path.dirname(path)
    log, version = os.path.join(folder, "critest.log"), os.path.join(folder, "version.txt")
    if os.path.exists(log):
        with open(log, errors="replace") as fh:
            tail = [l.rstrip() for l in fh.readlines()[-5:] if l.strip()]
        return "critest ran but wrote no report; the end of %s:\n%s" % (log, "\n".join("    " + l for l in tail))
    if os.path.exists(version):
        with open(version, errors="replace") as fh:
            first = re.sub(r"\s+", " ", fh.read()).strip()
        return "critest did not run, `crictl version` failed: %s" % first[:400]
    return "critest did not run (the runtime did not start; see ci/critest's output)"


def status(r):
    if r is None:
        return NONE
    state = r.get("State")
    if state == "passed":
        return PASS
    if state in ("skipped", "pending"):
        return SKIP
    return FAIL


def load_expected(path, problems):
    expected = {}
    if not os.path.exists(path):
        return expected
    with open(path) as fh:
        for n, raw in enumerate(fh, 1):
            line = raw.rstrip("\n")
            if not line.strip() or line.lstrip().startswith("#"):
                continue
            text, sep, area = line.partition("  #")
            text = text.strip()
            if not sep or not area.strip():
                problems.append("%s:%d: no `  # <area>` after the spec text: %s" % (path, n, line))
            if text in expected:
                problems.append("%s:%d: listed twice: %s" % (path, n, text))
            expected[text] = (n, line)
    return expected


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--specs", required=True, help="critest --ginkgo.dry-run JSON report")
    ap.add_argument("--report", action="append", default=[], metavar="RUNTIME=FILE")
    ap.add_argument("--expected", required=True)
    ap.add_argument("--markdown")
    args = ap.parse_args()

    problems = []  # gate failures
    notes = []
    selected, _ = load(args.specs)
    # The rows: the specs the runs select (the 5 benchmark specs are skipped by critest itself).
    rows = sorted((t for t, r in selected.items() if r.get("State") != "skipped"),
                  key=lambda t: (location(selected[t].get("LeafNodeLocation")), t))
    total = len(rows)

    runs = {}  # runtime -> {text: report} or None when the run wrote no report
    for item in args.report:
        name, _, path = item.partition("=")
        if os.path.exists(path) and os.path.getsize(path) > 0:
            try:
                specs, other = load(path)
            except (OSError, ValueError) as e:
                problems.append("%s: unreadable report %s: %s" % (name, path, e))
                runs[name] = None
                continue
            runs[name] = specs
            for o in other:
                notes.append("%s: %s" % (name, o))
        else:
            runs[name] = None
            problems.append("%s: the run produced no report: %s" % (name, why_no_report(path)))

    expected = load_expected(args.expected, problems)
    ctrd = runs.get("containerd") if "containerd" in runs else None
    order = [n for n in ("containerd", "crid") if n in runs]

    def st(name, text):
        specs = runs.get(name)
        return status(specs.get(text)) if specs is not None else NONE

    lines, md = [], []
    header = "  ".join("%-10s" % n for n in order) + "  spec"
    lines.append(header)
    md.append("| spec | " + " | ".join(order) + " | crid failure |")
    md.append("|---|" + "---|" * len(order) + "---|")
    new_failures, now_passing = [], []
    for text in rows:
        cells = [st(n, text) for n in order]
        mark = ""
        # One line per runtime that ran the spec and did not pass it.
        reasons = [(n, one_line(runs[n][text])) for n in order
                   if runs[n] is not None and text in runs[n] and st(n, text) == FAIL]
        reason = dict(reasons).get("crid", "")
        if "crid" in runs:
            c = st("crid", text)
            ref_ok = st("containerd", text) == PASS if "containerd" in runs else True
            if text in expected:
                if c == PASS:
                    now_passing.append(expected[text])
                    mark = "  <- passes now: delete it from the expected failures"
                elif c != NONE:
                    mark = "  (expected: %s)" % expected[text][1].partition("  #")[2].strip()
            elif c not in (PASS, NONE) and ref_ok:
                new_failures.append(text)
                mark = "  <- NEW crid failure"
        lines.append("  ".join("%-10s" % s for s in cells) + "  " + text + mark)
        for n, why in reasons:
            lines.append(" " * (12 * len(order)) + "%s: %s" % (n, why))
        md.append("| %s | %s | %s |" % (text.replace("|", "\\|"), " | ".join(cells), reason.replace("|", "\\|")))

    for text, (n, line) in sorted(expected.items(), key=lambda kv: kv[1][0]):
        if text not in selected:
            problems.append("%s:%d names no critest spec: %s" % (args.expected, n, line))

    print("\n".join(lines))
    for note in notes:
        print("note: " + note)

    def count(name):
        specs = runs.get(name) or {}
        return sum(1 for t in rows if status(specs.get(t)) == PASS)

    summary = "critest: " + ", ".join("%s %d/%d" % (n, count(n), total) for n in ("crid", "containerd") if n in runs)
    print(summary)
    if args.markdown:
        with open(args.markdown, "w") as fh:
            fh.write("# critest validation matrix\n\n" + summary + "\n\n" + "\n".join(md) + "\n")

    if new_failures:
        against = "containerd passes" if ctrd is not None else "no reference to compare with"
        problems.append("crid fails %d spec(s) that are not in %s (%s):\n%s" % (
            len(new_failures), args.expected, against, "\n".join("  " + t for t in new_failures)))
    if now_passing:
        problems.append("crid now passes %d listed spec(s); delete these lines from %s:\n%s" % (
            len(now_passing), args.expected, "\n".join("  %d: %s" % (n, line) for n, line in now_passing)))
    if problems:
        print("critest gate FAILED:")
        for p in problems:
            print("- " + p)
        return 1
    print("critest gate passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
