"""The testbed's own errors, so callers can tell a broken guest from a failing command."""


class TestbedError(Exception):
    """The testbed could not prepare, boot or read back a guest."""
    __test__ = False  # a name starting with Test: not a pytest test class


class TestbedTimeout(TestbedError):
    """The guest ran past its timeout and was killed."""
    __test__ = False
