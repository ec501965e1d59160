"""Benchmarks: each `archive-restore bench` command in a module of its own (quality, speed, runtime, memory,
niqe, steady, soak, scale), their shared helpers in ``common``. They print figures; nothing else imports them."""
