"""The README stays current: it documents every parameter and gives the two commands."""

from pathlib import Path

from pst_core.config.schema import STAGE_MODELS

README = (Path(__file__).resolve().parent.parent / "README.md").read_text()


def test_readme_documents_every_parameter():
    missing = [f"{stage}.{name}" for stage, model in STAGE_MODELS.items() for name in model.model_fields
               if f"`{stage}.{name}`" not in README]
    assert not missing, f"README lacks {missing}; regenerate with `pst params`"


def test_readme_gives_the_two_commands():
    assert "make demo" in README and "make test" in README
