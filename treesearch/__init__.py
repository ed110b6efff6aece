"""The edge of treesearch: what turns names, files and flags into searches.

    treesearch.loaders    policies and scorers by name (`--model`, `--prm`)
    treesearch.executor   where the search runs: this process, or Ray actors
    treesearch.results    the results file and the driver that fills it
    treesearch.cli        `python -m mcts.search`

The layers below (`mcts.core`, `mcts.policy`, the searches of `mcts`, `prm`) never import it;
`selftrain` and `benchmarks` sit above it (ARCHITECTURE.md).
"""
