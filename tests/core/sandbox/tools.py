"""A host module registered in tests: it imports os and sys for its own use, as real
libraries do, and has members a policy may hide."""

import os
import sys

SECRET_PATH = os.sep


def helper(x):
    return x * 2


def delete_everything():
    raise AssertionError("an excluded function was reached")


class Account:
    """A registered class with members some policies hide."""

    def __init__(self, owner):
        self.owner = owner
        self._pin = "1234"

    def balance(self):
        return 100

    def close(self):
        raise AssertionError("an excluded method was reached")

    @classmethod
    def open_for(cls, owner):
        return cls(owner)


def platform():
    return sys.platform
