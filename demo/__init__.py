"""`make demo` (`python -m demo`): Lapse end to end, a request granted and then lapsing.

`harness.py` holds what the demo shares with the test suites: the cluster helpers and the
operator run as a subprocess under its own ServiceAccount.
"""
