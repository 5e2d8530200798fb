"""The worker SDK: what runs inside a task's child process (no AWS access needed there)."""
