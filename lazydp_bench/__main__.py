"""`python -m lazydp_bench` runs the CLI (the GPU machine uses it uninstalled)."""

from lazydp_bench.launch import main

main()
