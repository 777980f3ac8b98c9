"""Ships docs/*.md inside the wheel (airlock/docs/) so the docs/*.md named in ``airlock --help``
exist for pip users too; everything else is declared in pyproject.toml."""

from __future__ import annotations

import shutil
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py


class BuildPyWithDocs(build_py):
    def run(self) -> None:
        super().run()
        source = Path(__file__).resolve().parent / "docs"
        target = Path(self.build_lib) / "airlock" / "docs"
        target.mkdir(parents=True, exist_ok=True)
        for page in sorted(source.glob("*.md")):
            shutil.copyfile(page, target / page.name)


setup(cmdclass={"build_py": BuildPyWithDocs})
