"""Component ids of the app shell (header, tabs, URL, the resolved selection), shared by every tab."""

URL = "url"
STORE_NAV = "store-nav"  #: a second location that reloads the page on another store
TABS = "tabs"
RUN_SELECT = "run-select"
RUN_BOX = "run-box"  #: the header's Run label and selector (hidden on the Playground, which runs its own model)
STORE_SELECT = "store-select"
STORE_PATH = "store-path"
VIEW_STATE = "view-state"  #: the resolved selection every Example figure listens to
LAYOUT_FOR = "layout-for"  #: the URL (query string, store) the served layout was filled for (served_layout.py)
STORE_MENU_REQUEST = "store-menu-request"  #: the page asks for its Store menu (a layout not filled for it)
PANE_REQUEST = "pane-request"  #: the tab whose pane is to be filled, once its lazy bundles are in the page
