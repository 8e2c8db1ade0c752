"""Component ids of the Playground tab (every one starts with ``pg-``; the tests and the browser use them too)."""

# Stores
SESSION = "pg-session"
RESULT = "pg-result"
ADD_REQUEST = "pg-add-request"
ADDED = "pg-added"
JOB = "pg-job"  #: a job handed to the background callback (too slow to answer at once)
PENDING = "pg-pending"  #: a copied link's job and view, run once when the page opens (controls.restore_request)
AUTORUN = "pg-autorun"  #: set once by a copied link that showed a result: runs PENDING's job
RESTORED = "pg-restored"  #: set once the page has read the link's Playground entries (they are read only once)
TAB = "playground"

# Model and its configuration
MODEL = "pg-model"
MODEL_NOTE = "pg-model-note"
MODEL_WARNING = "pg-model-warning"
CONFIG = "pg-config"
LAYERS = "pg-layers"
HEADS = "pg-heads"
HIDDEN = "pg-hidden"
MODEL_SEED = "pg-model-seed"

# Task and input
TASK = "pg-task"
LANG_ROW = "pg-lang-row"
SRC_LANG = "pg-src-lang"
TGT_LANG = "pg-tgt-lang"
INPUT_KIND = "pg-input-kind"
TYPED_ROW = "pg-typed-row"
TEXT = "pg-text"
SECOND_ROW = "pg-second-row"
SECOND_LABEL = "pg-second-label"
SECOND = "pg-second"
RANDOM_ROW = "pg-random-row"
LENGTH = "pg-length"
RANDOM_SEED = "pg-random-seed"

# Running a job
RUN = "pg-run"
CANCEL = "pg-cancel"
PROGRESS = "pg-progress"
STATUS = "pg-status"
ERROR = "pg-error"
ERROR_TEXT = "pg-error-text"
JOB_LOADING = "pg-job-loading"  #: "running the model…" while a job takes longer than LOADING_DELAY_MS

# Predict output words
PREDICT_NOTE = "pg-predict-note"
PREDICT_BLOCKED = "pg-predict-blocked"  #: why Predict is disabled for this model (inside PREDICT_NOTE)
GEN_CONTROLS = "pg-gen-controls"
GEN_N = "pg-gen-n"
GEN_TEMP = "pg-gen-temp"
GEN_SEED = "pg-gen-seed"
GEN_MODE = "pg-gen-mode"
MASK_CONTROLS = "pg-mask-controls"
MASK_POS = "pg-mask-pos"
PREDICT = "pg-predict"

# Add to the store
RUN_NAME = "pg-run-name"
ADD = "pg-add"
ADD_STATUS = "pg-add-status"
ADD_ERROR = "pg-add-error"
ADD_DONE = "pg-add-done"

# The result and its views
VIEWS_LOADING = "pg-views-loading"  #: a spinner over the result while its views take longer than LOADING_DELAY_MS
SUMMARY = "pg-summary"
SUMMARY_MODEL = "pg-summary-model"
SUMMARY_TEXT = "pg-summary-text"
GENERATION = "pg-generation"
GENERATED_TEXT = "pg-generated-text"
GENERATED_RAW = "pg-generated-raw"
STEPS_TABLE = "pg-steps-table"
STEP_ROW = "pg-step-row"  #: pattern-matching type, one row per generation step
MASKED = "pg-masked"
MASKED_PANEL = "pg-masked-panel"
MASK_TABLE = "pg-mask-table"  #: pattern-matching type, one table per masked position
KIND = "pg-kind"
LAYER = "pg-layer"
HEAD = "pg-head"
STEP = "pg-step"
STEP_LABEL = "pg-step-label"
MATRIX = "pg-matrix"
HEAD_VIEW = "pg-headview"
MODEL_VIEW = "pg-modelview"
STEP_BARS = "pg-step-bars"
STEP_LAYERS = "pg-step-layers"
EMBEDDINGS = "pg-embeddings"

#: The six graphs of a result, in the order :func:`attnviz.dashboard.playground.figures.draw` returns them.
GRAPHS = (MATRIX, HEAD_VIEW, MODEL_VIEW, STEP_BARS, STEP_LAYERS, EMBEDDINGS)
