"""PNG figures from an aggregate: `figures.make_plots` draws them all; each figure module
(`curves`, `ablation`, `paper_layout`, `search_plots`) uses only `toolbox`."""
