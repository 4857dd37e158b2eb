"""Reading sweep results, DomainBed model selection, tables and plots (no torch, no ray).

Four stages, each a subpackage that imports only the ones before it (docs/report.md):

- `read/`: run folders -> the records table (`read/records.py`: `read_sweep_records`);
- `select/`: DomainBed's model selection rules -> the chosen runs and the table cells;
- `render/`: the tables (DomainBed's text, markdown, LaTeX, the paper's layout);
- `plots/`: the figures (`plots/figures.py` draws them all, `plots/toolbox.py` is shared).

`aggregate.py` runs read and select and writes the aggregate folder, whose files
`aggregate_folder.py` names and loads back for `render/` and `plots/`.
"""
