"""The sentence generator the optimizer's text tests use: it lives with the sample builders
(``models/text_sentences.py``, on the path through tests/conftest.py) so install.sh can use it too."""

from text_sentences import sentences, write_split

__all__ = ["sentences", "write_split"]
