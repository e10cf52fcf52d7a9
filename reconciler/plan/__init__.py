"""Plan and apply (SPEC P1-P3): diff desired against live, render, save, apply."""
