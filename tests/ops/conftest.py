from tests.system.harness import master  # noqa: F401  (the fixture)
