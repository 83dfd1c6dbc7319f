"""The built-in recipes as ``edgekd pipelines list`` shows them: name, description, stages and the data each
needs (whether it is here, and where to get it)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edgekd.catalog import find, names
from edgekd.config.recipe import load_recipe
from edgekd.data_needs import DataNeed, data_need


@dataclass(frozen=True)
class BuiltInRecipe:
    """One built-in recipe: its name, description, stage kinds, file and the data it needs."""

    name: str
    description: str
    stages: tuple[str, ...]
    source: Path
    data: DataNeed

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready mapping (``edgekd pipelines list --json`` prints one per recipe)."""
        return {"name": self.name, "description": self.description, "stages": list(self.stages),
                "source": str(self.source), "data": self.data.to_json()}


def builtin_recipes() -> list[BuiltInRecipe]:
    """Every built-in recipe, in the catalog's order."""
    listed = []
    for name in names("pipelines"):
        recipe, source = load_recipe(name), find("pipelines", name)
        listed.append(BuiltInRecipe(recipe.name, recipe.description, tuple(recipe.stage_names()), source,
                                    data_need(recipe, source)))
    return listed
