"""FlinkCEP-style patterns: ``Pattern`` (steps, quantifiers, contiguity) and the
``CepPattern`` operator; conditions compile (``_compiler``) to an NFA run by numba
(``_nfa_kernels``, ``_store_kernels``)."""

from telepipe.operators.patterns.pattern import CepPattern, Pattern, PatternStep

__all__ = ["CepPattern", "Pattern", "PatternStep"]
