"""The one base class of benchmatch's own errors.

Every error whose message tells a person what to change (a file, a field, a missing cluster)
derives from `BenchmatchError`, besides the builtin it refines (ValueError, RuntimeError, ...).
Front ends (the CLI, the service) catch this class, and only this class, as "the user's input or
environment needs changing"; anything else is a bug and keeps its traceback.
"""

from __future__ import annotations


class BenchmatchError(Exception):
    """Base of benchmatch's errors; the message names what is wrong and how to fix it."""


class ClusterError(BenchmatchError, RuntimeError):
    """A local cluster cannot be started, found or stopped as asked."""
