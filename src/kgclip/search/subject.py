"""The subject of a caption: the noun phrase it is about, and the query texts that name it.

A caption says what a picture shows in its first noun phrase ("A red kangaroo.", "An echidna
looking for ants.") and mentions other things in passing ("... in the grass", "... called a
loonie. It's named after the bird on the coin—a loon."). Matching a query anywhere in the caption
links pictures to things they do not show; matching it to the subject does not.

The rule is written for short image captions (it was designed on all 952 Tux Paint first lines)
and uses no part-of-speech tagger: a tagger is a large dependency for what captions need, and its
mistakes on two-word captions are no rarer. It works in three steps.

1. The phrase: the first sentence's words after leading determiners ("A", "The", "Some", "Two"),
   through a partitive ("A pair of cherries" → cherries, "The baby of a gnu" → gnu), up to the
   first punctuation, preposition, verb or pronoun ("An echidna looking for ants" → echidna; a
   participle after the first word ends it). A parenthesis or "called ..." right after it names
   the same thing again ("A baby sheep (a lamb)") and is a subject too.
2. The head compound: the last word and the words before it that name a kind of thing. A query
   naming only the last word matches when every word before it is *transparent*: a listed
   adjective (colours, sizes, ages, sexes, ...), a word shaped like one (-ed, -ing, -ful, -ous,
   ...) or a capitalised proper adjective before a lower-case head ("Sumatran tiger"). Any other
   modifier makes a compound that names something else: "sea lion" is not a lion, "coral trout"
   is not a trout, "VW Beetle" and "F-22 Raptor" are not animals. This loses a few right links
   whose compound is a kind of the head ("rainbow lorikeet" for "lorikeet"); the compound's own
   query still finds the picture.
3. Classifier heads ("hibiscus flower", "avocado fruit", "palm tree", "fox cub") name the
   species in the modifier: the modifier is a head too, and so is the classifier. Artefact
   words ("rubber duck", "toy truck", "plastic flower") make every shorter key wrong.

`subject_keys` lists the lower-cased word sequences a query must equal (its last word in either
number) to match the subject. Bump `RULE_VERSION` whenever the output changes: corpus indexes
store the keys and are rebuilt when it changes.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass

RULE_VERSION = 2


def _wordset(words: str) -> frozenset[str]:
    return frozenset(words.split())


# Words are letters and digits with inner hyphens or apostrophes ("F-22", "Jack-o’-lantern");
# quotes are dropped; anything else ends the phrase.
_WORD = re.compile(r"\w+(?:[-'’]+\w+)*")
_QUOTES = "\"'“”‘’«»"
_SENTENCE_END = re.compile(r"[.!?](?:\s|$)")

DETERMINERS = _wordset(
    "a an the some any this that these those my your our their his her its another every each "
    "one two three four five six seven eight nine ten twelve several many few"
)
# "A pair of cherries", "A photo of a koala": the subject comes after "of".
PARTITIVES = _wordset(
    "pair couple bunch cluster head string slice piece quarter half cup glass bowl basket bag "
    "handful group flock herd swarm school pod plant baby "
    "photo photograph picture image drawing illustration painting portrait sketch view closeup "
    "close-up shot snapshot"
)
# Words that end the phrase: prepositions, conjunctions that start a clause, verbs and pronouns
# seen after a caption's subject.
PREPOSITIONS = _wordset(
    "of in on at with without from for to by into inside onto under over near behind beside "
    "between about like as after before during around through among against toward towards "
    "upon across along"
)
STOPS = PREPOSITIONS | _wordset(
    "or but than unless while because if when where which who whose that "
    "is are was were be been being has have had can could will would should may might must "
    "do does did lets let means stands makes made carries pushes resembles called named known "
    "used worn eaten said gets joins contains looks it they he she we you"
)
NOUNS_AT_END = frozenset({"can"})  # a verb mid-caption, a noun at the end ("a garbage can")
# Heads whose modifier names the species: plant parts and produce ("hibiscus flower", "apple
# core"), and the young of animals ("fox cub").
CLASSIFIERS = _wordset(
    "fruit fruits flower flowers blossom blossoms plant plants tree trees bush shrub bulb bulbs "
    "leaf leaves seed seeds nut nuts root roots vine berry berries core slice slices "
    "cub cubs pup pups puppy puppies kitten kittens calf calves foal foals chick chicks fawn "
    "fawns joey joeys hatchling hatchlings"
)
# Materials and kinds of artefact: a "rubber duck" is no duck, a "plastic flower" no flower.
ARTEFACTS = _wordset(
    "toy toys rubber plastic stuffed plush wooden paper cardboard chocolate candy sugar cookie "
    "glass metal stone ceramic porcelain clay wax origami model fake artificial cartoon robot "
    "robotic mechanical inflatable teddy statue figurine puppet costume logo emblem"
)
ADJECTIVES = _wordset(
    # colours and patterns
    "red orange yellow green blue purple violet pink brown black white grey gray silver golden "
    "dark light pale bright albino colorful colourful multicolored multicoloured spotty stripey "
    "stripy "
    # size, age, sex
    "big small little large huge tiny giant great lesser greater tall short long fat thin "
    "pygmy dwarf baby young old adult juvenile mature newborn male female "
    # qualities captions use
    "happy sad angry cute funny pretty beautiful lovely wild domestic tame pet sweet sour ripe "
    "fresh dried dry wet hot cold fluffy furry hairy spiny floppy woolly wooly shaggy shiny "
    "smooth rough poisonous venomous dangerous friendly hungry sleepy busy lonely common "
    "tropical arctic northern southern eastern western freshwater marine whole single double "
    "native new modern ancient very really quite so too "
    # places, when a caption writes them in lower case ("A european bear")
    "european american african asian australian indian chinese japanese mexican canadian "
    "siberian himalayan alpine "
    # numbers ("a four leaf clover")
    "one two three four five six seven eight nine ten"
)
_ADJECTIVE_SUFFIXES = ("ful", "ous", "less")  # not -ish (radish, clownfish), -able (vegetable)


def fold(text: str) -> str:
    """Lower case without diacritics, as the FTS5 index tokenises (`remove_diacritics 2`)."""
    decomposed = unicodedata.normalize("NFKD", text.lower())
    return "".join(c for c in decomposed if not unicodedata.combining(c))


def key_tokens(text: str) -> list[str]:
    """The search tokens of a text: folded, split at anything but letters and digits (an
    underscore too, as FTS5's unicode61 tokeniser splits "big_cats")."""
    return re.findall(r"[^\W_]+", fold(text))


@dataclass(frozen=True, slots=True)
class Word:
    text: str  # as written
    start: int  # where it starts in the caption

    @property
    def capitalised(self) -> bool:
        return self.text[:1].isupper() and not self.text.isupper()


@dataclass(frozen=True, slots=True)
class Subject:
    """A caption's subject phrase(s) and the keys that match them."""

    phrases: tuple[str, ...]  # as written, the main one first; aliases after
    keys: tuple[str, ...]  # folded token sequences joined by spaces

    @property
    def text(self) -> str:
        return self.phrases[0] if self.phrases else ""


def caption_subject(caption: str) -> Subject:
    """The subject phrase of a caption and its match keys; empty when it has none."""
    first = _first_sentence(caption)
    phrases: list[list[Word]] = []
    main, rest = _phrase(first, 0, at_start=True)
    if main:
        phrases.append(main)
        alias = _alias(first, rest)
        if alias:
            phrases.append(alias)
    initial = next((m.start() for m in _WORD.finditer(first)), 0)
    keys: list[str] = []
    for phrase in phrases:
        for conjunct in _conjuncts(phrase):
            keys.extend(k for k in _keys(conjunct, initial) if k not in keys)
    return Subject(tuple(_as_written(first, p) for p in phrases), tuple(keys))


def _first_sentence(caption: str) -> str:
    end = _SENTENCE_END.search(caption)
    return caption[: end.start()] if end else caption


COMMA, BREAK = ",", "|"  # punctuation tokens: a comma, anything else that ends a phrase


def _tokens(text: str, pos: int) -> list[Word]:
    """Words from `pos`, with a COMMA or BREAK token where punctuation (not quotes) comes between."""
    out: list[Word] = []
    i = pos
    for m in _WORD.finditer(text, pos):
        out.extend(_punctuation(text, i, m.start()))
        out.append(Word(m.group(), m.start()))
        i = m.end()
    out.extend(_punctuation(text, i, len(text)))
    return out


def _punctuation(text: str, start: int, end: int) -> list[Word]:
    marks = [c for c in text[start:end] if not c.isspace() and c not in _QUOTES]
    if not marks:
        return []
    return [Word(COMMA if set(marks) == {","} else BREAK, start)]


def _phrase(text: str, pos: int, at_start: bool) -> tuple[list[Word], int]:
    """The subject phrase starting at `pos`, and where the text after it starts."""
    tokens = _tokens(text, pos)
    words: list[Word] = []
    i = _skip_determiners(tokens, 0)
    while i < len(tokens):
        tok, low = tokens[i], tokens[i].text.lower()
        if low == COMMA and words and all(_transparent_word(w.text.lower()) for w in words):
            i += 1  # "A ripe, red tomato"
            continue
        if low in (COMMA, BREAK):
            break
        if low == "of" and len(words) == 1 and words[0].text.lower() in PARTITIVES:
            words, i = [], _skip_determiners(tokens, i + 1)
            continue
        if low in DETERMINERS and words:
            if at_start and len(words) == 1 and words[0].start == tokens[0].start:  # "Eat your broccoli"
                words, i = [], _skip_determiners(tokens, i)
                continue
            words = words[:-1] if len(words) > 1 else words  # "A hoverfly resembles a ...": a verb
            break
        if low in NOUNS_AT_END and not _next_is_word(tokens, i):
            words.append(tok)  # "A silver garbage can."
            break
        if low in STOPS or (words and _gerund(low) and _next_is_word(tokens, i, STOPS)):
            if len(words) > 1 and low in PREPOSITIONS and _participle(words[-1].text.lower()):
                words = words[:-1]  # "A chick hatched from an egg", "A woman dancing in a gown"
            break
        words.append(tok)
        i += 1
    end = words[-1].start + len(words[-1].text) if words else len(text)
    return words, end


def _skip_determiners(tokens: list[Word], i: int) -> int:
    while i < len(tokens) and tokens[i].text.lower() in DETERMINERS:
        i += 1
    return i


def _next_is_word(tokens: list[Word], i: int, unless: frozenset[str] = frozenset()) -> bool:
    """Whether a word follows token `i` (a word not in `unless`)."""
    if i + 1 >= len(tokens):
        return False
    nxt = tokens[i + 1].text.lower()
    return nxt not in (COMMA, BREAK) and nxt not in unless


def _gerund(word: str) -> bool:
    return len(word) >= 6 and word.endswith("ing")


def _participle(word: str) -> bool:
    return _gerund(word) or (len(word) > 4 and word.endswith("ed") and not word.endswith("eed"))


def _alias(text: str, after: int) -> list[Word]:
    """Another name right after the subject: "(a lamb)", "(or inuksuk)", ", also called a bitter orange"."""
    rest = text[after:]
    skipped = after + len(rest) - len(rest.lstrip(" ,"))
    paren = re.match(r"\(\s*(?:or\s+)?", text[skipped:])
    if paren:
        close = text.find(")", skipped)
        return _phrase(text[: close if close >= 0 else len(text)], skipped + paren.end(), at_start=False)[0]
    called = re.match(r"(?:also\s+)?(?:called|known\s+as)\s+", text[skipped:])
    if called:
        return _phrase(text, skipped + called.end(), at_start=False)[0]
    return []


def _conjuncts(phrase: list[Word]) -> list[list[Word]]:
    """"A top and skirt" names two things; "a red and white flower" one (a lone adjective
    before "and" is no conjunct)."""
    parts: list[list[Word]] = [[]]
    for w in phrase:
        if w.text.lower() == "and":
            parts.append([])
        else:
            parts[-1].append(w)
    last = len(parts) - 1
    return [
        p
        for i, p in enumerate(parts)
        if p and (i == last or len(p) > 1 or not _transparent_word(p[0].text.lower()))
    ]


def _keys(phrase: list[Word], initial: int) -> list[str]:
    """The token sequences a query may equal to name this phrase's subject; `initial` is where
    the caption's first word starts (its capital says nothing)."""
    tokens: list[tuple[str, Word]] = [(t, w) for w in phrase for t in key_tokens(w.text)]
    if not tokens:
        return []
    words = [t for t, _ in tokens]
    head_cap = tokens[-1][1].capitalised and tokens[-1][1].start != initial
    transparent = [_transparent(t, w, head_cap, initial) for t, w in tokens]
    artefact = any(t in ARTEFACTS for t in words)
    heads = [len(words) - 1]
    while heads[-1] > 0 and words[heads[-1]] in CLASSIFIERS:
        before = heads[-1] - 1  # "hibiscus" of "hibiscus flower"; not "yellow" or "plastic"
        if transparent[before] or words[before] in ARTEFACTS:
            break
        heads.append(before)
    keys = []
    for n, p in enumerate(heads):
        for j in range(p, -1, -1):
            classifier = n == 0 and len(heads) > 1  # "flower" of "hibiscus flower": any modifier
            if j == 0 or (classifier and not artefact) or all(transparent[:j]):
                keys.append(" ".join(words[j : p + 1]))
    return keys


def _transparent(token: str, word: Word, head_capitalised: bool, initial: int) -> bool:
    """Whether a modifier leaves the head's meaning alone ("red" kangaroo, "Sumatran" tiger)."""
    if _transparent_word(token):
        return True
    proper = word.capitalised and word.start != initial and token.isalpha()
    return proper and not head_capitalised and token not in ARTEFACTS


def _transparent_word(token: str) -> bool:
    if token in ADJECTIVES:
        return True
    if token.isdigit() or token in ARTEFACTS:
        return False
    return _participle(token) or (len(token) > 5 and token.endswith(_ADJECTIVE_SUFFIXES))


def _as_written(text: str, phrase: list[Word]) -> str:
    return text[phrase[0].start : phrase[-1].start + len(phrase[-1].text)] if phrase else ""
