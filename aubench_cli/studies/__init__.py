"""Studies: the paper's experiments as presets of many runs, and the reports that put them side by side.

``study`` expands a preset into runs, trains and evaluates what is pending and records each run's state;
``report`` turns a study directory into tables and figures. May use every layer below (``evaluation``,
``training``, ``profiling``, ``models``, ``data`` and the bottom layer); never ``commands`` or the CLI.
"""
