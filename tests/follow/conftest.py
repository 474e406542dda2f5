"""The whole-pipeline fixture of tests/pipeline, for following requests through real services."""

from tests.pipeline.conftest import pipeline_factory

__all__ = ["pipeline_factory"]
