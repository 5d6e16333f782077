"""Modules that register components and methods, in the order they must be imported
(a method's parent must be registered before the method). Add a new module here."""

REGISTERING = [
    "losses",  # trajectory-side policy losses, KL estimators (chapters 02, 07, 11)
    "estimators",  # Part I: score function, baselines, REINFORCE (chapters 02-04)
]
