"""Token classes as bit flags, assigned from the tokenizer (never guessed from strings alone).

Every stored token carries a ``uint8`` flag word built from these bits. The pipeline sets them from the
tokenizer's own special-token ids and special-tokens mask; punctuation is decided on the tokenizer's decoded
text of the token with the Unicode ``P*`` categories (the rule BERT's basic tokenizer splits on).
"""

from __future__ import annotations

SPECIAL = 1  #: any token in the tokenizer's special-tokens mask ([CLS], [SEP], <s>, </s>, <pad>, ...)
CLS_OR_BOS = 2  #: the tokenizer's cls_token_id or bos_token_id
SEP_OR_EOS = 4  #: the tokenizer's sep_token_id or eos_token_id
PUNCTUATION = 8  #: decoded text is non-empty and every character is Unicode punctuation (category P*)

