"""Token attribution for decoders (`attribute`), greedy generation (`generate`), tokenizers,
and the language models they run on (`LanguageModel`)."""

from jaxinterp.text import language
from jaxinterp.text.attribution import METHODS, attribute
from jaxinterp.text.generation import generate
from jaxinterp.text.model import LanguageModel, init_language_model
from jaxinterp.text.tokenizer import Tokenizer
from jaxinterp.text.wrapped import wrap

__all__ = ["METHODS", "LanguageModel", "language", "Tokenizer", "attribute", "generate",
           "init_language_model", "wrap"]
