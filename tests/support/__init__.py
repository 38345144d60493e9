"""Helpers shared by the tests: data location, certificates, a real server, the CLI, fakes for unit tests.

Importable as `support` because pytest puts tests/ on sys.path (tests/ is not a package).
"""
