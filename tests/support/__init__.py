"""Helpers shared by tests and benches (not part of the package): `tool_model` (a tiny model that has learned the
tool-use format) and `census` (the sandbox leak census and mixed load test). Import as `tests.support.<module>`:
pytest puts the repository root on sys.path (pyproject `pythonpath`), and the benches insert it themselves."""
