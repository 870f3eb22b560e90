"""Pipelines: the engines that turn user audio into agent speech."""

from .base import Pipeline as Pipeline
from .cascading import CascadingPipeline as CascadingPipeline
from .realtime import RealTimePipeline as RealTimePipeline
