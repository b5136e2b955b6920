"""The hand-made toy corpus (four topics, a duplicate of a positive under another id), its six
training queries, and candidate lists built from them: small enough for the real
all-MiniLM-L6-v2 and SmolLM2 on CPU, shared by the mining, LLM, backend and training tests."""

from __future__ import annotations

import polars as pl

TOPICS = {
    "photo": [
        "Photosynthesis converts light energy into chemical energy inside chloroplasts.",
        "Chlorophyll absorbs red and blue light, which powers photosynthesis in leaves.",
        "Plants release oxygen as a by-product of photosynthesis.",
        "The Calvin cycle fixes carbon dioxide into sugars using ATP and NADPH.",
        "Stomata on leaves open to take in carbon dioxide for photosynthesis.",
        "C4 plants such as maize concentrate carbon dioxide to photosynthesise efficiently.",
    ],
    "vaccine": [
        "Vaccines train the immune system to recognise a pathogen without causing disease.",
        "mRNA vaccines instruct cells to make a viral protein that triggers an immune response.",
        "Herd immunity protects people who cannot be vaccinated.",
        "Booster doses restore antibody levels that wane over time after vaccination.",
        "Live attenuated vaccines use a weakened form of the virus.",
        "Adjuvants are added to some vaccines to strengthen the immune response.",
    ],
    "volcano": [
        "Volcanoes erupt when magma rises through cracks in the Earth's crust.",
        "Pyroclastic flows are fast currents of hot gas and volcanic matter.",
        "Shield volcanoes such as Mauna Loa have gentle slopes built by fluid lava.",
        "Volcanic ash can ground aircraft by damaging jet engines.",
        "Subduction zones around the Pacific form the Ring of Fire.",
        "Geothermal energy taps heat from volcanic regions.",
    ],
    "bread": [
        "Yeast ferments sugars in dough, producing carbon dioxide that makes bread rise.",
        "Sourdough bread is leavened with a culture of wild yeast and lactic acid bacteria.",
        "Kneading develops gluten, giving bread its chewy structure.",
        "Baking soda releases carbon dioxide when it reacts with an acid.",
        "Bread goes stale as its starch recrystallises, not only because it dries out.",
        "Whole wheat flour contains the bran and germ of the grain.",
    ],
}
QUERIES = [
    ("q_photo", "How do plants turn sunlight into chemical energy?", ["photo-0"]),
    ("q_chloro", "What role does chlorophyll play in plants?", ["photo-1", "photo-2"]),
    ("q_mrna", "How do mRNA vaccines work?", ["vaccine-1"]),
    ("q_erupt", "Why do volcanoes erupt?", ["volcano-0"]),
    ("q_rise", "What makes bread dough rise?", ["bread-0"]),
    ("q_stale", "Why does bread go stale?", ["bread-4"]),
]


def make_passages() -> pl.DataFrame:
    rows = [(f"{topic}-{i}", "", text) for topic, texts in TOPICS.items() for i, text in enumerate(texts)]
    # Same text as a positive under another id: a false negative by construction.
    rows.append(("photo-0-copy", "", TOPICS["photo"][0]))
    return pl.DataFrame(rows, schema={"doc_id": pl.String, "title": pl.String, "text": pl.String}, orient="row")


def make_triplets(provided: dict[str, list[str]] | None = None) -> pl.DataFrame:
    provided = provided or {}
    return pl.DataFrame(
        {
            "dataset": ["toy"] * len(QUERIES),
            "query_id": [q for q, _, _ in QUERIES],
            "query_text": [t for _, t, _ in QUERIES],
            "positive_ids": [p for _, _, p in QUERIES],
            "provided_negative_ids": [provided.get(q, []) for q, _, _ in QUERIES],
            "instruction": [""] * len(QUERIES),
        }
    )


def toy_candidates(queries: int = 3, per_query: int = 3) -> pl.DataFrame:
    triplets = make_triplets().head(queries)
    rows = []
    passages = make_passages()["doc_id"].to_list()
    for query_id, positives in triplets.select("query_id", "positive_ids").iter_rows():
        rows += [("toy", query_id, d, "positive") for d in positives]
        rows += [("toy", query_id, d, "mined") for d in passages if d not in positives][: per_query - len(positives)]
    return pl.DataFrame(rows, schema=["dataset", "query_id", "doc_id", "source"], orient="row")
