"""The ground every stage stands on: the task (prompts.py), presets (config.py), the base model, the run folder's layout
(runs.py) and the shared-prefix maths.
"""
