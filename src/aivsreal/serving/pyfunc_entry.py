"""Entry point for MLflow "models from code": MLflow runs this file to get the model object."""

import mlflow

from aivsreal.serving.pyfunc import AiVsRealModel

mlflow.models.set_model(AiVsRealModel())
