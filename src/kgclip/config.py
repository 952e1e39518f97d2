"""The harvest config: TOML validated by pydantic, so a typo is an error that names the key's path.

Every section is strict (unknown keys are refused) because a silently ignored key in a
harvest that runs for days costs far more than an error at start-up.
"""

from __future__ import annotations

import ipaddress
import re
import tomllib
from importlib import resources
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from kgclip.localfiles import read_regular


class ConfigError(ValueError):
    """A config that cannot be used; the message names the file and the key path."""


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class WordNetSource(Section):
    """Select noun synsets below `roots` from a WordNet 3.0 database."""

    path: Path | None = Field(
        default=None,
        description="folder holding data.noun and index.noun; default: Debian's or nltk_data's",
    )
    roots: list[str] = Field(
        default_factory=lambda: ["living_thing.n.01"],
        min_length=1,
        description="synsets (nltk names) whose hyponyms are the entities",
    )
    exclude_subtrees: list[str] = Field(
        default_factory=list, description="synsets dropped with everything below them"
    )
    exclude_names: list[str] = Field(
        default_factory=list, description="synsets with one of these lemmas are dropped (Donald_Duck)"
    )
    include_instances: bool = Field(
        default=False, description="keep instances (named individuals), not only kinds"
    )
    drop_instances_under: list[str] = Field(
        default_factory=list, description="instances below these synsets are dropped even when kept otherwise"
    )


QID = r"^Q[1-9][0-9]*$"
PID = r"^P[1-9][0-9]*$"
# A setting that changes how a stage runs but not a byte of what it writes: left out of the stage's
# config digest (stageconfig.py), so changing it does not make the stage's outputs stale.
HOW_NOT_WHAT = {"fingerprint": False}


class WikidataRoot(Section):
    """One root of a Wikidata selection and the MINUS clauses that go with it (docs/stages/wikidata.md)."""

    qid: str = Field(pattern=QID, description="the root's Wikidata item, e.g. Q729 (animal)")
    name: str = Field(description="the root's name in files and reports")
    exclude_classes: list[str] = Field(
        default_factory=list, description="members of these classes are dropped"
    )
    exclude_with: list[str] = Field(
        default_factory=list, description="members with these properties are dropped"
    )
    product_classes: list[str] = Field(
        default_factory=list,
        description="products (fruits) of these classes linked to a member taxon are members",
    )
    via: list[Literal["instance", "subclass", "taxon"]] = Field(
        default_factory=lambda: ["instance", "subclass", "taxon"],
        min_length=1,
        description="instance: (P31/P279*) root; subclass: P279+ root; taxon: P171+ root",
    )
    include_root: bool = Field(default=False, description="the root item itself is an entity (P279* root)")
    min_sitelinks: int = Field(
        default=0, ge=0, description="members with fewer Wikipedia sitelinks are dropped"
    )

    @model_validator(mode="after")
    def _ids(self) -> WikidataRoot:
        for qid in (*self.exclude_classes, *self.product_classes):
            if not re.match(QID, qid):
                raise ValueError(f"{qid!r} is not a QID")
        for pid in self.exclude_with:
            if not re.match(PID, pid):
                raise ValueError(f"{pid!r} is not a property id")
        return self


class WikidataSource(Section):
    """Wikidata items below `roots`, from a JSON dump or a SPARQL endpoint (the same selection)."""

    source: Literal["dump", "sparql"] = Field(
        default="dump", description="read a local JSON dump, or ask a SPARQL endpoint"
    )
    dump: Path | None = Field(default=None, description="latest-all.json(.gz|.bz2|.zst), for source = dump")
    endpoint: str = Field(
        default="qlever", description="'qlever', 'wdqs' or the URL of a self-hosted endpoint"
    )
    dialect: Literal["wdqs", "qlever"] | None = Field(default=None, description="needed for a URL endpoint")
    contact: str | None = Field(
        default=None, description="an e-mail or URL for the User-Agent (Wikimedia policy); needed for sparql"
    )
    timeout_s: float = Field(default=60.0, gt=0, description="seconds per SPARQL request")
    batch_size: int = Field(default=500, ge=1, le=5000, description="items per VALUES lookup")
    roots: list[WikidataRoot] = Field(min_length=1, description="the classes whose members are the entities")
    require_image: bool = Field(default=True, description="only items with an image (P18), as the method")
    cap_per_root: int = Field(
        default=28_000, ge=0, description="keep the top N by sitelinks per root; 0 = all"
    )
    workers: int = Field(default=0, ge=0, description="dump parsing processes; 0 = one per core")

    @model_validator(mode="after")
    def _source_settings(self) -> WikidataSource:
        if self.source == "dump" and self.dump is None:
            raise ValueError("source 'dump' needs `dump` (the path of latest-all.json.gz or similar)")
        if self.source == "sparql":
            if not self.contact:
                raise ValueError("source 'sparql' needs `contact` (e-mail or URL) for the User-Agent")
            if self.endpoint not in ("qlever", "wdqs") and self.dialect is None:
                raise ValueError("a URL endpoint needs `dialect` ('wdqs' or 'qlever')")
        return self


class MergeConfig(Section):
    """Linking WordNet synsets and Wikidata items that denote the same thing (docs/stages/merge.md)."""

    link: bool = Field(default=True, description="merge linked pairs into one entity row")
    bridge: Path | None = Field(
        default=None,
        description="a wn31,wn30 CSV/TSV that lets Wikidata's P8814 (WordNet 3.1 ids) link directly",
    )


class EntitiesConfig(Section):
    """Where the entities come from: WordNet, Wikidata or both (docs/stages/entities.md)."""

    wordnet: WordNetSource | None = None
    wikidata: WikidataSource | None = None
    merge: MergeConfig = Field(default_factory=MergeConfig)

    @model_validator(mode="after")
    def _a_source(self) -> EntitiesConfig:
        if self.wordnet is None and self.wikidata is None:
            raise ValueError("configure at least one source: [entities.wordnet] or [entities.wikidata]")
        return self


class KGTypeRule(Section):
    """Nearest ancestor that people name often enough (see docs/stages/types.md)."""

    min_popularity: int = Field(
        default=4, ge=0, description="SemCor tags an ancestor needs to count as a name people use"
    )
    too_general: list[str] = Field(
        default_factory=list, description="never a type: nltk names, wnids or entity ids"
    )


class LLMConfig(Section):
    """An OpenAI-compatible chat endpoint: vLLM, llama.cpp, Ollama, OpenAI, ..."""

    base_url: str = Field(description="e.g. http://localhost:8000/v1")
    model: str = Field(description="the model name the server knows, e.g. Qwen/Qwen2.5-7B-Instruct")
    api_key_env: str | None = Field(
        default=None, description="name of the environment variable holding the key (never the key itself)"
    )
    structured: Literal["auto", "json_schema", "guided", "json_object", "none"] = Field(
        default="auto",
        description="how to constrain answers; auto tries the strongest the server accepts, then falls back",
    )
    concurrency: int = Field(default=4, ge=1, le=256, description="requests in flight at once")
    max_retries: int = Field(default=5, ge=0, description="for 429 (Retry-After honoured), 5xx and timeouts")
    timeout_s: float = Field(default=120.0, gt=0, description="seconds per request")
    temperature: float = Field(default=0.0, ge=0, le=2, description="sampling temperature; 0 = the likeliest")
    top_p: float | None = Field(default=None, gt=0, le=1, description="nucleus sampling; unset: the server's")
    max_tokens: int = Field(default=1024, ge=16, description="the longest answer asked for")


class FilterConfig(Section):
    """The method's true/false entity filter (an LLM judges whether an entity really is, say, an animal)."""

    method: Literal["none", "llm"] = Field(default="none", description="none keeps every entity; llm asks")
    llm: LLMConfig | None = None
    top_n: int = Field(
        default=28_000, ge=0, description="judge only the top N per root by popularity; 0 = all"
    )

    @model_validator(mode="after")
    def _llm_given(self) -> FilterConfig:
        if self.method == "llm" and self.llm is None:
            raise ValueError("method 'llm' needs an [filter.llm] section")
        return self


class TypesConfig(Section):
    """Each entity's natural type, the word people would use (docs/stages/types.md)."""

    method: Literal["kg", "llm"] = Field(
        default="kg", description="kg: the KG rule below; llm: a model picks among the KG's ancestors"
    )
    kg: KGTypeRule = Field(default_factory=KGTypeRule)
    llm: LLMConfig | None = None

    @model_validator(mode="after")
    def _llm_given(self) -> TypesConfig:
        if self.method == "llm" and self.llm is None:
            raise ValueError("method 'llm' needs a [types.llm] section")
        return self


class AttributesConfig(Section):
    """Visual attributes per entity, each with a search query (docs/stages/attributes.md)."""

    method: Literal["kg", "llm"] = Field(
        default="kg", description="kg: read off WordNet, no model; llm: asked of the models in `llm`"
    )
    llm: list[LLMConfig] = Field(default_factory=list, description="one or more models, best first; merged")
    top_n: int = Field(
        default=500, ge=0, description="entities per root that get attributes, by popularity; 0 = all"
    )
    categories: dict[str, list[str]] = Field(
        description="attribute categories asked for, per category set (animal, plant, generic)",
        default_factory=lambda: {
            "animal": [
                "Color",
                "Pattern and texture",
                "Body parts",
                "Behavior and movement",
                "Shape and size",
                "Habitat and environment",
                "Other",
            ],
            "plant": [
                "Color",
                "Pattern and texture",
                "Plant parts",
                "Shape and size",
                "Habitat and environment",
                "Other",
            ],
            "generic": ["Color", "Pattern and texture", "Parts", "Shape and size", "Environment", "Other"],
        },
    )
    category_roots: dict[str, list[str]] = Field(
        # animal.n.01 / Q729; plant.n.02, fungus.n.01, bryophyte.n.01, parasitic_plant.n.01 / Q756
        # (fungi, mosses and parasitic plants are not below plant.n.02, but their parts fit)
        default_factory=lambda: {
            "animal": ["wn:n00015388", "wd:Q729"],
            "plant": ["wn:n00017222", "wn:n12992868", "wn:n11537327", "wn:n13120446", "wd:Q756"],
        },
        description="entities below these ids use that category set; all others use 'generic'",
    )
    max_per_category: int = Field(default=10, ge=1, le=10, description="attributes per entity and category")

    @model_validator(mode="after")
    def _consistent(self) -> AttributesConfig:
        if self.method == "llm" and not self.llm:
            raise ValueError("method 'llm' needs at least one [[attributes.llm]] model")
        if "generic" not in self.categories:
            raise ValueError("categories needs a 'generic' set for entities outside category_roots")
        unknown = set(self.category_roots) - set(self.categories)
        if unknown:
            raise ValueError(f"category_roots names sets without categories: {', '.join(sorted(unknown))}")
        return self


QueryKind = Literal["entity", "entity_attribute", "type_attribute"]


AmbiguityPolicy = Literal["qualify", "drop", "keep"]


class AmbiguityConfig(Section):
    """What to do with a query string that names more than its entity (docs/stages/queries.md)."""

    entity: AmbiguityPolicy = Field(
        default="qualify",
        description="a name that names more than its entity: qualify it (with an ancestor's name), "
        "drop it, or keep it",
    )
    entity_attribute: AmbiguityPolicy = Field(
        default="qualify", description="the same for entity-attribute queries"
    )
    type_attribute: AmbiguityPolicy = Field(
        default="keep", description="the natural type is what people call it, and its attribute reads it"
    )
    dominant_share: float = Field(
        default=0.75,
        gt=0.5,
        le=1.0,
        description="a sense with at least this share of the string's SemCor tags is what it means bare",
    )
    min_tags: int = Field(
        default=2,
        ge=1,
        description="fewer SemCor tags than this say nothing of what a string means (one is an accident)",
    )
    qualifier_min_names: int = Field(
        default=10,
        ge=1,
        description="an untagged hypernym qualifies when at least this many selected names end with it",
    )


class QueryJudgeConfig(Section):
    """The optional LLM query judge: does a query string, read as a search engine reads it, name
    something in the roots? Off by default; the KG rules decide offline (docs/llm.md)."""

    enabled: bool = Field(default=False, description="ask the model about each query string")
    llm: LLMConfig | None = None
    kinds: list[QueryKind] = Field(
        default_factory=lambda: ["entity", "entity_attribute", "type_attribute"],
        min_length=1,
        description="which query kinds are judged; the others pass unjudged",
    )
    domain: str | None = Field(
        default=None, description="the roots in words for the prompt; default: the root entities' names"
    )

    @model_validator(mode="after")
    def _llm_given(self) -> QueryJudgeConfig:
        if self.enabled and self.llm is None:
            raise ValueError("enabled = true needs a [queries.judge.llm] section")
        return self


class QueriesConfig(Section):
    """The search queries made of entities, their types and attributes (docs/stages/queries.md)."""

    kinds: list[QueryKind] = Field(
        default_factory=lambda: ["entity"],
        min_length=1,
        description="entity (its names), entity_attribute (red fox), type_attribute (red animal)",
    )
    entities: Literal["leaves", "all"] = Field(
        default="leaves", description="leaves only (the method's `livingthings` set) or all entities"
    )
    use_aliases: bool = Field(
        default=True, description="every lemma/alias becomes a query, not just the name"
    )
    max_per_entity: int | None = Field(
        default=None, ge=1, description="at most this many queries per entity (the name first); unset: all"
    )
    type_or_term: bool = Field(default=True, description="add the natural type as an or-term")
    exclude_terms: list[str] = Field(default_factory=list, description="terms results must not contain")
    photo_only: bool = Field(default=True, description="ask for photos where a backend can")
    max_per_kind: dict[QueryKind, int] = Field(
        default_factory=dict, description="budget caps, e.g. {type_attribute = 2000}: the most frequent first"
    )
    max_attribute_queries_per_entity: int | None = Field(
        default=None, ge=1, description="at most this many entity-attribute queries per entity; unset: all"
    )
    ambiguity: AmbiguityConfig = Field(default_factory=AmbiguityConfig)
    judge: QueryJudgeConfig = Field(default_factory=QueryJudgeConfig)


class CorpusConfig(Section):
    """A local image-text collection indexed with SQLite FTS5 (`kgclip corpus index`)."""

    index: Path | None = Field(default=None, description="a built index; relative paths are to the workdir")
    source: Path | None = Field(
        default=None, description="build the index from this folder or table if missing"
    )
    importer: Literal["auto", "folder", "table", "tuxpaint"] = Field(
        default="auto", description="how to read `source` (`kgclip corpus index --help`); auto guesses"
    )
    match: Literal["subject", "subject_first", "anywhere"] = Field(
        default="subject",
        description="where the query's words must be: the caption's subject (its head noun phrase), "
        "anywhere in the caption with subject matches first, or anywhere (BM25 order only)",
    )
    match_categories: bool | Literal["kinds"] = Field(
        default="kinds",
        description="let a folder category (animals/birds) match the query too: true, false, or "
        "'kinds': only when WordNet says the caption's subject is a kind of the query's entity "
        "(a blackbird in birds/ is a bird; a rabbit in rodents/ is not a rodent); 'kinds' also "
        "drops hits whose folder names nothing of the entity's kind (a clock in signs/) and whose "
        "compound subject is no kind of it (a hot dog)",
    )

    @model_validator(mode="after")
    def _index_or_source(self) -> CorpusConfig:
        if self.index is None and self.source is None:
            raise ValueError("set `index` (a built corpus) or `source` (to build one)")
        return self


class WebBackendConfig(Section):
    """What every web search backend shares: where, who is asking, and how politely."""

    base_url: str = Field(description="the API's address")
    api_key_env: str | None = Field(
        default=None, description="name of the environment variable holding the key (never the key itself)"
    )
    contact: str = Field(description="an e-mail or URL for the User-Agent")
    rate_per_s: float = Field(default=1.0, gt=0, description="sustained requests per second")
    burst: int = Field(default=1, ge=1, description="requests that may go at once after a pause")
    concurrency: int = Field(default=1, ge=1, le=64, description="requests in flight at once")
    daily_quota: int | None = Field(
        default=None, ge=1, description="requests per UTC day; stops cleanly there"
    )
    max_requests: int | None = Field(default=None, ge=0, description="request budget for one run")
    timeout_s: float = Field(default=30.0, gt=0, description="seconds per request")
    max_retries: int = Field(
        default=4, ge=0, description="retries of a request that failed for a passing reason"
    )
    backoff_s: float = Field(default=1.0, ge=0, description="the first retry's wait, doubled each time")
    max_connect_failures: int = Field(
        default=5, ge=1, description="connection attempts failing in a row that stop the stage (offline)"
    )


class OpenverseConfig(WebBackendConfig):
    """Openverse (api.openverse.org): CC-licensed images; anonymous ~20/min and 200/day."""

    base_url: str = "https://api.openverse.org/v1"
    rate_per_s: float = Field(default=20 / 60, gt=0)
    daily_quota: int | None = Field(default=200, ge=1)
    license: list[str] = Field(
        default_factory=lambda: ["cc0", "pdm", "by", "by-sa"], description="Openverse licence codes asked for"
    )
    category: str | None = Field(default="photograph", description="photo-only queries ask for this")
    page_size: int = Field(default=20, ge=1, le=500, description="20 anonymous, up to 500 registered")


def _key_variable(default: str) -> Any:
    return Field(
        default=default,
        min_length=1,
        description="name of the environment variable holding the key (never the key itself); required",
    )


class BraveConfig(WebBackendConfig):
    """Brave Search images (api.search.brave.com): paid plans; the Free plan's limit is 1/s, quota monthly."""

    base_url: str = "https://api.search.brave.com/res/v1"
    api_key_env: str = _key_variable("BRAVE_API_KEY")
    country: str = Field(default="US", description="a country code, or ALL")
    search_lang: str = Field(default="en", description="the language of the results")
    safesearch: Literal["off", "strict"] = Field(default="strict", description="images know no 'moderate'")
    spellcheck: bool = Field(default=False, description="off: Brave must not 'correct' taxon names")


class GoogleCseConfig(WebBackendConfig):
    """Google Custom Search JSON API in image mode: closed to new customers, ends 1 January 2027.

    100 queries/day free, then paid up to 10,000/day; 10 results per call, about 100 per query.
    """

    base_url: str = "https://www.googleapis.com/customsearch/v1"
    api_key_env: str = _key_variable("GOOGLE_API_KEY")
    cx: str = Field(min_length=1, description="the Programmable Search Engine id")
    daily_quota: int | None = Field(default=100, ge=1, le=10_000)
    rights: list[str] = Field(
        default_factory=list, description="licence filter, e.g. ['cc_publicdomain', 'cc_attribute']"
    )
    safe: Literal["active", "off"] = Field(default="active", description="SafeSearch")


class SerpApiConfig(WebBackendConfig):
    """SerpAPI's google_images engine (serpapi.com): paid, 100 searches/month free; 100 images a page."""

    base_url: str = "https://serpapi.com"
    api_key_env: str = _key_variable("SERPAPI_API_KEY")
    gl: str = Field(default="us", description="Google country")
    hl: str = Field(default="en", description="Google interface language")
    safe: Literal["active", "off"] = Field(default="active", description="SafeSearch")


class CommonsConfig(WebBackendConfig):
    """Wikimedia Commons (MediaWiki Action API): free, no key; serial requests with maxlag."""

    base_url: str = "https://commons.wikimedia.org/w/api.php"
    concurrency: int = Field(default=1, ge=1, le=1, description="Wikimedia asks for one request at a time")
    page_size: int = Field(default=50, ge=1, le=500, description="gsrlimit")
    thumb_width: int | None = Field(
        default=1280, ge=20, description="ask for a thumbnail this wide instead of the original file"
    )
    alt_text: Literal["title", "description"] = Field(
        default="title", description="the file name, or the file's description (falls back to the name)"
    )
    mime_types: list[str] = Field(
        default_factory=lambda: ["image/jpeg", "image/png", "image/webp", "image/tiff", "image/gif"],
        description="files of other types (SVG, PDF, DjVu, video) are skipped",
    )
    maxlag: int = Field(
        default=5, ge=1, description="seconds of replication lag at which Wikimedia may refuse"
    )


class INaturalistConfig(WebBackendConfig):
    """iNaturalist API v1: free; throttles at 100/min and asks for at most 60/min and 10,000/day."""

    base_url: str = "https://api.inaturalist.org/v1"
    rate_per_s: float = Field(default=1.0, gt=0)
    daily_quota: int | None = Field(default=10_000, ge=1)
    rank: str | None = Field(
        default=None,
        description="taxon rank(s) a query may resolve to, e.g. 'species,subspecies'; unset: any rank",
    )
    quality_grade: str = Field(default="research", description="observations of this grade only")
    photo_license: list[str] = Field(
        default_factory=lambda: ["cc0", "cc-by", "cc-by-sa"], description="photo licences asked for"
    )
    photo_size: Literal["small", "medium", "large", "original"] = Field(
        default="large", description="which size of each photo to fetch"
    )
    site_url: str = Field(default="https://www.inaturalist.org", description="for observation page URLs")


class GbifConfig(WebBackendConfig):
    """GBIF occurrence media (api.gbif.org): free, no key; one connection at a time."""

    base_url: str = "https://api.gbif.org/v1"
    concurrency: int = Field(default=1, ge=1, le=1, description="GBIF asks scripts for a single connection")
    license: list[str] = Field(
        default_factory=lambda: ["CC0_1_0", "CC_BY_4_0"], description="GBIF licence codes of the records"
    )
    page_size: int = Field(default=300, ge=1, le=300, description="occurrences per request (limit)")
    site_url: str = Field(default="https://www.gbif.org", description="for occurrence page URLs")


BackendName = Literal[
    "corpus", "openverse", "brave", "google_cse", "serpapi", "commons", "inaturalist", "gbif"
]


class SearchConfig(Section):
    """Where the queries are searched: a local corpus and web backends (docs/stages/search.md)."""

    backend: BackendName = Field(default="corpus", description="the backend, when only one")
    executor: Literal["local", "ray"] = Field(
        default="local", description="ray: corpus queries run as Ray tasks (web backends stay local)"
    )
    backends: list[BackendName] = Field(
        default_factory=list, description="several backends in one harvest (overrides `backend`)"
    )
    route: dict[QueryKind, list[BackendName]] = Field(
        default_factory=dict, description="per query kind, which backends it goes to (default: all)"
    )
    top_k: int = Field(default=20, ge=1, le=1000, description="results asked for per query")
    corpus: CorpusConfig | None = None
    openverse: OpenverseConfig | None = None
    brave: BraveConfig | None = None
    google_cse: GoogleCseConfig | None = None
    serpapi: SerpApiConfig | None = None
    commons: CommonsConfig | None = None
    inaturalist: INaturalistConfig | None = None
    gbif: GbifConfig | None = None

    @property
    def active(self) -> list[str]:
        return list(dict.fromkeys(self.backends or [self.backend]))

    @model_validator(mode="after")
    def _backends_configured(self) -> SearchConfig:
        for name in self.active:
            if getattr(self, name) is None:
                raise ValueError(f"backend {name!r} needs a [search.{name}] section")
        for kind, names in self.route.items():
            unknown = set(names) - set(self.active)
            if unknown:
                raise ValueError(f"route.{kind} names backends not in use: {', '.join(sorted(unknown))}")
        return self


class RayConfig(Section):
    """A Ray cluster for the stages run with executor = "ray"."""

    address: str | None = Field(
        default=None,
        description="a running cluster (host:6379 or ray://host:10001); none starts Ray on this machine",
    )
    num_cpus: int = Field(default=0, ge=0, description="CPUs of a Ray started here; 0 = all")
    tasks_in_flight: int = Field(default=0, ge=0, description="batches submitted at once; 0 = 2 per CPU")
    task_retries: int = Field(default=3, ge=0, description="re-runs of a batch whose worker died")


class FetchConfig(Section):
    """Downloading, checking and resizing the pictures found (docs/stages/fetch.md)."""

    resize: Literal["shorter", "longer", "none"] = Field(
        default="shorter", description="which side `size` bounds; images are only ever made smaller"
    )
    size: int = Field(default=512, ge=16, description="pixels of the side `resize` names, at most")
    jpeg_quality: int = Field(default=95, ge=1, le=100, description="of the stored JPEGs")
    resample: Literal["bicubic", "lanczos", "bilinear"] = Field(
        default="bicubic",
        description="resize filter (antialiased); bicubic is open_clip's, lanczos is sharper and slower",
    )
    min_side: int = Field(default=32, ge=1, description="reject images whose shorter side is smaller")
    max_pixels: int = Field(default=89_478_485, ge=1, description="decompression-bomb guard")
    max_bytes: int = Field(default=50_000_000, ge=1, description="larger downloads are refused")
    workers: int = Field(default=0, ge=0, description="decode processes; 0 = one per core")
    batch_size: int = Field(default=256, ge=1, description="images per tar part (the unit of resume)")
    executor: Literal["local", "ray"] = Field(
        default="local", description="decode on this machine's processes, or run each batch as a Ray task"
    )
    contact: str | None = Field(
        default=None, description="an e-mail or URL for the User-Agent of web downloads"
    )
    allow_loopback: bool = Field(
        default=False, description="let http URLs reach 127.0.0.1 (tests, local mirrors)"
    )
    allow_private: bool = Field(
        default=False, description="let http URLs reach private networks (local mirrors)"
    )
    allow_networks: list[str] = Field(
        default_factory=list,
        description='CIDRs ("10.8.0.0/16", "fd00:1::/64") that http URLs may reach whatever their '
        "category: a mirror on one subnet without opening every private network",
    )
    connect_timeout_s: float = Field(default=10.0, gt=0, description="per connection attempt")
    read_timeout_s: float = Field(default=20.0, gt=0, description="per read from an open connection")
    per_host_concurrency: int = Field(default=2, ge=1, description="downloads in flight per image host")
    per_host_rate_per_s: float = Field(default=2.0, gt=0, description="requests per second per image host")
    global_concurrency: int = Field(default=32, ge=1, description="downloads in flight over all hosts")
    max_redirects: int = Field(default=5, ge=0, description="redirects followed per URL")
    timeout_s: float = Field(
        default=60.0,
        gt=0,
        description="per URL: its lookups and requests, redirects and retries included (not queueing)",
    )
    max_retries: int = Field(
        default=3, ge=0, description="retries of a URL within a run (timeouts, connection errors, 429, 5xx)"
    )
    queue_timeout_s: float = Field(
        default=600.0,
        gt=0,
        description="per URL: the longest wait for its host's turn and a download slot (then retried later)",
    )
    give_up_after_runs: int = Field(
        default=3,
        ge=1,
        description="a URL that fails for a transient reason in this many runs is given up (gave_up)",
    )
    honour_x_robots: bool = Field(
        default=True, description="skip images served with X-Robots-Tag noai/noimageai"
    )

    @field_validator("allow_networks")
    @classmethod
    def _networks(cls, nets: list[str]) -> list[str]:
        for net in nets:
            try:
                ipaddress.ip_network(net, strict=True)
            except ValueError as exc:
                raise ValueError(f"{net!r} is not a network in CIDR notation ({exc})") from None
        return nets


class CurateConfig(Section):
    """Deduplication, decontamination, balancing and the WebDataset shards (docs/stages/curate.md)."""

    samples_per_shard: int = Field(default=5000, ge=1, description="samples per tar")
    near_duplicate_distance: int = Field(
        default=6,
        ge=0,
        le=20,
        description="merge pictures whose perceptual hashes differ in at most this many bits; 0: exact only",
    )
    near_duplicate_colour: int = Field(
        default=48,
        ge=0,
        le=255,
        description="near duplicates must also agree in mean colour within this much per channel",
    )
    shard_prefix: str = Field(
        default="shard", pattern=r"^[A-Za-z0-9_-]+$", description="shard file names: PREFIX-NNNNN.tar"
    )
    decontaminate: list[Path] = Field(
        default_factory=list,
        description="indexes from `kgclip decontam index`; relative paths are to the work directory",
    )
    decontam_distance: int = Field(
        default=8, ge=0, le=20, description="drop pictures this close (bits) to an evaluation image"
    )
    max_per_entity: int = Field(
        default=0, ge=0, description="MetaCLIP-style cap: keep about this many pictures per entity; 0 = all"
    )
    max_per_query: int = Field(default=0, ge=0, description="the same cap per query; 0 = all")
    licenses: list[str] = Field(
        default_factory=list,
        description="keep only these licence families or identifiers (cc0, pdm, cc-by, cc-by-sa, "
        "unknown, ...); empty = keep all",
    )
    val_fraction: float = Field(
        default=0.0,
        ge=0,
        lt=1,
        description="hold out about this share of the pictures (by a hash of their pixels) in val/ for "
        "evaluation; they never reach the training shards. 0 = no held-out split",
    )
    val_max: int = Field(
        default=5000, ge=0, description="at most this many held-out pictures (COCO's 5k test set); 0 = no cap"
    )
    executor: Literal["local", "ray"] = Field(
        default="local",
        description="run the near-duplicate search and write the shards in this process, or as Ray tasks "
        "(the same bytes; the work directory must be on a file system every Ray worker sees)",
        json_schema_extra=HOW_NOT_WHAT,
    )
    shards_per_task: int = Field(
        default=0,
        ge=0,
        description="shards a Ray task writes; 0 = about 32,768 samples' worth",
        json_schema_extra=HOW_NOT_WHAT,
    )


class NounCaptionWeights(Section):
    """Raw weights of a noun (entity) query's table; the synonym and description weights are split
    between the entity and its natural type by the hierarchy chance h (docs/train-captions.md)."""

    query: float = Field(default=0.4, ge=0, description="keep the query text (1 - 0.6)")
    synonym: float = Field(
        default=0.6, ge=0, description="a synonym: the entity's with 0.6·(1-h), its natural type's with 0.6·h"
    )
    description: float = Field(
        default=0.1, ge=0, description="a description: the entity's with 0.1·(1-h), the type's with 0.1·h"
    )


class AttributeCaptionWeights(Section):
    """Raw weights of an attribute query's table (entity-attribute and type-attribute queries);
    the synonym-based options and the description are split by h like the noun table's."""

    query: float = Field(default=1.0, ge=0, description="keep the query text")
    synonym: float = Field(default=0.2, ge=0, description="a synonym alone, without the attribute")
    pseudo_query: float = Field(
        default=0.2, ge=0, description='"{attribute} {synonym}" or "{synonym} {attribute}"'
    )
    replaced_query: float = Field(
        default=0.2, ge=0, description="the query with its entity mention swapped for a synonym (if any)"
    )
    attribute: float = Field(default=0.2, ge=0, description="the attribute word alone")
    description: float = Field(default=0.05, ge=0, description="a description")


DEFAULT_PROMPTS = [
    "a photo of a {}.",
    "a photo of the {}.",
    "a good photo of a {}.",
    "a close-up photo of a {}.",
    "a cropped photo of a {}.",
    "a bright photo of a {}.",
]


class CaptionsConfig(Section):
    """The method's per-sample caption mix: which text an image is paired with in each epoch
    (docs/train-captions.md). The defaults are EntityNet's released ones."""

    sources: Literal["mixed", "alt", "kg"] = Field(
        default="mixed",
        description="ablations: alt and KG texts mixed, alt texts only, or KG texts only (no alt texts)",
    )
    attribute_queries: bool = Field(
        default=True, description="draw from attribute queries; false: only noun queries give KG texts"
    )
    descriptions: bool = Field(default=True, description="descriptions may be drawn; false: never")
    alt_text_p: float = Field(
        default=0.5, ge=0, le=1, description="chance of an alt text when the image has one"
    )
    hierarchy_chance: float = Field(
        default=0.2, ge=0, le=1, description="h: the natural type's share of synonyms and descriptions"
    )
    hierarchy_chance_living: float = Field(
        default=0.1, ge=0, le=1, description="h when the natural type is one of `living_types`"
    )
    living_types: list[str] = Field(
        default_factory=lambda: ["wd:Q729", "wd:Q756", "wn:n00015388", "wn:n00017222"],
        description="natural types too general to name often: animal and plant in Wikidata and WordNet",
    )
    noun: NounCaptionWeights = Field(default_factory=NounCaptionWeights)
    attribute: AttributeCaptionWeights = Field(default_factory=AttributeCaptionWeights)
    prompt_weight: float = Field(
        default=0.0, ge=0, le=1, description="share of non-description texts put in a CLIP prompt template"
    )
    prompt_templates: list[str] = Field(
        default_factory=lambda: list(DEFAULT_PROMPTS), min_length=1, description='each with one "{}"'
    )

    @model_validator(mode="after")
    def _templates_have_a_slot(self) -> CaptionsConfig:
        bad = [t for t in self.prompt_templates if t.count("{}") != 1]
        if bad:
            raise ValueError(f'prompt templates need exactly one "{{}}" for the text: {bad}')
        return self


class TrainConfig(Section):
    """`kgclip train`: a CLIP model trained or fine-tuned on the harvest's shards (train/)."""

    model: str = Field(
        default="kgclip-tiny",
        description="a bundled model (kgclip-tiny, kgclip-tiny-a), any open_clip model name, or a model JSON",
    )
    pretrained: str | None = Field(
        default=None,
        description="a local checkpoint to fine-tune from, or an open_clip pretrained tag already cached",
    )
    data: str | None = Field(
        default=None,
        description="WebDataset shards to train on (a folder, a tar, a brace pattern); none = the workdir's",
    )
    data_fraction: float = Field(
        default=1.0, gt=0, le=1, description="the share of the harvest to train on (nested: docs/sweep.md)"
    )
    fraction_by: Literal["query", "picture"] = Field(
        default="query", description="cut the fraction by query, as the method's authors did, or by picture"
    )
    batch_size: int = Field(default=64, ge=1, description="samples per process and step")
    accum_steps: int = Field(default=1, ge=1, description="gradient accumulation: steps per optimiser step")
    epochs: float = Field(default=1.0, gt=0, description="passes over the shards (sizes.json counts them)")
    max_steps: int | None = Field(default=None, ge=1, description="stop after this many optimiser steps")
    lr: float = Field(default=5e-4, gt=0, description="peak learning rate (AdamW)")
    betas: tuple[float, float] = Field(default=(0.9, 0.98), description="AdamW's betas")
    eps: float = Field(default=1e-8, gt=0, description="AdamW's epsilon")
    weight_decay: float = Field(default=0.2, ge=0, description="AdamW's decoupled weight decay")
    warmup_epochs: float = Field(default=2.0, ge=0, description="linear warm-up, then cosine decay to 0")
    precision: Literal["fp32", "bf16", "fp16"] = Field(
        default="fp32", description="fp32, or mixed precision with bf16 or fp16"
    )
    loss: Literal["clip", "siglip", "multi_positive"] = Field(
        default="clip", description="InfoNCE, SigLIP, or InfoNCE with every same-entity pair positive"
    )
    grad_checkpointing: bool = Field(default=False, description="less memory for more compute")
    compile: bool = Field(default=False, description="torch.compile the model")
    patch_dropout: float = Field(default=0.0, ge=0, lt=1, description="share of image patches dropped")
    image_size: int | None = Field(
        default=None, ge=16, description="train at this resolution (CLIPA-style); none = the model's"
    )
    crop_scale: tuple[float, float] = Field(default=(0.4, 1.0), description="RandomResizedCrop scale")
    crop_ratio: tuple[float, float] = Field(default=(0.9, 1.111), description="RandomResizedCrop ratio")
    workers: int = Field(default=2, ge=0, description="data loader processes per training process")
    shuffle_buffer: int = Field(default=1000, ge=0, description="samples shuffled in memory")
    save_every_steps: int = Field(default=200, ge=1, description="write a checkpoint every N steps")
    keep_checkpoints: int = Field(default=2, ge=1, description="the last K step checkpoints are kept")
    log_every_steps: int = Field(
        default=10, ge=1, description="a progress line every N steps (log.csv has every step)"
    )
    tensorboard: bool = Field(default=False, description="also write TensorBoard events")
    threads: int = Field(default=0, ge=0, description="torch CPU threads per process; 0 = torch's default")
    eval_sets: list[str] = Field(
        default_factory=list,
        description="evaluation sets to validate on during training (specs as `kgclip eval --set`)",
    )
    eval_every_steps: int = Field(
        default=0, ge=0, description="validate every N steps and at the end (rank 0); 0 = never"
    )
    eval_names: list[str] = Field(default_factory=lambda: ["name"], description="class-name styles")
    eval_prompts: list[str] = Field(
        default_factory=lambda: ["default"],
        description="prompt sets (`default`: the set's own templates, else the 80 OpenAI ones)",
    )
    captions: CaptionsConfig = Field(default_factory=CaptionsConfig)


class Config(Section):
    """A harvest: where entities come from, how they become queries, where the queries are searched,
    and what is kept (docs/architecture.md)."""

    name: str = Field(pattern=r"^[A-Za-z0-9_.-]+$", description="the harvest's name, in the card and status")
    seed: int = Field(
        default=0, description="seed of every random choice, so that a rerun makes the same ones"
    )
    entities: EntitiesConfig = Field(default_factory=lambda: EntitiesConfig(wordnet=WordNetSource()))
    filter: FilterConfig = Field(default_factory=FilterConfig)
    types: TypesConfig = Field(default_factory=TypesConfig)
    attributes: AttributesConfig = Field(default_factory=AttributesConfig)
    queries: QueriesConfig = Field(default_factory=QueriesConfig)
    search: SearchConfig
    fetch: FetchConfig = Field(default_factory=FetchConfig)
    curate: CurateConfig = Field(default_factory=CurateConfig)
    ray: RayConfig = Field(default_factory=RayConfig, description="where stages with executor = 'ray' run")
    train: TrainConfig = Field(default_factory=TrainConfig, description="`kgclip train` (not a stage)")


BUILTIN = "kgclip.configs"


def builtin_names() -> list[str]:
    return sorted(
        p.name.removesuffix(".toml") for p in resources.files(BUILTIN).iterdir() if p.name.endswith(".toml")
    )


def resolve(ref: str | Path, base: Path | None = None) -> Path:
    """A config reference: a path, or the name of a bundled config (`demo`, `livingthings`)."""
    path = Path(ref)
    candidates = [base / path] if base is not None and not path.is_absolute() else []
    candidates.append(path)
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    name = path.name.removesuffix(".toml")
    if name in builtin_names() and path.parent == Path("."):
        return Path(str(resources.files(BUILTIN) / f"{name}.toml"))
    raise ConfigError(f"no config file {ref!s} (bundled configs: {', '.join(builtin_names())})")


def load_raw(ref: str | Path, _seen: tuple[Path, ...] = ()) -> dict[str, Any]:
    """Parse TOML and apply `extends` (tables merge key by key; other values replace)."""
    path = resolve(ref)
    if path.resolve() in _seen:
        raise ConfigError(f"{path}: `extends` loops back to itself")
    try:
        data = tomllib.loads(read_regular(path).decode("utf-8"))
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from exc
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: not UTF-8 text") from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read it ({exc.strerror or exc})") from None
    parent = data.pop("extends", None)
    if parent is None:
        return data
    if not isinstance(parent, str):
        raise ConfigError(f"{path}: extends: must be a config name or path")
    base = load_raw(resolve(parent, base=path.parent), (*_seen, path.resolve()))
    return _merge(base, data)


def _merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out


def load(ref: str | Path) -> Config:
    return parse(load_raw(ref), source=str(ref))


def parse(data: dict[str, Any], source: str = "<config>") -> Config:
    try:
        return Config.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(format_errors(exc, source)) from None


def format_errors(exc: ValidationError, source: str) -> str:
    lines = [f"{source}: invalid config"]
    for err in exc.errors():
        path = ".".join(str(p) for p in err["loc"]) or "(top level)"
        if err["type"] == "extra_forbidden":
            msg = "unknown key"
        elif err["type"] == "missing":
            msg = "required key is missing"
        else:
            msg = err["msg"]
        lines.append(f"  {path}: {msg}")
    return "\n".join(lines)
