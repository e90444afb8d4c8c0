"""The results tables; scripts/results_table.py is the command, and its docstring explains what a
table shows. Modules, in the order a table is made:

    run_files.py     Run: a tested run folder read and checked (config.json, test_metrics.json,
                     test_ranks.npz as per-user metrics, metrics.jsonl as training cost)
    grouping.py      runs grouped into rows (equal but for the seed), the row's names (setting,
                     item tower, mode), each MoRec row's IDRec baseline or why it has none
    significance.py  the seed-level test (paired t / Welch over seed means, two-level bootstrap),
                     the per-user cluster test (sign flip, user bootstrap), pairing two rows
    rows.py          one dict per table row: means, Δ vs IDRec, the tests' columns, cost, TPME
    table_text.py    the rows as markdown (cells, notes) and CSV; write_table
    aa_check.py      --aa_check: the default test on every split of one system's seeds (A/A)
    user_groups.py   --user_groups: the table per user group
"""
