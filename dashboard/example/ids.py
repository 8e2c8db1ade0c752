"""Component ids of the Example tab (the URL synchronisation and the tests use them too)."""

STATE_ALERT = "state-alert"
#: The line over the views for an example whose raw attention the run did not keep: links to the nearest example
#: that has it and to the Playground running it again (filled by the page: ``assets/example.js``).
ATTENTION_NOTE = "example-attention-note"

EXAMPLE_INDEX = "example-index"
EXAMPLE_PREV = "example-prev"
EXAMPLE_NEXT = "example-next"
EXAMPLE_SEARCH = "example-search"
EXAMPLE_SEARCH_RESULTS = "example-search-results"
EXAMPLE_TEXT = "example-text"
EXAMPLE_COUNT = "example-count"
WINDOW_BOX = "example-window-box"  #: "window k of n" with its buttons (shown for an example that is a window)
WINDOW_PREV = "example-window-prev"
WINDOW_NEXT = "example-window-next"
WINDOW_LABEL = "example-window-label"

LAYER_SELECT = "layer-select"
HEAD_SELECT = "head-select"
STEP_INPUT = "step-input"
STEP_LABEL = "step-label"
KIND_SELECT = "kind-select"
ATTN_MODE = "attn-mode"
RESET = "reset-view"
SAVE_PNG = "save-png"
SAVE_SVG = "save-svg"
SAVE_STATUS = "save-status"

MATRIX = "attn-matrix"
HEAD_VIEW = "head-view"
HEAD_VIEW_PIN = "head-view-pin"
HEAD_VIEW_CLICK = "head-view-click"  #: a click on a head-view token (the page writes it)
MODEL_VIEW_CLICK = "model-view-click"  #: a click on a model-view cell: {layer, head} (the page writes it)
MODEL_VIEW = "model-view"
TIMESTEP_BARS = "timestep-bars"
TIMESTEP_LAYERS = "timestep-layers"
METRICS_PANEL = "metrics-panel"
METRICS_SUMMARY = "metrics-summary"
METRICS_HEADS = "metrics-heads"
DEBUG_VIEW = "debug-view"
EMBEDDINGS_VIEW = "embeddings-view"
NORMS_VIEW = "norms-view"
DEBUG_BOX = "debug-box"  #: holds the Debugging graph once its tab was opened
EMBEDDINGS_BOX = "embeddings-box"  #: holds the Embeddings graphs once their tab was opened
INPUT_PANEL = "input-panel"  #: the Input tab: the example's text and tokens (shown and raw)

# client-side state: the page computes views from the example's data (dashboard/assets/example.js)
PAYLOAD = "example-payload"  #: one example's attention and view templates (server -> page, once per key)
PAYLOAD_KEY = "example-payload-key"  #: which data the page needs now (the page writes it; the server answers)
URL_REQUEST = "example-url-request"  #: a URL the page's state does not show yet (for the server to resolve)
EXAMPLE_ID = "example-id"  #: run and example of the selection (the picker's text listens to it)
DETAILS = "example-details"  #: the tabs under the views (the server's panels draw only while their tab is open)
DETAIL_MODEL = "model"
DETAIL_TIMESTEP = "timestep"
DETAIL_INPUT = "input"
DETAIL_METRICS = "metrics"
DETAIL_DEBUG = "debug"
DETAIL_EMBEDDINGS = "embeddings"
METRICS_STATE = "metrics-state"  #: the selection, while the metrics panel is open
DEBUG_STATE = "debug-state"  #: the selection, while the debugging panel is open
EMBEDDINGS_STATE = "embeddings-state"  #: the selection, while the embeddings panel is open
INPUT_STATE = "input-state"  #: run and example, while the Input tab is open
