"""Helpers shared by the ClusterMine Studio pages (Streamlit only; no engine logic lives here).

- :mod:`ui.settings`  runs root and data roots from the environment
- :mod:`ui.text`      escaping of user-provided text for Markdown and plotly hover labels
- :mod:`ui.state`     the selected run (session state <-> ``?run=`` query parameter)
- :mod:`ui.cache`     st.cache_resource wrappers: encoder (one per process, locked), runs, scorers
- :mod:`ui.widgets`   page header, badges, empty states, error guard, thumbnail grids
- :mod:`ui.charts`    plotly figures (cluster map, vote histograms, score histograms)
- :mod:`ui.scores`    held-out / what-if scoring and scoring of new images
- :mod:`ui.new_run`   the new-run form (sources, options, launch)
- :mod:`ui.job_panel` progress, cancel, resume and skipped files of a run's mining job
"""
