#!/usr/bin/env python3
"""Tests of compare.py on made-up suite results (run by .ci/conformance.sh first)."""

import json
import subprocess
import sys
import tempfile
import unittest
from pathlib import Path

COMPARE = Path(__file__).with_name("compare.py")
SPEC = "2026-07-28"
STAMP = "2026-01-02T03-04-05-678Z"


class CompareTest(unittest.TestCase):
    def setUp(self):
        self.tmp = tempfile.TemporaryDirectory()
        self.root = Path(self.tmp.name)
        self.results = self.root / "results"
        (self.results / SPEC).mkdir(parents=True)
        (self.results / SPEC / "scenarios.txt").write_text("ping tools-list\n")
        self.expect("server: []\n")

    def tearDown(self):
        self.tmp.cleanup()

    def expect(self, text):
        (self.root / f"expected-failures-{SPEC}.yml").write_text(text)

    def result(self, target, scenario, **checks):
        directory = self.results / SPEC / target / f"server-{scenario}-{STAMP}"
        directory.mkdir(parents=True)
        body = [{"id": cid, "status": status, "errorMessage": f"{cid} said {status}"}
                for cid, status in checks.items()]
        (directory / "checks.json").write_text(json.dumps(body))

    def all_pass(self, target):
        self.result(target, "ping", ping="SUCCESS")
        self.result(target, "tools-list", **{"tools-list": "SUCCESS", "order": "INFO"})

    def compare(self):
        run = subprocess.run(
            [sys.executable, COMPARE, "--results", self.results, "--expected-dir", self.root,
             "--specs", SPEC, "--targets", "bare,layered"],
            capture_output=True, text=True, check=False)
        return run.returncode, run.stdout

    def test_identical_passing_runs_pass(self):
        self.all_pass("bare")
        self.all_pass("layered")
        code, out = self.compare()
        self.assertEqual(code, 0, out)
        self.assertIn("bare 2/2, layered 2/2", out)

    def test_a_check_failing_only_layered_fails(self):
        self.all_pass("bare")
        self.result("layered", "ping", ping="FAILURE")
        self.result("layered", "tools-list", **{"tools-list": "SUCCESS"})
        code, out = self.compare()
        self.assertEqual(code, 1, out)
        self.assertIn("layered: ping:ping fails here but not bare", out)

    def test_an_unlisted_bare_failure_fails(self):
        self.result("bare", "ping", ping="FAILURE")
        self.result("bare", "tools-list", **{"tools-list": "SUCCESS"})
        self.all_pass("layered")
        code, out = self.compare()
        self.assertEqual(code, 1, out)
        self.assertIn("bare: ping:ping fails and is not expected", out)

    def test_a_listed_failure_shared_by_both_runs_passes(self):
        self.expect("server:\n  - ping:ping  # the bare server cannot pong\n")
        for target in ("bare", "layered"):
            self.result(target, "ping", ping="FAILURE", other="SUCCESS")
            self.result(target, "tools-list", **{"tools-list": "SUCCESS"})
        code, out = self.compare()
        self.assertEqual(code, 0, out)
        self.assertIn("bare 1/2, layered 1/2", out)

    def test_a_listed_failure_in_a_passing_bare_scenario_still_fails_layered(self):
        self.expect("server:\n  - ping  # the bare server cannot pong\n")
        self.result("bare", "ping", ping="FAILURE", other="SUCCESS")
        self.result("bare", "tools-list", **{"tools-list": "SUCCESS"})
        self.result("layered", "ping", ping="FAILURE", other="FAILURE")
        self.result("layered", "tools-list", **{"tools-list": "SUCCESS"})
        code, out = self.compare()
        self.assertEqual(code, 1, out)
        self.assertIn("ping:other fails here but not bare", out)

    def test_entries_need_a_reason_and_a_bare_failure(self):
        self.expect("server:\n  - ping\n  - tools-list  # stale\n")
        self.result("bare", "ping", ping="FAILURE")
        self.result("bare", "tools-list", **{"tools-list": "SUCCESS"})
        self.result("layered", "ping", ping="FAILURE")
        self.result("layered", "tools-list", **{"tools-list": "SUCCESS"})
        code, out = self.compare()
        self.assertEqual(code, 1, out)
        self.assertIn("`ping` needs a one-line `# reason`", out)
        self.assertIn("`tools-list` (stale) does not fail on the bare server", out)

    def test_a_missing_scenario_fails(self):
        self.all_pass("bare")
        self.result("layered", "ping", ping="SUCCESS")
        code, out = self.compare()
        self.assertEqual(code, 1, out)
        self.assertIn("layered: tools-list: no result", out)

    def test_repeated_check_ids_count_their_worst_status(self):
        self.all_pass("bare")
        directory = self.results / SPEC / "layered" / f"server-ping-{STAMP}"
        directory.mkdir(parents=True)
        (directory / "checks.json").write_text(json.dumps(
            [{"id": "ping", "status": "SUCCESS"}, {"id": "ping", "status": "FAILURE"}]))
        self.result("layered", "tools-list", **{"tools-list": "SUCCESS"})
        code, out = self.compare()
        self.assertEqual(code, 1, out)


if __name__ == "__main__":
    unittest.main(verbosity=1)
