"""The doctor's errors: each one becomes one line and exit code 2 in the CLI, never a traceback."""

from __future__ import annotations

from services.common.errors import MdmPushError


class DoctorError(MdmPushError):
    """The doctor cannot answer (a topic is missing, the broker does not answer in time)."""


class SysdiagnoseError(DoctorError):
    """The sysdiagnose is unusable: not an archive, unsafe, partial or with a corrupt plist."""
