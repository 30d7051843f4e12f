"""Where tables, history table and MLPs live, and whether a run fits, checked before allocating."""
