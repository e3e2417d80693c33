"""ipitrace harness: orchestration and end-to-end validation (tests only)."""
