"""Component ids of the Corpus tab (no id is spelled anywhere else)."""

from typing import Any

KIND = "corpus-kind"
METRIC = "corpus-metric"
AGG = "corpus-agg"
RUN_B = "corpus-run-b"
LENGTH = "corpus-length"
TRUNCATED = "corpus-truncated"
FIELDS = "corpus-fields"
FIELD = "corpus-field"  #: pattern-matching type of the metadata filters: {"type": FIELD, "field": name}
STATUS = "corpus-status"
HEATMAP_A = "corpus-heatmap-a"
HEATMAP_B = "corpus-heatmap-b"
DIFF = "corpus-diff"
PROFILE = "corpus-profile"
HEAD = "corpus-head"
HEAD_TITLE = "corpus-head-title"
HEAD_DIST = "corpus-head-dist"
HEAD_EXAMPLES = "corpus-head-examples"
EXAMPLE_LINK = "corpus-example-link"  #: pattern-matching type of the drill-down's links to the Example tab
PATTERNS_A = "corpus-patterns-a"
PATTERNS_B = "corpus-patterns-b"
SIMILARITY_A = "corpus-similarity-a"
SIMILARITY_B = "corpus-similarity-b"
RELPOS = "corpus-relpos"
TABLE = "corpus-head-table"
EXPORT = "corpus-export"
ALERT = "corpus-alert"  #: the tab's one-line message when the store cannot be read
NEED = "corpus-need"  #: set by the browser when it lacks the selected metric's views: the server sends them
BUNDLE = "corpus-bundle"  #: pattern-matching type of the stores of each view for every aggregate: {"type", "of"}
#: The views the browser keeps per (selection, metric) and redraws itself when the metric or aggregate changes.
BUNDLED = ("heatmaps", "difference", "profile", "table")
ERROR = "corpus-error"  #: pattern-matching type of each view's error slot: {"type": ERROR, "view": name}
#: The views that read the store, each with its own error slot (``""`` while it reads fine).
VIEWS = ("runs", "filters", "heatmaps", "difference", "profile", "table", "patterns", "drill", "analysis",
         "relpos")


def field(name: Any) -> dict[str, Any]:
    """The id of the metadata filter of field ``name``."""
    return {"type": FIELD, "field": name}


def error_slot(view: Any) -> dict[str, Any]:
    """The id of a view's error slot (a ``dcc.Store`` holding its one-line message, ``""`` while it reads)."""
    return {"type": ERROR, "view": view}


def bundle(view: Any) -> dict[str, Any]:
    """The id of the store of a view's figures for every aggregate of one metric (see ``assets/corpus.js``)."""
    return {"type": BUNDLE, "of": view}


def example_link(tag: str, example: int) -> dict[str, str | int]:
    """The id of the drill-down's link to example ``example`` of run ``tag`` (A or B)."""
    return {"type": EXAMPLE_LINK, "run": tag, "example": example}
