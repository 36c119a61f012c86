"""The model-from-code file of pimc's raw-observation pyfunc (see pimc.tracking.serving).

MLflow logs this file with the model and runs it on load; it holds no logic, so what serves is
the installed pimc's :class:`~pimc.tracking.raw_model.RawObservationModel`.
"""

from mlflow.models import set_model

from pimc.tracking.raw_model import RawObservationModel

set_model(RawObservationModel())
