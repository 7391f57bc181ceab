"""Making EBV sets: closed forms where mathematics gives them, MindSpore optimisers otherwise.

``create_ebv(num_classes, dim, alpha=None, method="auto", seed=0, max_steps=None,
progress=True, device_target=None) -> EBVSet``; see ``factory`` for how ``auto`` chooses and
docs/generation.md for the benchmark behind the choices.
"""
from .closed_form import (kerdock, kerdock_capacity, kerdock_vectors, orthonormal,
                          padded_kerdock, simplex)
from .factory import METHODS, GenerationError, check_alpha, closed_form_choice, create_ebv

__all__ = ["create_ebv", "closed_form_choice", "check_alpha", "GenerationError", "METHODS",
           "kerdock", "kerdock_capacity", "kerdock_vectors", "orthonormal", "padded_kerdock",
           "simplex"]
