"""The loop: the online learner, cron's entry, runs train -> evaluate -> gate -> export -> deploy on new ratings."""
