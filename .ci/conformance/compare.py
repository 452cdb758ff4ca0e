#!/usr/bin/env python3
"""Compares the conformance suite's results for the bare, layered (and gateway) servers.

Reads the suite's per-scenario `checks.json` files from
`RESULTS/<spec>/<target>/server-<scenario>-<timestamp>/checks.json` (the layout of
`conformance server -o RESULTS/<spec>/<target>`) and the scenario list of each spec version
from `RESULTS/<spec>/scenarios.txt`, writes `RESULTS/comparison.md`, prints a summary and
exits non-zero when:

- a check fails on the bare server and the expected-failures file of that spec version does
  not list it (`scenario` for the whole scenario, `scenario:check-id` for one check);
- an entry of an expected-failures file has no `# reason`, or does not fail on the bare
  server (an entry must be a limit the bare server shows too);
- a check fails on another target (layered, gateway) and does not fail on the bare server,
  or is not listed: the stack must be invisible to a correct client;
- a scenario has no result at all (the suite could not run it).

A scenario passes when none of its checks is a FAILURE (the suite's own rule); warnings are
counted and their differences from the bare run reported, but do not fail the comparison.
"""

import argparse
import json
import re
import sys
from pathlib import Path

SCENARIO_DIR = re.compile(r"^server-(.+)-\d{4}-\d{2}-\d{2}T\d{2}-\d{2}-\d{2}-\d{3}Z$")
ENTRY = re.compile(r"^\s*-\s*([^\s#]+)\s*(?:#\s*(.*?))?\s*$")
# When a check id occurs several times in a scenario, its most severe status counts.
SEVERITY = {"FAILURE": 4, "WARNING": 3, "SUCCESS": 2, "SKIPPED": 1, "INFO": 0}
# Problems printed on stdout; all of them are in comparison.md.
MAX_PRINTED = 40


def load_expected(path):
    """Entries of an expected-failures file (the suite's YAML baseline format): a `server:`
    list of `scenario` or `scenario:check-id`, each with a `# reason` comment."""
    entries, problems = {}, []
    if not path.exists():
        return entries, [f"{path}: missing (an empty list is `server: []`)"]
    for number, line in enumerate(path.read_text().splitlines(), 1):
        match = ENTRY.match(line)
        if not match:
            continue
        entry, reason = match.group(1), match.group(2)
        if not reason:
            problems.append(f"{path.name}:{number}: `{entry}` needs a one-line `# reason`")
        entries[entry] = reason or ""
    return entries, problems


def load_target(directory):
    """{scenario: {check_id: (status, message)}} for one run."""
    scenarios = {}
    for checks_file in sorted(directory.glob("*/checks.json")):
        match = SCENARIO_DIR.match(checks_file.parent.name)
        if not match:
            continue
        checks = {}
        for check in json.loads(checks_file.read_text()):
            status = check.get("status", "FAILURE")
            current = checks.get(check["id"])
            if current is None or SEVERITY.get(status, 4) > SEVERITY.get(current[0], 4):
                checks[check["id"]] = (status, check.get("errorMessage") or "")
        scenarios[match.group(1)] = checks
    return scenarios


def failures(checks):
    return {cid: msg for cid, (status, msg) in checks.items() if status == "FAILURE"}


def warnings(checks):
    return {cid for cid, (status, _) in checks.items() if status == "WARNING"}


def covered(scenario, check_id, expected):
    return scenario in expected or f"{scenario}:{check_id}" in expected


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--results", type=Path, required=True)
    parser.add_argument("--expected-dir", type=Path, required=True,
                        help="holds expected-failures-<spec>.yml")
    parser.add_argument("--specs", required=True, help="comma-separated spec versions")
    parser.add_argument("--targets", required=True,
                        help="comma-separated targets, the first being the bare baseline")
    args = parser.parse_args()
    specs, targets = args.specs.split(","), args.targets.split(",")
    baseline = targets[0]

    title = f"# MCP conformance suite: {' vs. '.join(targets)}"
    problems, report, counts = [], [title, ""], []
    for spec in specs:
        spec_dir = args.results / spec
        scenarios = (spec_dir / "scenarios.txt").read_text().split()
        expected, expected_problems = load_expected(
            args.expected_dir / f"expected-failures-{spec}.yml")
        problems += expected_problems
        results = {t: load_target(spec_dir / t) for t in targets}

        report += [f"## {spec} ({len(scenarios)} scenarios)", "",
                   "| scenario | " + " | ".join(targets) + " |",
                   "|---|" + "---|" * len(targets)]
        passed = dict.fromkeys(targets, 0)
        for scenario in scenarios:
            cells = []
            bare_checks = results[baseline].get(scenario)
            for target in targets:
                checks = results[target].get(scenario)
                if checks is None:
                    problems.append(f"{spec} {target}: {scenario}: no result (the suite could not run it)")
                    cells.append("**no result**")
                    continue
                failed = failures(checks)
                if not failed:
                    passed[target] += 1
                ok = sum(1 for status, _ in checks.values() if status == "SUCCESS")
                cell = f"pass ({ok})" if not failed else f"**FAIL** ({', '.join(sorted(failed))})"
                new_warnings = warnings(checks) - warnings(bare_checks or {})
                if target != baseline and new_warnings:
                    cell += f" warn: {', '.join(sorted(new_warnings))}"
                cells.append(cell)
                for check_id, message in sorted(failed.items()):
                    where = f"{spec} {target}: {scenario}:{check_id}"
                    if target != baseline and check_id not in failures(bare_checks or {}):
                        problems.append(f"{where} fails here but not bare: {message}")
                    elif not covered(scenario, check_id, expected):
                        problems.append(f"{where} fails and is not expected: {message}")
            report.append(f"| {scenario} | " + " | ".join(cells) + " |")

        for entry, reason in expected.items():
            scenario, _, check_id = entry.partition(":")
            bare_failed = failures(results[baseline].get(scenario, {}))
            if not (bare_failed and (not check_id or check_id in bare_failed)):
                problems.append(f"{spec}: expected failure `{entry}` ({reason}) does not fail "
                                f"on the bare server: remove it")
        line = f"{spec}: " + ", ".join(f"{t} {passed[t]}/{len(scenarios)}" for t in targets)
        counts.append(line)
        report += ["", f"Passed: {line}", ""]

    report += ["## Problems", ""] + ([f"- {p}" for p in problems] or ["none"])
    (args.results / "comparison.md").write_text("\n".join(report) + "\n")
    print("scenarios passed (a scenario passes when none of its checks fails):")
    for line in counts:
        print(f"  {line}")
    if problems:
        print(f"\n{len(problems)} problem(s):")
        for problem in problems[:MAX_PRINTED]:
            print(f"  - {problem[:300]}")
        if len(problems) > MAX_PRINTED:
            print(f"  ... and {len(problems) - MAX_PRINTED} more")
        print(f"\nfull table: {args.results / 'comparison.md'}")
        return 1
    print(f"no unexpected failure; full table: {args.results / 'comparison.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
