"""How long a restore of a database would take now, from the restores this installation has run.

Nobody predicts RTO; everyone assumes it. The forecast is made of measurements only: each
step of past restores (drills' restores included: they are restores) is fitted against the
bytes it handled — the dump's uncompressed size for the load and what follows it, the
artifact's size for verification and download — and the fit is applied to the database's
size now (its latest backup, projected by the growth the backups show). See model.py.
Beside it, physical.py predicts a recovery to latest from past recoveries and offers it when
it is clearly faster than the restore (and says when it is not, and why).
"""

from .model import RestoreForecast, StepForecast, forecast_restore, forecast_target
from .physical import (
           ArchiveNow,
           PhysicalOffer,
           RecoveryRun,
           archive_now,
           compare,
           physical_offer,
           recovery_runs,
)

__all__ = ["ArchiveNow", "PhysicalOffer", "RecoveryRun", "RestoreForecast", "StepForecast", "archive_now", "compare",
           "forecast_restore", "forecast_target", "physical_offer", "recovery_runs"]
