"""Models of customer value: clustering, readable tree, potential-value GBM and the baselines they must beat.

Every model follows scikit-learn conventions: no work in ``__init__``, ``fit`` returns ``self``, learned
state ends with ``_``, random steps take a seed. Import the module you need (``segml.models.baselines``, …);
this package imports nothing so that each model's dependencies load only when used.
"""
