"""Making EBV sets: closed forms where mathematics gives them, MindSpore optimisers otherwise
(``create_ebv``; ``factory`` says how ``auto`` chooses, docs/generation.md measures why)."""
from .factory import METHODS, GenerationError, closed_form_choice, create_ebv
