"""Placement strategies (`gpu`, `hybrid`, `cpu`; `registry.py`): where the table, LazyDP's
history table and the MLPs live, how row updates and owed noise reach the table, and
whether a run fits (`layout.py`)."""
