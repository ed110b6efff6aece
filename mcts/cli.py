"""`python -m mcts.cli`: the `mcts` command (`mcts info`, `mcts report`).

Its registry lives at the edge, in `treesearch.commands`, since `mcts report` reads what the edge
writes (results, manifests, trees); this module only forwards its `__main__` there, as
`mcts.search` does to `treesearch.cli`.
"""

from __future__ import annotations

import sys

if __name__ == "__main__":
    from treesearch.commands import main

    sys.exit(main())
