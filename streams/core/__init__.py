"""The pure, typed scoring core (no I/O). Its hot modules may run compiled (streams/core/native.py):
importing the package refuses a compiled module that is older than its source."""

from streams.core.native import check as _check_native_build

_check_native_build()
