"""Component ids of the Training tab (no id is spelled anywhere else)."""

SERIES = "training-series"
METRIC = "training-metric"
VIEW = "training-view"  #: "layers" (small multiples, one line per head) or "heatmap" (head × step)
STATE = "training-state"  #: the resolved selection {"series", "metric", "view"} every view listens to
#: The URL fragment of the resolved selection, which the page writes into the address bar (if it differs).
HASH = "training-hash"
STATUS = "training-status"
MESSAGE = "training-message"  #: one line when the selection or the store is not what was asked
METRIC_FIGURE = "training-metric-figure"
LOSS_FIGURE = "training-loss"
TIMELINE_FIGURE = "training-timeline"
CHANGES = "training-changes"
ALERT = "training-collapse"
PICK = "training-pick"  #: the first step clicked: {"series", "step"}; a second click opens the comparison
PICK_TEXT = "training-pick-text"
#: The two runs to compare ({"a", "b"}) while the header's run becomes run A; then the Corpus tab opens. In the
#: page itself, not in the tab's pane: the hand-off reads it beside the header's state, with or without the tab.
COMPARE = "training-compare"
PICK_CLEAR = "training-pick-clear"
#: The figures whose x axis is the training step: a click on any of them picks a step.
STEP_FIGURES = (METRIC_FIGURE, LOSS_FIGURE, TIMELINE_FIGURE)
