#!/usr/bin/env python3
"""The results of a conformance run, from e2e.test's JUnit XML.

    conformance-report.py --focus RE --skip RE [--markdown FILE]
                          [--reasons TSV] JUNIT.xml...

Counts, per SIG, the tests the run selected (the focus, not the skip; a file
under .../serial/ holds the [Serial] pass, any other the parallel one) as
passed, failed or skipped, and gives each test that did not pass one line
saying why: the first line of e2e/conformance-reasons.tsv whose pattern
matches the failure text, the test name or the test's timeline names the
cause; otherwise the first telling line of the failure itself. Prints the totals as
"conformance: N passed, N failed, N skipped" (the line e2e/test.sh adds to
its total) and exits 1 when a test failed; with --markdown, also writes the
table and the reasons there.
"""

import argparse
import collections
import datetime
import os
import re
import sys
import xml.etree.ElementTree as ET

SIG_RE = re.compile(r"^\[(sig-[a-z-]+)\]")
NOISE_RE = re.compile(r"^\s*(\[FAILED\]|In \[It\]|\[PANICKED\]|at:|/|Full Stack Trace|goroutine|\s*$)")


def load_reasons(path):
    reasons = []
    if not path or not os.path.exists(path):
        return reasons
    with open(path, encoding="utf-8") as f:
        for line in f:
            line = line.rstrip("\n")
            if not line.strip() or line.lstrip().startswith("#"):
                continue
            pattern, _, reason = line.partition("\t")
            reasons.append((re.compile(pattern), reason.strip()))
    return reasons


def first_telling_line(text):
    for line in text.splitlines():
        line = line.strip()
        if not line or NOISE_RE.match(line):
            continue
        line = re.sub(r"^\[FAILED\]\s*", "", line)
        return line[:200]
    return "(no failure text)"


def why(name, text, reasons, timeline=""):
    for pattern, reason in reasons:
        if pattern.search(text) or pattern.search(name) or pattern.search(timeline):
            return reason
    return "unclassified: " + first_telling_line(text)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--focus", required=True)
    ap.add_argument("--skip", default="")
    ap.add_argument("--markdown")
    ap.add_argument("--reasons")
    ap.add_argument("--procs", default="?")
    ap.add_argument("--elapsed", type=int, default=0)
    ap.add_argument("--k8s-version", default="")
    ap.add_argument("junit", nargs="*")
    args = ap.parse_args()

    focus = re.compile(args.focus)
    skip = re.compile(args.skip) if args.skip else None
    reasons = load_reasons(args.reasons)

    # sig -> state -> count; sig -> [(name, state, reason)]
    counts = collections.defaultdict(collections.Counter)
    not_passed = collections.defaultdict(list)
    suite_failures = []
    for path in args.junit:
        serial_pass = os.sep + "serial" + os.sep in path
        try:
            root = ET.parse(path).getroot()
        except (ET.ParseError, OSError) as e:
            suite_failures.append((path, "JUnit report unreadable: %s" % e))
            continue
        for tc in root.iter("testcase"):
            full = tc.get("name", "")
            kind, _, name = full.partition("] ")
            kind = kind.lstrip("[")
            failure = tc.find("failure")
            error = tc.find("error")
            skipped = tc.find("skipped")
            if kind != "It":
                # Suite-level nodes: only their failures matter (a failed
                # BeforeSuite fails every test).
                if failure is not None or error is not None:
                    el = failure if failure is not None else error
                    suite_failures.append((full, first_telling_line((el.text or "") + (el.get("message") or ""))))
                continue
            if not focus.search(name) or (skip and skip.search(name)):
                continue
            if ("[Serial]" in name) != serial_pass:
                continue
            sig_m = SIG_RE.match(name)
            sig = sig_m.group(1) if sig_m else "(no sig)"
            if failure is not None or error is not None:
                el = failure if failure is not None else error
                text = (el.text or "") + "\n" + (el.get("message") or "")
                # The timeline (system-err) says what the test saw before it
                # gave up, e.g. the lookups that failed before a timeout.
                timeline = "".join((e.text or "") for e in tc.findall("system-err"))
                counts[sig]["failed"] += 1
                not_passed[sig].append((name, "failed", why(name, text, reasons, timeline)))
            elif skipped is not None:
                msg = (skipped.get("message") or "") + "\n" + (skipped.text or "")
                # Specs the filters left out are not part of this run.
                if re.search(r"^skipped$|filtered|did not match", msg.strip(), re.I) and "Skip" not in msg:
                    continue
                counts[sig]["skipped"] += 1
                not_passed[sig].append((name, "skipped", why(name, msg, reasons)))
            else:
                counts[sig]["passed"] += 1

    total = collections.Counter()
    for c in counts.values():
        total.update(c)

    if args.markdown:
        lines = []
        lines.append("# Upstream conformance on the local cluster")
        lines.append("")
        lines.append("Written by `e2e/conformance` (e2e.test %s, ginkgo, %s parallel processes, "
                     "then the [Serial] tests one at a time) on %s; the run took %d min. "
                     "Focus `%s`, skipped `%s`. Reasons come from the failure each test reported; "
                     "the patterns are in `e2e/conformance-reasons.tsv`."
                     % (args.k8s_version, args.procs,
                        datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
                        args.elapsed // 60, args.focus if len(args.focus) < 120 else "(the CI list)",
                        args.skip))
        lines.append("")
        lines.append("| SIG | run | passed | failed | skipped |")
        lines.append("| --- | ---: | ---: | ---: | ---: |")
        for sig in sorted(counts):
            c = counts[sig]
            lines.append("| %s | %d | %d | %d | %d |" % (sig, sum(c.values()), c["passed"], c["failed"], c["skipped"]))
        lines.append("| **total** | %d | %d | %d | %d |" % (sum(total.values()), total["passed"], total["failed"], total["skipped"]))
        lines.append("")
        if suite_failures:
            lines.append("## Suite-level failures")
            lines.append("")
            for name, reason in suite_failures:
                lines.append("- %s: %s" % (name, reason))
            lines.append("")
        lines.append("## Tests that did not pass, and why")
        for sig in sorted(not_passed):
            lines.append("")
            lines.append("### %s" % sig)
            lines.append("")
            for name, state, reason in sorted(not_passed[sig]):
                lines.append("- %s %s — %s" % ("FAIL" if state == "failed" else "skip", name, reason))
        with open(args.markdown, "w", encoding="utf-8") as f:
            f.write("\n".join(lines) + "\n")

    for name, reason in suite_failures:
        print("conformance: suite-level failure %s: %s" % (name, reason), file=sys.stderr)
    print("conformance: %d passed, %d failed, %d skipped" % (total["passed"], total["failed"], total["skipped"]))
    return 1 if total["failed"] or suite_failures else 0


if __name__ == "__main__":
    sys.exit(main())
