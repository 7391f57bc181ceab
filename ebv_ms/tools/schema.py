"""``python -m ebv_ms.tools.schema``: every config key as the markdown table in docs/training.md."""
from ebv_ms.config import schema_table

if __name__ == "__main__":
    print(schema_table())
