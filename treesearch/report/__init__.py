"""Reports of search runs: one self-contained HTML page, read from the files a search wrote.

    treesearch.report.runs    what a page shows: records, problems, trees, accuracy with its Wilson
                              interval, the breakdown by difficulty, two runs compared
    treesearch.report.page    the HTML (CSS and the page's script in assets/, inline in the page)
    treesearch.report.cli     `mcts report` and `write_search_report`

`selftrain report` (selftrain.report) builds its run page from the same pieces.
"""
