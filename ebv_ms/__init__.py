"""ebv-ms: Equiangular Basis Vectors (Shen, Sun, Wei, CVPR 2023) for MindSpore; folders by role in
docs/architecture.md. Importing the package imports no framework."""
__version__ = "0.1.0"
