"""Helpers of the reliability tests (tests/test_reliability_*.py): bad-file trees, fault injection, case records."""
