"""Annotation dataset templates (``rlhf/labeling/dataset_templates/*.yaml``, package data) and creating datasets
from them.

A template fixes what annotators see: the fields (a prompt and the candidate responses, shown as plain text,
never markdown, because model output is untrusted), the questions (the ranking, optional flags and a
comment), the metadata (hidden from annotators unless said otherwise), the guidelines (a markdown file next
to the template) and the task distribution (``min_submitted``: how many annotators complete a record).

``create_dataset`` creates the dataset, its fields, questions and metadata properties through the REST API
and publishes it; ``log_records`` adds records (500 per request, Argilla's limit).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import Field, model_validator

from rlhf.core.config import StrictModel, validate_config
from rlhf.core.errors import UserError
from rlhf.labeling.http import ArgillaHTTP
from rlhf.labeling.users import ensure_workspace, list_workspaces

__all__ = [
    "DatasetTemplate",
    "create_dataset",
    "find_dataset",
    "load_template",
    "log_records",
    "question_ids",
    "templates_dir",
]

RECORDS_PER_REQUEST = 500


class FieldSpec(StrictModel):
    name: str = Field(pattern=r"^[a-z0-9_-]+$", description="field name (lowercase, digits, '-' and '_')")
    title: str
    type: Literal["text", "chat"] = "text"
    required: bool = True
    use_markdown: bool = Field(False, description="render as markdown; keep false for model output")


class OptionSpec(StrictModel):
    value: str
    text: str
    description: str | None = None


class QuestionSpec(StrictModel):
    name: str = Field(pattern=r"^[a-z0-9_-]+$")
    title: str
    description: str | None = None
    type: Literal["ranking", "label_selection", "multi_label_selection", "rating", "text"]
    required: bool = True
    options: list[OptionSpec] = Field(default_factory=list, description="choices (ranking, label questions)")
    values: list[int] = Field(default_factory=list, description="rating values (rating questions)")

    @model_validator(mode="after")
    def _options_fit_type(self) -> QuestionSpec:
        if self.type in ("ranking", "label_selection", "multi_label_selection") and len(self.options) < 2:
            raise ValueError(f"question '{self.name}' ({self.type}) needs at least 2 options")
        if self.type == "rating" and len(self.values) < 2:
            raise ValueError(f"question '{self.name}' (rating) needs at least 2 values")
        return self

    def settings(self) -> dict[str, Any]:
        if self.type == "text":
            return {"type": "text", "use_markdown": False}
        if self.type == "rating":
            return {"type": "rating", "options": [{"value": v} for v in self.values]}
        options = [option.model_dump(exclude_none=True) for option in self.options]
        return {"type": self.type, "options": options}


class MetadataSpec(StrictModel):
    name: str = Field(pattern=r"^[a-z0-9_-]+$")
    title: str | None = None
    type: Literal["terms", "integer", "float"]
    visible_for_annotators: bool = False


class DatasetTemplate(StrictModel):
    """One annotation task layout."""

    name: str
    guidelines: str = Field(description="markdown file, relative to the template file")
    min_submitted: int = Field(1, ge=1, description="annotators who must submit a record for it to be complete")
    fields: list[FieldSpec] = Field(min_length=1)
    questions: list[QuestionSpec] = Field(min_length=1)
    metadata: list[MetadataSpec] = Field(default_factory=list)
    source: str | None = Field(None, description="set by the loader: the file this template came from")

    @model_validator(mode="after")
    def _unique_names(self) -> DatasetTemplate:
        for kind, names in (("field", [f.name for f in self.fields]), ("question", [q.name for q in self.questions]),
                            ("metadata", [m.name for m in self.metadata])):
            dupes = sorted({n for n in names if names.count(n) > 1})
            if dupes:
                raise ValueError(f"{kind} names repeat: {', '.join(dupes)}")
        return self

    def guidelines_text(self) -> str:
        base = Path(self.source).parent if self.source else templates_dir()
        path = (base / self.guidelines).resolve()
        if not path.is_file():
            raise UserError(f"template '{self.name}': guidelines file {path} does not exist")
        return path.read_text(encoding="utf-8")


def templates_dir() -> Path:
    """The shipped templates and their guidelines (``rlhf/labeling/dataset_templates/``, installed with the package)."""
    return Path(__file__).resolve().parent / "dataset_templates"


def load_template(name_or_path: str | Path) -> DatasetTemplate:
    """A template by file path, or by name from ``rlhf/labeling/dataset_templates/<name>.yaml``."""
    path = Path(name_or_path)
    if not path.suffix:
        path = templates_dir() / f"{name_or_path}.yaml"
    if not path.is_file():
        known = ", ".join(sorted(p.stem for p in templates_dir().glob("*.yaml")))
        raise UserError(f"no dataset template '{name_or_path}'; known templates: {known}")
    data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    data["source"] = str(path.resolve())
    return validate_config(DatasetTemplate, data, str(path))


def find_dataset(http: ArgillaHTTP, name: str, workspace: str) -> str | None:
    """The id of dataset ``name`` in ``workspace``, or None."""
    ws = next((w for w in list_workspaces(http) if w.name == workspace), None)
    if ws is None:
        return None
    for item in http.get("/api/v1/me/datasets")["items"]:
        if item["name"] == name and str(item.get("workspace_id")) == ws.id:
            return str(item["id"])
    return None


def create_dataset(http: ArgillaHTTP, template: DatasetTemplate, name: str, workspace: str,
                   min_submitted: int | None = None) -> str:
    """Create and publish dataset ``name`` in ``workspace`` (created if missing) from ``template``; its id."""
    ws = ensure_workspace(http, workspace)
    if find_dataset(http, name, workspace) is not None:
        raise UserError(f"dataset '{name}' already exists in workspace '{workspace}'; choose another name")
    dataset = http.post("/api/v1/datasets", json={
        "name": name,
        "workspace_id": ws.id,
        "guidelines": template.guidelines_text(),
        "allow_extra_metadata": False,
        "distribution": {"strategy": "overlap", "min_submitted": min_submitted or template.min_submitted},
    })
    dataset_id = str(dataset["id"])
    for spec in template.fields:
        http.post(f"/api/v1/datasets/{dataset_id}/fields", json={
            "name": spec.name, "title": spec.title, "required": spec.required,
            "settings": {"type": spec.type, "use_markdown": spec.use_markdown},
        })
    for question in template.questions:
        http.post(f"/api/v1/datasets/{dataset_id}/questions", json={
            "name": question.name, "title": question.title, "description": question.description,
            "required": question.required, "settings": question.settings(),
        })
    for meta in template.metadata:
        http.post(f"/api/v1/datasets/{dataset_id}/metadata-properties", json={
            "name": meta.name, "title": meta.title or meta.name, "settings": {"type": meta.type},
            "visible_for_annotators": meta.visible_for_annotators,
        })
    http.put(f"/api/v1/datasets/{dataset_id}/publish")
    return dataset_id


def question_ids(http: ArgillaHTTP, dataset_id: str) -> dict[str, str]:
    """Question name -> id (suggestions are logged by question id)."""
    return {q["name"]: str(q["id"]) for q in http.get(f"/api/v1/datasets/{dataset_id}/questions")["items"]}


def log_records(http: ArgillaHTTP, dataset_id: str, records: list[dict[str, Any]]) -> list[str]:
    """Create records (API shape: ``fields``, optional ``metadata``, ``external_id``, ``suggestions``,
    ``vectors``); returns their ids in order."""
    ids: list[str] = []
    for start in range(0, len(records), RECORDS_PER_REQUEST):
        batch = records[start:start + RECORDS_PER_REQUEST]
        result = http.post(f"/api/v1/datasets/{dataset_id}/records/bulk", json={"items": batch})
        ids.extend(str(item["id"]) for item in result["items"])
    return ids
