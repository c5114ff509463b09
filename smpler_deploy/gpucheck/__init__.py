"""`smpler-check-gpu`: run every GPU path this machine can, say for each executed / skipped (why) / failed.

A list of small step functions (`steps.STEPS`), each returning a `StepResult`; `core.run_check` runs them within a
time budget and `core.write_report` writes report.json and report.md. Nothing here needs a GPU to import.
"""
