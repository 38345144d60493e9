"""The `gatematch` command line: `main` dispatches, `options` holds what several commands share.

Commands live next to the code they drive (`gatematch.gallery_tools.cli`, `gatematch.benchmarks.cli`) or here
(`models`, `faces`, `service`); each has a `register(commands)` that `main` calls.
"""
