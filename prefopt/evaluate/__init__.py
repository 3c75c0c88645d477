"""Evaluation: accuracy and length, the length-controlled win rate (:mod:`prefopt.evaluate.lc_winrate`), plots."""
