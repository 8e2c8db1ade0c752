"""Colours shared by every tab's figures."""

#: Outline and highlight of the selected cell, head or token, in every tab.
SELECT_COLOUR = "#ff7f0e"
